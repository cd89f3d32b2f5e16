"""Real mariadb-dump / mysqldump files, made in the test with their common flags, restore into another database:
the rows come back equal to the source, and neither the dumped database nor any other database is touched.

Before confine.py, `--add-drop-database --databases X` dropped X itself (the load ran the file's DROP DATABASE on
the server) and qualified names reached other databases.
"""

from __future__ import annotations

import contextlib
import gzip
import subprocess
import uuid

import pytest
import zstandard

from rusing_ops.backups.restore import restore_backup
from rusing_ops_tests.backups.conftest import (
    databases_like,
    fill_every_type,
    query,
    snapshot,
)
from rusing_ops_tests.conftest import admin_connection, drop_databases_like

# The write lock is one GET_LOCK for the whole server: other suites' restores on this shared server must not make
# these tests wait (the lock itself is tested in test_failures.py / test_concurrency.py).
NO_LOCK = contextlib.nullcontext
SENTINEL_ROWS = [(1, "keep me"), (2, "and me")]


def _create(server_url, name: str) -> None:
    conn = admin_connection(server_url)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    conn.close()


@pytest.fixture(scope="module")
def source_db(server_url):
    """A database holding every column type, views, a function, a procedure, a trigger and an event."""
    import pymysql

    name = f"rot_src_{uuid.uuid4().hex[:8]}"
    _create(server_url, name)
    url = server_url.with_database(name)
    conn = pymysql.connect(**url.pymysql_kwargs(), autocommit=True)
    fill_every_type(conn)
    with conn.cursor() as cur:
        cur.execute("CREATE EVENT nightly_cleanup ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM audit_no_pk "
                    "WHERE happened_at < '2000-01-01'")
    conn.close()
    yield url
    drop_databases_like(server_url, name)


@pytest.fixture(scope="module")
def sentinel_db(server_url):
    """An unrelated database that no restore may change."""
    name = f"rot_sentinel_{uuid.uuid4().hex[:8]}"
    _create(server_url, name)
    url = server_url.with_database(name)
    query(url, name, "CREATE TABLE t (id INT PRIMARY KEY, note VARCHAR(40))")
    query(url, name, "INSERT INTO t VALUES (%s, %s), (%s, %s)", [v for row in SENTINEL_ROWS for v in row])
    yield url
    drop_databases_like(server_url, name)


def mariadb_dump(url, *flags: str, databases: bool = False, binary: str = "mariadb-dump") -> bytes:
    cmd = [binary, "-h", url.host, "-P", str(url.port), "-u", url.user, *flags]
    cmd += ["--databases", url.database] if databases else [url.database]
    return subprocess.run(cmd, check=True, capture_output=True).stdout


def rows_of(url, database: str) -> dict:
    """Every table's rows in key order (the values as the server returns them)."""
    out = {}
    for (table,) in query(url, database, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                                         "AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1", (database,)):
        out[table] = sorted(query(url, database, f"SELECT * FROM `{table}`"), key=repr)
    return out


def events_of(url, database: str) -> list:
    return query(url, database, "SELECT EVENT_NAME, EVENT_DEFINITION FROM information_schema.EVENTS "
                                "WHERE EVENT_SCHEMA = %s", (database,))


DUMPS = {
    # name: (flags, --databases, compression, binary)
    "add-drop-database, databases, routines, events, triggers, gzip": (
        ["--single-transaction", "--add-drop-database", "--routines", "--events", "--triggers"], True, "gz",
        "mariadb-dump"),
    "hex-blob, complete-insert, routines, zstd": (
        ["--single-transaction", "--hex-blob", "--complete-insert", "--routines", "--events"], False, "zst",
        "mysqldump"),
    "databases, hex-blob, plain": (["--databases", "--hex-blob", "--routines", "--triggers"], False, "", "mysqldump"),
}


@pytest.mark.parametrize("case", list(DUMPS))
def test_a_real_dump_restores_into_another_database_and_touches_nothing_else(
        case, source_db, sentinel_db, fresh_db, local_store, server_url, tmp_path):
    flags, databases, compression, binary = DUMPS[case]
    if "--databases" in flags:  # the flag before the name, as operators type it
        flags, databases = [f for f in flags if f != "--databases"], True
    dump = mariadb_dump(source_db, *flags, databases=databases, binary=binary)
    path = tmp_path / ("dump.sql" + (f".{compression}" if compression else ""))
    path.write_bytes(gzip.compress(dump) if compression == "gz" else
                     zstandard.ZstdCompressor().compress(dump) if compression == "zst" else dump)
    source_before = snapshot(server_url, source_db.database)
    source_rows = rows_of(server_url, source_db.database)
    sentinel_before = snapshot(server_url, sentinel_db.database)
    schemas_before = set(databases_like(server_url, ""))

    result = restore_backup(fresh_db, local_store, str(path), pre_restore_backup=False, lock=NO_LOCK)

    assert result.target == fresh_db.database
    assert rows_of(server_url, fresh_db.database) == source_rows
    restored = snapshot(server_url, fresh_db.database)
    assert restored["views"] == source_before["views"]
    assert restored["triggers"] == source_before["triggers"]
    assert restored["routines"] == source_before["routines"]
    assert {t: v[1] for t, v in restored["tables"].items()} == {t: v[1] for t, v in source_before["tables"].items()}
    if "--events" in flags:
        assert events_of(server_url, fresh_db.database) == events_of(server_url, source_db.database) != []
    # the dumped database and an unrelated one are exactly as they were; no database disappeared
    assert snapshot(server_url, source_db.database) == source_before
    assert rows_of(server_url, source_db.database) == source_rows
    assert snapshot(server_url, sentinel_db.database) == sentinel_before
    # (other tests create and drop their own databases meanwhile: the ones this test owns, and the system ones)
    assert {source_db.database, sentinel_db.database, "mysql", "information_schema"} <= set(
        databases_like(server_url, "")) & schemas_before
    assert databases_like(server_url, fresh_db.database + "__restore") == []


