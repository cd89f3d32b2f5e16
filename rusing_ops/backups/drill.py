"""Restore drills (as AWS Backup restore testing does): pick a backup by itself, restore it into a scratch database,
compare it with the manifest's independent checksums, drop the scratch database, and measure.

What a drill records: the backup chosen and how (``latest``, or ``random:N`` = at random among the complete
backups of the last N days), restore seconds and MB/s of SQL restored (the RTO), and the age of the newest verified
backup once the drill is done (the RPO: what a restore now would lose at most). The restore and the comparison are
verify.py's (the drill's result is recorded as the backup's verification too). Nothing here imports Dagster.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from ..core.dburl import DatabaseURL
from ..core.errors import ConfigError, NotFound
from ..core.store import BackupStore
from . import catalog
from .verify import verify_backup

_RANDOM = re.compile(r"random:(\d+)")


@dataclass
class DrillResult:
    backup: str  # the partition name of the backup restored
    key: str
    picked_by: str
    taken_at: str
    ok: bool
    restore_s: float
    mb_per_s: float  # uncompressed SQL restored per second
    rows: int
    bytes: int  # stored bytes of the backup
    scratch_db: str
    rpo_hours: float | None  # age of the newest verified backup after the drill (None: none verified)
    newest_verified: str | None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Target:
    """A drill measured against one target: whether it was met, and the sentence that says so."""

    passed: bool
    description: str


def judge(result: DrillResult, rto_target_s: float, rpo_target_h: float) -> tuple[Target, Target]:
    """(RTO, RPO) of ``result`` against the targets. RTO is met when the backup restored, matched its manifest and
    took at most ``rto_target_s`` seconds; RPO when the newest verified backup is at most ``rpo_target_h`` hours old
    (no verified backup: missed)."""
    if result.ok:
        rto = Target(result.restore_s <= rto_target_s, f"{result.backup} restored and matched its manifest in "
                     f"{result.restore_s:.1f}s (target {rto_target_s:g}s)")
    else:
        rto = Target(False, f"{result.backup} did NOT match its manifest: {'; '.join(result.problems)}")
    if result.rpo_hours is None:
        rpo = Target(False, "no backup is verified")
    else:
        rpo = Target(result.rpo_hours <= rpo_target_h, f"newest verified backup {result.newest_verified} is "
                     f"{result.rpo_hours:.1f} h old (target {rpo_target_h:g} h)")
    return rto, rpo


def parse_pick(pick: str | None) -> int | None:
    """``latest`` -> None; ``random:N`` -> N days."""
    text = (pick or "latest").strip().lower()
    if text == "latest":
        return None
    m = _RANDOM.fullmatch(text)
    if not m or int(m[1]) < 1:
        raise ConfigError(f"RUSING_DRILL_PICK={pick!r}: expected `latest` or `random:N` (N days, 1 or more).",
                          next_step="set RUSING_DRILL_PICK=latest or e.g. random:14.")
    return int(m[1])


def pick_backup(store: BackupStore, database: str, pick: str = "latest", *, rng: random.Random | None = None,
                now: dt.datetime | None = None) -> catalog.BackupEntry:
    """The backup a drill restores: the newest complete one, or one at random among those of the last N days."""
    days = parse_pick(pick)
    entries = [e for e in catalog.list_backups(store, database) if e.complete and e.reason not in catalog.NOT_LATEST]
    if days is not None:
        since = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=days)
        entries = [e for e in entries if e.taken_at >= since]
    if not entries:
        window = f" taken in the last {days} day(s)" if days else ""
        raise NotFound(f"There is no complete backup of `{database}`{window} in {store.url}: nothing to drill. "
                       "Nothing was changed.", next_step="take one with `rusing-ops db backup` (a missing backup "
                       "is what the drill is there to catch).")
    return entries[0] if days is None else (rng or random.SystemRandom()).choice(entries)


def newest_verified(store: BackupStore, database: str, now: dt.datetime | None = None):
    """(name, age in hours) of the newest backup whose verification succeeded, or (None, None)."""
    for entry in catalog.list_backups(store, database):
        if entry.manifest is not None and entry.verified:
            age = ((now or dt.datetime.now(dt.UTC)) - entry.taken_at).total_seconds() / 3600
            return entry.name, round(age, 4)
    return None, None


def run_drill(url: DatabaseURL, store: BackupStore, *, pick: str = "latest", rng: random.Random | None = None,
              now: dt.datetime | None = None, log: Callable[[str], None] | None = None) -> DrillResult:
    """Pick a backup, restore it into a scratch database and compare it with its manifest (verify.py), drop the
    scratch database, and measure RTO and RPO. A backup that does not match gives ``ok=False`` (no raise)."""
    log = log or (lambda _line: None)
    entry = pick_backup(store, url.database, pick, rng=rng, now=now)
    picked_by = "latest" if parse_pick(pick) is None else f"random among the last {parse_pick(pick)} day(s)"
    log(f"restore drill: {entry.name} ({picked_by})")
    verified = verify_backup(url, store, entry.key, log=log)
    seconds = max(verified.duration_s, 0.001)
    manifest = entry.manifest
    name, age = newest_verified(store, url.database, now)
    result = DrillResult(
        backup=entry.name, key=entry.key, picked_by=picked_by, taken_at=entry.taken_at.isoformat(), ok=verified.ok,
        restore_s=round(seconds, 3), mb_per_s=round(manifest.uncompressed_bytes / 1e6 / seconds, 3),
        rows=manifest.total_rows, bytes=manifest.bytes, scratch_db=verified.scratch_db, rpo_hours=age,
        newest_verified=name, problems=list(verified.problems), notes=list(verified.notes))
    log(f"restore drill of {entry.name}: {'OK' if result.ok else 'FAILED'} in {result.restore_s:.1f}s "
        f"({result.mb_per_s:.1f} MB/s of SQL); newest verified backup {name or '(none)'}"
        + (f", {age:.1f} h old" if age is not None else ""))
    return result
