"""The restore engine: verify -> load into a staging database -> check row counts -> (backup) -> atomic swap.

A failure at any step before the swap leaves the target database untouched and drops the staging database
(DESIGN.md §3). The database write lock is held for the whole restore, and the target's fingerprint (table
definitions, server checksums, objects) taken when it began is compared before the backup and again just before the
swap: a change refuses the swap rather than silently replace it. The swap is one ``RENAME TABLE`` statement, made
crash-safe by the intent journal of :mod:`.swap`; the replaced tables are kept in ``<target>__pre_restore_<ts>``
until an operator drops them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..core.database import ROW_TABLES, as_text, list_tables, quote_ident
from ..core.dburl import DatabaseURL
from ..core.errors import LockBusy, OpsError
from ..core.faults import pause_point
from ..core.progress import Progress
from ..core.store import BackupStore
from . import catalog, chunks, confine, copies, dataonly
from .changes import describe_changes, fingerprint
from .checksum import CHECKSUM_SESSION, rows_of, same_flavour, table_checksum
from .connection import open_connection
from .dump import backup_database
from .load import Loader
from .schema import read_tables
from .source import NotAsStored, Source, resolve_source
from .swap import interrupted_swaps, repair_swap, swap_in, write_lock


class RestoreRefused(OpsError):
    """The restore did not start, or stopped before the swap: the target database is untouched."""


@dataclass
class StageResult:
    database: str
    tables: dict[str, int]
    deferred: list[str]
    checksums: dict[str, str] = field(default_factory=dict)  # server checksums of the loaded tables (checksum.py)


@dataclass
class RestoreResult:
    source: str
    target: str
    pre_restore_db: str | None
    pre_restore_backup: str | None
    tables: dict[str, int]
    verified_against_manifest: bool
    duration_s: float
    swapped_tables: int = 0
    recreated: list[str] = field(default_factory=list)


def stamp(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%d%H%M%S")


def derived_name(target: str, what: str, ts: str) -> str:
    name = f"{target}__{what}_{ts}"
    if len(name) > 64:
        raise RestoreRefused(f"Database name {target!r} is too long to derive {what!r} databases from (64 max).")
    return name


def table_counts(conn, database: str) -> dict[str, int]:
    with conn.cursor() as cur:
        counts = {}
        for name in list_tables(cur, database, ROW_TABLES):
            cur.execute(f"SELECT COUNT(*) FROM {quote_ident(database)}.{quote_ident(name)}")
            counts[name] = int(cur.fetchone()[0])
    return counts


def _checksum_connection(url: DatabaseURL, database: str):
    """A connection to ``database`` in the session checksums are computed in (checksum.CHECKSUM_SESSION)."""
    conn = open_connection(url, database)
    try:
        with conn.cursor() as cur:
            cur.execute(CHECKSUM_SESSION)
    except BaseException:
        conn.close()
        raise
    return conn


class EarlyChecksums:
    """Hash each table of the loaded copy on a connection of its own as soon as all its rows are in (the
    manifest's count: Loader's ``on_complete``), while the other tables still load: the load keeps the server's
    cores busy and the hash mostly waits on pages read back (a 4x restore read 500 MB through a 128 MiB buffer
    pool), so the two overlap. A table is hashed in the key-range chunks the final pass would cut it into (the same
    ``chunk_bytes``, the same loaded size), so that :meth:`finish` stops after the chunk being hashed and
    :func:`loaded_checksums` hashes only the chunks left (over every connection) -- a large table completed late
    is not hashed on one connection while the others wait."""

    def __init__(self, url: DatabaseURL, database: str, chunk_bytes: int, workers: int):
        self.url, self.database, self.chunk_bytes, self.workers = url, database, chunk_bytes, workers
        self.parts: dict[tuple[str, int, int], str] = {}  # (table, chunk index, chunk count) -> checksum
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="restore-early-checksum", daemon=True)
        self._thread.start()

    def complete(self, table: str, nbytes: int) -> None:
        self._queue.put((table, nbytes))

    def _run(self) -> None:
        conn = tables = None
        try:
            while (item := self._queue.get()) is not None and not self._stopping:
                name, nbytes = item
                if conn is None:
                    conn = _checksum_connection(self.url, self.database)
                    with conn.cursor() as cur:
                        tables = {t.name: t for t in read_tables(cur, self.database, with_ddl=False)}
                if name not in tables:
                    continue
                with conn.cursor() as cur:
                    for chunk in chunks.plan(cur, self.database, [tables[name]], workers=self.workers,
                                             chunk_bytes=self.chunk_bytes, sizes={name: nbytes}):
                        if self._stopping:
                            break
                        self.parts[name, chunk.index, chunk.count] = table_checksum(cur, self.database, chunk.table,
                                                                                    chunk.where)
        except Exception:  # whatever failed here is hashed again after the load, which reports it
            pass
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def finish(self) -> dict[tuple[str, int, int], str]:
        """Stop (tables queued and chunks not started are left to the final pass), wait for the chunk being
        hashed, and return the checksums by (table, chunk index, chunk count)."""
        self._stopping = True
        self._queue.put(None)
        self._thread.join()
        return dict(self.parts)


def loaded_checksums(url: DatabaseURL, database: str, workers: int = 2, chunk_bytes: int | None = None,
                     sizes: dict[str, int] | None = None,
                     done: dict[tuple[str, int, int], str] | None = None) -> dict[str, str]:
    """The server checksum (checksum.py) of every table of ``database`` holding rows, by name, over ``workers``
    connections that hash at once (one query runs on one core): a large table is cut into key-range chunks
    (chunks.plan, as the backup cuts it) whose counts and sums add up, so that one table holding most of the
    bytes is hashed by every connection instead of one (``chunk_bytes``: as chunks.plan, default from the size;
    ``sizes``: bytes per table as loaded, Loader's ``table_bytes``: information_schema lags behind a fresh load;
    ``done``: chunks already hashed by :class:`EarlyChecksums`, by (table, chunk index, chunk count))."""
    conns = [_checksum_connection(url, database)]
    try:
        with conns[0].cursor() as cur:
            cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_TYPE "
                        f"IN ({', '.join(['%s'] * len(ROW_TABLES))})", (database, *ROW_TABLES))
            names = {as_text(r[0]) for r in cur.fetchall()}
            tables = [t for t in read_tables(cur, database, with_ddl=False) if t.name in names]
            planned = chunks.plan(cur, database, tables, workers=workers, chunk_bytes=chunk_bytes, sizes=sizes)
        done = done or {}
        parts: dict[tuple[str, int], str] = {(c.table.name, c.index): done[c.table.name, c.index, c.count]
                                             for c in planned if (c.table.name, c.index, c.count) in done}
        work = iter([c for c in planned if (c.table.name, c.index) not in parts])
        lock = threading.Lock()

        def hash_chunks(conn) -> None:
            with conn.cursor() as cur:
                while True:
                    with lock:
                        chunk = next(work, None)
                    if chunk is None:
                        return
                    parts[chunk.table.name, chunk.index] = table_checksum(cur, database, chunk.table, chunk.where)

        def other(_: int) -> None:
            conns.append(_checksum_connection(url, database))
            hash_chunks(conns[-1])

        extra = max(0, min(workers, len(planned) - len(parts)) - 1)
        with ThreadPoolExecutor(max(extra, 1), thread_name_prefix="restore-checksum") as pool:
            futures = [pool.submit(other, i) for i in range(extra)]
            hash_chunks(conns[0])
            for future in futures:
                future.result()
        counts = {c.table.name: c.count for c in planned}
        return {name: chunks.combine_checksums([parts[name, i] for i in range(n)]) for name, n in counts.items()}
    finally:
        for conn in conns:
            with contextlib.suppress(Exception):  # the error being raised, if any, says more
                conn.close()


def derived_databases(url: DatabaseURL, target: str, what: str) -> list[str]:
    """Databases named ``<target>__<what>_<ts>`` (staging copies, pre-restore tables), oldest first."""
    conn = open_connection(url, "")
    try:
        with conn.cursor() as cur:
            pattern = (target.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")  # any name: LIKE-escaped
                       + f"\\_\\_{what}\\_%")
            cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE %s "
                        "ORDER BY SCHEMA_NAME", (pattern,))
            return [r[0].decode() for r in cur.fetchall()]
    finally:
        conn.close()


def drop_database(url: DatabaseURL, name: str) -> None:
    conn = open_connection(url, "")
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)}")
    finally:
        conn.close()


def stage(url: DatabaseURL, source: Source, database: str, *, log: Callable[[str], None] | None = None,
          workers: int = 2, like: str | None = None) -> StageResult:
    """Create ``database`` and load ``source`` into it; compare its row counts with the manifest.

    :param like: the restore's target: a data-only dump (no CREATE TABLE) takes its schema from it (dataonly.py).

    A backup with a manifest is read once: each statement is checked as it is sent (confine.py) and the stored
    bytes are hashed on the way; when the load fails or the hash differs, the object is read again, and a damaged
    one is replaced by its second copy (copies.py), loaded afresh, or refused (source.NotAsStored). Any other
    file is checked whole before its first statement runs (confine.preflight: data-only dumps are told there).

    On any failure the database is dropped again and :class:`RestoreRefused` (or the load error) is raised.
    """
    quote_ident(database)
    log = log or (lambda _line: None)
    while True:
        try:
            return _stage_once(url, source, database, log, workers, like)
        except OpsError:
            if source.manifest is None or source.checked:
                raise
            damage = source.damage()  # the object read whole: is the failure its damage?
            if damage is None:
                raise
            note = source.use_copy(damage)
            if note is None:
                raise damage from None
            log(f"note: {note}; `{database}` is loaded again from it")


def _stage_once(url: DatabaseURL, source: Source, database: str, log: Callable[[str], None], workers: int,
                like: str | None) -> StageResult:
    admin = open_connection(url, "")
    try:
        scope = confine.server_scope(admin, source.label, database, source.own_database())
        # Each statement acts on `database` only (confine.py): checked as it is loaded, or the whole file first.
        plan = confine.one_pass(source, scope) if source.manifest is not None else confine.preflight(source, scope)
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {quote_ident(database)} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        try:
            manifest = source.manifest
            total = manifest.total_rows if manifest else None
            progress = Progress(f"restore {source.label} into {database}", total=total, log=log)
            carried = dataonly.copy_schema(url, like, database, plan.data_only, source.label) if plan.data_only else None
            # The values, not only the counts: the server's checksums of the loaded copy against the ones the
            # backup's server computed in its snapshot (checksum.py), each table hashed as soon as its rows are in.
            compared = manifest is not None and same_flavour(admin, manifest.server_version)
            chunk_bytes = chunks.chunk_bytes_for(manifest.uncompressed_bytes, workers) if compared else None
            early = EarlyChecksums(url, database, chunk_bytes, workers) if compared else None
            try:
                loaded = Loader(url, database, workers=workers, progress=progress,  # SET NAMES binary: load.py
                                binary_names=manifest is not None,
                                on_complete=early.complete if early is not None else None,
                                expected_rows={n: t.rows for n, t in manifest.tables.items()} if early else None,
                                ).load(plan.actions())
            finally:
                hashed = early.finish() if early else {}
            if carried is not None:
                loaded.deferred = carried.deferred(loaded.deferred)
            progress.finish()
            if manifest is None:
                return StageResult(database, table_counts(admin, database), loaded.deferred)
            # The rest is hashed now over `workers` connections; the checksums' COUNT(*) gives the row counts, so
            # the copy is read once. A wrong rendering or edit fails here.
            hashed = {part: v for part, v in hashed.items() if part[0] not in loaded.late}
            sums = (loaded_checksums(url, database, workers, chunk_bytes, sizes=loaded.table_bytes, done=hashed)
                    if compared else {})
            counts = {n: rows_of(v) for n, v in sums.items()} if compared else table_counts(admin, database)
            expected = {name: t.rows for name, t in manifest.tables.items()}
            if counts != expected:
                diff = {n: (counts.get(n), expected.get(n)) for n in sorted(set(counts) | set(expected))
                        if counts.get(n) != expected.get(n)}
                raise RestoreRefused(
                    f"The loaded copy of {source.label!r} does not match its manifest: (loaded, expected) rows "
                    f"per table {diff}. The target database was not touched.",
                    next_step="restore another backup (`rusing-ops db backups` lists them).", diff=diff)
            if not compared:
                log(f"note: the backup was taken on {manifest.server_version}: another kind of server "
                    "prints some values differently, so the copy was checked by row counts only")
                return StageResult(database, counts, loaded.deferred)
            differ = [n for n, t in sorted(manifest.tables.items())
                      if t.server_checksum is not None and sums.get(n) != t.server_checksum]  # older backups: none
            if differ:
                raise RestoreRefused(
                    f"The loaded copy of {source.label!r} does not hold the values its backup read: the server "
                    f"checksum of table(s) {', '.join(differ)} differs from the manifest's (the backup was "
                    "altered, or a value was not written exactly). The target database was not touched.",
                    next_step="restore another backup (`rusing-ops db backups` lists them).", tables=differ)
            return StageResult(database, counts, loaded.deferred, sums)
        except BaseException:
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(database)}")
            raise
    finally:
        admin.close()


def restore_backup(url: DatabaseURL, store: BackupStore, ref: str | None = "latest", *, database: str | None = None,
                   pre_restore_backup: bool = True, lock: Callable | None = None, run_id: str | None = None,
                   log: Callable[[str], None] | None = None, workers: int = 2,
                   from_database: str | None = None,
                   after_stage: Callable[[str], None] | None = None) -> RestoreResult:
    """Restore backup ``ref`` (``latest``, a key or name in ``store``, or a local .sql/.sql.gz/.sql.zst path).

    :param database: restore into this database instead of the one in ``url`` (created if missing).
    :param pre_restore_backup: back up the live target first (reason ``pre-restore``) when it holds tables.
    :param lock: a context-manager factory held for the whole restore (from before staging to after the swap);
        default: the DB_WRITE_LOCK ``GET_LOCK``. A swap an earlier restore left half done is repaired first.
    :param from_database: allow a backup of this other database (``latest`` then means its latest); without it a
        backup of another database is refused (catalog.check_target).
    :param after_stage: called with the staging database's name once it is loaded and checked, before the
        pre-restore backup and the swap (point-in-time recovery replays the binlog archive there).
    """
    started = time.monotonic()
    target = database or url.database
    quote_ident(target)
    log = log or (lambda _line: None)
    source = resolve_source(store, ref, from_database or target)
    if source.manifest is not None:  # a backup of another database (or server) only when asked, and said
        for note in catalog.check_target(source.manifest, target, from_database, f"{url.host}:{url.port}"):
            log(f"note: {note}")
    log(f"restore source: {source.label} ({'manifest ' + source.manifest.sha256[:12] if source.manifest else 'plain SQL file, no manifest'})")
    for note in source.notes:  # e.g. read from a second copy; a damaged primary is found while staging (stage)
        log(f"note: {note}")
    with contextlib.ExitStack() as held:
        try:  # held from here to the end of the swap: no migration or other restore can run meanwhile
            held.enter_context(lock() if lock else write_lock(url))
        except LockBusy as exc:
            raise RestoreRefused(f"{exc.message} Nothing was changed: no backup was taken and `{target}` was not "
                                 "touched.", next_step=exc.next_step, changed=False) from None
        repaired = repair_swap(url, target)
        for done in repaired:
            log(f"an earlier restore of `{target}` was interrupted during its swap; {done.line()}")
        pre_key = None
        try:  # a refusal from here on says what the repair and the pre-restore backup did (_say_what_was_done)
            baseline = _fingerprint(url, target)
            staging, staged = _stage_new(url, source, target, log, workers)
            try:
                if after_stage is not None:
                    after_stage(staging)
                if pre_restore_backup:  # a target changed already is not backed up for nothing
                    _refuse_if_changed(url, target, baseline, None)
                    pre_key = backup_live(url.with_database(target), store, run_id, log)
                pause_point("restore-before-swap")
                swap = swap_in(url, staging, target, free_name(url, target, "pre_restore"), staged.deferred,
                               check=lambda cur: _refuse_if_changed(url, target, baseline, pre_key, cur), log=log)
            except BaseException:
                if not interrupted_swaps(url, target):  # a swap that failed half-way keeps staging for its repair
                    drop_database(url, staging)
                raise
        except OpsError as exc:
            _say_what_was_done(exc, target, repaired, pre_key)
            raise
    return RestoreResult(source.label, target, swap.pre_restore_db, pre_key, staged.tables,
                         source.manifest is not None, round(time.monotonic() - started, 3),
                         swap.tables, swap.recreated)


def repair(url: DatabaseURL, target: str, *, lock: Callable | None = None,
           log: Callable[[str], None] | None = None) -> list[str]:
    """Undo or finish a swap into ``target`` that a killed restore left half done (``db restore --repair``)."""
    log = log or (lambda _line: None)
    with (lock() if lock else write_lock(url)):
        done = [r.line() for r in repair_swap(url, target, log=log)]
    return done or [f"no interrupted swap into `{target}`: nothing to repair, nothing was changed"]


def _stage_new(url: DatabaseURL, source: Source, target: str, log, workers: int) -> tuple[str, StageResult]:
    leftovers = derived_databases(url, target, "restore")
    if leftovers:
        log(f"warning: staging database(s) left by an interrupted restore: {', '.join(leftovers)}. They are not "
            "used; drop them (DROP DATABASE) once no other restore is running.")
    staging = free_name(url, target, "restore")
    try:
        staged = stage(url, source, staging, log=log, workers=workers, like=target)
    except OpsError as exc:
        if isinstance(exc, (RestoreRefused, NotAsStored)):  # both say the target was not restored
            raise
        raise RestoreRefused(f"Restore of {source.label!r} stopped before the swap: {exc.message} "
                             f"The target database `{target}` was not touched.", next_step=exc.next_step) from None
    log(f"staged {sum(staged.tables.values()):,} rows in {len(staged.tables)} tables into `{staging}`")
    pause_point("restore-staged")
    return staging, staged


def free_name(url: DatabaseURL, target: str, what: str) -> str:
    """``<target>__<what>_<ts>``, suffixed when a (killed) restore already used that second."""
    taken, ts = set(derived_databases(url, target, what)), stamp()
    name, n = derived_name(target, what, ts), 1
    while name in taken:
        n += 1
        name = derived_name(target, what, f"{ts}_{n}")
    return name


def _say_what_was_done(exc: OpsError, target: str, repaired: list, pre_key: str | None) -> None:
    """A refusal after the repair of an earlier swap or after the pre-restore backup: its text (which speaks of the
    restore's own steps: "not touched", "unchanged") is prefixed with the repair, names the backup, and says
    ``changed=True``: the target (repair) or the store (backup) is not as it was when the command started."""
    if not repaired and not pre_key:
        return
    message = exc.message
    if repaired:
        message = (f"First, an earlier restore's interrupted swap into `{target}` was repaired: "
                   f"{'; '.join(r.line() for r in repaired)}. After that repair: {message}")
    if pre_key and pre_key not in message:
        message += (f" The pre-restore backup {pre_key} was written before the refusal and is kept (reason "
                    "pre-restore: `latest` never picks it).")
    exc.message, exc.changed = message, True
    exc.args = (exc.render(),)


def _fingerprint(url: DatabaseURL, target: str, cur=None) -> dict[str, str]:
    if cur is not None:
        return fingerprint(cur, target)
    conn = open_connection(url, "")
    try:
        with conn.cursor() as c:
            return fingerprint(c, target)
    finally:
        conn.close()


def _refuse_if_changed(url: DatabaseURL, target: str, baseline: dict, pre_key: str | None, cur=None) -> None:
    """Refuse the swap when ``target`` changed since the restore began (the swap would silently replace it)."""
    changes = describe_changes(baseline, _fingerprint(url, target, cur))
    if not changes:
        return
    kept = (f" The pre-restore backup {pre_key} was kept (reason pre-restore: `latest` never picks it)."
            if pre_key else "")
    raise RestoreRefused(
        f"`{target}` changed while the restore was running ({'; '.join(changes[:10])}"
        + (f"; and {len(changes) - 10} more" if len(changes) > 10 else "") + "): something wrote to it that the "
        "swap would have silently replaced. The swap was refused: nothing was restored, those writes are still in "
        f"`{target}`, and the staged copy was dropped." + kept,
        next_step="find and stop the writer (another restore or migration through another Dagster instance, the "
                  "app: stop it first with its stop command), then run the restore again.",
        changed=False, changes=changes)


def live_counts(url: DatabaseURL) -> dict[str, int]:
    """Row counts of every table of ``url.database`` (empty when it does not exist or holds no table)."""
    conn = open_connection(url, "")
    try:
        return table_counts(conn, url.database)
    finally:
        conn.close()


def backup_live(target: DatabaseURL, store: BackupStore, run_id: str | None, log) -> str | None:
    """Back up ``target`` (reason ``pre-restore``) unless it holds no table; return the backup's key."""
    if not live_counts(target):
        log(f"`{target.database}` holds no tables: no pre-restore backup needed")
        return None
    result = backup_database(target, store, reason="pre-restore", run_id=run_id, log=log)
    log(f"pre-restore backup: {result.uri}")
    try:  # its second copy too (RUSING_BACKUP_COPY_URL); a failing copy store does not stop a restore
        copies.copy_backup(store, result.manifest, log)
    except copies.CopyFailed as exc:
        log(f"warning: {exc.message}")
    return result.manifest.key
