"""Server flavours: detection, and the SQL that differs, tested on what it generates and, where MariaDB can run it,
on what it does (MySQL 8 and TiDB cannot run here; their branches are checked against their documentation)."""

from __future__ import annotations

import ssl
import uuid

import pymysql
import pytest

from rusing_ops.backups.snapshot import (
    history_kept,
    open_snapshots,
    snapshot_point,
    start_snapshot,
)
from rusing_ops.core import database as dbmod
from rusing_ops.core import flavour as fl
from rusing_ops.core.dburl import parse_database_url

TIDB = fl.Flavour(kind=fl.TIDB, version="8.0.11-TiDB-v7.5.1", comment="TiDB Server (Apache License 2.0)")
MARIADB = fl.Flavour(kind=fl.MARIADB, version="10.11.19-MariaDB")


@pytest.mark.parametrize("version, comment, kind", [
    ("10.11.19-MariaDB-0+deb12u1", "Debian 12", fl.MARIADB),
    ("8.0.11-TiDB-v7.5.1", "TiDB Server (Apache License 2.0) Community Edition, MySQL 8.0 compatible", fl.TIDB),
    ("8.0.36", "MySQL Community Server - GPL", fl.MYSQL),
    ("5.5.5-10.6.12-MariaDB-log", "", fl.MARIADB),
])
def test_kind_from_version_and_comment(version, comment, kind):
    assert fl.kind_from_version(version, comment) == kind


def test_detects_the_local_mariadb_once(server_url):
    conn = dbmod.raw_connect(server_url, "")
    try:
        found = fl.detect_flavour(conn)
    finally:
        conn.close()
    assert found.kind == fl.MARIADB and found.version.startswith("10.11") and found.has_stored_objects
    assert fl.flavour_of(server_url) == found and dbmod.Database.of(server_url).flavour() == found
    assert dbmod.Database.of(server_url) is dbmod.Database.of(server_url.with_database(server_url.database))


def test_get_lock_timeouts_are_clamped_on_tidb_only():
    assert fl.lock_wait_seconds("8.0.11-TiDB-v7.5.1", 0.2) == 1
    assert fl.lock_wait_seconds("8.0.11-TiDB-v7.5.1", 7200) == 3600
    assert fl.lock_wait_seconds("10.11.19-MariaDB", 0.2) == 0.2
    assert fl.lock_wait_seconds("8.0.36", -5) == 0


def test_tidb_snapshot_statements():
    assert fl.start_transaction_sql(TIDB, 449_000_000_000_000_001) == (
        "START TRANSACTION READ ONLY AS OF TIMESTAMP TIDB_PARSE_TSO(449000000000000001)")
    assert fl.start_transaction_sql(TIDB) == "START TRANSACTION READ ONLY"
    assert fl.start_transaction_sql(MARIADB) == "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"
    assert fl.start_transaction_sql(MARIADB, 12) == "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"


def test_a_statement_that_succeeds_with_warnings_holds_nothing(fresh_db):
    """TiDB answers LOCK TABLES with success plus a warning when table locks are off; MariaDB's `DO 1/0` is the
    same shape (success, one warning), so the check runs against a real server's warning."""
    conn = dbmod.raw_connect(fresh_db)
    try:
        with conn.cursor() as cur:
            held, why = fl.lock_held(cur, "DO 1/0")
            assert (held, why) == (False, "Division by 0")
            assert fl.lock_held(cur, "DO 1") == (True, "")
    finally:
        conn.close()


@pytest.fixture
def no_lock_user(fresh_db, db_conn):
    user = "nl" + fresh_db.database[-10:]
    with db_conn.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'nl-pw-123'")
        cur.execute(f"GRANT SELECT, SHOW VIEW ON `{fresh_db.database}`.* TO '{user}'@'%'")
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY)")
    yield parse_database_url(f"mysql://{user}:nl-pw-123@{fresh_db.host}:{fresh_db.port}/{fresh_db.database}")
    with db_conn.cursor() as cur:
        cur.execute(f"DROP USER '{user}'@'%'")


