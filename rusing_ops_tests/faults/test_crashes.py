"""kill -9 at the instants that matter: a real process (the CLI, or the library in a subprocess) is killed while
it holds the write slot, during a slow DDL statement, just after a statement completed, and at every step of the
restore swap; the next command must neither wedge nor lie about what is in the database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pymysql
import pytest

from rusing_ops.backups import catalog
from rusing_ops.backups.dump import backup_database
from rusing_ops.backups.restore import RestoreRefused, repair, restore_backup
from rusing_ops.backups.swap import JOURNAL, SwapFailed, interrupted_swaps
from rusing_ops.core.database import create_engine
from rusing_ops.core.faults import PAUSE_AT, PAUSE_FILE
from rusing_ops.core.store import LocalStore
from rusing_ops.migrations.applier import ResumeRequired, apply_migrations
from rusing_ops.migrations.planner import PlanRefused
from rusing_ops_tests.backups.conftest import fill_every_type, snapshot

ROOT = Path(__file__).resolve().parents[2]
FIRST_BACKUP = "backups/rot/backup-2026-01-01T000000Z-pre-migration.sql.zst"


def write_folder(path: Path, statements: list[str], tag: str = "0000_crash") -> Path:
    """A Drizzle folder with one migration made of ``statements``."""
    (path / "meta").mkdir(parents=True)
    (path / "meta" / "_journal.json").write_text(json.dumps({"version": "7", "dialect": "mysql", "entries": [
        {"idx": 0, "version": "5", "when": 1700000000000, "tag": tag, "breakpoints": True}]}))
    (path / f"{tag}.sql").write_text("\n--> statement-breakpoint\n".join(statements))
    return path


def rows(url, sql: str, args=None) -> list[tuple]:
    conn = pymysql.connect(**url.pymysql_kwargs(), autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return [tuple(v.decode() if isinstance(v, bytes) else v for v in r) for r in cur.fetchall()]
    finally:
        conn.close()


def wait_for(predicate, what: str, proc: subprocess.Popen | None = None, timeout: float = 120):
    """Poll until ``predicate()`` is truthy (a bound against hanging, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the process ended before {what}: {proc.returncode}\n{out}\n{err}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def kill9(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


_SPAWNED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test():
    """A paused process holds the server-wide write lock: never leave one behind, even when a test fails."""
    yield
    while _SPAWNED:
        proc = _SPAWNED.pop()
        if proc.poll() is None:
            kill9(proc)


def spawn(argv: list[str], env: dict, **kwargs) -> subprocess.Popen:
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, **kwargs)
    _SPAWNED.append(proc)
    return proc


def paused(argv: list[str], env: dict, point: str, tmp_path: Path) -> subprocess.Popen:
    """Start ``argv`` with the test-only pause hook at ``point``; return once the process sits there."""
    marker = tmp_path / f"paused-{point}"
    proc = spawn(argv, {**env, PAUSE_AT: point, PAUSE_FILE: str(marker)})
    wait_for(marker.exists, f"the pause point {point}", proc)
    return proc


def library(code: str, *args: str) -> list[str]:
    """``python -c code args...`` with the repository on the path (the library alone starts in ~1 s)."""
    return [sys.executable, "-c", code, *args]


MIGRATE = """
import sys
from rusing_ops.core.dburl import parse_database_url
from rusing_ops.core.database import create_engine
from rusing_ops.migrations.applier import apply_migrations
url = parse_database_url(sys.argv[1])
apply_migrations(create_engine(url), url, sys.argv[2], backup=lambda reason: sys.argv[3], log=print)
"""


@pytest.fixture
def engine(fresh_db):
    eng = create_engine(fresh_db)
    yield eng
    eng.dispose()


@pytest.fixture
def cli_env(fresh_db, database_url_str, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())  # the project's pools: limit 1, op
    return {**os.environ, "DATABASE_URL": database_url_str, "RUSING_BACKUP_URL": str(tmp_path / "backups"),
            "DAGSTER_HOME": str(home), "PYTHONPATH": str(ROOT)}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rusing_ops.cli", *args]


# ------------------------------------------------------------------------------------------------- migrations


def test_kill_after_a_statement_completed_never_reruns_it(fresh_db, engine, database_url_str, tmp_path):
    """The issue's case: killed after statement 2 (ADD COLUMN) ran but before the audit said so. The rerun used
    to say "statement 1 is applied", rerun statement 2 and fail with ER_DUP_FIELDNAME."""
    folder = write_folder(tmp_path / "drizzle", ["CREATE TABLE `a` (`id` int NOT NULL)",
                                                 "ALTER TABLE `a` ADD `extra` int", "CREATE INDEX `a_extra` ON `a` (`extra`)"])
    proc = paused(library(MIGRATE, database_url_str, str(folder), FIRST_BACKUP), os.environ, "migrate-statement-2-done",
                  tmp_path)
    kill9(proc)
    assert rows(fresh_db, "SELECT statement_started, statements_applied, status FROM rusing_ops_migration_audit") == [
        (2, 1, "running")]
    with pytest.raises(ResumeRequired) as refused:
        apply_migrations(engine, fresh_db, folder, backup=lambda reason: "backups/rot/second.sql.zst")
    text = str(refused.value)
    assert "Migration 0000_crash was interrupted in run " in text
    assert ("its process stopped while statement 2 of 3 was running (`ALTER TABLE `a` ADD `extra` int`); that "
            "statement completed (column `a`.`extra` exists: yes). Statements 1-2 are in the database") in text
    assert "rerun with --resume to continue at statement 3" in text
    assert f"`rusing-ops db restore --file {FIRST_BACKUP} --confirm {fresh_db.database}`" in text
    done = apply_migrations(engine, fresh_db, folder, resume=True, backup=lambda reason: "backups/rot/second.sql.zst")
    assert done.applied == ["0000_crash"] and done.statements_run == 1  # statement 3 only: 2 is not rerun
    assert done.resume_from["statement"] == 3 and done.resume_from["in_flight_applied"] is True
    assert done.restore_key == FIRST_BACKUP and done.backup_key == "backups/rot/second.sql.zst"
    assert rows(fresh_db, "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() "
                          "AND INDEX_NAME = 'a_extra'") == [("extra",)]
    assert rows(fresh_db, "SELECT backup_key, status FROM rusing_ops_migration_audit ORDER BY id") == [
        (FIRST_BACKUP, "running"), (FIRST_BACKUP, "applied")]


def test_kill_before_a_statement_ran_reruns_it(fresh_db, engine, database_url_str, tmp_path):
    folder = write_folder(tmp_path / "drizzle", ["CREATE TABLE `a` (`id` int NOT NULL)",
                                                 "ALTER TABLE `a` ADD `extra` int"])
    kill9(paused(library(MIGRATE, database_url_str, str(folder), FIRST_BACKUP), os.environ, "migrate-statement-2",
                 tmp_path))
    with pytest.raises(ResumeRequired) as refused:
        apply_migrations(engine, fresh_db, folder, no_backup=True)
    assert "that statement did not complete (column `a`.`extra` exists: no). Statements 1-1 are in the database" \
        in str(refused.value)
    done = apply_migrations(engine, fresh_db, folder, resume=True, no_backup=True)
    assert done.statements_run == 1 and done.resume_from["statement"] == 2
    assert rows(fresh_db, "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND "
                          "TABLE_NAME = 'a' ORDER BY ORDINAL_POSITION") == [("id",), ("extra",)]


def test_kill_during_the_first_statement_that_cannot_be_checked_asks_the_operator(fresh_db, engine, database_url_str,
                                                                                tmp_path):
    folder = write_folder(tmp_path / "drizzle", ["UPDATE `t` SET `n` = `n` + 1 WHERE `n` > 0", "ALTER TABLE `t` ADD `m` int"])
    rows(fresh_db, "CREATE TABLE `t` (`n` int)")
    rows(fresh_db, "INSERT INTO `t` VALUES (1)")
    kill9(paused(library(MIGRATE, database_url_str, str(folder), FIRST_BACKUP), os.environ, "migrate-statement-1-done",
                 tmp_path))
    with pytest.raises(ResumeRequired) as refused:
        apply_migrations(engine, fresh_db, folder, no_backup=True)
    text = str(refused.value)
    assert ("statement 1 of 2 was running (`UPDATE `t` SET `n` = `n` + 1 WHERE `n` > 0`); that statement may or may not have "
            "completed (the schema cannot tell for this kind of statement). No statement before it") in text
    audit_id = rows(fresh_db, "SELECT id FROM rusing_ops_migration_audit")[0][0]
    assert (f"if it did, record it with `UPDATE rusing_ops_migration_audit SET statements_applied = 1 WHERE id = "
            f"{audit_id}`; then rerun with --resume") in text
    assert rows(fresh_db, "SELECT n FROM t") == [(2,)]  # it did: the operator records it, as told
    rows(fresh_db, f"UPDATE rusing_ops_migration_audit SET statements_applied = 1 WHERE id = {audit_id}")
    done = apply_migrations(engine, fresh_db, folder, resume=True, no_backup=True)
    assert done.statements_run == 1 and rows(fresh_db, "SELECT n, m FROM t") == [(2, None)]


def test_killed_cli_migrate_during_a_slow_statement_frees_its_slot_and_is_reported(fresh_db, cli_env, tmp_path):
    """kill -9 of `rusing-ops db migrate` while the server runs a 3 s statement: the statement completes on the
    server anyway; the next command frees the dead run's app_db_write slot, says so, and reports the statement as
    completed from the live schema, naming the backup taken before that run's first statement."""
    folder = write_folder(tmp_path / "drizzle", ["CREATE TABLE `a` (`id` int NOT NULL)",
                                                 "CREATE TABLE `slow` AS SELECT SLEEP(3) AS `s`",
                                                 "ALTER TABLE `a` ADD `extra` int"])
    rows(fresh_db, "CREATE TABLE `keep` (`id` int)")  # something to back up
    env = {**cli_env, "DRIZZLE_DIR": str(folder)}
    proc = spawn(cli("db", "migrate"), env)
    wait_for(lambda: rows(fresh_db, "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'CREATE TABLE `slow`%'"),
             "the slow statement to run", proc)
    kill9(proc)
    wait_for(lambda: not rows(fresh_db, "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE "
                                        "'CREATE TABLE `slow`%'"), "the server to finish the orphaned statement")
    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    [dead] = instance.get_runs()
    assert dead.status == dg.DagsterRunStatus.STARTED  # nobody told Dagster: this is what wedged every later write
    assert [s.run_id for s in instance.event_log_storage.get_concurrency_info("app_db_write").claimed_slots] == [dead.run_id]
    first_backup = rows(fresh_db, "SELECT backup_key FROM rusing_ops_migration_audit")[0][0]

    again = subprocess.run(check=False, args=cli("db", "migrate"), env=env, cwd=ROOT, text=True, capture_output=True, timeout=300)
    assert again.returncode == 1, again.stderr
    assert f"freed the app_db_write slot of run {dead.run_id} (migrate_database, STARTED, pid {proc.pid} on " in again.stderr
    assert "its process is gone (killed or crashed); marked the run failed" in again.stderr
    assert ("statement 2 of 3 was running (`CREATE TABLE `slow` AS SELECT SLEEP(3) AS `s``); that statement completed "
            "(table `slow` exists: yes). Statements 1-2 are in the database") in again.stderr
    assert f"restore the pre-migration backup taken before that run's first statement: `rusing-ops db restore --file " \
           f"{first_backup} --confirm {fresh_db.database}`" in again.stderr
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    assert instance.event_log_storage.get_concurrency_info("app_db_write").claimed_slots == []

    engine = create_engine(fresh_db)
    try:  # the resume itself is proven in process above; here: it continues after the completed statement 2
        resumed = apply_migrations(engine, fresh_db, folder, resume=True, no_backup=True)
    finally:
        engine.dispose()
    assert resumed.applied == ["0000_crash"] and resumed.statements_run == 1
    assert resumed.restore_key == first_backup
    assert rows(fresh_db, "SELECT s FROM slow") == [(0,)]
    assert ("extra",) in rows(fresh_db, "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = "
                                        "DATABASE() AND TABLE_NAME = 'a'")


# ------------------------------------------------------------------------------------------------- the swap


RESTORE = """
import sys
from rusing_ops.core.dburl import parse_database_url
from rusing_ops.core.store import LocalStore
from rusing_ops.backups.restore import restore_backup
url = parse_database_url(sys.argv[1])
restore_backup(url, LocalStore(sys.argv[2]), sys.argv[3], pre_restore_backup=sys.argv[4] == "1", log=print)
"""


@pytest.fixture
def swap_case(fresh_db, db_conn, tmp_path):
    """``fresh_db`` with every object type, a backup of it, then a changed live state: (store, key, old, new)."""
    fill_every_type(db_conn)
    store = LocalStore(str(tmp_path / "store"))
    key = backup_database(fresh_db, store, reason="crash").manifest.key
    backed_up = snapshot(fresh_db, fresh_db.database)
    with db_conn.cursor() as cur:
        cur.execute("SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()")
        assert cur.fetchall(), "the fixture must have a trigger for this test to mean anything"
        cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND "
                    "TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME LIMIT 1")
        first = cur.fetchone()[0]
        cur.execute("CREATE TABLE `added_after_backup` (`id` int PRIMARY KEY)")
        cur.execute("INSERT INTO `added_after_backup` VALUES (1)")
    assert first
    return store, key, backed_up, snapshot(fresh_db, fresh_db.database)


