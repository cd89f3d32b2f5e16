"""The Dagster face: jobs run in process on a real instance with real resources (MariaDB, local backup store)."""

from __future__ import annotations

import dagster as dg
import pytest

from rusing_ops.core.store import LocalStore
from rusing_ops.dagster_support import failure_text, is_refusal
from rusing_ops.migrations.defs import (
    app_database_schema,
    app_database_schema_checks,
    migrate_database,
    migrate_database_on_new_journal_entries,
    plan_migrations,
    validate_schema_job,
)
from rusing_ops.resources import (
    DB_WRITE_TAGS,
    AppResource,
    BackupStoreResource,
    DatabaseResource,
)
from rusing_ops.runbooks.rollback_defs import rollback_migration_job

from .conftest import FAILING_RENAME, migration_rows, query, schema_dump
from .test_rollback import LAST, REVERSE_0004


@pytest.fixture
def resources(database_url_str, tmp_path):
    return {"database": DatabaseResource(url=database_url_str),
            "backup_store": BackupStoreResource(url=str(tmp_path / "backups"))}


def _run(job, resources, instance, config: dict, op: str = "apply_migrations"):
    return job.execute_in_process(run_config={"ops": {op: {"config": config}}}, resources=resources, instance=instance,
                                  raise_on_error=False)


def _failure(result) -> dg.Failure:
    event = next(e for e in result.all_events if e.is_step_failure)
    return event.step_failure_data


def test_migrate_job_takes_a_real_pre_migration_backup_and_applies(resources, dagster_instance, fresh_db, rusing_folder,
                                                                  tmp_path):
    result = _run(migrate_database, resources, dagster_instance, {"drizzle_dir": str(rusing_folder)})
    assert result.success
    assert DB_WRITE_TAGS.items() <= migrate_database.tags.items()
    assert migrate_database.tags["dagster/max_runtime"] == str(4 * 3600)
    out = result.output_for_node("apply_migrations")
    assert len(out["applied"]) == 5 and out["backup_key"].endswith("-pre-migration.sql.zst")
    assert LocalStore(tmp_path / "backups").exists(out["backup_key"])
    [mat] = [e.event_specific_data.materialization for e in result.all_events if e.is_step_materialization]
    assert mat.asset_key == dg.AssetKey("database_backup") and mat.partition == out["backup_key"][: -len(".sql.zst")]
    assert mat.metadata["reason"].value == "pre-migration" and mat.metadata["key"].value == out["backup_key"]
    assert dagster_instance.get_dynamic_partitions("database_backup") == [mat.partition]  # issue 11 item 4
    assert query(fresh_db, "SELECT run_id FROM rusing_ops_migration_audit LIMIT 1") == [(result.run_id,)]


def test_migrate_job_failure_names_statement_and_restore_command(resources, dagster_instance, fresh_db):
    result = _run(migrate_database, resources, dagster_instance, {"drizzle_dir": str(FAILING_RENAME / "drizzle")})
    assert not result.success
    failure = _failure(result)
    text = failure.user_failure_data.description
    assert text.startswith("Migration 0004_drop_hourly_rate_rename_certificates failed at statement 6 of 11: "
                           "ER_WRONG_AUTO_KEY (1075)")
    meta = failure.user_failure_data.metadata
    assert meta["statement_index"].value == 6
    assert meta["restore_command"].value == (f"rusing-ops db restore --file {meta['backup_key'].value} "
                                             f"--confirm {fresh_db.database}")
    assert f"`{meta['restore_command'].value}`" in text
    assert len(migration_rows(fresh_db)) == 4


def _validate(resources, instance, folder):
    job = dg.Definitions(assets=[app_database_schema], asset_checks=[app_database_schema_checks],
                         jobs=[validate_schema_job], resources=resources).resolve_job_def("validate_schema")
    result = _run(job, resources, instance, {"drizzle_dir": str(folder)}, op="app_database_schema_checks")
    return result, {c.check_name: c for c in result.get_asset_check_evaluations()}


