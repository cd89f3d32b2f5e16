"""Dagster face of the backups capability: asset `database_backup` (one dynamic partition per backup), jobs
`backup_database`, `restore_database`, `verify_backup`, `prune_backups`, `check_backup_freshness`, schedules
`nightly_backup` and `backup_freshness_schedule`, and the checks `backup_verified` (per partition) and `backup_fresh`."""

import datetime as dt
from typing import Optional

import dagster as dg
from pydantic import Field

from ..core.errors import OpsError, require_confirm
from ..dagster_support import failure
from ..resources import DB_WRITE_POOL, DB_WRITE_TAGS, BackupStoreResource, DatabaseResource
from ..settings import env, resolve_path
from . import catalog, keys
from .dump import backup_database as take_backup
from .restore import restore_backup
from .retention import RetentionPolicy, prune_backups as prune
from .verify import verify_backup as verify

PARTITIONS = dg.DynamicPartitionsDefinition(name="database_backup")
FRESH_HOURS = 26


def _drizzle_dir():
    path = resolve_path(env("DRIZZLE_DIR"))
    return path if path.is_dir() else None


class BackupDatabaseConfig(dg.Config):
    reason: str = Field(default="manual", description="Why (nightly, pre-migration, manual, ...): part of the backup name. Used when the partition key is not itself a backup name.")
    compression: str = Field(default="zstd", description="zstd (default, fast) or gzip (for tools that only read .gz).")


# backup_verified is declared on the asset (so the UI shows it per partition) and recorded by the verify_backup op
# job: Dagster 1.13 cannot run a checks-only job for one partition in process, and "latest" needs resolving first.
VERIFIED = dg.AssetCheckSpec(
    "backup_verified", asset="database_backup", partitions_def=PARTITIONS,
    description="The partition's backup restores into a scratch database with the manifest's row counts and content checksums (recorded by verify_backup).")


@dg.multi_asset(
    name="database_backup", can_subset=True, check_specs=[VERIFIED],
    specs=[dg.AssetSpec("database_backup", partitions_def=PARTITIONS, group_name="backups", kinds={"mysql", "s3"},
                        description="A consistent logical backup of the application database (plain SQL, zstd/gzip) "
                        "with its manifest; one partition per backup.")],
    description="Dump the application database in one snapshot, stream it compressed to the backup store, write the manifest last.")
def database_backup(context: dg.AssetExecutionContext, config: BackupDatabaseConfig, database: DatabaseResource,
                    backup_store: BackupStoreResource):
    name = keys.parse_name(context.partition_key)
    taken_at = name.taken_at if name else dt.datetime.now(dt.timezone.utc)
    reason = name.reason if name else config.reason
    store = backup_store.get_store()
    key = None
    if dg.AssetKey("database_backup") in context.selected_asset_keys:
        try:
            result = take_backup(database.parsed, store, reason=reason, compression=config.compression,
                                 run_id=context.run.run_id, drizzle_dir=_drizzle_dir(), log=context.log.info,
                                 now=taken_at)
        except OpsError as exc:
            raise failure(exc) from exc
        key = result.manifest.key
        yield dg.MaterializeResult(asset_key="database_backup", metadata=backup_metadata(result.manifest, result.uri))
    if VERIFIED.key in context.selected_asset_check_keys:  # "materialize" or "execute check" in the UI
        try:
            fields = _check_fields(verify(database.parsed, store, key or context.partition_key, log=context.log.info))
        except OpsError as exc:
            fields = {"passed": False, "description": str(exc)}
        yield dg.AssetCheckResult(asset_key="database_backup", check_name=VERIFIED.name, **fields)


def backup_metadata(m, uri: str) -> dict:
    """What an operator checks on a backup partition (DESIGN.md §3 / STYLE.md §4)."""
    head = m.migration_head or {}
    return {
        "key": m.key, "uri": uri, "bytes": m.bytes, "uncompressed_bytes": m.uncompressed_bytes,
        "compressed_ratio": m.ratio, "sha256": m.sha256, "rows": m.total_rows,
        "table_rows": dg.MetadataValue.json({n: t.rows for n, t in m.tables.items()}),
        "duration_s": m.duration_s, "migration_head": head.get("tag") or head.get("hash") or "(none)",
        "reason": m.reason, "compression": m.compression, "verified": False,
    }


