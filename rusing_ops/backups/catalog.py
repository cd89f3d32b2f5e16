"""What the store holds: backups (complete = manifest present), newest first, and which of them were verified."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from ..core.errors import NotFound
from ..core.store import BackupStore
from . import keys
from .manifest import Manifest, ManifestError

NEXT_LIST = "`rusing-ops db backups` lists the backups"


@dataclass
class BackupEntry:
    key: str
    name: str
    taken_at: dt.datetime
    reason: str
    compression: str
    size: int
    manifest: Manifest | None
    verification: dict | None

    @property
    def complete(self) -> bool:
        return self.manifest is not None

    @property
    def verified(self) -> bool:
        return bool(self.verification and self.verification.get("ok"))

    def summary(self) -> dict:
        m = self.manifest
        return {
            "name": self.name, "key": self.key, "taken_at": self.taken_at.isoformat(), "reason": self.reason,
            "bytes": self.size, "complete": self.complete, "rows": m.total_rows if m else None,
            "tables": len(m.tables) if m else None, "verified": self.verified,
            "migration_head": (m.migration_head or {}).get("tag") or (m.migration_head or {}).get("hash") if m else None,
        }


def list_backups(store: BackupStore, *, with_manifests: bool = True) -> list[BackupEntry]:
    """Every data object in ``store`` named like a backup, newest first, with its manifest and verification."""
    objects = store.list("")
    present = {o.key for o in objects}
    entries = []
    for obj in objects:
        parsed = keys.parse_key(obj.key)
        if parsed is None:
            continue
        manifest = verification = None
        if keys.manifest_key(obj.key) in present:
            if with_manifests:
                try:
                    manifest = read_manifest(store, obj.key)
                except ManifestError:
                    manifest = None
        if keys.verified_key(obj.key) in present and with_manifests:
            verification = read_verification(store, obj.key)
        entries.append(BackupEntry(obj.key, parsed.name, parsed.taken_at, parsed.reason, parsed.compression,
                                   obj.size, manifest, verification))
    return sorted(entries, key=lambda e: (e.taken_at, e.key), reverse=True)


def read_manifest(store: BackupStore, key: str) -> Manifest:
    """The manifest of backup ``key``; raises :class:`ManifestError` when it is missing (incomplete backup)."""
    try:
        data = store.get_bytes(keys.manifest_key(key))
    except NotFound:
        raise ManifestError(
            f"Backup {key!r} has no manifest: it is incomplete (interrupted or still being written) and is not "
            "restorable.", next_step=f"choose a complete backup ({NEXT_LIST}).", key=key) from None
    return Manifest.from_json(data, key)


def read_verification(store: BackupStore, key: str) -> dict | None:
    try:
        return json.loads(store.get_bytes(keys.verified_key(key)))
    except (NotFound, ValueError):
        return None


def record_verification(store: BackupStore, key: str, result: dict) -> None:
    store.put_bytes(keys.verified_key(key), json.dumps(result, indent=2, default=str).encode())


def resolve(store: BackupStore, ref: str | None = "latest") -> BackupEntry:
    """The backup named by ``ref``: ``latest`` (newest complete), a key, or a partition name (key minus extension).

    Raises :class:`NotFound` when nothing matches, and :class:`ManifestError` when the match is incomplete.
    """
    entries = list_backups(store)
    if ref in (None, "", "latest"):
        for entry in entries:
            if entry.complete:
                return entry
        raise NotFound(f"There is no complete backup in {store.url}.",
                       next_step="take one with `rusing-ops db backup`.")
    for entry in entries:
        if ref in (entry.key, entry.name, entry.key.rsplit("/", 1)[-1]):
            if not entry.complete:
                read_manifest(store, entry.key)  # raises the "incomplete" error (or the unreadable-manifest one)
            return entry
    raise NotFound(f"There is no backup {ref!r} in {store.url}.", next_step=f"check the name ({NEXT_LIST}).")


@dataclass(frozen=True)
class Freshness:
    ok: bool
    description: str
    newest: BackupEntry | None = None
    age_hours: float | None = None


def freshness(store: BackupStore, max_hours: float, now: dt.datetime | None = None) -> Freshness:
    """Is the newest complete backup younger than ``max_hours``? (A nightly backup that did not happen shows here.)"""
    newest = next((e for e in list_backups(store) if e.complete), None)
    if newest is None:
        return Freshness(False, f"No complete backup in {store.url}.")
    age_h = round(((now or dt.datetime.now(dt.timezone.utc)) - newest.taken_at).total_seconds() / 3600, 2)
    return Freshness(age_h < max_hours, f"Newest complete backup {newest.name} is {age_h:.1f} h old "
                     f"(limit {max_hours:g} h).", newest, age_h)
