"""Dagster face of the migrations capability: job `migrate_database`, job `validate_schema`, asset
`app_database_schema` with its checks, and sensor `migrate_database_on_new_journal_entries`."""

from typing import Optional

import dagster as dg
from pydantic import Field

from ..backups.defs import backup_callable
from ..core.errors import OpsError
from ..dagster_support import failure, metadata_of
from ..resources import DB_WRITE_POOL, DB_WRITE_TAGS, BackupStoreResource, DatabaseResource
from ..settings import env, resolve_path
from .applier import apply_migrations
from .drift import live_schema
from .generate import generate_migrations
from .planner import read_applied
from .validate import validate_schema
from .watch import journal_status


def drizzle_folder(configured: Optional[str]):
    return resolve_path(configured or env("DRIZZLE_DIR"))


def restore_callable(database: DatabaseResource, backup_store: BackupStoreResource, run_id: str, log):
    """``restore(key)``: the backups capability's restore, swapping under the same database write lock."""
    from ..backups.restore import restore_backup

    def restore(key: str):
        return restore_backup(database.parsed, backup_store.get_store(), key, pre_restore_backup=False,
                              lock=database.write_lock, run_id=run_id, log=log)

    return restore


class MigrateDatabaseConfig(dg.Config):
    dry_run: bool = Field(default=False, description="Print the plan and every SQL statement; change nothing (no table, no lock, no backup).")
    generate_only: bool = Field(default=False, description="Only run DRIZZLE_GENERATE_COMMAND in the app repository and report the new files and their lint.")
    no_backup: bool = Field(default=False, description="Skip the pre-migration backup (refused for a destructive plan unless force).")
    force: bool = Field(default=False, description="Run a destructive plan without backup, and accept applied files edited since they were applied.")
    resume: bool = Field(default=False, description="Continue a migration that an earlier run left half applied, at its failing statement.")
    accept_skipped: bool = Field(default=False, description="Proceed although the journal holds entries drizzle-orm skips forever (they stay unapplied, as with drizzle).")
    auto_rollback: bool = Field(default=False, description="Restore the pre-migration backup when a statement fails. Off by default: writes the app made since the backup are lost.")
    drizzle_dir: Optional[str] = Field(default=None, description="The Drizzle folder; default DRIZZLE_DIR.")


@dg.op(name="apply_migrations", pool=DB_WRITE_POOL,
       description="Validate the Drizzle folder, plan like drizzle-orm, lint, lock, back up, apply statement by statement.")
def apply_migrations_op(context: dg.OpExecutionContext, config: MigrateDatabaseConfig, database: DatabaseResource,
                        backup_store: BackupStoreResource) -> dict:
    folder = drizzle_folder(config.drizzle_dir)
    try:
        if config.generate_only:
            generated = generate_migrations(folder, env("DRIZZLE_GENERATE_COMMAND"))
            for line in generated.lines():
                context.log.info(line)
            context.add_output_metadata(metadata_of(generated.as_dict()))
            return generated.as_dict()
        result = apply_migrations(
            database.engine, database.parsed, folder, dry_run=config.dry_run, no_backup=config.no_backup,
            force=config.force, resume=config.resume, accept_skipped=config.accept_skipped,
            backup=backup_callable(context, database, backup_store, folder),
            restore=restore_callable(database, backup_store, context.run_id, context.log.info),
            auto_rollback=config.auto_rollback, run_id=context.run_id, lock_timeout_s=database.lock_timeout_seconds,
            log=context.log.info)
    except OpsError as exc:
        raise failure(exc) from exc
    summary = result.as_dict()
    context.add_output_metadata({**metadata_of(summary), "plan": dg.MetadataValue.md(f"```sql\n{result.plan_text()}\n```")})
    return {**summary, "plan": result.plan_text(with_sql=config.dry_run)}


@dg.job(tags=DB_WRITE_TAGS, executor_def=dg.in_process_executor,
        description="Runbook §1 `pnpm db:migrate`: applies pending Drizzle migrations exactly as drizzle-orm records "
        "them, after folder validation, destructive-change lint, the database write lock and a pre-migration backup. "
        "Started by hand or the CLI; the sensor migrate_database_on_new_journal_entries only requests dry runs.")
def migrate_database():
    apply_migrations_op()


class ValidateSchemaConfig(dg.Config):
    drizzle_dir: Optional[str] = Field(default=None, description="The Drizzle folder; default DRIZZLE_DIR.")


