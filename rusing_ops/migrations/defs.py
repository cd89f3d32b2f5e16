"""Dagster face of the migrations capability: jobs `migrate_database` (the only writer, in the database-write
pool), `plan_migrations` (dry run) and `generate_migrations` (files only), asset `app_database_schema` with its
checks evaluated by job `validate_schema` (scheduled), and sensor `migrate_database_on_new_journal_entries`."""

import dagster as dg
from pydantic import Field

from ..backups.defs import backup_callable
from ..core.errors import OpsError
from ..dagster_support import failure, max_runtime, metadata_of
from ..resources import (
    DB_WRITE_POOL,
    DB_WRITE_TAGS,
    BackupStoreResource,
    DatabaseResource,
)
from .applier import apply_migrations
from .drift import live_schema
from .generate import generate_migrations
from .planner import read_applied
from .validate import validate_schema
from .watch import journal_status


def restore_callable(database: DatabaseResource, backup_store: BackupStoreResource, run_id: str, log):
    """``restore(key)``: the backups capability's restore, swapping under the same database write lock."""
    from ..backups.restore import restore_backup

    def restore(key: str):
        return restore_backup(database.parsed, backup_store.get_store(), key, pre_restore_backup=False,
                              lock=database.write_lock, run_id=run_id, log=log)

    return restore


DRY_RUN_TAG = "rusing/dry-run"


class MigrateDatabaseConfig(dg.Config):
    no_backup: bool = Field(default=False, description="Skip the pre-migration backup (refused for a destructive plan unless force).")
    force: bool = Field(default=False, description="Run a destructive plan without backup, and accept applied files edited since they were applied.")
    resume: bool = Field(default=False, description="Continue a migration that an earlier run left half applied, at its failing statement.")
    accept_skipped: bool = Field(default=False, description="Proceed although the journal holds entries drizzle-orm skips forever (they stay unapplied, as with drizzle).")
    auto_rollback: bool = Field(default=False, description="Restore the pre-migration backup when a statement fails. Off by default: writes the app made since the backup are lost.")
    drizzle_dir: str | None = Field(default=None, description="The Drizzle folder; default DRIZZLE_DIR.")


class PlanMigrationsConfig(dg.Config):
    no_backup: bool = Field(default=False, description="Plan as `db migrate --no-backup` would (shows whether it would be refused).")
    force: bool = Field(default=False, description="Plan as `db migrate --force` would.")
    resume: bool = Field(default=False, description="Plan as `db migrate --resume` would.")
    accept_skipped: bool = Field(default=False, description="Plan as `db migrate --accept-skipped` would.")
    drizzle_dir: str | None = Field(default=None, description="The Drizzle folder; default DRIZZLE_DIR.")


def _plan_metadata(result) -> dict:
    summary = result.as_dict()
    destructive = [dg.TableRecord({"migration": f["migration"], "statement": f["statement"], "kind": f["kind"],
                                   "target": f["target"], "detail": f["detail"]}) for f in summary["destructive"]]
    return {**metadata_of(summary),
            "destructive_statements": dg.MetadataValue.table(destructive, schema=dg.TableSchema(columns=[
                dg.TableColumn("migration"), dg.TableColumn("statement", "int"), dg.TableColumn("kind"),
                dg.TableColumn("target"), dg.TableColumn("detail")])),
            "plan": dg.MetadataValue.md(f"```sql\n{result.plan_text()}\n```")}


@dg.op(name="apply_migrations", pool=DB_WRITE_POOL,
       description="Validate the Drizzle folder, plan like drizzle-orm, lint, lock, back up, apply statement by statement.")
