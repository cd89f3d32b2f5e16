"""The daily Stripe-side sweep: events Stripe lists for the handled types that the app's log lacks.

Two listings, as Stripe's "process undelivered events" recipe suggests: ``delivery_success=false`` over the last
``days`` (still pending, or failed for some endpoint), and every handled event of the last ``hours`` (catches
events Stripe thinks were delivered but the app never logged, e.g. a 2xx from a proxy). Ids absent from
`webhook_events_log` are re-driven oldest first; ids present but failed are left to the sensor and reported.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.database import connect
from ..core.errors import ConfigError
from . import events_log as log
from .reconcile import OutcomesMixin, prepare
from .redeliver import Outcome, Redriver, redrive_many
from .stripe_events import HANDLED_TYPES, RETENTION_S, list_events


@dataclass
class SweepReport(OutcomesMixin):
    undelivered: int
    recent: int
    in_log: dict[str, int]
    missing: list[str]
    outcomes: list[Outcome] = field(default_factory=list)
    dry_run: bool = False

    def summary(self) -> str:
        return (f"Stripe listed {self.undelivered} undelivered and {self.recent} recent handled event(s); in the log: "
                f"{dict(self.in_log) or 'none'}; missing from the log: {len(self.missing)}"
                + (f"; re-drive: {self.counts}" if self.outcomes else ""))


def sweep(redriver: Redriver, *, days: int = 7, hours: int = 26, dry_run: bool = False, max_events: int = 500,
          concurrency: int = 4, rate_per_s: float = 10.0, log_fn: Callable[[str], None] | None = None) -> SweepReport:
    """List, diff against the log, re-drive what is missing (``dry_run``: fetch each, deliver nothing)."""
    if not 1 <= days <= RETENTION_S // 86400:
        raise ConfigError(f"days={days}: Stripe lists events of the last {RETENTION_S // 86400} days only; use 1-30.")
    prepare(redriver, dry_run=dry_run)
    now = int(time.time())
    events: dict[str, dict] = {}
    undelivered = recent = 0
    for event in list_events(redriver.client, types=HANDLED_TYPES, created_gte=now - days * 86400,
                             delivery_success=False):
        events[event["id"]] = event
        undelivered += 1
    for event in list_events(redriver.client, types=HANDLED_TYPES, created_gte=now - hours * 3600):
        events[event["id"]] = event
        recent += 1
    ids = [log.validate_event_id(e) for e in events]
    with connect(redriver.engine, redriver.url) as conn:
        rows = log.rows_for(conn, ids)
    missing = sorted((e for e in ids if e not in rows), key=lambda e: (events[e]["created"], e))
    report = SweepReport(undelivered, recent, dict(Counter(r.status for r in rows.values())), missing, dry_run=dry_run)
    if log_fn:
        log_fn(report.summary())
    if missing:
        report.outcomes = redrive_many(redriver, missing[:max_events], dry_run=dry_run, concurrency=concurrency,
                                       rate_per_s=rate_per_s, log_fn=log_fn)
    return report
