"""The backup engine: one consistent snapshot of the application database, streamed as plain SQL to the store.

Flow (DESIGN.md §3): ``START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY`` on ``workers`` connections that
share one snapshot (snapshot.py) -> schema (tables) -> rows in primary-key order as multi-row INSERTs of at most
``statement_bytes``, tables in parallel -> routines, views (dependency order), triggers -> zstd/gzip + sha256 on a
worker thread -> ``store.open_write`` (never the whole dump in memory or on local disk) -> manifest, last.

Speed: rows are read from the protocol packets directly, in C (rawrows.py, _speedups.c): the server sends each
value plain and the reader writes the row's SQL tuple itself, byte for byte the text the server's own literals
(``QUOTE``/``HEX``/``CONCAT``, schema.Column.sql_text) would give -- which is what runs where the C reader could not
be built (formatting in Python was 5.6x slower than the server, research/bench.md §4). Each INSERT is announced by
its length so a restore takes it without parsing it (sqlsplit.py). The same query returns each row's independent
checksum (checksum.row_checksum), so a table is scanned once.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import itertools
import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pymysql

from ..core.database import quote_ident, table_exists
from ..core.dburl import DatabaseURL
from ..core.errors import OpsError, StoreError
from ..core.faults import pause_point
from ..core.flavour import statement_bytes as flavour_statement_bytes
from ..core.progress import Progress
from ..core.store import BackupStore
from . import catalog, chunks, crypto, keys, rawrows
from .checksum import checksum_text, row_checksum
from .connection import open_connection
from .manifest import Manifest, TableEntry
from .pieces import dump_big_row
from .rawrows import SUM_DIGITS, checked_rows
from .schema import Schema, Table, read_schema
from .snapshot import history_kept, open_snapshots, snapshot_point
from .sqlsplit import FRAME
from .streams import CompressingWriter, make_compressor

WORKERS = 2  # connections dumping tables in parallel (one shared snapshot, see snapshot.py)
STATEMENT_BYTES = 1024 * 1024  # the cap on one INSERT: below TiDB's 6 MiB entry limit, and memory stays flat
HEADER = (
    "SET NAMES utf8mb4;\n"
    "SET TIME_ZONE='+00:00';\n"
    "SET FOREIGN_KEY_CHECKS=0;\n"
    "SET UNIQUE_CHECKS=0;\n"
    "SET SQL_MODE='NO_AUTO_VALUE_ON_ZERO';\n"
)
FOOTER = "SET FOREIGN_KEY_CHECKS=1;\nSET UNIQUE_CHECKS=1;\n-- rusing_ops backup complete\n"


class BackupFailed(OpsError):
    """The dump stopped; no complete backup was written (the data object, if any, was discarded)."""


@dataclass
class BackupResult:
    manifest: Manifest
    uri: str


def tool_version() -> str:
    """This package's version, as pyproject.toml reads it (``dynamic``: one source; importlib.metadata cost 20 ms)."""
    from .. import __version__

    return __version__


def migration_head(cur, database: str, drizzle_dir: str | Path | None = None) -> dict | None:
    """The newest ``__drizzle_migrations`` row (hash, created_at) and, when the journal has it, its tag."""
    if not table_exists(cur, "__drizzle_migrations", database):
        return None
    cur.execute("SELECT hash, created_at FROM `__drizzle_migrations` ORDER BY created_at DESC, id DESC LIMIT 1")
    row = cur.fetchone()
    if row is None:
        return None
    created_at = int(row[1]) if row[1] is not None else None
    return {"hash": row[0].decode(), "created_at": created_at, "tag": journal_tag(drizzle_dir, created_at)}