def apply_migrations_op(context: dg.OpExecutionContext, config: MigrateDatabaseConfig, database: DatabaseResource,
                        backup_store: BackupStoreResource) -> dict:
    folder = database.drizzle_folder(config.drizzle_dir)
    try:
        result = apply_migrations(
            database.engine, database.parsed, folder, no_backup=config.no_backup,
            force=config.force, resume=config.resume, accept_skipped=config.accept_skipped,
            backup=backup_callable(context, database, backup_store, folder),
            restore=restore_callable(database, backup_store, context.run_id, context.log.info),
            auto_rollback=config.auto_rollback, run_id=context.run_id, lock_timeout_s=database.lock_timeout_seconds,
            log=context.log.info)
    except OpsError as exc:
        raise failure(exc) from None
    context.add_output_metadata(_plan_metadata(result))
    return {**result.as_dict(), "plan": result.plan_text(with_sql=False)}


@dg.job(tags={**DB_WRITE_TAGS, **max_runtime(4)},
        description="Runbook §1 `pnpm db:migrate`: applies pending Drizzle migrations exactly as drizzle-orm records "
        "them, after folder validation, destructive-change lint, the database write lock and a pre-migration backup. "
        "Started by hand or the CLI. To see the plan first run plan_migrations (a dry run, outside the write pool); "
        "to write new migration files run generate_migrations. Cancelled after 4 hours (dagster/max_runtime).")
def migrate_database():
    apply_migrations_op()


@dg.op(name="plan_pending_migrations",
       description="Read only: the plan drizzle-orm would apply, DESTRUCTIVE statements first, then every statement.")
def plan_migrations_op(context: dg.OpExecutionContext, config: PlanMigrationsConfig, database: DatabaseResource) -> dict:
    try:
        result = apply_migrations(database.engine, database.parsed, database.drizzle_folder(config.drizzle_dir), dry_run=True,
                                  no_backup=config.no_backup, force=config.force, resume=config.resume,
                                  accept_skipped=config.accept_skipped, run_id=context.run_id, log=context.log.info)
    except OpsError as exc:
        raise failure(exc) from None
    context.add_output_metadata(_plan_metadata(result))
    return {**result.as_dict(), "plan": result.plan_text(with_sql=True)}


@dg.job(tags={DRY_RUN_TAG: "true", **max_runtime(0.25)},
        description="Dry run of migrate_database (`db migrate --dry-run`): the plan, DESTRUCTIVE statements first, "
        "and every SQL statement. Changes nothing (no table, no lock, no backup), so it runs outside the database-"
        "write pool and never queues behind a restore. Requested by migrate_database_on_new_journal_entries.")
def plan_migrations():
    plan_migrations_op()


class GenerateMigrationsConfig(dg.Config):
    drizzle_dir: str | None = Field(default=None, description="The Drizzle folder; default DRIZZLE_DIR.")


@dg.op(name="generate_migration_files",
       description="Run DRIZZLE_GENERATE_COMMAND in the app repository; report the new files and their lint.")
def generate_migrations_op(context: dg.OpExecutionContext, config: GenerateMigrationsConfig,
                           database: DatabaseResource) -> dict:
    try:
        generated = generate_migrations(database.drizzle_folder(config.drizzle_dir), database.generate_command)
    except OpsError as exc:
        raise failure(exc) from None
    for line in generated.lines():
        context.log.info(line)
    context.add_output_metadata(metadata_of(generated.as_dict()))
    return {**generated.as_dict(), "lines": generated.lines()}  # the library's own text: what the CLI prints


@dg.job(name="generate_migrations", tags=max_runtime(0.25),
        description="Runbook §1 `pnpm db:generate`: writes new migration files from the app's schema with "
        "DRIZZLE_GENERATE_COMMAND and lints them (destructive statements, folder validity). Touches files, never the "
        "database, so it runs outside the database-write pool.")
def generate_migrations_job():
    generate_migrations_op()


class ValidateSchemaConfig(dg.Config):
    drizzle_dir: str | None = Field(default=None, description="The Drizzle folder; default DRIZZLE_DIR.")


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


@dg.multi_asset_check(specs=SCHEMA_CHECKS, can_subset=True,
                       description="Runbook §1 validation (`pnpm db:validate`) as asset checks on app_database_schema; "
                       "read only. Each check can be executed alone from the UI, without materializing the asset.")
