"""The Dagster face of backups, run in process against a real SQLite instance, MariaDB and SeaweedFS."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import dagster as dg
import pytest

from rusing_ops.backups import catalog, keys
from rusing_ops.backups.defs import (
    ASSET,
    PARTITIONS,
    TARGET,
    RestoreDatabaseConfig,
    backup_verified,
    nightly_backup,
    restore_database,
)
from rusing_ops.backups.defs import defs as backups_defs
from rusing_ops.backups.dump import backup_database as take_library_backup
from rusing_ops.dagster_support import TARGET_TAG, configured_target, failure_text, is_refusal
from rusing_ops.resources import DB_WRITE_TAG_KEY, DB_WRITE_TAGS, BackupStoreResource, DatabaseResource
from rusing_ops_tests.conftest import admin_connection

from .conftest import snapshot


def _url(db, user=None, password=None) -> str:
    user = user or db.user
    auth = user + (f":{password}" if password else (f":{db.password}" if db.password and user == db.user else ""))
    return f"mysql://{auth}@{db.host}:{db.port}/{db.database}"


def _defs(url: str, store_url: str, **database) -> dg.Definitions:
    return dg.Definitions.merge(backups_defs, dg.Definitions(resources={
        "database": DatabaseResource(url=url, **database), "backup_store": BackupStoreResource(url=store_url)}))


def _job(name: str, url: str, store_url: str, **database):
    return _defs(url, store_url, **database).resolve_job_def(name)


def _backup(instance, url: str, store_url: str, **config):
    """What one click on Launch (backup_database) or Materialize (newest_backup) runs: no partition, no typed name."""
    return _job("backup_database", url, store_url).execute_in_process(
        instance=instance, raise_on_error=False,
        run_config={"ops": {"newest_backup": {"config": config}}} if config else None)


def _recorded(result) -> dg.AssetMaterialization:
    [mat] = [m for m in result.asset_materializations_for_node("newest_backup") if m.asset_key == ASSET]
    return mat


def _refusal(result):
    return next(e for e in result.all_events if e.is_step_failure).step_failure_data


def test_backup_job_records_a_partition_named_by_the_clock(every_type_db, s3_store, dagster_instance):
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    result = _backup(dagster_instance, _url(every_type_db), s3_store.url, compression="gzip")
    after = dt.datetime.now(dt.UTC)
    assert result.success
    mat = _recorded(result)
    name = mat.partition
    assert before <= keys.parse_name(name).taken_at <= after and name.endswith("-manual")
    assert dagster_instance.get_dynamic_partitions(PARTITIONS.name) == [name]
    assert dagster_instance.get_materialized_partitions(ASSET) == {name}
    md = {k: v.value for k, v in mat.metadata.items()}
    assert md["key"] == name + ".sql.gz" and md["uri"] == f"{s3_store.url}/{name}.sql.gz"
    assert md["dagster/row_count"] == 3015 and md["migration_head"] == "bbb" and md["reason"] == "manual"
    assert {r.data["table"]: r.data["rows"] for r in md["tables"].records}["payments"] == 3003
    assert "verified" not in md and "rows" not in md  # one truth for "verified": the backup_verified check
    assert len(md["sha256"]) == 64 and md["bytes"] > 0 and md["compressed_ratio"] > 1
    assert md["taken_at"] == keys.parse_name(name).taken_at.timestamp()
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["backup_verified"].partition == name and checks["backup_verified"].passed is False
    assert checks["backup_verified"].severity == dg.AssetCheckSeverity.WARN
    assert checks["backup_verified"].description.startswith("not verified yet")
    assert checks["backup_fresh"].passed and checks["backup_fresh"].metadata["newest"].value == name
    stored = catalog.resolve(s3_store, name)
    assert stored.manifest.run_id == result.run_id and stored.manifest.sha256 == md["sha256"]
    [own] = [m for m in result.asset_materializations_for_node("newest_backup") if m.partition is None]
    assert own.asset_key == dg.AssetKey("newest_backup") and own.metadata["partition"].value == name


def test_nothing_clickable_materializes_a_typed_partition(every_type_db, local_store, dagster_instance):
    """Issue 11 items 1-3: database_backup has no Materialize path; a second backup leaves the first one green."""
    defs = _defs(_url(every_type_db), local_store.url)
    graph = defs.get_repository_def().asset_graph
    assert not graph.get(ASSET).is_materializable
    assert graph.get(dg.AssetKey("newest_backup")).is_materializable and not graph.get(
        dg.AssetKey("newest_backup")).is_partitioned
    assert _job("backup_database", _url(every_type_db), local_store.url).partitions_def is None
    first = _recorded(_backup(dagster_instance, _url(every_type_db), local_store.url)).partition
    implicit = defs.resolve_implicit_global_asset_job_def()  # what the asset page's Materialize button runs
    second = implicit.execute_in_process(instance=dagster_instance, asset_selection=[dg.AssetKey("newest_backup")],
                                         run_config={"ops": {"newest_backup": {"config": {"reason": "again"}}}})
    assert second.success
    names = sorted(dagster_instance.get_dynamic_partitions(PARTITIONS.name))
    assert len(names) == 2 and first in names  # (two backups in one second sort by reason, not by time)
    assert dagster_instance.get_materialized_partitions(ASSET) == set(names)
    assert [e.name for e in catalog.list_backups(local_store)] == names[::-1]


def test_nightly_schedule_requests_a_clock_named_backup(dagster_instance):
    when = dt.datetime(2026, 11, 26, 3, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    context = dg.build_schedule_context(instance=dagster_instance, scheduled_execution_time=when)
    request = nightly_backup(context)
    assert request.run_key == "nightly-2026-11-26" and request.partition_key is None
    assert request.run_config == {"ops": {"newest_backup": {"config": {"reason": "nightly"}}}}
    assert dagster_instance.get_dynamic_partitions(PARTITIONS.name) == []  # the backup itself adds it
    assert nightly_backup.cron_schedule == "0 3 * * *" and nightly_backup.execution_timezone == "America/Toronto"


def test_verify_job_records_the_check_on_the_picked_partition(every_type_db, local_store, dagster_instance):
    url = _url(every_type_db)
    name = _recorded(_backup(dagster_instance, url, local_store.url, reason="nightly")).partition
    job = _job("verify_backup", url, local_store.url)
    assert job.partitions_def == PARTITIONS  # the Launchpad offers the backups as a partition picker
    result = job.execute_in_process(instance=dagster_instance, partition_key=name)
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == "backup_verified"]
    assert evaluation.passed and evaluation.partition == name
    assert evaluation.description.startswith("restored and matched the manifest")
    table = result.output_for_node("verify_backup_op")
    assert table["tables"]["users"]["checksum_ok"] is True
    assert catalog.resolve(local_store, name).verified


def test_restore_job_picks_a_partition_and_refuses_a_wrong_confirm_cleanly(every_type_db, local_store,
                                                                          dagster_instance, db_conn, tmp_path,
                                                                          monkeypatch):
    drizzle = tmp_path / "drizzle"
    (drizzle / "meta").mkdir(parents=True)
    (drizzle / "meta" / "_journal.json").write_text(json.dumps({"entries": [
        {"idx": 0, "when": 1700000000000, "tag": "0000_first"}, {"idx": 1, "when": 1700000001000, "tag": "0001_second"}]}))
    url = _url(every_type_db)
    picked = _recorded(_backup(dagster_instance, url, local_store.url)).partition
    before = snapshot(every_type_db, every_type_db.database)
    with db_conn.cursor() as cur:
        cur.execute("DELETE FROM enrollments")
    job = _job("restore_database", url, local_store.url)
    assert {k: v for k, v in job.tags.items() if k in DB_WRITE_TAGS} == DB_WRITE_TAGS
    assert job.tags["dagster/max_runtime"] == str(6 * 3600) and job.partitions_def == PARTITIONS
    bad = job.execute_in_process(instance=dagster_instance, raise_on_error=False, partition_key=picked, run_config={
        "ops": {"restore_database_op": {"config": {"confirm": "prod"}}}})
    assert not bad.success
    refusal = _refusal(bad)
    assert failure_text(refusal).startswith(
        f"confirm 'prod' does not match the target database '{every_type_db.database}'; nothing was restored.")
    assert is_refusal(refusal) and refusal.error.stack == [] and refusal.error.cause is None  # the paragraph only
    assert [e.name for e in catalog.list_backups(local_store)] == [picked]  # no pre-restore backup was taken

    job = _job("restore_database", url, local_store.url, drizzle_dir=str(drizzle))  # DRIZZLE_DIR, as the resource has it
    good = job.execute_in_process(instance=dagster_instance, partition_key=picked, run_config={
        "ops": {"restore_database_op": {"config": {"confirm": every_type_db.database}}}})
    out = good.output_for_node("restore_database_op")
    assert out["source"] == picked + ".sql.zst"
    assert out["pre_restore_db"].startswith(every_type_db.database + "__pre_restore_")
    assert snapshot(every_type_db, every_type_db.database) == before
    pre = [e for e in catalog.list_backups(local_store) if e.reason == "pre-restore"]
    assert len(pre) == 1
    [mat] = [e.event_specific_data.materialization for e in good.all_events if e.is_step_materialization]
    assert mat.partition == pre[0].name and mat.partition in dagster_instance.get_dynamic_partitions(PARTITIONS.name)
    assert {r.data["table"]: r.data["rows"] for r in mat.metadata["tables"].records}["enrollments"] == 0
    assert mat.metadata["migration_head"].value == "0001_second"  # the tag, not the hash "bbb"


def test_restore_config_names_the_target_before_confirm(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "mysql://ops:Pa55word@db.example.com:4000/rusing_prod")
    assert configured_target() == "rusing_prod on db.example.com:4000"
    monkeypatch.delenv("DATABASE_URL")  # the resource then uses the documented default; so does the Launchpad
    assert configured_target() == "rusing on 127.0.0.1:3306"
    monkeypatch.setenv("DATABASE_URL", "postgres://nope")
    assert configured_target() == "(DATABASE_URL is malformed: no target database)"
    fields = RestoreDatabaseConfig.model_fields
    assert TARGET in fields["confirm"].description and TARGET in restore_database.description
    assert restore_database.tags[TARGET_TAG] == TARGET  # shown above the Launchpad's config editor
    assert "Pa55word" not in fields["confirm"].description


def test_sensor_makes_the_partitions_equal_to_the_store(every_type_db, local_store, dagster_instance):
    """Backups taken elsewhere (the library, another machine) appear with the same metadata; deleted ones and typed
    names of an older version disappear."""
    url = _url(every_type_db)
    own = _recorded(_backup(dagster_instance, url, local_store.url)).partition
    elsewhere = take_library_backup(every_type_db, local_store, reason="laptop",
                                    now=dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)).manifest.key
    dagster_instance.add_dynamic_partitions(PARTITIONS.name, ["before-upgrade"])  # a typed name (issue 11 item 1)
    defs = _defs(url, local_store.url)
    sensor = defs.get_sensor_def("backup_store_partitions")
    with dg.build_sensor_context(instance=dagster_instance, resources=defs.resources) as context:
        tick = sensor(context)
    assert "reconciled: +1 -1" in tick.skip_message
    name = keys.parse_key(elsewhere).name
    assert sorted(dagster_instance.get_dynamic_partitions(PARTITIONS.name)) == sorted([own, name])
    assert dagster_instance.get_materialized_partitions(ASSET) == {own, name}
    record = dagster_instance.get_latest_materialization_event(ASSET)  # newest event: the one the sensor reported
    md = record.asset_materialization.metadata
    assert record.asset_materialization.partition == name and md["reason"].value == "laptop"
    assert md["dagster/row_count"].value == 3015 and md["taken_at"].value == keys.parse_key(elsewhere).taken_at.timestamp()
    with dg.build_sensor_context(instance=dagster_instance, resources=defs.resources) as context:
        assert "are listed" in sensor(context).skip_message  # nothing changed, nothing reported
    local_store.delete(keys.manifest_key(elsewhere))
    local_store.delete(elsewhere)
    with dg.build_sensor_context(instance=dagster_instance, resources=defs.resources) as context:
        assert "reconciled: +0 -1" in sensor(context).skip_message
    assert dagster_instance.get_dynamic_partitions(PARTITIONS.name) == [own]


def _reconcile(defs, instance) -> str:
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
        return defs.get_sensor_def("backup_store_partitions")(context).skip_message


def test_prune_job_is_a_dry_run_by_default_and_removes_partitions(every_type_db, local_store, dagster_instance):
    url = _url(every_type_db)
    for day in (24, 25, 26):
        take_library_backup(every_type_db, local_store, now=dt.datetime(2026, 11, day, 8, 0, tzinfo=dt.UTC))
    defs = _defs(url, local_store.url)
    assert "+3 -0" in _reconcile(defs, dagster_instance)
    config = {"keep_daily": 1, "keep_weekly": 0, "keep_monthly": 0}
    job = _job("prune_backups", url, local_store.url)
    dry = job.execute_in_process(instance=dagster_instance, run_config={"ops": {"prune_backups_op": {"config": config}}})
    assert dry.output_for_node("prune_backups_op")["to_delete"] == 2
    assert len(catalog.list_backups(local_store)) == 3 and len(dagster_instance.get_dynamic_partitions(PARTITIONS.name)) == 3
    wet = job.execute_in_process(instance=dagster_instance, run_config={
        "ops": {"prune_backups_op": {"config": {**config, "dry_run": False}}}})
    assert wet.output_for_node("prune_backups_op")["deleted"] == 2
    db = every_type_db.database
    assert [e.name for e in catalog.list_backups(local_store)] == [f"backup-{db}-2026-11-26T080000Z"]
    assert dagster_instance.get_dynamic_partitions(PARTITIONS.name) == [f"backup-{db}-2026-11-26T080000Z"]
    [mat_event] = [e for e in wet.all_events if e.event_type_value == "STEP_OUTPUT"]
    shown = mat_event.event_specific_data.metadata["delete"]
    assert sorted(r.data["key"] for r in shown.records) == [f"backup-{db}-2026-11-24T080000Z.sql.zst",
                                                            f"backup-{db}-2026-11-25T080000Z.sql.zst"]


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
    runs = [_backup(dagster_instance, url, local_store.url)]
    assert runs[0].success, "the password user can back up"
    runs.append(_job("restore_database", url, local_store.url).execute_in_process(
        instance=dagster_instance, raise_on_error=False,
        run_config={"ops": {"restore_database_op": {"config": {"confirm": every_type_db.database,
                                                                "pre_restore_backup": False}}}}))
    assert runs[1].success, "the password user can restore (staging and pre-restore databases included)"
    runs.append(_backup(dagster_instance, url.replace(password, password + "-wrong"), local_store.url))
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
    writers = {j.name for j in repo.get_all_jobs() if j.tags.get(DB_WRITE_TAG_KEY)}
    assert writers == {"restore_database"}
    assert {s.name for s in repo.sensor_defs} == {"backup_store_partitions"}
    runtimes = {j.name: int(j.tags["dagster/max_runtime"]) for j in repo.get_all_jobs() if not j.name.startswith("__")}
    assert runtimes == {"backup_database": 4 * 3600, "restore_database": 6 * 3600, "verify_backup": 6 * 3600,
                        "prune_backups": 3600, "check_backup_freshness": 900}
    recovery = dg.Definitions.merge(recovery_defs, dg.Definitions(resources=code_location.resources))
    job = recovery.resolve_job_def("recover_from_data_loss")
    assert job.tags == {**DB_WRITE_TAGS, "dagster/max_runtime": str(8 * 3600), TARGET_TAG: TARGET}
    assert job.partitions_def == PARTITIONS


@pytest.mark.parametrize("age_hours, passed", [(1, True), (30, False)])
def test_freshness_check(every_type_db, local_store, dagster_instance, age_hours, passed):
    taken = dt.datetime.now(dt.UTC) - dt.timedelta(hours=age_hours)
    from rusing_ops.backups.dump import backup_database

    backup_database(every_type_db, local_store, now=taken)
    result = _job("check_backup_freshness", _url(every_type_db), local_store.url).execute_in_process(
        instance=dagster_instance)
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.check_name == "backup_fresh" and evaluation.passed is passed
    assert evaluation.description.startswith(
        f"Newest complete backup of `{every_type_db.database}` {keys.partition_name(taken, database=every_type_db.database)} is {age_hours}.")


def test_backup_verified_executed_without_a_partition_points_to_verify_backup(every_type_db, local_store,
                                                                            dagster_instance):
    """The check's own Execute path without a partition cannot record a partition's result (Dagster 1.13 fails
    inside); it refuses in words instead, pointing to the job that records it, and verifies nothing."""
    url = _url(every_type_db)
    name = _recorded(_backup(dagster_instance, url, local_store.url)).partition
    defs = dg.Definitions.merge(_defs(url, local_store.url), dg.Definitions(jobs=[dg.define_asset_job(
        "execute_backup_verified", selection=dg.AssetSelection.checks(backup_verified))]))
    result = defs.resolve_job_def("execute_backup_verified").execute_in_process(instance=dagster_instance,
                                                                                 raise_on_error=False)
    refusal = _refusal(result)
    assert failure_text(refusal).startswith("backup_verified is recorded per backup by the verify_backup job. "
                                            "Nothing was changed. Next: Jobs")
    assert is_refusal(refusal)
    assert not catalog.resolve(local_store, name).verified


@pytest.mark.parametrize("down", ["database", "store"])
def test_verify_says_it_could_not_run_when_the_database_or_the_store_is_down(every_type_db, local_store,
                                                                            dagster_instance, down, monkeypatch):
    """An outage is not a failed verification: the verify_backup run (what the UI launches on a picked partition)
    fails with "could not run" (alerted: not a refusal), no backup_verified verdict is recorded on the partition and
    the store's verification record stays as it was."""
    from rusing_ops_tests.conftest import free_port

    name = _recorded(_backup(dagster_instance, _url(every_type_db), local_store.url)).partition
    url, store_url = _url(every_type_db), local_store.url
    if down == "database":
        url = f"mysql://{every_type_db.user}@127.0.0.1:{free_port()}/{every_type_db.database}"  # nothing listens
    else:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # an S3 store that is not there
        store_url = "s3://rusing-backups/prod"
    result = _job("verify_backup", url, store_url).execute_in_process(instance=dagster_instance, partition_key=name,
                                                                       raise_on_error=False)
    assert not result.success and result.get_asset_check_evaluations() == []
    failed = _refusal(result)
    text = failure_text(failed)
    assert text.startswith(f"The verification of {name} could not run: "), text
    assert ("Cannot connect to mysql://" if down == "database" else "The backup store s3://rusing-backups/prod") in text
    assert "The backup was not judged: its verification record is unchanged." in text
    assert not is_refusal(failed)  # an outage is an incident: alerted
    assert catalog.resolve(local_store, name).verification is None


