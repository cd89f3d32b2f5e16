"""Retention and store hygiene.

Per database, keep the newest backup of each of the last N days, N ISO weeks and N months (restic's
``--keep-daily/weekly/monthly``), and always: the newest complete backup, the newest verified one, every pinned
one (pins: catalog.py), and every backup whose manifest exists but cannot be read (it may be a passing read
error; an operator decides). Everything else of that database is pruned.

The sweep, run by every prune, removes what interrupted writers leave, once it is older than ``STALE_AFTER`` (so
never a backup still being written — a running local backup touches its file on every write, and a backup takes
minutes, not a day): unfinished uploads (a killed writer's ``.partial`` file, an open S3 multipart upload), data
objects without a manifest (a failed or killed backup), and sidecars (manifest, verification, pin) whose data
object is gone (an interrupted prune).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from ..core.errors import StoreError
from ..core.store import BackupStore, PartialUpload, StoredObject
from . import keys
from .catalog import BackupEntry, list_backups
from .immutability import locked_until

STALE_AFTER = dt.timedelta(hours=24)  # an unfinished upload or manifest-less object younger than this may be running


@dataclass(frozen=True)
class RetentionPolicy:
    daily: int = 7
    weekly: int = 4
    monthly: int = 6


@dataclass
class PrunePlan:
    keep: dict[str, list[str]] = field(default_factory=dict)  # key -> why it is kept
    delete: list[BackupEntry] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # keys actually deleted (empty on a dry run)
    partial: list[PartialUpload] = field(default_factory=list)  # unfinished uploads older than STALE_AFTER
    orphans: list[StoredObject] = field(default_factory=list)  # sidecars whose data object is gone
    swept: list[str] = field(default_factory=list)  # unfinished uploads and orphans actually removed
    locked: dict[str, dt.datetime] = field(default_factory=dict)  # pruned by policy, but Object-Locked until then

    @property
    def freed_bytes(self) -> int:
        return sum(e.size for e in self.delete) + sum(p.size for p in self.partial)

    @property
    def pinned(self) -> dict[str, list[str]]:
        """Kept only or also because pinned: key -> the pins' reasons."""
        return {k: [w[len("pinned: "):] for w in why if w.startswith("pinned: ")] for k, why in self.keep.items()
                if any(w.startswith("pinned: ") for w in why)}

    def lines(self, dry_run: bool) -> list[str]:
        """What an operator reads: every deletion, every pinned backup with how to unpin, every swept leftover."""
        verb = "would delete" if dry_run else "deleted"
        out = [f"{verb} {e.key} ({e.size:,} bytes{'; ' + e.problem if e.problem else ''})" for e in self.delete]
        out += [f"{'would remove' if dry_run else 'removed'} {p.describe()}" for p in self.partial]
        out += [f"{'would remove' if dry_run else 'removed'} {o.key} (its backup is gone)" for o in self.orphans]
        for key, why in sorted(self.pinned.items()):
            name = keys.parse_key(key).name if keys.parse_key(key) else key
            out.append(f"kept {name}: pinned ({'; '.join(why)}) — `rusing-ops db unpin {name}` releases it")
        for key, until in sorted(self.locked.items()):
            out.append(f"kept {key}: outside the policy, but under Object Lock retention until "
                       f"{until:%Y-%m-%d %H:%M}Z; deletable (by the next prune) after then")
        return out


def _keep_newest_per(entries: list[BackupEntry], count: int, bucket, why: str, keep: dict[str, list[str]]) -> None:
    seen: list = []
    for entry in entries:  # newest first
        b = bucket(entry.taken_at)
        if b in seen:
            continue
        if len(seen) >= count:
            break
        seen.append(b)
        keep.setdefault(entry.key, []).append(why)


