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


def test_names_a_key_would_write_alike_get_keys_of_their_own():
    """Only letters, digits and ``_`` go into a key as they are: names that differ only in the other characters
    (dashes, spaces, dots, accents), or that keep none of them, carry a digest of the exact name too, so two such
    databases backed up in the same second with the same reason are not refused as one name (ObjectExists)."""
    when = dt.datetime(2026, 12, 1, 18, 30, tzinfo=dt.UTC)
    names = ["app-prod", "app prod", "app.prod", "app--prod", "школа", "学校", "école", "ecole", "e cole", "x" * 64,
             "x" * 64 + "y", "-lead"]
    made = {name: keys.make_key(when, "nightly", database=name) for name in names}
    assert len(set(made.values())) == len(names), made
    assert keys.make_key(when, "nightly", database="app_prod1") == "backup-app_prod1-2026-12-01T183000Z-nightly.sql.zst"
    assert keys.database_tag("ecole") == "ecole" and keys.database_tag("x" * 64) == "x" * 64  # plain names unchanged
    assert keys.database_tag("школа") == hashlib.sha256("школа".encode()).hexdigest()[:8]
    assert keys.database_tag("app prod") == "app-prod-" + hashlib.sha256(b"app prod").hexdigest()[:8]
    for name, key in made.items():  # every one reads back: time, reason, compression
        parsed = keys.parse_key(key)
        assert (parsed.taken_at, parsed.reason, parsed.compression) == (when, "nightly", "zstd"), (name, key)
        assert len(keys.database_tag(name)) <= 64


def test_two_databases_whose_names_differ_only_in_punctuation_are_backed_up_in_the_same_second(server_url,
                                                                                                local_store):
    base = f"rot_{uuid.uuid4().hex[:8]}"
    names = [f"{base} app-prod", f"{base} app.prod"]  # one key tag without the digest: "rot_..-app-prod"
    conn = admin_connection(server_url)
    with conn.cursor() as cur:
        for i, name in enumerate(names):
            cur.execute(f"CREATE DATABASE `{name}`")
            cur.execute(f"CREATE TABLE `{name}`.t (id INT PRIMARY KEY)")
            cur.execute(f"INSERT INTO `{name}`.t VALUES ({i + 1})")
    conn.close()
    try:
        when = dt.datetime(2026, 12, 1, 18, 31, tzinfo=dt.UTC)
        made = {name: backup_database(server_url.with_database(name), local_store, reason="nightly", now=when).manifest
                for name in names}
        assert made[names[0]].key != made[names[1]].key
        for name, manifest in made.items():
            assert catalog.resolve(local_store, "latest", name).key == manifest.key
            assert manifest.database == name and manifest.tables["t"].rows == 1
    finally:
        for name in names:
            drop_databases_like(server_url, name)
