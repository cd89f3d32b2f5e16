"""Hostile files given to restore or planted in the store: each is refused before any of its statements runs, naming
the line (never showing the file's text); the target, an unrelated sentinel database and the file system are left
as they were. Before confine.py these statements ran against the whole server (`db verify` of a tampered backup
dropped a table in an unrelated database) and `--file /proc/self/environ` echoed the environment in its error.
"""

from __future__ import annotations

import gzip
import os

import pytest
import zstandard

from rusing_ops.backups import keys
from rusing_ops.backups.dump import backup_database
from rusing_ops.backups.manifest import Manifest
from rusing_ops.backups.restore import restore_backup
from rusing_ops.backups.verify import verify_backup
from rusing_ops.core.errors import OpsError
from rusing_ops_tests.backups.conftest import databases_like, query, snapshot

from .test_foreign_dumps import (
    NO_LOCK,
    sentinel_db,  # noqa: F401 - the module's unrelated database (a fixture)
)

HEADER = "-- MariaDB dump 10.19  Distrib 10.11.6-MariaDB\n"
PRELUDE = "CREATE TABLE t (id INT PRIMARY KEY, note VARCHAR(40));\nINSERT INTO t VALUES (1,'staged');\n"
HOSTILE_LINE = 4  # HEADER is line 1, PRELUDE lines 2-3


@pytest.fixture(autouse=True)
def _undo_what_a_broken_build_would_do(server_url):
    """Were a refusal missing, the statement ran on the shared test server: undo it, so one failure stays one."""
    yield
    query(server_url, "", "DROP USER IF EXISTS 'intruder'@'%%'")
    query(server_url, "", "SET GLOBAL max_connect_errors = 100")


@pytest.fixture
def live(fresh_db):
    """The restore target, holding one table and row that must survive every refusal."""
    query(fresh_db, fresh_db.database, "CREATE TABLE live (id INT PRIMARY KEY)")
    query(fresh_db, fresh_db.database, "INSERT INTO live VALUES (7)")
    return fresh_db


