"""Rollback runbook (§2) against the real MariaDB, a real app stand-in, and real stop/restart commands."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from rusing_ops.core.app import AppControl
from rusing_ops.core.database import create_engine
from rusing_ops.core.errors import ConfirmMismatch
from rusing_ops.migrations.applier import apply_migrations
from rusing_ops.migrations.folder import read_folder
from rusing_ops.runbooks.rollback import RollbackFailed, RollbackRefused, rollback_migration

from .conftest import copy_folder, migration_rows, query, schema_dump

REVERSE_0004 = (Path(__file__).parent / "data" / "reverse_0004.sql").read_text()
LAST = "0004_drop_hourly_rate_rename_path_courses"
BEFORE_LAST = ["0000_initial_schema", "0001_add_availability_certificates", "0002_add_timezone_primary_coach",
               "0003_backfill_timezone_and_primary_coach"]


@pytest.fixture
def migrated(fresh_db, engine, rusing_folder, tmp_path):
    """fresh_db fully migrated, plus `<db>__prev` migrated to 0003 only: the schema a rollback must give back."""
    apply_migrations(engine, fresh_db, rusing_folder, no_backup=True, force=True)
    prev_url = fresh_db.with_database(f"{fresh_db.database}__prev")
    query(fresh_db, f"CREATE DATABASE `{prev_url.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    prev_engine = create_engine(prev_url)
    apply_migrations(prev_engine, prev_url, copy_folder(rusing_folder, tmp_path / "prev", only=BEFORE_LAST),
                     no_backup=True, force=True)
    prev_engine.dispose()
    return prev_url


def _app(app_stand_in, tmp_path) -> tuple[AppControl, Path]:
    log = tmp_path / "app_commands.log"
    cmd = f"{shlex.quote(sys.executable)} -c \"import sys; open({str(log)!r}, 'a').write(sys.argv[1] + '\\n')\""
    return AppControl(app_stand_in.base_url, stop_command=f"{cmd} stop", restart_command=f"{cmd} restart"), log


def test_rollback_of_the_last_migration_restores_schema_rows_and_folder(fresh_db, engine, rusing_folder, migrated,
                                                                        app_stand_in, tmp_path):
    app, log = _app(app_stand_in, tmp_path)
    backups = []
    result = rollback_migration(engine, fresh_db, rusing_folder, LAST, reverse_sql=REVERSE_0004,
                                confirm=fresh_db.database, app=app,
                                backup=lambda reason: backups.append(reason) or "b/pre-rollback.sql.zst")
    assert [s.status for s in result.steps] == ["done"] * 7
    assert result.steps[4].detail.endswith("; 4 journal entries = 4 SQL files")
    assert backups == ["pre-rollback"] and log.read_text() == "stop\nrestart\n"
    assert ("GET", "/api/health") in app_stand_in.requests
    ours, previous = schema_dump(fresh_db), schema_dump(migrated)
    ours.pop("rusing_ops_migration_audit"), previous.pop("rusing_ops_migration_audit")
    assert ours == previous
    assert migration_rows(fresh_db) == migration_rows(migrated)
    folder = read_folder(rusing_folder)
    assert [m.tag for m in folder.migrations] == BEFORE_LAST
    assert not (rusing_folder / f"{LAST}.sql").exists() and not (rusing_folder / "meta" / "0004_snapshot.json").exists()
    assert apply_migrations(engine, fresh_db, rusing_folder, no_backup=True).plan.pending == []


def test_dry_run_lists_every_step_and_changes_nothing(fresh_db, engine, rusing_folder, migrated, app_stand_in, tmp_path):
    app, log = _app(app_stand_in, tmp_path)
    before = schema_dump(fresh_db), migration_rows(fresh_db), (rusing_folder / "meta" / "_journal.json").read_bytes()
    result = rollback_migration(engine, fresh_db, rusing_folder, LAST, reverse_sql=REVERSE_0004, confirm=None,
                                dry_run=True, app=app)
    assert (schema_dump(fresh_db), migration_rows(fresh_db),
            (rusing_folder / "meta" / "_journal.json").read_bytes()) == before
    assert not log.exists() and app_stand_in.requests == []
    lines = "\n".join(result.lines())
    assert lines.startswith(f"DRY RUN: rollback of {LAST} on {fresh_db.database}\n1. stop the app: planned - run `")
    assert "4. delete the __drizzle_migrations row: planned - DELETE FROM `__drizzle_migrations` WHERE id = 5" in lines
    assert f'-      "tag": "{LAST}",' in lines
    assert f"7. verify health: planned - GET {app_stand_in.base_url}/api/health" in lines


def test_refusals_before_anything_is_touched(fresh_db, engine, rusing_folder, migrated):
    with pytest.raises(ConfirmMismatch) as err:
        rollback_migration(engine, fresh_db, rusing_folder, LAST, reverse_sql=REVERSE_0004, confirm="prod", no_backup=True)
    assert str(err.value) == (f"confirm 'prod' does not match the target database '{fresh_db.database}'; nothing was "
                              f"rolled back. Nothing was changed. Next: set confirm to '{fresh_db.database}' "
                              f"(`--confirm {fresh_db.database}`).")
    with pytest.raises(RollbackRefused) as err:
        rollback_migration(engine, fresh_db, rusing_folder, "0002_add_timezone_primary_coach", reverse_sql="SELECT 1;",
                           confirm=fresh_db.database, no_backup=True)
    assert "Only the last applied migration can be rolled back" in str(err.value)
    assert len(migration_rows(fresh_db)) == 5


def test_failing_reverse_sql_stops_and_reports(fresh_db, engine, rusing_folder, migrated):
    with pytest.raises(RollbackFailed) as err:
        rollback_migration(engine, fresh_db, rusing_folder, LAST, confirm=fresh_db.database, no_backup=True,
                           reverse_sql="ALTER TABLE `coaches` ADD `hourlyRateCents` int;\nALTER TABLE `nope` DROP `x`;")
    assert err.value.data["statement_index"] == 2
    assert "Statements 1-1 are applied; the __drizzle_migrations row and the journal are unchanged" in str(err.value)
    assert len(migration_rows(fresh_db)) == 5 and (rusing_folder / f"{LAST}.sql").exists()
