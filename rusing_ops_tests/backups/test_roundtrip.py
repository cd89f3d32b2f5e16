"""Backup -> restore round trips against the real MariaDB and both stores (local directory, SeaweedFS S3)."""

from __future__ import annotations

import gzip
import json
import subprocess

import pytest
import zstandard

from rusing_ops.backups import catalog, keys
from rusing_ops.backups.dump import backup_database
from rusing_ops.backups.restore import restore_backup

from .conftest import databases_like, query, snapshot


def test_round_trip_preserves_every_type_and_object(every_type_db, any_store):
    before = snapshot(every_type_db, every_type_db.database)
    result = backup_database(every_type_db, any_store, reason="Test run!")
    m = result.manifest
    assert m.key.startswith("backup-") and m.key.endswith("-test-run.sql.zst")
    assert any_store.exists(keys.manifest_key(m.key))
    assert {n: t.rows for n, t in m.tables.items()} == {
        "__drizzle_migrations": 2, "audit_no_pk": 3, "empty_table": 0, "enrollments": 3, "payments": 3003, "users": 4}
    assert m.migration_head["hash"] == "bbb" and m.migration_head["created_at"] == 1700000001000
    assert m.views == ["user_totals", "a_top_users"]  # dependency order, not name order
    assert m.triggers == ["payments_default_fx"] and m.routines == ["FUNCTION cents", "PROCEDURE touch_user"]
    assert m.bytes == len(any_store.get_bytes(m.key))

    copy = every_type_db.database + "__copy"
    restored = restore_backup(every_type_db, any_store, "latest", database=copy, pre_restore_backup=False,
                              from_database=every_type_db.database)
    assert restored.verified_against_manifest and restored.pre_restore_db is None
    after = snapshot(every_type_db, copy)
    assert after == before
    assert databases_like(every_type_db, every_type_db.database + "__restore") == []  # staging dropped


def test_backup_file_loads_with_the_mysql_client(every_type_db, local_store, server_url):
    result = backup_database(every_type_db, local_store)
    sql = zstandard.ZstdDecompressor().stream_reader(local_store.open_read(result.manifest.key)).read()
    target = every_type_db.database + "__cli"
    query(server_url, "", f"CREATE DATABASE `{target}`")
    subprocess.run(["mysql", "-h", server_url.host, "-P", str(server_url.port), "-u", server_url.user, target],
                   input=sql, check=True, capture_output=True)
    assert snapshot(server_url, target) == snapshot(server_url, every_type_db.database)


def test_gzip_backup_restores_in_place_keeping_replaced_tables(every_type_db, any_store, server_url):
    before = snapshot(server_url, every_type_db.database)
    backup = backup_database(every_type_db, any_store, compression="gzip", reason="manual")
    assert backup.manifest.key.endswith("-manual.sql.gz")
    with gzip.open(any_store.open_read(backup.manifest.key)) as f:
        assert f.read(13) == b"-- rusing_ops"
    query(every_type_db, every_type_db.database, "DELETE FROM enrollments")
    query(every_type_db, every_type_db.database, "DROP VIEW a_top_users")

    result = restore_backup(every_type_db, any_store, backup.manifest.key)
    assert snapshot(server_url, every_type_db.database) == before
    assert result.pre_restore_db.startswith(every_type_db.database + "__pre_restore_")
    assert query(server_url, result.pre_restore_db, "SELECT COUNT(*) FROM enrollments") == [(0,)]
    pre = catalog.resolve(any_store, result.pre_restore_backup)
    assert pre.reason == "pre-restore" and pre.manifest.tables["enrollments"].rows == 0


@pytest.mark.parametrize("suffix", [".sql", ".sql.gz"])
def test_plain_mysqldump_file_restores(every_type_db, server_url, tmp_path, local_store, suffix):
    dump = subprocess.run(["mysqldump", "-h", server_url.host, "-P", str(server_url.port), "-u", server_url.user,
                           "--single-transaction", "--routines", "--triggers", "--hex-blob",
                           every_type_db.database], check=True, capture_output=True).stdout
    path = tmp_path / f"backup-2026-02-15T120000{suffix}"
    path.write_bytes(gzip.compress(dump) if suffix.endswith(".gz") else dump)
    target = every_type_db.database + "__md"
    result = restore_backup(every_type_db, local_store, str(path), database=target, pre_restore_backup=False)
    assert not result.verified_against_manifest
    assert result.tables["payments"] == 3003
    assert snapshot(server_url, target) == snapshot(server_url, every_type_db.database)


def test_catalog_lists_newest_first_and_resolves_names(every_type_db, local_store):
    import datetime as dt

    first = backup_database(every_type_db, local_store, now=dt.datetime(2026, 1, 1, 3, 0, tzinfo=dt.UTC))
    second = backup_database(every_type_db, local_store, reason="nightly",
                             now=dt.datetime(2026, 1, 2, 3, 0, tzinfo=dt.UTC))
    entries = catalog.list_backups(local_store)
    assert [e.key for e in entries] == [second.manifest.key, first.manifest.key]
    assert entries[0].name == f"backup-{every_type_db.database}-2026-01-02T030000Z-nightly"
    assert catalog.resolve(local_store, "latest").key == second.manifest.key
    assert catalog.resolve(local_store, f"backup-{every_type_db.database}-2026-01-01T030000Z").key == first.manifest.key
    summary = entries[0].summary()
    assert summary["rows"] == 3015 and summary["verified"] is False
    assert json.loads(local_store.get_bytes(keys.manifest_key(first.manifest.key)))["key"] == first.manifest.key


def test_migration_head_is_named_by_the_drizzle_journal(every_type_db, local_store, tmp_path):
    (tmp_path / "drizzle" / "meta").mkdir(parents=True)
    (tmp_path / "drizzle" / "meta" / "_journal.json").write_text(json.dumps({"entries": [
        {"idx": 0, "when": 1700000000000, "tag": "0000_initial"}, {"idx": 1, "when": 1700000001000, "tag": "0001_next"}]}))
    head = backup_database(every_type_db, local_store, drizzle_dir=tmp_path / "drizzle").manifest.migration_head
    assert head == {"hash": "bbb", "created_at": 1700000001000, "tag": "0001_next"}
