"""`validate_schema`: the folder's own checks, applied-vs-journal, and drift between snapshot and live database.

Read only: nothing is created or locked. The drift reference is the snapshot of the last applied migration (the
latest snapshot when the database is up to date), so pending migrations are reported as pending, not as drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine

from ..core.database import connect
from ..core.dburl import DatabaseURL
from .drift import DriftFinding, detect_drift
from .folder import MigrationFolder, load_folder
from .planner import make_plan, read_applied


@dataclass
class ValidationReport:
    """Three checks: `folder` (files), `migrations` (journal vs `__drizzle_migrations`), `drift` (schema)."""

    database: str
    folder_path: str
    head: str | None = None
    last_applied: str | None = None
    folder_errors: list[str] = field(default_factory=list)
    folder_warnings: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)
    snapshot: str | None = None
    drift: list[DriftFinding] = field(default_factory=list)
    drift_skipped: str | None = None

    @property
    def folder_ok(self) -> bool:
        return not self.folder_errors

    @property
    def migrations_ok(self) -> bool:
        return self.folder_ok and not self.pending and not self.anomalies

    @property
    def drift_ok(self) -> bool:
        return self.drift_skipped is None and not self.drift

    @property
    def ok(self) -> bool:
        return self.folder_ok and self.migrations_ok and self.drift_ok

    def lines(self) -> list[str]:
        out = [f"database {self.database}, folder {self.folder_path}: head {self.head or '(none)'}, "
               f"last applied {self.last_applied or '(none)'}"]
        out += [f"FOLDER {e}" for e in self.folder_errors] + [f"warning {w}" for w in self.folder_warnings]
        out += [f"PENDING {tag}" for tag in self.pending] + [f"ANOMALY {a}" for a in self.anomalies]
        if self.drift_skipped:
            out.append(f"DRIFT not checked: {self.drift_skipped}")
        out += [f"DRIFT {d}" for d in self.drift]
        out.append("OK: folder valid, all migrations applied, no drift from " + str(self.snapshot) if self.ok
                   else "NOT OK")
        return out

    def as_dict(self) -> dict:
        return {"ok": self.ok, "database": self.database, "folder": self.folder_path, "head": self.head,
                "last_applied": self.last_applied, "folder_errors": self.folder_errors,
                "folder_warnings": self.folder_warnings, "pending": self.pending, "anomalies": self.anomalies,
                "snapshot": self.snapshot, "drift": [d.as_dict() for d in self.drift],
                "drift_skipped": self.drift_skipped}


def validate_schema(engine: Engine, url: DatabaseURL, folder: MigrationFolder | Path | str) -> ValidationReport:
    """Run every check and return the report (never raises for findings; connection errors do raise).

    :param folder: the Drizzle folder, or one already loaded with :func:`~.folder.load_folder`.
    """
    if not isinstance(folder, MigrationFolder):
        folder = load_folder(folder)
    report = ValidationReport(database=url.database, folder_path=str(folder.path),
                              head=folder.head.tag if folder.head else None,
                              folder_errors=[str(p) for p in folder.errors],
                              folder_warnings=[str(p) for p in folder.warnings])
    with connect(engine, url) as conn:
        exists, rows = read_applied(conn)
        plan = make_plan(folder, rows, exists)
        report.pending = [m.tag for m in plan.pending]
        report.anomalies = plan.anomalies()
        applied = sorted(plan.applied, key=lambda m: m.when)
        report.last_applied = applied[-1].tag if applied else None
        reference = folder.snapshot_of(applied[-1]) if applied else None
        if reference is None and not plan.pending:
            reference = folder.latest_snapshot
        if reference is None:
            report.drift_skipped = ("no migration is applied yet" if not applied
                                    else f"no snapshot for {applied[-1].tag}")
            return report
        report.snapshot = f"meta/{reference.path.name}"
        report.drift = detect_drift(conn, reference.data)
    return report
