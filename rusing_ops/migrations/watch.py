"""What the journal sensor needs to know: which journal entries the database has not applied yet (read only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine

from ..core.database import connect
from ..core.dburl import DatabaseURL
from ..core.errors import OpsError
from .folder import load_folder
from .planner import make_plan, read_applied


@dataclass(frozen=True)
class JournalStatus:
    problem: str | None = None  # why nothing could be planned (invalid folder, unreadable database)
    pending: list[str] = field(default_factory=list)
    applied: int = 0
    head: str | None = None
    marker: str | None = None  # "<tag>@<when>" of the newest pending entry: one report per new head

    def summary(self) -> str:
        if self.problem:
            return self.problem
        if not self.pending:
            return f"No new journal entries: {self.applied} applied, head {self.head or '(empty journal)'}."
        return f"{len(self.pending)} pending ({', '.join(self.pending)})"


def journal_status(engine: Engine, url: DatabaseURL, folder_path: str | Path) -> JournalStatus:
    """Plan as drizzle-orm would, without applying or creating anything."""
    folder = load_folder(folder_path)
    if folder.errors:
        more = f" (+{len(folder.errors) - 1} more)" if len(folder.errors) > 1 else ""
        return JournalStatus(problem=f"Drizzle folder {folder.path} is not valid: {folder.errors[0]}{more}")
    try:
        with connect(engine, url) as conn:
            exists, rows = read_applied(conn)
    except OpsError as exc:
        return JournalStatus(problem=f"Cannot read __drizzle_migrations: {exc}")
    plan = make_plan(folder, rows, exists)
    newest = plan.pending[-1] if plan.pending else None
    return JournalStatus(pending=[m.tag for m in plan.pending], applied=len(plan.applied),
                         head=folder.head.tag if folder.head else None,
                         marker=f"{newest.tag}@{newest.when}" if newest else None)
