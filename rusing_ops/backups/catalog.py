"""What the store holds: backups (complete = manifest present and readable), newest first, which database and
server each belongs to, which were verified, and which are pinned.

Scope: a backup belongs to the (server, database) its manifest names. Listing, ``latest``, freshness, verify and
prune take ``database`` (the configured one, from DATABASE_URL) and see that database's backups only; objects
whose database cannot be known (no manifest, unreadable manifest) are listed in every scope with the reason, and
are never chosen as ``latest``. ``database=None`` means every database (``db backups --all-databases``).

``latest`` is the newest complete backup of the database that is not a ``pre-restore`` backup: those hold the
state a restore replaced (often the damaged data), so they are only restored when named. A newer backup that a
reachable copy store lacks is skipped, and the choice says so (``BackupEntry.chosen``); when a copy store cannot be
listed at all, nothing can be said about any copy, so ``latest`` is the newest backup complete in the primary store,
said too (a copy store that is down must not make a restore pick older data, or none).

A pin (``<key>.pin.json``) keeps a backup from prune: procedures pin the backups their reports point to
(pre-migration, pre-restore, pre-rollback); ``rusing-ops db unpin NAME`` (or deleting the object) removes it.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from ..core.errors import NotFound, OpsError, StoreError
from ..core.store import BackupStore, PartialUpload
from . import keys
from .manifest import Manifest, ManifestError

NEXT_LIST = "`rusing-ops db backups` lists the backups"
NOT_LATEST = ("pre-restore",)  # reasons `latest` skips: the replaced (possibly damaged) state of a restore
PINNED_REASONS = {  # backups a procedure's report or advice points to: pinned when taken
    "pre-migration": "the migration's failure report and rollback advice point to it",
    "pre-restore": "it holds what the restore replaced (the way back)",
    "pre-rollback": "it holds the state before the rollback (the way back)",
    "recovery": "the data-loss recovery points to it",
    "pre-undo": "it holds the state before `db undo` (the way back)",
}
INCOMPLETE = "incomplete: no manifest (interrupted, or still being written); not restorable"


class OtherDatabase(OpsError):
    """A backup of one database was about to be restored into another without the operator saying so."""


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
    problem: str | None = None  # why it is not restorable: incomplete, unreadable manifest, unfinished upload
    pins: list[dict] = field(default_factory=list)
    modified: dt.datetime | None = None  # the data object's last write (an orphan's age counts from it)
    partial: PartialUpload | None = None  # an unfinished upload (listed with include_partial only)
    copy_problem: str | None = None  # a configured second copy lacks it (copies.py): restorable, but not complete
    copy_unknown: bool = False  # copy_problem is "the copy store cannot be listed", not "the copy is missing"
    chosen: list[str] = field(default_factory=list)  # why `latest` is this backup, when not the obvious one

    @property
    def complete(self) -> bool:
        """Manifest present, and every configured second copy holds it (RUSING_BACKUP_COPY_URL)."""
        return self.manifest is not None and not self.copy_problem

    @property
    def encrypted(self) -> bool:
        return bool(getattr(self.manifest, "encryption", None))

    @property
    def verified(self) -> bool:
        return isinstance(self.verification, dict) and self.verification.get("ok") is True

    @property
    def database(self) -> str | None:
        return self.manifest.database if self.manifest else None

    @property
    def server(self) -> str | None:
        """The server's stable identity (``host:port``, plus its hostname/uuid when it told us)."""
        info = getattr(self.manifest, "server", None) if self.manifest else None
        if not isinstance(info, dict):
            return None
        extra = info.get("server_uuid") or info.get("hostname")
        return f"{info.get('address', '?')}" + (f" ({extra})" if extra else "")

    @property
    def pinned(self) -> bool:
        return bool(self.pins)

    @property
    def unreadable(self) -> bool:
        """A manifest exists but could not be read: kept by prune (it may be a passing read error)."""
        return self.manifest is None and self.partial is None and self.problem not in (None, INCOMPLETE)

    def summary(self) -> dict:
        m = self.manifest
        head = (m.migration_head or {}) if m else {}
        return {
            "name": self.name, "key": self.key, "taken_at": self.taken_at.isoformat(), "reason": self.reason,
            "database": self.database, "server": self.server, "bytes": self.size, "complete": self.complete,
            "problem": self.problem or self.copy_problem, "copy_problem": self.copy_problem, "rows": m.total_rows if m else None,
            "encrypted": ", ".join((m.encryption or {}).get("recipients") or []) if m and m.encryption else "", "tables": len(m.tables) if m else None,
            "verified": self.verified, "pinned": [p.get("why", "") for p in self.pins],
            "migration_head": (head.get("tag") or head.get("hash")) if m else None,
        }


