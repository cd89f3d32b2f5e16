"""The binlog archive: every binlog file from the oldest position a retained backup needs to now, in the store.

One pass (:func:`archive_once`) copies what is new and exits: closed files to their end (the Rotate event), the
live file from the last archived position to the server's current position, as a *segment*. Segments are stored
under ``binlogs/<server>/<file>/<start>-<end>.binlog`` (positions zero-padded), each beside a ``.json`` with its
sha256, first/last event time and GTIDs, so the archive lags the server by one pass interval, not by a rotation.

:func:`status` reads the archive back and names every gap: a segment that does not start where the previous one
ended, a closed file that was never finished, a file missing between two archived ones, a backup whose position
the archive does not cover. A gap means "no recovery to a time after it" and is reported, never papered over.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyrage

from ..backups import copies, crypto
from ..backups.connection import open_connection
from ..core.database import as_text
from ..core.dburl import DatabaseURL
from ..core.errors import ConfigError, OpsError
from ..core.store import BackupStore
from . import binlog, client

PREFIX = "binlogs"
_SEGMENT = re.compile(r"(?P<file>[^/]+)/(?P<start>\d{12})-(?P<end>\d{12})\.binlog$")
_FILE_NUMBER = re.compile(r"^(?P<base>.*)\.(?P<n>\d+)$")


class PitrUnavailable(OpsError):
    """The server cannot give point-in-time recovery (no binlog, TiDB, statement-format binlog)."""


@dataclass
class Segment:
    file: str
    start: int
    end: int
    sha256: str
    bytes: int
    first_ts: int | None
    last_ts: int | None
    first_gtid: str | None
    last_gtid: str | None
    final: bool  # the file was closed (ends with its Rotate event): nothing more will be appended
    key: str = ""
    encryption: dict | None = None  # age recipients' fingerprints when the stored bytes are encrypted (crypto.py)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()


@dataclass
class ServerLog:
    """What the server says about its binary log right now."""

    server_key: str
    server_id: int
    binlog_format: str
    expire_s: int  # 0 = never expires
    files: list[tuple[str, int]]  # SHOW BINARY LOGS: (name, size)
    current: tuple[str, int]  # SHOW MASTER STATUS: (file, position)


@dataclass
class Status:
    server_key: str
    files: int = 0
    segments: int = 0
    bytes: int = 0
    gaps: list[str] = field(default_factory=list)
    last: tuple[str, int] | None = None  # newest archived (file, end position)
    last_ts: int | None = None  # time of the newest archived event
    server: tuple[str, int] | None = None  # the server's current (file, position)
    lag_s: float | None = None  # the RPO now: 0 when the archive holds everything the server has logged
    binlog_format: str = ""
    expire_s: int | None = None

    def summary(self) -> dict:
        return {"server": self.server_key, "files": self.files, "segments": self.segments, "bytes": self.bytes,
                "gaps": self.gaps, "archived_to": f"{self.last[0]}:{self.last[1]}" if self.last else None,
                "server_at": f"{self.server[0]}:{self.server[1]}" if self.server else None,
                "lag_s": self.lag_s, "binlog_format": self.binlog_format, "expire_s": self.expire_s}


def server_key(url: DatabaseURL, server_id: int) -> str:
    host = re.sub(r"[^A-Za-z0-9.-]", "_", url.host)
    return f"{host}-{url.port}-{server_id}"


def read_server_log(url: DatabaseURL) -> ServerLog:
    """The server's binlog facts; :class:`PitrUnavailable` on TiDB or a server without ``log_bin``."""
    conn = open_connection(url, "")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT VERSION(), @@version_comment")
            version, comment = (as_text(v) for v in cur.fetchone())
            if "tidb" in version.lower() or "tidb" in comment.lower():
                raise PitrUnavailable(
                    f"{url.masked()} is TiDB, which has no binlog: rusing_ops cannot archive or replay its changes.",
                    next_step="use TiDB Cloud's own point-in-time restore (Essential: 14 days; Dedicated: log "
                              "backup) from the TiDB Cloud console; Starter keeps one daily backup.")
            cur.execute("SELECT @@log_bin, @@server_id, @@binlog_format")
            log_bin, server_id, fmt = cur.fetchone()
            if str(as_text(log_bin)) not in ("1", "ON"):
                raise PitrUnavailable(f"{url.masked()} does not write a binary log (log_bin is OFF).",
                                      next_step="start the server with --log-bin and --binlog-format=ROW.")
            expire = 0
            for var in ("binlog_expire_logs_seconds", "expire_logs_days"):
                cur.execute("SHOW GLOBAL VARIABLES LIKE %s", (var,))
                row = cur.fetchone()
                if row is not None:
                    value = float(as_text(row[1]) or 0)
                    expire = int(value if var.endswith("seconds") else value * 86400)
                    if expire:
                        break
            cur.execute("SHOW BINARY LOGS")
            files = [(as_text(r[0]), int(r[1])) for r in cur.fetchall()]
            cur.execute("SHOW MASTER STATUS")
            row = cur.fetchone()
            current = (as_text(row[0]), int(row[1]))
    finally:
        conn.close()
    return ServerLog(server_key(url, int(server_id)), int(server_id), as_text(fmt).upper(), expire, files, current)