def journal_tag(drizzle_dir: str | Path | None, created_at: int | None) -> str | None:
    """The tag of the Drizzle journal entry recorded at ``created_at`` (its ``when``), or None."""
    journal = Path(drizzle_dir) / "meta" / "_journal.json" if drizzle_dir else None
    if created_at is None or not (journal and journal.is_file()):
        return None
    try:
        for entry in json.loads(journal.read_text()).get("entries", []):
            if entry.get("when") == created_at:
                return entry.get("tag")
    except (ValueError, AttributeError):
        pass  # the tag is a convenience; an unreadable journal is the migrations capability's to report
    return None


def _framed(head: bytes, body: bytes) -> bytes:
    """One INSERT, announced by its length (``-- @<n>``) so a restore can take it whole without parsing it."""
    if b"\r" in body:  # only inside quoted strings; the mysql client would drop a raw CR before a line break
        body = body.replace(b"\r", b"\\r")
    return b"%s%d\n%s%s;\n" % (FRAME, len(head) + len(body) + 2, head, body)


def large_bytes_limit(max_packet: int) -> int:
    """Large values per row above which a row is dumped in pieces: its text must fit one server string
    (``max_allowed_packet``) and one protocol packet (16 MiB), at 2 bytes of text per byte plus the small columns
    (at most 64 KiB of row, so 512 KiB of text is room enough)."""
    return max((min(max_packet, 0xFFFFFF) - 512 * 1024) // 2, 1)


def dump_rows(conn, table: Table, emit: Callable[[bytes], None], *, statement_bytes: int = STATEMENT_BYTES,
              advance: Callable[[int, int], None] | None = None, max_packet: int = 16 * 1024 * 1024,
              where: str | None = None) -> TableEntry:
    """Stream ``table``'s rows as INSERT statements through ``emit``; return the row count and the checksum.

    ``server_checksum`` is the independent checksum (checksum.py): the same query that renders each row also has
    the server hash the row's stored values (``row_checksum``, never the rendered text), and the hashes are summed
    here: one scan, one snapshot. A
    row too large for one SQL text is dumped in pieces (pieces.py), or refused naming it; never written as NULL.
    ``where`` restricts rows and checksum to one key range (chunks.py).
    """
    head = table.insert_head()
    rows = 0
    buf: list[bytes] = []
    size = 0
    big: list[bytes] = []
    hashed = total = 0

    def flush() -> None:
        nonlocal rows, buf, size
        emit(_framed(head, b",".join(buf)))
        rows += len(buf)
        if advance:
            advance(len(buf), size)
        buf, size = [], 0

    checksum = f"LPAD({row_checksum(table)},{SUM_DIGITS},'0')"
    if rawrows.render is not None:  # the C reader writes the tuples from plain values: less server work
        sql, kinds = table.client_select(large_bytes_limit(max_packet), where, also=checksum)
    else:
        sql, kinds = table.select_sql(large_bytes_limit(max_packet), where, also=checksum), None
    for batch, ends, batch_total, special in checked_rows(conn, sql, kinds=kinds):
        hashed += len(batch)
        total += batch_total
        if special:  # a row in pieces, or too large: rare, row by row
            batch = _plain_rows(batch, table, max_packet, big)
            ends = list(itertools.accumulate(len(t) + 1 for t in batch))
        # Cut the batch where the statement would pass statement_bytes (ends: the rows' cumulative sizes).
        start = 0
        while start < len(batch):
            room = statement_bytes - size
            offset = ends[start - 1] if start else 0
            stop = bisect.bisect_right(ends, offset + room + 1, lo=start)  # rows j with size + len(j) <= cap
            if stop == start:  # the next row does not fit: a new statement (a row alone may exceed the cap)
                if buf:
                    flush()
                    continue
                stop = start + 1
            buf += batch[start:stop]
            size += ends[stop - 1] - offset
            start = stop
            if start < len(batch):
                flush()
    if buf:
        flush()
    for condition in big:  # after the main result: the connection is free for the pieces' queries
        nbytes = dump_big_row(conn, table, condition, emit, _framed, max_packet=max_packet)
        rows += 1
        if advance:
            advance(1, nbytes)
    return TableEntry(rows=rows, server_checksum=checksum_text(hashed, total))


def _plain_rows(batch: list, table: Table, max_packet: int, big: list[bytes]) -> list[bytes]:
    """``batch`` without the rows to dump in pieces (their key conditions go to ``big``); a row that is too large
    and cannot be addressed (``!`` alone) or that the server could not render (NULL) is refused, naming it."""
    out = []
    for text in batch:
        if text is None or text == b"!":
            raise BackupFailed(
                f"A row of table {table.name!r} is too large to write as one SQL statement (over the server's "
                f"max_allowed_packet of {max_packet:,} bytes as text)"
                + (" and the table has no primary key or NOT NULL unique key to write it in pieces by."
                   if text == b"!" else ".") + " No backup was written.",
                next_step="raise max_allowed_packet on the server (SET GLOBAL max_allowed_packet=1073741824), "
                          "or give the table a primary key, and run `rusing-ops db backup` again.")
        if text[:1] == b"!":
            big.append(text[1:])
        else:
            out.append(text)
    return out


class _Stopped(Exception):
    """Another worker failed: stop this table early."""


def dump_tables(conns: list, tables: list[Table], emit: Callable[[bytes], None], *,
                statement_bytes: int = STATEMENT_BYTES, progress: Progress | None = None, database: str | None = None,
                max_packet: int = 16 * 1024 * 1024, chunk_bytes: int | None = None) -> dict[str, TableEntry]:
    """Dump ``tables``, largest first, on as many threads as ``conns`` (all in one snapshot); entries by name.

    A large table is cut into key-range chunks (chunks.py; about ``chunk_bytes`` each) that several connections
    dump at once. Whole statements from different tables and chunks interleave in the output, which is still valid
    SQL: every CREATE TABLE comes first and foreign-key checks are off.
    """
    work: queue.Queue = queue.Queue()
    if database is None:  # no sizes to plan by: one chunk per table
        planned = [chunks.Chunk(t, None) for t in sorted(tables, key=lambda t: -t.estimated_rows)]
    else:
        with conns[0].cursor() as cur:
            planned = chunks.plan(cur, database, tables, workers=len(conns), chunk_bytes=chunk_bytes)
    for chunk in planned:
        work.put(chunk)
    results: dict[tuple[str, int], TableEntry] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def locked_emit(data: bytes) -> None:
        with lock:
            if errors:
                raise _Stopped()
            emit(data)

    def advance(n: int, nbytes: int) -> None:
        if progress:
            with lock:
                progress.advance(n, nbytes)

    def worker(conn) -> None:
        while not errors:
            try:
                chunk = work.get_nowait()
            except queue.Empty:
                return
            try:
                results[chunk.table.name, chunk.index] = dump_rows(
                    conn, chunk.table, locked_emit, statement_bytes=statement_bytes, advance=advance,
                    max_packet=max_packet, where=chunk.where)
            except BaseException as exc:  # handed to the calling thread, which raises it
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(c,), name="backup-dump", daemon=True) for c in conns[1:]]
    for t in threads:
        t.start()
    worker(conns[0])
    for t in threads:
        t.join()
    real = [e for e in errors if not isinstance(e, _Stopped)]
    if real or errors:
        raise (real or errors)[0]
    counts = {c.table.name: c.count for c in planned}
    return {t.name: chunks.combine([results[t.name, i] for i in range(counts[t.name])]) for t in tables}


