"""A second copy of every backup (``RUSING_BACKUP_COPY_URL``: another bucket, another endpoint, or a local folder).

After a backup's manifest is written, :func:`copy_backup` streams the data object to each copy store, reads it back
there and checks its size and sha256 against the manifest, then copies the manifest (last, as in the primary: a
copy without its manifest is incomplete there too). A backup counts as complete (catalog.py) only when every
configured copy holds it: :func:`mark_missing` sets ``copy_problem`` on the entries a copy lacks.

Restore and verify (source.py) read from a copy when the primary object is missing, incomplete or damaged (sha256
mismatch), and say so. Nothing here imports Dagster.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import NotFound, OpsError, StoreError
from ..core.store import BackupStore
from . import keys
from .streams import HashingReader


class CopyFailed(OpsError):
    """The backup is complete in the primary store, but a second copy could not be made or did not check out."""


@dataclass(frozen=True)
class CopyResult:
    url: str  # the copy store
    uri: str  # the data object there
    bytes: int
    sha256_ok: bool

    def line(self) -> str:
        return f"{self.uri} ({self.bytes:,} bytes, sha256 read back and matched)"


def stores(store: BackupStore) -> list[BackupStore]:
    """The copy stores configured on ``store`` (attached by protect.py); empty = no second copy."""
    return list(getattr(store, "copies", None) or ())


def _read_back(copy: BackupStore, key: str) -> tuple[int, str]:
    with copy.open_read(key) as stream:
        reader = HashingReader(stream)
        reader.drain()
    return reader.bytes, reader.hash.hexdigest()


def copy_one(store: BackupStore, copy: BackupStore, manifest) -> CopyResult:
    """Copy backup ``manifest.key`` (data, then manifest) from ``store`` to ``copy`` and check it there."""
    key = manifest.key
    try:
        if not (copy.exists(key) and _read_back(copy, key) == (manifest.bytes, manifest.sha256)):
            with store.open_read(key) as stream:
                copy.put_stream(key, stream)
        size, sha = _read_back(copy, key)
        if (size, sha) != (manifest.bytes, manifest.sha256):
            raise CopyFailed(f"The copy of backup {key} at {copy.uri(key)} reads back as {size:,} bytes with sha256 "
                             f"{sha[:16]}..., not the manifest's {manifest.bytes:,} bytes / {manifest.sha256[:16]}...; "
                             "its manifest was not copied, so the copy is not used.",
                             next_step="check the copy store, then launch the backup again.", changed=True)
        copy.put_bytes(keys.manifest_key(key), store.get_bytes(keys.manifest_key(key)))
    except (StoreError, NotFound) as exc:
        raise CopyFailed(f"Backup {key} is stored and complete in {store.url}, but its second copy in {copy.url} "
                         f"failed: {exc.message} The backup is listed as not complete until the copy exists.",
                         next_step="fix the copy store (RUSING_BACKUP_COPY_URL), then run `rusing-ops db backup` "
                         "again.", key=key, changed=True) from None
    return CopyResult(copy.url, copy.uri(key), size, True)


def copy_backup(store: BackupStore, manifest, log=None) -> list[CopyResult]:
    """Make every configured second copy of a complete backup; raise :class:`CopyFailed` naming what is missing."""
    results = []
    for copy in stores(store):
        result = copy_one(store, copy, manifest)
        if log:
            log(f"second copy: {result.line()}")
        results.append(result)
    return results


def status(store: BackupStore, key: str) -> list[dict]:
    """Where each configured copy of backup ``key`` stands (for metadata): present with its manifest, or missing."""
    out = []
    for copy in stores(store):
        try:
            ok = copy.exists(key) and copy.exists(keys.manifest_key(key))
        except StoreError as exc:
            out.append({"copy": copy.uri(key), "state": f"unknown ({exc.message})"})
            continue
        out.append({"copy": copy.uri(key), "state": "present (data + manifest)" if ok else "MISSING"})
    return out


def mark_missing(store: BackupStore, entries: list) -> None:
    """Set ``copy_problem`` on the complete entries some configured copy lacks (one listing per copy store)."""
    for copy in stores(store):
        try:
            present = {o.key: o.size for o in copy.list("")}
        except StoreError as exc:
            present, why = None, f"the copy store {copy.url} cannot be listed ({exc.message})"
        for entry in entries:
            if entry.manifest is None or entry.copy_problem:
                continue
            if present is None:
                entry.copy_problem, entry.copy_unknown = why, True
            elif present.get(entry.key) != entry.size or keys.manifest_key(entry.key) not in present:
                entry.copy_problem = f"second copy missing in {copy.url}"


def resolve_in_copies(store: BackupStore, ref, database):
    """``(copy store, entry)`` of the first copy that holds backup ``ref`` complete, or None."""
    from . import catalog

    for copy in stores(store):
        try:
            return copy, catalog.resolve(copy, ref, database)
        except (NotFound, StoreError, OpsError):
            continue
    return None
