"""Object Lock on the real SeaweedFS (a bucket created with Object Lock and versioning), the canary, prune around
locks, and server-side encryption headers on every upload."""

from __future__ import annotations

import datetime as dt
import uuid

import boto3
import pytest
from botocore.config import Config

from rusing_ops.backups import catalog, immutability, keys
from rusing_ops.backups.dump import backup_database
from rusing_ops.backups.protect import Protection, protect
from rusing_ops.backups.retention import RetentionPolicy, prune_backups
from rusing_ops.core.errors import StoreError
from rusing_ops.core.store import LocalStore, S3Store


@pytest.fixture(scope="module")
def locked_bucket(s3_server) -> str:
    name = f"lock-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def _store(s3_server, bucket: str, **protection) -> S3Store:
    return protect(S3Store(bucket, f"t-{uuid.uuid4().hex[:10]}", client=s3_server.client()), Protection(**protection))


@pytest.mark.parametrize("mode", ["GOVERNANCE", "COMPLIANCE"])
def test_every_data_object_and_manifest_is_locked_and_a_versioned_delete_is_refused(every_type_db, s3_server,
                                                                                     locked_bucket, mode):
    store = _store(s3_server, locked_bucket, lock_days=2, lock_mode=mode)
    m = backup_database(every_type_db, store, reason="locked").manifest
    s3 = s3_server.client()
    for key in (m.key, keys.manifest_key(m.key)):
        head = s3.head_object(Bucket=locked_bucket, Key=store._key(key))
        assert head["ObjectLockMode"] == mode
        left = head["ObjectLockRetainUntilDate"] - dt.datetime.now(dt.UTC)
        assert dt.timedelta(days=1, hours=23) < left <= dt.timedelta(days=2)
        with pytest.raises(Exception) as err:  # SeaweedFS 4.x refuses under both modes
            s3.delete_object(Bucket=locked_bucket, Key=store._key(key), VersionId=head["VersionId"])
        assert "AccessDenied" in str(err.value)
    catalog.pin(store, m.key, "test")  # sidecars are not locked: a pin can be removed again
    assert "ObjectLockMode" not in s3.head_object(Bucket=locked_bucket, Key=store._key(keys.pin_key(m.key)))
    assert immutability.locked_until(store, m.key) is not None
    assert catalog.resolve(store, m.key).manifest.sha256 == m.sha256  # still there, still whole


def test_canary_proves_immutability_only_where_the_server_refuses(s3_server, locked_bucket, s3_bucket, tmp_path):
    good = immutability.canary(_store(s3_server, locked_bucket, lock_days=1))
    assert good.immutable and good.description.startswith("immutable: the server refused")
    unlocked_bucket = immutability.canary(_store(s3_server, s3_bucket, lock_days=1))  # no Object Lock on the bucket
    assert not unlocked_bucket.immutable and "Object Lock" in unlocked_bucket.description
    unset = immutability.canary(_store(s3_server, locked_bucket))
    assert not unset.immutable and "RUSING_BACKUP_LOCK_DAYS is not set" in unset.description
    local = immutability.canary(protect(LocalStore(tmp_path / "b"), Protection(lock_days=7)))
    assert not local.immutable and local.description.startswith("not immutable: ")
    assert "local folder" in local.description
    # Whether immutability was asked for where it can be had (the check's ERROR rather than WARN when it fails):
    assert (good.required, unlocked_bucket.required, unset.required, local.required) == (True, True, False, False)


def test_prune_never_deletes_a_locked_backup_and_says_when_it_can(every_type_db, s3_server, locked_bucket):
    store = _store(s3_server, locked_bucket, lock_days=1)
    old = backup_database(every_type_db, store, reason="old", now=dt.datetime(2025, 1, 1, tzinfo=dt.UTC)).manifest
    new = backup_database(every_type_db, store, reason="new").manifest
    plan = prune_backups(store, RetentionPolicy(daily=1, weekly=0, monthly=0), dry_run=False,
                         database=every_type_db.database)
    assert plan.deleted == [] and old.key in plan.locked and new.key in plan.keep
    assert any(line.startswith(f"kept {old.key}: outside the policy, but under Object Lock retention until")
               and "deletable" in line for line in plan.lines(dry_run=False))
    assert store.exists(old.key) and store.exists(keys.manifest_key(old.key))

    plain = _store(s3_server, locked_bucket)  # the same kind of backup, unlocked: prune deletes it
    backup_database(every_type_db, plain, reason="old", now=dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    backup_database(every_type_db, plain, reason="new")
    plan = prune_backups(plain, RetentionPolicy(daily=1, weekly=0, monthly=0), dry_run=False,
                         database=every_type_db.database)
    assert len(plan.deleted) == 1 and plan.locked == {}


def test_server_side_encryption_is_asked_for_on_every_upload(s3_server, s3_bucket):
    client = boto3.client("s3", endpoint_url=s3_server.endpoint, config=Config(retries={"max_attempts": 1}))
    sent: list[tuple[str, dict]] = []
    client.meta.events.register("before-send.s3", lambda request, **_: sent.append(
        (request.method + " " + request.url.split("?")[-1],
         {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()})))
    store = protect(S3Store(s3_bucket, f"t-{uuid.uuid4().hex[:10]}", client=client),
                    Protection(sse="aws:kms", sse_kms_key_id="alias/backups"))
    for writer in ("small", "multipart"):
        try:
            if writer == "small":
                store.put_bytes("backup-2026-01-01T000000Z.sql.zst", b"x")
            else:
                w = store.open_write("backup-2026-01-02T000000Z.sql.zst")
                w.write(b"y" * (8 * 1024 * 1024 + 1))  # over one part: a multipart upload starts
                w.abort()
        except StoreError:
            pass  # SeaweedFS has no KMS configured and refuses; what matters here is what was asked
    uploads = {what.split(" ")[0] if what.startswith("PUT") else what: h for what, h in sent
               if what.startswith("PUT") and "partNumber" not in what or what == "POST uploads"}
    assert set(uploads) == {"PUT", "POST uploads"}  # the one-PUT object and the multipart upload's start
    for headers in uploads.values():
        assert headers["x-amz-server-side-encryption"] == "aws:kms"
        assert headers["x-amz-server-side-encryption-aws-kms-key-id"] == "alias/backups"


def test_a_lock_asked_of_a_bucket_that_cannot_lock_refuses_the_backup_first(every_type_db, s3_server, s3_bucket):
    from rusing_ops.backups import record
    from rusing_ops.core.errors import ConfigError

    store = _store(s3_server, s3_bucket, lock_days=7)  # the session bucket: no Object Lock
    with pytest.raises(ConfigError) as err:
        record.take(every_type_db, store, reason="nightly")
    assert "RUSING_BACKUP_LOCK_DAYS is set but" in str(err.value) and "No backup was taken" in str(err.value)
    assert store.list("") == []
