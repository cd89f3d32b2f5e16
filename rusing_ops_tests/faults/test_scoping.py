"""Issue 8 item 3: a backup belongs to a (server, database). Another database's backups (drills, pre-restore
backups of a scratch copy) never become the app database's `latest`, never count for its freshness, are not
verified in its name, are restored into it only when named with --from-database, and prune keeps per database,
never the newest complete or verified backup of a database, nor a pinned one.

Real MariaDB databases and real stores (local directory and SeaweedFS S3)."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest

from rusing_ops.backups import catalog, keys
from rusing_ops.backups.dump import backup_database
from rusing_ops.backups.restore import restore_backup
from rusing_ops.backups.retention import RetentionPolicy, prune_backups
from rusing_ops.backups.verify import verify_backup
from rusing_ops.core.errors import NotFound
from rusing_ops.core.store import LocalStore
from rusing_ops_tests.backups.conftest import databases_like, query, snapshot
from rusing_ops_tests.conftest import admin_connection, drop_databases_like

UTC = dt.UTC


def at(day: int, hour: int = 3) -> dt.datetime:
    return dt.datetime(2026, 1, day, hour, tzinfo=UTC)


@pytest.fixture
def app_db(fresh_db):
    query(fresh_db, fresh_db.database, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
    query(fresh_db, fresh_db.database, "INSERT INTO t VALUES (1, 'app'), (2, 'app')")
    return fresh_db


@pytest.fixture
def other_db(server_url):
    """A second database on the same server (a drill copy, another app)."""
    name = f"rot_{uuid.uuid4().hex[:10]}"
    conn = admin_connection(server_url)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    conn.close()
    url = server_url.with_database(name)
    query(url, name, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
    query(url, name, "INSERT INTO t VALUES (1, 'other')")
    yield url
    drop_databases_like(server_url, name)


def test_latest_listing_freshness_and_verify_see_only_the_configured_database(app_db, other_db, any_store):
    mine = backup_database(app_db, any_store, reason="nightly", now=at(1)).manifest
    theirs = backup_database(other_db, any_store, reason="drill", now=at(2)).manifest  # newer, another database
    pre = backup_database(app_db, any_store, reason="pre-restore", now=at(3)).manifest  # newest of the app's

    listed = catalog.list_backups(any_store, app_db.database)
    assert [(e.key, e.database) for e in listed] == [(pre.key, app_db.database), (mine.key, app_db.database)]
    assert {e.database for e in catalog.list_backups(any_store)} == {app_db.database, other_db.database}
    assert catalog.resolve(any_store, "latest", app_db.database).key == mine.key  # not the drill, not pre-restore
    assert catalog.resolve(any_store, "latest", other_db.database).key == theirs.key
    assert catalog.resolve(any_store, "latest", app_db.database, include_pre_restore=True).key == pre.key
    fresh = catalog.freshness(any_store, 26, now=at(1, 20), database=app_db.database)
    assert (fresh.ok, fresh.newest.key) == (True, mine.key)
    assert fresh.description.startswith(f"Newest complete backup of `{app_db.database}` {mine.key[:-8]} is 17.0 h")

    result = verify_backup(app_db, any_store, "latest")
    assert result.ok and result.key == mine.key
    assert [e.verified for e in catalog.list_backups(any_store, other_db.database)] == [False]

    with pytest.raises(NotFound) as err:
        catalog.resolve(any_store, "latest", "rot_none")
    assert f"There is no complete backup in {any_store.url} of database `rot_none` (it holds backups of " \
        in str(err.value)


def test_manifest_records_the_server_and_an_old_manifest_still_reads(app_db, local_store):
    made = backup_database(app_db, local_store, now=at(1)).manifest
    assert made.server["address"] == f"{app_db.host}:{app_db.port}"
    assert made.server["hostname"] and "server_id" in made.server
    entry = catalog.resolve(local_store, "latest", app_db.database)
    assert entry.server.startswith(f"{app_db.host}:{app_db.port} (")
    assert entry.summary()["server"] == entry.server and entry.summary()["database"] == app_db.database

    old = json.loads(local_store.get_bytes(keys.manifest_key(made.key)))
    del old["server"]  # a manifest written before this field existed
    local_store.put_bytes(keys.manifest_key(made.key), json.dumps(old).encode())
    entry = catalog.resolve(local_store, "latest", app_db.database)
    assert entry.complete and entry.server is None and entry.database == app_db.database


def test_a_backup_of_another_database_is_restored_only_when_named(app_db, other_db, local_store, server_url):
    theirs = backup_database(other_db, local_store, reason="drill", now=at(2)).manifest
    before = snapshot(server_url, app_db.database)
    with pytest.raises(catalog.OtherDatabase) as err:
        restore_backup(app_db, local_store, theirs.key, pre_restore_backup=False)
    assert str(err.value) == (
        f"Backup {theirs.key} was taken from database `{other_db.database}`, not `{app_db.database}`; it was not "
        f"restored. Nothing was changed. Next: restore a backup of `{app_db.database}` (`rusing-ops db backups` lists "
        f"the backups), or, to put `{other_db.database}`'s data into `{app_db.database}` on purpose, add "
        f"`--from-database {other_db.database}`.")
    with pytest.raises(catalog.OtherDatabase, match="--from-database names `nope`"):
        restore_backup(app_db, local_store, theirs.key, pre_restore_backup=False, from_database="nope")
    with pytest.raises(NotFound, match=f"of database `{app_db.database}`"):
        restore_backup(app_db, local_store, "latest", pre_restore_backup=False)  # the app has no backup
    assert snapshot(server_url, app_db.database) == before
    assert databases_like(server_url, app_db.database + "__") == []

    lines: list[str] = []
    restore_backup(app_db, local_store, "latest", pre_restore_backup=False, from_database=other_db.database,
                   log=lines.append)
    assert f"note: restoring a backup of database `{other_db.database}` into `{app_db.database}` (allowed by " \
           "--from-database)" in lines
    assert query(app_db, app_db.database, "SELECT id, v FROM t") == [(1, "other")]


def test_prune_keeps_per_database_and_never_the_newest_verified_or_pinned(app_db, other_db, local_store):
    app = [backup_database(app_db, local_store, reason=r, now=at(d)).manifest.key
           for d, r in ((1, "nightly"), (2, "pre-migration"), (3, "nightly"), (4, "nightly"))]
    other = [backup_database(other_db, local_store, reason="drill", now=at(d)).manifest.key for d in (5, 6)]
    catalog.record_verification(local_store, app[0], {"ok": True})
    assert [p["why"] for p in catalog.read_pins(local_store, app[1])] == [
        "pre-migration backup: the migration's failure report and rollback advice point to it"]
    policy = RetentionPolicy(daily=1, weekly=0, monthly=0)  # one backup per day across all databases, before

    scoped = prune_backups(local_store, policy, dry_run=False, database=app_db.database)
    assert scoped.deleted == [app[2]]
    assert scoped.keep == {app[3]: ["daily", "newest complete"], app[0]: ["newest verified"],
                           app[1]: ["pinned: pre-migration backup: the migration's failure report and rollback advice "
                                    "point to it"]}
    name = keys.parse_key(app[1]).name
    assert (f"kept {name}: pinned (pre-migration backup: the migration's failure report and rollback advice point to "
            f"it) — `rusing-ops db unpin {name}` releases it") in scoped.lines(dry_run=False)
    assert [e.key for e in catalog.list_backups(local_store, other_db.database)] == other[::-1]  # untouched

    everyone = prune_backups(local_store, policy, dry_run=False)
    assert everyone.deleted == [other[0]]
    assert sorted(e.key for e in catalog.list_backups(local_store)) == sorted([app[0], app[1], app[3], other[1]])

    catalog.unpin(local_store, name)
    assert not catalog.resolve(local_store, name).pinned
    assert prune_backups(local_store, policy, dry_run=False, database=app_db.database).deleted == [app[1]]
    with pytest.raises(NotFound, match="is not pinned"):
        catalog.unpin(local_store, keys.parse_key(app[3]).name)


def test_prune_of_only_old_backups_keeps_each_databases_newest(app_db, other_db, local_store):
    mine = backup_database(app_db, local_store, now=at(1)).manifest.key
    theirs = backup_database(other_db, local_store, now=at(2)).manifest.key
    plan = prune_backups(local_store, RetentionPolicy(daily=0, weekly=0, monthly=0), dry_run=False)
    assert plan.deleted == []
    assert plan.keep == {mine: ["newest complete"], theirs: ["newest complete"]}


def test_cli_drill_restore_needs_from_database_and_says_whose_backup_it_was(app_db, database_url_str, tmp_path):
    import os
    import subprocess
    import sys

    store_dir = tmp_path / "backups"
    made = backup_database(app_db, LocalStore(store_dir), now=at(1)).manifest
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DATABASE_URL": database_url_str, "RUSING_BACKUP_URL": str(store_dir),
           "DAGSTER_HOME": str(home)}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rusing_ops.cli", "db", "restore", *args], env=env,
                              capture_output=True, text=True, timeout=300)

    drill = app_db.database + "__drill"
    latest = cli("--database", drill, "--confirm", drill)
    assert latest.returncode == 1
    assert (f"There is no complete backup in {store_dir.as_uri()} of database `{drill}` (it holds backups of "
            f"`{app_db.database}`: `db backups --all-databases`). Nothing was changed.") in latest.stderr
    named = cli("--file", made.key, "--database", drill, "--confirm", drill)
    assert named.returncode == 1
    assert f"was taken from database `{app_db.database}`, not `{drill}`; it was not restored." in named.stderr
    assert f"add `--from-database {app_db.database}`" in named.stderr
    assert databases_like(app_db, drill) == []

    done = cli("--database", drill, "--from-database", app_db.database, "--confirm", drill)
    assert done.returncode == 0, done.stderr
    assert f"restored {made.key} into `{drill}`: 2 rows in 1 tables" in done.stdout
    assert f"note: this was a backup of database `{app_db.database}`, restored into `{drill}`" in done.stdout
    assert query(app_db, drill, "SELECT id, v FROM t ORDER BY id") == [(1, "app"), (2, "app")]