def file_number(name: str) -> int:
    m = _FILE_NUMBER.match(name)
    if not m:
        raise ConfigError(f"binlog file name {name!r} has no sequence number.")
    return int(m.group("n"))


def segments(store: BackupStore, server: str) -> list[Segment]:
    """Every archived segment of ``server``, in log order (file number, then position)."""
    base = f"{PREFIX}/{server}/"
    out = []
    for obj in store.list(base):
        m = _SEGMENT.search(obj.key[len(base):])
        if not m:
            continue
        try:
            meta = json.loads(store.get_bytes(obj.key[: -len(".binlog")] + ".json"))
            meta["key"] = obj.key
            out.append(Segment(**meta))
        except (OpsError, ValueError, TypeError):
            out.append(Segment(m.group("file"), int(m.group("start")), int(m.group("end")), "", obj.size, None, None,
                               None, None, False, obj.key))  # no readable metadata: listed, flagged by status()
    return sorted(out, key=lambda s: (file_number(s.file), s.start))


def _segment_key(server: str, file: str, start: int, end: int) -> str:
    return f"{PREFIX}/{server}/{file}/{start:012d}-{end:012d}.binlog"


def _store_segment(store: BackupStore, server: str, file: str, start: int, raw: bytes) -> Segment | None:
    parsed = binlog.parse(raw)
    if not parsed.events:
        return None
    end = parsed.end_pos
    groups = binlog.groups(parsed)
    final = parsed.events[-1].type in (binlog.ROTATE, binlog.STOP)
    seg = Segment(file, start, end, hashlib.sha256(raw).hexdigest(), len(raw), parsed.first_ts, parsed.last_ts,
                  groups[0].gtid if groups else None, groups[-1].gtid if groups else None, final)
    seg.key = _segment_key(server, file, start, end)
    enc = crypto.of(store)
    if enc.enabled:  # row events hold the customers' data: stored like a backup, encrypted to the recipients
        raw = pyrage.encrypt(raw, [pyrage.x25519.Recipient.from_str(r) for r in enc.recipients])
        seg.sha256, seg.bytes, seg.encryption = hashlib.sha256(raw).hexdigest(), len(raw), enc.manifest_entry()
    for target in [store, *copies.stores(store)]:  # the primary, then every configured second copy
        target.put_bytes(seg.key, raw)  # data first, metadata last: a segment without .json is flagged, not trusted
        if target is not store and hashlib.sha256(target.get_bytes(seg.key)).hexdigest() != seg.sha256:
            raise OpsError(f"The copy of binlog segment {seg.key} in {target.url} does not read back as written.",
                           next_step="check the copy store, then run `rusing-ops db binlogs archive` again.")
        target.put_bytes(seg.key[: -len(".binlog")] + ".json", seg.to_json())
    return seg


def _decrypted(store: BackupStore, seg: Segment, raw: bytes) -> bytes:
    if not seg.encryption:
        return raw
    identities = crypto.parse_identities(crypto.of(store).identity)
    if not identities:
        raise crypto.IdentityProblem(f"Binlog segment {seg.key} is encrypted and {crypto.IDENTITY_VAR} is not set: it "
                                     "cannot be replayed. Nothing was restored or touched.",
                                     next_step=f"set {crypto.IDENTITY_VAR} to the age identity of the backups.")
    try:
        return pyrage.decrypt(raw, identities)
    except pyrage.DecryptError:
        raise crypto.IdentityProblem(f"{crypto.IDENTITY_VAR} does not open binlog segment {seg.key}. Nothing was "
                                     "restored or touched.", next_step=f"set {crypto.IDENTITY_VAR} to the identity "
                                     "of one of the backup recipients.") from None


def read_segment(store: BackupStore, seg: Segment, log: Callable[[str], None] = lambda _l: None) -> bytes:
    """A segment's bytes, checked against its sha256; from a second copy (said) when the primary is missing or
    damaged. :class:`OpsError` when no store holds it intact."""
    tried = []
    for n, source in enumerate([store, *copies.stores(store)]):
        try:
            raw = source.get_bytes(seg.key)
        except OpsError:
            tried.append(f"{source.url}: missing")
            continue
        if hashlib.sha256(raw).hexdigest() == seg.sha256:
            if n:
                log(f"binlog segment {seg.key} read from the copy in {source.url} ({'; '.join(tried)})")
            return _decrypted(store, seg, raw)
        tried.append(f"{source.url}: sha256 differs from its metadata")
    raise OpsError(f"Binlog segment {seg.key} is damaged or missing in every store ({'; '.join(tried)}).",
                   next_step="restore to a time before it (`rusing-ops db binlogs status`).")


