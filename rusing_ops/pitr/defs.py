"""Point-in-time recovery in Dagster: the `binlog_archive` asset and its checks, the sensor that keeps it current,
and the `restore_to_time` / `undo_changes` jobs. The work is in `pitr/archive.py`, `replay.py` and `recover.py`."""


import time

import dagster as dg
from pydantic import Field

from ..backups.defs import record_stored
from ..core.errors import OpsError
from ..dagster_support import (
    configured_target,
    failure,
    max_runtime,
    metadata_of,
    table_of,
    target_tags,
)
from ..resources import (
    DB_WRITE_POOL,
    DB_WRITE_TAGS,
    BackupStoreResource,
    DatabaseResource,
)
from ..settings import env
from . import archive, recover, replay

ASSET = dg.AssetKey("binlog_archive")
TARGET = configured_target()
NO_GAP = dg.AssetCheckSpec("binlog_archive_no_gap", asset=ASSET, description="The archive holds every change from "
                           "the newest backup's binlog position to the last pass, with no missing file or segment.")
SETTINGS = dg.AssetCheckSpec("binlog_settings_ok", asset=ASSET, description="The server logs ROW events and keeps "
                             "binlogs longer than the archive interval (binlog_format, binlog_expire_logs_seconds).")


def interval_s() -> int:
    return int(env("RUSING_BINLOG_ARCHIVE_INTERVAL_S"))


@dg.multi_asset(specs=[dg.AssetSpec(ASSET, group_name="backups", kinds={"mysql"},
                                    description="The server's binary log copied into the backup store, segment by "
                                                "segment (RPO = its lag). Point-in-time restores and undo read it.")],
                check_specs=[NO_GAP, SETTINGS], can_subset=False)
def binlog_archive(context: dg.AssetExecutionContext, database: DatabaseResource, backup_store: BackupStoreResource):
    """Copy what the server logged since the last pass; report lag, size and gaps; check the server's settings."""
    url, store = database.parsed, backup_store.get_store()
    try:
        done = archive.archive_pass(url, store, log=context.log.info)
    except archive.PitrUnavailable as exc:  # TiDB, or no log_bin: say so, on both checks, without a false green
        yield dg.MaterializeResult(metadata={"available": False, "why": str(exc)})
        for spec in (NO_GAP, SETTINGS):
            yield dg.AssetCheckResult(check_name=spec.name, passed=False, severity=dg.AssetCheckSeverity.WARN,
                                      description=str(exc))
        return
    except OpsError as exc:
        raise failure(exc) from None
    st, written = done.status, done.written
    yield dg.MaterializeResult(metadata={
        **metadata_of(st.summary()), "available": True, "lag_s": float(st.lag_s or 0.0), "bytes": st.bytes,
        "segments_written": len(written), "archived_at": archive.utc(time.time()),
        "pruned_objects": len(done.pruned),  # files wholly older than the oldest retained backup's position
        "new": table_of([{"file": s.file, "start": s.start, "end": s.end, "bytes": s.bytes} for s in written]),
    })
    yield dg.AssetCheckResult(check_name=NO_GAP.name, passed=not st.gaps,
                              description="; ".join(st.gaps) or f"no gap; archived to {st.summary()['archived_to']}",
                              metadata={"gaps": len(st.gaps)})
    problems = archive.settings_problems(st, interval_s())
    yield dg.AssetCheckResult(check_name=SETTINGS.name, passed=not problems,
                              description="; ".join(problems) or f"binlog_format ROW, binlogs kept "
                              f"{'forever' if not st.expire_s else f'{st.expire_s} s'} (> {interval_s()} s interval)")


archive_binlogs = dg.define_asset_job(
    "archive_binlogs", selection=dg.AssetSelection.assets(ASSET), tags=max_runtime(0.5),
    description="One pass of the binlog archive: copy what the server logged since the last pass into the backup "
                "store, and exit. Requested by the sensor archive_binlogs_when_the_server_moved; also `rusing-ops db "
                "binlogs archive`.")


@dg.sensor(job=archive_binlogs, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.STOPPED,
           description="Every 30 s: compare the server's binlog position with the archive's end; request one archive "
                       "pass when there is something new and the last pass is older than "
                       "RUSING_BINLOG_ARCHIVE_INTERVAL_S (at most one run a minute under writes, none when idle). "
                       "Start it on a server that writes a binlog (MariaDB/MySQL with --log-bin).")
def archive_binlogs_when_the_server_moved(context: dg.SensorEvaluationContext, database: DatabaseResource,
                                          backup_store: BackupStoreResource):
    try:
        st = archive.status(database.parsed, backup_store.get_store())
    except archive.PitrUnavailable as exc:
        return dg.SkipReason(str(exc))
    except OpsError as exc:  # a pass is requested anyway (once per interval): its failure is alerted, not hidden
        if time.time() - float(context.cursor or 0) < interval_s():
            return dg.SkipReason(f"cannot read the binlog status ({exc}); a pass that reports it ran less than "
                                 f"{interval_s()} s ago")
        context.update_cursor(str(time.time()))
        return dg.RunRequest(run_key=f"unreadable-{int(time.time())}")
    why_not = archive.pass_due(st, float(context.cursor or 0), interval_s())
    if why_not:
        return dg.SkipReason(why_not)
    context.update_cursor(str(time.time()))
    return dg.RunRequest(run_key=f"{st.server[0]}:{st.server[1]}")


