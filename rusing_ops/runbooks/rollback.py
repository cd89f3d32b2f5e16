"""Manual rollback of the last applied Drizzle migration (runbook §2, checklist steps 1-6) as one checked procedure.

Steps: stop the app -> fresh backup -> apply the reverse SQL -> delete the migration's `__drizzle_migrations` row ->
remove it from the journal and delete its SQL file and snapshot (or print the exact edit when the folder is read
only) -> restart the app -> verify its health. Every precondition is checked before the first step; a dry run
lists every step with what it would do and changes nothing.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..core.app import AppControl
from ..core.database import DB_WRITE_LOCK, connect, named_lock
from ..core.dburl import DatabaseURL, scrub_secret
from ..core.errors import ConfigError, NotFound, OpsError, require_confirm
from ..migrations.applier import restore_command
from ..migrations.folder import JOURNAL, Migration, load_folder
from ..migrations.planner import MIGRATIONS_TABLE, AppliedRow, read_applied
from ..migrations.sqlfile import split_script

STEP_NAMES = ["stop the app", "take a fresh backup", "apply the reverse SQL",
              "delete the __drizzle_migrations row", "update the journal and delete the SQL file",
              "restart the app", "verify health"]


class RollbackRefused(OpsError):
    """A precondition failed; nothing was done."""


class RollbackFailed(OpsError):
    """A step failed part way; the data names the step and the state."""


@dataclass
class Step:
    number: int
    name: str
    status: str = "planned"  # planned | done | skipped | failed
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.number}. {self.name}: {self.status}" + (f" - {self.detail}" if self.detail else "")


@dataclass
class RollbackResult:
    database: str
    migration: str
    dry_run: bool
    statements: list[str]
    row: AppliedRow
    journal_edit: str
    steps: list[Step] = field(default_factory=lambda: [Step(i + 1, n) for i, n in enumerate(STEP_NAMES)])
    backup_key: str | None = None

    def lines(self) -> list[str]:
        head = "DRY RUN: " if self.dry_run else ""
        return [f"{head}rollback of {self.migration} on {self.database}"] + [str(s) for s in self.steps]

    def as_dict(self) -> dict:
        return {"database": self.database, "migration": self.migration, "dry_run": self.dry_run,
                "backup_key": self.backup_key, "statements": self.statements,
                "steps": [{"number": s.number, "name": s.name, "status": s.status, "detail": s.detail}
                          for s in self.steps]}


def rollback_migration(engine: Engine, url: DatabaseURL, folder_path: Path | str, migration: str, *, reverse_sql: str,
                       confirm: str | None, dry_run: bool = False, app: AppControl | None = None,
                       backup: Callable[[str], Any] | None = None, no_backup: bool = False,
                       lock_timeout_s: float = 10.0, log: Callable[[str], None] | None = None) -> RollbackResult:
    """Roll back ``migration`` (the last applied one) following runbook §2.

    :param reverse_sql: the SQL that undoes it (statements separated by `;` or drizzle breakpoints).
    :param confirm: must equal the database name (checked even for a dry run when given).
    :param app: stops / restarts the app and checks its health (steps without a command say they did nothing).
    :param backup: ``backup(reason)`` -> object with ``.key`` (or the key); required unless ``no_backup``.
    """
    say = log or (lambda line: None)
    if confirm is not None or not dry_run:
        require_confirm(confirm, url.database, "nothing was rolled back")
    folder = load_folder(folder_path)
    m = folder.by_tag(migration)
    if m is None:
        raise NotFound(f"Migration {migration!r} is not in {Path(folder_path) / JOURNAL}.",
                       next_step="name a tag from the journal (`rusing-ops db validate` lists them).")
    statements = split_script(reverse_sql)
    if not statements:
        raise RollbackRefused(f"The reverse SQL for {migration} holds no statement.",
                              next_step="write the SQL that undoes it (e.g. ALTER TABLE ... DROP COLUMN ...).")
    if not dry_run and not no_backup and backup is None:
        raise ConfigError("No backup function is configured for the pre-rollback backup.",
                          next_step="configure RUSING_BACKUP_URL, or pass --no-backup deliberately.")
    with connect(engine, url) as conn:
        row = _last_row_of(conn, m)
    result = RollbackResult(url.database, migration, dry_run, statements, row, _journal_edit(Path(folder_path), m))
    if dry_run:
        _describe(result, app, no_backup, Path(folder_path))
        for line in result.lines():
            say(line)
        return result
    _run(result, _Run(engine, url, m, Path(folder_path), app, backup, no_backup, lock_timeout_s, say))
    return result


@dataclass(frozen=True)
class _Run:
    """What a real (not dry) rollback works with, in one object instead of nine positional arguments."""

    engine: Engine
    url: DatabaseURL
    migration: Any  # the folder's Migration being rolled back
    folder: Path
    app: AppControl | None
    backup: Callable[[str], Any] | None
    no_backup: bool
    lock_timeout_s: float
    say: Callable[[str], None]


def _last_row_of(conn, m: Migration) -> AppliedRow:
    _, rows = read_applied(conn)
    mine = [r for r in rows if r.created_at == m.when]
    if not mine:
        raise RollbackRefused(f"Migration {m.tag} (created_at {m.when}) has no row in {MIGRATIONS_TABLE}: "
                              "it is not applied, so there is nothing to roll back.")
    last = max((r for r in rows if r.created_at is not None), key=lambda r: (r.created_at, r.id))
    if last.created_at != m.when:
        raise RollbackRefused(f"Only the last applied migration can be rolled back; {m.tag} (created_at {m.when}) is "
                              f"followed by the row with created_at {last.created_at} (id {last.id}).",
                              next_step="roll back the later migrations first, newest first.")
    return mine[-1]


def _journal_edit(folder: Path, m: Migration) -> str:
    """The exact change to `meta/_journal.json` as a unified diff, and the files to delete."""
    path = folder / JOURNAL
    old = path.read_text()
    new = _journal_without(old, m.tag)
    diff = "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"a/{JOURNAL}", f"b/{JOURNAL}"))
    files = [f"{m.tag}.sql"] + ([m.snapshot_name] if (folder / m.snapshot_name).exists() else [])
    return diff + "\n" + "\n".join(f"rm {folder / f}" for f in files)


def _journal_without(text: str, tag: str) -> str:
    journal = json.loads(text)
    journal["entries"] = [e for e in journal["entries"] if e.get("tag") != tag]
    return json.dumps(journal, indent=2, ensure_ascii=False)  # drizzle-kit: JSON.stringify(j, null, 2), no newline


def _writable(folder: Path, m: Migration) -> bool:
    return all(os.access(p, os.W_OK) for p in (folder, folder / "meta", folder / JOURNAL))


def _describe(result: RollbackResult, app: AppControl | None, no_backup: bool, folder: Path) -> None:
    s = result.steps
    s[0].detail = _app_plan(app, "stop")
    s[1].detail = "skipped (--no-backup)" if no_backup else "backup with reason `pre-rollback` into the backup store"
    s[2].detail = f"{len(result.statements)} statements under the database write lock:\n" + "\n".join(
        f"  [{i}] {stmt}" for i, stmt in enumerate(result.statements, start=1))
    s[3].detail = (f"DELETE FROM `{MIGRATIONS_TABLE}` WHERE id = {result.row.id} "
                   f"(hash {result.row.hash}, created_at {result.row.created_at})")
    m = load_folder(folder).by_tag(result.migration)
    how = "the folder is writable: edit applied by the tool" if _writable(folder, m) else \
        "the folder is read only: the edit below is printed for you to make"
    s[4].detail = f"{how}\n{result.journal_edit}"
    s[5].detail = _app_plan(app, "restart")
    s[6].detail = f"GET {app.health_url}" if app and app.configured else "no APP_BASE_URL: health is not checked"


def _app_plan(app: AppControl | None, action: str) -> str:
    command = app.commands.get(action) if app else None
    return f"run `{command}`" if command else f"no RUSING_APP_{action.upper()}_COMMAND: nothing to run"


def _run(result: RollbackResult, run: _Run) -> None:
    engine, url, m, folder, app = run.engine, run.url, run.migration, run.folder, run.app
    backup, no_backup, lock_timeout_s, say = run.backup, run.no_backup, run.lock_timeout_s, run.say
    steps = result.steps

    def done(step: Step, status: str, detail: str) -> None:
        step.status, step.detail = status, detail
        say(str(step))

    stopped = app.run("stop") if app else None
    if stopped is not None and not stopped.ok:
        done(steps[0], "failed", stopped.describe())
        raise RollbackFailed(f"Stopping the app failed ({stopped.describe()}); nothing else was done.", changed=None,
                             next_step="check the app, then rerun the rollback.", steps=result.as_dict()["steps"])
    done(steps[0], "done" if stopped and stopped.ran else "skipped",
         stopped.describe() if stopped else "no app control configured")
    if no_backup:
        done(steps[1], "skipped", "--no-backup")
    else:
        ref = backup("pre-rollback")
        result.backup_key = str(getattr(ref, "key", ref))
        done(steps[1], "done", result.backup_key)
    with named_lock(engine, url, DB_WRITE_LOCK, lock_timeout_s), connect(engine, url) as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        _apply_reverse(conn, result, steps[2], say)
        conn.execute(sa.text(f"DELETE FROM `{MIGRATIONS_TABLE}` WHERE id = :i"), {"i": result.row.id})
        done(steps[3], "done", f"deleted row id {result.row.id} (created_at {result.row.created_at})")
    if _writable(folder, m):
        (folder / JOURNAL).write_text(_journal_without((folder / JOURNAL).read_text(), m.tag))
        removed = [p for p in (m.path, folder / m.snapshot_name) if p.exists()]
        for p in removed:
            p.unlink()
        after = load_folder(folder)
        check = (f"{len(after.migrations)} journal entries = {len(list(folder.glob('*.sql')))} SQL files"
                 if not after.errors else "folder NOT valid: " + "; ".join(str(p) for p in after.errors))
        done(steps[4], "done", "journal entry removed; deleted " + ", ".join(p.name for p in removed) + f"; {check}")
    else:
        done(steps[4], "skipped", f"the folder is read only; make this edit in the app repository:\n{result.journal_edit}")
    restarted = app.run("restart") if app else None
    done(steps[5], "done" if restarted and restarted.ran and restarted.ok else "failed" if restarted and not restarted.ok
         else "skipped", restarted.describe() if restarted else "no app control configured")
    _verify(result, app, steps[6], done)


def _apply_reverse(conn, result: RollbackResult, step: Step, say) -> None:
    cursor = conn.connection.dbapi_connection.cursor()
    password = conn.engine.url.password  # scrubbed from what the failure says (a reverse SQL may hold one too)
    for number, statement in enumerate(result.statements, start=1):
        try:
            cursor.execute(statement)
        except pymysql.MySQLError as exc:
            step.status = "failed"
            step.detail = f"statement {number}: {scrub_secret(str(exc), password)}"
            restore = restore_command(result.backup_key, result.database) if result.backup_key else None
            raise RollbackFailed(
                f"Reverse SQL for {result.migration} failed at statement {number} of {len(result.statements)}: "
                f"{scrub_secret(str(exc), password)}\nStatement: {scrub_secret(statement[:300], password)}\nStatements 1-{number - 1} are applied; the "
                f"{MIGRATIONS_TABLE} row and the journal are unchanged; the app is still stopped.",
                changed=number > 1,
                next_step=(f"restore the fresh backup with `{restore}`" if restore else "fix the database by hand")
                + ", correct the reverse SQL, then rerun the rollback; restart the app when done.",
                statement_index=number, restore_command=restore, steps=result.as_dict()["steps"]) from None
    step.status, step.detail = "done", f"{len(result.statements)} statements applied"
    say(str(step))


def _verify(result: RollbackResult, app: AppControl | None, step: Step, done) -> None:
    if app is None or not app.configured:
        done(step, "skipped", "no APP_BASE_URL: health not checked")
        return
    health = app.health()
    if health.status_code == 200:
        done(step, "done", f"{health.url} answered 200 in {health.latency_ms:.0f} ms")
        return
    done(step, "failed", f"{health.url}: {health.status_code or health.error}")
    raise RollbackFailed(f"The rollback of {result.migration} is complete but the app is not healthy "
                         f"({health.url}: {health.status_code or health.error}).", changed=True,
                         next_step="check the app's logs; the schema and journal are already rolled back.",
                         steps=result.as_dict()["steps"])