def app_database_schema_checks(context: dg.AssetCheckExecutionContext, config: ValidateSchemaConfig,
                               database: DatabaseResource):
    try:
        report = validate_schema(database.engine, database.parsed, database.drizzle_folder(config.drizzle_dir))
    except OpsError as exc:
        raise failure(exc) from None
    for line in report.lines():
        (context.log.info if report.ok else context.log.warning)(line)
    full = dg.MetadataValue.json({**report.as_dict(), "lines": report.lines()})  # lines: what the CLI prints
    results = [
        (report.folder_ok, report.folder_errors, {"errors": len(report.folder_errors)}),
        (report.migrations_ok, [f"pending {t}" for t in report.pending] + report.anomalies,
         {"pending": len(report.pending), "anomalies": len(report.anomalies)}),
        (report.drift_ok, [str(d) for d in report.drift] + ([report.drift_skipped] if report.drift_skipped else []),
         {"findings": len(report.drift), "snapshot": report.snapshot or ""}),
    ]
    selected = context.selected_asset_check_keys
    failed = []
    for spec, (passed, lines, numbers) in zip(SCHEMA_CHECKS, results, strict=True):
        if spec.key not in selected:
            continue
        if not passed:
            failed.append(spec.name)
        yield dg.AssetCheckResult(asset_key=spec.asset_key, check_name=spec.name, passed=passed,
                                  severity=dg.AssetCheckSeverity.ERROR,
                                  description="; ".join(lines[:5]) or "ok",
                                  metadata={**numbers, "findings": dg.MetadataValue.json(lines), "report": full})
    if failed:
        # The check results are recorded above; failing the run too makes the run-failure alert fire.
        raise dg.Failure(description="Schema validation failed: " + " | ".join(report.lines()[1:-1]),
                         metadata={"failed_checks": ", ".join(failed), "report": full}, allow_retries=False)


validate_schema_job = dg.define_asset_job(
    "validate_schema",
    selection=dg.AssetSelection.assets(app_database_schema) | dg.AssetSelection.checks_for_assets(app_database_schema),
    tags=max_runtime(0.25),
    description="Runbook §1 `pnpm db:validate`: records app_database_schema (tables, migration head) and evaluates its "
    "checks drizzle_folder_valid, all_migrations_applied and no_schema_drift (journal vs SQL files vs snapshots, "
    "applied migrations vs journal, drift from the latest snapshot). Read only; fails (and so alerts) on any "
    "finding. Scheduled by validate_schema_every_6_hours.")

validate_schema_every_6_hours = dg.ScheduleDefinition(
    name="validate_schema_every_6_hours", job=validate_schema_job, cron_schedule="40 */6 * * *",
    execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Runs validate_schema at 00:40, 06:40, 12:40 and 18:40 UTC, so the schema checks are evaluated "
                "(and drift or a pending migration alerts) even when nobody migrates.")


@dg.sensor(name="migrate_database_on_new_journal_entries", job=plan_migrations, minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Notices journal entries not yet applied to the database and reports them once per new head, "
           "requesting plan_migrations (a dry run, outside the write pool). It never applies anything.")
def migrate_database_on_new_journal_entries(context: dg.SensorEvaluationContext, database: DatabaseResource):
    status = journal_status(database.engine, database.parsed, database.drizzle_folder())
    if not status.pending:
        return dg.SkipReason(status.summary())
    if context.cursor == status.marker:
        return dg.SkipReason(f"{status.summary()}: already reported for head {status.pending[-1]}.")
    context.update_cursor(status.marker)
    context.log.info(f"journal entries not applied to {database.parsed.masked()}: {status.summary()}")
    return dg.RunRequest(run_key=f"dry-run:{status.marker}",
                         tags={"rusing/trigger": "new-journal-entries", "rusing/pending-head": status.pending[-1],
                               DRY_RUN_TAG: "true"})


defs = dg.Definitions(
    assets=[app_database_schema],
    asset_checks=[app_database_schema_checks],
    jobs=[migrate_database, plan_migrations, generate_migrations_job, validate_schema_job],
    schedules=[validate_schema_every_6_hours],
    sensors=[migrate_database_on_new_journal_entries],
)