class RestoreToTimeConfig(dg.Config):
    to: str | None = Field(default=None, description="Restore to this time: 'YYYY-MM-DD HH:MM:SS' (UTC unless a zone "
                           "follows, e.g. '2026-12-01 14:01:59 America/Toronto'). Empty with no position/GTID: the "
                           "newest archived change.")
    to_position: str | None = Field(default=None, description="Or stop at FILE:POSITION of the binlog.")
    to_gtid: str | None = Field(default=None, description="Or stop after this GTID (domain-server-sequence).")
    skip: list[str] = Field(default_factory=list, description="Transactions to leave out (GTIDs or FILE:POS), e.g. "
                            "the bad DELETE; a dry run lists them.")
    database: str | None = Field(default=None, description=f"Rebuild into this database instead of {TARGET}.")
    dry_run: bool = Field(default=True, description="Show the backup chosen, the binlog range, the transactions and "
                          "the skipped ones; change nothing. Set to false (and confirm) to restore.")
    confirm: str | None = Field(default=None, description=f"The target database's name ({TARGET}, or `database`); "
                                "needed unless dry_run.")


@dg.op(pool=DB_WRITE_POOL, description=f"Point-in-time restore of {TARGET}: newest backup before the time -> staging "
       "-> replay of the archived binlogs -> checks -> pre-restore backup -> atomic swap.")
def restore_to_time_op(context: dg.OpExecutionContext, config: RestoreToTimeConfig, database: DatabaseResource,
                       backup_store: BackupStoreResource) -> dict:
    store = backup_store.get_store()
    try:
        stop = replay.parse_stop(config.to, config.to_position, config.to_gtid)
        out = recover.restore_to(database.parsed, store, stop, confirm=config.confirm, database=config.database,
                                 skip=config.skip, dry_run=config.dry_run, run_id=context.run.run_id,
                                 log=context.log.info)
    except OpsError as exc:
        raise failure(exc) from None
    if out.get("pre_restore_backup"):
        record_stored(context, store, out["pre_restore_backup"], database)
    context.add_output_metadata(metadata_of({k: v for k, v in out.items() if k != "tables"}))
    return out


@dg.job(name="restore_to_time", tags={**DB_WRITE_TAGS, **max_runtime(6), **target_tags()},
        description=f"Runbook §6 data loss, to the second: restore {TARGET} as it was at a time (or before one bad "
                    "transaction) from the newest backup plus the binlog archive. Dry run by default. Also "
                    "`rusing-ops db restore --to`.")
def restore_to_time():
    restore_to_time_op()


class UndoChangesConfig(dg.Config):
    since: str = Field(description="Start of the window, 'YYYY-MM-DD HH:MM:SS' (UTC unless a zone follows).")
    until: str | None = Field(default=None, description="End of the window (default: now).")
    tables: list[str] = Field(default_factory=list, description="Only these tables (default: every table).")
    confirm: str | None = Field(default=None, description=f"Empty: preview only. The database's name ({TARGET}): "
                                "back it up, then apply the inverse of the window's row changes.")


@dg.op(pool=DB_WRITE_POOL, description=f"Preview, or with confirm apply, the inverse of {TARGET}'s row changes in a "
       "time window (mariadb-binlog --flashback over the archive).")
def undo_changes_op(context: dg.OpExecutionContext, config: UndoChangesConfig, database: DatabaseResource,
                    backup_store: BackupStoreResource) -> dict:
    store = backup_store.get_store()
    try:
        out = recover.undo(database.parsed, store, replay.parse_time(config.since),
                           replay.parse_time(config.until) if config.until else None, tables=config.tables or None,
                           confirm=config.confirm, run_id=context.run.run_id, log=context.log.info)
    except OpsError as exc:
        raise failure(exc) from None
    if out.get("pre_undo_backup"):
        record_stored(context, store, out["pre_undo_backup"], database)
    context.add_output_metadata(metadata_of({**out, "changes": out["changes"][:200]}))
    return out


@dg.job(name="undo_changes", tags={**DB_WRITE_TAGS, **max_runtime(2), **target_tags()},
        description="The 'DELETE without a WHERE at 14:02' morning: preview the row changes of a window from the "
                    "binlog archive, and with confirm apply their inverse (a backup is taken first). Also "
                    "`rusing-ops db undo`.")
def undo_changes():
    undo_changes_op()


defs = dg.Definitions(assets=[binlog_archive], jobs=[archive_binlogs, restore_to_time, undo_changes],
                      sensors=[archive_binlogs_when_the_server_moved])
