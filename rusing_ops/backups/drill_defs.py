"""Dagster face of backup protection: the weekly restore drill (RTO / RPO, plotted), the immutability canary, and
retention on a schedule.

- asset ``restore_drill``: each materialization is one drill (drill.py); its metadata (restore_s, mb_per_s,
  rpo_hours, rows) is plotted by the UI over time. Checks ``restore_drill_rto`` / ``restore_drill_rpo`` (ERROR,
  blocking: a missed target fails the run, so alert_on_run_failure alerts) against RUSING_RTO_TARGET_S /
  RUSING_RPO_TARGET_H. Job ``run_restore_drill``, schedule ``restore_drill_schedule`` (RUSING_DRILL_CRON, weekly).
- check ``backup_store_immutable`` on database_backup: writes a locked canary and asserts its delete is refused
  (WARN when the store cannot be immutable or no lock is configured, ERROR when the server deletes anyway). Job
  ``check_backup_store_immutable``, schedule ``backup_store_immutable_daily``.
- schedule ``retention_schedule`` (RUSING_RETENTION_CRON, daily): runs prune_backups, a dry run unless
  RUSING_RETENTION_APPLY=true (prune never deletes the newest verified backup, nor a locked one).
"""

import datetime as dt

import dagster as dg
from pydantic import Field

from ..core.errors import OpsError
from ..dagster_support import failure, max_runtime
from ..resources import BackupStoreResource, DatabaseResource
from ..settings import env
from . import immutability
from .defs import ASSET
from .drill import judge, run_drill

RTO_CHECK, RPO_CHECK = "restore_drill_rto", "restore_drill_rpo"
DRILL_KEY = dg.AssetKey("restore_drill")


class RestoreDrillConfig(dg.Config):
    pick: str = Field(default_factory=lambda: env("RUSING_DRILL_PICK"), description="Which backup: `latest`, or "
                      "`random:N` (at random among the complete backups of the last N days). RUSING_DRILL_PICK.")
    rto_target_s: float = Field(default_factory=lambda: float(env("RUSING_RTO_TARGET_S")), description="Restore "
                                "seconds above which restore_drill_rto fails (RUSING_RTO_TARGET_S).")
    rpo_target_h: float = Field(default_factory=lambda: float(env("RUSING_RPO_TARGET_H")), description="Age (hours) of "
                                "the newest verified backup above which restore_drill_rpo fails (RUSING_RPO_TARGET_H).")


@dg.asset(
    name="restore_drill", group_name="backups", kinds={"mysql"},
    check_specs=[
        dg.AssetCheckSpec(RTO_CHECK, asset=DRILL_KEY, blocking=True,
                          description="The drill's backup restored and matched its manifest within RUSING_RTO_TARGET_S."),
        dg.AssetCheckSpec(RPO_CHECK, asset=DRILL_KEY, blocking=True,
                          description="The newest verified backup is younger than RUSING_RPO_TARGET_H hours."),
    ],
    description="A restore drill, as AWS Backup restore testing does: picks a backup (latest or random within N days), "
    "restores it into a scratch database, compares every table with the manifest's server checksums, drops the "
    "scratch database. Plots restore_s and mb_per_s (RTO) and rpo_hours (age of the newest verified backup) over time; "
    "its checks fail (ERROR) when a target is missed. Weekly by restore_drill_schedule.")
