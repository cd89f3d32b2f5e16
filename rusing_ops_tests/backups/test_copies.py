"""A second copy of every backup (RUSING_BACKUP_COPY_URL), on the real SeaweedFS (a second bucket) and a local folder:
copied and read back, required for "complete", used by restore and verify when the primary is missing or corrupt."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import uuid

import pyrage
import pytest

from rusing_ops.backups import catalog, copies, keys, record
from rusing_ops.backups.protect import Protection, protect
from rusing_ops.backups.restore import restore_backup
from rusing_ops.backups.retention import RetentionPolicy, plan_prune
from rusing_ops.backups.verify import verify_backup
from rusing_ops.core.store import S3Store

from .conftest import snapshot


@pytest.fixture(scope="module")
def copy_bucket(s3_server) -> str:
    name = f"copy-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


def _primary(s3_server, s3_bucket) -> S3Store:
    return S3Store(s3_bucket, f"t-{uuid.uuid4().hex[:10]}", client=s3_server.client())


def test_a_backup_is_copied_to_a_second_bucket_checked_there_and_shown(every_type_db, s3_server, s3_bucket,
                                                                         copy_bucket):
    copy_url = f"s3://{copy_bucket}/c-{uuid.uuid4().hex[:8]}"
    store = protect(_primary(s3_server, s3_bucket), Protection(copy_url=copy_url))
    lines: list[str] = []
    rec = record.take(every_type_db, store, reason="nightly", log=lines.append)
    [copy] = copies.stores(store)
    data = copy.get_bytes(rec.key)
    assert (len(data), hashlib.sha256(data).hexdigest()) == (rec.manifest.bytes, rec.manifest.sha256)
    assert copy.get_bytes(keys.manifest_key(rec.key)) == store.get_bytes(keys.manifest_key(rec.key))
    assert f"second copy: {copy_url}/{rec.key} ({rec.manifest.bytes:,} bytes, sha256 read back and matched)" in lines
    assert rec.metadata()["copies"] == f"{copy_url}/{rec.key}: present (data + manifest)"
    assert catalog.resolve(store, "latest", every_type_db.database).complete


def test_a_missing_copy_leaves_the_backup_not_complete_but_kept_and_restorable(every_type_db, s3_server, s3_bucket,
                                                                                tmp_path):
    store = protect(_primary(s3_server, s3_bucket), Protection(copy_url=str(tmp_path / "copy")))
    rec = record.take(every_type_db, store, reason="nightly")
    copies.stores(store)[0].delete(rec.key)  # the second copy is lost
    [entry] = catalog.list_backups(store, every_type_db.database)
    assert not entry.complete and entry.copy_problem == f"second copy missing in {(tmp_path / 'copy').as_uri()}"
    assert entry.summary()["problem"] == entry.copy_problem
    assert not catalog.freshness(store, 26, database=every_type_db.database).ok  # no complete backup
    plan = plan_prune([entry], RetentionPolicy(0, 0, 0))
    assert plan.delete == [] and plan.keep[entry.key] == [f"not deleted: {entry.copy_problem}"]
    assert catalog.resolve(store, rec.name).manifest.sha256 == rec.manifest.sha256  # by name: still restorable

    broken = protect(_primary(s3_server, s3_bucket), Protection(copy_url=str(tmp_path / "file" / "copy")))
    (tmp_path / "file").write_text("a file where the copy folder should be")
    with pytest.raises(copies.CopyFailed) as err:
        record.take(every_type_db, broken, reason="nightly")
    text = str(err.value)
    assert "is stored and complete in s3://" in text and "second copy" in text and "not complete" in text
    assert "RUSING_BACKUP_COPY_URL" in text
    assert [e.complete for e in catalog.list_backups(broken, every_type_db.database)] == [False]


@pytest.mark.parametrize("where", ["payload", "age header"])
def test_a_corrupt_primary_is_restored_and_verified_from_the_copy_which_is_said(every_type_db, s3_server, s3_bucket,
                                                                                copy_bucket, where):
    identity = pyrage.x25519.Identity.generate()  # encrypted too: the copy decrypts with the same identity
    copy_url = f"s3://{copy_bucket}/c-{uuid.uuid4().hex[:8]}"
    primary = _primary(s3_server, s3_bucket)
    store = protect(primary, Protection(recipients=str(identity.to_public()), identity=str(identity),
                                        copy_url=copy_url))
    before = snapshot(every_type_db, every_type_db.database)
    rec = record.take(every_type_db, store, reason="nightly")
    damaged = bytearray(primary.get_bytes(rec.key))
    damaged[len(damaged) // 2 if where == "payload" else 40] ^= 0x01  # 40: inside the recipient stanza
    primary.put_bytes(rec.key, bytes(damaged))  # same size, one byte changed: only sha256 tells

    lines: list[str] = []
    target = every_type_db.database + "__fromcopy"
    result = restore_backup(every_type_db, store, rec.name, database=target, pre_restore_backup=False,
                            from_database=every_type_db.database, log=lines.append)
    notes = [line for line in lines if line.startswith("note: the primary object")]
    assert len(notes) == 1 and "does not match its manifest" in notes[0]
    assert f"using the copy at {copy_url}/{rec.key} instead" in notes[0]
    assert result.verified_against_manifest and snapshot(every_type_db, target) == before

    verified = verify_backup(every_type_db, store, rec.name)
    assert verified.ok and verified.notes and "using the copy at" in verified.notes[0]


def test_a_missing_primary_is_restored_from_the_copy_which_is_said(every_type_db, s3_server, s3_bucket, tmp_path):
    primary = _primary(s3_server, s3_bucket)
    store = protect(primary, Protection(copy_url=str(tmp_path / "copy")))
    before = snapshot(every_type_db, every_type_db.database)
    rec = record.take(every_type_db, store, reason="nightly")
    primary.delete(rec.key)
    primary.delete(keys.manifest_key(rec.key))
    lines: list[str] = []
    target = every_type_db.database + "__fromcopy2"
    restore_backup(every_type_db, store, rec.name, database=target, pre_restore_backup=False,
                   from_database=every_type_db.database, log=lines.append)
    assert any(f"is missing or incomplete in the primary store {primary.url}; using the copy at "
               f"{(tmp_path / 'copy' / rec.key).as_uri()}" in line for line in lines)
    assert snapshot(every_type_db, target) == before


def test_the_pre_restore_backup_of_an_in_place_restore_is_copied_too(every_type_db, local_store, tmp_path):
    store = protect(local_store, Protection(copy_url=str(tmp_path / "copy")))
    rec = record.take(every_type_db, store, reason="nightly")
    result = restore_backup(every_type_db, store, rec.name)
    [copy] = copies.stores(store)
    assert result.pre_restore_backup and copy.exists(keys.manifest_key(result.pre_restore_backup))
    assert all(e.complete for e in catalog.list_backups(store, every_type_db.database))


def test_latest_says_which_backup_it_skipped_and_falls_back_to_the_primary_when_the_copy_store_is_down(
        every_type_db, tmp_path, monkeypatch):
    """The copy store is a SeaweedFS of this test's own, stopped half-way. A newest backup whose copy is missing
    (store up) is skipped and that is said; with the copy store down, `latest` used to be none at all (every
    backup "not complete"): now it is the newest backup complete in the primary, said, and it restores."""
    from rusing_ops.core.store import LocalStore
    from rusing_ops_tests.conftest import _start_seaweedfs

    for name, value in (("AWS_ACCESS_KEY_ID", "test-access-key"),  # the s3_server fixture's (boto3 caches them)
                        ("AWS_SECRET_ACCESS_KEY", "test-secret-key-do-not-log"), ("AWS_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    (tmp_path / "weed").mkdir()
    server = _start_seaweedfs(str(tmp_path / "weed"))
    try:
        import boto3
        from botocore.config import Config

        client = boto3.client("s3", endpoint_url=server.endpoint, config=Config(retries={"max_attempts": 1}))
        client.create_bucket(Bucket="copy")
        store = protect(LocalStore(tmp_path / "primary"), Protection())
        store.copies = [S3Store("copy", "c", client=client)]  # as protect() attaches RUSING_BACKUP_COPY_URL's store
        older = record.take(every_type_db, store, reason="nightly")
        while keys.parse_key(keys.make_key(dt.datetime.now(dt.UTC))).taken_at <= older.taken_at:
            time.sleep(0.05)  # the next second: two backups of one second are not ordered by time
        newest = record.take(every_type_db, store, reason="manual")
        copies.stores(store)[0].delete(newest.key)  # the newest backup's second copy is lost
        said: list[str] = []
        restore_backup(every_type_db, store, "latest", pre_restore_backup=False, log=said.append)
        assert f"restore source: {older.key} (manifest {older.manifest.sha256[:12]})" in said
        assert (f"note: newest backup {newest.name} skipped: second copy missing in {store.copies[0].url} (a backup "
                f"is complete only when every copy holds it); `latest` is {older.name}") in said, said
        fresh = catalog.freshness(store, 26, database=every_type_db.database)
        assert fresh.newest.key == older.key and f"newest backup {newest.name} skipped" in fresh.description

        server.kill()  # the copy store is down
        said.clear()
        restore_backup(every_type_db, store, "latest", pre_restore_backup=False, log=said.append)
        assert f"restore source: {newest.key} (manifest {newest.manifest.sha256[:12]})" in said, said
        [note] = [line for line in said if "cannot be listed" in line]
        assert note.startswith(f"note: the copy store {store.copies[0].url} cannot be listed (")
        assert note.endswith(f"): `latest` is {newest.name}, the newest backup complete in the primary store; "
                             "whether its second copy exists is not known")
        [entry, _older] = catalog.list_backups(store, every_type_db.database)
        assert not entry.complete and entry.copy_unknown  # still shown as not complete
    finally:
        server.kill()
