"""Everything that differs between MariaDB, MySQL 8 and TiDB, in one place.

Detected once per server (``VERSION()``, ``@@version_comment``, ``tidb_version()``). Only MariaDB 10.11 runs on
these machines; the MySQL 8 and TiDB branches follow their documentation (sources in README "Compatibility"),
and where the tool cannot be sure of a server's behaviour it takes the safe path and says so.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pymysql

from .database import as_text
from .errors import OpsError

MARIADB, MYSQL, TIDB = "mariadb", "mysql", "tidb"

# TiDB limits (pingcap/docs: tidb-configuration-file.md txn-entry-size-limit / txn-total-size-limit defaults).
TIDB_ENTRY_BYTES = 6 * 1024 * 1024
TIDB_TXN_BYTES = 100 * 1024 * 1024
STATEMENT_CAP_BYTES = 16 * 1024 * 1024  # a bigger INSERT buys nothing and costs memory on both sides
PACKET_MARGIN_BYTES = 64 * 1024         # room for the statement's head and the protocol
GET_LOCK_MIN_S, GET_LOCK_MAX_S = 1, 3600  # TiDB clamps GET_LOCK timeouts to 1 s .. 1 h (locking-functions.md)
PAUSED = "cluster is paused: resume it in the TiDB Cloud console"


def kind_from_version(version: str, comment: str = "") -> str:
    """``tidb`` / ``mariadb`` / ``mysql`` from ``VERSION()`` (TiDB: ``8.0.11-TiDB-v7.5.0``) and the comment."""
    both = f"{version} {comment}".lower()
    return TIDB if "tidb" in both else MARIADB if "mariadb" in both else MYSQL


@dataclass(frozen=True)
class Flavour:
    kind: str
    version: str
    comment: str = ""
    tidb_version: str | None = None

    @property
    def is_tidb(self) -> bool:
        return self.kind == TIDB

    @property
    def is_mariadb(self) -> bool:
        return self.kind == MARIADB

    @property
    def has_stored_objects(self) -> bool:
        """Triggers, routines and events (TiDB has none: mysql-compatibility.md)."""
        return not self.is_tidb

    @property
    def label(self) -> str:
        names = {MARIADB: "MariaDB", MYSQL: "MySQL", TIDB: "TiDB"}
        return f"{names[self.kind]} {self.version}"


def detect_flavour(conn) -> Flavour:
    """Ask the server on ``conn`` (PyMySQL) what it is."""
    with conn.cursor() as cur:
        cur.execute("SELECT VERSION(), @@version_comment")
        version, comment = (as_text(v) for v in cur.fetchone())
        kind = kind_from_version(version, comment)
        tidb = None
        if kind == TIDB:
            cur.execute("SELECT tidb_version()")
            tidb = as_text(cur.fetchone()[0]).splitlines()[0] if cur.rowcount else None
    return Flavour(kind=kind, version=version, comment=comment, tidb_version=tidb)


_FLAVOURS: dict[tuple[str, int, str], Flavour] = {}


def flavour_of(url) -> Flavour:
    """The flavour of ``url``'s server, detected on the first call for that host, port and user (a TiDB Cloud
    gateway serves many clusters on one address, told apart by the user's prefix)."""
    key = (url.host, url.port, url.user)
    if key not in _FLAVOURS:
        from .database import raw_connect

        conn = raw_connect(url, "")
        try:
            _FLAVOURS[key] = detect_flavour(conn)
        finally:
            conn.close()
    return _FLAVOURS[key]


# ------------------------------------------------------------------------------------------------ locks


def lock_wait_seconds(server_version: str, seconds: float) -> float:
    """``GET_LOCK`` timeout for this server: TiDB clamps to 1 s .. 1 h, so say what it will really wait."""
    seconds = max(0.0, float(seconds))
    if kind_from_version(server_version) == TIDB:
        return float(min(max(seconds, GET_LOCK_MIN_S), GET_LOCK_MAX_S))
    return seconds


def lock_held(cur, statement: str) -> tuple[bool, str]:
    """Run a lock statement; it is held only if it succeeded *without warnings* (TiDB with
    ``enable-table-lock=false`` answers ``LOCK TABLES`` with success and a warning, holding nothing)."""
    cur.execute(statement)
    if getattr(cur, "warning_count", 0) or _warning_count(cur):
        cur.execute("SHOW WARNINGS")
        warnings = "; ".join(as_text(r[2]) for r in cur.fetchall())[:300]
        return False, warnings or "the server returned warnings"
    return True, ""


def _warning_count(cur) -> int:
    result = getattr(cur.connection, "_result", None)
    return getattr(result, "warning_count", 0) or 0


# ------------------------------------------------------------------------------------------------ snapshots