def restore_drill(context: dg.AssetExecutionContext, config: RestoreDrillConfig, database: DatabaseResource,
                  backup_store: BackupStoreResource) -> dg.MaterializeResult:
    try:
        result = run_drill(database.parsed, backup_store.get_store(), pick=config.pick, log=context.log.info)
    except OpsError as exc:
        raise failure(exc) from None
    rto, rpo = judge(result, config.rto_target_s, config.rpo_target_h)
    metadata = {"backup": result.backup, "picked_by": result.picked_by, "ok": result.ok,
                "restore_s": float(result.restore_s), "mb_per_s": float(result.mb_per_s),
                **({"rpo_hours": float(result.rpo_hours)} if result.rpo_hours is not None else {}),
                "newest_verified": result.newest_verified or "(none)", "dagster/row_count": result.rows,
                "backup_bytes": result.bytes, "taken_at": result.taken_at, "scratch_db": result.scratch_db,
                "notes": "; ".join(result.notes) or "(none)"}
    severity = dg.AssetCheckSeverity.ERROR
    return dg.MaterializeResult(metadata=metadata, check_results=[
        dg.AssetCheckResult(check_name=RTO_CHECK, passed=rto.passed, severity=severity, description=rto.description,
                            metadata={"restore_s": float(result.restore_s), "target_s": config.rto_target_s}),
        dg.AssetCheckResult(check_name=RPO_CHECK, passed=rpo.passed, severity=severity, description=rpo.description,
                            metadata={"target_h": config.rpo_target_h,
                                      **({"rpo_hours": float(result.rpo_hours)} if result.rpo_hours is not None
                                         else {})}),
    ])


run_restore_drill = dg.define_asset_job(
    "run_restore_drill", selection=dg.AssetSelection.assets(restore_drill), tags=max_runtime(6),
    description="One restore drill (asset restore_drill): a backup restored into a scratch database and compared with "
    "its manifest; records RTO and RPO. Weekly by restore_drill_schedule.")

restore_drill_schedule = dg.ScheduleDefinition(
    name="restore_drill_schedule", job=run_restore_drill, cron_schedule=env("RUSING_DRILL_CRON"),
    execution_timezone="America/Toronto", default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The restore drill, weekly by default (RUSING_DRILL_CRON, Sunday 05:00 Toronto time).")


@dg.asset_check(asset=ASSET, name="backup_store_immutable",
                description="Writes a small Object-Locked canary in the backup store and asserts that deleting that "
                "version is refused (some S3-compatible servers accept the lock and delete anyway). WARN when the "
                "store cannot be immutable (a local folder) or RUSING_BACKUP_LOCK_DAYS is unset; ERROR when a lock "
                "is configured and not enforced.")
def backup_store_immutable(backup_store: BackupStoreResource) -> dg.AssetCheckResult:
    store = backup_store.get_store()
    result = immutability.canary(store)
    severity = dg.AssetCheckSeverity.ERROR if result.required and not result.immutable else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckResult(passed=result.immutable, severity=severity, description=result.description,
                               metadata={"store": store.url, "immutable": result.immutable})


check_backup_store_immutable = dg.define_asset_job(
    "check_backup_store_immutable", selection=dg.AssetSelection.checks(backup_store_immutable), tags=max_runtime(0.25),
    description="Runs the backup_store_immutable canary check (daily by backup_store_immutable_daily).")

backup_store_immutable_daily = dg.ScheduleDefinition(
    name="backup_store_immutable_daily", job=check_backup_store_immutable, cron_schedule="45 4 * * *",
    execution_timezone="America/Toronto", default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily: can a locked backup really not be deleted?")


def retention_run_config(apply: str | None = None) -> dict:
    """prune_backups' run config for the schedule: a dry run unless RUSING_RETENTION_APPLY is true."""
    value = (apply if apply is not None else env("RUSING_RETENTION_APPLY") or "").strip().lower()
    return {"ops": {"prune_backups_op": {"config": {"dry_run": value not in ("true", "1", "yes")}}}}


@dg.schedule(job_name="prune_backups", cron_schedule=env("RUSING_RETENTION_CRON"), name="retention_schedule",
             execution_timezone="America/Toronto", default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Daily retention (keep 7 daily / 4 weekly / 6 monthly per database): deletes the pruned "
             "backups and their partitions only when RUSING_RETENTION_APPLY=true, else reports (dry run). Never the "
             "newest verified backup, a pinned or a locked one.")
def retention_schedule(context: dg.ScheduleEvaluationContext):
    when = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    return dg.RunRequest(run_key=f"retention-{when.date().isoformat()}", run_config=retention_run_config())


defs = dg.Definitions(
    assets=[restore_drill], asset_checks=[backup_store_immutable],
    jobs=[run_restore_drill, check_backup_store_immutable],
    schedules=[restore_drill_schedule, backup_store_immutable_daily, retention_schedule],
)