def test_parallel_dump_without_a_lock_falls_back_to_one_connection_and_says_why(no_lock_user):
    said = []
    conns = open_snapshots(no_lock_user, 3, dbmod.raw_connect, said.append)
    try:
        assert len(conns) == 1 and conns.flavour.kind == fl.MARIADB
        assert "dumping on one connection" in said[0] and "FLUSH TABLES WITH READ LOCK refused" in said[0]
        assert "LOCK TABLES refused" in said[0]
        assert snapshot_point(conns) == {"kind": "none", "why": "the binary log is off (log_bin)"}
    finally:
        for c in conns:
            c.close()


def test_snapshot_point_is_the_binlog_position_of_the_shared_snapshot(binlog_server):
    name = f"snap_{uuid.uuid4().hex[:8]}"
    binlog_server.create_database(name)
    admin = binlog_server.socket_connection(database=name)
    with admin.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
        cur.execute("INSERT INTO t VALUES (1, 1)")
    url = parse_database_url(binlog_server.url(name))
    conns = open_snapshots(url, 2, dbmod.raw_connect, lambda _l: None)
    try:
        point = snapshot_point(conns)
        with admin.cursor() as cur:
            cur.execute("INSERT INTO t VALUES (2, 2)")  # after the snapshot: not in it, and after its position
            cur.execute("SHOW MASTER STATUS")
            file_now, pos_now = cur.fetchone()[:2]
        assert len(conns) == 2 and point["kind"] == "binlog"
        assert point["file"].startswith("mariadb-bin.") and 0 < point["position"]
        assert (point["file"], point["position"]) < (file_now.decode() if isinstance(file_now, bytes) else file_now,
                                                     pos_now)
        assert point["gtid"].startswith("0-101-")
        for conn in conns:  # both connections read the same snapshot: one row, not two
            with conn.cursor() as cur:
                cur.execute(f"SELECT COUNT(*) FROM `{name}`.t")
                assert cur.fetchone()[0] == b"1"
    finally:
        for c in conns:
            c.close()
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE `{name}`")
        admin.close()


