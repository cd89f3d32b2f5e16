"""Dagster face of the backups capability.

Assets: `database_backup` (every complete backup in the store, one dynamic partition each; not materializable, so
nothing an operator clicks can overwrite a backup or turn a good partition red) and `newest_backup` (its Materialize
button takes a backup now). Jobs `backup_database`, `restore_database` and `verify_backup` (both pick a partition),
`prune_backups`, `check_backup_freshness`; schedules `nightly_backup`, `backup_freshness_schedule`; sensor
`backup_store_partitions` (store -> partitions); checks `backup_verified` (per partition) and `backup_fresh`.

Every procedure that takes a backup goes through :func:`take_backup` (or :func:`record_stored` for one the library
took), so every backup is the same kind of partition with the same metadata.
"""

import datetime as dt
from typing import Literal

import dagster as dg
from pydantic import Field

from ..core.errors import ConfigError, DatabaseUnavailable, OpsError, StoreError, require_confirm
from ..dagster_support import configured_target, failure, max_runtime, refusal, table_of, target_tags
from ..resources import DB_WRITE_POOL, DB_WRITE_TAGS, BackupStoreResource, DatabaseResource
from . import catalog, keys, record
from .restore import repair as repair_restore
from .restore import restore_backup
from .retention import RetentionPolicy
from .retention import prune_backups as prune
from .verify import verify_backup as verify

PARTITIONS = dg.DynamicPartitionsDefinition(name="database_backup")
ASSET = dg.AssetKey("database_backup")
FRESH_HOURS = 26


def _drizzle_dir(database: DatabaseResource):
    """The Drizzle folder (to name a backup's migration head), or None where there is none."""
    path = database.drizzle_folder()
    return path if path.is_dir() else None


database_backup = dg.AssetSpec(
    "database_backup", partitions_def=PARTITIONS, group_name="backups", kinds={"mysql", "s3"},
    description="Every complete backup in the backup store (RUSING_BACKUP_URL), one partition each, named "
    "backup-<database>-<UTC time the snapshot started>-<reason>. Recorded by whatever took it (backup_database, migrate_database, "
    "rollback_migration, restore_database, recover_from_data_loss) and reconciled with the store by the sensor "
    "backup_store_partitions (backups from elsewhere appear, pruned ones disappear). To take a backup, click "
    "Materialize on **newest_backup** or launch **backup_database**; to restore one, launch **restore_database** "
    "and pick its partition.\n\n**\"Add a partition\" does not make a backup** (Dagster offers it for every dynamic "
    "partition set): a name added by hand has no metadata, restore_database and verify_backup refuse it in words, "
    "and backup_store_partitions removes it on its next tick.")

VERIFY_LAUNCHPAD = "/locations/rusing_ops/jobs/verify_backup/playground"  # workspace.yaml's location name

VERIFIED = dg.AssetCheckSpec(
    "backup_verified", asset=ASSET, partitions_def=PARTITIONS,
    description="The partition's backup restored into a scratch database with the manifest's row counts and content "
    "checksums (the store's verification record). WARN = not verified yet. **To verify a backup: "
    f"[open verify_backup]({VERIFY_LAUNCHPAD}), pick the backup in the Partition box, Launch Run** (Dagster "
    "cannot execute a check of a partitioned asset from this tab). An outage of the store or the database fails "
    "that run with \"could not run\" and records no verdict.")


def backup_metadata(rec: record.BackupRecord) -> dict:
    """What an operator checks on a backup partition, the same for every backup (DESIGN.md §3 / STYLE.md §4)."""
    plain = rec.metadata()
    tables, rows = plain.pop("table_rows"), plain.pop("rows")
    return {**plain, "taken_at": dg.MetadataValue.timestamp(rec.taken_at), "dagster/row_count": rows,
            "tables": table_of([{"table": name, "rows": n} for name, n in tables.items()])}


def verified_evaluation(rec: record.BackupRecord) -> dg.AssetCheckEvaluation:
    """backup_verified for ``rec``'s partition, from the store's verification record (the one truth)."""
    return dg.AssetCheckEvaluation(
        asset_key=ASSET, check_name=VERIFIED.name, partition=rec.name, passed=rec.verified,
        severity=dg.AssetCheckSeverity.WARN if rec.verification is None else dg.AssetCheckSeverity.ERROR,
        description=rec.verification_text, metadata={"key": rec.key})


def _app_database(database: DatabaseResource) -> str | None:
    try:
        return database.parsed.database
    except OpsError:  # DATABASE_URL unset or malformed: every backup in the store counts
        return None


