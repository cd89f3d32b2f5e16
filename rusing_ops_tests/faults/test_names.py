"""Every name MySQL accepts works: a database `rel-dash-…` with tables `col test`, `weird``tick`, `ünï` and a
column with a space backs up, verifies and restores (before issue 8 the name check refused all of them)."""

from __future__ import annotations

import uuid

import pymysql
import pytest

from rusing_ops.backups.dump import backup_database
from rusing_ops.backups.restore import restore_backup
from rusing_ops.backups.verify import verify_backup
from rusing_ops.core.database import quote_ident
from rusing_ops.core.errors import ConfigError
from rusing_ops_tests.conftest import admin_connection

TABLES = {"col test": "`col test`", "weird`tick": "`weird``tick`", "ünï": "`ünï`"}


def test_quote_ident_accepts_every_name_mysql_accepts_and_refuses_the_rest():
    assert quote_ident("rel-dash") == "`rel-dash`"
    assert quote_ident("weird`tick") == "`weird``tick`"
    assert quote_ident("col test") == "`col test`" and quote_ident("ünï") == "`ünï`"
    assert quote_ident("x" * 64) == f"`{'x' * 64}`"
    for bad in ("", "nul\x00byte", "x" * 65):
        with pytest.raises(ConfigError):
            quote_ident(bad)


@pytest.fixture
def dashed_db(server_url):
    name = f"rel-dash-{uuid.uuid4().hex[:6]}"
    conn = admin_connection(server_url)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        for quoted in TABLES.values():
            cur.execute(f"CREATE TABLE `{name}`.{quoted} (id INT PRIMARY KEY, `first name` VARCHAR(20), "
                        "`we``ird` TEXT)")
            cur.execute(f"INSERT INTO `{name}`.{quoted} VALUES (1, 'Zoé', 'a`b'), (2, NULL, '')")
        cur.execute(f"CREATE VIEW `{name}`.`v w` AS SELECT `first name` FROM `{name}`.`col test`")
    yield server_url.with_database(name)
    with conn.cursor() as cur:
        cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE %s",
                    (name.replace("_", "\\_") + "%",))
        for (db,) in cur.fetchall():
            cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(db)}")
    conn.close()


def _rows(url, database: str) -> dict:
    conn = pymysql.connect(**url.pymysql_kwargs(database=database))
    try:
        with conn.cursor() as cur:
            out = {}
            for name, quoted in TABLES.items():
                cur.execute(f"SELECT id, `first name`, `we``ird` FROM {quoted} ORDER BY id")
                out[name] = cur.fetchall()
            cur.execute("SELECT * FROM `v w` ORDER BY 1")
            out["v w"] = cur.fetchall()
            return out
    finally:
        conn.close()


def test_awkward_names_back_up_verify_and_restore(dashed_db, local_store):
    url = dashed_db
    before = _rows(url, url.database)
    assert before["weird`tick"] == ((1, "Zoé", "a`b"), (2, None, ""))
    backup = backup_database(url, local_store)
    assert set(backup.manifest.tables) == set(TABLES) and backup.manifest.views == ["v w"]
    result = verify_backup(url, local_store, backup.manifest.key)
    assert result.ok, result.problems
    assert result.tables["weird`tick"]["checksum_ok"] is True

    with pymysql.connect(**url.pymysql_kwargs(), autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM `col test`")  # the damage the restore repairs, in place
    restored = restore_backup(url, local_store, backup.manifest.key)
    assert _rows(url, url.database) == before
    assert restored.pre_restore_db.startswith(url.database + "__pre_restore_")
    assert restored.pre_restore_backup is not None  # the damaged state was backed up first, under the same name

    copy = url.database + " copy"
    restore_backup(url, local_store, backup.manifest.key, database=copy, pre_restore_backup=False,
                   from_database=url.database)
    assert _rows(url, copy) == before