def backup_position(manifest) -> tuple[str, int] | None:
    """The binlog (file, position) a backup's snapshot stands at, when its manifest recorded one."""
    point = getattr(manifest, "snapshot", None)
    if isinstance(point, dict) and point.get("kind") == "binlog" and point.get("file"):
        return point["file"], int(point.get("position") or 0)
    return None


def oldest_backup_position(store: BackupStore, on_server: list[str] | None = None) -> tuple[str, int] | None:
    """The oldest position recorded by a complete backup in the store (whose binlog file the server still has,
    when ``on_server`` is given): where the archive must begin, and what its retention keeps."""
    from ..backups import catalog  # the archive starts where the backups need it to

    positions = [backup_position(e.manifest) for e in catalog.list_backups(store) if e.manifest is not None]
    positions = [p for p in positions if p is not None and (on_server is None or p[0] in on_server)]
    return min(positions, key=lambda p: (file_number(p[0]), p[1]), default=None)


def archive_once(url: DatabaseURL, store: BackupStore, *, start: tuple[str, int] | None = None,
                 log: Callable[[str], None] = lambda _l: None) -> list[Segment]:
    """Copy what is new since the last pass into ``store``; return the segments written (possibly none).

    :param start: where an empty archive begins; default the oldest position a backup in the store records (that
        the server still has), else the server's current position.
    """
    server = read_server_log(url)
    have = segments(store, server.server_key)
    on_server = [name for name, _size in server.files]
    marker = f"{PREFIX}/{server.server_key}/start.json"
    if not have and start is None:  # an archive that began but copied nothing yet keeps its starting point
        start = start_marker(store, server.server_key) or oldest_backup_position(store, on_server)
    if have:
        last = have[-1]
        todo = [(last.file, last.end)] if not last.final else []
        later = [f for f in on_server if file_number(f) > file_number(last.file)]
        todo += [(f, 4) for f in later]
    else:
        begin = start or server.current
        if begin[0] not in on_server:
            raise OpsError(f"binlog {begin[0]} is no longer on {url.masked()} (the server purged it): the archive "
                           "cannot start there.", next_step="take a new backup (`rusing-ops db backup`), then run "
                                                            "`rusing-ops db binlogs archive`.")
        todo = [(begin[0], begin[1])] + [(f, 4) for f in on_server if file_number(f) > file_number(begin[0])]
        if not store.exists(marker):
            store.put_bytes(marker, json.dumps({"file": begin[0], "position": begin[1]}).encode())
    written = []
    with tempfile.TemporaryDirectory(prefix="rusing-binlog-") as tmp:
        for file, pos in todo:
            if file not in on_server:
                log(f"binlog {file} was purged by the server before it was archived past position {pos}: a gap")
                continue
            if file == server.current[0] and pos >= server.current[1]:
                continue  # nothing new in the live file
            raw = client.copy_raw(url, file, pos, Path(tmp) / f"{file_number(file)}").read_bytes()
            seg = _store_segment(store, server.server_key, file, pos, raw)
            if seg is not None:
                written.append(seg)
                log(f"archived {file} {seg.start}-{seg.end} ({seg.bytes:,} bytes{', closed' if seg.final else ''})")
    return written


def gaps_of(segs: list[Segment]) -> list[str]:
    """Every discontinuity in an archive's segments (see the module docstring)."""
    gaps = []
    for prev, seg in itertools.pairwise(segs):
        if seg.file == prev.file:
            if seg.start != prev.end:
                gaps.append(f"{seg.file}: positions {prev.end}-{seg.start} are missing")
        else:
            if not prev.final:
                gaps.append(f"{prev.file}: archived to {prev.end} only, then the server moved on to {seg.file}")
            if file_number(seg.file) != file_number(prev.file) + 1:
                gaps.append(f"files between {prev.file} and {seg.file} are missing")
            if seg.start != 4:
                gaps.append(f"{seg.file}: positions 4-{seg.start} are missing")
    gaps += [f"{s.file} {s.start}-{s.end}: no readable metadata (.json)" for s in segs if not s.sha256]
    return gaps


def start_marker(store: BackupStore, server: str) -> tuple[str, int] | None:
    """Where the archive of ``server`` began (written by its first pass), or None."""
    try:
        saved = json.loads(store.get_bytes(f"{PREFIX}/{server}/start.json"))
    except (OpsError, ValueError):
        return None
    return saved["file"], int(saved["position"])