def fresh_fields(store, database: DatabaseResource) -> dict:
    """backup_fresh's outcome: is what `latest` restores into the application database young enough?"""
    fresh = catalog.freshness(store, FRESH_HOURS, database=_app_database(database))
    newest = fresh.newest
    metadata = {"newest": newest.name, "age_hours": fresh.age_hours, "newest_verified": newest.verified} if newest else {}
    return {"passed": fresh.ok, "description": fresh.description, "metadata": metadata}


def backup_events(store, records: list[record.BackupRecord], database: DatabaseResource, instance) -> list:
    """Make ``records`` partitions of database_backup and return their events: the materialization with the metadata
    every backup carries, backup_verified for it, and backup_fresh re-evaluated (a new backup changes both)."""
    new = [r.name for r in records if not instance.has_dynamic_partition(PARTITIONS.name, r.name)]
    if new:
        instance.add_dynamic_partitions(PARTITIONS.name, new)
    events = []
    for rec in records:
        events.append(dg.AssetMaterialization(asset_key=ASSET, partition=rec.name, metadata=backup_metadata(rec),
                                              description=f"{rec.manifest.reason or 'unnamed'} backup of "
                                              f"`{rec.manifest.database}`"))
        events.append(verified_evaluation(rec))
    return [*events, dg.AssetCheckEvaluation(asset_key=ASSET, check_name="backup_fresh", **fresh_fields(store, database))]


def record_backup(context, store, rec: record.BackupRecord, database: DatabaseResource) -> None:
    """Record ``rec`` from inside a run (op or asset ``context``): the events go to that run."""
    for event in backup_events(store, [rec], database, context.instance):
        context.log_event(event)


def take_backup(context, database: DatabaseResource, backup_store: BackupStoreResource, reason: str, *,
                compression: str = "zstd", level: int | None = None, drizzle_dir=None) -> record.BackupRecord:
    """The one way a job takes a backup: name and time from the clock, recorded as a partition. Raises OpsError."""
    store = backup_store.get_store()
    rec = record.take(database.parsed, store, reason=reason, compression=compression, level=level,
                      run_id=context.run.run_id,
                      drizzle_dir=drizzle_dir or _drizzle_dir(database), log=context.log.info)
    record_backup(context, store, rec, database)
    return rec


def record_stored(context, store, key: str, database: DatabaseResource) -> None:
    """Record a backup the library took inside a procedure (the pre-restore backup of a restore or recovery)."""
    record_backup(context, store, record.describe(store, key, _drizzle_dir(database)), database)


def backup_callable(context, database: DatabaseResource, backup_store: BackupStoreResource, drizzle_dir=None):
    """``backup(reason) -> Manifest`` for library procedures (pre-migration, pre-rollback), through take_backup."""
    return lambda reason: take_backup(context, database, backup_store, reason, drizzle_dir=drizzle_dir).manifest


class BackupDatabaseConfig(dg.Config):
    reason: str = Field(default="manual", description="Why (manual, nightly, before-upgrade, ...): the end of the "
                        "backup's name. The name's time is the clock's when the snapshot starts.")
    compression: Literal["zstd", "gzip"] = Field(default="zstd", description="zstd (fast, default) or gzip (for tools that only read .gz).")
    level: int | None = Field(default=None, ge=1, le=19, description=(
        "Compression level; empty = zstd 1 / gzip 6. zstd 1 takes half the CPU of 3; on prose and JSON 3 is "
        "7-15% smaller (zstd 1-19, gzip 1-9)."))


@dg.asset(name="newest_backup", group_name="backups", kinds={"mysql", "s3"},
          description="The newest backup taken here. **Materialize = back up the database now** (one click; name and "
          "time from the clock). Every backup, however taken, is also a partition of database_backup.")
def newest_backup(context: dg.AssetExecutionContext, config: BackupDatabaseConfig, database: DatabaseResource,
                  backup_store: BackupStoreResource) -> dg.MaterializeResult:
    try:
        rec = take_backup(context, database, backup_store, config.reason, compression=config.compression,
                          level=config.level)
    except OpsError as exc:
        raise failure(exc) from None
    return dg.MaterializeResult(metadata={"partition": rec.name, **backup_metadata(rec)})


backup_database = dg.define_asset_job(
    "backup_database", selection=[newest_backup], tags=max_runtime(4),
    description="Runbook §3 `pnpm db:backup`: backs up the database now and records the backup as a partition of "
    "database_backup. Launch it as is (reason manual), or from nightly_backup or `rusing-ops db backup`.")


