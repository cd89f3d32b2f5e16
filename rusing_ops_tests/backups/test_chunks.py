"""Key-range chunks (chunks.py): a table cut in N chunks dumps and restores exactly, its checksum combined from
the chunks equals the whole table's; tables without an integer key are dumped whole. Also the dump's INSERT size
follows the server's limit (flavour.statement_bytes) and the dump runs inside snapshot.history_kept.

Before chunks.py a table was always one query on one connection (one INSERT statement for a small table); before
the statement_bytes change a 1 MiB INSERT was written whatever the server's max_allowed_packet, and the restore
into a server with a 1 MiB packet failed (the statement and its head are over 1 MiB).
"""

from __future__ import annotations

import re
import uuid

import zstandard

from rusing_ops.backups import chunks, dump
from rusing_ops.backups.checksum import checksum_sql
from rusing_ops.backups.connection import open_connection
from rusing_ops.backups.dump import backup_database
from rusing_ops.backups.restore import loaded_checksums, restore_backup
from rusing_ops.backups.schema import read_tables
from rusing_ops.backups.verify import verify_backup
from rusing_ops.core.dburl import parse_database_url
from rusing_ops_tests.backups.conftest import query
from rusing_ops_tests.conftest import drop_databases_like

TABLES = [
    # integer key with gaps and negative values: chunked
    "CREATE TABLE big_int (id BIGINT PRIMARY KEY, body TEXT, doc JSON) DEFAULT CHARSET=utf8mb4",
    ("INSERT INTO big_int SELECT IF(seq %% 2, seq * 7, -seq * 3), REPEAT(CONCAT('é🎓', seq), 1 + seq %% 40), "
     "JSON_OBJECT('n', seq, 'note', 'Reçu') FROM seq_1_to_3000"),
    # composite key, integer first column: chunked by tenant (rows of one tenant stay in one chunk)
    "CREATE TABLE composite (tenant INT NOT NULL, name VARCHAR(40) NOT NULL, v BLOB, PRIMARY KEY (tenant, name))",
    "INSERT INTO composite SELECT seq %% 97, CONCAT('n', seq), UNHEX(SHA2(seq, 512)) FROM seq_1_to_3000",
    # non-integer key and no key at all: the fallback, one chunk
    "CREATE TABLE strkey (code VARCHAR(20) PRIMARY KEY, body TEXT)",
    "INSERT INTO strkey SELECT CONCAT('c', seq), REPEAT('x', 200) FROM seq_1_to_2000",
    "CREATE TABLE nokey (a INT, body TEXT)",
    "INSERT INTO nokey SELECT seq %% 10, REPEAT('y', 150) FROM seq_1_to_2000",
    "INSERT INTO nokey SELECT seq %% 10, REPEAT('y', 150) FROM seq_1_to_5",  # duplicate rows too
]
EXACT = {
    "big_int": "SELECT id, MD5(body), LENGTH(body), CAST(doc AS CHAR) FROM {} ORDER BY id",
    "composite": "SELECT tenant, name, HEX(v) FROM {} ORDER BY tenant, name",
    "strkey": "SELECT code, body FROM {} ORDER BY code",
    "nokey": "SELECT a, body, COUNT(*) FROM {} GROUP BY a, body ORDER BY a, body",
}


def _sql(store, key: str) -> bytes:
    return zstandard.ZstdDecompressor().stream_reader(store.open_read(key)).read()


def _inserts(sql: bytes, table: str) -> int:
    return len(re.findall(rb"\nINSERT INTO `" + table.encode() + rb"` ", sql))


def test_bounds_and_conditions_cover_every_value_once():
    assert chunks.bounds(1, 100, 4) == [26, 51, 76]
    assert chunks.bounds(-5, -3, 10) == [-4, -3]  # fewer parts than asked when the range is small
    assert chunks.bounds(7, 7, 4) == []
    assert chunks.conditions("id", []) == [None]
    conds = chunks.conditions("id", chunks.bounds(-50, 50, 6))
    assert conds[0] == "`id` < -34" and conds[-1] == "`id` >= 34" and len(conds) == 6
    for value in range(-60, 61):  # each value (also beyond MIN/MAX) falls in exactly one range
        hits = [c for c in conds if eval(c.replace("`id`", str(value)).replace(" AND ", " and "))]
        assert len(hits) == 1, (value, hits)
    assert chunks.combine_checksums(["crc32ws:2:10", "crc32ws:3:5"]) == "crc32ws:5:15"
    assert chunks.combine_checksums(["crc32ws:2:10", None]) is None


