"""Verification by restore into a scratch database, and the retention policy (never the newest verified)."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib

import pytest
import zstandard

from rusing_ops.backups import catalog, keys
from rusing_ops.backups.catalog import BackupEntry
from rusing_ops.backups.dump import backup_database
from rusing_ops.backups.manifest import Manifest
from rusing_ops.backups.restore import RestoreRefused, restore_backup
from rusing_ops.backups.retention import RetentionPolicy, plan_prune, prune_backups
from rusing_ops.backups.sqlsplit import split_statements
from rusing_ops.backups.verify import verify_backup

from .conftest import databases_like, snapshot

UTC = dt.UTC


def test_verify_restores_into_scratch_and_matches_manifest(every_type_db, any_store, server_url):
    backup = backup_database(every_type_db, any_store)
    result = verify_backup(every_type_db, any_store, "latest")
    assert result.ok, result.problems
    assert result.key == backup.manifest.key
    assert result.tables["payments"] == {"rows_expected": 3003, "rows_found": 3003, "checksum_ok": True}
    assert result.scratch_db.startswith(every_type_db.database + "__verify_")
    assert databases_like(server_url, every_type_db.database + "__") == []
    entry = catalog.resolve(any_store, "latest")
    assert entry.verified and entry.verification["tables"]["users"]["rows_found"] == 4


def test_verify_reports_a_content_difference(every_type_db, local_store):
    backup = backup_database(every_type_db, local_store)
    manifest = backup.manifest
    assert manifest.tables["users"].server_checksum.startswith("crc32ws:4:")
    manifest.tables["users"].server_checksum = "crc32ws:4:0"  # as if the snapshot had held other values
    local_store.put_bytes(keys.manifest_key(manifest.key), manifest.to_json())
    result = verify_backup(every_type_db, local_store, manifest.key)
    assert not result.ok
    assert len(result.problems) == 1 and "server checksum of table(s) users differs" in result.problems[0]
    assert not catalog.resolve(local_store, "latest").verified


def test_verify_fails_naming_the_table_when_a_value_is_altered_inside_a_self_consistent_backup(every_type_db,
                                                                                                 local_store):
    """A rendering bug or an attacker: one value differs in the file, and the file still matches its manifest
    (sha256, size, and the checksum of the rendering recomputed). Only the server's checksum can tell."""
    backup = backup_database(every_type_db, local_store)
    manifest = backup.manifest
    sql = zstandard.ZstdDecompressor().stream_reader(local_store.open_read(manifest.key)).read()
    assert sql.count(b"(1,1,1234567.8912,") == 1
    sql = sql.replace(b"(1,1,1234567.8912,", b"(1,1,1234567.8913,")  # same length: every frame stays valid
    head = b"INSERT INTO `payments` ("
    bodies = [s[s.index(b") VALUES ") + 9:] for s in split_statements([sql]) if s.startswith(head)]
    manifest.tables["payments"].checksum = hashlib.sha256(b"".join(b + b"," for b in bodies)).hexdigest()
    data = zstandard.ZstdCompressor().compress(sql)
    manifest.sha256, manifest.bytes, manifest.uncompressed_bytes = hashlib.sha256(data).hexdigest(), len(data), len(sql)
    local_store.put_bytes(manifest.key, data)
    local_store.put_bytes(keys.manifest_key(manifest.key), manifest.to_json())
    result = verify_backup(every_type_db, local_store, manifest.key)
    assert not result.ok
    assert len(result.problems) == 1 and "server checksum of table(s) payments differs" in result.problems[0]
    before = snapshot(every_type_db, every_type_db.database)
    with pytest.raises(RestoreRefused) as refused:  # a restore of it stops at its staging copy
        restore_backup(every_type_db, local_store, manifest.key, pre_restore_backup=False,
                       lock=contextlib.nullcontext)  # the server-wide write lock is not what this test is about
    assert "payments" in refused.value.message and "was not touched" in refused.value.message
    assert snapshot(every_type_db, every_type_db.database) == before
    assert databases_like(every_type_db, every_type_db.database + "__") == []


