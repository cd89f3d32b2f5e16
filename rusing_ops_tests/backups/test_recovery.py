"""Runbook §6 data-loss recovery, as a Dagster job: real app commands, real health endpoint, real database."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg

from rusing_ops.backups import catalog
from rusing_ops.backups.dump import backup_database
from rusing_ops.core.database import create_engine
from rusing_ops.migrations.applier import apply_migrations
from rusing_ops.resources import AppResource, BackupStoreResource, DatabaseResource
from rusing_ops.runbooks.recovery_defs import defs as recovery_defs

from .conftest import query, snapshot


def _job(db, store, app):
    return dg.Definitions.merge(recovery_defs, dg.Definitions(resources={
        "database": DatabaseResource(url=f"mysql://{db.user}@{db.host}:{db.port}/{db.database}"),
        "backup_store": BackupStoreResource(url=store.url), "app": app})).resolve_job_def("recover_from_data_loss")


def _app(tmp_path, base_url):
    events = tmp_path / "app-events"
    return events, AppResource(base_url=base_url, stop_command=f"sh -c 'echo stop >> {events}'",
                               start_command=f"sh -c 'echo start >> {events}'")


def test_recovery_stops_restores_validates_starts(every_type_db, local_store, dagster_instance, app_stand_in, tmp_path):
    backup_database(every_type_db, local_store)
    before = snapshot(every_type_db, every_type_db.database)
    query(every_type_db, every_type_db.database, "DELETE FROM payments WHERE id > 100")  # the data loss
    events, app = _app(tmp_path, app_stand_in.base_url)
    result = _job(every_type_db, local_store, app).execute_in_process(instance=dagster_instance, run_config={
        "ops": {"recover_from_data_loss_op": {"config": {"confirm": every_type_db.database, "validate_schema": False}}}})
    steps = result.output_for_node("recover_from_data_loss_op")["steps"]
    assert [s.split(":")[0] for s in steps] == ["1. stop app", "2. back up what is left", "3. restore",
                                                "4. start app", "5. check health"]
    assert events.read_text() == "stop\nstart\n"
    assert snapshot(every_type_db, every_type_db.database) == before
    pre = [e for e in catalog.list_backups(local_store) if e.reason == "pre-restore"]
    assert pre[0].manifest.tables["payments"].rows == 100  # what was left is kept too
    assert ("GET", "/api/health") in app_stand_in.requests


def test_recovery_refuses_confirm_mismatch_without_stopping_the_app(every_type_db, local_store, dagster_instance,
                                                                     tmp_path):
    events, app = _app(tmp_path, None)
    result = _job(every_type_db, local_store, app).execute_in_process(
        instance=dagster_instance, raise_on_error=False,
        run_config={"ops": {"recover_from_data_loss_op": {"config": {"confirm": "prod"}}}})
    assert not result.success and not events.exists()
    message = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error.message
    assert f"confirm 'prod' does not match the target database '{every_type_db.database}'" in message


def test_failed_restore_leaves_the_app_stopped_and_data_untouched(every_type_db, local_store, dagster_instance,
                                                                  tmp_path):
    before = snapshot(every_type_db, every_type_db.database)
    events, app = _app(tmp_path, None)
    result = _job(every_type_db, local_store, app).execute_in_process(  # the store holds no backup at all
        instance=dagster_instance, raise_on_error=False,
        run_config={"ops": {"recover_from_data_loss_op": {"config": {"confirm": every_type_db.database,
                                                                      "pre_restore_backup": False,
                                                                      "validate_schema": False}}}})
    assert not result.success and events.read_text() == "stop\n"
    message = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error.message
    assert "There is no complete backup in " in message and "The app is left stopped." in message
    assert "start it with RUSING_APP_START_COMMAND" in message
    assert snapshot(every_type_db, every_type_db.database) == before


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rusing-app" / "drizzle"


def _folder_without_last_migration(tmp_path) -> Path:
    folder = tmp_path / "drizzle-0003"
    shutil.copytree(EXAMPLE, folder)
    journal = json.loads((folder / "meta" / "_journal.json").read_text())
    last = journal["entries"].pop()
    (folder / "meta" / "_journal.json").write_text(json.dumps(journal, indent=2))
    (folder / f"{last['tag']}.sql").unlink()
    (folder / "meta" / f"{last['idx']:04d}_snapshot.json").unlink()
    return folder


def _recover(fresh_db, store, app, instance):
    return _job(fresh_db, store, app).execute_in_process(instance=instance, raise_on_error=False, run_config={
        "ops": {"recover_from_data_loss_op": {"config": {"confirm": fresh_db.database, "drizzle_dir": str(EXAMPLE)}}}})


def test_recovery_validates_the_schema_before_starting_the_app(fresh_db, local_store, dagster_instance, app_stand_in,
                                                                tmp_path):
    apply_migrations(create_engine(fresh_db), fresh_db, EXAMPLE, no_backup=True, force=True)
    backup_database(fresh_db, local_store)
    query(fresh_db, fresh_db.database, "DELETE FROM __drizzle_migrations WHERE id > 2")  # the data loss
    events, app = _app(tmp_path, app_stand_in.base_url)
    result = _recover(fresh_db, local_store, app, dagster_instance)
    assert result.success
    steps = result.output_for_node("recover_from_data_loss_op")["steps"]
    assert "4. validate schema: OK: folder valid, all migrations applied, no drift from meta/0004_snapshot.json" in steps
    assert events.read_text() == "stop\nstart\n"
    assert query(fresh_db, fresh_db.database, "SELECT COUNT(*) FROM __drizzle_migrations") == [(5,)]


def test_backup_older_than_the_migrations_leaves_the_app_stopped(fresh_db, local_store, dagster_instance, tmp_path):
    engine = create_engine(fresh_db)
    apply_migrations(engine, fresh_db, _folder_without_last_migration(tmp_path), no_backup=True, force=True)
    backup_database(fresh_db, local_store)  # taken before 0004 was applied
    apply_migrations(engine, fresh_db, EXAMPLE, no_backup=True, force=True)
    events, app = _app(tmp_path, None)
    result = _recover(fresh_db, local_store, app, dagster_instance)
    assert not result.success and events.read_text() == "stop\n"
    message = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error.message
    assert (f"The data was restored, but schema validation of `{fresh_db.database}` found: "
            "PENDING 0004_drop_hourly_rate_rename_path_courses.") in message
    assert "The app is left stopped." in message and "apply the pending migrations with `rusing-ops db migrate`" in message
    assert query(fresh_db, fresh_db.database, "SELECT COUNT(*) FROM __drizzle_migrations") == [(4,)]
