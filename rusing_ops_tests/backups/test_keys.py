"""Backup keys carry the database: two databases backed up into one store at once, in the same second, with the
same reason, both succeed with keys of their own, and every reader of keys (listing, `latest`, prune, the UI's
partitions) takes them; keys written before (no database in them) are still read."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import uuid

import pymysql

from rusing_ops.backups import catalog, keys, record
from rusing_ops.backups.dump import backup_database
from rusing_ops.backups.retention import RetentionPolicy, plan_prune
from rusing_ops_tests.conftest import admin_connection, drop_databases_like

from .conftest import fill_every_type


def test_two_databases_backed_up_at_once_in_the_same_second_get_two_keys(every_type_db, server_url, local_store):
    other = server_url.with_database(f"rot_{uuid.uuid4().hex[:10]}")
    conn = admin_connection(server_url)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{other.database}`")
    conn.close()
    try:
        conn = pymysql.connect(**other.pymysql_kwargs(), autocommit=True)
        fill_every_type(conn)
        conn.close()
        when = dt.datetime(2026, 11, 26, 3, 0, 0, tzinfo=dt.UTC)
        start, done, failed = threading.Barrier(2), {}, {}

        def back_up(url):
            start.wait(30)
            try:
                done[url.database] = backup_database(url, local_store, reason="nightly", now=when).manifest
            except Exception as exc:  # the old behaviour: "already exists", or the first silently replaced
                failed[url.database] = exc

        threads = [threading.Thread(target=back_up, args=(u,)) for u in (every_type_db, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert failed == {} and len(done) == 2
        first, second = done[every_type_db.database], done[other.database]
        assert first.key != second.key
        assert first.key == f"backup-{every_type_db.database}-2026-11-26T030000Z-nightly.sql.zst"
        for database, manifest in done.items():  # each key holds its own database's dump, as its manifest says
            data = local_store.get_bytes(manifest.key)
            assert (len(data), hashlib.sha256(data).hexdigest()) == (manifest.bytes, manifest.sha256)
            [entry] = catalog.list_backups(local_store, database)
            assert (entry.key, entry.database, entry.reason, entry.taken_at) == (manifest.key, database, "nightly", when)
            assert catalog.resolve(local_store, "latest", database).key == manifest.key
            assert catalog.resolve(local_store, entry.name).key == manifest.key  # by name
            assert keys.parse_name(entry.name).reason == "nightly"
            assert keys.partition_name(when, "nightly", database) == entry.name
        # the UI's partitions (one per complete backup) and prune (per database: each keeps its newest)
        assert sorted(record.complete_keys(local_store).values()) == sorted([first.key, second.key])
        plan = plan_prune(catalog.list_backups(local_store), RetentionPolicy(1, 0, 0), now=when)
        assert plan.delete == [] and set(plan.keep) == {first.key, second.key}
    finally:
        drop_databases_like(server_url, other.database)


def test_keys_without_a_database_are_still_read():
    old = keys.parse_key("backups/prod/backup-2026-11-26T030000Z-pre-restore.sql.zst.age")
    assert (old.name, old.reason, old.encrypted) == ("backup-2026-11-26T030000Z-pre-restore", "pre-restore", True)
    assert old.taken_at == dt.datetime(2026, 11, 26, 3, tzinfo=dt.UTC)
    for database in ("app", "a b-c", "2026-01-01T000000Z", "sql"):  # any name, even one shaped like a time
        key = keys.make_key(dt.datetime(2026, 1, 2, 3, tzinfo=dt.UTC), "pre-migration", "gzip", database=database)
        parsed = keys.parse_key(key)
        assert (parsed.reason, parsed.compression, parsed.taken_at.day) == ("pre-migration", "gzip", 2), key
