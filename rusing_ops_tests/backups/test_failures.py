"""A restore refuses damaged or incomplete backups before touching any database; interrupted runs leave no trace
that could be mistaken for a good backup, and never a half-restored target."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from rusing_ops.backups import catalog, keys
from rusing_ops.backups.catalog import BackupEntry
from rusing_ops.backups.dump import backup_database
from rusing_ops.backups.manifest import ManifestError
from rusing_ops.backups.restore import restore_backup
from rusing_ops.backups.source import BackupCorrupt
from rusing_ops.core.errors import NotFound

from .conftest import databases_like, query, snapshot


def _damage(store, key: str, how: str) -> None:
    data = store.get_bytes(key)
    if how == "corrupted":
        middle = len(data) // 2
        data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
    else:
        data = data[: len(data) * 2 // 3]
    store.put_bytes(key, data)


@pytest.mark.parametrize("how", ["corrupted", "truncated"])
def test_damaged_backup_is_refused_before_touching_any_database(every_type_db, any_store, server_url, how):
    backup = backup_database(every_type_db, any_store)
    _damage(any_store, backup.manifest.key, how)
    query(every_type_db, every_type_db.database, "DELETE FROM audit_no_pk")  # the live data moved on
    before = snapshot(server_url, every_type_db.database)
    with pytest.raises(BackupCorrupt) as err:
        restore_backup(every_type_db, any_store, "latest")
    assert str(err.value).startswith(f"Backup {backup.manifest.key!r} does not match its manifest: ")
    assert "(truncated or altered). It was not restored. Nothing was changed." in str(err.value)
    assert snapshot(server_url, every_type_db.database) == before
    assert databases_like(server_url, every_type_db.database + "__") == []


def test_manifestless_backup_is_refused_and_never_offered(every_type_db, any_store, server_url):
    backup = backup_database(every_type_db, any_store)
    any_store.delete(keys.manifest_key(backup.manifest.key))
    with pytest.raises(ManifestError) as err:
        restore_backup(every_type_db, any_store, backup.manifest.key)
    assert str(err.value) == (
        f"Backup {backup.manifest.key!r} has no manifest: it is incomplete (interrupted or still being written) "
        "and is not restorable. Nothing was changed. Next: choose a complete backup (`rusing-ops db backups` lists "
        "the backups).")
    with pytest.raises(NotFound, match="There is no complete backup in "):
        restore_backup(every_type_db, any_store, "latest")
    assert databases_like(server_url, every_type_db.database + "__") == []


def test_truncated_plain_file_is_refused_with_target_untouched(every_type_db, local_store, server_url, tmp_path):
    dump = subprocess.run(["mysqldump", "-h", server_url.host, "-P", str(server_url.port), "-u", server_url.user,
                           "--single-transaction", every_type_db.database], check=True, capture_output=True).stdout
    cut = dump.index(b"INSERT INTO `payments`") + 200
    path = tmp_path / "cut.sql"
    path.write_bytes(dump[:cut])
    before = snapshot(server_url, every_type_db.database)
    with pytest.raises(Exception) as err:
        restore_backup(every_type_db, local_store, str(path))
    assert "was not touched" in str(err.value)
    assert snapshot(server_url, every_type_db.database) == before
    assert databases_like(server_url, every_type_db.database + "__") == []


SCRIPT = textwrap.dedent("""
    import sys
    from rusing_ops.core.dburl import parse_database_url
    from rusing_ops.core.store import open_store
    from rusing_ops.backups.dump import backup_database
    from rusing_ops.backups.restore import restore_backup
    url = parse_database_url(sys.argv[2])
    store = open_store(sys.argv[3])
    if sys.argv[1] == "backup":
        backup_database(url, store, statement_bytes=64 * 1024)
    else:
        restore_backup(url, store, "latest", pre_restore_backup=False, workers=1)
