"""What the UI records about a backup, for every procedure that takes one (nightly, manual, CLI, pre-migration,
pre-rollback, pre-restore, recovery) and for backups found in the store (another machine, an older version).

The store is the truth: a backup is complete when its manifest is there, verified when its verification record
is there and says so. :func:`take` backs up and describes; :func:`describe` describes a stored backup;
:func:`reconcile` compares the store with the names the UI knows. The Dagster layer turns a
:class:`BackupRecord` into a ``database_backup`` partition and its events; nothing here imports Dagster.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..core.dburl import DatabaseURL
from ..core.store import BackupStore
from . import catalog, copies, immutability, keys
from .dump import backup_database, journal_tag
from .manifest import Manifest, ManifestError


@dataclass(frozen=True)
class BackupRecord:
    """One complete backup as an operator sees it: its name (the partition key), where it is, what it holds."""

    name: str
    key: str
    uri: str
    taken_at: dt.datetime
    manifest: Manifest
    migration_head: str
    verification: dict | None
    copies: tuple = ()  # per configured second copy: {"copy": uri, "state": ...} (copies.py)

    @property
    def verified(self) -> bool:
        return bool(self.verification and self.verification.get("ok"))

    @property
    def verification_text(self) -> str:
        if self.verification is None:
            return "not verified yet: run the verify_backup job on this partition (`rusing-ops db verify --backup " \
                   f"{self.name}`)"
        if self.verified:
            return f"restored and matched the manifest ({self.verification.get('verified_at', 'time unknown')})"
        problems = self.verification.get("problems") or ["verification failed"]
        return "; ".join(str(p) for p in problems)

    def metadata(self) -> dict:
        """Plain values, the same for every backup however it was taken (the Dagster layer adds display types)."""
        m = self.manifest
        return {
            "key": self.key, "uri": self.uri, "taken_at": self.taken_at.isoformat(), "database": m.database,
            "reason": m.reason or "(none)", "bytes": m.bytes, "uncompressed_bytes": m.uncompressed_bytes,
            "compressed_ratio": m.ratio, "sha256": m.sha256, "rows": m.total_rows,
            "table_rows": {n: t.rows for n, t in sorted(m.tables.items())}, "duration_s": m.duration_s,
            "migration_head": self.migration_head, "compression": m.compression, "run_id": m.run_id or "(none)",
            "encrypted": (f"age, recipients {', '.join(m.encryption.get('recipients') or [])}" if m.encryption
                          else "no"),
            "copies": "; ".join(f"{c['copy']}: {c['state']}" for c in self.copies) or "none configured",
        }


def head_label(manifest: Manifest, drizzle_dir: str | Path | None = None) -> str:
    """The migration the backup was taken at: its journal tag (looked up now when the backup did not record it),
    else its hash, else ``(none)``."""
    head = manifest.migration_head or {}
    tag = head.get("tag") or (journal_tag(drizzle_dir, head.get("created_at")) if drizzle_dir else None)
    return tag or head.get("hash") or "(none)"


def describe(store: BackupStore, key: str, drizzle_dir: str | Path | None = None) -> BackupRecord:
    """The record of backup ``key`` (a data object's key) from its manifest and verification record.

    Raises :class:`ManifestError` when the backup is incomplete.
    """
    parsed = keys.parse_key(key)
    if parsed is None:
        raise ManifestError(f"{key!r} is not a backup's key.", next_step=f"choose one of the backups ({catalog.NEXT_LIST}).")
    manifest = catalog.read_manifest(store, key)
    return BackupRecord(parsed.name, key, store.uri(key), parsed.taken_at, manifest,
                        head_label(manifest, drizzle_dir), catalog.read_verification(store, key),
                        tuple(copies.status(store, key)))


def take(url: DatabaseURL, store: BackupStore, *, reason: str, compression: str = "zstd", level: int | None = None,
         run_id: str | None = None, drizzle_dir: str | Path | None = None,
         log: Callable[[str], None] | None = None) -> BackupRecord:
    """Back up ``url``'s database now (name and time from the clock when the snapshot starts) and describe it."""
    immutability.require_lockable(store)  # RUSING_BACKUP_LOCK_DAYS on a bucket that cannot lock: refused first
    result = backup_database(url, store, reason=reason, compression=compression, level=level, run_id=run_id,
                             drizzle_dir=drizzle_dir, log=log)
    copies.copy_backup(store, result.manifest, log)  # RUSING_BACKUP_COPY_URL: copied and read back, or CopyFailed
    return describe(store, result.manifest.key, drizzle_dir)


@dataclass(frozen=True)
class Reconciliation:
    """What the UI's list of backups lacks (``add``, newest first) and holds in excess (``remove``)."""

    add: list[BackupRecord]
    remove: list[str]
    complete: list[str]

    @property
    def changed(self) -> bool:
        return bool(self.add or self.remove)


def complete_keys(store: BackupStore) -> dict[str, str]:
    """``{name: key}`` of every complete backup in ``store`` (one listing; no manifest is read)."""
    objects = store.list("")
    present = {o.key for o in objects}
    found = {}
    for obj in objects:
        parsed = keys.parse_key(obj.key)
        if parsed is not None and keys.manifest_key(obj.key) in present:
            found[parsed.name] = obj.key
    return found


def reconcile(store: BackupStore, known: set[str] | list[str], drizzle_dir: str | Path | None = None) -> Reconciliation:
    """Compare the complete backups in ``store`` with the names ``known`` to the UI.

    A name the store does not hold (pruned, deleted by hand, a typed partition of an older version) is to be
    removed; a complete backup the UI does not know is described (its manifest read) to be added. A backup whose
    manifest cannot be read is left out of both: it is not offered, and `rusing-ops db backups` shows it.
    """
    stored = complete_keys(store)
    known = set(known)
    add = []
    for name in sorted(set(stored) - known, reverse=True):
        try:
            add.append(describe(store, stored[name], drizzle_dir))
        except ManifestError:
            continue
    return Reconciliation(add, sorted(known - set(stored)), sorted(stored, reverse=True))