def _schema_sql(schema: Schema) -> tuple[list[str], list[str]]:
    """(before rows: sequences, tables; after rows: routines, views, triggers, events) as SQL text the ``mysql``
    client accepts. Sequences come first: a table's DEFAULT may call NEXTVAL() on one."""
    before = [s.sql() for s in schema.sequences]
    before += [f"DROP TABLE IF EXISTS {quote_ident(t.name)};\n{t.create_sql};\n" for t in schema.tables]
    after = []
    for kind, name, sql in schema.routines:
        after.append(f"DROP {kind} IF EXISTS {quote_ident(name)};\nDELIMITER ;;\n{sql};;\nDELIMITER ;\n")
    for name, sql in schema.views:
        after.append(f"DROP VIEW IF EXISTS {quote_ident(name)};\n{sql};\n")
    for name, sql in schema.triggers:
        after.append(f"DELIMITER ;;\n{sql};;\nDELIMITER ;\n")
    for name, sql in schema.events:
        after.append(f"DROP EVENT IF EXISTS {quote_ident(name)};\nDELIMITER ;;\n{sql};;\nDELIMITER ;\n")
    return before, after


# Server error codes that mean the connection went away under the dump, in words an operator can act on.
_GONE = {1927: "the connection was killed (KILL from another session, or the server shutting down)",
         1053: "the server is shutting down", 2006: "the server went away",
         2013: "the connection to the server was lost (killed from another session, the network, or the server stopped)"}


