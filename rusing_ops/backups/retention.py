"""Retention: keep the newest backup of each of the last N days, N ISO weeks and N months (restic's
``--keep-daily/weekly/monthly``), and always the newest verified one. Everything else is pruned."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from ..core.store import BackupStore
from . import keys
from .catalog import BackupEntry, list_backups

INCOMPLETE_GRACE = dt.timedelta(days=1)  # a manifest-less object younger than this may still be uploading


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

    @property
    def freed_bytes(self) -> int:
        return sum(e.size for e in self.delete)


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


def plan_prune(entries: list[BackupEntry], policy: RetentionPolicy, now: dt.datetime | None = None) -> PrunePlan:
    """Decide, without touching anything, which backups ``policy`` keeps and which it deletes."""
    now = now or dt.datetime.now(dt.timezone.utc)
    complete = sorted((e for e in entries if e.complete), key=lambda e: e.taken_at, reverse=True)
    plan = PrunePlan()
    _keep_newest_per(complete, policy.daily, lambda t: t.date(), "daily", plan.keep)
    _keep_newest_per(complete, policy.weekly, lambda t: t.isocalendar()[:2], "weekly", plan.keep)
    _keep_newest_per(complete, policy.monthly, lambda t: (t.year, t.month), "monthly", plan.keep)
    verified = next((e for e in complete if e.verified), None)
    if verified is not None:
        plan.keep.setdefault(verified.key, []).append("newest verified")
    for entry in entries:
        if entry.key in plan.keep:
            continue
        if entry.complete or now - entry.taken_at > INCOMPLETE_GRACE:
            plan.delete.append(entry)
        else:
            plan.keep[entry.key] = ["incomplete, may still be uploading"]
    return plan


def prune_backups(store: BackupStore, policy: RetentionPolicy, *, dry_run: bool = True,
                  now: dt.datetime | None = None) -> PrunePlan:
    """Apply ``policy`` to ``store``. With ``dry_run`` (the default) nothing is deleted.

    The manifest goes first, so an interrupted prune leaves an incomplete backup, never a manifest without data.
    """
    plan = plan_prune(list_backups(store), policy, now)
    if dry_run:
        return plan
    for entry in plan.delete:
        store.delete(keys.manifest_key(entry.key))
        store.delete(entry.key)
        store.delete(keys.verified_key(entry.key))
        plan.deleted.append(entry.key)
    return plan
