"""Replay the binlog archive into a database up to a time, a position or a GTID, skipping named transactions;
and undo a window's row changes (``mariadb-binlog --flashback``).

A plan is made from the archive alone (no database touched): the transaction groups of the source database from
the start position to the stop point, minus the skipped ones. The plan is then written as filtered binlog files
(``binlog.write_file``), decoded by ``mariadb-binlog --database=SRC --rewrite-db=SRC->TARGET`` and run statement
by statement on one connection of the connection layer. Row events carry their database in their table map, so
the rewrite sends them to the target; a DDL statement that names a database explicitly (``CREATE TABLE app.t``)
is not rewritten by ``mariadb-binlog`` and would reach the live database: the plan refuses it, naming its GTID.
"""

from __future__ import annotations

import datetime as dt
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pymysql

from ..backups.connection import open_connection
from ..backups.sqlsplit import split_statements
from ..core.dburl import DatabaseURL
from ..core.errors import ConfigError, OpsError
from ..core.store import BackupStore
from . import archive, binlog, client

_CLIENT_COMMAND = re.compile(rb"^\s*/\*!\\C ")  # `/*!\C utf8mb4 */`: a mysql-client command, not SQL
_GTID_SPEC = re.compile(r"^\d+-\d+-\d+$")
_POSITION_SPEC = re.compile(r"^(?P<file>[^:\s]+):(?P<pos>\d+)$")


class ReplayRefused(OpsError):
    """The archive cannot give what was asked (a gap, an unknown skip, a statement that would leave the target)."""


@dataclass
class Stop:
    """Where a replay ends: at most one of the three; none = the end of the archive."""

    time: dt.datetime | None = None  # include transactions committed at or before this second (UTC)
    position: tuple[str, int] | None = None  # include transactions ending at or before file:pos
    gtid: str | None = None  # include transactions up to and including this GTID

    def describe(self) -> str:
        if self.time:
            return f"{self.time:%Y-%m-%d %H:%M:%S}Z"
        if self.position:
            return f"position {self.position[0]}:{self.position[1]}"
        return f"GTID {self.gtid}" if self.gtid else "the end of the archive"


@dataclass
class Plan:
    database: str
    start: tuple[str, int]
    stop: Stop
    files: list[tuple[archive.Segment, bytes, list[binlog.Group]]] = field(default_factory=list)
    skipped: list[binlog.Group] = field(default_factory=list)
    archived_to: int | None = None  # time of the newest event in the archive

    @property
    def groups(self) -> list[binlog.Group]:
        return [g for _s, _h, gs in self.files for g in gs]

    @property
    def events(self) -> int:
        return sum(len(g.events) for g in self.groups)

    def summary(self) -> dict:
        groups = self.groups
        return {
            "database": self.database, "from": f"{self.start[0]}:{self.start[1]}", "to": self.stop.describe(),
            "transactions": len(groups), "events": self.events,
            "first": groups[0].describe() if groups else None, "last": groups[-1].describe() if groups else None,
            "skipped": [g.describe() for g in self.skipped], "archived_to": archive.utc(self.archived_to),
        }


def parse_time(text: str) -> dt.datetime:
    """``YYYY-MM-DD HH:MM:SS`` in UTC, or with an explicit offset / zone name (``2026-12-01 14:02:00+01:00``)."""
    raw = re.sub(r"^(\d{4}-\d\d-\d\d)[Tt]", r"\1 ", text.strip())  # ISO 'T' only: zone names hold T's
    zone = None
    if re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)? +[A-Za-z][\w/+-]*", raw):  # "... 14:02:00 America/Toronto"
        raw, zone_name = raw.rsplit(" ", 1)
        raw = raw.strip()
        try:
            from zoneinfo import ZoneInfo

            zone = ZoneInfo(zone_name)
        except (KeyError, ValueError):
            raise ConfigError(f"{zone_name!r} in {text!r} is not a time zone name (e.g. America/Toronto, UTC).") \
                from None
    raw = raw.removesuffix("Z").removesuffix("z")
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ConfigError(f"{text!r} is not a time like 'YYYY-MM-DD HH:MM:SS' (UTC unless a zone is given).") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone or dt.UTC)
    return when.astimezone(dt.UTC)