@pytest.mark.parametrize("point, outcome", [("swap-before-drop-triggers", "old"), ("swap-before-rename", "old"),
                                            ("swap-after-rename", "new")])
def test_a_kill_anywhere_in_the_swap_is_undone_or_finished(point, outcome, swap_case, fresh_db, database_url_str,
                                                          tmp_path):
    store, key, backed_up, live = swap_case
    proc = paused(library(RESTORE, database_url_str, str(store.root), key, "0"), os.environ, point, tmp_path)
    kill9(proc)
    [(_journal_db, state)] = interrupted_swaps(fresh_db, fresh_db.database)
    assert state == ("renamed" if outcome == "new" else "prepared")
    if point != "swap-before-drop-triggers":  # the damage the journal exists for: triggers (or views) missing
        assert snapshot(fresh_db, fresh_db.database) != (live if outcome == "old" else backed_up)
    lines = repair(fresh_db, fresh_db.database)
    assert len(lines) == 1 and ("undid" if outcome == "old" else "finished") in lines[0]
    assert snapshot(fresh_db, fresh_db.database) == (live if outcome == "old" else backed_up)
    assert interrupted_swaps(fresh_db, fresh_db.database) == []
    assert repair(fresh_db, fresh_db.database) == [
        f"no interrupted swap into `{fresh_db.database}`: nothing to repair, nothing was changed"]
    staging_left = rows(fresh_db, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE %s",
                        (fresh_db.database + "\\_\\_restore\\_%",))
    assert staging_left == []