def plan_prune(entries: list[BackupEntry], policy: RetentionPolicy, now: dt.datetime | None = None, *,
               stale_after: dt.timedelta = STALE_AFTER) -> PrunePlan:
    """Decide, without touching anything, which backups ``policy`` keeps and which it deletes (per database)."""
    now = now or dt.datetime.now(dt.UTC)
    plan = PrunePlan()
    complete = sorted((e for e in entries if e.complete), key=lambda e: e.taken_at, reverse=True)
    for database in sorted({e.database for e in complete}):
        mine = [e for e in complete if e.database == database]
        _keep_newest_per(mine, policy.daily, lambda t: t.date(), "daily", plan.keep)
        _keep_newest_per(mine, policy.weekly, lambda t: t.isocalendar()[:2], "weekly", plan.keep)
        _keep_newest_per(mine, policy.monthly, lambda t: (t.year, t.month), "monthly", plan.keep)
        plan.keep.setdefault(mine[0].key, []).append("newest complete")
        verified = next((e for e in mine if e.verified), None)
        if verified is not None:
            plan.keep.setdefault(verified.key, []).append("newest verified")
    for entry in entries:
        if entry.partial is not None:
            continue  # unfinished uploads are swept (sweep_plan), not pruned
        for pin in entry.pins:
            plan.keep.setdefault(entry.key, []).append(f"pinned: {pin.get('why') or 'pinned'}")
        if entry.key in plan.keep:
            continue
        if entry.complete:
            plan.delete.append(entry)
        elif entry.manifest is not None:  # complete here, but a configured second copy lacks it (copies.py)
            plan.keep[entry.key] = [f"not deleted: {entry.copy_problem}"]
        elif entry.unreadable:
            plan.keep[entry.key] = [f"not deleted: {entry.problem}; inspect it, delete it by hand if it is damaged"]
        elif now - (entry.modified or entry.taken_at) > stale_after:
            plan.delete.append(entry)
        else:
            plan.keep[entry.key] = ["incomplete, may still be uploading"]
    return plan


def sweep_plan(store: BackupStore, plan: PrunePlan, now: dt.datetime | None = None, *,
               stale_after: dt.timedelta = STALE_AFTER) -> PrunePlan:
    """Add the store's stale unfinished uploads and orphan sidecars to ``plan`` (every database: they are garbage)."""
    now = now or dt.datetime.now(dt.UTC)
    plan.partial = [p for p in store.list_partial() if now - p.started > stale_after]
    objects = store.list("")
    present = {o.key for o in objects}
    plan.orphans = [o for o in objects if (data := keys.sidecar_of(o.key)) is not None and data not in present
                    and now - o.modified > stale_after]
    return plan


def prune_backups(store: BackupStore, policy: RetentionPolicy, *, dry_run: bool = True,
                  now: dt.datetime | None = None, database: str | None = None,
                  stale_after: dt.timedelta = STALE_AFTER) -> PrunePlan:
    """Apply ``policy`` to the backups of ``database`` (None: of every database, each on its own) and sweep the
    store. With ``dry_run`` (the default) nothing is deleted.

    The manifest goes first, so an interrupted prune leaves an incomplete backup (swept later), never a manifest
    without data that looks restorable. A store failure stops the prune and says what was already deleted.
    """
    plan = plan_prune(list_backups(store, database), policy, now, stale_after=stale_after)
    sweep_plan(store, plan, now, stale_after=stale_after)
    for entry in list(plan.delete):  # never try to delete a locked object (immutability.py): say when it can go
        until = locked_until(store, entry.key)
        if until is not None:
            plan.delete.remove(entry)
            plan.locked[entry.key] = until
    if dry_run:
        return plan
    try:
        for entry in plan.delete:
            store.delete(keys.manifest_key(entry.key))
            store.delete(entry.key)
            store.delete(keys.verified_key(entry.key))
            plan.deleted.append(entry.key)
        for partial in plan.partial:
            store.discard_partial(partial)
            plan.swept.append(partial.key + " (unfinished upload)")
        for orphan in plan.orphans:
            store.delete(orphan.key)
            plan.swept.append(orphan.key)
    except StoreError as exc:
        done = ", ".join(plan.deleted + plan.swept) or "nothing"
        raise StoreError(f"Prune stopped: {exc.message} Already deleted: {done}. Every backup still listed is "
                         "intact (a half-deleted one shows as incomplete).", changed=bool(plan.deleted or plan.swept),
                         next_step="fix the store, then run `rusing-ops db prune --apply` again.") from None
    return plan