def test_verify_reports_a_corrupted_backup(every_type_db, local_store):
    backup = backup_database(every_type_db, local_store)
    data = local_store.get_bytes(backup.manifest.key)
    local_store.put_bytes(backup.manifest.key, data[:-10])
    result = verify_backup(every_type_db, local_store, "latest")
    assert not result.ok and "does not match its manifest" in result.problems[0]


def _entry(when: str, verified: bool = False, complete: bool = True) -> BackupEntry:
    taken = dt.datetime.fromisoformat(when).replace(tzinfo=UTC)
    key = keys.make_key(taken)
    manifest = Manifest(key, "x", 1, 1, "zstd", "db", "v", {}) if complete else None
    return BackupEntry(key, key[:-8], taken, "", "zstd", 100, manifest, {"ok": True} if verified else None)


def test_retention_keeps_daily_weekly_monthly_and_newest_verified():
    entries = [_entry(f"2026-{m:02d}-{d:02d}T03:00:00") for m in (1, 2, 3) for d in (1, 9, 17, 25)]
    entries.append(_entry("2026-03-25T15:00:00"))  # second one that day: the later one counts for the day
    entries[0] = _entry("2026-01-01T03:00:00", verified=True)  # the only verified backup, and the oldest
    entries.append(_entry("2026-03-26T01:00:00", complete=False))  # still uploading
    entries.append(_entry("2025-12-01T01:00:00", complete=False))  # abandoned long ago
    plan = plan_prune(entries, RetentionPolicy(daily=2, weekly=3, monthly=2), now=dt.datetime(2026, 3, 26, 2, tzinfo=UTC))
    kept = {k[7:24]: why for k, why in plan.keep.items()}
    assert kept == {
        "2026-03-25T150000": ["daily", "weekly", "monthly", "newest complete"],
        "2026-03-17T030000": ["daily", "weekly"],
        "2026-03-09T030000": ["weekly"],
        "2026-02-25T030000": ["monthly"],
        "2026-01-01T030000": ["newest verified"],
        "2026-03-26T010000": ["incomplete, may still be uploading"],
    }
    assert len(plan.delete) == len(entries) - 6


def test_prune_deletes_only_what_the_plan_says_and_dry_run_deletes_nothing(every_type_db, local_store):
    times = [dt.datetime(2026, 1, d, 3, tzinfo=UTC) for d in (1, 2, 3, 4)]
    made = [backup_database(every_type_db, local_store, now=t).manifest.key for t in times]
    catalog.record_verification(local_store, made[0], {"ok": True})
    policy = RetentionPolicy(daily=1, weekly=0, monthly=0)
    plan = prune_backups(local_store, policy, dry_run=True)
    assert sorted(e.key for e in plan.delete) == sorted(made[1:3]) and plan.deleted == []
    assert len(catalog.list_backups(local_store)) == 4
    plan = prune_backups(local_store, policy, dry_run=False)
    assert sorted(plan.deleted) == sorted(made[1:3])
    assert [e.key for e in catalog.list_backups(local_store)] == [made[3], made[0]]
    assert sorted(o.key for o in local_store.list()) == sorted(
        [made[0], keys.manifest_key(made[0]), keys.verified_key(made[0]), made[3], keys.manifest_key(made[3])])


def test_freshness_of_the_newest_complete_backup(every_type_db, local_store):
    assert catalog.freshness(local_store, 26) == catalog.Freshness(False, f"No complete backup in {local_store.url}.")
    taken = dt.datetime(2026, 11, 25, 8, 0, tzinfo=dt.UTC)
    backup_database(every_type_db, local_store, now=taken)
    local_store.put_bytes("backup-2026-11-26T070000Z-half.sql.zst", b"no manifest: never counts")
    fresh = catalog.freshness(local_store, 26, now=taken + dt.timedelta(hours=25, minutes=30))
    name = keys.partition_name(taken, database=every_type_db.database)
    assert (fresh.ok, fresh.age_hours, fresh.newest.name) == (True, 25.5, name)
    stale = catalog.freshness(local_store, 26, now=taken + dt.timedelta(hours=26))
    assert not stale.ok
    assert stale.description == f"Newest complete backup {name} is 26.0 h old (limit 26 h)."