def test_a_table_cut_in_chunks_dumps_and_restores_exactly(fresh_db, local_store):
    url = fresh_db
    for sql in TABLES:
        query(url, url.database, sql)
    query(url, url.database, "ANALYZE TABLE big_int, composite, strkey, nokey")
    conn = open_connection(url)
    try:
        with conn.cursor() as cur:
            tables = read_tables(cur, url.database)
            planned = chunks.plan(cur, url.database, tables, workers=2, chunk_bytes=32 * 1024)
    finally:
        conn.close()
    whole = loaded_checksums(url, url.database, workers=1)  # one query per table, no chunks
    count = {t.name: c for t in tables for c in [sum(1 for p in planned if p.table.name == t.name)]}
    assert count["big_int"] >= 4 and count["composite"] >= 2 and count["strkey"] == 1 and count["nokey"] == 1

    backup = backup_database(url, local_store, chunk_bytes=32 * 1024)
    entries = backup.manifest.tables
    assert {n: e.server_checksum for n, e in entries.items()} == whole  # chunk sums add up to the whole table's
    assert entries["big_int"].rows == 3000 and entries["nokey"].rows == 2005
    sql = _sql(local_store, backup.manifest.key)
    assert _inserts(sql, "big_int") >= count["big_int"]  # one query per chunk: at least one INSERT each
    assert _inserts(sql, "strkey") == 1 and _inserts(sql, "nokey") == 1

    copy = url.database + "__copy"
    restore_backup(url, local_store, backup.manifest.key, database=copy, pre_restore_backup=False,
                   from_database=url.database)
    for table, exact in EXACT.items():
        before = query(url, url.database, exact.format(table))
        assert before and query(url, copy, exact.format(table)) == before, table
    result = verify_backup(url, local_store, backup.manifest.key)
    assert result.ok, result.problems
    # The loaded copy is hashed in chunks too, over two connections (restore.loaded_checksums): the same figures.
    query(url, copy, "ANALYZE TABLE big_int, composite, strkey, nokey")
    assert loaded_checksums(url, copy, workers=2, chunk_bytes=32 * 1024) == whole
    assert loaded_checksums(url, copy, workers=1) == whole
    query(url, copy, "DELETE FROM big_int WHERE id = -6")  # one row of one chunk gone: that table differs
    changed = loaded_checksums(url, copy, workers=2, chunk_bytes=32 * 1024)
    assert changed["big_int"].startswith("crc32ws:2999:") and changed != whole
    assert {n: v for n, v in changed.items() if n != "big_int"} == {n: v for n, v in whole.items() if n != "big_int"}


def test_the_loaded_copy_is_planned_by_the_bytes_loaded_not_by_stale_statistics(fresh_db):
    """Right after a load, information_schema can still give a table its empty size (16 KiB): the restore plans
    the checksum of the loaded copy by the INSERT bytes the loader counted per table (LoadResult.table_bytes), so
    the largest table is still cut. Before, the 59% table of the benchmark was hashed whole on one connection."""
    from rusing_ops.backups.confine import Action
    from rusing_ops.backups.load import Loader

    url = fresh_db
    rows = ",".join(f"({i},'{'x' * 500}')" for i in range(1, 2001)).encode()
    actions = [Action("ddl", b"CREATE TABLE wide (id INT PRIMARY KEY, body TEXT)", 1, "CREATE TABLE"),
               Action("ddl", b"CREATE TABLE tiny (id INT PRIMARY KEY)", 2, "CREATE TABLE"),
               Action("data", b"INSERT INTO `wide` VALUES " + rows, 3, "INSERT", "wide"),
               Action("data", b"INSERT INTO `tiny` VALUES (1),(2)", 4, "INSERT", "tiny")]
    loaded = Loader(url, url.database).load(actions)
    assert loaded.table_bytes == {"wide": len(actions[2].sql), "tiny": len(actions[3].sql)}
    conn = open_connection(url)
    try:
        with conn.cursor() as cur:
            tables = read_tables(cur, url.database)
            by_size = chunks.plan(cur, url.database, tables, workers=2, chunk_bytes=64 * 1024,
                                  sizes=loaded.table_bytes)
    finally:
        conn.close()
    whole = loaded_checksums(url, url.database, workers=1)  # one query per table, no chunks
    assert sum(1 for c in by_size if c.table.name == "wide") >= 8  # ~1 MB of INSERTs in 64 KiB chunks
    assert loaded_checksums(url, url.database, workers=2, chunk_bytes=64 * 1024, sizes=loaded.table_bytes) == whole
    assert whole["wide"].startswith("crc32ws:2000:") and whole["tiny"].startswith("crc32ws:2:")
    # Chunks restore.EarlyChecksums already hashed are taken as given (the same plan: same index and count);
    # a part of another plan (another count) is not. A figure planted for chunk 0 shows which were read.
    count = sum(1 for c in by_size if c.table.name == "wide")
    first = next(c for c in by_size if c.table.name == "wide" and c.index == 0)
    conn = open_connection(url)
    try:
        with conn.cursor() as cur:
            cur.execute(checksum_sql(url.database, first.table, first.where))
            rows0, _ = cur.fetchone()
    finally:
        conn.close()
    planted = {("wide", 0, count): f"crc32ws:{int(rows0)}:7", ("wide", 1, count + 1): "crc32ws:0:0"}
    mixed = loaded_checksums(url, url.database, workers=2, chunk_bytes=64 * 1024, sizes=loaded.table_bytes,
                             done=planted)
    assert mixed["tiny"] == whole["tiny"] and mixed["wide"].startswith("crc32ws:2000:")
    assert mixed["wide"] != whole["wide"]  # chunk 0's planted sum was used, chunk 1's foreign part was not


