"""The runbook's Admin "Stability" view as numbers: totals by status and type, failed / dead-lettered / stuck
counts, the age of the oldest unprocessed event, and the most recent failures."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import events_log as log


@dataclass
class WebhookStats:
    total: int
    by_status: dict[str, int]
    by_type: dict[str, dict[str, int]]
    failed: int
    dead_lettered: int
    stuck: int
    oldest_unprocessed_age_s: int | None
    recent_failures: list[dict] = field(default_factory=list)
    stuck_after_s: int = log.STUCK_AFTER_S

    def as_dict(self) -> dict:
        return asdict(self)


def collect(conn: Connection, *, stuck_after_s: int = log.STUCK_AFTER_S, recent: int = 20, indexed: bool = True) -> WebhookStats:
    """Read the statistics in a handful of queries (the per-type totals scan the table; the rest use indexes).

    Read only: with ``indexed=False`` (our status index is missing) the same queries run without the index hint."""
    by_status = {r.status: int(r.n) for r in conn.execute(sa.text(
        f"SELECT status, COUNT(*) AS n FROM {log.TABLE} GROUP BY status"))}
    by_type: dict[str, dict[str, int]] = {}
    for r in conn.execute(sa.text(f"SELECT eventType, status, COUNT(*) AS n FROM {log.TABLE} GROUP BY eventType, status")):
        by_type.setdefault(r.eventType, {})[r.status] = int(r.n)
    counts = log.count_status(conn, stuck_after_s=stuck_after_s, indexed=indexed)
    oldest = conn.execute(sa.text(
        f"SELECT MAX(TIMESTAMPDIFF(SECOND, createdAt, NOW())) FROM {log.TABLE} WHERE status IN ('processing', 'failed')"
    )).scalar()
    rows = conn.execute(sa.text(
        f"SELECT stripeEventId, eventType, attempts, lastError, TIMESTAMPDIFF(SECOND, updatedAt, NOW()) AS idle "
        f"FROM {log.TABLE} {log.index_hint(indexed)} WHERE status = 'failed' ORDER BY updatedAt DESC, id DESC "
        "LIMIT :n"), {"n": recent})
    failures = [{"event_id": r.stripeEventId, "type": r.eventType, "attempts": int(r.attempts),
                 "dead_lettered": int(r.attempts) >= log.MAX_ATTEMPTS, "idle_s": int(r.idle),
                 "last_error": (r.lastError or "")[:300]} for r in rows]
    return WebhookStats(sum(by_status.values()), by_status, by_type, counts["failed"], counts["dead_lettered"],
                        counts["stuck"], None if oldest is None else int(oldest), failures, stuck_after_s)