def start_transaction_sql(flavour: Flavour, tso: int | None = None) -> str:
    """The statement that opens a dump connection's read-only snapshot (at ``tso`` on TiDB when given)."""
    if flavour.is_tidb and tso is not None:
        return f"START TRANSACTION READ ONLY AS OF TIMESTAMP TIDB_PARSE_TSO({int(tso)})"
    return "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY" if not flavour.is_tidb else \
        "START TRANSACTION READ ONLY"  # a TiDB transaction takes its snapshot at start (transaction-overview.md)


def current_tso(cur) -> int:
    """The start TSO of the transaction open on ``cur`` (TiDB ``@@tidb_current_ts``)."""
    cur.execute("SELECT @@tidb_current_ts")
    value = int(as_text(cur.fetchone()[0]) or 0)
    if value <= 0:
        raise OpsError("TiDB returned no transaction timestamp (@@tidb_current_ts = 0) inside the dump's transaction; "
                       "the backup was not taken.", next_step="rerun the backup; report it if it repeats.")
    return value


def binlog_point(cur, flavour: Flavour) -> dict:
    """The binary-log position matching the snapshot open on ``cur`` (MariaDB: ``Binlog_snapshot_*``), or why none.

    MySQL 8 gives no per-snapshot position: :func:`locked_binlog_point` reads it while writes are held.
    """
    if not flavour.is_mariadb:
        return {"kind": "none", "why": "this server reports a snapshot's binlog position only while writes are held"}
    cur.execute("SHOW STATUS LIKE 'Binlog_snapshot_%'")
    status = {as_text(k).lower(): as_text(v) for k, v in cur.fetchall()}
    file, pos = status.get("binlog_snapshot_file", ""), status.get("binlog_snapshot_position", "")
    if not file:
        return {"kind": "none", "why": "the binary log is off (log_bin)"}
    point = {"kind": "binlog", "file": file, "position": int(pos or 0)}
    with contextlib.suppress(pymysql.err.MySQLError):
        cur.execute("SELECT BINLOG_GTID_POS(%s, %s)", (file, int(pos or 0)))
        gtid = as_text(cur.fetchone()[0])
        if gtid:
            point["gtid"] = gtid
    return point


def locked_binlog_point(cur, flavour: Flavour) -> dict:
    """The binlog position and GTID set read on the connection that holds writes (exact for MySQL 8)."""
    for statement in ("SHOW BINARY LOG STATUS", "SHOW MASTER STATUS"):  # MySQL 8.4 renamed it
        try:
            cur.execute(statement)
        except pymysql.err.MySQLError:
            continue
        row = cur.fetchone()
        if not row:
            return {"kind": "none", "why": "the binary log is off (log_bin)"}
        point = {"kind": "binlog", "file": as_text(row[0]), "position": int(as_text(row[1]) or 0)}
        if len(row) > 4 and as_text(row[4]):
            point["gtid"] = as_text(row[4]).replace("\n", "")
        return point
    return {"kind": "none", "why": "the server refused SHOW MASTER STATUS (needs REPLICATION CLIENT)"}


# ------------------------------------------------------------------------------------------------ TiDB DDL jobs


DDL_JOBS_SQL = "ADMIN SHOW DDL JOBS 20 WHERE STATE NOT IN ('synced', 'cancelled', 'rollback done')"


def running_ddl_jobs(conn, flavour: Flavour, database: str | None = None) -> list[dict]:
    """TiDB runs DDL as asynchronous jobs: those still running (``ADMIN SHOW DDL JOBS``: job id, table, type, schema
    state, rows done), to report the progress of a long migration statement from another connection. MariaDB and
    MySQL run DDL inside the statement: empty."""
    if not flavour.is_tidb:
        return []
    with conn.cursor() as cur:
        cur.execute(DDL_JOBS_SQL)
        names = [d[0].lower() for d in cur.description]
        jobs = [dict(zip(names, (as_text(v) for v in row))) for row in cur.fetchall()]
    return [j for j in jobs if database is None or j.get("db_name") == database]


# ------------------------------------------------------------------------------------------------ TiDB GC


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration such as ``10m0s`` or ``1h30m`` (how TiDB spells ``tidb_gc_life_time``)."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)", text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def gc_life_time_needed(expected_dump_s: float) -> int:
    """History a dump expected to take ``expected_dump_s`` needs: twice that plus 10 minutes, at least 1 h."""
    return int(max(3600, 2 * expected_dump_s + 600))


DUMP_BYTES_PER_S = 5 * 1024 * 1024  # a conservative logical-dump rate over a WAN (measured locally: ~12 MB/s)


def expected_dump_seconds(conn, database: str) -> float:
    """A generous estimate of how long dumping ``database`` takes: its data and index bytes at
    ``DUMP_BYTES_PER_S``, plus a minute."""
    with conn.cursor() as cur:
        cur.execute("SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) FROM information_schema.TABLES "
                    "WHERE TABLE_SCHEMA = %s", (database,))
        size = int(as_text(cur.fetchone()[0]) or 0)
    return 60 + size / DUMP_BYTES_PER_S