def _cause(exc: BaseException) -> str:
    """The server's error in words; never empty (PyMySQL says ``InterfaceError(0, '')`` for a closed socket)."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    detail = (str(exc.args[-1]) if exc.args else "") or type(exc).__name__
    if code == 0:
        return f"the connection to the server was closed ({detail})"
    if code in _GONE:
        return f"{_GONE[code]} (error {code}: {detail})"
    return f"error {code}: {detail}" if code else detail


def _quietly(close: Callable[[], object]) -> None:
    with contextlib.suppress(Exception):  # whatever it is, the error being raised says more
        close()


def backup_database(url: DatabaseURL, store: BackupStore, *, log: Callable[[str], None] | None = None,
                    **options) -> BackupResult:
    """Back up the database named in ``url`` to ``store``; return the manifest (written last) and the object URI.

    Options as :func:`_backup`. The whole dump runs inside ``snapshot.history_kept``: on TiDB the MVCC history is
    kept for as long as the dump may take (and set back afterwards); elsewhere one look at the server, no change.
    """
    with history_kept(url, open_connection, log or (lambda _line: None)):
        return _backup(url, store, log=log, **options)


def _backup(url: DatabaseURL, store: BackupStore, *, reason: str = "", compression: str = "zstd",
            level: int | None = None,
            run_id: str | None = None, drizzle_dir: str | Path | None = None,
            log: Callable[[str], None] | None = None, statement_bytes: int | None = None,
            now: dt.datetime | None = None, workers: int = WORKERS, chunk_bytes: int | None = None) -> BackupResult:
    """The backup itself (see :func:`backup_database`).

    :param reason: a short word recorded in the key and manifest (``nightly``, ``pre-migration``, ``manual``).
    :param compression: ``zstd`` (default) or ``gzip``.
    :param level: the compression level (zstd 1-19, gzip 1-9); default streams.ZSTD_LEVEL / GZIP_LEVEL.
    :param run_id: the Dagster run id, recorded in the manifest.
    :param drizzle_dir: the app's Drizzle folder, to name the migration head's tag.
    :param log: where progress lines go (``context.log.info`` in Dagster).
    :param workers: connections dumping tables in parallel inside one snapshot (1 = no write lock at all).
    :param statement_bytes: largest INSERT written; default the server's limit (``flavour.statement_bytes``: from
        its max_allowed_packet, TiDB's transaction limits) capped at 1 MiB, which keeps memory flat.
    :param chunk_bytes: size of a table's key-range chunks (chunks.py); default from the database's size.
    """
    started = time.monotonic()
    make_compressor(compression, level)  # a wrong compression or level is refused before anything is opened
    now = now or dt.datetime.now(dt.UTC)
    encryption = crypto.of(store)  # RUSING_BACKUP_RECIPIENTS set: age-encrypted, key ends in .age (crypto.py)
    key = keys.make_key(now, reason, compression, encrypted=encryption.enabled, database=url.database)
    if store.exists(key) or store.exists(keys.manifest_key(key)):
        raise OpsError(f"A backup named {key} already exists in {store.url}; refusing to overwrite it.",
                       next_step="run the backup again a second later, or give another reason.")
    conns = open_snapshots(url, workers, open_connection, log or (lambda _line: None))
    conn = conns[0]
    try:
        with conn.cursor() as cur:
            schema = read_schema(cur, url.database)
            cur.execute("SELECT VERSION()")
            server_version = cur.fetchone()[0].decode()
            cur.execute("SELECT @@max_allowed_packet")
            max_packet = int(cur.fetchone()[0])
        statement_bytes = statement_bytes or min(flavour_statement_bytes(conn), STATEMENT_BYTES)
        with conn.cursor() as cur:
            server = catalog.server_identity(cur, f"{url.host}:{url.port}")
            head = migration_head(cur, url.database, drizzle_dir)
        progress = Progress(f"backup {url.database}", total=sum(t.estimated_rows for t in schema.tables) or None,
                            log=log)
        writer = store.open_write(key, exclusive=True)  # a same-second backup of this database: not overwritten
        out = CompressingWriter(writer.write, compression, wrap=crypto.wrap_for(store), level=level)
        try:
            before, after = _schema_sql(schema)
            out.write(f"-- rusing_ops {tool_version()} backup of `{url.database}` at {now.isoformat()} "
                      f"(server {server_version})\n{HEADER}".encode())
            out.write("".join(before).encode())
            pause_point(f"backup-{keys.clean_reason(reason)}")  # test-only: a kill -9 mid-backup (core/faults.py)
            tables = dump_tables(conns, schema.tables, out.write, statement_bytes=statement_bytes, progress=progress,
                                 database=url.database, max_packet=max_packet, chunk_bytes=chunk_bytes)
            out.write(("".join(after) + FOOTER).encode())
            out.close()
            writer.commit()
        except BaseException:
            _quietly(out.abandon)  # a failing clean-up must not hide why the backup stopped
            _quietly(writer.abort)
            raise
    except pymysql.err.MySQLError as exc:
        raise BackupFailed(f"Backup of {url.masked()} failed: {_cause(exc)}. No backup was written; "
                           "nothing was changed.",
                           next_step="fix the cause and run `rusing-ops db backup` again.") from None
    finally:
        for c in conns:
            _quietly(c.close)  # rawrows closes a connection whose result it abandoned: "Already closed" is no news
    progress.finish()
    manifest = Manifest(
        key=key, sha256=out.sha256, bytes=out.bytes, uncompressed_bytes=out.raw_bytes, compression=compression,
        database=url.database, server_version=server_version, tables=tables,
        views=[n for n, _ in schema.views], triggers=[n for n, _ in schema.triggers],
        routines=[f"{k} {n}" for k, n, _ in schema.routines], events=[n for n, _ in schema.events],
        sequences={s.name: s.next_value for s in schema.sequences}, notes=schema.notes, migration_head=head, reason=keys.clean_reason(reason),
        run_id=run_id, tool_version=tool_version(), started_at=now.isoformat(), server=server,
        snapshot=snapshot_point(conns), encryption=encryption.manifest_entry() if encryption.enabled else None,
        duration_s=round(time.monotonic() - started, 3),
    )
    catalog.write_manifest(store, manifest)  # a failed write deletes the data object again
    try:
        catalog.pin_for_reason(store, key, reason, run_id)  # pre-migration / pre-restore / ...: reports point to it
    except StoreError as exc:  # the backup is complete: a missing pin must not turn it into a failure
        (log or (lambda _l: None))(f"warning: backup {key} is complete, but pinning it failed ({exc.message}); "
                                   "prune may delete it by the retention policy")
    return BackupResult(manifest, store.uri(key))