HOSTILE = {
    "drop database": "DROP DATABASE `{s}`",
    "drop table": "DROP TABLE `{s}`.`t`",
    "insert into other": "INSERT INTO `{s}`.`t` VALUES (99,'planted')",
    "trigger writing other": "CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW INSERT INTO `{s}`.t VALUES (NEW.id, 'x')",
    "grant": "GRANT ALL PRIVILEGES ON *.* TO 'intruder'@'%' IDENTIFIED BY 'pw-canary'",
    "create user": "CREATE USER 'intruder'@'%' IDENTIFIED BY 'pw-canary'",
    "set global": "SET GLOBAL max_connect_errors = 100077",  # harmless if it ran: the test server is shared
    "versioned set global": "/*!40101 SET @@GLOBAL.max_connect_errors = 100077 */",
    "into outfile": "SELECT * FROM t INTO OUTFILE '{out}'",
    "load data infile": "LOAD DATA INFILE '/etc/hostname' INTO TABLE t",
    "load_file in values": "INSERT INTO t VALUES (2, LOAD_FILE('/etc/hostname'))",
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_statement_in_a_dump_is_refused_before_anything_runs(case, live, sentinel_db, local_store,  # noqa: F811
                                                                      server_url, tmp_path):
    out = tmp_path / "leak.txt"
    statement = HOSTILE[case].format(s=sentinel_db.database, out=out)
    path = tmp_path / "hostile.sql.gz"
    path.write_bytes(gzip.compress((HEADER + PRELUDE + statement + ";\n").encode()))
    target_before = snapshot(server_url, live.database)
    sentinel_before = snapshot(server_url, sentinel_db.database)
    variables_before = query(server_url, "", "SELECT @@GLOBAL.max_connect_errors")
    with pytest.raises(OpsError) as err:
        restore_backup(live, local_store, str(path), pre_restore_backup=False, lock=NO_LOCK)
    message = str(err.value)
    assert f"line {HOSTILE_LINE}: " in message and "No statement of the file was run." in message
    assert "pw-canary" not in message and "/etc/hostname" not in message and "planted" not in message
    assert snapshot(server_url, live.database) == target_before
    assert snapshot(server_url, sentinel_db.database) == sentinel_before
    assert query(server_url, "", "SELECT @@GLOBAL.max_connect_errors") == variables_before
    assert query(server_url, "", "SELECT COUNT(*) FROM mysql.user WHERE User = 'intruder'") == [(0,)]
    assert not out.exists()
    assert databases_like(server_url, live.database + "__") == []  # no staging database was even created
    assert list(local_store.list("")) == []  # and no pre-restore backup


def test_proc_environ_is_refused_without_reading_it(live, local_store, server_url, tmp_path, monkeypatch):
    monkeypatch.setenv("RUSING_TEST_CANARY", "environ-canary-5150")
    before = snapshot(server_url, live.database)
    link = tmp_path / "innocent.sql"
    link.symlink_to("/proc/self/environ")
    for given in ("/proc/self/environ", str(link)):
        with pytest.raises(OpsError) as err:
            restore_backup(live, local_store, given, pre_restore_backup=False, lock=NO_LOCK)
        assert "is not a dump file: it is under /proc" in str(err.value), str(err.value)
        assert "environ-canary-5150" not in str(err.value) and "PATH=" not in str(err.value)
    assert snapshot(server_url, live.database) == before
    assert databases_like(server_url, live.database + "__") == []


JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffdb004300") + b"\x00" * 64 + b"secret-pixels"


@pytest.mark.parametrize("name, data, why", [
    ("photo.sql", JPEG, "is not a SQL dump: it holds binary data"),
    ("photo.sql.gz", gzip.compress(JPEG, mtime=0), "is not a SQL dump: it holds binary data"),
    ("photo.sql.zst", zstandard.ZstdCompressor().compress(b"\x89PNG\r\n\x1a\n" + JPEG), "is not a SQL dump"),
    ("notes.txt", b"CREATE TABLE t (a int);\n", "is not named like a dump (.sql, .sql.gz, .sql.zst)"),
    ("empty.sql", b"", "is not a SQL dump: it is empty"),
    ("passwd.sql", b"canary_user:x:0:0:secret-canary-42:/root:/bin/bash;\n",
     "line 1: an unrecognised statement (only data and schema statements may be in a dump)"),
])
def test_a_file_that_is_not_a_dump_never_reaches_the_server(name, data, why, live, local_store, server_url, tmp_path):
    path = tmp_path / name
    path.write_bytes(data)
    before = snapshot(server_url, live.database)
    with pytest.raises(OpsError) as err:
        restore_backup(live, local_store, str(path), pre_restore_backup=False, lock=NO_LOCK)
    assert why in str(err.value), str(err.value)
    assert "secret-pixels" not in str(err.value) and "secret-canary-42" not in str(err.value)
    assert snapshot(server_url, live.database) == before
    assert databases_like(server_url, live.database + "__") == []


def _tamper(store, key: str, statement: bytes) -> None:
    """Plant ``statement`` as the backup's second line and give the manifest the new object's size and sha256."""
    import hashlib

    text = zstandard.ZstdDecompressor().decompressobj().decompress(store.get_bytes(key))
    first, rest = text.split(b"\n", 1)
    data = zstandard.ZstdCompressor().compress(first + b"\n" + statement + b"\n" + rest)
    store.put_bytes(key, data)
    manifest = Manifest.from_json(store.get_bytes(keys.manifest_key(key)), key)
    manifest.sha256, manifest.bytes = hashlib.sha256(data).hexdigest(), len(data)
    store.put_bytes(keys.manifest_key(key), manifest.to_json())


@pytest.mark.parametrize("planted, line", [
    (b"DROP TABLE `{s}`.`t`;", 2),
    (b"-- @{n}\nINSERT INTO `{s}`.`t` (`id`, `note`) VALUES (98,'framed');\n", 3),  # framed: its head is checked
    (b"GRANT ALL ON *.* TO 'intruder'@'%';", 2),
])
def test_tampered_backup_with_a_fixed_manifest_fails_verify_and_restore_touching_nothing(
        planted, line, live, sentinel_db, local_store, server_url):  # noqa: F811
    backup = backup_database(live, local_store)
    key = backup.manifest.key
    statement = planted.replace(b"{s}", sentinel_db.database.encode())
    if b"{n}" in statement:
        body = statement.split(b"\n", 1)[1]
        statement = statement.replace(b"{n}", str(len(body)).encode()).rstrip(b"\n")
    _tamper(local_store, key, statement)
    sentinel_before = snapshot(server_url, sentinel_db.database)
    target_before = snapshot(server_url, live.database)

    result = verify_backup(live, local_store, key, record=False)
    assert not result.ok
    # checked as it loads (one pass): refused before it runs, in the scratch database only, which is dropped
    assert any(f"line {line}: " in p and "only (it is dropped); the target database was not touched." in p
               for p in result.problems), result.problems
    with pytest.raises(OpsError) as err:
        restore_backup(live, local_store, key, pre_restore_backup=False, lock=NO_LOCK)
    assert f"line {line}: " in str(err.value) and "the target database was not touched" in str(err.value)
    assert snapshot(server_url, sentinel_db.database) == sentinel_before
    assert snapshot(server_url, live.database) == target_before
    assert query(server_url, "", "SELECT COUNT(*) FROM mysql.user WHERE User = 'intruder'") == [(0,)]
    assert databases_like(server_url, live.database + "__") == []
    assert os.environ.get("RUSING_TEST_CANARY") is None


def _temporary_users(server_url) -> list:
    return query(server_url, "", "SELECT User FROM mysql.user WHERE User LIKE 'rusing\\_tmp\\_%%'")


def test_the_load_runs_as_a_user_that_can_touch_the_staging_database_only(fresh_db, sentinel_db,  # noqa: F811
                                                                          server_url):
    """Least privilege behind the checks: what the file's statements run as cannot reach another database, read a
    file or change the server, and is gone afterwards."""
    import pymysql

    from rusing_ops.backups.connection import open_connection
    from rusing_ops.backups.sandbox import StagingUser

    admin = open_connection(server_url, "")
    try:
        with StagingUser(admin, server_url, fresh_db.database) as load_url:
            assert load_url.user.startswith("rusing_tmp_") and load_url.password
            conn = pymysql.connect(**load_url.pymysql_kwargs(fresh_db.database), autocommit=True)
            with conn.cursor() as cur:
                cur.execute("CREATE TABLE t (a INT)")
                cur.execute("INSERT INTO t VALUES (1)")
                cur.execute("SELECT LOAD_FILE('/etc/hostname')")
                assert cur.fetchone() == (None,)
                for sql in (f"INSERT INTO `{sentinel_db.database}`.t VALUES (5, 'x')",
                            f"DROP TABLE `{sentinel_db.database}`.t", f"DROP DATABASE `{sentinel_db.database}`",
                            "SET GLOBAL max_connect_errors = 100077", "CREATE USER 'intruder'@'%' IDENTIFIED BY 'x'"):
                    with pytest.raises(pymysql.err.MySQLError) as err:
                        cur.execute(sql)
                    assert err.value.args[0] in (1044, 1142, 1227), (sql, err.value)
            conn.close()
            assert len(_temporary_users(server_url)) >= 1
    finally:
        admin.close()
    assert not any(u[0] == load_url.user for u in _temporary_users(server_url))
    assert query(fresh_db, fresh_db.database, "SELECT a FROM t") == [(1,)]


def test_a_killed_loads_temporary_user_is_swept_by_the_next_load(fresh_db, server_url, tmp_path, local_store):
    """A kill -9 cannot run the drop: the next load drops such users once idle and ten minutes old, or idle with
    their staging database gone; a running load's user (it has a session) is never taken."""
    import time

    from rusing_ops.backups.sandbox import PREFIX, _b36

    stale = f"{PREFIX}{_b36(int(time.time()) - 7200)}dead"
    query(server_url, "", "CREATE USER %s@'localhost' IDENTIFIED BY 'x-Aa1-long-enough'", (stale,))
    recent = f"{PREFIX}{_b36(int(time.time()))}busy"  # a concurrent load's: too young to be taken for dead
    query(server_url, "", "CREATE USER %s@'localhost' IDENTIFIED BY 'x-Aa1-long-enough'", (recent,))
    query(server_url, "", f"GRANT ALL ON `{fresh_db.database}`.* TO %s@'localhost'", (recent,))
    orphan = f"{PREFIX}{_b36(int(time.time()))}0rph"  # young, but its staging database was dropped: dead
    query(server_url, "", "CREATE USER %s@'localhost' IDENTIFIED BY 'x-Aa1-long-enough'", (orphan,))
    query(server_url, "", "GRANT ALL ON `rot_gone_staging`.* TO %s@'localhost'", (orphan,))
    try:
        path = tmp_path / "small.sql"
        path.write_bytes((HEADER + PRELUDE).encode())
        restore_backup(fresh_db, local_store, str(path), pre_restore_backup=False, lock=NO_LOCK)
        users = {u[0] for u in _temporary_users(server_url)}
        assert stale not in users and orphan not in users and recent in users
        assert query(fresh_db, fresh_db.database, "SELECT id, note FROM t") == [(1, "staged")]
    finally:
        for user in (stale, recent, orphan):
            query(server_url, "", "DROP USER IF EXISTS %s@'localhost'", (user,))


def test_an_account_that_may_not_create_users_loads_as_itself_and_says_so(fresh_db, server_url, tmp_path,
                                                                         local_store):
    import dataclasses
    import uuid

    user, password = f"rot_nocreate_{uuid.uuid4().hex[:6]}", "Aa1-" + uuid.uuid4().hex
    query(server_url, "", "CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
    query(server_url, "", "CREATE USER %s@'localhost' IDENTIFIED BY %s", (user, password))
    for host in ("%", "localhost"):
        query(server_url, "", f"GRANT ALL PRIVILEGES ON `{fresh_db.database}%%`.* TO %s@%s", (user, host))
    try:
        limited = dataclasses.replace(fresh_db, user=user, password=password)
        path = tmp_path / "small.sql"
        path.write_bytes((HEADER + PRELUDE).encode())
        lines: list[str] = []
        restore_backup(limited, local_store, str(path), pre_restore_backup=False, lock=NO_LOCK, log=lines.append)
        assert query(fresh_db, fresh_db.database, "SELECT id, note FROM t") == [(1, "staged")]
        assert any("may not create a temporary user (CREATE USER privilege): only the statement checks confine it"
                   in line for line in lines), lines
    finally:
        for host in ("%", "localhost"):
            query(server_url, "", "DROP USER IF EXISTS %s@%s", (user, host))


def test_a_file_swapped_after_the_first_pass_is_stopped_by_the_load_pass(live, sentinel_db, server_url,  # noqa: F811
                                                                        local_store):
    """The file is read again to load it: the same checks run on what is sent, so a file replaced between the
    passes stops at its bad line, with only the staging database (then dropped) written to."""
    import io

    from rusing_ops.backups.restore import stage
    from rusing_ops.backups.source import Source

    good = (HEADER + PRELUDE + "INSERT INTO t VALUES (2,'fine');\n").encode()
    bad = (HEADER + PRELUDE + f"DROP TABLE `{sentinel_db.database}`.`t`;\n").encode()
    opened = []

    def opener():
        opened.append(1)
        return io.BytesIO(good if len(opened) <= 2 else bad)  # the sniff and the first pass see the good file

    before = snapshot(server_url, sentinel_db.database)
    staging = live.database + "__restore_swapped"
    with pytest.raises(OpsError) as err:
        stage(live, Source("swapped.sql", opener, "none"), staging)
    assert len(opened) == 3
    assert "'swapped.sql' line 4: a name in another database" in str(err.value)
    assert f"The statements before it ran in `{staging}` only (it is dropped)" in str(err.value)
    assert snapshot(server_url, sentinel_db.database) == before
    assert databases_like(server_url, staging) == []