def covers(segs: list[Segment], position: tuple[str, int], marker: tuple[str, int] | None = None) -> bool:
    """Whether the archive holds the log from ``position`` on (a backup's snapshot position). An archive that began
    at ``marker`` and has copied nothing yet (nothing was logged since) holds it when it is that very point."""
    file, pos = position
    if any(s.file == file and s.start <= pos <= s.end for s in segs):
        return True
    return not segs and marker is not None and tuple(marker) == tuple(position)


def status(url: DatabaseURL, store: BackupStore, *, needed: tuple[str, int] | None = None,
           now: float | None = None) -> Status:
    """The archive against the server: size, gaps, and the lag (seconds of changes not yet archived)."""
    server = read_server_log(url)
    segs = segments(store, server.server_key)
    st = Status(server.server_key, files=len({s.file for s in segs}), segments=len(segs),
                bytes=sum(s.bytes for s in segs), gaps=gaps_of(segs), server=server.current,
                binlog_format=server.binlog_format, expire_s=server.expire_s)
    if needed is not None and not covers(segs, needed, start_marker(store, server.server_key)):
        st.gaps.insert(0, f"the newest backup's position {needed[0]}:{needed[1]} is not in the archive")
    if segs:
        last = segs[-1]
        st.last, st.last_ts = (last.file, last.end), max((s.last_ts or 0) for s in segs) or None
        on_server = [f for f, _ in server.files]
        if last.file not in on_server and not last.final:
            st.gaps.append(f"{last.file} was purged by the server before it was archived past {last.end}")
        caught_up = last.file == server.current[0] and last.end >= server.current[1]
        now = time.time() if now is None else now
        st.lag_s = 0.0 if caught_up else round(now - (st.last_ts or now), 1)
    elif start_marker(store, server.server_key) == server.current:
        st.lag_s = 0.0  # began here, and the server has logged nothing since
    return st


def prune(store: BackupStore, server: str, oldest_needed: tuple[str, int] | None, *, apply: bool = False) -> list[str]:
    """Archive files wholly older than ``oldest_needed`` (the oldest retained backup's position): the keys that
    would go (dry run) or went (``apply``). Nothing goes when no retained backup records a position."""
    if oldest_needed is None:
        return []
    keep_from = file_number(oldest_needed[0])
    doomed = []
    for seg in segments(store, server):
        if file_number(seg.file) < keep_from:
            doomed += [seg.key, seg.key[: -len(".binlog")] + ".json"]
    if apply:
        for key in doomed:
            store.delete(key)
    return doomed


def utc(ts: float | None) -> str | None:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ts else None


def newest_backup_position(store: BackupStore, database: str) -> tuple[str, int] | None:
    """The binlog position of the newest complete backup of ``database`` that records one."""
    from ..backups import catalog

    for entry in catalog.list_backups(store, database=database):
        position = backup_position(entry.manifest) if entry.manifest is not None else None
        if position is not None:
            return position
    return None


@dataclass
class Pass:
    """One archive pass: what was copied, the archive's state afterwards, what retention deleted."""

    written: list[Segment]
    status: Status
    pruned: list[str]


def archive_pass(url: DatabaseURL, store: BackupStore, *, log: Callable[[str], None] = lambda _l: None) -> Pass:
    """Copy what is new, read the archive back against the newest backup of the URL's database, and delete the
    files wholly older than the oldest retained backup's position (retention follows the backups)."""
    written = archive_once(url, store, log=log)
    st = status(url, store, needed=newest_backup_position(store, url.database))
    pruned = prune(store, st.server_key, oldest_backup_position(store), apply=True)
    return Pass(written, st, pruned)


def settings_problems(st: Status, interval_s: float) -> list[str]:
    """What in the server's binlog settings defeats point-in-time recovery (empty: nothing)."""
    problems = []
    if st.binlog_format != "ROW":
        problems.append(f"binlog_format is {st.binlog_format}, not ROW (row events are needed to replay and undo)")
    if st.expire_s and st.expire_s <= interval_s:
        problems.append(f"binlogs expire after {st.expire_s} s, not longer than the archive interval {interval_s:g} s")
    return problems


def pass_due(st: Status, last_pass: float, interval_s: float, now: float | None = None) -> str | None:
    """None when an archive pass should run now; else why not (the archive is current, or the last pass was less
    than ``interval_s`` ago): at most one pass per interval under writes, none when idle."""
    if st.lag_s == 0.0:
        return f"the archive is current ({st.summary()['archived_to'] or 'nothing logged since it began'})"
    now = time.time() if now is None else now
    if now - last_pass < interval_s:
        return f"new changes; the next pass is due {interval_s:g} s after the last one"
    return None