@dg.schedule(job=backup_database, cron_schedule="0 3 * * *", execution_timezone="America/Toronto",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Nightly backup at 03:00 Toronto time (reason nightly). A missed night shows in the backup_fresh check.")
def nightly_backup(context: dg.ScheduleEvaluationContext):
    when = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    return dg.RunRequest(run_key=f"nightly-{when.date().isoformat()}",
                         run_config={"ops": {"newest_backup": {"config": {"reason": "nightly"}}}})


@dg.sensor(name="backup_store_partitions", minimum_interval_seconds=120, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Keeps database_backup's partitions equal to the complete backups in the store: adds backups "
           "taken elsewhere (CLI on another machine, an older version) with their metadata and removes deleted ones.")
def backup_store_partitions(context: dg.SensorEvaluationContext, backup_store: BackupStoreResource,
                            database: DatabaseResource):
    store = backup_store.get_store()
    diff = record.reconcile(store, context.instance.get_dynamic_partitions(PARTITIONS.name), _drizzle_dir(database))
    if not diff.changed:
        return dg.SkipReason(f"all {len(diff.complete)} complete backups in {store.url} are listed")
    for name in diff.remove:
        context.instance.delete_dynamic_partition(PARTITIONS.name, name)
    for event in backup_events(store, diff.add, database, context.instance):
        context.instance.report_runless_asset_event(event)  # at once: the partitions exist before their events
    context.log.info(f"added {len(diff.add)} partition(s), removed {len(diff.remove)}: "
                     + ", ".join([r.name for r in diff.add] + [f"-{n}" for n in diff.remove]))
    return dg.SkipReason(f"reconciled: +{len(diff.add)} -{len(diff.remove)}; {len(diff.complete)} complete backups")


def chosen_backup(context: dg.OpExecutionContext, configured: str, store, spared: str) -> str:
    """The partition picked in the Launchpad, else the config's backup (a conflict between them is refused).

    A picked partition that is not a complete backup in ``store`` (one typed into Dagster's "Add a partition", or
    one whose backup was pruned meanwhile) is refused as an operator's error, saying ``spared`` (what was not done).
    """
    if not context.has_partition_key:
        return configured
    picked = context.partition_key
    if configured not in ("", "latest", picked):
        raise ConfigError(f"The run picked backup {picked} and its config names {configured!r}.",
                          next_step="pick the partition only, or leave backup at `latest`.")
    if picked not in record.complete_keys(store):
        raise refusal(f"Partition {picked} of database_backup is not a backup in {store.url}: it was added by hand "
                      "(\"Add a partition\" takes no backup) or its backup was deleted. "
                      f"{spared[:1].upper() + spared[1:]}; nothing was changed. Next: pick a partition that shows "
                      "a backup's metadata, or take a backup (newest_backup → Materialize). The sensor "
                      "backup_store_partitions removes this partition on its next tick.")
    return picked


class VerificationNotRun(OpsError):
    """The store or the database did not answer: the backup was not judged (not a failed verification)."""


def _verify(context, database: DatabaseResource, backup_store: BackupStoreResource, configured: str):
    store = backup_store.get_store()
    ref = context.partition_key if context.has_partition_key else configured
    try:
        result = verify(database.parsed, store, chosen_backup(context, configured, store, "nothing was verified"),
                        log=context.log.info)
    except (DatabaseUnavailable, StoreError) as exc:  # an outage says nothing about the backup
        raise VerificationNotRun(f"The verification of {ref} could not run: {exc.message} The backup was not judged: "
                                 "its verification record is unchanged.", changed=False,
                                 next_step=exc.next_step or "verify it again once the store and the database "
                                 "answer.") from None
    rec = record.describe(store, result.key, _drizzle_dir(database))
    if not context.instance.has_dynamic_partition(PARTITIONS.name, rec.name):  # e.g. a backup from an older version
        record_backup(context, store, rec, database)
    tables = table_of([{"table": n, **t} for n, t in sorted(result.tables.items())])
    return result, rec, {"key": result.key, "tables": tables, "duration_s": result.duration_s,
                         "scratch_db": result.scratch_db, "notes": "; ".join(result.notes) or "(none)"}


@dg.multi_asset_check(specs=[VERIFIED], description="Recorded per partition by the verify_backup job: Dagster 1.13 "
                      "cannot execute a check of a partitioned asset on its own (the Checks tab disables Execute, and "
                      "a job of checks alone has no partitions).")
def backup_verified(context: dg.AssetCheckExecutionContext):
    raise refusal("backup_verified is recorded per backup by the verify_backup job. Nothing was changed. "
                  "Next: Jobs → verify_backup → pick the backup in the Partition box → Launch "
                  "(`rusing-ops db verify --backup <name>`).")


class VerifyBackupConfig(dg.Config):
    backup: str = Field(default="latest", description="Used when no partition is picked: `latest` (newest complete "
                        "backup) or a backup name/key.")


@dg.op(description="Restore the backup into a scratch database, compare rows and server checksums with the manifest, drop the scratch database.")
def verify_backup_op(context: dg.OpExecutionContext, config: VerifyBackupConfig, database: DatabaseResource,
                     backup_store: BackupStoreResource) -> dict:
    try:
        result, rec, metadata = _verify(context, database, backup_store, config.backup)
    except OpsError as exc:
        raise failure(exc) from None
    context.log_event(verified_evaluation(rec))
    context.log_event(dg.AssetCheckEvaluation(asset_key=ASSET, check_name="backup_fresh",
                                              **fresh_fields(backup_store.get_store(), database)))
    if not result.ok:
        raise dg.Failure(description=f"Backup {result.key} failed verification: {rec.verification_text}. Nothing "
                         "was changed. Next: restore another backup, and find out why this one is damaged.",
                         metadata={"key": result.key})
    context.add_output_metadata(metadata)
    return result.to_dict()


@dg.job(name="verify_backup", partitions_def=PARTITIONS, tags=max_runtime(6),
        description="Pick a backup (partition) to prove it restores: into a scratch database, every table's rows and "
        "server checksum compared with the manifest, scratch database dropped, backup_verified recorded on the "
        "partition. Without a partition: the config's backup (latest).")
def verify_backup():
    verify_backup_op()


@dg.asset_check(asset=ASSET, name="backup_fresh",
                description=f"The newest complete backup in the store is younger than {FRESH_HOURS} hours (by the "
                "time in its name). Re-evaluated whenever a backup is recorded, and hourly.")
def backup_fresh(backup_store: BackupStoreResource, database: DatabaseResource) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(**fresh_fields(backup_store.get_store(), database))


check_backup_freshness = dg.define_asset_job(
    "check_backup_freshness", selection=dg.AssetSelection.checks(backup_fresh), tags=max_runtime(0.25),
    description="Runs the backup_fresh check (hourly by backup_freshness_schedule).")

backup_freshness_schedule = dg.ScheduleDefinition(
    name="backup_freshness_schedule", job=check_backup_freshness, cron_schedule="15 * * * *",
    execution_timezone="America/Toronto", default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly: is the newest complete backup younger than 26 hours?")

TARGET = configured_target()  # read when the code location loads, so the Launchpad names it before `confirm`


class RestoreDatabaseConfig(dg.Config):
    backup: str = Field(default="latest", description="Used when no partition is picked: `latest` (newest complete "
                        "backup), a backup name/key, or a local dump file (*.sql, *.sql.gz, *.sql.zst; never under /proc, /sys, "
                        "/dev, /run; every statement checked before any runs: README 'Restore: what a dump file may "
                        "contain').")
    database: str | None = Field(default=None, description="Restore into this database instead of the application "
                                    f"database {TARGET} (drills, verification).")
    confirm: str = Field(description=f"Type the target database's name: the application database {TARGET}, or the "
                         "`database` field when set. Anything else refuses before anything is touched.")
    pre_restore_backup: bool = Field(default=True, description="Back up the live target first (reason pre-restore).")
    from_database: str | None = Field(default=None, description="Restore a backup taken from this OTHER database "
                                      "(e.g. the application database's backup into a drill `database`). Without it "
                                      "a backup of another database is refused, and `latest` is the target's own.")
    repair: bool = Field(default=False, description="Only finish or undo the swap of a restore that was killed half-way "
                         "(its journal says which); restores nothing else.")


@dg.op(pool=DB_WRITE_POOL, description=f"Restore into {TARGET}: verify the backup, load it into a staging database, "
       "check row counts, back up the target, swap atomically.")
def restore_database_op(context: dg.OpExecutionContext, config: RestoreDatabaseConfig, database: DatabaseResource,
                        backup_store: BackupStoreResource) -> dict:
    try:
        require_confirm(config.confirm, config.database or database.parsed.database, "nothing was restored")
        if config.repair:
            lines = repair_restore(database.parsed, config.database or database.parsed.database,
                                   lock=database.write_lock, log=context.log.info)
            context.add_output_metadata({"repaired": "\n".join(lines)})
            return {"repaired": lines}
        store = backup_store.get_store()
        result = restore_backup(database.parsed, store, chosen_backup(context, config.backup, store, "nothing was restored"),
                                database=config.database,
                                pre_restore_backup=config.pre_restore_backup, lock=database.write_lock,
                                run_id=context.run.run_id, log=context.log.info, from_database=config.from_database)
    except OpsError as exc:
        raise failure(exc) from None
    if result.pre_restore_backup:
        record_stored(context, store, result.pre_restore_backup, database)
    summary = {"source": result.source, "target": result.target, "pre_restore_db": result.pre_restore_db or "",
               "pre_restore_backup": result.pre_restore_backup or "", "rows": sum(result.tables.values()),
               "verified_against_manifest": result.verified_against_manifest, "duration_s": result.duration_s}
    context.add_output_metadata({**summary, "dagster/row_count": summary["rows"],
                                 "tables": table_of([{"table": n, "rows": r} for n, r in sorted(result.tables.items())])})
    return {**summary, "tables": result.tables}


@dg.job(name="restore_database", partitions_def=PARTITIONS, tags={**DB_WRITE_TAGS, **max_runtime(6), **target_tags()},
        description=f"Runbook §3 `pnpm db:restore` into {TARGET}: pick the backup (partition of database_backup), type "
        "the database's name in confirm. Restores through a staging database and one atomic RENAME; the replaced "
        "tables stay in <db>__pre_restore_<ts>. Also `rusing-ops db restore`.")
def restore_database():
    restore_database_op()


class PruneBackupsConfig(dg.Config):
    keep_daily: int = Field(default=RetentionPolicy.daily, description="Keep the newest backup of each of this many most recent days.")
    keep_weekly: int = Field(default=RetentionPolicy.weekly, description="Keep the newest backup of each of this many most recent ISO weeks.")
    keep_monthly: int = Field(default=RetentionPolicy.monthly, description="Keep the newest backup of each of this many most recent months.")
    dry_run: bool = Field(default=True, description="Only report what would be deleted (default). The newest complete, the newest verified and pinned backups are never deleted.")
    all_databases: bool = Field(default=False, description="Prune the backups of every database in the store (each "
                                "kept on its own), not only the application database's.")


@dg.op(description="Apply the retention policy to the backup store and remove deleted backups' partitions.")
def prune_backups_op(context: dg.OpExecutionContext, config: PruneBackupsConfig, backup_store: BackupStoreResource,
                     database: DatabaseResource) -> dict:
    policy = RetentionPolicy(config.keep_daily, config.keep_weekly, config.keep_monthly)
    try:
        plan = prune(backup_store.get_store(), policy, dry_run=config.dry_run,
                     database=None if config.all_databases else _app_database(database))
    except OpsError as exc:
        raise failure(exc) from None
    gone = [keys.parse_key(k).name for k in plan.deleted]
    existing = set(context.instance.get_dynamic_partitions(PARTITIONS.name))
    for name in gone:
        if name in existing:
            context.instance.delete_dynamic_partition(PARTITIONS.name, name)
    lines = plan.lines(config.dry_run)
    for line in lines:
        context.log.info(line)
    summary = {"dry_run": config.dry_run, "kept": len(plan.keep), "to_delete": len(plan.delete),
               "deleted": len(plan.deleted), "freed_bytes": plan.freed_bytes, "pinned": len(plan.pinned),
               "swept": len(plan.swept), "to_sweep": len(plan.partial) + len(plan.orphans),
               "locked": len(plan.locked)}
    context.add_output_metadata({**summary, "keep": table_of([{"key": k, "why": ", ".join(w)} for k, w in plan.keep.items()]),
                                 "delete": table_of([{"key": e.key, "bytes": e.size} for e in plan.delete])})
    return {**summary, "keep": plan.keep, "delete": [e.key for e in plan.delete], "lines": lines}


@dg.job(name="prune_backups", tags=max_runtime(1),
        description="Deletes backups outside the retention policy (daily/weekly/monthly), never the newest verified one, "
        "and their partitions. Dry run by default: set dry_run false to delete.")
def prune_backups():
    prune_backups_op()


defs = dg.Definitions(
    assets=[database_backup, newest_backup], asset_checks=[backup_verified, backup_fresh],
    jobs=[backup_database, verify_backup, check_backup_freshness, restore_database, prune_backups],
    schedules=[nightly_backup, backup_freshness_schedule], sensors=[backup_store_partitions],
)
