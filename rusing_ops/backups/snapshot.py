"""One consistent snapshot shared by several connections, so that tables can be dumped in parallel.

MariaDB / MySQL: InnoDB gives each ``START TRANSACTION WITH CONSISTENT SNAPSHOT`` its own read view. To make the
views of N connections identical, writes are held for the instant the N transactions start: a separate locker
connection takes ``FLUSH TABLES WITH READ LOCK`` (needs RELOAD) or else ``LOCK TABLES ... READ`` on every table,
the workers start their snapshots, the locker unlocks (mydumper's ``--trx-consistency-only`` does the same). A lock
statement that succeeds *with warnings* is treated as not held (TiDB with ``enable-table-lock=false`` does that).
Without either lock, or when it is not granted within ``LOCK_WAIT_S``, the dump falls back to one connection and
says so.

TiDB: no lock at all (it rejects FTWRL). The first connection starts its transaction and reads its TSO
(``@@tidb_current_ts``); the others start ``READ ONLY AS OF TIMESTAMP TIDB_PARSE_TSO(tso)`` and each is checked to
read at exactly that TSO, as Dumpling's ``--consistency snapshot`` does. Any doubt: one connection.

The snapshot point (TSO, or binlog file / position / GTID where the server has one) is on the returned list:
:func:`snapshot_point`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pymysql

from ..core.database import ROW_TABLES, list_tables, quote_ident
from ..core.dburl import DatabaseURL
from ..core.flavour import (
    Flavour,
    binlog_point,
    current_tso,
    detect_flavour,
    expected_dump_seconds,
    kind_from_version,
    lock_held,
    locked_binlog_point,
    start_transaction_sql,
    tidb_gc_guard,
)

LOCK_WAIT_S = 10
_SESSION = ("SET SESSION time_zone = '+00:00', SESSION net_write_timeout = 3600, "
            "SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO'")


class Snapshots(list):
    """The dump's connections, all reading one snapshot; ``point`` says which (see :func:`snapshot_point`)."""

    point: dict
    flavour: Flavour | None = None


def snapshot_point(conns) -> dict:
    """Where the shared snapshot stands: ``{"kind": "tso", "tso": N}`` (TiDB), ``{"kind": "binlog", "file": ...,
    "position": N[, "gtid": ...]}`` or ``{"kind": "none", "why": ...}``. For the backup manifest."""
    return dict(getattr(conns, "point", None) or {"kind": "none", "why": "not recorded"})


def start_snapshot(conn, flavour: Flavour | None = None, tso: int | None = None) -> None:
    """Begin a read-only REPEATABLE READ transaction with its snapshot taken now (or at ``tso`` on TiDB), in a UTC
    session without sql_mode tricks."""
    with conn.cursor() as cur:
        cur.execute(_SESSION)
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        if flavour is None:  # from the handshake's version string: no query needed
            version = getattr(conn, "server_version", "") or ""
            flavour = Flavour(kind=kind_from_version(version), version=version)
        cur.execute(start_transaction_sql(flavour, tso))


def _hold_writes(locker, database: str) -> tuple[str | None, str]:
    """Block writes on ``locker``'s session; return (how, why-not). ``how`` is None when nothing is held."""
    refusals = []
    with locker.cursor() as cur:
        cur.execute(f"SET SESSION lock_wait_timeout = {LOCK_WAIT_S}")
        try:
            held, warned = lock_held(cur, "FLUSH TABLES WITH READ LOCK")
            if held:
                return "FLUSH TABLES WITH READ LOCK", ""
            cur.execute("UNLOCK TABLES")
            refusals.append(f"FLUSH TABLES WITH READ LOCK came back with warnings ({warned})")
        except pymysql.err.MySQLError as exc:
            refusals.append(f"FLUSH TABLES WITH READ LOCK refused ({exc.args[-1]!s:.120})")
        names = list_tables(cur, database, ROW_TABLES)
        if not names:
            return "no tables", ""
        try:
            held, warned = lock_held(cur, "LOCK TABLES " + ", ".join(f"{quote_ident(n)} READ" for n in names))
            if held:
                return "LOCK TABLES", ""
            cur.execute("UNLOCK TABLES")
            refusals.append(f"LOCK TABLES came back with warnings, so it holds nothing ({warned})")
        except pymysql.err.MySQLError as exc:
            refusals.append(f"LOCK TABLES refused ({exc.args[-1]!s:.120})")
    return None, "; ".join(refusals)


def _tidb_snapshots(url: DatabaseURL, count: int, connect: Callable, log, first, flavour: Flavour) -> Snapshots:
    conns = Snapshots([first])
    conns.flavour = flavour
    start_snapshot(first, flavour)
    with first.cursor() as cur:
        tso = current_tso(cur)
    conns.point = {"kind": "tso", "tso": tso}
    for _ in range(count - 1):
        conn = connect(url)
        conns.append(conn)
        try:
            start_snapshot(conn, flavour, tso)
            with conn.cursor() as cur:
                got = current_tso(cur)
        except Exception as exc:  # any doubt means one connection
            got, why = None, str(exc)[:160]
        else:
            why = f"it read at TSO {got}"
        if got != tso:
            log(f"TiDB did not start a second connection at TSO {tso} ({why}): dumping on one connection")
            for extra in conns[1:]:
                extra.close()
            del conns[1:]
            break
    return conns


def open_snapshots(url: DatabaseURL, count: int, connect: Callable, log: Callable[[str], None]) -> Snapshots:
    """``count`` connections (``connect(url)``) inside one shared snapshot; fewer (one) if that cannot be proven."""
    conns = Snapshots([connect(url)])
    try:
        flavour = detect_flavour(conns[0])
        conns.flavour = flavour
        if flavour.is_tidb:
            return _tidb_snapshots(url, max(count, 1), connect, log, conns[0], flavour)
        if count > 1:
            locker = connect(url)
            try:
                how, why_not = _hold_writes(locker, url.database)
                if how is None:
                    log(f"parallel dump needs writes held for an instant, and they were not ({why_not}): "
                        "dumping on one connection")
                else:
                    with locker.cursor() as cur:
                        locked_point = locked_binlog_point(cur, flavour) if how != "no tables" else None
                    conns += [connect(url) for _ in range(count - 1)]
                    for conn in conns:
                        start_snapshot(conn, flavour)
                    with conns[0].cursor() as cur:
                        point = binlog_point(cur, flavour)
                    conns.point = point if point["kind"] != "none" or locked_point is None else locked_point
                    return conns
            finally:
                locker.close()  # releases the lock (UNLOCK TABLES happens with the session)
        start_snapshot(conns[0], flavour)
        with conns[0].cursor() as cur:
            conns.point = binlog_point(cur, flavour)
        return conns
    except BaseException:
        for conn in conns:
            conn.close()
        raise


@contextlib.contextmanager
def history_kept(url: DatabaseURL, connect: Callable, log: Callable[[str], None]) -> Iterator[dict]:
    """Around a whole dump: on TiDB, MVCC history is kept for as long as the dump may take (``tidb_gc_life_time``
    raised for it and set back afterwards, also after a failure; refused with the SQL to run when this user may
    not). Elsewhere it opens one connection to look and changes nothing. Yields what was done."""
    probe = connect(url)
    try:
        flavour = detect_flavour(probe)
        expected = expected_dump_seconds(probe, url.database) if flavour.is_tidb else 0.0
    finally:
        probe.close()
    with tidb_gc_guard(lambda: connect(url), flavour, expected, log) as done:
        yield done
