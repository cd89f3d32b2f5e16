"""The packet reader (rawrows.py) and the checksum the dump computes in its own pass (checksum.row_checksum).

The dump's query returns each row's SQL text and the row's hash, and the dump adds the hashes up itself; restore and
verify have the server compute checksum.checksum_sql on the loaded copy. Both must give the same figure.
"""

from __future__ import annotations

from rusing_ops.backups.checksum import table_checksums
from rusing_ops.backups.connection import open_connection
from rusing_ops.backups.dump import backup_database
from rusing_ops.backups.rawrows import checked_rows
from rusing_ops.backups.restore import restore_backup
from rusing_ops.backups.schema import quote_text

LENGTHS = [0, 1, 250, 251, 65535, 65536, (1 << 24) - 1 - 16, 3 << 20]  # every length-prefix size, NULL below


def test_checked_rows_reads_every_length_prefix_and_sums_the_second_column(server_url):
    conn = open_connection(server_url, "")
    try:
        sql = ("SELECT t, n FROM (SELECT -1 AS k, NULL AS t, 7 AS n UNION ALL "
               + " UNION ALL ".join(f"SELECT {i}, REPEAT('é', {n} DIV 2), {n}" for i, n in enumerate(LENGTHS))
               + ") x ORDER BY k")
        texts, total = [], 0
        for batch, batch_total in checked_rows(conn, sql):
            texts += batch
            total += batch_total
        assert texts[0] is None
        assert [len(t) for t in texts[1:]] == [n // 2 * 2 for n in LENGTHS]
        assert set(b"".join(texts[1:]).decode()) <= {"é"}
        assert total == 7 + sum(LENGTHS)
        with conn.cursor() as cur:  # the connection is left as PyMySQL leaves it
            cur.execute("SELECT 1")
            assert cur.fetchone() == (b"1",)
    finally:
        conn.close()


def test_the_dumps_own_checksums_equal_the_servers_checksum_query(every_type_db, local_store):
    backup = backup_database(every_type_db, local_store, chunk_bytes=1)  # every integer-keyed table in chunks too
    conn = open_connection(every_type_db)
    try:
        expected = table_checksums(conn, every_type_db.database)
    finally:
        conn.close()
    assert expected and {n: e.server_checksum for n, e in backup.manifest.tables.items()} == expected


def test_client_quoting_gives_the_servers_quote_byte_for_byte(server_url):
    """Large text columns are quoted by the client (schema.quote_text) instead of QUOTE() on the server."""
    values = [b"", b"plain", b"it's", b"back\\slash\\", b"nul\x00byte", b"ctrl\x1az", b"\\'\\'\x00\x1a\x00",
              b"cr\r\nlf\n\ttab", "é🎓 Reçu \"json\": {\\\"x\\\"}".encode(), bytes(range(32, 127)) * 3, None]
    conn = open_connection(server_url, "")
    try:
        with conn.cursor() as cur:
            for value in values:
                cur.execute("SELECT QUOTE(CONVERT(%s USING utf8mb4))", (value,))
                assert quote_text(value) == cur.fetchone()[0], value
    finally:
        conn.close()


def test_a_row_split_around_client_quoted_texts_dumps_as_one_tuple(fresh_db, local_store):
    """Text columns first, last, adjacent, NULL and between server-rendered ones: the same rows come back."""
    conn = open_connection(fresh_db)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE t (a TEXT, id INT PRIMARY KEY, b LONGTEXT, c MEDIUMTEXT, d BLOB, e TEXT) "
                        "DEFAULT CHARSET=utf8mb4")
            cur.execute("INSERT INTO t VALUES ('x''\\\\y', 1, NULL, '', 0x00ff, 'z\\0\\Z'), (NULL, 2, 'é', NULL, NULL, "
                        "NULL), (REPEAT('q', 65000), 3, 'a', 'b', '', '🎓')")
            cur.execute("SELECT * FROM t ORDER BY id")
            before = cur.fetchall()
        backup = backup_database(fresh_db, local_store)
        copy = fresh_db.database + "__copy"
        restore_backup(fresh_db, local_store, backup.manifest.key, database=copy, pre_restore_backup=False,
                       from_database=fresh_db.database)
        with conn.cursor() as cur:
            cur.execute(f"SELECT * FROM `{copy}`.t ORDER BY id")
            assert cur.fetchall() == before
    finally:
        conn.close()