def parse_stop(to: str | None = None, to_position: str | None = None, to_gtid: str | None = None) -> Stop:
    given = [x for x in (to, to_position, to_gtid) if x]
    if len(given) > 1:
        raise ConfigError("Give one of --to, --to-position and --to-gtid, not several.")
    if to_position:
        m = _POSITION_SPEC.match(to_position.strip())
        if not m:
            raise ConfigError(f"--to-position {to_position!r} is not FILE:POSITION (e.g. mariadb-bin.000042:1234).")
        return Stop(position=(m.group("file"), int(m.group("pos"))))
    if to_gtid:
        if not _GTID_SPEC.match(to_gtid.strip()):
            raise ConfigError(f"--to-gtid {to_gtid!r} is not a MariaDB GTID (domain-server-sequence, e.g. 0-1-42).")
        return Stop(gtid=to_gtid.strip())
    return Stop(time=parse_time(to)) if to else Stop()


def _refuse_foreign(group: binlog.Group, database: str) -> None:
    """A statement-logged group may only change ``database``, by unqualified names (rewritten with ``USE``)."""
    import sqlglot
    from sqlglot import exp

    text = group.query or ""
    try:
        parsed = sqlglot.parse(text, read="mysql")
    except sqlglot.errors.SqlglotError:
        parsed = None
    named = set()
    if parsed:
        for tree in parsed:
            if tree is None:
                continue
            named |= {t.args["db"].name for t in tree.find_all(exp.Table) if t.args.get("db") is not None}
            if isinstance(tree, (exp.Create, exp.Drop)) and str(tree.args.get("kind", "")).upper() in ("DATABASE",
                                                                                                        "SCHEMA"):
                named.add("(a database)")
    if parsed is None or named or group.query_db not in ("", database):
        raise ReplayRefused(
            f"Transaction {group.gtid} is a statement that names a database explicitly or could not be read "
            f"({text[:100]!r}); replaying it could change a database other than the copy being rebuilt.",
            next_step=f"stop before it (--to-gtid of the transaction before) or skip it (--skip {group.gtid}) and "
                      "apply its effect by hand.")


def plan(store: BackupStore, server: str, database: str, start: tuple[str, int], stop: Stop, *,
         skip: list[str] = (), tables: list[str] | None = None, until_start: dt.datetime | None = None,
         log: Callable[[str], None] = lambda _l: None) -> Plan:
    """The groups of ``database`` in the archive from ``start`` to ``stop``, minus ``skip`` (GTIDs or FILE:POS of
    a transaction's first event). Reads only the archive. ``tables`` keeps groups touching those tables only (a
    group that also touches another table is refused: half a transaction is never offered).
    :param until_start: with undo, groups committed before this time are left out (the window's start).
    """
    segs = archive.segments(store, server)
    if not archive.covers(segs, start, archive.start_marker(store, server)):
        raise ReplayRefused(f"The binlog archive of {server} does not hold position {start[0]}:{start[1]} (where the "
                            "backup was taken).", next_step="check `rusing-ops db binlogs status`; choose a backup "
                                                             "taken after the archive began.")
    relevant = [s for s in segs if (archive.file_number(s.file), s.end) > (archive.file_number(start[0]), start[1])]
    result = Plan(database, start, stop, archived_to=max((s.last_ts or 0 for s in segs), default=None) or None)
    wanted = set(skip)
    for s in wanted:
        if not (_GTID_SPEC.match(s) or _POSITION_SPEC.match(s)):
            raise ConfigError(f"--skip {s!r} is neither a GTID (0-1-42) nor FILE:POSITION.")
    stop_epoch = stop.time.timestamp() if stop.time else None
    from_epoch = until_start.timestamp() if until_start else None
    done = False
    for prev, seg in zip([None, *relevant], relevant):
        gaps = archive.gaps_of([prev, seg]) if prev is not None else ([] if seg.sha256 else archive.gaps_of([seg]))
        if gaps:  # only a gap before the stop point matters
            raise ReplayRefused(f"The binlog archive of {server} has a gap after {start[0]}:{start[1]}, before "
                                f"{stop.describe()}: {gaps[0]}. Changes after the gap are not in the archive.",
                                next_step="restore to a time before the gap (`rusing-ops db binlogs status` names "
                                          "it).")
        try:
            raw = archive.read_segment(store, seg, log)
        except OpsError as exc:
            raise ReplayRefused(exc.message, next_step=exc.next_step) from None
        parsed = binlog.parse(raw)
        chosen = []
        for group in binlog.groups(parsed):
            if (seg.file == start[0] and group.start_pos < start[1]) or not group.touches(database):
                continue
            if stop_epoch is not None and group.last_ts > stop_epoch:
                done = True
                break
            if stop.position and (archive.file_number(seg.file), group.end_pos) > (
                    archive.file_number(stop.position[0]), stop.position[1]):
                done = True
                break
            if from_epoch is not None and group.last_ts < from_epoch:
                continue
            if tables is not None:
                mine = {t for d, t in group.tables if d == database}
                if not mine & set(tables) and not (group.query and any(t in group.query for t in tables)):
                    continue
                if mine - set(tables) or group.is_ddl:
                    raise ReplayRefused(f"Transaction {group.describe()} also changes other tables or the schema; "
                                        "undoing part of a transaction is not offered.",
                                        next_step="run the undo without --table, or name every table it changes.")
            if group.gtid in wanted or f"{seg.file}:{group.start_pos}" in wanted:
                result.skipped.append(group)
                wanted.discard(group.gtid)
                wanted.discard(f"{seg.file}:{group.start_pos}")
            else:
                if group.query is not None and group.is_ddl:
                    _refuse_foreign(group, database)
                chosen.append(group)
            if stop.gtid and group.gtid == stop.gtid:
                done = True
                break
        if chosen:
            result.files.append((seg, parsed.header, chosen))
        if done:
            break
    if wanted:
        raise ReplayRefused(f"--skip names transactions that are not among the changes of `{database}` in that "
                            f"range: {', '.join(sorted(wanted))}. Nothing was replayed.",
                            next_step="check the ids with a dry run (`--dry-run` shows every transaction).")
    if stop.gtid and not done:
        raise ReplayRefused(f"GTID {stop.gtid} is not among the archived changes of `{database}` after "
                            f"{start[0]}:{start[1]}.", next_step="check the GTID (`--dry-run` lists them).")
    return result


