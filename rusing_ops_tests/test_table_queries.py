"""The two questions asked of information_schema.TABLES, written once in core/database.py: the same answers through
a SQLAlchemy connection and a raw PyMySQL cursor (binary-safe connections return bytes), current or named schema."""

from __future__ import annotations

import pymysql

from rusing_ops.core import database as dbmod


def test_list_tables_and_table_exists_on_both_connection_kinds(fresh_db, db_conn):
    with db_conn.cursor() as cur:
        cur.execute("CREATE TABLE b_rows (id INT PRIMARY KEY)")
        cur.execute("CREATE TABLE a_rows (id INT PRIMARY KEY)")
        cur.execute("CREATE TABLE versioned (id INT PRIMARY KEY) WITH SYSTEM VERSIONING")
        cur.execute("CREATE VIEW v_rows AS SELECT id FROM a_rows")
        cur.execute("CREATE SEQUENCE seq_ids")
    engine = dbmod.create_engine(fresh_db)
    raw = pymysql.connect(**fresh_db.pymysql_kwargs(), binary_prefix=True)
    try:
        with engine.connect() as conn, raw.cursor() as cur:
            for source in (conn, cur):
                assert dbmod.list_tables(source, fresh_db.database) == ["a_rows", "b_rows"]
                assert dbmod.list_tables(source) == ["a_rows", "b_rows"]  # the current database
                assert dbmod.list_tables(source, fresh_db.database, dbmod.ROW_TABLES) == ["a_rows", "b_rows",
                                                                                          "versioned"]
                assert dbmod.list_tables(source, fresh_db.database, "VIEW") == ["v_rows"]
                assert dbmod.list_tables(source, fresh_db.database, (*dbmod.ROW_TABLES, "SEQUENCE")) == [
                    "a_rows", "b_rows", "seq_ids", "versioned"]
                assert dbmod.table_exists(source, "a_rows") and dbmod.table_exists(source, "v_rows")
                assert dbmod.table_exists(source, "a_rows", fresh_db.database)
                assert not dbmod.table_exists(source, "missing") and not dbmod.table_exists(source, "a_rows", "mysql")
    finally:
        raw.close()
        engine.dispose()