def _manifest_of(store: BackupStore, key: str) -> tuple[Manifest | None, str | None]:
    """(manifest, None) or (None, why it is not usable). Never raises for one bad manifest."""
    try:
        manifest = read_manifest(store, key)
        if not isinstance(manifest.database, str) or not isinstance(manifest.tables, dict):
            raise TypeError("database or tables")
        if not all(isinstance(t.rows, int) for t in manifest.tables.values()):
            raise TypeError("a table's row count is not a number")
    except ManifestError as exc:
        return None, INCOMPLETE if exc.data.get("missing") else f"manifest unreadable: {exc.message}"
    except StoreError as exc:
        return None, f"manifest unreadable: {exc.message}"
    except (TypeError, AttributeError, ValueError) as exc:
        return None, f"manifest unreadable: a field has the wrong type ({exc})"
    return manifest, None


def list_backups(store: BackupStore, database: str | None = None, *, with_manifests: bool = True,
                 include_partial: bool = False) -> list[BackupEntry]:
    """Backups in ``store`` of ``database`` (None: every database), newest first, with manifest, verification, pins.

    Never fails because of one object: an incomplete or unreadable backup is an entry with ``problem`` set (and
    appears in every database's scope, since its database is unknown). ``include_partial`` adds unfinished uploads
    (a killed writer's ``.partial`` file or open multipart upload) as entries too.
    """
    objects = store.list("")
    present = {o.key for o in objects}
    entries = []
    for obj in objects:
        parsed = keys.parse_key(obj.key)
        if parsed is None:
            continue
        manifest, problem, verification = None, INCOMPLETE, None
        if keys.manifest_key(obj.key) in present and with_manifests:
            manifest, problem = _manifest_of(store, obj.key)
        elif keys.manifest_key(obj.key) in present:
            problem = None
        if database is not None and manifest is not None and manifest.database != database:
            continue
        if keys.verified_key(obj.key) in present and with_manifests:
            verification = read_verification(store, obj.key)
        pins = read_pins(store, obj.key) if keys.pin_key(obj.key) in present and with_manifests else []
        entries.append(BackupEntry(obj.key, parsed.name, parsed.taken_at, parsed.reason, parsed.compression,
                                   obj.size, manifest, verification, problem, pins, obj.modified))
    if include_partial:
        for up in store.list_partial():
            parsed = keys.parse_key(up.key)
            if parsed is not None and up.key not in present:
                why = f"unfinished upload (last written {up.started:%Y-%m-%d %H:%M}Z): killed, or still running"
                entries.append(BackupEntry(up.key, parsed.name, parsed.taken_at, parsed.reason, parsed.compression,
                                           up.size, None, None, why, modified=up.started, partial=up))
    if with_manifests:
        from . import copies  # a backup is complete only when every configured copy holds it

        copies.mark_missing(store, entries)
    return sorted(entries, key=lambda e: (e.taken_at, e.key), reverse=True)


def read_manifest(store: BackupStore, key: str) -> Manifest:
    """The manifest of backup ``key``; raises :class:`ManifestError` when it is missing (incomplete backup)."""
    try:
        data = store.get_bytes(keys.manifest_key(key))
    except NotFound:
        raise ManifestError(
            f"Backup {key!r} has no manifest: it is incomplete (interrupted or still being written) and is not "
            "restorable.", next_step=f"choose a complete backup ({NEXT_LIST}).", key=key, missing=True) from None
    return Manifest.from_json(data, key)