def _statements(sql: bytes):
    for stmt in split_statements([sql]):
        if stmt.strip() and not _CLIENT_COMMAND.match(stmt):
            yield stmt


def decode_plan(url: DatabaseURL, p: Plan, target: str, *, flashback: bool = False, verbose: bool = False) -> bytes:
    """The SQL ``mariadb-binlog`` makes of the plan, renamed to ``target``."""
    if not p.files:
        return b""
    with tempfile.TemporaryDirectory(prefix="rusing-replay-") as tmp:
        paths = []
        for n, (_seg, header, groups) in enumerate(p.files):
            path = Path(tmp) / f"part-{n:06d}.binlog"
            binlog.write_file(path, header, groups)
            paths.append(path)
        if flashback:
            paths.reverse()  # each file's events are reversed by --flashback; the files must be too
        return client.decode(url, paths, database=p.database, rewrite_to=target, flashback=flashback,
                             verbose=verbose)


def apply(url: DatabaseURL, p: Plan, target: str, *, flashback: bool = False,
          log: Callable[[str], None] = lambda _l: None) -> int:
    """Run the plan's statements in ``target`` (one connection, in order); return the statements run."""
    sql = decode_plan(url, p, target, flashback=flashback)
    conn = open_connection(url, target)
    n = 0
    try:
        with conn.cursor() as cur:
            for stmt in _statements(sql):
                try:
                    cur.execute(stmt)
                except pymysql.err.MySQLError as exc:
                    raise ReplayRefused(
                        f"Applying the archived changes to `{target}` failed at statement {n + 1} of the decoded "
                        f"binlog ({exc.args[-1]}); the transactions before it were applied to `{target}` only, the "
                        "open one was rolled back.", changed=n > 0,
                        next_step=f"read the error; no database but `{target}` was touched.") from None
                n += 1
    finally:
        conn.close()
    log(f"replayed {len(p.groups)} transactions ({p.events} events, {n} statements) into `{target}`")
    return n


def preview(url: DatabaseURL, p: Plan) -> list[str]:
    """The row changes of the plan as ``mariadb-binlog -v`` shows them (``### DELETE FROM ...``), for a dry run."""
    text = decode_plan(url, p, p.database, verbose=True).decode("utf-8", "replace")
    changes: list[str] = []
    for line in text.splitlines():  # "### DELETE FROM `db`.`t`" / "### WHERE" / "###   @1=2" -> one line per row
        if not line.startswith("###"):
            continue
        part = line[3:].strip()
        if changes and (line.startswith("###   ") or part in ("WHERE", "SET")):
            changes[-1] += f" {part}"
        else:
            changes.append(part)
    return changes or [g.describe() for g in p.groups]
