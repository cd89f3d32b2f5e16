"""Immutable backups: S3 Object Lock retention on every data object and manifest, and a canary that proves it.

With ``RUSING_BACKUP_LOCK_DAYS`` set, every data object and manifest is uploaded with ``ObjectLockMode``
(``RUSING_BACKUP_LOCK_MODE``: GOVERNANCE by default, COMPLIANCE when asked) and ``ObjectLockRetainUntilDate`` =
now + that many days, on a bucket that must have versioning and Object Lock enabled (checked by
:func:`bucket_problem`). Sidecars (verification record, pin) stay unlocked: they are rewritten and removed.

Some S3-compatible servers accept the headers and delete anyway, so :func:`canary` writes a small locked object and
tries to delete that very version: the store is immutable only when the server refuses. A local folder cannot lock
anything: the canary says "not immutable". Prune (retention.py) never tries to delete an object whose retention
has not passed (:func:`locked_until`); it reports when each becomes deletable.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from ..core.errors import ConfigError
from ..core.store import BackupStore, S3Store, s3_cause
from . import keys

MODES = ("GOVERNANCE", "COMPLIANCE")
CANARY_PREFIX = ".rusing-canary/"
CANARY_RETENTION = dt.timedelta(hours=1)  # a canary object is locked this long, then swept by the next canary


@dataclass(frozen=True)
class LockPolicy:
    days: int
    mode: str = "GOVERNANCE"

    @classmethod
    def parse(cls, days: str | int | None, mode: str | None) -> LockPolicy | None:
        if days in (None, "", 0, "0"):
            return None
        try:
            n = int(days)
            if n < 1:
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(f"RUSING_BACKUP_LOCK_DAYS={days!r} is not a whole number of days (1 or more).",
                              next_step="set RUSING_BACKUP_LOCK_DAYS to e.g. 30, or unset it.") from None
        mode = (mode or "GOVERNANCE").strip().upper()
        if mode not in MODES:
            raise ConfigError(f"RUSING_BACKUP_LOCK_MODE={mode!r}: choose GOVERNANCE or COMPLIANCE.",
                              next_step="set RUSING_BACKUP_LOCK_MODE=GOVERNANCE (default) or COMPLIANCE.")
        return cls(n, mode)

    def args(self, now: dt.datetime | None = None, retention: dt.timedelta | None = None) -> dict:
        until = (now or dt.datetime.now(dt.UTC)) + (retention or dt.timedelta(days=self.days))
        return {"ObjectLockMode": self.mode, "ObjectLockRetainUntilDate": until}


def policy_of(store: BackupStore) -> LockPolicy | None:
    return getattr(store, "lock", None)


def locks_key(full_key: str) -> bool:
    """Data objects and manifests are locked; verification records and pins are not."""
    base = full_key.rsplit("/", 1)[-1]
    return keys.parse_key(base) is not None or (base.endswith(keys.MANIFEST_SUFFIX) and keys.sidecar_of(base))


def bucket_problem(store: BackupStore) -> str | None:
    """Why ``store`` cannot hold locked objects (None when versioning and Object Lock are both enabled)."""
    if not isinstance(store, S3Store):
        return f"{store.url} is a local folder: nothing stops a delete or an overwrite there"
    s3 = store.client
    try:
        versioning = s3.get_bucket_versioning(Bucket=store.bucket).get("Status")
        lock = s3.get_object_lock_configuration(Bucket=store.bucket).get("ObjectLockConfiguration", {})
    except Exception as exc:  # reported in words
        return f"the bucket {store.bucket} has no Object Lock configuration ({s3_cause(exc)})"
    if versioning != "Enabled":
        return f"versioning is not enabled on the bucket {store.bucket} (status {versioning or 'never enabled'})"
    if lock.get("ObjectLockEnabled") != "Enabled":
        return f"Object Lock is not enabled on the bucket {store.bucket}"
    return None


def require_lockable(store: BackupStore) -> None:
    """Before a backup: with RUSING_BACKUP_LOCK_DAYS set, an S3 bucket must be able to lock (its uploads would fail).

    A local folder cannot lock and is not refused (no backup would be worse): the canary check says "not immutable"."""
    if policy_of(store) is None or not isinstance(store, S3Store):
        return
    problem = bucket_problem(store)
    if problem:
        raise ConfigError(f"RUSING_BACKUP_LOCK_DAYS is set but {problem}: backups there cannot be locked. No backup "
                          "was taken; nothing was changed.",
                          next_step="use a bucket created with Object Lock (aws s3api create-bucket ... "
                          "--object-lock-enabled-for-bucket), or unset RUSING_BACKUP_LOCK_DAYS.")


def locked_until(store: BackupStore, key: str) -> dt.datetime | None:
    """When the current version of ``key`` stops being locked (None: not locked, or not an S3 store)."""
    if not isinstance(store, S3Store):
        return None
    try:
        head = store.client.head_object(Bucket=store.bucket, Key=store._key(key))
    except Exception:  # absent: nothing to protect
        return None
    until = head.get("ObjectLockRetainUntilDate")
    return until if until and until > dt.datetime.now(dt.UTC) else None


@dataclass(frozen=True)
class CanaryResult:
    immutable: bool
    description: str
    configured: bool = True
    required: bool = False  # immutability was asked for where it can be had (an S3 store with a lock policy)


def canary(store: BackupStore, now: dt.datetime | None = None) -> CanaryResult:
    """Write a small locked object and try to delete that version: immutable only when the server refuses."""
    policy = policy_of(store)
    if not isinstance(store, S3Store):
        return CanaryResult(False, f"not immutable: {bucket_problem(store)}. Backups there can be deleted by anyone "
                            "who can write the folder; use an S3 bucket with Object Lock and RUSING_BACKUP_LOCK_DAYS.",
                            policy is not None)
    if policy is None:
        return CanaryResult(False, "not immutable: RUSING_BACKUP_LOCK_DAYS is not set, so backups are written "
                            "without Object Lock retention.", False)
    problem = bucket_problem(store)
    if problem:
        return CanaryResult(False, f"not immutable: {problem}. Create the bucket with Object Lock enabled "
                            "(aws s3api create-bucket ... --object-lock-enabled-for-bucket).", required=True)
    s3, key = store.client, store._key(f"{CANARY_PREFIX}canary-{uuid.uuid4().hex}")
    try:
        put = s3.put_object(Bucket=store.bucket, Key=key, Body=b"rusing_ops immutability canary\n",
                            **policy.args(now, CANARY_RETENTION))
    except Exception as exc:  # the refusal is the proof
        return CanaryResult(False, f"not immutable: a locked object could not be written ({s3_cause(exc)}).",
                            required=True)
    version = put.get("VersionId")
    try:
        s3.delete_object(Bucket=store.bucket, Key=key, VersionId=version)
    except Exception as exc:
        _sweep(store)
        return CanaryResult(True, f"immutable: the server refused to delete a {policy.mode}-locked version "
                            f"({s3_cause(exc)}); backups are locked for {policy.days} day(s).", required=True)
    return CanaryResult(False, f"NOT immutable: {store.url} accepted the Object Lock headers and then deleted the "
                        f"locked version of {key}. Backups there are not protected; use a server that enforces "
                        "Object Lock.", required=True)


def _sweep(store: S3Store) -> None:
    """Delete the versions of older canaries whose retention has passed (they are a few bytes each)."""
    s3 = store.client
    try:
        listing = s3.list_object_versions(Bucket=store.bucket, Prefix=store._key(CANARY_PREFIX))
        for v in listing.get("Versions", []) + listing.get("DeleteMarkers", []):
            try:
                s3.delete_object(Bucket=store.bucket, Key=v["Key"], VersionId=v["VersionId"])
            except Exception:
                pass
    except Exception:
        pass