""")


def _bulk(url, rows: int) -> None:
    """A table large enough that its load or upload takes a while (incompressible hex, so S3 gets parts)."""
    query(url, url.database, "CREATE TABLE bulk (id INT PRIMARY KEY, a VARCHAR(200), b VARCHAR(200))")
    query(url, url.database, f"INSERT INTO bulk SELECT seq, SHA2(seq, 512), SHA2(-seq, 512) FROM seq_1_to_{rows}")


def _run_until(args: list[str], ready, timeout: float = 60) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, *args], env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                raise AssertionError(f"the process finished before it could be killed: {proc.stderr.read()[-500:]!r}")
            assert time.monotonic() < deadline, "never reached the point to kill at"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()


def test_restore_killed_mid_load_leaves_target_untouched(every_type_db, local_store, server_url):
    _bulk(every_type_db, 150_000)
    backup_database(every_type_db, local_store)
    query(every_type_db, every_type_db.database, "DELETE FROM bulk WHERE id > 100")
    before = snapshot(server_url, every_type_db.database)

    def staging_has_rows() -> bool:
        staging = databases_like(server_url, every_type_db.database + "__restore_")
        if not staging:
            return False
        got = query(server_url, "", "SELECT COALESCE(SUM(TABLE_ROWS), 0) FROM information_schema.TABLES "
                                    "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = 'bulk'", (staging[0],))
        return got[0][0] > 0

    _run_until(["restore", f"mysql://{server_url.user}@{server_url.host}:{server_url.port}/{every_type_db.database}",
                local_store.url], staging_has_rows)
    assert snapshot(server_url, every_type_db.database) == before
    assert databases_like(server_url, every_type_db.database + "__pre_restore") == []

    # The killed restore's staging copy is still there: the next restore names it for the operator.
    [leftover] = databases_like(server_url, every_type_db.database + "__restore_")
    lines = []
    restore_backup(every_type_db, local_store, "latest", pre_restore_backup=False, log=lines.append)
    assert (f"warning: staging database(s) left by an interrupted restore: {leftover}. They are not used; drop them "
            "(DROP DATABASE) once no other restore is running.") in lines
    assert query(every_type_db, every_type_db.database, "SELECT COUNT(*) FROM bulk") == [(150_000,)]


def test_backup_killed_mid_upload_leaves_no_complete_looking_backup(every_type_db, s3_store, s3_server, server_url):
    _bulk(every_type_db, 120_000)
    client = s3_server.client()

    def upload_started() -> bool:
        return bool(client.list_multipart_uploads(Bucket=s3_store.bucket).get("Uploads"))

    url = f"mysql://{server_url.user}@{server_url.host}:{server_url.port}/{every_type_db.database}"
    _run_until(["backup", url, s3_store.url], upload_started)
    entries: list[BackupEntry] = catalog.list_backups(s3_store)
    assert [e for e in entries if e.complete] == []
    assert [o.key for o in s3_store.list() if o.key.endswith(keys.MANIFEST_SUFFIX)] == []
    with pytest.raises(NotFound):
        catalog.resolve(s3_store, "latest")


def test_parallel_dump_sees_one_snapshot_while_the_app_writes(fresh_db, local_store):
    import threading

    import pymysql

    query(fresh_db, fresh_db.database, "CREATE TABLE t_a (id INT PRIMARY KEY, pad VARCHAR(300))")
    query(fresh_db, fresh_db.database, "CREATE TABLE t_b (id INT PRIMARY KEY, pad VARCHAR(300))")
    for t in ("t_a", "t_b"):
        query(fresh_db, fresh_db.database, f"INSERT INTO {t} SELECT seq, REPEAT('x', 300) FROM seq_1_to_40000")
    stop = threading.Event()
    written = [0]

    def app_writes():  # every transaction adds one row to each table: a consistent copy has equal counts
        conn = pymysql.connect(**fresh_db.pymysql_kwargs())
        n = 40000
        while not stop.is_set():
            n += 1
            with conn.cursor() as cur:
                cur.execute("INSERT INTO t_a VALUES (%s, 'a')", (n,))
                cur.execute("INSERT INTO t_b VALUES (%s, 'b')", (n,))
            conn.commit()
            written[0] += 1
        conn.close()

    writer = threading.Thread(target=app_writes)
    writer.start()
    try:
        while written[0] < 20:
            time.sleep(0.01)
        logs: list[str] = []
        manifest = backup_database(fresh_db, local_store, workers=2, log=logs.append).manifest
    finally:
        stop.set()
        writer.join()
    assert manifest.tables["t_a"].rows == manifest.tables["t_b"].rows > 40000
    assert not any("dumping on one connection" in line for line in logs)
    assert written[0] >= manifest.tables["t_a"].rows - 40000  # rows the app committed before the snapshot


def test_restore_waits_for_the_write_lock_and_gives_up_untouched(every_type_db, local_store, server_url):
    from rusing_ops.backups.restore import RestoreRefused
    from rusing_ops.core.database import DB_WRITE_LOCK, create_engine, named_lock

    backup_database(every_type_db, local_store)
    query(every_type_db, every_type_db.database, "DELETE FROM audit_no_pk")
    before = snapshot(server_url, every_type_db.database)
    engine = create_engine(every_type_db)
    try:
        with named_lock(engine, every_type_db, DB_WRITE_LOCK, 1), pytest.raises(RestoreRefused) as err:
            # a migration in progress holds the lock
            restore_backup(every_type_db, local_store, "latest", pre_restore_backup=False,
                           lock=lambda: named_lock(engine, every_type_db, DB_WRITE_LOCK, 0.2))
    finally:
        engine.dispose()
    assert f"Database lock '{DB_WRITE_LOCK}.{every_type_db.database}'" in str(err.value) and "is held by connection" in str(err.value)
    assert f"Nothing was changed: no backup was taken and `{every_type_db.database}` was not touched." in str(err.value)
    assert snapshot(server_url, every_type_db.database) == before
    assert databases_like(server_url, every_type_db.database + "__") == []


def test_backup_refuses_definitions_the_user_may_not_read(every_type_db, local_store, server_url):
    import uuid

    from rusing_ops.backups.schema import SchemaUnreadable
    from rusing_ops_tests.conftest import admin_connection

    user, password = f"rot_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    conn = admin_connection(server_url)
    with conn.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (password,))
        cur.execute(f"GRANT ALL PRIVILEGES ON `{every_type_db.database}`.* TO '{user}'@'%'")
    try:
        url = every_type_db.__class__(user, password, every_type_db.host, every_type_db.port, every_type_db.database)
        with pytest.raises(SchemaUnreadable) as err:
            backup_database(url, local_store)
        assert str(err.value).startswith("The backup user may not read the definition of FUNCTION `cents` ")
        assert local_store.list() == []
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        conn.close()


def test_truncated_plain_zstd_file_is_refused(every_type_db, local_store, server_url, tmp_path):
    import zstandard

    dump = subprocess.run(["mysqldump", "-h", server_url.host, "-P", str(server_url.port), "-u", server_url.user,
                           "--single-transaction", every_type_db.database], check=True, capture_output=True).stdout
    packed = zstandard.ZstdCompressor().compress(dump)
    path = tmp_path / "dump.sql.zst"
    path.write_bytes(packed[: len(packed) - 40])
    with pytest.raises(Exception) as err:
        restore_backup(every_type_db, local_store, str(path), database=every_type_db.database + "__t")
    assert "the stream ends before its end marker (truncated)" in str(err.value)
    assert "was not touched" in str(err.value)
    assert databases_like(server_url, every_type_db.database + "__") == []


def test_a_second_backup_with_the_same_name_never_overwrites_the_first(every_type_db, local_store):
    import datetime as dt

    from rusing_ops.core.errors import OpsError

    when = dt.datetime(2026, 11, 26, 3, 0, 0, tzinfo=dt.UTC)
    first = backup_database(every_type_db, local_store, reason="nightly", now=when)
    original = local_store.get_bytes(first.manifest.key)
    with pytest.raises(OpsError) as err:
        backup_database(every_type_db, local_store, reason="nightly", now=when)
    assert str(err.value) == (f"A backup named backup-{every_type_db.database}-2026-11-26T030000Z-nightly.sql.zst "
                              f"already exists in "
                              f"{local_store.url}; refusing to overwrite it. Nothing was changed. Next: run the backup "
                              "again a second later, or give another reason.")
    assert local_store.get_bytes(first.manifest.key) == original


def test_the_restores_own_write_lock_is_the_same_lock_on_a_pymysql_connection(every_type_db):
    """swap.write_lock (restore's default) takes the per-database GET_LOCK on a PyMySQL connection, without
    SQLAlchemy: a migration's named_lock makes it wait and give up naming the holder, and the other way round."""
    from rusing_ops.backups.swap import write_lock
    from rusing_ops.core.database import DB_WRITE_LOCK, create_engine, named_lock, scoped_lock_name
    from rusing_ops.core.errors import LockBusy

    name = scoped_lock_name(DB_WRITE_LOCK, every_type_db.database)
    engine = create_engine(every_type_db)
    try:
        with named_lock(engine, every_type_db, DB_WRITE_LOCK, 1) as holder:
            holder_id = holder.exec_driver_sql("SELECT CONNECTION_ID()").scalar()
            with pytest.raises(LockBusy) as busy, write_lock(every_type_db, timeout_s=0.2):
                pass
        assert f"Database lock '{name}'" in str(busy.value)
        assert f"is held by connection {holder_id} (root@" in str(busy.value) and busy.value.data["holder"] == holder_id
        with write_lock(every_type_db, timeout_s=1):
            used = query(every_type_db, every_type_db.database, f"SELECT IS_USED_LOCK('{name}')")[0][0]
            assert used is not None and used != holder_id
            with pytest.raises(LockBusy, match="is held by connection"), named_lock(engine, every_type_db,
                                                                                    DB_WRITE_LOCK, 0.2):
                pass
        assert query(every_type_db, every_type_db.database, f"SELECT IS_USED_LOCK('{name}')")[0][0] is None
    finally:
        engine.dispose()


def test_a_backup_named_like_one_written_meanwhile_is_discarded_not_written_over(every_type_db, local_store,
                                                                               monkeypatch):
    """Two backups of one database with one reason in the same second get one name. The name is checked when the
    backup starts; the other run can commit in between: the data object is committed exclusively, so the second
    one is discarded and the first one's object and manifest stay as they were."""
    import datetime as dt

    from rusing_ops.core.store import ObjectExists

    now = dt.datetime(2026, 12, 1, 3, 0, tzinfo=dt.UTC)
    first = backup_database(every_type_db, local_store, reason="nightly", now=now).manifest
    stored = {key: local_store.get_bytes(key) for key in (first.key, keys.manifest_key(first.key))}
    monkeypatch.setattr(local_store, "exists", lambda key: False)  # as if the first run had not committed yet
    with pytest.raises(ObjectExists) as taken:
        backup_database(every_type_db, local_store, reason="nightly", now=now)
    assert f"already holds {first.key}" in taken.value.message and "this write was discarded" in taken.value.message
    assert {key: local_store.get_bytes(key) for key in stored} == stored
    assert local_store.list_partial() == []