def test_db_restore_repair_finishes_a_swap_killed_after_its_rename(swap_case, fresh_db, engine, cli_env, tmp_path):
    """kill -9 of `rusing-ops db restore` right after its RENAME: the live database has the restored tables but
    no triggers or views. `db migrate` refuses to build on it; `db restore --repair` frees the dead run's slot and
    finishes the swap."""
    store, key, backed_up, _live = swap_case
    env = {**cli_env, "RUSING_BACKUP_URL": str(store.root)}
    killed = paused(cli("db", "restore", "--file", key, "--confirm", fresh_db.database, "--no-pre-restore-backup"),
                    env, "swap-after-rename", tmp_path)
    kill9(killed)
    assert snapshot(fresh_db, fresh_db.database)["triggers"] == {}  # the live database without its triggers
    with pytest.raises(PlanRefused) as refused:  # nothing is migrated on top of a half-swapped database
        apply_migrations(engine, fresh_db, write_folder(tmp_path / "drizzle", ["CREATE TABLE `m` (`id` int)"]),
                         no_backup=True)
    assert str(refused.value).startswith(f"A restore of `{fresh_db.database}` was killed during its swap (journal `")
    assert f"Next: run `rusing-ops db restore --repair --confirm {fresh_db.database}` first" in str(refused.value)
    done = subprocess.run(check=False, args=cli("db", "restore", "--repair", "--confirm", fresh_db.database),
                          env=env, cwd=ROOT, text=True, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"(restore_database, STARTED, pid {killed.pid} on " in done.stderr and "its process is gone" in done.stderr
    assert done.stdout.startswith("finished the interrupted swap: the target holds the restored copy (journal "
                                  f"`{fresh_db.database}__pre_restore_")
    assert snapshot(fresh_db, fresh_db.database) == backed_up


def test_the_next_restore_repairs_an_interrupted_swap_first(swap_case, fresh_db, database_url_str, tmp_path):
    store, key, backed_up, _live = swap_case
    kill9(paused(library(RESTORE, database_url_str, str(store.root), key, "0"), os.environ,
                 "swap-after-rename", tmp_path))
    said = []
    result = restore_backup(fresh_db, store, key, pre_restore_backup=False, log=said.append)
    assert any(line.startswith(f"an earlier restore of `{fresh_db.database}` was interrupted during its swap; "
                               "finished the interrupted swap") for line in said), said
    assert result.swapped_tables == len(backed_up["tables"])
    assert snapshot(fresh_db, fresh_db.database) == backed_up
    journals = rows(fresh_db, "SELECT TABLE_SCHEMA FROM information_schema.TABLES WHERE TABLE_NAME = %s AND "
                              "TABLE_SCHEMA LIKE %s", (JOURNAL, fresh_db.database + "\\_\\_%"))
    assert len(journals) == 2  # the repaired swap's and this restore's, both kept with the replaced tables
    assert [rows(fresh_db, f"SELECT state FROM `{db}`.`{JOURNAL}`") for (db,) in journals] == [[("done",)]] * 2
    assert interrupted_swaps(fresh_db, fresh_db.database) == []


@pytest.mark.parametrize("when", ["after staging", "after the pre-restore backup"])
def test_a_restore_refuses_to_swap_over_writes_made_while_it_ran(when, swap_case, fresh_db, monkeypatch):
    """A write to the target between the start of the restore and the swap (the app, a migration through another
    Dagster instance, a person) refuses the swap, keeps the write, and leaves no backup `latest` would pick."""
    store, key, _backed_up, live = swap_case
    import rusing_ops.backups.restore as restore_mod

    name = "_stage_new" if when == "after staging" else "backup_live"
    real = getattr(restore_mod, name)

    def then_write(*args, **kwargs):
        out = real(*args, **kwargs)
        rows(fresh_db, "INSERT INTO `added_after_backup` VALUES (2)")
        return out

    monkeypatch.setattr(restore_mod, name, then_write)
    with pytest.raises(RestoreRefused) as refused:
        restore_backup(fresh_db, store, key)
    assert f"`{fresh_db.database}` changed while the restore was running (table `added_after_backup` changed)" \
        in str(refused.value)
    assert "The swap was refused: nothing was restored, those writes are still in" in str(refused.value)
    assert refused.value.data["changes"] == ["table `added_after_backup` changed"]
    assert rows(fresh_db, "SELECT id FROM added_after_backup ORDER BY id") == [(1,), (2,)]
    live["tables"].pop("added_after_backup")
    now = snapshot(fresh_db, fresh_db.database)
    now["tables"].pop("added_after_backup")
    assert now == live  # nothing else moved
    pre_restore = [o.key for o in store.list("") if "-pre-restore." in o.key and o.key.endswith(".manifest.json")]
    assert len(pre_restore) == (0 if when == "after staging" else 1)
    assert catalog.resolve(store, "latest", fresh_db.database).key == key  # never the refused restore's backup
    assert "pre-restore backup" in str(refused.value) if pre_restore else "pre-restore" not in str(refused.value)
    assert rows(fresh_db, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE %s",
                (fresh_db.database + "\\_\\_%",)) == []


def test_a_refused_rename_puts_the_triggers_back_and_leaves_the_target_wholly_old(swap_case, fresh_db, db_conn):
    """The live database has a VIEW where the backup has a table (`empty_table`): MariaDB refuses the RENAME after
    the triggers were dropped; they are put back and the target is exactly as before."""
    store, key, _backed_up, _live = swap_case
    with db_conn.cursor() as cur:
        cur.execute("RENAME TABLE `empty_table` TO `empty_table_v2`")
        cur.execute("CREATE VIEW `empty_table` AS SELECT `id` FROM `empty_table_v2`")
    before = snapshot(fresh_db, fresh_db.database)
    assert before["triggers"]
    with pytest.raises(SwapFailed) as failed:
        restore_backup(fresh_db, store, key, pre_restore_backup=False)
    assert f"RENAME TABLE into `{fresh_db.database}` failed (Table 'empty_table' already exists)" in str(failed.value)
    assert "is unchanged (its triggers were put back) and the loaded copy is dropped" in str(failed.value)
    assert snapshot(fresh_db, fresh_db.database) == before
    assert interrupted_swaps(fresh_db, fresh_db.database) == []
    assert rows(fresh_db, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE %s",
                (fresh_db.database + "\\_\\_%",)) == []
