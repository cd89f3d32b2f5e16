"""Protection settings of the backup store, in one place: encryption (crypto.py), server-side encryption and Object
Lock retention on every upload (immutability.py), and second copies (copies.py).

:func:`protect` attaches them to a store object, so every engine that receives the store (backup, restore,
verify, prune, drills) honours them without a parameter of its own. The Dagster resource builds a
:class:`Protection` from ``dg.EnvVar`` values; the CLI from the environment (:func:`from_env`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.errors import ConfigError
from ..core.store import BackupStore, S3Store, open_store
from . import crypto
from .immutability import LockPolicy, locks_key

SSE_MODES = ("AES256", "aws:kms")


@dataclass(frozen=True)
class Protection:
    recipients: str | None = None  # RUSING_BACKUP_RECIPIENTS
    identity: str | None = field(default=None, repr=False)  # RUSING_BACKUP_IDENTITY (secret)
    copy_url: str | None = None  # RUSING_BACKUP_COPY_URL
    sse: str | None = None  # RUSING_BACKUP_SSE
    sse_kms_key_id: str | None = None  # RUSING_BACKUP_SSE_KMS_KEY_ID
    lock_days: str | int | None = None  # RUSING_BACKUP_LOCK_DAYS
    lock_mode: str | None = None  # RUSING_BACKUP_LOCK_MODE


def sse_args(sse: str | None, kms_key_id: str | None) -> dict:
    if not sse:
        if kms_key_id:
            raise ConfigError("RUSING_BACKUP_SSE_KMS_KEY_ID is set but RUSING_BACKUP_SSE is not.",
                              next_step="set RUSING_BACKUP_SSE=aws:kms as well (or unset the key id).")
        return {}
    if sse not in SSE_MODES:
        raise ConfigError(f"RUSING_BACKUP_SSE={sse!r}: choose AES256 (SSE-S3) or aws:kms (SSE-KMS).",
                          next_step="set RUSING_BACKUP_SSE=AES256 or aws:kms, or unset it.")
    args = {"ServerSideEncryption": sse}
    if kms_key_id:
        args["SSEKMSKeyId"] = kms_key_id
    return args


def _upload_args(sse: dict, lock: LockPolicy | None):
    def args(full_key: str) -> dict:
        return {**sse, **(lock.args() if lock is not None and locks_key(full_key) else {})}
    return args


def protect(store: BackupStore, p: Protection, base_dir=None) -> BackupStore:
    """Attach ``p`` to ``store`` (and build its copy stores); return the store."""
    lock = LockPolicy.parse(p.lock_days, p.lock_mode)
    sse = sse_args(p.sse, p.sse_kms_key_id)
    for target in (store,):
        target.encryption = crypto.Encryption(crypto.parse_recipients(p.recipients), p.identity)
        target.lock = lock
        if isinstance(target, S3Store):
            target.write_args = _upload_args(sse, lock)
    copies = []
    if p.copy_url:
        copy = open_store(p.copy_url, base_dir=base_dir)
        if copy.url == store.url:
            raise ConfigError(f"RUSING_BACKUP_COPY_URL names the backup store itself ({store.url}).",
                              next_step="point RUSING_BACKUP_COPY_URL at another bucket, endpoint or folder.")
        copy.lock = lock
        if isinstance(copy, S3Store):
            copy.write_args = _upload_args(sse, lock)
        copies.append(copy)
    store.copies = copies
    return store
