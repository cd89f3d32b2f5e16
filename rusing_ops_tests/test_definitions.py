"""The code location loads and holds exactly the jobs, schedules, sensors and assets the runbook needs, each
described for the operator reading the UI."""

import dagster as dg

from rusing_ops.definitions import defs

EXPECTED_JOBS = {
    "health_check", "backup_database", "restore_database", "verify_backup", "prune_backups", "check_backup_freshness",
    "recover_from_data_loss", "migrate_database", "validate_schema", "rollback_migration", "reconcile_webhook_events",
    "retry_webhook_event", "sweep_stripe_events", "report_webhook_processing_stats", "check_coach_accounts",
    "setup_webhook_tables", "plan_migrations", "generate_migrations", "restore_to_time", "archive_binlogs", "undo_changes",
    "run_restore_drill", "check_backup_store_immutable",
}
EXPECTED_SCHEDULES = {"health_check_every_5_minutes", "nightly_backup", "backup_freshness_schedule", "stripe_event_sweep",
                      "validate_schema_every_6_hours", "restore_drill_schedule", "backup_store_immutable_daily",
                      "retention_schedule"}
EXPECTED_SENSORS = {"alert_on_run_failure", "free_slots_of_dead_cli_runs", "failed_webhook_events", "migrate_database_on_new_journal_entries",
                    "backup_store_partitions", "archive_binlogs_when_the_server_moved"}
EXPECTED_ASSETS = {"database_backup", "newest_backup", "restore_drill", "binlog_archive", "app_database_schema", "webhook_processing_stats", "rusing_app", "app_database",
                   "stripe_account"}


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)


def test_expected_names_are_present():
    repo = defs.get_repository_def()
    jobs = {j.name for j in repo.get_all_jobs() if not j.name.startswith("__")}
    assert jobs == EXPECTED_JOBS
    assert {s.name for s in repo.schedule_defs} == EXPECTED_SCHEDULES
    assert {s.name for s in repo.sensor_defs} == EXPECTED_SENSORS
    assert {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()} == EXPECTED_ASSETS


def test_schedules_and_sensors_that_protect_data_run_by_default():
    repo = defs.get_repository_def()
    running = {d.name for d in [*repo.schedule_defs, *repo.sensor_defs]
               if d.default_status is not None and d.default_status.value == "RUNNING"}
    assert {"nightly_backup", "backup_freshness_schedule", "health_check_every_5_minutes", "stripe_event_sweep",
            "alert_on_run_failure", "failed_webhook_events", "migrate_database_on_new_journal_entries",
            "backup_store_partitions"} <= running


def test_everything_has_a_description():
    repo = defs.get_repository_def()
    missing = [j.name for j in repo.get_all_jobs() if not j.name.startswith("__") and not j.description]
    missing += [s.name for s in repo.schedule_defs if not s.description]
    missing += [s.name for s in repo.sensor_defs if not s.description]
    graph = repo.asset_graph
    missing += [k.to_user_string() for k in graph.get_all_asset_keys() if not graph.get(k).description]
    assert missing == []


def test_db_writing_jobs_share_the_tag_and_pool():
    from rusing_ops.resources import DB_WRITE_POOL, DB_WRITE_TAG_KEY

    repo = defs.get_repository_def()
    writers = [j for j in repo.get_all_jobs() if j.tags.get(DB_WRITE_TAG_KEY)]
    assert {j.name for j in writers} == {"migrate_database", "restore_database", "rollback_migration",
                                         "recover_from_data_loss", "setup_webhook_tables", "restore_to_time",
                                         "undo_changes"}
    for job in writers:
        pools = {node.definition.pool for node in job.graph.nodes if getattr(node.definition, "pool", None)}
        assert pools == {DB_WRITE_POOL}, job.name


def test_every_run_config_field_has_a_description():
    repo = defs.get_repository_def()
    missing = []
    for job in repo.get_all_jobs():
        for node in job.graph.iterate_op_defs():
            schema = node.config_schema
            config_type = schema.config_type if schema is not None else None
            for name, field in (getattr(config_type, "fields", None) or {}).items():
                if not field.description:
                    missing.append(f"{job.name}.{node.name}.{name}")
    assert sorted(set(missing)) == []


def test_library_modules_import_no_dagster():
    """Dagster layer thin, library thick: only defs.py, the CLI and the resources may import Dagster."""
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parent.parent / "rusing_ops"
    allowed = {"defs.py", "cli.py", "resources.py", "definitions.py", "cli_support.py", "dagster_support.py"}
    offenders = []
    for path in package.rglob("*.py"):
        if path.name in allowed or path.name.endswith("_defs.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "dagster" or n.startswith(("dagster.", "dagster_")) for n in names):
                offenders.append(str(path.relative_to(package)))
    assert offenders == []


def test_the_module_holds_one_definitions_object():
    """`dagster dev` / `dagster-webserver` refuse a module with more than one module-scope Definitions."""
    import rusing_ops.definitions as module

    assert [name for name, value in vars(module).items() if isinstance(value, dg.Definitions)] == ["defs"]
    assert defs.executor is dg.in_process_executor
