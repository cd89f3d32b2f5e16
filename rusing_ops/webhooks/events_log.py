"""The app's `webhook_events_log` (runbook §4) and this tool's own audit table: DDL, keyset reads, row updates.

The app claims each event in `webhook_events_log` (unique `stripeEventId`, status processing -> processed |
failed, `attempts` counted per claim, dead-lettered at ``attempts >= 3``). This module reads that table for
failed, stuck and dead-lettered rows, makes the runbook's manual-retry reset, and records every action this tool
takes in ``rusing_ops_webhook_audit``. All SQL uses bound parameters; event ids are validated before any query.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ..core import database as dbmod
from ..core.database import DB_WRITE_LOCK, connect, named_lock
from ..core.dburl import DatabaseURL
from ..core.errors import ConfigError

TABLE = "webhook_events_log"
AUDIT_TABLE = "rusing_ops_webhook_audit"
STUCK_AFTER_S = 900  # a row `processing` this long (15 min) is stuck: the app died mid-event
MAX_ATTEMPTS = 3  # runbook §4: "Failed events: Retried up to 3 times"; attempts >= 3 is dead-lettered
STATUS_INDEX = "rusing_ops_status_updated_idx"

# Stripe object ids are `evt_` + alphanumerics (test fixtures use `_` too); the column is varchar(255).
_EVENT_ID = re.compile(r"evt_[A-Za-z0-9_]{1,251}")

# Byte for byte the `webhook_events_log` of the app's 0000_initial_schema.sql (what ensureWebhookEventsTable()
# creates on first use), with IF NOT EXISTS so an existing table is never touched.
APP_TABLE_DDL = """CREATE TABLE IF NOT EXISTS `webhook_events_log` (
	`id` int AUTO_INCREMENT NOT NULL,
	`stripeEventId` varchar(255) NOT NULL,
	`eventType` varchar(128) NOT NULL,
	`status` enum('processing','processed','failed') NOT NULL DEFAULT 'processing',
	`attempts` int NOT NULL DEFAULT 0,
	`lastError` text,
	`payload` json,
	`createdAt` timestamp NOT NULL DEFAULT (now()),
	`updatedAt` timestamp NOT NULL DEFAULT (now()) ON UPDATE CURRENT_TIMESTAMP,
	`processedAt` timestamp,
	CONSTRAINT `webhook_events_log_id` PRIMARY KEY(`id`),
	CONSTRAINT `webhook_events_log_stripeEventId_unique` UNIQUE(`stripeEventId`)
)"""

# Why an index of our own: rows turn `failed` (or stay `processing`) long after they were created, so the only
# column that moves when a row changes state is `updatedAt`. The app's schema indexes (status, createdAt) only
# (migration 0001), which cannot find "rows that failed since the last tick" without scanning. InnoDB appends the
# primary key to every secondary index, so this one is (status, updatedAt, id): exactly the sensor's keyset order.
INDEX_DDL = f"CREATE INDEX `{STATUS_INDEX}` ON `webhook_events_log` (`status`, `updatedAt`)"

AUDIT_DDL = f"""CREATE TABLE IF NOT EXISTS `{AUDIT_TABLE}` (
	`id` bigint AUTO_INCREMENT NOT NULL,
	`at` timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
	`actor` varchar(64) NOT NULL,
	`runId` varchar(64),
	`action` varchar(32) NOT NULL,
	`stripeEventId` varchar(255),
	`outcome` varchar(32) NOT NULL,
	`detail` text,
	PRIMARY KEY (`id`),
	KEY `{AUDIT_TABLE}_event_idx` (`stripeEventId`)
)"""


def validate_event_id(event_id: str) -> str:
    """Return ``event_id`` if it looks like a Stripe event id, else raise :class:`ConfigError` (nothing is queried)."""
    if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
        shown = repr(event_id)[:80]
        raise ConfigError(f"{shown} is not a Stripe event id (expected evt_ followed by letters and digits); "
                          "refused before any query was sent.", next_step="copy the id from the Stripe Dashboard or "
                          "`rusing-ops webhooks status`, e.g. evt_1NG8Du2eZvKYlo2CUI79vXWy")
    return event_id


@dataclass(frozen=True)
class LogRow:
    id: int
    stripe_event_id: str
    event_type: str
    status: str
    attempts: int
    last_error: str | None
    created_ts: int
    updated_ts: int
    age_s: int  # seconds since createdAt (server clock)
    idle_s: int  # seconds since updatedAt
    account: str | None = None  # the connected account (acct_...) named in the stored payload: where to fetch from

    @property
    def dead_lettered(self) -> bool:
        return self.status == "failed" and self.attempts >= MAX_ATTEMPTS

    def as_dict(self) -> dict:
        return {"event_id": self.stripe_event_id, "type": self.event_type, "status": self.status,
                "attempts": self.attempts, "last_error": (self.last_error or "")[:300], "age_s": self.age_s}


_COLUMNS = ("id, stripeEventId, eventType, status, attempts, lastError, UNIX_TIMESTAMP(createdAt) AS cts, "
            "UNIX_TIMESTAMP(updatedAt) AS uts, TIMESTAMPDIFF(SECOND, createdAt, NOW()) AS age, "
            "TIMESTAMPDIFF(SECOND, updatedAt, NOW()) AS idle")


_ACCOUNT = re.compile(r"acct_[A-Za-z0-9]{1,64}")


def _row(r) -> LogRow:
    account = getattr(r, "acct", None)
    return LogRow(int(r.id), r.stripeEventId, r.eventType, r.status, int(r.attempts), r.lastError,
                  int(r.cts), int(r.uts), int(r.age), int(r.idle),
                  account if account and _ACCOUNT.fullmatch(account) else None)


# ------------------------------------------------------------------------------------------------ schema


def table_exists(conn: Connection, name: str) -> bool:
    return dbmod.table_exists(conn, name)


def index_exists(conn: Connection, name: str) -> bool:
    return conn.execute(sa.text("SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() "
                                "AND TABLE_NAME = :t AND INDEX_NAME = :i"), {"t": TABLE, "i": name}).scalar_one() > 0


def missing_schema(conn: Connection) -> list[str]:
    """What this tool's webhook work lacks: ``table`` (the app's log), ``index`` (our status index), ``audit``."""
    has_table = table_exists(conn, TABLE)
    return [what for what, present in (("table", has_table), ("audit", table_exists(conn, AUDIT_TABLE)),
                                       ("index", has_table and index_exists(conn, STATUS_INDEX))) if not present]


def index_hint(indexed: bool) -> str:
    """``FORCE INDEX`` on our status index when it exists; without it the same query scans (slower, still right)."""
    return f"FORCE INDEX ({STATUS_INDEX})" if indexed else ""


def ensure(engine: Engine, url: DatabaseURL, *, lock_timeout_s: float = 10.0) -> list[str]:
    """Create what is missing: the app's table (as ``ensureWebhookEventsTable()`` would), our index, the audit table.

    Only the setup job (`setup_webhook_tables`, database-write pool) calls this: read paths never change the
    schema. Checks first and changes nothing when all exist; DDL runs under the database write lock so it never
    interleaves with a migration. Returns the list of things created.
    """
    with connect(engine, url) as conn:
        missing = missing_schema(conn)
    if not missing:
        return []
    created = []
    with named_lock(engine, url, DB_WRITE_LOCK, lock_timeout_s) as conn:
        if not table_exists(conn, TABLE):
            conn.execute(sa.text(APP_TABLE_DDL))
            created.append(TABLE)
        if not index_exists(conn, STATUS_INDEX):
            conn.execute(sa.text(INDEX_DDL))
            created.append(f"{TABLE}.{STATUS_INDEX}")
        if not table_exists(conn, AUDIT_TABLE):
            conn.execute(sa.text(AUDIT_DDL))
            created.append(AUDIT_TABLE)
        conn.commit()
    return created


# ------------------------------------------------------------------------------------------------ reads


@dataclass(frozen=True)
class Position:
    """A keyset position in (updatedAt, id) order; (0, 0) is the beginning."""

    ts: int = 0
    id: int = 0

    def encode(self) -> list[int]:
        return [self.ts, self.id]

    @classmethod
    def decode(cls, value) -> Position:
        return cls(int(value[0]), int(value[1])) if value else cls()


def get_row(conn: Connection, event_id: str) -> LogRow | None:
    validate_event_id(event_id)
    r = conn.execute(sa.text(f"SELECT {_COLUMNS}, JSON_UNQUOTE(JSON_EXTRACT(payload, '$.account')) AS acct "
                             f"FROM {TABLE} WHERE stripeEventId = :e"), {"e": event_id}).first()
    return _row(r) if r else None


def rows_for(conn: Connection, event_ids: list[str]) -> dict[str, LogRow]:
    """The log rows of ``event_ids`` (validated first), keyed by event id; absent ids are simply missing."""
    ids = [validate_event_id(e) for e in event_ids]
    found: dict[str, LogRow] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        stmt = sa.text(f"SELECT {_COLUMNS} FROM {TABLE} WHERE stripeEventId IN :ids").bindparams(
            sa.bindparam("ids", expanding=True))
        for r in conn.execute(stmt, {"ids": chunk}):
            found[r.stripeEventId] = _row(r)
    return found


def read_after(conn: Connection, status: str, after: Position, *, limit: int, settle_s: int = 2,
               older_than_s: int = 0, max_attempts: int | None = None, indexed: bool = True) -> list[LogRow]:
    """Rows in ``status`` whose (updatedAt, id) is after ``after``, oldest change first, at most ``limit``.

    Index-backed by (status, updatedAt, id): the range starts at the cursor, so a tick with nothing new reads no
    row whatever the table's size. ``settle_s`` leaves out the current seconds (``updatedAt`` has 1 s resolution,
    so a row changed later in the same second would otherwise sort before an advanced cursor and be missed).
    ``older_than_s`` keeps only rows idle that long (stuck ``processing``); ``max_attempts`` keeps rows below it.
    ``indexed=False`` (our index is missing) reads the same rows without the index hint.
    """
    sql = (f"SELECT {_COLUMNS} FROM {TABLE} {index_hint(indexed)} WHERE status = :st "
           "AND updatedAt >= FROM_UNIXTIME(:ts) AND NOT (updatedAt = FROM_UNIXTIME(:ts) AND id <= :id) "
           "AND updatedAt < NOW() - INTERVAL :lag SECOND")
    if max_attempts is not None:
        sql += " AND attempts < :maxa"
    sql += " ORDER BY updatedAt, id LIMIT :lim"
    params = {"st": status, "ts": after.ts, "id": after.id, "lag": max(settle_s, older_than_s), "lim": limit,
              "maxa": max_attempts}
    return [_row(r) for r in conn.execute(sa.text(sql), params)]


def list_failed(conn: Connection, *, limit: int, include_dead: bool = False, indexed: bool = True) -> list[LogRow]:
    """Failed rows (oldest change first); dead-lettered ones only when ``include_dead``."""
    return read_after(conn, "failed", Position(), limit=limit, settle_s=0,
                      max_attempts=None if include_dead else MAX_ATTEMPTS, indexed=indexed)


def list_dead_lettered(conn: Connection, *, limit: int) -> list[LogRow]:
    """Failed rows with ``attempts >= 3``: the app will not claim them again until a manual retry resets them."""
    rows = conn.execute(sa.text(f"SELECT {_COLUMNS} FROM {TABLE} WHERE status = 'failed' AND attempts >= :maxa "
                                "ORDER BY updatedAt DESC, id DESC LIMIT :lim"), {"maxa": MAX_ATTEMPTS, "lim": limit})
    return [_row(r) for r in rows]


def list_stuck(conn: Connection, *, stuck_after_s: int, limit: int, indexed: bool = True) -> list[LogRow]:
    """Rows `processing` for longer than ``stuck_after_s``."""
    return read_after(conn, "processing", Position(), limit=limit, older_than_s=stuck_after_s, indexed=indexed)


def count_status(conn: Connection, *, stuck_after_s: int, indexed: bool = True) -> dict[str, int]:
    """failed, dead_lettered and stuck counts; each is a range on the status index (cheap while they are few)."""
    row = conn.execute(sa.text(
        f"SELECT (SELECT COUNT(*) FROM {TABLE} WHERE status = 'failed') AS failed, "
        f"(SELECT COUNT(*) FROM {TABLE} WHERE status = 'failed' AND attempts >= :maxa) AS dead, "
        f"(SELECT COUNT(*) FROM {TABLE} {index_hint(indexed)} WHERE status = 'processing' "
        "AND updatedAt < NOW() - INTERVAL :stuck SECOND) AS stuck"), {"maxa": MAX_ATTEMPTS, "stuck": stuck_after_s}).one()
    return {"failed": int(row.failed), "dead_lettered": int(row.dead), "stuck": int(row.stuck)}


def count_indexed(conn: Connection, *, stuck_after_s: int, indexed: bool = True) -> dict[str, int]:
    """failed and stuck counts read from the status index alone (no row lookups): what a sensor tick can afford."""
    hint = index_hint(indexed)
    row = conn.execute(sa.text(
        f"SELECT (SELECT COUNT(*) FROM {TABLE} {hint} WHERE status = 'failed') AS failed, "
        f"(SELECT COUNT(*) FROM {TABLE} {hint} WHERE status = 'processing' "
        "AND updatedAt < NOW() - INTERVAL :stuck SECOND) AS stuck"), {"stuck": stuck_after_s}).one()
    return {"failed": int(row.failed), "stuck": int(row.stuck)}


# ------------------------------------------------------------------------------------------------ writes


def reset_for_retry(conn: Connection, event_id: str, *, stuck_after_s: int) -> int:
    """The runbook's manual reset (``SET status='failed', attempts=0``), guarded so it can never reopen work.

    Only a `failed` row, or a `processing` row idle for ``stuck_after_s``, is reset; a `processed` row (or one
    being processed right now) is left alone, so a retry racing a successful delivery cannot cause a second run.
    Returns the number of rows changed (0 or 1).
    """
    validate_event_id(event_id)
    result = conn.execute(sa.text(
        f"UPDATE {TABLE} SET status = 'failed', attempts = 0 WHERE stripeEventId = :e AND (status = 'failed' OR "
        "(status = 'processing' AND updatedAt < NOW() - INTERVAL :stuck SECOND))"),
        {"e": event_id, "stuck": stuck_after_s})
    conn.commit()
    return result.rowcount


def release_stuck(conn: Connection, event_id: str, *, stuck_after_s: int) -> int:
    """Turn a `processing` row idle for ``stuck_after_s`` into `failed` (attempts kept) so the app can claim it."""
    validate_event_id(event_id)
    result = conn.execute(sa.text(
        f"UPDATE {TABLE} SET status = 'failed', lastError = :why WHERE stripeEventId = :e AND status = 'processing' "
        "AND updatedAt < NOW() - INTERVAL :stuck SECOND"),
        {"e": event_id, "stuck": stuck_after_s,
         "why": f"released by rusing-ops: processing for more than {stuck_after_s}s"})
    conn.commit()
    return result.rowcount


def restore_attempts(conn: Connection, event_id: str, attempts: int) -> int:
    """Undo :func:`reset_for_retry` when the re-delivery never reached the app (only if nobody claimed it since)."""
    validate_event_id(event_id)
    result = conn.execute(sa.text(f"UPDATE {TABLE} SET attempts = :a WHERE stripeEventId = :e AND status = 'failed' "
                                  "AND attempts = 0"), {"e": event_id, "a": attempts})
    conn.commit()
    return result.rowcount


def audit(conn: Connection, *, actor: str, action: str, outcome: str, event_id: str | None = None,
          run_id: str | None = None, detail: dict | str | None = None) -> None:
    """Append one line to this tool's audit table (who, what, which event, outcome). Never holds a secret."""
    text = detail if isinstance(detail, str) or detail is None else json.dumps(detail, default=str, sort_keys=True)
    conn.execute(sa.text(f"INSERT INTO {AUDIT_TABLE} (actor, runId, action, stripeEventId, outcome, detail) "
                         "VALUES (:actor, :run, :action, :e, :outcome, :detail)"),
                 {"actor": actor[:64], "run": run_id, "action": action[:32], "e": event_id, "outcome": outcome[:32],
                  "detail": text})
    conn.commit()


def audit_rows(conn: Connection, event_id: str | None = None, limit: int = 100) -> list[dict]:
    sql = f"SELECT id, at, actor, runId, action, stripeEventId, outcome, detail FROM {AUDIT_TABLE}"
    params: dict = {"lim": limit}
    if event_id is not None:
        sql += " WHERE stripeEventId = :e"
        params["e"] = validate_event_id(event_id)
    rows = conn.execute(sa.text(sql + " ORDER BY id DESC LIMIT :lim"), params)
    return [dict(r._mapping) for r in rows]