@contextlib.contextmanager
def tidb_gc_guard(connect: Callable[[], object], flavour: Flavour, expected_dump_s: float,
                  log: Callable[[str], None] = lambda _l: None) -> Iterator[dict]:
    """On TiDB, keep MVCC history long enough for the dump: raise ``tidb_gc_life_time`` when it is shorter than
    the dump needs and set it back afterwards, also after a failure. Refuses (before any data is read) when the
    user may not change it. Elsewhere a no-op. Yields what was done (for the manifest / log)."""
    if not flavour.is_tidb:
        yield {"changed": False}
        return
    conn = connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@global.tidb_gc_life_time")
            original = as_text(cur.fetchone()[0])
            have, need = parse_go_duration(original), gc_life_time_needed(expected_dump_s)
            if have >= need:
                yield {"changed": False, "gc_life_time": original}
                return
            try:
                cur.execute(f"SET GLOBAL tidb_gc_life_time = '{need}s'")
            except pymysql.err.MySQLError as exc:
                raise OpsError(
                    f"TiDB keeps history for {original} (tidb_gc_life_time) but this dump may take "
                    f"{expected_dump_s:.0f}s, and this user may not raise it ({as_text(exc.args[-1])[:120]}); "
                    "the dump would fail with 'GC life time is shorter than transaction duration'. The backup was not "
                    "started.", next_step=f"as an admin: SET GLOBAL tidb_gc_life_time = '{need}s'; then rerun, "
                                          f"and set it back to '{original}' afterwards.") from None
            log(f"raised TiDB tidb_gc_life_time from {original} to {need}s for the dump")
    except BaseException:
        conn.close()
        raise
    try:
        yield {"changed": True, "gc_life_time": original, "raised_to": f"{need}s"}
    finally:
        _restore_gc(conn, connect, original, log)


def _restore_gc(conn, connect, original: str, log) -> None:
    for attempt in (conn, None):
        try:
            target = attempt if attempt is not None else connect()
            with target.cursor() as cur:
                cur.execute("SET GLOBAL tidb_gc_life_time = %s", (original,))
            log(f"set TiDB tidb_gc_life_time back to {original}")
            target.close()
            return
        except (pymysql.err.MySQLError, OSError):  # the first connection may be gone: try once on a new one
            with contextlib.suppress(pymysql.err.MySQLError, OSError):
                (attempt or conn).close()
    log(f"could not set TiDB tidb_gc_life_time back to {original}: run SET GLOBAL tidb_gc_life_time = '{original}'")


# ------------------------------------------------------------------------------------------------ sizes


@dataclass(frozen=True)
class Limits:
    statement_bytes: int        # largest INSERT statement to send
    row_bytes: int | None       # largest single row the server accepts (TiDB's entry limit), None = packet only
    max_allowed_packet: int


def server_limits(conn, flavour: Flavour) -> Limits:
    """Statement sizes for loading: from ``max_allowed_packet`` (read-only on TiDB Starter) and TiDB's
    ``txn-entry-size-limit`` / ``txn-total-size-limit`` (an autocommit INSERT is one transaction)."""
    with conn.cursor() as cur:
        cur.execute("SELECT @@max_allowed_packet")
        packet = int(as_text(cur.fetchone()[0]))
        entry = None
        if flavour.is_tidb:
            entry = TIDB_ENTRY_BYTES
            with contextlib.suppress(pymysql.err.MySQLError, ValueError, TypeError):
                cur.execute("SELECT @@tidb_txn_entry_size_limit")  # v7.6+; 0 = the config file's value
                entry = int(as_text(cur.fetchone()[0])) or TIDB_ENTRY_BYTES
    size = min(packet - PACKET_MARGIN_BYTES, STATEMENT_CAP_BYTES)
    if flavour.is_tidb:
        size = min(size, TIDB_TXN_BYTES // 8)  # keys, indexes and MVCC overhead multiply the statement's bytes
    return Limits(statement_bytes=max(size, 64 * 1024), row_bytes=entry, max_allowed_packet=packet)


def statement_bytes(server) -> int:
    """The largest INSERT to send to ``server`` (a PyMySQL connection), see :func:`server_limits`."""
    return server_limits(server, detect_flavour(server)).statement_bytes


# ------------------------------------------------------------------------------------------------ errors


_PAUSED_WORDS = re.compile(r"(?i)\b(paused|pausing|resuming|resume|hibernat\w*|suspended)\b")


def paused_cluster_message(code: int | None, detail: str) -> str | None:
    """The runbook's words when the server says the (TiDB Cloud) cluster is paused or still resuming.

    TiDB Cloud's gateway answers a login to a paused / resuming cluster with an error whose text names that state;
    the exact wording is not in the documentation found, so this matches its words, not a code.
    """
    if detail and _PAUSED_WORDS.search(detail):
        return PAUSED + (" (it is resuming: rerun in a minute)" if "resuming" in detail.lower() else "")
    return None
