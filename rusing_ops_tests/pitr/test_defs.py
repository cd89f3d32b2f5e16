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