def test_dump_of_the_target_itself_with_add_drop_database_keeps_it_until_the_swap(source_db, server_url, local_store,
                                                                                    tmp_path):
    """The reported case: `--add-drop-database --databases X` restored into X dropped X before the pre-restore
    backup and then said "Nothing was changed"."""
    dump = mariadb_dump(source_db, "--single-transaction", "--add-drop-database", "--routines", "--triggers",
                        databases=True)
    path = tmp_path / "self.sql.gz"
    path.write_bytes(gzip.compress(dump))
    rows = rows_of(server_url, source_db.database)
    before = snapshot(server_url, source_db.database)
    result = restore_backup(source_db, local_store, str(path), pre_restore_backup=True, lock=NO_LOCK)
    try:
        assert result.pre_restore_backup is not None  # the live database still had its tables when it was taken
        assert rows_of(server_url, source_db.database) == rows
        after = snapshot(server_url, source_db.database)
        assert after["routines"] == before["routines"] and after["views"] == before["views"]
        kept = result.pre_restore_db
        assert kept
        kept_rows = {t: r for t, r in rows_of(server_url, kept).items() if not t.startswith("_rusing_ops")}
        assert kept_rows == rows  # the replaced tables, intact (beside the swap's own journal)
    finally:
        drop_databases_like(server_url, source_db.database + "__pre_restore")  # keep the module's source clean


def test_data_only_dump_replaces_the_rows_and_keeps_the_targets_schema(source_db, fresh_db, local_store, server_url,
                                                                       tmp_path):
    """`--no-create-info` (with its triggers): the target's tables, views and triggers are kept, its rows replaced."""
    full = tmp_path / "full.sql"
    full.write_bytes(mariadb_dump(source_db, "--routines", "--triggers"))
    restore_backup(fresh_db, local_store, str(full), pre_restore_backup=False, lock=NO_LOCK)
    query(fresh_db, fresh_db.database, "DELETE FROM enrollments")
    query(fresh_db, fresh_db.database, "UPDATE users SET name = 'changed'")
    data = tmp_path / "data-only.sql.gz"
    data.write_bytes(gzip.compress(mariadb_dump(source_db, "--no-create-info", "--hex-blob", "--complete-insert")))
    before = snapshot(server_url, fresh_db.database)

    restore_backup(fresh_db, local_store, str(data), pre_restore_backup=False, lock=NO_LOCK)

    assert rows_of(server_url, fresh_db.database) == rows_of(server_url, source_db.database)
    after = snapshot(server_url, fresh_db.database)
    assert after["views"] == before["views"] and after["triggers"] == before["triggers"]
    assert after["routines"] == before["routines"]
    assert {t: v[2] for t, v in after["tables"].items()} == {t: v[2] for t, v in before["tables"].items()}


def test_data_only_dump_of_some_tables_is_refused_before_anything_runs(source_db, fresh_db, local_store,
                                                                      server_url, tmp_path):
    """A table left out of a data-only dump would come back empty: refused, and the target is untouched."""
    from rusing_ops.core.errors import OpsError

    full = tmp_path / "full.sql"
    full.write_bytes(mariadb_dump(source_db, "--routines", "--triggers"))
    restore_backup(fresh_db, local_store, str(full), pre_restore_backup=False, lock=NO_LOCK)
    cmd = ["mariadb-dump", "-h", source_db.host, "-P", str(source_db.port), "-u", source_db.user, "--no-create-info",
           source_db.database, "users", "payments"]
    path = tmp_path / "two-tables.sql"
    path.write_bytes(subprocess.run(cmd, check=True, capture_output=True).stdout)
    before = snapshot(server_url, fresh_db.database)
    with pytest.raises(OpsError) as err:
        restore_backup(fresh_db, local_store, str(path), pre_restore_backup=False, lock=NO_LOCK)
    assert "is a data-only dump (no CREATE TABLE) with no rows for 4 of the 6 tables" in str(err.value)
    assert "no statement of the file was run" in str(err.value)
    assert snapshot(server_url, fresh_db.database) == before
    assert databases_like(server_url, fresh_db.database + "__restore") == []
