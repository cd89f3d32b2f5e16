"""The packet reader (rawrows.py) and the checksum the dump computes in its own pass (checksum.row_checksum).

The dump's query returns each row's SQL text and the row's hash, and the dump adds the hashes up itself; restore and
verify have the server compute checksum.checksum_sql on the loaded copy. Both must give the same figure.
"""

from __future__ import annotations

import pytest
from pymysql import err

from rusing_ops.backups import rawrows
from rusing_ops.backups.connection import open_connection
from rusing_ops.backups.dump import backup_database
from rusing_ops.backups.rawrows import checked_rows
from rusing_ops.backups.restore import loaded_checksums
from rusing_ops.backups.schema import read_tables

LENGTHS = [0, 1, 250, 251, 65535, 65536, (1 << 24) - 1 - 16, 3 << 20]  # every length-prefix size, NULL below


@pytest.mark.parametrize("scanner", ["c", "python"])
def test_checked_rows_reads_every_length_prefix_and_sums_the_second_column(server_url, scanner):
    if scanner == "c":
        pytest.importorskip("rusing_ops.backups._speedups")
    scan = rawrows.scan if scanner == "c" else rawrows.scan_py
    conn = open_connection(server_url, "")
    try:
        sql = ("SELECT t, LPAD(n, 10, '0') FROM (SELECT -1 AS k, NULL AS t, 7 AS n UNION ALL "
               + " UNION ALL ".join(f"SELECT {i}, REPEAT('é', {n} DIV 2), {n}" for i, n in enumerate(LENGTHS))
               + ") x ORDER BY k")
        texts, total = [], 0
        for batch, _ends, batch_total, _special in checked_rows(conn, sql, scanner=scan):
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
    other = open_connection(server_url, "")
    with pytest.raises(err.DataError, match="10 digits"):  # not the layout the reader takes apart
        list(checked_rows(other, "SELECT REPEAT('x', 300), 5", scanner=scan))
    assert not other.open  # the rest of that result is still on the wire: the connection was closed, not reused


def test_the_dumps_own_checksums_equal_the_servers_checksum_query(every_type_db, local_store):
    backup = backup_database(every_type_db, local_store, chunk_bytes=1)  # every integer-keyed table in chunks too
    expected = loaded_checksums(every_type_db, every_type_db.database, workers=1)  # one query per table
    assert expected and {n: e.server_checksum for n, e in backup.manifest.tables.items()} == expected


def test_long_texts_are_quoted_by_replace_exactly_as_quote_would(fresh_db):
    """A TEXT value over schema.LONG_BYTES is rendered by REPLACEs (cheaper for the server): same bytes as QUOTE."""
    specials = "\\ ' \" \0 \x1a \r\n \t é🎓 ` % _ \\' ''"
    conn = open_connection(fresh_db)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE t (id INT PRIMARY KEY, a LONGTEXT, b TEXT CHARACTER SET utf8mb3, "
                        "c MEDIUMTEXT CHARACTER SET ascii) DEFAULT CHARSET=utf8mb4")
            long_ascii = ("\\'\0\x1a" + "x" * 300) * 2
            cur.execute("INSERT INTO t VALUES (1, %s, %s, %s), (2, %s, %s, %s), (3, NULL, NULL, NULL)",
                        (specials * 40, "é\\'" * 200, long_ascii, "short 'one'", "\\", "\0"))
            table = next(t for t in read_tables(cur, fresh_db.database, with_ddl=False) if t.name == "t")
            rendered = ",".join(c.sql_text() for c in table.columns)
            quoted = ",".join(f"IF(`{c.name}` IS NULL,'NULL',QUOTE(`{c.name}`))" if c.data_type != "int"
                              else f"`{c.name}`" for c in table.columns)
            cur.execute(f"SELECT CONCAT_WS('|',{rendered}) = CONCAT_WS('|',{quoted}), LENGTH(a) FROM t ORDER BY id")
            assert [r[0] for r in cur.fetchall()] == [b"1", b"1", b"1"]
    finally:
        conn.close()


def test_null_flags_skip_not_null_columns_and_keep_the_checksum_older_backups_recorded(fresh_db):
    """checksum.null_flags writes a NOT NULL column's ISNULL as the constant 0 (cheaper for the server): the row
    hashes must stay those of ISNULL over every column, which backups made before recorded in their manifests --
    zero dates in NOT NULL columns (where `IS NULL` in a WHERE clause would say 1) and real NULLs included."""
    from rusing_ops.backups.checksum import null_flags, row_checksum

    conn = open_connection(fresh_db)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_mode = ''")
            cur.execute("CREATE TABLE z (id INT NOT NULL PRIMARY KEY, d DATE NOT NULL, dt DATETIME NOT NULL, "
                        "n INT NULL, s VARCHAR(5) NOT NULL, b BLOB NULL, ts TIMESTAMP NOT NULL DEFAULT 0, e INT NULL)")
            cur.execute("INSERT INTO z VALUES (1,'0000-00-00','0000-00-00 00:00:00',NULL,'',NULL,0,NULL),"
                        "(2,'2020-00-01','2020-01-00 00:00:00',0,'0',X'00',0,1),(3,'2024-02-29','2024-02-29 23:59:59',"
                        "NULL,'NULL','',0,NULL)")
            table = next(t for t in read_tables(cur, fresh_db.database, with_ddl=False) if t.name == "z")
            flags = null_flags(table)
            assert flags == "CONCAT('000',ISNULL(`n`),'0',ISNULL(`b`),'0',ISNULL(`e`))", flags
            every = "CONCAT(" + ",".join(f"ISNULL(`{c.name}`)" for c in table.columns) + ")"
            before = row_checksum(table).replace(flags, every)
            cur.execute(f"SELECT id, {row_checksum(table)}, {before}, {flags}, {every} FROM z ORDER BY id")
            rows = cur.fetchall()
    finally:
        conn.close()
    assert [r[3] for r in rows] == [r[4] for r in rows] == [b"00010101", b"00000000", b"00010001"]
    assert [r[1] for r in rows] == [r[2] for r in rows] and len({r[1] for r in rows}) == 3


