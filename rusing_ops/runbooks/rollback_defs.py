"""Dagster face of the rollback runbook (§2): job `rollback_migration`."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from ..backups.defs import backup_callable
from ..core.errors import ConfigError, OpsError
from ..dagster_support import failure, max_runtime, metadata_of
from ..resources import DB_WRITE_POOL, DB_WRITE_TAGS, AppResource, BackupStoreResource, DatabaseResource
from ..settings import resolve_path
from .rollback import rollback_migration


class RollbackMigrationConfig(dg.Config):
    migration: str = Field(description="Tag of the migration to undo (the last applied one), e.g. 0004_drop_hourly_rate.")
    confirm: str = Field(default="", description="Must equal the target database name (not needed for a dry run).")
    reverse_sql: str | None = Field(default=None, description="The SQL that undoes the migration (statements separated by `;`).")
    reverse_sql_file: str | None = Field(default=None, description="A file holding the reverse SQL, instead of reverse_sql.")
    dry_run: bool = Field(default=False, description="List every step with what it would do; change nothing.")
    no_backup: bool = Field(default=False, description="Skip the fresh backup of step 2 (not recommended).")
    drizzle_dir: str | None = Field(default=None, description="The Drizzle folder; default DRIZZLE_DIR.")


def _reverse_sql(config: RollbackMigrationConfig) -> str:
    if bool(config.reverse_sql) == bool(config.reverse_sql_file):
        raise ConfigError("Give the reverse SQL either inline (reverse_sql) or as a file (reverse_sql_file), not both "
                          "and not neither.")
    if config.reverse_sql:
        return config.reverse_sql
    path = resolve_path(config.reverse_sql_file)
    if not Path(path).is_file():
        raise ConfigError(f"Reverse SQL file {path} does not exist.")
    return Path(path).read_text()


@dg.op(pool=DB_WRITE_POOL, description="Stop the app, back up, apply the reverse SQL, delete the migration's row, "
       "update the journal, restart the app, verify health.")
def rollback_migration_op(context: dg.OpExecutionContext, config: RollbackMigrationConfig, database: DatabaseResource,
                          backup_store: BackupStoreResource, app: AppResource) -> dict:
    folder = database.drizzle_folder(config.drizzle_dir)
    try:
        result = rollback_migration(
            database.engine, database.parsed, folder, config.migration, reverse_sql=_reverse_sql(config),
            confirm=config.confirm or None, dry_run=config.dry_run, app=app.get_control(),
            backup=backup_callable(context, database, backup_store, folder),
            no_backup=config.no_backup, lock_timeout_s=database.lock_timeout_seconds, log=context.log.info)
    except OpsError as exc:
        raise failure(exc) from None
    summary = result.as_dict()
    context.add_output_metadata({**metadata_of(summary),
                                 "checklist": dg.MetadataValue.md("\n".join(f"- {line}" for line in result.lines()))})
    return {**summary, "lines": result.lines()}  # the library's own text: what the CLI prints


@dg.job(name="rollback_migration", tags={**DB_WRITE_TAGS, **max_runtime(2)},
        description="Runbook §2 manual rollback of the last applied migration, checklist steps 1-6. Started by hand or "
        "`rusing-ops db rollback`; requires confirm = database name; dry_run lists every step.")
def rollback_migration_job():
    rollback_migration_op()


defs = dg.Definitions(jobs=[rollback_migration_job])