def test_one_connection_dumps_whole_tables(fresh_db):
    query(fresh_db, fresh_db.database, TABLES[0])
    query(fresh_db, fresh_db.database, TABLES[1])
    conn = open_connection(fresh_db)
    try:
        with conn.cursor() as cur:
            tables = read_tables(cur, fresh_db.database)
            planned = chunks.plan(cur, fresh_db.database, tables, workers=1, chunk_bytes=1024)
    finally:
        conn.close()
    assert [(p.table.name, p.where) for p in planned] == [("big_int", None)]


def test_insert_size_follows_the_servers_packet_and_the_dump_keeps_history(binlog_server, local_store, monkeypatch):
    name = f"rot_{uuid.uuid4().hex[:10]}"
    admin = binlog_server.socket_connection()
    with admin.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.max_allowed_packet")
        original = int(cur.fetchone()[0])
        cur.execute("SET GLOBAL max_allowed_packet = 1048576")
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    url = parse_database_url(binlog_server.url(name))
    kept = []
    real = dump.history_kept

    def spy(*args):  # the real guard, recorded
        kept.append(args[0].database)
        return real(*args)

    monkeypatch.setattr(dump, "history_kept", spy)
    try:
        query(url, name, "CREATE TABLE t (id INT PRIMARY KEY, body TEXT)")
        query(url, name, "INSERT INTO t SELECT seq, REPEAT('z', 1000) FROM seq_1_to_3000")  # 3 MB of rows
        backup = backup_database(url, local_store, workers=1)
        assert kept == [name]
        sql = _sql(local_store, backup.manifest.key)
        sizes = [int(n) for n in re.findall(rb"-- @(\d+)\nINSERT", sql)]
        assert len(sizes) > 2 and max(sizes) <= 1048576 - 64 * 1024  # flavour.statement_bytes, not 1 MiB
        query(url, name, "CREATE TABLE t2 LIKE t")
        conn = open_connection(url)  # each INSERT as written is accepted by this server (1 MiB ones were not)
        try:
            with conn.cursor() as cur:
                for statement in re.findall(rb"-- @\d+\n(INSERT INTO `t` [^\n]*);\n", sql):
                    cur.execute(statement.replace(b"INSERT INTO `t` ", b"INSERT INTO `t2` ", 1))
        finally:
            conn.close()
        assert query(url, name, "SELECT COUNT(*), SUM(LENGTH(body)) FROM t2") == [(3000, 3000000)]
    finally:
        with admin.cursor() as cur:
            cur.execute(f"SET GLOBAL max_allowed_packet = {original}")
        admin.close()
        drop_databases_like(url, name)


def test_own_backups_load_utf8_tables_as_bytes_and_others_as_text(every_type_db, local_store, server_url):
    """load.py: this tool's backups load tables whose text is all UTF-8 under SET NAMES binary (myloader's way,
    10-40% faster here) and a table with a latin1 column under utf8mb4; without binary_names (the path of a file
    another tool wrote) every table loads under the SET NAMES the file says. The
    values come back exactly either way (the staging checksum compares them too)."""
    from rusing_ops.backups import confine
    from rusing_ops.backups import source as sources
    from rusing_ops.backups.load import Loader

    backup = backup_database(every_type_db, local_store)
    latin1 = {name for name, in query(server_url, "information_schema",
              "SELECT DISTINCT TABLE_NAME FROM COLUMNS WHERE TABLE_SCHEMA = %s AND CHARACTER_SET_NAME = 'latin1'",
              (every_type_db.database,))}
    assert latin1 == {"users"}  # legacy_latin1 VARCHAR ... CHARACTER SET latin1, with non-ASCII values
    results = {}
    for own in (True, False):
        copy = f"{every_type_db.database}__names{int(own)}"
        query(server_url, "", f"CREATE DATABASE `{copy}` CHARACTER SET utf8mb4")
        src = sources.resolve_source(local_store, backup.manifest.key)
        conn = open_connection(server_url, "")
        try:
            scope = confine.server_scope(conn, src.label, copy, src.own_database())
        finally:
            conn.close()
        results[own] = Loader(server_url, copy, binary_names=own).load(confine.one_pass(src, scope).actions())
        for table, exact in {"users": "SELECT id, legacy_latin1, HEX(legacy_latin1) FROM {} ORDER BY id",
                             "payments": "SELECT * FROM {} ORDER BY 1"}.items():
            before = query(server_url, every_type_db.database, exact.format(table))
            assert before and query(server_url, copy, exact.format(table)) == before, (own, table)
        assert loaded_checksums(server_url, copy) == {n: e.server_checksum for n, e in backup.manifest.tables.items()}
    assert "users" not in results[True].as_bytes and "payments" in results[True].as_bytes
    assert set(results[True].as_bytes) == set(results[True].table_bytes) - latin1
    assert results[False].as_bytes == []
