"""The restore engine: verify -> load into a staging database -> check row counts -> (backup) -> atomic swap.

A failure at any step before the swap leaves the target database untouched and drops the staging database
(DESIGN.md §3). The swap is one ``RENAME TABLE`` statement under the database write lock; the replaced tables
are kept in ``<target>__pre_restore_<ts>`` until an operator drops them.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Callable

from ..core.database import quote_ident
from ..core.dburl import DatabaseURL
from ..core.errors import LockBusy, OpsError
from ..core.progress import Progress
from ..core.store import BackupStore
from . import catalog
from .connection import open_connection
from .dump import backup_database
from .load import Loader
from .source import Source, resolve_source
from .swap import swap_in


class RestoreRefused(OpsError):
    """The restore did not start, or stopped before the swap: the target database is untouched."""


@dataclass
class StageResult:
    database: str
    tables: dict[str, int]
    deferred: list[str]


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
    return (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y%m%d%H%M%S")


def derived_name(target: str, what: str, ts: str) -> str:
    name = f"{target}__{what}_{ts}"
    if len(name) > 64:
        raise RestoreRefused(f"Database name {target!r} is too long to derive {what!r} databases from (64 max).")
    return name


def table_counts(conn, database: str) -> dict[str, int]:
    with conn.cursor() as cur:
        cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                    "AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME", (database,))
        names = [r[0].decode() for r in cur.fetchall()]
        counts = {}
        for name in names:
            cur.execute(f"SELECT COUNT(*) FROM {quote_ident(database)}.{quote_ident(name)}")
            counts[name] = int(cur.fetchone()[0])
    return counts


def derived_databases(url: DatabaseURL, target: str, what: str) -> list[str]:
    """Databases named ``<target>__<what>_<ts>`` (staging copies, pre-restore tables), oldest first."""
    conn = open_connection(url, "")
    try:
        with conn.cursor() as cur:
            pattern = quote_ident(target).strip("`").replace("_", "\\_") + f"\\_\\_{what}\\_%"
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
          workers: int = 2) -> StageResult:
    """Create ``database`` and load ``source`` into it; compare its row counts with the manifest.

    On any failure the database is dropped again and :class:`RestoreRefused` (or the load error) is raised.
    """
    quote_ident(database)
    admin = open_connection(url, "")
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {quote_ident(database)} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        try:
            manifest = source.manifest
            total = manifest.total_rows if manifest else None
            progress = Progress(f"restore {source.label} into {database}", total=total, log=log)
            loaded = Loader(url, database, workers=workers, progress=progress).load(source.statements())
            progress.finish()
            counts = table_counts(admin, database)
            if manifest is not None:
                expected = {name: t.rows for name, t in manifest.tables.items()}
                if counts != expected:
                    diff = {n: (counts.get(n), expected.get(n)) for n in sorted(set(counts) | set(expected))
                            if counts.get(n) != expected.get(n)}
                    raise RestoreRefused(
                        f"The loaded copy of {source.label!r} does not match its manifest: (loaded, expected) rows "
                        f"per table {diff}. The target database was not touched.",
                        next_step="restore another backup (`rusing-ops db backups` lists them).", diff=diff)
            return StageResult(database, counts, loaded.deferred)
        except BaseException:
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(database)}")
            raise
    finally:
        admin.close()


def restore_backup(url: DatabaseURL, store: BackupStore, ref: str | None = "latest", *, database: str | None = None,
                   pre_restore_backup: bool = True, lock: Callable | None = None, run_id: str | None = None,
                   log: Callable[[str], None] | None = None, workers: int = 2,
                   from_database: str | None = None) -> RestoreResult:
    """Restore backup ``ref`` (``latest``, a key or name in ``store``, or a local .sql/.sql.gz/.sql.zst path).

    :param database: restore into this database instead of the one in ``url`` (created if missing).
    :param pre_restore_backup: back up the live target first (reason ``pre-restore``) when it holds tables.
    :param lock: a context-manager factory held around the swap; default: the DB_WRITE_LOCK ``GET_LOCK``.
    :param from_database: allow a backup of this other database (``latest`` then means its latest); without it a
        backup of another database is refused (catalog.check_target).
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
    source.check_integrity()
    leftovers = derived_databases(url, target, "restore")
    if leftovers:
        log(f"warning: staging database(s) left by an interrupted restore: {', '.join(leftovers)}. They are not "
            "used; drop them (DROP DATABASE) once no other restore is running.")
    ts = stamp()
    staging = derived_name(target, "restore", ts)
    n = 1
    while staging in leftovers:  # a killed restore started in this very second
        n += 1
        staging = derived_name(target, "restore", f"{ts}_{n}")
    try:
        staged = stage(url, source, staging, log=log, workers=workers)
    except OpsError as exc:
        if isinstance(exc, RestoreRefused):
            raise
        raise RestoreRefused(f"Restore of {source.label!r} stopped before the swap: {exc.message} "
                             f"The target database `{target}` was not touched.", next_step=exc.next_step) from None
    log(f"staged {sum(staged.tables.values()):,} rows in {len(staged.tables)} tables into `{staging}`")
    pre_key = None
    try:
        if pre_restore_backup:
            pre_key = backup_live(url.with_database(target), store, run_id, log)
    except BaseException:
        drop_database(url, staging)
        raise
    try:
        swap = swap_in(url, staging, target, derived_name(target, "pre_restore", ts), staged.deferred, lock=lock,
                       log=log)
    except LockBusy as exc:
        drop_database(url, staging)
        raise RestoreRefused(f"{exc.message} The target database `{target}` was not touched; the staged copy was "
                             "dropped.", next_step=exc.next_step, changed=False) from None
    return RestoreResult(source.label, target, swap.pre_restore_db, pre_key, staged.tables,
                         source.manifest is not None, round(time.monotonic() - started, 3),
                         swap.tables, swap.recreated)


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
    return result.manifest.key
