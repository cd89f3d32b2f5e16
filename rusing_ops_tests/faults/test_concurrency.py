"""Two writers at once: a second `db migrate` says whom it waits for, sleeps, stops on SIGTERM, gives up after
RUSING_WRITE_WAIT_S; a restore holds the database write lock from its first step to its swap."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from rusing_ops.backups.dump import backup_database
from rusing_ops.core.database import create_engine
from rusing_ops.core.errors import LockBusy
from rusing_ops.core.store import LocalStore
from rusing_ops.migrations.applier import apply_migrations

from .test_crashes import (
    RESTORE,
    ROOT,
    _no_process_outlives_its_test,
    cli,
    cli_env,
    engine,
    kill9,
    library,
    paused,
    rows,
    spawn,
    wait_for,
    write_folder,
)

__all__ = ["_no_process_outlives_its_test", "cli_env", "engine"]  # fixtures shared with test_crashes


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Lines:
    """Collects a process's stderr lines as they come."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[str] = []
        self.thread = threading.Thread(target=lambda: self.lines.extend(iter(proc.stderr.readline, "")), daemon=True)
        self.thread.start()

    def text(self) -> str:
        return "".join(self.lines)


def test_a_second_migrate_says_whom_it_waits_for_sleeps_stops_and_gives_up(fresh_db, cli_env, tmp_path):
    folder = write_folder(tmp_path / "drizzle", ["CREATE TABLE `a` (`id` int NOT NULL)",
                                                 "ALTER TABLE `a` ADD `extra` int"])
    env = {**cli_env, "DRIZZLE_DIR": str(folder)}
    # paused inside its step, holding the slot (not yet the server-wide GET_LOCK, which other tests share)
    holder = paused(cli("db", "migrate", "--no-backup"), env, "migrate-before-lock", tmp_path)
    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    [held] = instance.get_runs()

    waiter = spawn(cli("db", "migrate", "--no-backup"), env)  # waits as long as it takes; stopped below
    err = Lines(waiter)
    gave_up = subprocess.run(check=False, args=cli("db", "migrate", "--no-backup"), env={**env, "RUSING_WRITE_WAIT_S": "2"},
                             cwd=ROOT, text=True, capture_output=True, timeout=300)
    assert gave_up.returncode == 1
    assert (f"waiting for the database write slot (app_db_write): held by run {held.run_id} (migrate_database, "
            f"STARTED, pid {holder.pid} on {socket.gethostname()}, since ") in gave_up.stderr
    assert "waiting up to 2 s (RUSING_WRITE_WAIT_S); Ctrl-C stops waiting and changes nothing" in gave_up.stderr
    assert f"error: Gave up after 2 s waiting for the database write slot (app_db_write), held by run {held.run_id}" \
        in gave_up.stderr
    assert "Nothing was changed. Next: wait for that run to finish and rerun this command" in gave_up.stderr
    assert rows(fresh_db, "SHOW TABLES") == []  # neither waiter touched the database

    wait_for(lambda: "waiting for the database write slot" in err.text() or waiter.poll() is not None,
             "the waiter to say it waits")
    assert waiter.poll() is None, err.text()
    before = cpu_seconds(waiter.pid)
    time.sleep(2)
    spent = cpu_seconds(waiter.pid) - before
    assert spent < 0.5, f"a waiting command must sleep, not spin: {spent:.2f} s of CPU in 2 s"
    waiter.send_signal(signal.SIGTERM)
    assert waiter.wait(60) == 130
    err.thread.join(10)
    assert "error: Stopped while waiting for the database write slot (app_db_write). Nothing was changed." in err.text()
    pending = instance.event_log_storage.get_concurrency_info("app_db_write").pending_steps
    assert [p.run_id for p in pending] == [held.run_id]  # the stopped waiter withdrew its claim

    holder.send_signal(signal.SIGTERM)  # SIGTERM stops a running command the way Ctrl-C does
    assert holder.wait(60) == 1
    assert "error: step apply_migrations failed: interrupted (Ctrl-C or SIGTERM). What it had done up to then is " \
           "in its log; rerun the command" in holder.stderr.read()
    assert instance.get_run_by_id(held.run_id).status == dg.DagsterRunStatus.FAILURE
    assert instance.event_log_storage.get_concurrency_info("app_db_write").claimed_slots == []
    engine = create_engine(fresh_db)
    try:  # nothing had run: a plain rerun applies everything (the CLI path is the kill -9 test's)
        assert apply_migrations(engine, fresh_db, folder, no_backup=True).applied == ["0000_crash"]
    finally:
        engine.dispose()


def test_a_restore_holds_the_write_lock_from_start_to_swap(fresh_db, engine, database_url_str, db_conn, tmp_path):
    """A migration started while a restore loads its staging copy waits for the lock (and is refused after its
    timeout) instead of running and being undone by the swap; a killed restore's lock dies with its connection."""
    with db_conn.cursor() as cur:
        cur.execute("CREATE TABLE `keep` (`id` int PRIMARY KEY)")
        cur.execute("INSERT INTO `keep` VALUES (1), (2)")
    store = LocalStore(tmp_path / "store")
    key = backup_database(fresh_db, store, reason="base").manifest.key
    folder = write_folder(tmp_path / "drizzle", ["ALTER TABLE `keep` ADD `extra` int"])
    restore = paused(library(RESTORE, database_url_str, str(store.root), key, "1"), os.environ, "restore-staged",
                     tmp_path)
    with pytest.raises(LockBusy) as busy:
        apply_migrations(engine, fresh_db, folder, no_backup=True, lock_timeout_s=0.5)
    assert f"Database lock 'rusing_ops.app_db_write.{fresh_db.database}'" in str(busy.value) and "is held by connection" in str(busy.value)
    assert rows(fresh_db, "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND "
                          "COLUMN_NAME = 'extra'") == [(0,)]
    kill9(restore)
    applied = wait_for(lambda: _try_migrate(engine, fresh_db, folder), "the killed restore's lock to go")
    assert applied == ["0000_crash"]
    assert rows(fresh_db, "SELECT id FROM `keep` ORDER BY id") == [(1,), (2,)]


def _try_migrate(engine, url, folder):
    try:
        return apply_migrations(engine, url, folder, no_backup=True, lock_timeout_s=0.5).applied
    except LockBusy:  # the server notices the dead connection within moments
        return None
