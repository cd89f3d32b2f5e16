"""What drizzle-orm would apply, and what it would silently get wrong, from the folder and `__drizzle_migrations`.

drizzle-orm's rule (`mysql-core/dialect.ts` L69-84, ../shared/research/drizzle.md §1.7): take the single row with
the greatest `created_at`; apply, in journal order, every entry whose `when` is strictly greater (all of them when
the table is empty). Rows are matched to entries here by `created_at == when` to find what drizzle ignores: entries
it skips forever, applied files edited since, rows no entry explains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..core.database import table_exists
from ..core.errors import OpsError
from .folder import Migration, MigrationFolder

MIGRATIONS_TABLE = "__drizzle_migrations"
# Byte for byte what drizzle-orm sends (reference/migrator_query_log.jsonl, line 1).
CREATE_MIGRATIONS_TABLE = (
    "\n\t\t\tcreate table if not exists `__drizzle_migrations` (\n\t\t\t\tid serial primary key,\n"
    "\t\t\t\thash text not null,\n\t\t\t\tcreated_at bigint\n\t\t\t)\n\t\t"
)
INSERT_MIGRATION_ROW = "insert into `__drizzle_migrations` (`hash`, `created_at`) values(%s, %s)"


@dataclass(frozen=True)
class AppliedRow:
    id: int
    hash: str
    created_at: int | None


@dataclass
class Plan:
    """The pending set exactly as drizzle-orm computes it, plus the anomalies drizzle ignores."""

    folder: MigrationFolder
    rows: list[AppliedRow]
    table_exists: bool
    last_created_at: int | None
    pending: list[Migration] = field(default_factory=list)
    applied: list[Migration] = field(default_factory=list)
    skipped: list[Migration] = field(default_factory=list)
    edited: list[tuple[Migration, AppliedRow]] = field(default_factory=list)
    unknown_rows: list[AppliedRow] = field(default_factory=list)

    @property
    def up_to_date(self) -> bool:
        return not self.pending

    def anomalies(self) -> list[str]:
        """One line per thing drizzle-orm would not notice, each naming the file or row."""
        lines = [f"{m.filename}: journal entry (when {m.when}) is not after the last applied migration "
                 f"(created_at {self.last_created_at}) and was never applied; drizzle-orm skips it silently, forever"
                 for m in self.skipped]
        lines += [f"{m.filename}: edited after it was applied: file hash {m.hash} != recorded {row.hash} "
                  f"(__drizzle_migrations id {row.id})" for m, row in self.edited]
        lines += [f"__drizzle_migrations id {row.id}: created_at {row.created_at} matches no journal entry"
                  for row in self.unknown_rows]
        return lines


class PlanRefused(OpsError):
    """The plan holds something drizzle-orm would do silently and wrongly; nothing was run."""


def read_applied(conn: Connection) -> tuple[bool, list[AppliedRow]]:
    """``(table exists, rows ordered by created_at then id)``; reads only, creates nothing."""
    if not table_exists(conn, MIGRATIONS_TABLE):
        return False, []
    rows = conn.execute(sa.text(f"SELECT id, hash, created_at FROM `{MIGRATIONS_TABLE}` ORDER BY created_at, id"))
    return True, [AppliedRow(int(r.id), r.hash, None if r.created_at is None else int(r.created_at)) for r in rows]


def make_plan(folder: MigrationFolder, rows: list[AppliedRow], table_exists: bool = True) -> Plan:
    """Compute drizzle-orm's pending set for ``folder`` against ``rows`` and classify everything else.

    :param folder: a folder read by :func:`~.folder.read_folder`.
    :param rows: the `__drizzle_migrations` rows (:func:`read_applied`).
    """
    non_null = [r.created_at for r in rows if r.created_at is not None]
    # `order by created_at desc limit 1` puts NULL last, and drizzle compares Number(null) = 0.
    last = max(non_null) if non_null else (0 if rows else None)
    plan = Plan(folder=folder, rows=rows, table_exists=table_exists, last_created_at=last)
    by_when: dict[int, list[AppliedRow]] = {}
    for row in rows:
        if row.created_at is not None:
            by_when.setdefault(row.created_at, []).append(row)
    whens = {m.when for m in folder.migrations}
    for m in folder.migrations:
        if last is None or last < m.when:
            plan.pending.append(m)
            continue
        # one row per entry, the same-hash row first: two entries sharing a `when` cannot both claim one row
        candidates = sorted(by_when.get(m.when, []), key=lambda r: r.hash != m.hash)
        if not candidates:
            plan.skipped.append(m)
            continue
        row = candidates[0]
        by_when[m.when].remove(row)
        plan.applied.append(m)
        if row.hash != m.hash:
            plan.edited.append((m, row))
    plan.unknown_rows = [r for r in rows if r.created_at is None or r.created_at not in whens]
    return plan


def check_plan(plan: Plan, *, accept_skipped: bool = False, accept_edited: bool = False) -> None:
    """Raise :class:`PlanRefused` for entries drizzle would skip forever or applied files edited since.

    :param accept_skipped: proceed as drizzle-orm does, leaving the skipped entries unapplied.
    :param accept_edited: proceed although applied files no longer match their recorded hash.
    """
    blocking = []
    if plan.skipped and not accept_skipped:
        blocking += [line for line in plan.anomalies() if "skips it silently" in line]
    if plan.edited and not accept_edited:
        blocking += [line for line in plan.anomalies() if "edited after it was applied" in line]
    if blocking:
        flags = []
        if plan.skipped and not accept_skipped:
            flags.append("`--accept-skipped` (accept_skipped) to leave skipped entries unapplied as drizzle does")
        if plan.edited and not accept_edited:
            flags.append("`--force` (force) to accept edited applied files")
        raise PlanRefused(
            "Refusing to migrate: " + "; ".join(blocking) + ".",
            next_step="give the entry a `when` after the last applied one (regenerate it), restore the edited file "
                      "from version control, or rerun with " + " / ".join(flags) + ".",
            anomalies=blocking,
        )
