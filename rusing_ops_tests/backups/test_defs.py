"""The Dagster face of backups, run in process against a real SQLite instance, MariaDB and SeaweedFS."""

from __future__ import annotations

import datetime as dt
import uuid

import dagster as dg
import pytest

from rusing_ops.backups import catalog, keys
from rusing_ops.backups.defs import PARTITIONS, defs as backups_defs, nightly_backup
from rusing_ops.resources import DB_WRITE_TAGS, BackupStoreResource, DatabaseResource
from rusing_ops_tests.conftest import admin_connection

from .conftest import snapshot


def _url(db, user=None, password=None) -> str:
    user = user or db.user
    auth = user + (f":{password}" if password else (f":{db.password}" if db.password and user == db.user else ""))
    return f"mysql://{auth}@{db.host}:{db.port}/{db.database}"


def _job(name: str, url: str, store_url: str):
    merged = dg.Definitions.merge(backups_defs, dg.Definitions(resources={
        "database": DatabaseResource(url=url), "backup_store": BackupStoreResource(url=store_url)}))
    return merged.resolve_job_def(name)


def _backup(instance, url: str, store_url: str, name: str, **config):
    instance.add_dynamic_partitions(PARTITIONS.name, [name])
    return _job("backup_database", url, store_url).execute_in_process(
        instance=instance, partition_key=name, raise_on_error=False,
        run_config={"ops": {"database_backup": {"config": config}}} if config else None)


def test_backup_job_materializes_a_partition_with_metadata(every_type_db, s3_store, dagster_instance):
    name = "backup-2026-11-26T080000Z-manual"
    result = _backup(dagster_instance, _url(every_type_db), s3_store.url, name, compression="gzip")
    assert result.success
    [mat] = result.asset_materializations_for_node("database_backup")
    assert mat.partition == name
    md = {k: v.value for k, v in mat.metadata.items()}
    assert md["key"] == name + ".sql.gz"
    assert md["uri"] == f"{s3_store.url}/{name}.sql.gz"
    assert md["rows"] == 3015 and md["table_rows"]["payments"] == 3003
    assert md["migration_head"] == "bbb" and md["reason"] == "manual" and md["verified"] is False
    assert len(md["sha256"]) == 64 and md["bytes"] > 0 and md["compressed_ratio"] > 1
    stored = catalog.resolve(s3_store, name)
    assert stored.manifest.run_id == result.run_id and stored.manifest.sha256 == md["sha256"]


def test_nightly_schedule_registers_its_partition(dagster_instance):
    when = dt.datetime(2026, 11, 26, 3, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    context = dg.build_schedule_context(instance=dagster_instance, scheduled_execution_time=when)
    request = nightly_backup(context)
    assert request.partition_key == "backup-2026-11-26T080000Z-nightly" == request.run_key
    assert dagster_instance.get_dynamic_partitions(PARTITIONS.name) == ["backup-2026-11-26T080000Z-nightly"]
    assert nightly_backup.cron_schedule == "0 3 * * *" and nightly_backup.execution_timezone == "America/Toronto"


def test_verify_job_records_the_check_on_the_partition(every_type_db, local_store, dagster_instance):
    name = "backup-2026-11-26T080000Z-nightly"
    url = _url(every_type_db)
    assert _backup(dagster_instance, url, local_store.url, name).success
    result = _job("verify_backup", url, local_store.url).execute_in_process(
        instance=dagster_instance, run_config={"ops": {"verify_backup_op": {"config": {"backup": name}}}})
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.check_name == "backup_verified" and evaluation.passed
    assert evaluation.partition == name
    assert evaluation.metadata["table_results"].value["users"]["checksum_ok"] is True
    assert catalog.resolve(local_store, name).verified


def test_restore_job_refuses_a_confirm_mismatch_then_restores(every_type_db, local_store, dagster_instance, db_conn):
    url = _url(every_type_db)
    assert _backup(dagster_instance, url, local_store.url, "backup-2026-11-26T080000Z").success
    before = snapshot(every_type_db, every_type_db.database)
    with db_conn.cursor() as cur:
        cur.execute("DELETE FROM enrollments")
    job = _job("restore_database", url, local_store.url)
    assert job.tags == DB_WRITE_TAGS
    bad = job.execute_in_process(instance=dagster_instance, raise_on_error=False, run_config={
        "ops": {"restore_database_op": {"config": {"confirm": "prod"}}}})
    assert not bad.success
    failure = next(e for e in bad.all_events if e.is_step_failure).step_failure_data.error.message
    assert f"confirm 'prod' does not match the target database '{every_type_db.database}'" in failure
    assert catalog.list_backups(local_store)[0].reason == ""  # no pre-restore backup was taken

    good = job.execute_in_process(instance=dagster_instance, run_config={
        "ops": {"restore_database_op": {"config": {"confirm": every_type_db.database}}}})
    out = good.output_for_node("restore_database_op")
    assert out["pre_restore_db"].startswith(every_type_db.database + "__pre_restore_")
    assert snapshot(every_type_db, every_type_db.database) == before
    assert [e.reason for e in catalog.list_backups(local_store)] == ["pre-restore", ""]
    [mat] = [e.event_specific_data.materialization for e in good.all_events if e.is_step_materialization]
    assert mat.partition == catalog.list_backups(local_store)[0].name
    assert mat.metadata["table_rows"].value["enrollments"] == 0  # what the live database held
    assert mat.partition in dagster_instance.get_dynamic_partitions(PARTITIONS.name)


def test_prune_job_is_a_dry_run_by_default(every_type_db, local_store, dagster_instance):
    url = _url(every_type_db)
    for name in ("backup-2026-11-24T080000Z", "backup-2026-11-25T080000Z", "backup-2026-11-26T080000Z"):
        assert _backup(dagster_instance, url, local_store.url, name).success
    config = {"keep_daily": 1, "keep_weekly": 0, "keep_monthly": 0}
    job = _job("prune_backups", url, local_store.url)
    dry = job.execute_in_process(instance=dagster_instance, run_config={"ops": {"prune_backups_op": {"config": config}}})
    assert dry.output_for_node("prune_backups_op")["to_delete"] == 2
    assert len(catalog.list_backups(local_store)) == 3
    wet = job.execute_in_process(instance=dagster_instance, run_config={
        "ops": {"prune_backups_op": {"config": {**config, "dry_run": False}}}})
    assert wet.output_for_node("prune_backups_op")["deleted"] == 2
    assert [e.name for e in catalog.list_backups(local_store)] == ["backup-2026-11-26T080000Z"]
    assert dagster_instance.get_dynamic_partitions(PARTITIONS.name) == ["backup-2026-11-26T080000Z"]


@pytest.fixture
def password_user(every_type_db, server_url):
    user, password = f"rot_{uuid.uuid4().hex[:8]}", f"S3cret-{uuid.uuid4().hex[:12]}"
    conn = admin_connection(server_url)
    with conn.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (password,))
        cur.execute(f"GRANT ALL PRIVILEGES ON `{every_type_db.database}`.* TO '{user}'@'%'")
        cur.execute(f"GRANT ALL PRIVILEGES ON `{every_type_db.database}\\_\\_%`.* TO '{user}'@'%'")
        cur.execute(f"GRANT SELECT ON mysql.proc TO '{user}'@'%'")  # to read routines another user defined
    yield user, password
    with conn.cursor() as cur:
        cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
    conn.close()