def read_verification(store: BackupStore, key: str) -> dict | None:
    try:
        data = json.loads(store.get_bytes(keys.verified_key(key)))
    except (NotFound, StoreError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def record_verification(store: BackupStore, key: str, result: dict) -> None:
    store.put_bytes(keys.verified_key(key), json.dumps(result, indent=2, default=str).encode())


def write_manifest(store: BackupStore, manifest: Manifest) -> None:
    """Write ``manifest`` beside its data object (the step that makes a backup complete).

    When the write fails, the data object is deleted, so nothing incomplete is later offered or kept; the error
    says whether that deletion worked.
    """
    try:
        store.put_bytes(keys.manifest_key(manifest.key), manifest.to_json())
    except StoreError as exc:
        try:
            store.delete(manifest.key)
            left = "The data object was deleted again: nothing of this backup remains in the store."
        except StoreError:
            left = (f"The data object {store.uri(manifest.key)} could not be deleted either: it stays as an "
                    "incomplete backup (listed as such, never restored) that `rusing-ops db prune --apply` removes "
                    "after 24 h.")
        raise StoreError(f"The backup's data was stored but its manifest could not be written: {exc.message} "
                         f"{left} No backup was taken.", changed=None, cause=exc.data.get("cause"),
                         next_step=exc.next_step or "fix the store, then run `rusing-ops db backup` again.") from None


# ---------------------------------------------------------------------------------------------- pins


def read_pins(store: BackupStore, key: str) -> list[dict]:
    """The pins of backup ``key`` (a pin that cannot be read still pins: ``why`` says so)."""
    try:
        data = json.loads(store.get_bytes(keys.pin_key(key)))
        pins = data.get("pins") if isinstance(data, dict) else None
        return [p for p in pins if isinstance(p, dict)] if isinstance(pins, list) else \
            [{"why": "pin file unreadable (still pinned)"}]
    except NotFound:
        return []
    except (StoreError, ValueError):
        return [{"why": "pin file unreadable (still pinned)"}]


def pin(store: BackupStore, key: str, why: str, *, by: str | None = None) -> None:
    """Keep backup ``key`` from prune until unpinned; ``why`` is shown by `db backups` and `db prune`."""
    pins = read_pins(store, key)
    pins.append({"why": why, "by": by, "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
    store.put_bytes(keys.pin_key(key), json.dumps({"key": key, "pins": pins}, indent=2).encode())


def pin_for_reason(store: BackupStore, key: str, reason: str, run_id: str | None = None) -> bool:
    """Pin a backup taken by a procedure that points to it (``PINNED_REASONS``); True when pinned."""
    why = PINNED_REASONS.get(keys.clean_reason(reason))
    if why is None:
        return False
    pin(store, key, f"{keys.clean_reason(reason)} backup: {why}", by=run_id)
    return True


def unpin(store: BackupStore, ref: str, database: str | None = None) -> BackupEntry:
    """Remove every pin of backup ``ref`` (a name or key); return the entry. Prune may delete it afterwards."""
    entry = resolve(store, ref, database, require_complete=False)
    if not entry.pins:
        raise NotFound(f"Backup {entry.name} is not pinned.", next_step="`rusing-ops db backups` shows the pins.")
    store.delete(keys.pin_key(entry.key))
    return entry


# ---------------------------------------------------------------------------------------------- choosing


def latest(entries: list[BackupEntry], include_pre_restore: bool = False) -> BackupEntry | None:
    """What ``latest`` means: the newest complete backup, skipping ``pre-restore`` ones unless asked.

    A newer backup whose second copy is missing is skipped, and the returned entry's ``chosen`` says which; a
    backup whose copy store cannot be listed counts as complete (its copy unknown), and ``chosen`` says that."""
    skipped = []
    for entry in entries:
        if entry.manifest is None or not (include_pre_restore or entry.reason not in NOT_LATEST):
            continue
        if entry.copy_problem and not entry.copy_unknown:
            skipped.append(entry)
            continue
        entry.chosen = [f"newest backup {s.name} skipped: {s.copy_problem} (a backup is complete only when every "
                        f"copy holds it); `latest` is {entry.name}" for s in skipped]
        if entry.copy_unknown:
            entry.chosen.append(f"{entry.copy_problem}: `latest` is {entry.name}, the newest backup complete in "
                                "the primary store; whether its second copy exists is not known")
        return entry
    return None


def resolve(store: BackupStore, ref: str | None = "latest", database: str | None = None, *,
            include_pre_restore: bool = False, require_complete: bool = True) -> BackupEntry:
    """The backup named by ``ref``: ``latest`` (of ``database``), a key, or a name (key minus extension).

    A name or key is found whatever its database (a restore then checks it with :func:`check_target`).
    Raises :class:`NotFound` when nothing matches, and :class:`ManifestError` when the match is not restorable.
    """
    if ref in (None, "", "latest"):
        entries = list_backups(store, database)
        entry = latest(entries, include_pre_restore)
        if entry is None:
            scope = f" of database `{database}`" if database else ""
            others = "" if database is None else _other_databases(store, database)
            raise NotFound(f"There is no complete backup in {store.url}{scope}{others}.",
                           next_step="take one with `rusing-ops db backup`" + (
                               ", or name a backup of another database explicitly" if others else "") + ".")
        return entry
    for entry in list_backups(store, include_partial=True):
        if ref in (entry.key, entry.name, entry.key.rsplit("/", 1)[-1]):
            if require_complete and entry.manifest is None:  # (a missing second copy: still restorable)
                if entry.problem == INCOMPLETE:
                    entry.manifest = read_manifest(store, entry.key)  # raises the "incomplete" error
                    entry.problem = None  # (the manifest was written meanwhile)
                    return entry
                raise ManifestError(f"Backup {entry.name} is not restorable: {entry.problem}.",
                                    next_step=f"choose a complete backup ({NEXT_LIST}).", key=entry.key)
            return entry
    raise NotFound(f"There is no backup {ref!r} in {store.url}.", next_step=f"check the name ({NEXT_LIST}).")


def _other_databases(store: BackupStore, database: str) -> str:
    names = sorted({e.database for e in list_backups(store) if e.complete and e.database != database})
    return f" (it holds backups of {', '.join(f'`{n}`' for n in names)}: `db backups --all-databases`)" if names else ""


def check_target(manifest: Manifest, target: str, from_database: str | None = None,
                 server: str | None = None) -> list[str]:
    """Refuse to restore a backup of another database into ``target`` unless ``from_database`` names it.

    Returns the notes the restore must print (another database allowed; another server). Raises
    :class:`OtherDatabase` (nothing was changed) otherwise.
    """
    notes = []
    source = manifest.database
    if source != target:
        if from_database != source:
            hint = (f" (--from-database names `{from_database}`)" if from_database else "")
            raise OtherDatabase(
                f"Backup {manifest.key} was taken from database `{source}`, not `{target}`{hint}; it was not restored.",
                next_step=f"restore a backup of `{target}` ({NEXT_LIST}), or, to put `{source}`'s data into "
                f"`{target}` on purpose, add `--from-database {source}`.", source=source, target=target)
        notes.append(f"restoring a backup of database `{source}` into `{target}` (allowed by --from-database)")
    recorded = (getattr(manifest, "server", None) or {}).get("address") if isinstance(
        getattr(manifest, "server", None), dict) else None
    if server and recorded and recorded != server:
        notes.append(f"the backup was taken on server {recorded}; restoring into {server}")
    return notes


def server_identity(cur, address: str) -> dict:
    """What the manifest records as the backup's server: ``address`` (host:port, no credentials) plus the server's
    own hostname / server_uuid / server_id when it tells (TiDB, MySQL 8 and MariaDB differ; all are optional)."""
    info = {"address": address}
    try:
        cur.execute("SHOW VARIABLES WHERE Variable_name IN ('hostname', 'server_uuid', 'server_id')")
        for name, value in cur.fetchall():
            name = name.decode() if isinstance(name, bytes) else name
            info[name] = value.decode() if isinstance(value, bytes) else value
    except Exception:  # identity details are a convenience, the address is enough
        pass
    return info


@dataclass(frozen=True)
class Freshness:
    ok: bool
    description: str
    newest: BackupEntry | None = None
    age_hours: float | None = None


def freshness(store: BackupStore, max_hours: float, now: dt.datetime | None = None,
              database: str | None = None) -> Freshness:
    """Is what ``latest`` would restore (of ``database``) younger than ``max_hours``? (A missed nightly shows here.)"""
    newest = latest(list_backups(store, database))
    scope = f" of `{database}`" if database else ""
    if newest is None:
        return Freshness(False, f"No complete backup{scope} in {store.url}.")
    age_h = round(((now or dt.datetime.now(dt.UTC)) - newest.taken_at).total_seconds() / 3600, 2)
    chosen = "".join(f" Note: {line}." for line in newest.chosen)
    return Freshness(age_h < max_hours, f"Newest complete backup{scope} {newest.name} is {age_h:.1f} h old "
                     f"(limit {max_hours:g} h).{chosen}", newest, age_h)