def record_backup(context: dg.OpExecutionContext, store, key: str) -> None:
    """Register a backup taken inside another job (pre-restore) as a partition of database_backup."""
    name = keys.parse_key(key).name
    if not context.instance.has_dynamic_partition(PARTITIONS.name, name):
        context.instance.add_dynamic_partitions(PARTITIONS.name, [name])
    context.log_event(dg.AssetMaterialization(asset_key="database_backup", partition=name,
                                              metadata=backup_metadata(catalog.read_manifest(store, key), store.uri(key))))


backup_database = dg.define_asset_job(
    "backup_database", selection=dg.AssetSelection.assets("database_backup").without_checks(),
    executor_def=dg.in_process_executor,
    description="Runbook §3 `pnpm db:backup`: takes one backup as a new partition of database_backup. Run by "
    "nightly_backup, by `rusing-ops db backup`, or by hand (add a partition named backup-YYYY-MM-DDTHHMMSSZ-reason).")


@dg.schedule(job=backup_database, cron_schedule="0 3 * * *", execution_timezone="America/Toronto",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Nightly backup at 03:00 Toronto time; registers the night's partition. A missed night shows in the backup_fresh check.")
def nightly_backup(context: dg.ScheduleEvaluationContext):
    when = context.scheduled_execution_time or dt.datetime.now(dt.timezone.utc)
    name = keys.partition_name(when, "nightly")
    context.instance.add_dynamic_partitions(PARTITIONS.name, [name])
    return dg.RunRequest(run_key=name, partition_key=name)


def _check_fields(result) -> dict:
    """The backup_verified check's outcome, shared by the verify_backup job and the asset's own check."""
    return {"passed": result.ok, "description": "; ".join(result.problems) or "restored and matched the manifest",
            "metadata": {"key": result.key, "tables": len(result.tables), "duration_s": result.duration_s,
                         "scratch_db": result.scratch_db, "table_results": dg.MetadataValue.json(result.tables)}}


class VerifyBackupConfig(dg.Config):
    backup: str = Field(default="latest", description="`latest` (newest complete backup) or a backup name/key from `rusing-ops db backups`.")


@dg.op(description="Restore the backup into a scratch database, compare rows and content checksums with the manifest, drop the scratch database.")
def verify_backup_op(context: dg.OpExecutionContext, config: VerifyBackupConfig, database: DatabaseResource,
                     backup_store: BackupStoreResource) -> dict:
    try:
        result = verify(database.parsed, backup_store.get_store(), config.backup, log=context.log.info)
    except OpsError as exc:
        raise failure(exc) from exc
    name = keys.parse_key(result.key).name
    if not context.instance.has_dynamic_partition(PARTITIONS.name, name):  # e.g. a pre-migration backup
        context.instance.add_dynamic_partitions(PARTITIONS.name, [name])
    fields = _check_fields(result)
    context.log_event(dg.AssetCheckEvaluation(asset_key=dg.AssetKey("database_backup"), check_name=VERIFIED.name,
                                              partition=name, **fields))
    if not result.ok:
        raise dg.Failure(description=f"Backup {result.key} failed verification: {fields['description']}.",
                         metadata={"key": result.key})
    return result.to_dict()


@dg.job(name="verify_backup", executor_def=dg.in_process_executor,
        description="Restores one backup into a scratch database, compares every table's rows and content checksum with "
        "the manifest, drops the scratch database and records the backup_verified check on that partition.")
def verify_backup():
    verify_backup_op()


@dg.asset_check(asset="database_backup", name="backup_fresh",
                description=f"The newest complete backup is younger than {FRESH_HOURS} hours.")
def backup_fresh(backup_store: BackupStoreResource) -> dg.AssetCheckResult:
    fresh = catalog.freshness(backup_store.get_store(), FRESH_HOURS)
    metadata = {"newest": fresh.newest.name, "age_hours": fresh.age_hours, "verified": fresh.newest.verified} \
        if fresh.newest else {}
    return dg.AssetCheckResult(passed=fresh.ok, description=fresh.description, metadata=metadata)


check_backup_freshness = dg.define_asset_job(
    "check_backup_freshness", selection=dg.AssetSelection.checks(backup_fresh), executor_def=dg.in_process_executor,
    description="Runs the backup_fresh check (hourly by backup_freshness_schedule).")

backup_freshness_schedule = dg.ScheduleDefinition(
    name="backup_freshness_schedule", job=check_backup_freshness, cron_schedule="15 * * * *",
    execution_timezone="America/Toronto", default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly: is the newest complete backup younger than 26 hours?")


class RestoreDatabaseConfig(dg.Config):
    backup: str = Field(default="latest", description="`latest` (newest complete backup), a backup name/key from `rusing-ops db backups`, or a local .sql/.sql.gz/.sql.zst path.")
    database: Optional[str] = Field(default=None, description="Restore into this database instead of the application database (drills, verification).")
    confirm: str = Field(description="Must equal the target database name; anything else refuses before touching anything.")
    pre_restore_backup: bool = Field(default=True, description="Back up the live target first (reason pre-restore).")


@dg.op(pool=DB_WRITE_POOL, description="Verify the backup, load it into a staging database, check row counts, back up the target, swap atomically.")
def restore_database_op(context: dg.OpExecutionContext, config: RestoreDatabaseConfig, database: DatabaseResource,
                        backup_store: BackupStoreResource) -> dict:
    try:
        require_confirm(config.confirm, config.database or database.parsed.database, "nothing was restored")
        store = backup_store.get_store()
        result = restore_backup(database.parsed, store, config.backup, database=config.database,
                                pre_restore_backup=config.pre_restore_backup, lock=database.write_lock,
                                run_id=context.run.run_id, log=context.log.info)
    except OpsError as exc:
        raise failure(exc) from exc
    if result.pre_restore_backup:
        record_backup(context, store, result.pre_restore_backup)
    summary = {"source": result.source, "target": result.target, "pre_restore_db": result.pre_restore_db or "",
               "pre_restore_backup": result.pre_restore_backup or "", "rows": sum(result.tables.values()),
               "verified_against_manifest": result.verified_against_manifest, "duration_s": result.duration_s}
    context.add_output_metadata({**summary, "table_rows": dg.MetadataValue.json(result.tables)})
    return {**summary, "tables": result.tables}


@dg.job(name="restore_database", tags=DB_WRITE_TAGS, executor_def=dg.in_process_executor,
        description="Runbook §3 `pnpm db:restore`: restores the latest (or a named) backup through a staging database and "
        "one atomic RENAME; the replaced tables stay in <db>__pre_restore_<ts>. Started by hand or `rusing-ops db restore`.")
def restore_database():
    restore_database_op()


class PruneBackupsConfig(dg.Config):
    keep_daily: int = Field(default=7, description="Keep the newest backup of each of this many most recent days.")
    keep_weekly: int = Field(default=4, description="Keep the newest backup of each of this many most recent ISO weeks.")
    keep_monthly: int = Field(default=6, description="Keep the newest backup of each of this many most recent months.")
    dry_run: bool = Field(default=True, description="Only report what would be deleted (default). The newest verified backup is never deleted.")


@dg.op(description="Apply the retention policy to the backup store and remove deleted backups' partitions.")
def prune_backups_op(context: dg.OpExecutionContext, config: PruneBackupsConfig, backup_store: BackupStoreResource) -> dict:
    policy = RetentionPolicy(config.keep_daily, config.keep_weekly, config.keep_monthly)
    plan = prune(backup_store.get_store(), policy, dry_run=config.dry_run)
    gone = [keys.parse_key(k).name for k in plan.deleted]
    existing = set(context.instance.get_dynamic_partitions(PARTITIONS.name))
    for name in gone:
        if name in existing:
            context.instance.delete_dynamic_partition(PARTITIONS.name, name)
    for entry in plan.delete:
        context.log.info(f"{'would delete' if config.dry_run else 'deleted'} {entry.key} ({entry.size:,} bytes)")
    summary = {"dry_run": config.dry_run, "kept": len(plan.keep), "to_delete": len(plan.delete),
               "deleted": len(plan.deleted), "freed_bytes": plan.freed_bytes}
    context.add_output_metadata({**summary, "keep": dg.MetadataValue.json(plan.keep),
                                 "delete": dg.MetadataValue.json([e.key for e in plan.delete])})
    return {**summary, "keep": plan.keep, "delete": [e.key for e in plan.delete]}


@dg.job(name="prune_backups", executor_def=dg.in_process_executor,
        description="Deletes backups outside the retention policy (daily/weekly/monthly), never the newest verified one. "
        "Dry run by default: set dry_run false to delete.")
def prune_backups():
    prune_backups_op()


defs = dg.Definitions(
    assets=[database_backup], asset_checks=[backup_fresh],
    jobs=[backup_database, verify_backup, check_backup_freshness, restore_database, prune_backups],
    schedules=[nightly_backup, backup_freshness_schedule],
)