def test_dry_run_is_its_own_tagged_job_outside_the_write_pool(resources, dagster_instance, fresh_db, rusing_folder):
    result = _run(plan_migrations, {"database": resources["database"]}, dagster_instance,
                  {"drizzle_dir": str(rusing_folder)}, op="plan_pending_migrations")
    assert result.success and query(fresh_db, "SHOW TABLES") == []
    assert dagster_instance.get_run_by_id(result.run_id).tags["rusing/dry-run"] == "true"  # told apart in Runs
    assert {n.definition.pool for n in plan_migrations.graph.nodes} == {None}
    assert DB_WRITE_TAGS.keys().isdisjoint(plan_migrations.tags)
    plan = result.output_for_node("plan_pending_migrations")["plan"].splitlines()
    first_sql = next(i for i, line in enumerate(plan) if line.startswith("-- ["))
    destructive = [i for i, line in enumerate(plan) if line.startswith("DESTRUCTIVE ")]
    assert destructive and max(destructive) < first_sql  # the warnings come before the ~55 statements
    assert plan[destructive[0]].startswith("DESTRUCTIVE statement ")
    meta = next(e for e in result.all_events if e.event_type_value == "STEP_OUTPUT").event_specific_data.metadata
    assert len(meta["destructive_statements"].records) == len(destructive)
    assert "dry_run" not in migrate_database.graph.nodes[0].definition.config_schema.config_type.fields


def test_validate_schema_records_the_three_checks_and_fails_on_findings(resources, dagster_instance, fresh_db,
                                                                        rusing_folder):
    invalid, checks = _validate(resources, dagster_instance, rusing_folder)
    assert not invalid.success
    assert {n: c.passed for n, c in checks.items()} == {"drizzle_folder_valid": True, "all_migrations_applied": False,
                                                       "no_schema_drift": False}
    assert "PENDING 0000_initial_schema" in _failure(invalid).user_failure_data.description
    assert dagster_instance.get_latest_materialization_event(app_database_schema.key) is not None
    assert _run(migrate_database, resources, dagster_instance, {"drizzle_dir": str(rusing_folder)}).success
    ok, checks = _validate(resources, dagster_instance, rusing_folder)
    assert ok.success and all(c.passed for c in checks.values()) and len(checks) == 3
    assert checks["no_schema_drift"].metadata["report"].value["ok"] is True
    query(fresh_db, "ALTER TABLE `users` ADD `nickname` varchar(40)")
    drifted, checks = _validate(resources, dagster_instance, rusing_folder)
    assert ("DRIFT table `users` column `nickname`: in the database but not in the snapshot (varchar(40))"
            in _failure(drifted).user_failure_data.description)
    assert not checks["no_schema_drift"].passed and checks["all_migrations_applied"].passed


def test_schema_checks_run_alone_without_materializing_the_asset(resources, dagster_instance, fresh_db, rusing_folder):
    """The UI's "Execute" on one check: a run of that check only (can_subset), no materialization."""
    _run(migrate_database, resources, dagster_instance, {"drizzle_dir": str(rusing_folder)})
    key = dg.AssetCheckKey(app_database_schema.key, "no_schema_drift")
    job = dg.define_asset_job("one_check", selection=dg.AssetSelection.checks(key))
    defs = dg.Definitions(assets=[app_database_schema], asset_checks=[app_database_schema_checks], jobs=[job],
                          resources=resources)
    result = defs.resolve_job_def("one_check").execute_in_process(
        instance=dagster_instance,
        run_config={"ops": {"app_database_schema_checks": {"config": {"drizzle_dir": str(rusing_folder)}}}})
    assert result.success
    assert [(c.check_name, c.passed) for c in result.get_asset_check_evaluations()] == [("no_schema_drift", True)]
    assert not any(e.is_step_materialization for e in result.all_events)
    from rusing_ops.definitions import defs as location  # what the UI asks before enabling "Execute"

    graph = location.get_repository_def().asset_graph
    for name in ("drizzle_folder_valid", "all_migrations_applied", "no_schema_drift"):
        check = dg.AssetCheckKey(app_database_schema.key, name)
        assert graph.get_execution_set_asset_and_check_keys(check) == {check}


def test_validate_schema_is_scheduled():
    from rusing_ops.migrations.defs import validate_schema_every_6_hours

    assert validate_schema_every_6_hours.job_name == "validate_schema"
    assert validate_schema_every_6_hours.default_status == dg.DefaultScheduleStatus.RUNNING


def test_schema_asset_and_its_checks(resources, dagster_instance, fresh_db, rusing_folder):
    resources["database"] = DatabaseResource(url=resources["database"].url, drizzle_dir=str(rusing_folder))
    _run(migrate_database, resources, dagster_instance, {"drizzle_dir": str(rusing_folder)})
    query(fresh_db, "ALTER TABLE `users` ADD `nickname` varchar(40)")
    result = dg.materialize([app_database_schema, app_database_schema_checks], resources=resources,
                            instance=dagster_instance, raise_on_error=False)
    assert not result.success  # drift fails the run (so it alerts) after recording the checks
    mat = result.asset_materializations_for_node("app_database_schema")[0]
    assert mat.metadata["tables"].value == 15 and mat.metadata["migrations_recorded"].value == 5
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["drizzle_folder_valid"].passed and checks["all_migrations_applied"].passed
    assert not checks["no_schema_drift"].passed
    assert checks["no_schema_drift"].description == (
        "table `users` column `nickname`: in the database but not in the snapshot (varchar(40))")