def test_statement_bytes_from_max_allowed_packet_and_tidb_limits(fresh_db):
    conn = dbmod.raw_connect(fresh_db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@max_allowed_packet")
            packet = int(cur.fetchone()[0].decode())
        mariadb = fl.server_limits(conn, MARIADB)
        tidb = fl.server_limits(conn, TIDB)  # the TiDB arithmetic on this server's packet size
        assert mariadb.statement_bytes == min(packet - fl.PACKET_MARGIN_BYTES, fl.STATEMENT_CAP_BYTES)
        assert mariadb.row_bytes is None and tidb.row_bytes == fl.TIDB_ENTRY_BYTES
        assert tidb.statement_bytes == min(mariadb.statement_bytes, fl.TIDB_TXN_BYTES // 8)
        assert fl.statement_bytes(conn) == mariadb.statement_bytes
    finally:
        conn.close()


def test_gc_life_time_parsing_and_need():
    assert fl.parse_go_duration("10m0s") == 600 and fl.parse_go_duration("1h30m") == 5400
    assert fl.parse_go_duration("720h0m0s") == 720 * 3600 and fl.parse_go_duration("1.5s") == 1.5
    with pytest.raises(ValueError):
        fl.parse_go_duration("10 minutes")
    assert fl.gc_life_time_needed(60) == 3600 and fl.gc_life_time_needed(3600) == 7800


def test_gc_guard_does_nothing_off_tidb(fresh_db):
    opened = []
    with fl.tidb_gc_guard(lambda: opened.append(1), MARIADB, 10_000) as done:
        assert done == {"changed": False}
    assert opened == []  # not even a connection


def test_paused_cluster_words():
    assert fl.paused_cluster_message(1105, "cluster is paused, please resume it") == fl.PAUSED
    assert fl.paused_cluster_message(None, "The cluster is resuming").startswith(fl.PAUSED)
    assert fl.paused_cluster_message(1045, "Access denied for user 'root'@'1.2.3.4'") is None
    error = pymysql.err.OperationalError(1105, "Cluster is paused. Please resume it in the console")
    text = str(dbmod.explain_connection_error(error, parse_database_url("mysql://u:pw@gw.tidbcloud.com:4000/app")))
    assert "cluster is paused: resume it in the TiDB Cloud console" in text and "pw" not in text


def test_hostname_mismatch_is_named_with_the_option_to_set():
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cause.verify_message = "Hostname mismatch, certificate is not valid for 'db.example.com'."
    error = pymysql.err.OperationalError(2003, "Can't connect to MySQL server on 'db.example.com' (...)")
    error.original_exception = cause
    text = str(dbmod.explain_connection_error(error, parse_database_url("mysql://u:Pw-77@db.example.com:4000/app")))
    assert text.startswith("Cannot connect to mysql://u:***@db.example.com:4000/app: TLS certificate verification "
                           "failed: the server's certificate does not name host 'db.example.com'")
    assert "ssl_mode=VERIFY_CA" in text and "nothing answered" not in text and "Pw-77" not in text


def test_snapshot_start_takes_the_flavour_statement(fresh_db):
    conn = dbmod.raw_connect(fresh_db)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE t (id INT PRIMARY KEY)")
        start_snapshot(conn, MARIADB)
        with conn.cursor() as cur:
            cur.execute("SELECT @@in_transaction, @@time_zone")
            assert cur.fetchone() == (b"1", b"+00:00")
            with pytest.raises(pymysql.err.MySQLError) as err:
                cur.execute("INSERT INTO t VALUES (1)")
            assert err.value.args[0] == 1792  # ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
    finally:
        conn.close()


def test_health_says_the_runbook_words_for_a_paused_cluster():
    from rusing_ops.health.checks import check_database

    url = parse_database_url("mysql://u:pw-123@gateway01.us-east-1.prod.aws.tidbcloud.com:4000/app")

    def ping():
        raise dbmod.explain_connection_error(pymysql.err.OperationalError(1105, "cluster is paused"), url)

    group = check_database(ping)
    assert group.failed and "cluster is paused: resume it in the TiDB Cloud console" in group.rows[0].detail
    assert "pw-123" not in group.rows[0].detail


def test_start_snapshot_reads_the_flavour_from_the_handshake(fresh_db):
    conn = dbmod.raw_connect(fresh_db)
    try:
        assert fl.kind_from_version(conn.server_version) == fl.MARIADB
        start_snapshot(conn)
        with conn.cursor() as cur:
            cur.execute("SELECT @@in_transaction")
            assert cur.fetchone() == (b"1",)
    finally:
        conn.close()


def test_expected_dump_time_grows_with_the_data_and_history_is_left_alone_off_tidb(fresh_db, db_conn):
    conn = dbmod.raw_connect(fresh_db)
    try:
        empty = fl.expected_dump_seconds(conn, fresh_db.database)
        with db_conn.cursor() as cur:
            cur.execute("CREATE TABLE big (id INT PRIMARY KEY, v LONGBLOB)")
            cur.execute("INSERT INTO big SELECT seq, REPEAT('x', 20000) FROM seq_1_to_300")
            cur.execute("ANALYZE TABLE big")
            cur.fetchall()
        grown = fl.expected_dump_seconds(conn, fresh_db.database)
    finally:
        conn.close()
    assert empty == 60 and grown > 60 + 5_000_000 / fl.DUMP_BYTES_PER_S
    said, opened = [], []

    def connect(url):
        opened.append(url)
        return dbmod.raw_connect(url)

    with history_kept(fresh_db, connect, said.append) as done:
        assert done == {"changed": False}
    assert len(opened) == 1 and said == []  # one look at the server, nothing set


def test_ddl_jobs_are_a_tidb_thing(fresh_db):
    conn = dbmod.raw_connect(fresh_db)
    try:
        assert fl.running_ddl_jobs(conn, MARIADB) == []  # DDL runs inside the statement: nothing is asked
        with pytest.raises(pymysql.err.ProgrammingError):  # and MariaDB indeed has no such statement
            fl.running_ddl_jobs(conn, TIDB)
    finally:
        conn.close()
    assert fl.DDL_JOBS_SQL.startswith("ADMIN SHOW DDL JOBS 20 WHERE STATE NOT IN (")