def test_a_partition_added_by_hand_is_refused_in_words_and_removed(every_type_db, local_store, dagster_instance,
                                                                   db_conn):
    """Dagster offers "Add a partition" on every dynamic partition set (no setting turns it off): a typed name is
    not a backup, so restore and verify refuse it as an operator's error (the paragraph only, not alerted),
    nothing is restored, and the sensor removes it."""
    url = _url(every_type_db)
    _backup(dagster_instance, url, local_store.url)
    typed = "backup-2026-12-24T000000Z-manual"  # well-formed, and no such backup
    dagster_instance.add_dynamic_partitions(PARTITIONS.name, [typed])
    before = snapshot(every_type_db, every_type_db.database)
    restore = _job("restore_database", url, local_store.url).execute_in_process(
        instance=dagster_instance, partition_key=typed, raise_on_error=False,
        run_config={"ops": {"restore_database_op": {"config": {"confirm": every_type_db.database}}}})
    refused = _refusal(restore)
    assert is_refusal(refused) and refused.error.stack == []
    assert failure_text(refused).startswith(f"Partition {typed} of database_backup is not a backup in "
                                            f"{local_store.url}: it was added by hand")
    assert "Nothing was restored; nothing was changed." in failure_text(refused)
    assert snapshot(every_type_db, every_type_db.database) == before and len(catalog.list_backups(local_store)) == 1
    verify_run = _job("verify_backup", url, local_store.url).execute_in_process(
        instance=dagster_instance, partition_key=typed, raise_on_error=False)
    assert is_refusal(_refusal(verify_run)) and "Nothing was verified" in failure_text(_refusal(verify_run))
    assert "reconciled: +0 -1" in _reconcile(_defs(url, local_store.url), dagster_instance)
    assert typed not in dagster_instance.get_dynamic_partitions(PARTITIONS.name)
