"""Reconcile: pick the events to re-drive (named ids, or every failed / stuck row), re-drive them with bounded
concurrency, and report per event. The runbook's manual retry is :func:`retry_event`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.database import connect
from ..core.errors import ConfigError, NotFound
from . import events_log as log
from .redeliver import Outcome, Redriver, redrive_many


class OutcomesMixin:
    """Shared by the reports that hold ``outcomes``: counts and problems (outcomes not ok)."""

    outcomes: list[Outcome]

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(o.outcome for o in self.outcomes))

    @property
    def problems(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class ReconcileReport(OutcomesMixin):
    selected: list[str]
    outcomes: list[Outcome] = field(default_factory=list)
    dry_run: bool = False

    def summary(self) -> str:
        if not self.selected:
            return "nothing to reconcile: no failed or stuck events selected"
        counts = ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items()))
        return f"{len(self.selected)} event(s){' (dry run)' if self.dry_run else ''}: {counts}"


def prepare(redriver: Redriver, *, dry_run: bool) -> bool:
    """Check (never create) what a re-drive needs: the app's table and, unless ``dry_run``, this tool's audit table.

    Returns whether our status index exists (without it the reads scan; `setup_webhook_tables` creates it)."""
    with connect(redriver.engine, redriver.url) as conn:
        missing = log.missing_schema(conn)
    if "table" in missing:
        raise NotFound(f"{redriver.url.masked()} has no {log.TABLE} table yet (the app creates it on its first webhook).")
    if "audit" in missing and not dry_run:
        raise ConfigError(f"{redriver.url.masked()} has no {log.AUDIT_TABLE} table, where every re-drive is recorded.",
                          next_step="run the setup_webhook_tables job once (`rusing-ops webhooks setup`), then this "
                                    "command again")
    return "index" not in missing


def select_events(redriver: Redriver, *, event_ids: list[str], all_failed: bool, include_stuck: bool,
                  max_events: int, indexed: bool = True) -> list[str]:
    """The ids to re-drive: ``event_ids`` (validated, in order) plus, with ``all_failed``, every failed row that is
    not dead-lettered and (``include_stuck``) every row stuck in processing, oldest change first."""
    ids = [log.validate_event_id(e) for e in event_ids]
    if not ids and not all_failed:
        raise ConfigError("name event ids or set all_failed: nothing was selected.",
                          next_step="rusing-ops webhooks reconcile (all failed) or rusing-ops webhooks retry evt_...")
    if all_failed:
        with connect(redriver.engine, redriver.url) as conn:
            rows = log.list_failed(conn, limit=max_events, indexed=indexed)
            if include_stuck:
                rows += log.list_stuck(conn, stuck_after_s=redriver.stuck_after_s, limit=max_events, indexed=indexed)
        ids += [r.stripe_event_id for r in rows]
    return list(dict.fromkeys(ids))[:max_events]


def reconcile(redriver: Redriver, *, event_ids: list[str] = (), all_failed: bool = False, include_stuck: bool = True,
              dry_run: bool = False, max_events: int = 500, concurrency: int = 4, rate_per_s: float = 10.0,
              log_fn: Callable[[str], None] | None = None) -> ReconcileReport:
    """Re-drive the selected events; see :func:`select_events`. ``dry_run`` fetches from Stripe but delivers nothing."""
    ids = [log.validate_event_id(e) for e in event_ids]
    indexed = prepare(redriver, dry_run=dry_run)
    selected = select_events(redriver, event_ids=ids, all_failed=all_failed, include_stuck=include_stuck,
                             max_events=max_events, indexed=indexed)
    report = ReconcileReport(selected, dry_run=dry_run)
    if selected:
        report.outcomes = redrive_many(redriver, selected, dry_run=dry_run, concurrency=concurrency,
                                       rate_per_s=rate_per_s, log_fn=log_fn)
    return report


def retry_event(redriver: Redriver, event_id: str, *, dry_run: bool = False) -> Outcome:
    """Runbook §4 "Manual Retry": reset attempts (guarded: never a processed row), then re-drive and read back."""
    log.validate_event_id(event_id)
    prepare(redriver, dry_run=dry_run)
    return redriver.redrive(event_id, reset=True, dry_run=dry_run)
