"""This tool's own record of each migration it runs, statement by statement (`rusing_ops_migration_audit`).

drizzle-orm records a migration only once all of it ran; this table also says how far a failed one got, so the
report can name what is already in the database and a rerun can resume at the failing statement when asked.

Each statement is written twice: ``statement_started = k`` BEFORE it is sent and ``statements_applied = k`` after it
returned. A row left ``running`` by a killed process with ``statement_started > statements_applied`` says exactly
which statement was in flight (it may have completed on the server after the client died).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..core import database as dbmod

AUDIT_TABLE = "rusing_ops_migration_audit"
CREATE_AUDIT_TABLE = f"""CREATE TABLE IF NOT EXISTS `{AUDIT_TABLE}` (
  `id` bigint unsigned NOT NULL AUTO_INCREMENT,
  `run_id` varchar(64) NOT NULL,
  `migration` varchar(255) NOT NULL,
  `hash` char(64) NOT NULL,
  `created_at` bigint NOT NULL,
  `statements_total` int NOT NULL,
  `first_statement` int NOT NULL DEFAULT 1,
  `statements_applied` int NOT NULL DEFAULT 0,
  `statement_started` int NULL,
  `status` varchar(16) NOT NULL,
  `error` text NULL,
  `failed_statement` text NULL,
  `backup_key` varchar(1024) NULL,
  `started_at` datetime(6) NOT NULL,
  `finished_at` datetime(6) NULL,
  PRIMARY KEY (`id`),
  KEY `rusing_ops_migration_audit_migration` (`migration`, `created_at`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""

RUNNING, APPLIED, FAILED = "running", "applied", "failed"


@dataclass(frozen=True)
class AuditRow:
    id: int
    run_id: str
    migration: str
    hash: str
    created_at: int
    statements_total: int
    first_statement: int
    statements_applied: int
    status: str
    error: str | None
    failed_statement: str | None
    backup_key: str | None
    started_at: datetime
    finished_at: datetime | None
    statement_started: int | None = None

    @property
    def in_flight(self) -> int | None:
        """The statement a killed run had sent without seeing it return (None when the row is not ``running``)."""
        if self.status == RUNNING and self.statement_started and self.statement_started > self.statements_applied:
            return self.statement_started
        return None

    def as_dict(self) -> dict:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.__dict__.items()}


def ensure_table(conn: Connection) -> None:
    conn.exec_driver_sql(CREATE_AUDIT_TABLE)
    has_column = conn.execute(sa.text(
        "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t "
        "AND COLUMN_NAME = 'statement_started'"), {"t": AUDIT_TABLE}).scalar_one()
    if not has_column:  # a table created by an earlier version of this tool
        conn.exec_driver_sql(f"ALTER TABLE `{AUDIT_TABLE}` ADD COLUMN `statement_started` int NULL "
                             "AFTER `statements_applied`")


def table_exists(conn: Connection) -> bool:
    return dbmod.table_exists(conn, AUDIT_TABLE)


def start(conn: Connection, *, run_id: str, migration: str, hash: str, created_at: int, total: int,
          first_statement: int, already_applied: int, backup_key: str | None) -> int:
    result = conn.execute(
        sa.text(f"INSERT INTO `{AUDIT_TABLE}` (run_id, migration, hash, created_at, statements_total, first_statement, "
                "statements_applied, status, backup_key, started_at) VALUES (:r, :m, :h, :c, :t, :f, :a, :s, :b, NOW(6))"),
        {"r": run_id, "m": migration, "h": hash, "c": created_at, "t": total, "f": first_statement,
         "a": already_applied, "s": RUNNING, "b": backup_key},
    )
    return int(result.lastrowid)


def starting(conn: Connection, audit_id: int, number: int) -> None:
    """Written before statement ``number`` is sent: a kill from here on leaves it marked as in flight."""
    conn.execute(sa.text(f"UPDATE `{AUDIT_TABLE}` SET statement_started = :n WHERE id = :i"), {"n": number, "i": audit_id})


def progress(conn: Connection, audit_id: int, applied: int) -> None:
    """Written after statement ``applied`` returned."""
    conn.execute(sa.text(f"UPDATE `{AUDIT_TABLE}` SET statements_applied = :a WHERE id = :i"), {"a": applied, "i": audit_id})


def finish(conn: Connection, audit_id: int, status: str, *, error: str | None = None,
           failed_statement: str | None = None) -> None:
    conn.execute(
        sa.text(f"UPDATE `{AUDIT_TABLE}` SET status = :s, error = :e, failed_statement = :f, finished_at = NOW(6) "
                "WHERE id = :i"),
        {"s": status, "e": error, "f": failed_statement, "i": audit_id},
    )


def latest(conn: Connection, migration: str, created_at: int) -> AuditRow | None:
    """The most recent audit row of that migration (tag and journal `when`), if the table exists."""
    if not table_exists(conn):
        return None
    row = conn.execute(
        sa.text(f"SELECT * FROM `{AUDIT_TABLE}` WHERE migration = :m AND created_at = :c ORDER BY id DESC LIMIT 1"),
        {"m": migration, "c": created_at},
    ).mappings().first()
    return AuditRow(**row) if row else None


def history(conn: Connection, limit: int = 50) -> list[AuditRow]:
    if not table_exists(conn):
        return []
    rows = conn.execute(sa.text(f"SELECT * FROM `{AUDIT_TABLE}` ORDER BY id DESC LIMIT :n"), {"n": limit}).mappings()
    return [AuditRow(**r) for r in rows]