def test_sensor_reports_once_per_new_head_and_only_asks_for_a_dry_run(resources, dagster_instance, fresh_db,
                                                                       rusing_folder):
    resources["database"] = DatabaseResource(url=resources["database"].url, drizzle_dir=str(rusing_folder))

    def tick(cursor=None):
        with dg.build_sensor_context(instance=dagster_instance, resources={"database": resources["database"]},
                                     cursor=cursor) as context:
            return migrate_database_on_new_journal_entries(context), context.cursor

    first, cursor = tick()
    assert isinstance(first, dg.RunRequest)
    assert first.run_config == {} and first.tags["rusing/dry-run"] == "true"
    assert migrate_database_on_new_journal_entries.job_name == "plan_migrations"  # not the write-pool job
    assert first.run_key == f"dry-run:{LAST}@1795713194707"
    assert cursor == f"{LAST}@1795713194707"
    again, _ = tick(cursor)
    assert isinstance(again, dg.SkipReason) and "already reported for head" in again.skip_message
    assert query(fresh_db, "SHOW TABLES") == []
    _run(migrate_database, resources, dagster_instance, {"drizzle_dir": str(rusing_folder)})
    done, _ = tick(cursor)
    assert done.skip_message == f"No new journal entries: 5 applied, head {LAST}."


def test_rollback_job_dry_run_then_real(resources, dagster_instance, fresh_db, rusing_folder, tmp_path):
    _run(migrate_database, resources, dagster_instance, {"drizzle_dir": str(rusing_folder)})
    sql_file = tmp_path / "undo.sql"
    sql_file.write_text(REVERSE_0004)
    base = {"migration": LAST, "reverse_sql_file": str(sql_file), "drizzle_dir": str(rusing_folder)}
    resources = {**resources, "app": AppResource()}
    refused = _run(rollback_migration_job, resources, dagster_instance, {**base, "confirm": "production"},
                   op="rollback_migration_op")
    assert not refused.success
    assert failure_text(_failure(refused)).startswith(
        f"confirm 'production' does not match the target database '{fresh_db.database}'; nothing was rolled back. "
        "Nothing was changed.")
    before = schema_dump(fresh_db)
    dry = _run(rollback_migration_job, resources, dagster_instance, {**base, "dry_run": True}, op="rollback_migration_op")
    assert dry.success and schema_dump(fresh_db) == before
    assert [s["status"] for s in dry.output_for_node("rollback_migration_op")["steps"]] == ["planned"] * 7
    real = _run(rollback_migration_job, resources, dagster_instance, {**base, "confirm": fresh_db.database},
                op="rollback_migration_op")
    assert real.success
    steps = real.output_for_node("rollback_migration_op")["steps"]
    assert [s["status"] for s in steps] == ["skipped", "done", "done", "done", "done", "skipped", "skipped"]
    assert steps[1]["detail"].endswith("-pre-rollback.sql.zst")
    assert len(migration_rows(fresh_db)) == 4
    [mat] = [e.event_specific_data.materialization for e in real.all_events if e.is_step_materialization]
    assert mat.partition.endswith("-pre-rollback") and steps[1]["detail"].endswith(mat.partition + ".sql.zst")
    assert mat.metadata["migration_head"].value == LAST  # the tag, looked up in the journal
    assert mat.partition in dagster_instance.get_dynamic_partitions("database_backup")
    assert is_refusal(_failure(refused)) and not _failure(refused).error.stack  # the paragraph only (issue 11)


def test_journal_status_is_read_only_and_names_the_problem(fresh_db, rusing_folder, tmp_path):
    from rusing_ops.core.database import create_engine
    from rusing_ops.migrations.watch import journal_status

    engine = create_engine(fresh_db)
    status = journal_status(engine, fresh_db, rusing_folder)
    assert (status.pending[0], status.pending[-1], status.applied, status.marker) == (
        "0000_initial_schema", LAST, 0, f"{LAST}@1795713194707")
    assert query(fresh_db, "SHOW TABLES") == []  # not even __drizzle_migrations
    broken = journal_status(engine, fresh_db, tmp_path)
    assert broken.pending == [] and broken.summary().startswith(f"Drizzle folder {tmp_path} is not valid: ")
