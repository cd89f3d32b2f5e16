"""Runbook §6 data-loss recovery, as a Dagster job: real app commands, real health endpoint, real database."""

from __future__ import annotations

import dagster as dg

from rusing_ops.backups import catalog
from rusing_ops.backups.dump import backup_database
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
        "ops": {"recover_from_data_loss_op": {"config": {"confirm": every_type_db.database}}}})
    steps = result.output_for_node("recover_from_data_loss_op")["steps"]
    assert [s.split(":")[0] for s in steps] == ["1. stop app", "2. choose backup", "3. back up what is left",
                                                "4. restore", "5. validate row counts", "6. start app",
                                                "7. check health"]
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
                                                                      "pre_restore_backup": False}}}})
    assert not result.success and events.read_text() == "stop\n"
    message = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error.message
    assert "There is no complete backup in " in message and "The app is left stopped." in message
    assert "start it with RUSING_APP_START_COMMAND" in message
    assert snapshot(every_type_db, every_type_db.database) == before
