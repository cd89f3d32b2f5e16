"""What the `failed_webhook_events` sensor sees on a tick: rows that turned `failed` or got stuck in `processing`
since its cursor, read by keyset on (status, updatedAt, id) so a quiet tick reads no row at any table size."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from ..core.database import connect
from ..core.dburl import DatabaseURL
from . import events_log as log


@dataclass(frozen=True)
class Cursor:
    failed: log.Position = field(default_factory=log.Position)
    stuck: log.Position = field(default_factory=log.Position)

    def encode(self) -> str:
        return json.dumps({"failed": self.failed.encode(), "stuck": self.stuck.encode()})

    @classmethod
    def decode(cls, text: str | None) -> Cursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(log.Position.decode(data.get("failed")), log.Position.decode(data.get("stuck")))


@dataclass
class TickPlan:
    batches: list[list[log.LogRow]]
    cursor: Cursor
    dead_lettered: list[log.LogRow] = field(default_factory=list)  # newly seen: their run fails, which alerts
    counts: dict[str, int] | None = None
    missing: list[str] = field(default_factory=list)  # what log.missing_schema found: "table", "index", "audit"

    @property
    def no_table(self) -> bool:
        return "table" in self.missing

    @staticmethod
    def run_key(batch: list[log.LogRow]) -> str:
        """Same rows in the same state -> same key, so Dagster never requests that batch twice."""
        digest = hashlib.sha1(",".join(f"{r.id}@{r.updated_ts}" for r in batch).encode()).hexdigest()[:20]
        return f"failed_webhook_events:{digest}"

    def skip_reason(self, previous: Cursor) -> str:
        if self.no_table:
            return (f"{log.TABLE} does not exist yet (the app creates it on its first webhook); nothing to watch, "
                    "the cursor did not move.")
        since = _when(previous.failed.ts)
        counts = self.counts or {}
        return (f"No new failed or stuck rows in webhook_events_log since {since} "
                f"(the log now holds {counts.get('failed', '?')} failed rows, dead-lettered ones included, and "
                f"{counts.get('stuck', '?')} stuck; see webhook_processing_stats).")


def _when(ts: int) -> str:
    return "the beginning" if not ts else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def plan_tick(engine: Engine, url: DatabaseURL, cursor_text: str | None, *, max_rows: int = 200, batch_size: int = 50,
              stuck_after_s: int = log.STUCK_AFTER_S, settle_s: int = 2) -> TickPlan:
    """Read at most ``max_rows`` new failed and stuck rows after the cursor and cut them into batches.

    Newly dead-lettered rows are batched too: their re-drive stops at "dead_lettered" without delivering (the app
    would refuse them; a person decides), so the run fails and the run-failure alert fires. The counts for the
    skip message are read only when there is nothing to do.

    Read only: a missing table is a plan with nothing to do; a missing status index (created by the
    `setup_webhook_tables` job) means the same reads without the index hint, reported in ``missing``.
    """
    cursor = Cursor.decode(cursor_text)
    with connect(engine, url) as conn:
        missing = log.missing_schema(conn)
        if "table" in missing:
            return TickPlan([], cursor, missing=missing)
        indexed = "index" not in missing
        failed = log.read_after(conn, "failed", cursor.failed, limit=max_rows, settle_s=settle_s, indexed=indexed)
        stuck = log.read_after(conn, "processing", cursor.stuck, limit=max(0, max_rows - len(failed)),
                               older_than_s=stuck_after_s, indexed=indexed) if len(failed) < max_rows else []
        new = Cursor(log.Position(failed[-1].updated_ts, failed[-1].id) if failed else cursor.failed,
                     log.Position(stuck[-1].updated_ts, stuck[-1].id) if stuck else cursor.stuck)
        todo = failed + stuck
        plan = TickPlan([todo[i:i + batch_size] for i in range(0, len(todo), batch_size)], new,
                        [r for r in failed if r.dead_lettered], missing=missing)
        if not todo:
            plan.counts = log.count_indexed(conn, stuck_after_s=stuck_after_s, indexed=indexed)
    return plan
