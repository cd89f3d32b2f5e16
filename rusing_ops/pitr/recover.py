"""The two procedures built on the archive: restore to a point in time, and undo a window's row changes.

Restore to T: archive what is new -> the newest complete backup of the database taken before T (its manifest
records the snapshot's binlog position) -> the usual restore into a staging database -> replay the archive from
that position to T into staging (``replay.apply``) -> the usual checks, pre-restore backup and one-rename swap.
A dry run stops after the plan: the backup chosen, the binlog range, the transactions and the skipped ones.

Undo: the row changes of the window (from the archive) are previewed; with ``confirm`` a backup of the live
database is taken, then their inverse (``mariadb-binlog --flashback``) is applied under the write lock. DDL in the
window is refused: flashback cannot invert a schema change.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from ..backups import catalog
from ..backups.dump import backup_database
from ..backups.restore import restore_backup
from ..backups.swap import write_lock
from ..core.dburl import DatabaseURL
from ..core.errors import NotFound, OpsError, require_confirm
from ..core.store import BackupStore
from . import archive, binlog, replay


def _taken_at(entry) -> dt.datetime:
    started = getattr(entry.manifest, "started_at", "") or ""
    try:
        return dt.datetime.fromisoformat(started).astimezone(dt.UTC)
    except ValueError:
        return entry.taken_at


def _order(position: tuple[str, int]) -> tuple[int, int]:
    return archive.file_number(position[0]), position[1]


def gtid_position(store: BackupStore, server: str, gtid: str) -> tuple[str, int]:
    """Where the transaction ``gtid`` ends in the archive (file, end position)."""
    for seg in archive.segments(store, server):
        if seg.first_gtid is None:
            continue
        for group in binlog.groups(binlog.parse(archive.read_segment(store, seg))):
            if group.gtid == gtid:
                return seg.file, group.end_pos
    raise replay.ReplayRefused(f"GTID {gtid} is not in the binlog archive of {server}.",
                               next_step="check the GTID (`rusing-ops db restore --to ... --dry-run` lists them).")


def choose_backup(store: BackupStore, database: str, before: dt.datetime | None,
                  at_or_before: tuple[str, int] | None = None):
    """The newest complete backup of ``database`` with a binlog position, taken at or before ``before`` and whose
    position is at or before ``at_or_before`` (a backup taken after the stop point would silently restore a later
    state: it is never chosen)."""
    skipped = 0
    for entry in catalog.list_backups(store, database=database):
        m = entry.manifest
        if m is None or m.database != database:
            continue
        if before is not None and _taken_at(entry) > before:
            continue
        position = archive.backup_position(m)
        if position is None:
            skipped += 1
            continue
        if at_or_before is not None and _order(position) > _order(at_or_before):
            continue
        return entry
    why = f" ({skipped} older ones have no binlog position: taken before the server wrote a binlog?)" if skipped else ""
    when = f" taken before {before:%Y-%m-%d %H:%M:%S}Z" if before else ""
    when += f" at or before {at_or_before[0]}:{at_or_before[1]}" if at_or_before else ""
    raise NotFound(f"There is no complete backup of `{database}`{when} that records its binlog position{why}.",
                   next_step="choose a later point, or take a backup now (`rusing-ops db backup`) for the future.")


@dataclass
class RecoveryPlan:
    backup: str
    backup_taken_at: str
    replay: replay.Plan
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {"backup": self.backup, "backup_taken_at": self.backup_taken_at, **self.replay.summary(),
                "notes": self.notes}


def plan_recovery(url: DatabaseURL, store: BackupStore, stop: replay.Stop, *, database: str | None = None,
                  skip: list[str] = (), log: Callable[[str], None] = lambda _l: None) -> RecoveryPlan:
    """Archive what is new, then choose the backup and the replay range for ``stop`` (nothing else is touched)."""
    database = database or url.database
    server = archive.read_server_log(url)
    archive.archive_once(url, store, log=log)
    limit = stop.position or (gtid_position(store, server.server_key, stop.gtid) if stop.gtid else None)
    entry = choose_backup(store, database, stop.time, limit)
    start = archive.backup_position(entry.manifest)
    p = replay.plan(store, server.server_key, database, start, stop, skip=list(skip), log=log)
    notes = []
    if stop.time and p.archived_to and p.archived_to < stop.time.timestamp():
        notes.append(f"the archive holds changes up to {archive.utc(p.archived_to)}: nothing later was logged by "
                     "the server")
    return RecoveryPlan(entry.key, _taken_at(entry).isoformat(), p, notes)


def restore_to(url: DatabaseURL, store: BackupStore, stop: replay.Stop, *, confirm: str | None,
               database: str | None = None, source: str | None = None, skip: list[str] = (),
               dry_run: bool = False, pre_restore_backup: bool = True, run_id: str | None = None,
               log: Callable[[str], None] = lambda _l: None) -> dict:
    """Restore ``database`` (default: the URL's) to ``stop``; see the module docstring.

    :param source: the database whose backups and changes are used (default: the target itself); another one
        rebuilds that database's past into ``database`` (e.g. a scratch copy to inspect).
    """
    target = database or url.database
    source = source or target
    if not dry_run:
        require_confirm(confirm, target, "nothing was restored")
    rp = plan_recovery(url, store, stop, database=source, skip=skip, log=log)
    out = {"dry_run": dry_run, "target": target, **rp.summary()}
    if dry_run:
        return out
    result = restore_backup(url, store, rp.backup, database=target, pre_restore_backup=pre_restore_backup,
                            run_id=run_id, log=log, from_database=source if source != target else None,
                            after_stage=lambda staging: replay.apply(url, rp.replay, staging, log=log))
    out.update(target=result.target, pre_restore_backup=result.pre_restore_backup,
               pre_restore_db=result.pre_restore_db, tables=result.tables, duration_s=result.duration_s)
    return out


def undo(url: DatabaseURL, store: BackupStore, since: dt.datetime, until: dt.datetime | None = None, *,
         tables: list[str] | None = None, confirm: str | None = None, database: str | None = None,
         run_id: str | None = None, log: Callable[[str], None] = lambda _l: None) -> dict:
    """Preview (no ``confirm``) or apply (``confirm`` = the database) the inverse of the window's row changes."""
    target = database or url.database
    server = archive.read_server_log(url)
    archive.archive_once(url, store, log=log)
    segs = archive.segments(store, server.server_key)
    if not segs:
        raise NotFound(f"The binlog archive of {server.server_key} is empty.",
                       next_step="run `rusing-ops db binlogs archive`; changes before the archive began cannot be "
                                 "undone from it.")
    first = segs[0]
    p = replay.plan(store, server.server_key, target, (first.file, first.start), replay.Stop(time=until),
                    tables=tables, until_start=since, log=log)
    ddl = [g.describe() for g in p.groups if g.is_ddl]
    if ddl:
        raise replay.ReplayRefused(f"The window holds schema changes, which cannot be inverted: {'; '.join(ddl)}.",
                                   next_step="narrow the window (--since/--until), or restore to a time instead "
                                             "(`rusing-ops db restore --to ...`).")
    changes = replay.preview(url, p) if p.groups else []
    out = {"database": target, "since": f"{since:%Y-%m-%d %H:%M:%S}Z",
           "until": f"{until:%Y-%m-%d %H:%M:%S}Z" if until else "now", "transactions": len(p.groups),
           "changes": changes, "applied": False}
    if confirm is None or not p.groups:
        return out
    require_confirm(confirm, target, "nothing was undone")
    backup = backup_database(url.with_database(target), store, reason="pre-undo", run_id=run_id, log=log)
    out["pre_undo_backup"] = backup.manifest.key
    try:
        with write_lock(url.with_database(target)):  # the write lock is per database: the one being changed
            replay.apply(url, p, target, flashback=True, log=log)
    except OpsError as exc:
        raise replay.ReplayRefused(f"Undo of `{target}` stopped: {exc.message}", changed=exc.changed,
                                   next_step=f"restore the backup taken just before it to get back where you were: "
                                             f"`rusing-ops db restore --file {backup.manifest.key} --confirm "
                                             f"{target}`") from None
    out["applied"] = True
    return out