@dg.op(description="Folder checks, applied-vs-journal and drift between the snapshot and the live database (read only).")
def validate_schema_op(context: dg.OpExecutionContext, config: ValidateSchemaConfig, database: DatabaseResource) -> dict:
    try:
        report = validate_schema(database.engine, database.parsed, drizzle_folder(config.drizzle_dir))
    except OpsError as exc:
        raise failure(exc) from exc
    for line in report.lines():
        (context.log.info if report.ok else context.log.warning)(line)
    metadata = {"ok": report.ok, "pending": len(report.pending), "drift": len(report.drift),
                "folder_errors": len(report.folder_errors), "report": dg.MetadataValue.json(report.as_dict())}
    if not report.ok:
        raise dg.Failure(description="Schema validation failed: " + " | ".join(report.lines()[1:-1]), metadata=metadata)
    context.add_output_metadata(metadata)
    return report.as_dict()


@dg.job(name="validate_schema", executor_def=dg.in_process_executor,
        description="Runbook §1 `pnpm db:validate`: journal vs SQL files vs snapshots, applied migrations vs journal, "
        "and schema drift from the latest snapshot. Read only; fails (and so alerts) on any finding.")
def validate_schema_job():
    validate_schema_op()


@dg.asset(group_name="migrations", kinds={"mysql"},
          description="The live schema of the application database and the Drizzle migration it is at.")
def app_database_schema(context: dg.AssetExecutionContext, database: DatabaseResource) -> dg.MaterializeResult:
    with database.connect() as conn:
        live = live_schema(conn)
        _, rows = read_applied(conn)
    last = max((r for r in rows if r.created_at is not None), key=lambda r: r.created_at, default=None)
    return dg.MaterializeResult(metadata={
        "tables": len(live["tables"]), "views": len(live["views"]),
        "columns": sum(len(t["columns"]) for t in live["tables"].values()),
        "table_names": dg.MetadataValue.json(sorted(live["tables"])),
        "migrations_recorded": len(rows),
        "last_created_at": last.created_at if last else 0,
        "last_hash": last.hash if last else "",
    })


SCHEMA_CHECKS = [
    dg.AssetCheckSpec("drizzle_folder_valid", asset=app_database_schema.key,
                      description="Journal, SQL files and snapshots agree (no missing/extra file, duplicate, BOM, empty statement, broken chain)."),
    dg.AssetCheckSpec("all_migrations_applied", asset=app_database_schema.key,
                      description="Every journal entry is recorded in __drizzle_migrations; no skipped entry, edited file or unknown row."),
    dg.AssetCheckSpec("no_schema_drift", asset=app_database_schema.key,
                      description="The live schema matches the snapshot of the last applied migration (MariaDB spellings normalised)."),
]


@dg.multi_asset_check(specs=SCHEMA_CHECKS, description="Runbook §1 validation as asset checks on app_database_schema.")
def app_database_schema_checks(context: dg.AssetCheckExecutionContext, database: DatabaseResource):
    report = validate_schema(database.engine, database.parsed, drizzle_folder(None))
    results = [
        (report.folder_ok, report.folder_errors, {"errors": len(report.folder_errors)}),
        (report.migrations_ok, [f"pending {t}" for t in report.pending] + report.anomalies,
         {"pending": len(report.pending), "anomalies": len(report.anomalies)}),
        (report.drift_ok, [str(d) for d in report.drift] + ([report.drift_skipped] if report.drift_skipped else []),
         {"findings": len(report.drift), "snapshot": report.snapshot or ""}),
    ]
    for spec, (passed, lines, numbers) in zip(SCHEMA_CHECKS, results):
        yield dg.AssetCheckResult(asset_key=spec.asset_key, check_name=spec.name, passed=passed,
                                  severity=dg.AssetCheckSeverity.ERROR,
                                  description="; ".join(lines[:5]) or "ok",
                                  metadata={**numbers, "findings": dg.MetadataValue.json(lines)})


@dg.sensor(name="migrate_database_on_new_journal_entries", job=migrate_database, minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Notices journal entries not yet applied to the database and reports them once per new head, "
           "requesting a dry-run plan of migrate_database. It never applies anything.")
def migrate_database_on_new_journal_entries(context: dg.SensorEvaluationContext, database: DatabaseResource):
    status = journal_status(database.engine, database.parsed, drizzle_folder(None))
    if not status.pending:
        return dg.SkipReason(status.summary())
    if context.cursor == status.marker:
        return dg.SkipReason(f"{status.summary()}: already reported for head {status.pending[-1]}.")
    context.update_cursor(status.marker)
    context.log.info(f"journal entries not applied to {database.parsed.masked()}: {status.summary()}")
    return dg.RunRequest(run_key=f"dry-run:{status.marker}",
                         run_config={"ops": {"apply_migrations": {"config": {"dry_run": True}}}},
                         tags={"rusing/trigger": "new-journal-entries", "rusing/pending-head": status.pending[-1]})


defs = dg.Definitions(
    assets=[app_database_schema],
    asset_checks=[app_database_schema_checks],
    jobs=[migrate_database, validate_schema_job],
    sensors=[migrate_database_on_new_journal_entries],
)
