"""Dagster face of runbook §6 Data Loss Recovery: job `recover_from_data_loss`."""

from typing import Optional

import dagster as dg
from pydantic import Field

from ..core.errors import OpsError
from ..resources import DB_WRITE_POOL, DB_WRITE_TAGS, AppResource, BackupStoreResource, DatabaseResource
from ..backups.defs import record_backup
from .recovery import recover_from_data_loss


class RecoverFromDataLossConfig(dg.Config):
    confirm: str = Field(description="Must equal the target database name; anything else refuses before the app is stopped.")
    backup: str = Field(default="latest", description="`latest` (newest complete backup), a backup name/key from `rusing-ops db backups`, or a local SQL file.")
    database: Optional[str] = Field(default=None, description="Recover this database instead of the application database.")
    pre_restore_backup: bool = Field(default=True, description="Back up what is left in the database before restoring over it.")


@dg.op(pool=DB_WRITE_POOL, description="Stop the app, back up what is left, restore, validate row counts, start the app, check health.")
def recover_from_data_loss_op(context: dg.OpExecutionContext, config: RecoverFromDataLossConfig, app: AppResource,
                              database: DatabaseResource, backup_store: BackupStoreResource) -> dict:
    try:
        result = recover_from_data_loss(
            database.parsed, backup_store.get_store(), app.get_control(), confirm=config.confirm, backup=config.backup,
            database=config.database, pre_restore_backup=config.pre_restore_backup, lock=database.write_lock,
            run_id=context.run.run_id, log=context.log.info)
    except OpsError as exc:
        raise dg.Failure(description=str(exc)) from exc
    if result.pre_restore_backup:
        record_backup(context, backup_store.get_store(), result.pre_restore_backup)
    restored = result.restore
    summary = {"target": result.target, "source": restored.source, "pre_restore_backup": result.pre_restore_backup or "",
               "pre_restore_db": restored.pre_restore_db or "", "rows": sum(restored.tables.values())}
    context.add_output_metadata({**summary, "steps": dg.MetadataValue.md("\n".join(f"- {l}" for l in result.lines()))})
    return {**summary, "steps": result.lines()}


@dg.job(name="recover_from_data_loss", tags=DB_WRITE_TAGS, executor_def=dg.in_process_executor,
        description="Runbook §6 Data Loss Recovery: stop the app, back up what is left, restore the latest (or a named) "
        "backup through a staging database, validate row counts, start the app and check its health. Started by hand; "
        "requires confirm = database name.")
def recover_from_data_loss_job():
    recover_from_data_loss_op()


defs = dg.Definitions(jobs=[recover_from_data_loss_job])
