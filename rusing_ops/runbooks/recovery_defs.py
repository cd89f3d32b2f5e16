"""Dagster face of runbook §6 Data Loss Recovery: job `recover_from_data_loss`."""


import dagster as dg
from pydantic import Field

from ..backups.defs import PARTITIONS, chosen_backup, record_stored
from ..core.database import create_engine
from ..core.errors import OpsError
from ..dagster_support import configured_target, failure, max_runtime, target_tags
from ..migrations.validate import validate_schema
from ..pitr import replay
from ..resources import DB_WRITE_POOL, DB_WRITE_TAGS, AppResource, BackupStoreResource, DatabaseResource
from .recovery import recover_from_data_loss


def _schema_validator(folder):
    def validate(url):
        engine = create_engine(url, pool_size=1)
        try:
            report = validate_schema(engine, url, folder)
        finally:
            engine.dispose()
        return report

    return validate


class RecoverFromDataLossConfig(dg.Config):
    confirm: str = Field(description=f"Type the target database's name: the application database {configured_target()}, "
                         "or the `database` field when set. Anything else refuses before the app is stopped.")
    backup: str = Field(default="latest", description="Used when no partition is picked: `latest` (newest complete "
                        "backup), a backup name/key from `rusing-ops db backups`, or a local SQL file.")
    database: str | None = Field(default=None, description="Recover this database instead of the application database.")
    pre_restore_backup: bool = Field(default=True, description="Back up what is left in the database before restoring over it.")
    validate_schema: bool = Field(default=True, description="After the restore, validate the schema against the Drizzle folder (runbook `pnpm db:validate`); findings leave the app stopped.")
    drizzle_dir: str | None = Field(default=None, description="The Drizzle folder to validate against; default DRIZZLE_DIR.")
    to: str | None = Field(default=None, description="Point in time instead of a backup: 'YYYY-MM-DD HH:MM:SS' (UTC "
                           "unless a zone follows): the newest backup before it plus the binlog archive up to it.")
    skip: list[str] = Field(default_factory=list, description="With `to`: transactions to leave out (GTIDs or "
                            "FILE:POS; the restore_to_time job's dry run lists them).")


@dg.op(pool=DB_WRITE_POOL, description="Stop the app, back up what is left, restore, validate row counts and schema, start the app, check health.")
def recover_from_data_loss_op(context: dg.OpExecutionContext, config: RecoverFromDataLossConfig, app: AppResource,
                              database: DatabaseResource, backup_store: BackupStoreResource) -> dict:
    try:
        store = backup_store.get_store()
        result = recover_from_data_loss(
            database.parsed, store, app.get_control(), confirm=config.confirm,
            backup=chosen_backup(context, config.backup, store, "the app was not stopped and nothing was restored"),
            database=config.database, pre_restore_backup=config.pre_restore_backup, lock=database.write_lock,
            run_id=context.run.run_id, log=context.log.info,
            validate=_schema_validator(database.drizzle_folder(config.drizzle_dir)) if config.validate_schema else None,
            stop=replay.parse_stop(config.to) if config.to else None, skip=config.skip)
    except OpsError as exc:
        raise failure(exc) from None
    if result.pre_restore_backup:
        record_stored(context, backup_store.get_store(), result.pre_restore_backup, database)
    restored = result.restore
    summary = {"target": result.target, "source": restored.source, "pre_restore_backup": result.pre_restore_backup or "",
               "pre_restore_db": restored.pre_restore_db or "", "rows": sum(restored.tables.values())}
    context.add_output_metadata({**summary, "steps": dg.MetadataValue.md("\n".join(f"- {l}" for l in result.lines()))})
    return {**summary, "steps": result.lines()}


@dg.job(name="recover_from_data_loss", partitions_def=PARTITIONS, tags={**DB_WRITE_TAGS, **max_runtime(8), **target_tags()},
        description=f"Runbook §6 Data Loss Recovery of {configured_target()}: stop the app, back up what is left, "
        "restore the picked backup (partition of database_backup; without one, the config's backup, latest) through a "
        "staging database, validate row counts and the schema (pending migrations or drift leave the app stopped), "
        "start the app and check its health. Started by hand; requires confirm = database name.")
def recover_from_data_loss_job():
    recover_from_data_loss_op()


defs = dg.Definitions(jobs=[recover_from_data_loss_job])