@pytest.mark.parametrize("cap", [1, 40, 333, 5000])
def test_rows_are_packed_into_statements_up_to_the_cap_and_no_further(fresh_db, cap):
    """dump.dump_rows cuts each batch of rows where the next row would take a statement past ``statement_bytes``
    (sizes summed for the whole batch at once); a row longer than the cap is a statement of its own."""
    from rusing_ops.backups.dump import dump_rows

    conn = open_connection(fresh_db)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE packed (id INT PRIMARY KEY, v VARCHAR(200))")
            cur.execute("INSERT INTO packed SELECT seq, REPEAT('x', (seq * 37) % 181) FROM seq_1_to_3000")
            table = next(t for t in read_tables(cur, fresh_db.database) if t.name == "packed")
        emitted: list[bytes] = []
        entry = dump_rows(conn, table, emitted.append, statement_bytes=cap)
    finally:
        conn.close()
    head = table.insert_head()
    statements = [e.split(b"\n", 1)[1][len(head):-2] for e in emitted]  # "-- @n\n" + head + body + ";\n"
    rows = [s[1:-1].split(b"),(") for s in statements]
    assert [int(r.split(b",")[0]) for group in rows for r in group] == list(range(1, 3001))
    assert entry.rows == 3000 and entry.server_checksum.startswith("crc32ws:3000:")
    sizes = [[len(r) + 3 for r in group] for group in rows]  # each row's "(...)" and its comma
    for i, group in enumerate(sizes):
        assert len(group) == 1 or sum(group) - 1 <= cap, (i, sum(group), cap)  # within the cap, or one row alone
        if i + 1 < len(sizes):
            assert sum(group) + sizes[i + 1][0] - 1 > cap  # the next row would not have fitted


def test_tables_of_many_character_sets_back_up_and_restore_byte_for_byte(fresh_db, local_store):
    """Columns in character sets the server cannot join as they are (cp1251 with latin2, utf16 with utf8mb4) used
    to fail the backup ("Illegal mix of collations" in the row checksum), and a backup's `_cp1251 X'..'` literals
    were refused by the restore's statement check. Now the checksum takes such a table's texts in utf8mb4, and every
    character set introducer is a literal: the copy holds the very bytes. A table the server joins as it is (latin1
    with utf8mb4) keeps the checksum earlier backups recorded."""
    from rusing_ops.backups.checksum import row_checksum
    from rusing_ops.backups.restore import restore_backup

    charsets = ["cp1251", "latin2", "koi8r", "utf16", "sjis", "big5", "greek", "ucs2"]
    words = {"cp1251": "привет", "latin2": "Łódź", "koi8r": "ёжик", "utf16": "é🎓", "sjis": "日本", "big5": "中文",
             "greek": "αβγ", "ucs2": "ö€"}
    conn = open_connection(fresh_db)
    try:
        with conn.cursor() as cur:
            cols = ", ".join(f"c_{c} VARCHAR(20) CHARACTER SET {c} NULL" for c in charsets)
            cur.execute(f"CREATE TABLE many (id INT PRIMARY KEY, u VARCHAR(20) CHARACTER SET utf8mb4, {cols}, "
                        "e ENUM('à','b') CHARACTER SET latin1, t TEXT CHARACTER SET cp1250) DEFAULT CHARSET=utf8mb4")
            cur.execute("CREATE TABLE joined (id INT PRIMARY KEY, u VARCHAR(20), l VARCHAR(20) CHARACTER SET latin1) "
                        "DEFAULT CHARSET=utf8mb4")
            values = ", ".join(f"_utf8mb4'{words[c]}'" for c in charsets)
            cur.execute(f"INSERT INTO many VALUES (1, 'ü', {values}, 'à', _utf8mb4'Žluťoučký'), "
                        f"(2, NULL, {', '.join(['NULL'] * len(charsets))}, NULL, NULL)")
            cur.execute("INSERT INTO joined VALUES (1, 'é🎓', _utf8mb4'café'), (2, NULL, '')")
            tables = {t.name: t for t in read_tables(cur, fresh_db.database, with_ddl=False)}
            assert tables["many"].checksum_in_unicode and not tables["joined"].checksum_in_unicode
            old = row_checksum(tables["joined"])  # as written before: no CONVERT anywhere
            assert "CONVERT" not in old
            hexed = ", ".join(f"HEX(c_{c})" for c in charsets)
            cur.execute(f"SELECT {hexed}, HEX(e), HEX(t) FROM many ORDER BY id")
            source = cur.fetchall()
        backup = backup_database(fresh_db, local_store).manifest
        copy = fresh_db.database + "__copy"
        restore_backup(fresh_db, local_store, "latest", database=copy, pre_restore_backup=False,
                       from_database=fresh_db.database)  # compares the copy's checksums with the manifest's
        with conn.cursor() as cur:
            cur.execute(f"SELECT {hexed}, HEX(e), HEX(t) FROM `{copy}`.many ORDER BY id")
            assert cur.fetchall() == source and source[0][0] == "привет".encode("cp1251").hex().upper().encode()
            cur.execute(f"SELECT COUNT(*), SUM({old}) FROM joined")
            count, total = cur.fetchone()
    finally:
        conn.close()
    assert backup.tables["joined"].server_checksum == f"crc32ws:{int(count)}:{int(total)}"
    assert backup.tables["many"].rows == 2
