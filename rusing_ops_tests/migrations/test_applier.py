"""Planner + applier against the real MariaDB: byte-compatible with drizzle-orm, safer where drizzle is silent."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import pytest

from rusing_ops.core.database import named_lock
from rusing_ops.core.errors import LockBusy
from rusing_ops.migrations.applier import DB_WRITE_LOCK, MigrationFailed, ResumeRequired, apply_migrations
from rusing_ops.migrations.folder import FolderInvalid
from rusing_ops.migrations.planner import PlanRefused
from rusing_ops.resources import DB_WRITE_LOCK as RESOURCES_LOCK

from .conftest import (
    EDGE,
    FAILING_RENAME,
    RUSING,
    copy_folder,
    fixture_dir,
    migration_rows,
    query,
    reference_show_create,
    replay_drizzle_log,
    schema_dump,
    use_general_ci,
)
from .test_folder import CORRUPTIONS

OURS = "rusing_ops_migration_audit"


def _without_audit(dump: dict) -> dict:
    return {k: v for k, v in dump.items() if k != OURS}


def test_lock_name_is_the_shared_write_lock():
    assert DB_WRITE_LOCK == RESOURCES_LOCK


def test_fresh_database_gets_drizzles_rows_and_schema(fresh_db, engine):
    use_general_ci(fresh_db)
    result = apply_migrations(engine, fresh_db, fixture_dir("drizzle-rusing/drizzle"), no_backup=True, force=True)
    assert result.applied == [m.tag for m in result.plan.folder.migrations]
    assert migration_rows(fresh_db) == json.loads((RUSING / "reference" / "migrations_table_rows.json").read_text())
    assert _without_audit(schema_dump(fresh_db)) == reference_show_create(RUSING / "reference" / "show_create_tables.sql")
    audit = query(fresh_db, f"SELECT migration, statements_total, statements_applied, status FROM `{OURS}` ORDER BY id")
    assert audit == [("0000_initial_schema", 34, 34, "applied"), ("0001_add_availability_certificates", 7, 7, "applied"),
                     ("0002_add_timezone_primary_coach", 3, 3, "applied"),
                     ("0003_backfill_timezone_and_primary_coach", 2, 2, "applied"),
                     ("0004_drop_hourly_rate_rename_path_courses", 9, 9, "applied")]
    again = apply_migrations(engine, fresh_db, fixture_dir("drizzle-rusing/drizzle"), no_backup=True)
    assert again.plan.pending == [] and again.applied == []


def test_continues_a_database_half_migrated_by_drizzle(fresh_db, engine):
    use_general_ci(fresh_db)
    replay_drizzle_log(fresh_db, RUSING / "reference" / "migrator_query_log.jsonl", migrations=3)
    assert len(migration_rows(fresh_db)) == 3
    calls = []
    result = apply_migrations(engine, fresh_db, fixture_dir("drizzle-rusing/drizzle"),
                              backup=lambda reason: calls.append(reason) or SimpleNamespace(key="k/pre.sql.zst"))
    assert calls == ["pre-migration"] and result.backup_key == "k/pre.sql.zst"
    assert result.applied == ["0003_backfill_timezone_and_primary_coach", "0004_drop_hourly_rate_rename_path_courses"]
    assert migration_rows(fresh_db) == json.loads((RUSING / "reference" / "migrations_table_rows.json").read_text())
    assert _without_audit(schema_dump(fresh_db)) == reference_show_create(RUSING / "reference" / "show_create_tables.sql")


def test_failing_rename_stops_where_drizzle_stopped_and_says_so(fresh_db, engine):
    use_general_ci(fresh_db)
    expected = json.loads((FAILING_RENAME / "reference" / "apply_result.json").read_text())["error"]
    key = "backups/prod/backup-2026-11-26T200000Z-pre-migration.sql.zst"
    with pytest.raises(MigrationFailed) as err:
        apply_migrations(engine, fresh_db, FAILING_RENAME / "drizzle", backup=lambda reason: key)
    e = err.value
    assert (e.data["migration"], e.data["statement_index"], e.data["statements_applied"]) == (
        "0004_drop_hourly_rate_rename_certificates", 6, 5)
    assert (e.data["code"], e.data["errno"], e.data["sql_state"], e.data["server_message"], e.data["statement"]) == (
        expected["code"], expected["errno"], expected["sqlState"], expected["sqlMessage"], expected["sql"])
    assert e.data["applied_migrations"] == ["0000_initial_schema", "0001_add_availability_certificates",
                                            "0002_add_timezone_primary_coach", "0003_backfill_timezone_and_primary_coach"]
    assert e.data["restore_command"] == f"rusing-ops db restore --file {key} --confirm {fresh_db.database}"
    assert str(e) == (
        "Migration 0004_drop_hourly_rate_rename_certificates failed at statement 6 of 11: ER_WRONG_AUTO_KEY (1075) "
        "Incorrect table definition; there can be only one auto column and it must be defined as a key\n"
        "Statement: ALTER TABLE `course_certificates` DROP PRIMARY KEY;\n"
        "Already in the database: statements 1-5 of 0004_drop_hourly_rate_rename_certificates are applied (committed); "
        "migrations recorded by this run: 0000_initial_schema, 0001_add_availability_certificates, "
        "0002_add_timezone_primary_coach, 0003_backfill_timezone_and_primary_coach. "
        "0004_drop_hourly_rate_rename_certificates is not recorded in __drizzle_migrations. "
        f"Next: restore the pre-migration backup with `rusing-ops db restore --file {key} --confirm {fresh_db.database}`, "
        "or fix the database by hand and rerun `rusing-ops db migrate --resume` to continue at statement 6.")
    assert migration_rows(fresh_db) == json.loads((FAILING_RENAME / "reference" / "migrations_table_rows.json").read_text())
    assert _without_audit(schema_dump(fresh_db)) == reference_show_create(
        FAILING_RENAME / "reference" / "show_create_tables.sql")
    assert query(fresh_db, f"SELECT statements_applied, status, failed_statement FROM `{OURS}` ORDER BY id DESC LIMIT 1") == [
        (5, "failed", expected["sql"])]
    with pytest.raises(ResumeRequired) as again:
        apply_migrations(engine, fresh_db, FAILING_RENAME / "drizzle", no_backup=True, force=True)
    assert str(again.value).startswith(
        "Migration 0004_drop_hourly_rate_rename_certificates stopped at statement 6 of 11 in run ")
    assert "Next: fix the cause, then rerun with --resume to continue at statement 6, or restore the pre-migration " \
           f"backup taken before that run's first statement: `rusing-ops db restore --file {key} --confirm {fresh_db.database}` (if you undid" in str(again.value)


def test_resume_continues_at_the_failing_statement_only_when_asked(fresh_db, engine, tmp_path):
    folder = copy_folder(EDGE / "ddl-then-failure" / "drizzle", tmp_path / "drizzle")
    with pytest.raises(MigrationFailed) as err:
        apply_migrations(engine, fresh_db, folder, no_backup=True)
    assert (err.value.data["migration"], err.value.data["statement_index"], err.value.data["errno"]) == (
        "0001_fails_midway", 2, 1064)
    fixed = folder / "0001_fails_midway.sql"
    fixed.write_text(fixed.read_text().replace("THIS IS NOT SQL;", "SELECT 1;"))
    with pytest.raises(ResumeRequired):
        apply_migrations(engine, fresh_db, folder, no_backup=True)
    result = apply_migrations(engine, fresh_db, folder, no_backup=True, resume=True)
    assert result.applied == ["0001_fails_midway"] and result.statements_run == 2
    assert result.resume_from["statement"] == 2 and "file_changed" in result.resume_from
    assert [t for (t,) in query(fresh_db, "SHOW TABLES")] == ["__drizzle_migrations", "rusing_ops_migration_audit",
                                                              "t0", "t1", "t2"]
    rows = migration_rows(fresh_db)
    assert [r["created_at"] for r in rows] == [1700000000000, 1700000001000]


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupted_folder_is_refused_before_the_database_is_touched(case, fresh_db, engine, rusing_folder):
    CORRUPTIONS[case][0](rusing_folder)
    with pytest.raises(FolderInvalid):
        apply_migrations(engine, fresh_db, rusing_folder, no_backup=True, force=True)
    assert query(fresh_db, "SHOW TABLES") == []


def test_two_concurrent_runs_never_interleave(fresh_db, engine):
    outcomes, barrier = [], threading.Barrier(2)

    def run():
        barrier.wait()
        try:
            outcomes.append(apply_migrations(engine, fresh_db, fixture_dir("drizzle-rusing/drizzle"), no_backup=True,
                                             force=True, lock_timeout_s=60).applied)
        except Exception as exc:  # recorded and asserted below
            outcomes.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(o) for o in outcomes) == [0, 5]
    assert len(migration_rows(fresh_db)) == 5
    audit = query(fresh_db, f"SELECT run_id, started_at, finished_at FROM `{OURS}` ORDER BY id")
    assert len(audit) == 5 and len({r[0] for r in audit}) == 1


def test_busy_lock_is_refused_naming_the_holder_and_changes_nothing(fresh_db, engine):
    with named_lock(engine, fresh_db, DB_WRITE_LOCK) as holder:
        holder_id = holder.exec_driver_sql("SELECT CONNECTION_ID()").scalar()
        with pytest.raises(LockBusy) as err:
            apply_migrations(engine, fresh_db, fixture_dir("drizzle-rusing/drizzle"), no_backup=True, force=True,
                             lock_timeout_s=0.2)
        # a dry run takes no lock, so it still works while another run holds it
        assert len(apply_migrations(engine, fresh_db, fixture_dir("drizzle-rusing/drizzle"), dry_run=True).plan.pending) == 5
    assert f"is held by connection {holder_id}" in str(err.value)
    assert query(fresh_db, "SHOW TABLES") == []


def test_dry_run_changes_nothing(fresh_db, engine):
    replay_drizzle_log(fresh_db, RUSING / "reference" / "migrator_query_log.jsonl", migrations=2)
    before = schema_dump(fresh_db), migration_rows(fresh_db)
    calls = []
    result = apply_migrations(engine, fresh_db, fixture_dir("drizzle-rusing/drizzle"), dry_run=True,
                              backup=lambda r: calls.append(r), log=calls.append)
    assert (schema_dump(fresh_db), migration_rows(fresh_db)) == before
    assert "pre-migration" not in calls
    assert [m.tag for m in result.plan.pending] == ["0002_add_timezone_primary_coach",
                                                     "0003_backfill_timezone_and_primary_coach",
                                                     "0004_drop_hourly_rate_rename_path_courses"]
    text = result.plan_text()
    assert "ALTER TABLE `coaches` DROP COLUMN `hourlyRateCents`;" in text
    assert "DESTRUCTIVE statement 9: DROP COLUMN coaches.hourlyRateCents (its data is deleted)" in text
    empty = apply_migrations(engine, fresh_db.with_database(fresh_db.database), fixture_dir("drizzle-rusing/drizzle"),
                             dry_run=True, no_backup=True)
    assert empty.refusals and empty.refusals[0].startswith("Refusing to run a destructive plan without a backup")


def test_destructive_plan_refuses_no_backup_unless_forced(fresh_db, engine):
    with pytest.raises(PlanRefused) as err:
        apply_migrations(engine, fresh_db, fixture_dir("drizzle-rusing/drizzle"), no_backup=True)
    assert "0004_drop_hourly_rate_rename_path_courses statement 1: DROP TABLE certificates" in str(err.value)
    assert str(err.value).endswith("Nothing was changed. Next: drop --no-backup (a pre-migration backup is then taken), "
                                   "or add --force to run it anyway.")
    assert query(fresh_db, "SHOW TABLES") == []


def test_entries_drizzle_would_skip_and_edited_files_are_refused(fresh_db, engine, tmp_path):
    # branch B (a later `when`) was deployed first; branch A's older entry lands before it in the merged journal
    src = fixture_dir("drizzle-rusing/drizzle")
    deployed = copy_folder(src, tmp_path / "deployed", only=["0000_initial_schema", "0001_add_availability_certificates",
                                                              "0002_add_timezone_primary_coach",
                                                              "0004_drop_hourly_rate_rename_path_courses"])
    apply_migrations(engine, fresh_db, deployed, no_backup=True, force=True)
    with pytest.raises(PlanRefused) as err:
        apply_migrations(engine, fresh_db, src, no_backup=True, force=True)
    assert ("0003_backfill_timezone_and_primary_coach.sql: journal entry (when 1795713143938) is not after the last "
            "applied migration (created_at 1795713194707) and was never applied; drizzle-orm skips it silently, forever"
            ) in str(err.value)
    ok = apply_migrations(engine, fresh_db, src, no_backup=True, accept_skipped=True)
    assert ok.applied == [] and [m.tag for m in ok.plan.skipped] == ["0003_backfill_timezone_and_primary_coach"]

    edited = copy_folder(src, tmp_path / "edited", only=["0000_initial_schema", "0001_add_availability_certificates",
                                                          "0002_add_timezone_primary_coach",
                                                          "0004_drop_hourly_rate_rename_path_courses"])
    path = edited / "0001_add_availability_certificates.sql"
    path.write_bytes(path.read_bytes() + b"\n-- reviewed")
    with pytest.raises(PlanRefused) as err:
        apply_migrations(engine, fresh_db, edited, no_backup=True)
    assert "0001_add_availability_certificates.sql: edited after it was applied: file hash" in str(err.value)
    assert apply_migrations(engine, fresh_db, edited, no_backup=True, force=True).applied == []


def test_automatic_rollback_calls_restore_after_releasing_the_lock(fresh_db, engine):
    restored = []

    def restore(key):
        with named_lock(engine, fresh_db, DB_WRITE_LOCK, timeout_s=1):  # would time out if still held
            restored.append(key)

    with pytest.raises(MigrationFailed) as err:
        apply_migrations(engine, fresh_db, FAILING_RENAME / "drizzle", backup=lambda r: "b/pre.sql.zst",
                         restore=restore, auto_rollback=True)
    assert restored == ["b/pre.sql.zst"] and err.value.data["rolled_back"] is True
    assert "Automatic rollback: the pre-migration backup b/pre.sql.zst was restored." in str(err.value)


def test_out_of_order_and_edited_refused_then_accepted_like_drizzle(fresh_db, engine):
    case = EDGE / "out-of-order-and-edited"
    reference = json.loads((case / "reference" / "result.json").read_text())
    apply_migrations(engine, fresh_db, RUSING / "drizzle", no_backup=True, force=True)
    assert migration_rows(fresh_db) == reference["phase1"]["rows_after"]
    with pytest.raises(FolderInvalid) as err:
        apply_migrations(engine, fresh_db, case / "drizzle", no_backup=True)
    assert "`when` does not increase: entry '0005_older_than_last'" in str(err.value)
    with pytest.raises(PlanRefused) as err:
        apply_migrations(engine, fresh_db, case / "drizzle", no_backup=True, accept_skipped=True)
    assert "0002_add_timezone_primary_coach.sql: edited after it was applied" in str(err.value)
    result = apply_migrations(engine, fresh_db, case / "drizzle", no_backup=True, accept_skipped=True, force=True)
    assert [m.tag for m in result.plan.skipped] == ["0005_older_than_last", "0006_equal_to_last"]
    assert result.applied == ["0007_newer_than_last"]
    assert migration_rows(fresh_db) == reference["rows_after"]


@pytest.mark.parametrize("case, failing", [("ddl-then-failure", ("0001_fails_midway", 2)),
                                           ("dml-then-failure", ("0001_dml_then_fail", 2))])
def test_failures_leave_what_drizzle_left(case, failing, fresh_db, engine):
    reference = json.loads((EDGE / case / "reference" / "result.json").read_text())
    with pytest.raises(MigrationFailed) as err:
        apply_migrations(engine, fresh_db, EDGE / case / "drizzle", no_backup=True)
    assert (err.value.data["migration"], err.value.data["statement_index"]) == failing
    assert (err.value.data["errno"], err.value.data["statement"]) == (reference["apply"]["error"]["errno"],
                                                                      reference["apply"]["error"]["sql"])
    assert migration_rows(fresh_db) == reference["rows_after"]
    tables = sorted(t for (t,) in query(fresh_db, "SHOW TABLES") if t != OURS)
    assert tables == sorted(reference["tables_after"])
    if "t0_rows_after" in reference:
        assert [str(v) for (v,) in query(fresh_db, "SELECT * FROM t0")] == reference["t0_rows_after"]


def test_dml_only_batch_is_committed_statement_by_statement_and_reported(fresh_db, engine):
    # drizzle-orm rolls this batch back (no DDL in it); here every statement commits and the report says so.
    case = EDGE / "dml-only-batch-failure"
    apply_migrations(engine, fresh_db, case / "drizzle-phase1", no_backup=True)
    with pytest.raises(MigrationFailed) as err:
        apply_migrations(engine, fresh_db, case / "drizzle", no_backup=True)
    assert err.value.data["applied_migrations"] == ["0001_insert_one"]
    assert "statements 1-1 of 0002_insert_two_then_fail are applied (committed)" in str(err.value)
    assert [v for (v,) in query(fresh_db, "SELECT * FROM t0 ORDER BY 1")] == [1, 2]
    assert len(migration_rows(fresh_db)) == 2


def test_comment_only_custom_migration_is_applied_as_drizzle_did(fresh_db, engine):
    case = EDGE / "custom-unedited-comment-only"
    apply_migrations(engine, fresh_db, case / "drizzle", no_backup=True)
    assert migration_rows(fresh_db) == json.loads((case / "reference" / "result.json").read_text())["rows_after"]


@pytest.mark.parametrize("case", ["trailing-breakpoint", "utf8-bom", "no-breakpoints-genuine", "hash-bytes"])
def test_folders_drizzle_fails_on_midway_are_refused_up_front(case, fresh_db, engine):
    with pytest.raises(FolderInvalid):
        apply_migrations(engine, fresh_db, EDGE / case / "drizzle", no_backup=True, force=True)
    assert query(fresh_db, "SHOW TABLES") == []


def test_failed_backup_stops_before_anything_is_applied(fresh_db, engine):
    def broken(reason):
        raise OSError("No space left on device")

    with pytest.raises(Exception) as err:
        apply_migrations(engine, fresh_db, fixture_dir("drizzle-rusing/drizzle"), backup=broken)
    assert str(err.value) == ("The pre-migration backup failed, so no migration was applied: OSError: No space left on "
                              "device. Nothing was changed. Next: fix the backup store (RUSING_BACKUP_URL) and rerun, "
                              "or rerun with --no-backup deliberately.")
    assert query(fresh_db, "SHOW TABLES") == []


EFFECT_CASES = [  # (setup, statement): before it runs the schema says "not applied", after it "applied"
    ([], "CREATE TABLE `e1` (`id` int NOT NULL PRIMARY KEY)"),
    (["CREATE TABLE `e2` (`id` int)"], "DROP TABLE `e2`;"),
    (["CREATE TABLE `e3` (`id` int)"], "RENAME TABLE `e3` TO `e3b`"),
    (["CREATE TABLE `e4` (`id` int)"], "ALTER TABLE `e4` ADD `extra` int"),
    (["CREATE TABLE `e5` (`id` int, `old` int)"], "ALTER TABLE `e5` DROP COLUMN `old`"),
    (["CREATE TABLE `e6` (`id` int, `a` int)"], "ALTER TABLE `e6` RENAME COLUMN `a` TO `b`"),
    (["CREATE TABLE `e7` (`id` int, `a` int)"], "CREATE INDEX `e7_a` ON `e7` (`a`)"),
    (["CREATE TABLE `e8` (`id` int, `a` int, KEY `e8_a` (`a`))"], "DROP INDEX `e8_a` ON `e8`"),
    (["CREATE TABLE `p9` (`id` int PRIMARY KEY)", "CREATE TABLE `e9` (`id` int, `p` int)"],
     "ALTER TABLE `e9` ADD CONSTRAINT `e9_p_fk` FOREIGN KEY (`p`) REFERENCES `p9`(`id`)"),
    (["CREATE TABLE `p10` (`id` int PRIMARY KEY)",
      "CREATE TABLE `e10` (`id` int, `p` int, CONSTRAINT `e10_p_fk` FOREIGN KEY (`p`) REFERENCES `p10`(`id`))"],
     "ALTER TABLE `e10` DROP FOREIGN KEY `e10_p_fk`"),
]


@pytest.mark.parametrize("setup, statement", EFFECT_CASES, ids=[c[1][:40] for c in EFFECT_CASES])
def test_statement_effect_reads_the_live_schema(setup, statement, fresh_db, engine):
    from rusing_ops.migrations.effect import statement_effect

    for sql in setup:
        query(fresh_db, sql)
    with engine.connect() as conn:
        assert statement_effect(conn, statement).applied is False
        query(fresh_db, statement)
        after = statement_effect(conn, statement)
    assert after.applied is True and after.evidence.endswith(": yes" if "DROP" not in statement.upper() else ": no")


def test_statement_effect_does_not_guess(fresh_db, engine):
    from rusing_ops.migrations.effect import statement_effect

    with engine.connect() as conn:
        for sql in ("UPDATE `t` SET `a` = 1 WHERE `b` = 2", "ALTER TABLE `t` MODIFY COLUMN `a` bigint",
                    "INSERT INTO `t` VALUES (1)", "ALTER TABLE `t` ADD PRIMARY KEY (`a`)"):
            assert statement_effect(conn, sql).applied is None, sql


def test_an_audit_table_from_before_the_in_flight_column_is_upgraded(fresh_db, engine, tmp_path):
    from rusing_ops.migrations.audit import CREATE_AUDIT_TABLE

    query(fresh_db, CREATE_AUDIT_TABLE.replace("  `statement_started` int NULL,\n", ""))
    folder = copy_folder(EDGE / "ddl-then-failure" / "drizzle", tmp_path / "drizzle")
    with pytest.raises(MigrationFailed):
        apply_migrations(engine, fresh_db, folder, no_backup=True)
    assert query(fresh_db, f"SELECT migration, statement_started, statements_applied, status FROM `{OURS}` ORDER BY id") \
        == [("0000_ok", 1, 1, "applied"), ("0001_fails_midway", 2, 1, "failed")]
