"""The Dagster face of point-in-time recovery, in process against a real instance and the binlog server."""

from __future__ import annotations

import dagster as dg

from rusing_ops.backups.defs import defs as backups_defs
from rusing_ops.pitr.defs import defs as pitr_defs
from rusing_ops.resources import BackupStoreResource, DatabaseResource

from .conftest import rows, run


def _job(name: str, history):
    defs = dg.Definitions.merge(backups_defs, pitr_defs, dg.Definitions(resources={
        "database": DatabaseResource(url=history.server.url(history.url.database)),
        "backup_store": BackupStoreResource(url=str(history.store.root))}))
    return defs.resolve_job_def(name)


def test_archive_job_materializes_lag_and_checks(history, dagster_instance):
    run(history.server, history.url.database, "INSERT INTO payments (amount, note) VALUES (7.00,'late')")
    result = _job("archive_binlogs", history).execute_in_process(instance=dagster_instance)
    assert result.success
    [mat] = result.asset_materializations_for_node("binlog_archive")
    md = {k: v.value for k, v in mat.metadata.items()}
    assert md["available"] is True and md["lag_s"] == 0.0 and md["segments_written"] == 1 and md["gaps"] == []
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["binlog_archive_no_gap"].passed and checks["binlog_settings_ok"].passed
    assert "binlog_format ROW" in checks["binlog_settings_ok"].description


def test_archive_job_on_a_server_without_binlog_says_so_and_is_not_green(fresh_db, tmp_path, dagster_instance):
    defs = dg.Definitions.merge(pitr_defs, dg.Definitions(resources={
        "database": DatabaseResource(url=f"mysql://{fresh_db.user}@{fresh_db.host}:{fresh_db.port}/{fresh_db.database}"),
        "backup_store": BackupStoreResource(url=str(tmp_path / "b"))}))
    result = defs.resolve_job_def("archive_binlogs").execute_in_process(instance=dagster_instance)
    checks = result.get_asset_check_evaluations()
    assert {c.passed for c in checks} == {False}
    assert all("log_bin is OFF" in c.description for c in checks)


def test_restore_to_time_job_dry_run_then_real(history, dagster_instance):
    job = _job("restore_to_time", history)
    config = {"skip": [history.delete_gtid]}
    dry = job.execute_in_process(instance=dagster_instance, run_config={"ops": {"restore_to_time_op": {"config": config}}})
    out = dry.output_for_node("restore_to_time_op")
    assert out["dry_run"] and out["backup"] == history.backup_key and len(out["skipped"]) == 1
    assert rows(history.server, history.url.database) == history.final
    real = job.execute_in_process(instance=dagster_instance, run_config={"ops": {"restore_to_time_op": {"config": {
        **config, "dry_run": False, "confirm": history.url.database}}}})
    assert real.success
    assert rows(history.server, history.url.database) == history.without_delete
    # the pre-restore backup is a partition of database_backup like any other
    key = real.output_for_node("restore_to_time_op")["pre_restore_backup"]
    assert any(key.startswith(p) or p in key for p in dagster_instance.get_dynamic_partitions("database_backup"))


def test_data_loss_recovery_to_a_time_runs_the_whole_procedure(history, dagster_instance, tmp_path):
    """Runbook §6 with --to: stop the app, restore backup + binlogs to one second before the DELETE, start."""
    import datetime as dt

    from rusing_ops.resources import AppResource
    from rusing_ops.runbooks.recovery_defs import defs as recovery_defs

    events = tmp_path / "app-events"
    defs = dg.Definitions.merge(backups_defs, recovery_defs, dg.Definitions(resources={
        "database": DatabaseResource(url=history.server.url(history.url.database)),
        "backup_store": BackupStoreResource(url=str(history.store.root)),
        "app": AppResource(stop_command=f"sh -c 'echo stop >> {events}'",
                           start_command=f"sh -c 'echo start >> {events}'")}))
    to = dt.datetime.fromtimestamp(history.t2 - 1, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    result = defs.resolve_job_def("recover_from_data_loss").execute_in_process(
        instance=dagster_instance, run_config={"ops": {"recover_from_data_loss_op": {"config": {
            "confirm": history.url.database, "to": to, "validate_schema": False}}}})
    assert result.success
    steps = result.output_for_node("recover_from_data_loss_op")["steps"]
    assert steps[2].startswith(f"3. restore: {history.backup_key} + binlogs to {to}Z")
    assert events.read_text() == "stop\nstart\n"
    assert rows(history.server, history.url.database) == history.before_delete


def test_the_archive_sensor_does_not_hide_an_unreadable_server(tmp_path, dagster_instance):
    """A server the sensor cannot read still gets a pass requested (once per interval), so its failure is alerted."""
    from rusing_ops.pitr.defs import archive_binlogs_when_the_server_moved
    from rusing_ops_tests.conftest import free_port

    resources = {"database": DatabaseResource(url=f"mysql://root@127.0.0.1:{free_port()}/gone"),
                 "backup_store": BackupStoreResource(url=str(tmp_path / "b"))}
    with dg.build_sensor_context(instance=dagster_instance, resources=resources) as context:
        first = archive_binlogs_when_the_server_moved(context)
        cursor = context.cursor
    assert isinstance(first, dg.RunRequest)
    with dg.build_sensor_context(instance=dagster_instance, resources=resources, cursor=cursor) as context:
        again = archive_binlogs_when_the_server_moved(context)
    assert isinstance(again, dg.SkipReason) and "cannot read the binlog status" in again.skip_message
