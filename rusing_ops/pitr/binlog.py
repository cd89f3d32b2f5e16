"""The binary log file format, as far as this tool needs it: events, transaction groups, filtered copies.

A binlog file is the magic ``\\xfebin`` followed by events; each event starts with a 19-byte header (timestamp,
type, server id, size, end position, flags). MariaDB starts every transaction or DDL with a GTID event, so a
*group* is a GTID event and everything up to the next GTID (or a non-transactional event such as a Rotate).
The archive stores raw segments exactly as ``mariadb-binlog --raw`` wrote them: magic + format description +
the events from a start position; every segment can be decoded on its own.

Filtering is done here, on whole groups, by writing a new file (header + the chosen groups): "replay everything
but the bad DELETE" is a file without that group, fed to ``mariadb-binlog`` like any other.
(Event layouts: MariaDB KB "Replication protocol", "GTID_EVENT", "TABLE_MAP_EVENT".)
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = b"\xfebin"
HEADER = struct.Struct("<IBIIIH")  # timestamp, type, server_id, event_size, log_pos (end), flags
FORMAT_DESCRIPTION, ROTATE, QUERY, XID, TABLE_MAP, STOP = 15, 4, 2, 16, 19, 3
ROWS = {23: "insert", 24: "update", 25: "delete", 30: "insert", 31: "update", 32: "delete",
        166: "insert", 167: "update", 168: "delete", 169: "update"}  # v1, v2, MariaDB compressed
ANNOTATE_ROWS, BINLOG_CHECKPOINT, GTID, GTID_LIST = 160, 161, 162, 163
_STANDALONE = 1  # GTID flags2: a DDL or non-transactional statement on its own


class BinlogFormatError(ValueError):
    """The bytes are not a binary log this tool can read."""


@dataclass
class Event:
    offset: int       # where the event starts in this file (segment)
    timestamp: int    # seconds since the epoch (UTC)
    type: int
    server_id: int
    size: int
    end_pos: int      # the event's end position in the server's original file
    data: bytes       # the whole event, header included

    @property
    def start_pos(self) -> int:
        return self.end_pos - self.size


@dataclass
class Group:
    """One transaction (or DDL statement) as the server logged it."""

    gtid: str
    events: list[Event] = field(default_factory=list)
    tables: set[tuple[str, str]] = field(default_factory=set)  # (database, table) of its row events
    rows: dict[str, int] = field(default_factory=dict)  # insert/update/delete -> rows events (not rows)
    query: str | None = None  # the SQL of a DDL / statement-based group (first Query event that is not BEGIN)
    query_db: str = ""  # the default database that statement ran in (``USE``)

    @property
    def start_pos(self) -> int:
        return self.events[0].start_pos

    @property
    def end_pos(self) -> int:
        return self.events[-1].end_pos

    @property
    def first_ts(self) -> int:
        return self.events[0].timestamp

    @property
    def last_ts(self) -> int:
        return max(e.timestamp for e in self.events)

    def touches(self, database: str) -> bool:
        """Whether this group changes ``database``: row events on its tables, or a statement run in it or naming
        it (a statement naming it from another default database is caught by the replay's confinement check)."""
        if any(db == database for db, _t in self.tables):
            return True
        if self.query is None:
            return False
        return self.query_db == database or f"`{database}`." in self.query or f"{database}." in self.query

    @property
    def is_ddl(self) -> bool:
        return self.query is not None and not self.rows

    def describe(self) -> str:
        when = dt.datetime.fromtimestamp(self.last_ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        what = ", ".join(f"{k} on {', '.join(sorted(f'{d}.{t}' for d, t in self.tables))}" for k in sorted(self.rows))
        return f"{self.gtid} at {when}Z: " + (what or (self.query or "")[:120])


@dataclass
class ParsedFile:
    header: bytes          # magic + format description event: the prefix of every file written from this one
    events: list[Event]
    checksum: bool         # events end with a 4-byte CRC32

    @property
    def end_pos(self) -> int:
        return self.events[-1].end_pos if self.events else 0

    @property
    def first_ts(self) -> int | None:
        return self.events[0].timestamp if self.events else None

    @property
    def last_ts(self) -> int | None:
        return max((e.timestamp for e in self.events), default=None)


def parse(data: bytes) -> ParsedFile:
    """Split a binlog file (or an archive segment) into its format description and its events."""
    if not data.startswith(MAGIC):
        raise BinlogFormatError("not a binary log (no \\xfebin magic)")
    offset, events, fde = 4, [], None
    while offset < len(data):
        if len(data) - offset < HEADER.size:
            raise BinlogFormatError(f"truncated event header at offset {offset}")
        ts, etype, server_id, size, end_pos, _flags = HEADER.unpack_from(data, offset)
        if size < HEADER.size or offset + size > len(data):
            raise BinlogFormatError(f"truncated event at offset {offset} (size {size})")
        event = Event(offset, ts, etype, server_id, size, end_pos, data[offset:offset + size])
        if etype == FORMAT_DESCRIPTION and fde is None:
            fde = event
        else:
            events.append(event)
        offset += size
    if fde is None:
        raise BinlogFormatError("no format description event")
    # The FDE body ends with the checksum algorithm byte (+ CRC32 of the FDE itself when it is 1).
    checksum = len(fde.data) >= 5 and fde.data[-5] == 1
    return ParsedFile(data[:fde.offset + fde.size], events, checksum)


def _table_map(event: Event, checksum: bool) -> tuple[int, str, str]:
    body = event.data[HEADER.size:len(event.data) - (4 if checksum else 0)]
    table_id = int.from_bytes(body[0:6], "little")
    pos = 8
    db_len = body[pos]
    db = body[pos + 1:pos + 1 + db_len].decode("utf-8", "replace")
    pos += 1 + db_len + 1
    t_len = body[pos]
    table = body[pos + 1:pos + 1 + t_len].decode("utf-8", "replace")
    return table_id, db, table


def _query_text(event: Event, checksum: bool) -> tuple[str, str]:
    """(default database, SQL text) of a Query event."""
    body = event.data[HEADER.size:len(event.data) - (4 if checksum else 0)]
    # post-header: thread id 4, exec time 4, db len 1, error code 2, status vars len 2
    db_len = body[8]
    status_len = struct.unpack_from("<H", body, 11)[0]
    start = 13 + status_len
    db = body[start:start + db_len].decode("utf-8", "replace")
    return db, body[start + db_len + 1:].decode("utf-8", "replace")


def groups(parsed: ParsedFile) -> list[Group]:
    """The transaction groups of a file, in order; events outside any group (Rotate, Gtid_list...) are left out."""
    out: list[Group] = []
    current: Group | None = None
    tables: dict[int, tuple[str, str]] = {}
    for event in parsed.events:
        if event.type == GTID:
            body = event.data[HEADER.size:]
            seq, domain = struct.unpack_from("<QI", body, 0)
            current = Group(f"{domain}-{event.server_id}-{seq}", [event])
            out.append(current)
            continue
        if event.type in (ROTATE, STOP, GTID_LIST, BINLOG_CHECKPOINT, FORMAT_DESCRIPTION) or current is None:
            current = None if event.type in (ROTATE, STOP) else current
            continue
        current.events.append(event)
        if event.type == TABLE_MAP:
            table_id, db, table = _table_map(event, parsed.checksum)
            tables[table_id] = (db, table)
        elif event.type in ROWS:
            table_id = int.from_bytes(event.data[HEADER.size:HEADER.size + 6], "little")
            if table_id in tables:
                current.tables.add(tables[table_id])
            kind = ROWS[event.type]
            current.rows[kind] = current.rows.get(kind, 0) + 1
        elif event.type == QUERY and current.query is None:
            db, text = _query_text(event, parsed.checksum)
            if text.strip().upper() not in ("BEGIN", "COMMIT", "ROLLBACK"):
                current.query, current.query_db = text, db
    return out


def write_file(path: Path, header: bytes, chosen: list[Group]) -> int:
    """A binlog file holding ``header`` and the ``chosen`` groups' events, for ``mariadb-binlog`` to decode."""
    with open(path, "wb") as f:
        f.write(header)
        n = len(header)
        for group in chosen:
            for event in group.events:
                f.write(event.data)
                n += len(event.data)
    return n