def test_no_password_in_logs_or_metadata(every_type_db, local_store, dagster_instance, password_user):
    user, password = password_user
    url = _url(every_type_db, user, password)
    runs = [_backup(dagster_instance, url, local_store.url, "backup-2026-11-26T080000Z")]
    assert runs[0].success, "the password user can back up"
    runs.append(_job("restore_database", url, local_store.url).execute_in_process(
        instance=dagster_instance, raise_on_error=False,
        run_config={"ops": {"restore_database_op": {"config": {"confirm": every_type_db.database,
                                                                "pre_restore_backup": False}}}}))
    assert runs[1].success, "the password user can restore (staging and pre-restore databases included)"
    runs.append(_backup(dagster_instance, url.replace(password, password + "-wrong"), local_store.url,
                        "backup-2026-11-26T090000Z"))
    assert not runs[2].success
    text = []
    for run in runs:
        for record in dagster_instance.all_logs(run.run_id):
            text.append(repr(record))
        text.append(str(dagster_instance.get_run_by_id(run.run_id).run_config))
    text.extend(local_store.get_bytes(o.key).decode("utf-8", "replace") for o in local_store.list()
                if o.key.endswith((keys.MANIFEST_SUFFIX,)))
    joined = "\n".join(text)
    assert "the server refused the user name or password" in joined and f"mysql://{user}:***@" in joined
    assert password not in joined


def test_definitions_names_and_write_tags():
    from rusing_ops.definitions import defs as code_location
    from rusing_ops.runbooks.recovery_defs import defs as recovery_defs

    repo = dg.Definitions.merge(backups_defs, dg.Definitions(resources=code_location.resources)).get_repository_def()
    assert {j.name for j in repo.get_all_jobs() if not j.name.startswith("__")} == {
        "backup_database", "restore_database", "verify_backup", "prune_backups", "check_backup_freshness"}
    assert {s.name for s in repo.schedule_defs} == {"nightly_backup", "backup_freshness_schedule"}
    checks = {k.name for k in repo.asset_graph.asset_check_keys}
    assert checks == {"backup_verified", "backup_fresh"}
    writers = {j.name for j in repo.get_all_jobs() if j.tags == DB_WRITE_TAGS}
    assert writers == {"restore_database"}
    recovery = dg.Definitions.merge(recovery_defs, dg.Definitions(resources=code_location.resources))
    assert recovery.resolve_job_def("recover_from_data_loss").tags == DB_WRITE_TAGS


@pytest.mark.parametrize("age_hours, passed", [(1, True), (30, False)])
def test_freshness_check(every_type_db, local_store, dagster_instance, age_hours, passed):
    taken = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=age_hours)
    from rusing_ops.backups.dump import backup_database

    backup_database(every_type_db, local_store, now=taken)
    result = _job("check_backup_freshness", _url(every_type_db), local_store.url).execute_in_process(
        instance=dagster_instance)
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.check_name == "backup_fresh" and evaluation.passed is passed
    assert evaluation.description.startswith(f"Newest complete backup {keys.partition_name(taken)} is {age_hours}.")


def test_materializing_with_checks_backs_up_then_verifies(every_type_db, local_store, dagster_instance):
    """What the UI's "Materialize" does on one partition: the backup, then its backup_verified check."""
    name = "backup-2026-11-26T100000Z-manual"
    dagster_instance.add_dynamic_partitions(PARTITIONS.name, [name])
    merged = dg.Definitions.merge(backups_defs, dg.Definitions(resources={
        "database": DatabaseResource(url=_url(every_type_db)), "backup_store": BackupStoreResource(url=local_store.url)}))
    job = merged.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=dagster_instance, partition_key=name,
                                    asset_selection=[dg.AssetKey("database_backup")])
    [mat] = result.asset_materializations_for_node("database_backup")
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}  # backup_fresh runs alongside
    evaluation = checks["backup_verified"]
    assert mat.partition == name and evaluation.partition == name and evaluation.passed
    assert catalog.resolve(local_store, name).verified
