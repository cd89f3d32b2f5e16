"""One CLI pattern: every verb that prints a result takes `--json` and prints one JSON object (a list for `db backups`),
failures included (`{"ok": false, "error": ...}` on stdout, the paragraph on stderr). In process through
`rusing_ops.cli.main`, against a fresh database, a temporary instance and store (Dagster runs in process)."""

from __future__ import annotations

import argparse
import json

import pytest

from rusing_ops import cli
from rusing_ops_tests.migrations.conftest import copy_folder, fixture_dir

# Verbs that print no result of their own: none. (Every verb is listed here or prints JSON with --json.)
NO_RESULT: set[str] = set()


def _verbs(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(words, parser) of every leaf verb of the command line."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for name, sub in subs[0].choices.items():
        yield from _verbs(sub, (*prefix, name))


def _rows(conn, sql: str) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def test_every_verb_takes_json():
    verbs = dict(_verbs(cli.build_parser()))
    assert len(verbs) >= 20  # the whole command line was walked
    missing = [" ".join(words) for words, p in verbs.items()
               if " ".join(words) not in NO_RESULT and "--json" not in p._option_string_actions]
    assert missing == []


@pytest.fixture
def run(database_url_str, tmp_path, monkeypatch, capsys):
    """``run(*argv) -> (exit code, parsed stdout, stderr)`` with this test's environment; the code location is
    imported afresh (it reads the environment when it loads) and dropped afterwards."""
    import sys

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    drizzle = copy_folder(fixture_dir("drizzle-rusing/drizzle"), tmp_path / "app" / "drizzle")
    for name in ("STRIPE_SECRET_KEY", "APP_BASE_URL", "RUSING_BACKUP_RECIPIENTS", "RUSING_BACKUP_COPY_URL",
                 "RUSING_BACKUP_IDENTITY", "RUSING_BACKUP_LOCK_DAYS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"DAGSTER_HOME": str(home), "DATABASE_URL": database_url_str,
                        "RUSING_BACKUP_URL": str(tmp_path / "backups"), "DRIZZLE_DIR": str(drizzle)}.items():
        monkeypatch.setenv(name, value)
    sys.modules.pop("rusing_ops.definitions", None)

    def invoke(*argv: str):
        code = cli.main([*argv, "--json"])
        out = capsys.readouterr()
        return code, json.loads(out.out), out.err

    yield invoke
    sys.modules.pop("rusing_ops.definitions", None)


def test_each_verb_prints_its_result_as_json(run, fresh_db, db_conn, tmp_path):
    with db_conn.cursor() as cur:
        cur.execute("CREATE TABLE lessons (id INT PRIMARY KEY, title VARCHAR(40))")
        cur.executemany("INSERT INTO lessons VALUES (%s, %s)", [(i, f"lesson {i}") for i in range(1, 8)])

    code, made, _ = run("db", "backup", "--reason", "json")
    assert code == 0 and made["ok"] is True and made["dagster/row_count"] == 7 and made["key"].endswith("-json.sql.zst")
    code, listed, _ = run("db", "backups")
    assert code == 0 and [(b["key"], b["rows"]) for b in listed] == [(made["key"], 7)]
    code, verified, _ = run("db", "verify")
    assert code == 0 and verified["key"] == made["key"] and verified["run_id"]

    with db_conn.cursor() as cur:
        cur.execute("DELETE FROM lessons WHERE id > 2")
    code, restored, _ = run("db", "restore", "--file", made["key"], "--confirm", fresh_db.database)
    assert code == 0 and (restored["ok"], restored["rows"], restored["target"]) == (True, 7, fresh_db.database)
    assert _rows(db_conn, "SELECT COUNT(*) FROM lessons") == [(7,)]
    assert restored["pre_restore_backup"]  # the live database (2 rows) was backed up first, and pinned
    code, unpinned, _ = run("db", "unpin", restored["pre_restore_backup"])
    assert code == 0 and unpinned["pins"]

    code, pruned, _ = run("db", "prune")
    assert code == 0 and pruned["dry_run"] is True and pruned["kept"] >= 1

    code, planned, _ = run("db", "migrate", "--dry-run")
    assert code == 0 and planned["ok"] is True and "plan" in planned
    code, report, _ = run("db", "validate")
    assert code == 1 and report["ok"] is False and len(report["pending"]) == 5  # nothing applied yet: a finding

    code, recovered, _ = run("db", "recover", "--file", made["key"], "--confirm", fresh_db.database,
                             "--no-pre-restore-backup")
    # restored, then stopped by schema validation (this database has none of the folder's migrations): the JSON
    # failure names what was done and the next command
    assert (code, recovered["ok"]) == (1, False) and recovered["run_id"]
    assert "The data was restored, but schema validation" in recovered["error"]
    assert "PENDING 0000_initial_schema" in recovered["error"] and "rusing-ops db migrate" in recovered["error"]
    assert _rows(db_conn, "SELECT COUNT(*) FROM lessons") == [(7,)]

    code, stats, _ = run("webhooks", "status")
    assert (stats["total"], stats["failed"]) == (0, 0) and stats["ok"] is (code == 0)

    code, health, _ = run("health")
    assert {row["check"] for row in health["checks"]} and health["ok"] is (code == 0)

    code, init, _ = run("instance", "init", "--home", str(tmp_path / "other_home"))
    assert code == 0 and init["backend"] == "sqlite" and init["home"] == str(tmp_path / "other_home")


def test_a_failure_is_json_too(run):
    code, out, err = run("webhooks", "retry", "evt_json_missing")  # no Stripe key configured: the run fails
    assert code == 1 and out["ok"] is False and out["run_id"]
    assert err.startswith("error: ") and out["error"] in err
    assert "dagster._core" not in out["error"]  # the paragraph, not Dagster's class path
    code, out, err = run("db", "restore", "--confirm", "not-this-one")  # refused by the restore job
    assert code == 1 and out["ok"] is False and "does not match the target database" in out["error"]
    assert "Nothing was changed." in out["error"]


def test_progress_is_drawn_by_rich_on_a_terminal_only(capsys):
    from rusing_ops.cli_support import progress_bar
    from rusing_ops.core import progress

    with progress_bar():  # stderr is not a terminal here: nothing drawn, no listener left behind
        progress.Progress("dump", total=10).advance(10)
    assert capsys.readouterr().err == "" and progress._listeners == []

    with progress_bar(force=True) as bars:
        work = progress.Progress("dump users", total=40)
        for _ in range(4):
            work.advance(10, nbytes=1000)
        work.finish()
        [task] = bars.tasks
        assert (task.description, task.completed, task.total) == ("dump users", 40, 40)
    err = capsys.readouterr().err
    assert "dump users" in err and "100%" in err and "40/40 rows" in err
    assert progress._listeners == []
