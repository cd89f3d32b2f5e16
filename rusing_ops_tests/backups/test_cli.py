"""`rusing-ops db backup | backups | restore` as an operator runs them: a real process, instance, database, store."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import zstandard

from rusing_ops.backups import catalog
from rusing_ops.core.store import LocalStore

from .conftest import query, snapshot


@pytest.fixture
def cli(every_type_db, database_url_str, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DATABASE_URL": database_url_str, "RUSING_BACKUP_URL": str(tmp_path / "backups"),
           "DAGSTER_HOME": str(home)}

    def run(*args: str, **extra_env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rusing_ops.cli", "db", *args], env={**env, **extra_env},
                              capture_output=True, text=True, timeout=300)

    return run


def test_backup_list_restore(cli, every_type_db, tmp_path):
    before = snapshot(every_type_db, every_type_db.database)
    made = cli("backup", "--reason", "before deploy", "--level", "3")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("backup backup-") and "-before-deploy.sql.zst: 3,015 rows" in made.stdout
    listed = json.loads(cli("backups", "--json").stdout)
    stored = (tmp_path / "backups" / listed[0]["key"]).read_bytes()
    assert zstandard.get_frame_parameters(stored).window_size == 1 << 21  # --level 3 reached zstd (1 would be 19)
    assert [(b["reason"], b["rows"], b["complete"], b["verified"]) for b in listed] == [
        ("before-deploy", 3015, True, False)]
    table = cli("backups").stdout.splitlines()
    assert table[0] == f"backups of `{every_type_db.database}` in {(tmp_path / 'backups').as_uri()}, newest first:"
    assert table[1].split() == ["NAME", "TAKEN_AT", "REASON", "MB", "ROWS", "VERIFIED", "PINNED", "ENCRYPTED",
                                "STATE"]
    assert listed[0]["name"] in table[2] and "3,015" in table[2] and table[2].endswith("complete")

    query(every_type_db, every_type_db.database, "DELETE FROM enrollments")
    refused = cli("restore", "--confirm", "prod")
    assert refused.returncode == 1
    assert f"confirm 'prod' does not match the target database '{every_type_db.database}'" in refused.stderr
    assert "Nothing was changed." in refused.stderr
    done = cli("restore", "--file", listed[0]["name"], "--confirm", every_type_db.database)
    assert done.returncode == 0, done.stderr
    assert f"restored {listed[0]['key']} into `{every_type_db.database}`: 3,015 rows in 6 tables" in done.stdout
    assert "(sha256 and manifest verified)" in done.stdout and "pre-restore backup: backup-" in done.stdout
    assert snapshot(every_type_db, every_type_db.database) == before


def test_restore_plain_file_into_another_database(cli, every_type_db, server_url, tmp_path):
    dump = subprocess.run(["mysqldump", "-h", server_url.host, "-P", str(server_url.port), "-u", server_url.user,
                           "--single-transaction", "--routines", "--triggers", every_type_db.database],
                          check=True, capture_output=True).stdout
    path = tmp_path / "backup-2026-02-15T120000.sql"
    path.write_bytes(dump)
    target = every_type_db.database + "__drill"
    done = cli("restore", "--file", str(path), "--database", target, "--confirm", target)
    assert done.returncode == 0, done.stderr
    assert snapshot(server_url, target) == snapshot(server_url, every_type_db.database)
    assert "pre-restore backup" not in done.stdout  # a new database holds nothing to back up


def test_verify_prune_and_recover(cli, every_type_db, tmp_path):
    def reasons() -> list[str]:  # what `backups --json` lists, read in this process (its output is asserted above)
        return [b.reason for b in catalog.list_backups(LocalStore(tmp_path / "backups"), every_type_db.database)]

    first = cli("backup", "--reason", "old")
    second = cli("backup", "--reason", "new")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    verified = cli("verify")
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith("verified backup-") and "-new.sql.zst: restored into a scratch database, 6 tables" in verified.stdout
    listed = json.loads(cli("backups", "--json").stdout)
    assert [(b["reason"], b["verified"]) for b in listed] == [("new", True), ("old", False)]

    dry = cli("prune", "--keep-daily", "0", "--keep-weekly", "0", "--keep-monthly", "0")
    assert dry.returncode == 0, dry.stderr
    assert f"would delete {listed[1]['key']}" in dry.stdout and "dry run: add --apply to delete" in dry.stdout
    assert reasons() == ["new", "old"]  # nothing deleted
    applied = cli("prune", "--keep-daily", "0", "--keep-weekly", "0", "--keep-monthly", "0", "--apply")
    assert applied.returncode == 0 and f"deleted {listed[1]['key']}" in applied.stdout
    assert reasons() == ["new"]  # the newest verified stays

    before = snapshot(every_type_db, every_type_db.database)
    query(every_type_db, every_type_db.database, "DELETE FROM enrollments")
    refused = cli("recover", "--confirm", "prod")
    assert refused.returncode == 1 and "the app was not stopped and nothing was restored" in refused.stderr
    empty = tmp_path / "no-drizzle-folder"
    empty.mkdir()
    recovered = cli("recover", "--confirm", every_type_db.database, DRIZZLE_DIR=str(empty))
    assert recovered.returncode == 1  # restored, but the schema cannot be validated: the app stays stopped
    assert f"The data was restored, but schema validation of `{every_type_db.database}` found: FOLDER" in recovered.stderr
    assert "The app is left stopped." in recovered.stderr
    assert snapshot(every_type_db, every_type_db.database) == before  # the data itself is back
