"""`apply_migrations`: run the pending Drizzle migrations the way drizzle-orm does, with the safety it lacks.

Same table DDL, same rows (`hash`, `created_at` = journal `when`), same pending rule (:mod:`.planner`), so the app's
own `migrate()` and this tool can be mixed in either order. Added: folder validation before the database is touched,
refusal of entries drizzle would skip forever and of edited applied files, destructive-change lint, the database
write lock (`GET_LOCK`) around plan + apply, a pre-migration backup, a statement-by-statement audit, a failure report
naming migration / statement / server error / what is already applied / the restore command, and resume on request.

Each statement commits on its own (autocommit). drizzle-orm wraps the batch in BEGIN/COMMIT, but MySQL commits
implicitly at every DDL, so only a batch without any DDL was ever rolled back (research/drizzle.md §1.8); here the
audit's statement count is always exactly what is in the database, which is what makes resuming safe. A run killed
during statement k leaves the audit saying "k started, k-1 done"; the next run checks the live schema for k's effect
(:mod:`.effect`), never reruns a statement that completed, and names the backup taken before that run's first
statement as the one to restore.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pymysql
from pymysql.constants import ER
from sqlalchemy.engine import Connection, Engine

from ..backups.swap import interrupted_swaps
from ..core.database import DB_WRITE_LOCK, connect, named_lock
from ..core.dburl import DatabaseURL, scrub_secret
from ..core.errors import ConfigError, OpsError
from ..core.faults import pause_point
from ..core.progress import Progress
from . import audit
from .effect import statement_effect
from .folder import WHEN_ORDER, Migration, MigrationFolder, read_folder
from .lint import Finding, lint_migrations
from .planner import (
    CREATE_MIGRATIONS_TABLE,
    INSERT_MIGRATION_ROW,
    Plan,
    PlanRefused,
    check_plan,
    make_plan,
    read_applied,
)

_ER_NAMES = {v: f"ER_{k}" for k, v in vars(ER).items() if isinstance(v, int) and k.isupper()}
_CONNECTION_LOST = (2006, 2013)  # CR_SERVER_GONE_ERROR, CR_SERVER_LOST: the statement's outcome is unknown

BackupFn = Callable[[str], Any]  # reason -> object with `.key` (or the key itself)
RestoreFn = Callable[[str], Any]  # backup key -> anything; raises on failure


def restore_command(key: str, database: str) -> str:
    return f"rusing-ops db restore --file {key} --confirm {database}"


@dataclass(frozen=True)
class ApplyOptions:
    """What the operator asked for (the ``db migrate`` flags); see :func:`apply_migrations`."""

    dry_run: bool = False
    no_backup: bool = False
    force: bool = False
    resume: bool = False
    accept_skipped: bool = False
    auto_rollback: bool = False
    lock_timeout_s: float = 10.0


@dataclass
class ApplyResult:
    """What a migrate run saw and did."""

    database: str
    run_id: str
    dry_run: bool
    plan: Plan
    findings: list[Finding]
    refusals: list[str] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)
    resume_from: dict | None = None
    backup_key: str | None = None
    statements_run: int = 0

    @property
    def destructive(self) -> bool:
        return bool(self.findings)

    def start_of(self, m: Migration) -> int:
        """The first statement of ``m`` this run sends (> 1 only for the migration being resumed)."""
        return self.resume_from["statement"] if self.resume_from and self.resume_from["migration"] == m.tag else 1

    @property
    def restore_key(self) -> str | None:
        """The backup to restore to undo this run: when resuming, the one taken before the first statement of the
        interrupted run (this run's own backup already holds the half-applied migration)."""
        if self.resume_from:
            return self.resume_from.get("origin_backup")
        return self.backup_key

    def plan_text(self, with_sql: bool = True) -> str:
        """The plan as an operator reads it: pending migrations, every statement, lint findings, anomalies."""
        p = self.plan
        lines = [f"database {self.database}: {len(p.applied)} applied, {len(p.pending)} pending"
                 + (f", head {p.folder.head.tag}" if p.folder.head else "")]
        lines += [f"ANOMALY {a}" for a in p.anomalies()]
        lines += [f"REFUSED {r}" for r in self.refusals]
        # Destructive statements first, before the (often long) SQL: what an operator must see before applying.
        lines += [f"DESTRUCTIVE statement {f.statement}: {f.kind} {f.target} ({f.detail}) in {f.migration}"
                  for f in self.findings]
        for m in p.pending:
            start = self.start_of(m)
            lines.append(f"-- {m.tag} (when {m.when}, hash {m.hash}, {len(m.statements)} statements"
                         + (f", resuming at statement {start}" if start > 1 else "") + ")")
            if with_sql:
                for number, statement in enumerate(m.statements, start=1):
                    if number >= start:
                        lines.append(f"-- [{m.tag} {number}/{len(m.statements)}]\n{statement.strip()}")
        if not p.pending:
            lines.append("nothing to apply: the database is up to date with the journal")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"database": self.database, "run_id": self.run_id, "dry_run": self.dry_run,
                "pending": [m.tag for m in self.plan.pending], "applied": self.applied,
                "already_applied": [m.tag for m in self.plan.applied],
                "anomalies": self.plan.anomalies(), "refusals": self.refusals,
                "destructive": [f.as_dict() for f in self.findings], "backup_key": self.backup_key,
                "restore_key": self.restore_key,
                "resume_from": self.resume_from, "statements_run": self.statements_run}


class MigrationFailed(OpsError):
    """A statement failed; the data says where, with what error, and what is in the database."""


class ResumeRequired(OpsError):
    """An earlier run stopped inside a migration; continuing needs an explicit `--resume`."""


def apply_migrations(engine: Engine, url: DatabaseURL, folder: MigrationFolder | Path | str,
                     options: ApplyOptions | None = None, *, backup: BackupFn | None = None,
                     restore: RestoreFn | None = None, run_id: str | None = None,
                     log: Callable[[str], None] | None = None, **flags) -> ApplyResult:
    """Plan and apply the pending migrations of ``folder`` to ``url``'s database.

    :param folder: the Drizzle folder (path or :class:`MigrationFolder`); validated before any connection is made.
    :param options: the :class:`ApplyOptions`, or their fields as keywords (``dry_run=True`` ...):
        ``dry_run`` read only: no table, no lock, no backup; the result carries the plan and what would be refused;
        ``no_backup`` skip the pre-migration backup (refused for a destructive plan unless ``force``);
        ``force`` accept a destructive plan without backup and applied files edited since (hash drift);
        ``resume`` continue a migration an earlier run left half applied (or was killed in), after its last
        completed statement; ``accept_skipped`` proceed although entries exist that drizzle-orm skips forever;
        ``auto_rollback`` call ``restore`` when a statement fails; ``lock_timeout_s`` wait for the write lock.
    :param backup: ``backup(reason)`` makes the pre-migration backup and returns it (``.key``) or its key.
    :param restore: ``restore(key)``; with ``auto_rollback`` it is called when a statement fails.
    :param run_id: recorded in the audit table (the Dagster run id).
    :param log: receives one line per step.
    """
    opts = replace(options or ApplyOptions(), **flags)
    say = log or (lambda line: None)
    run_id = run_id or uuid.uuid4().hex
    if not isinstance(folder, MigrationFolder):
        folder = read_folder(folder, accept=frozenset({WHEN_ORDER}) if opts.accept_skipped else frozenset())
    if opts.dry_run:
        with connect(engine, url) as conn:
            result, _ = _prepare(conn, folder, url, run_id, opts)
        say(result.plan_text())
        return result
    failure: MigrationFailed | None = None
    pause_point("migrate-before-lock")
    with named_lock(engine, url, DB_WRITE_LOCK, opts.lock_timeout_s), connect(engine, url) as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        result, errors = _prepare(conn, folder, url, run_id, opts)
        say(result.plan_text(with_sql=False))
        if errors:
            raise errors[0]
        if result.plan.pending and not opts.no_backup:
            result.backup_key = _take_backup(backup, say)
            if result.resume_from:
                say(f"note: {result.backup_key} holds {result.resume_from['migration']} half applied; to undo "
                    "the whole migration restore "
                    + (result.restore_key or "nothing: the interrupted run took no backup before it started"))
        conn.exec_driver_sql(CREATE_MIGRATIONS_TABLE)  # as drizzle-orm does on every run
        if not result.plan.pending:
            return result
        audit.ensure_table(conn)
        try:
            _run(conn, result, say)
        except MigrationFailed as exc:
            failure = exc
    if failure is not None:
        # Outside the lock: the restore takes the same write lock itself.
        _maybe_roll_back(failure, result, restore if opts.auto_rollback else None, say)
        raise failure
    return result


def _prepare(conn: Connection, folder: MigrationFolder, url: DatabaseURL, run_id: str,
             opts: ApplyOptions) -> tuple[ApplyResult, list[OpsError]]:
    """The plan, its lint, the resume point (computed here, once) and every reason to refuse it."""
    exists, rows = read_applied(conn)
    plan = make_plan(folder, rows, exists)
    result = ApplyResult(database=url.database, run_id=run_id, dry_run=opts.dry_run, plan=plan,
                         findings=lint_migrations(folder, plan.pending))
    errors: list[OpsError] = []
    for journal_db, state in interrupted_swaps(url, url.database):
        errors.append(PlanRefused(
            f"A restore of `{url.database}` was killed during its swap (journal `{journal_db}`, state {state}): the "
            "database may be missing its triggers or views, so no migration is applied on top of it.",
            next_step=f"run `rusing-ops db restore --repair --confirm {url.database}` first, then migrate again."))
    try:
        check_plan(plan, accept_skipped=opts.accept_skipped, accept_edited=opts.force)
    except PlanRefused as exc:
        errors.append(exc)
    if plan.pending:
        try:
            result.resume_from = _resume_point(conn, plan.pending[0], opts.resume, url.database)
        except ResumeRequired as exc:
            errors.append(exc)
    if result.findings and opts.no_backup and not opts.force and plan.pending:
        listed = "; ".join(str(f) for f in result.findings)
        errors.append(PlanRefused(
            f"Refusing to run a destructive plan without a backup: {listed}.",
            next_step="drop --no-backup (a pre-migration backup is then taken), or add --force to run it anyway.",
            findings=[f.as_dict() for f in result.findings]))
    result.refusals = [e.message for e in errors]
    return result, errors


def _resume_point(conn: Connection, first: Migration, resume: bool, database: str) -> dict | None:
    """Where an earlier failed or killed run left ``first``: None (nothing of it is in the database) or the point to
    continue at, once ``resume`` is given. A statement the killed run had in flight is looked up in the live schema."""
    last = audit.latest(conn, first.tag, first.when)
    if last is None or last.status == audit.APPLIED:
        return None
    done, in_flight, effect = last.statements_applied, last.in_flight, None
    if in_flight:
        effect = statement_effect(conn, first.statements[in_flight - 1]) if in_flight <= len(first.statements) else None
        if effect is not None and effect.applied:
            done = in_flight
    if done == 0 and (not in_flight or (effect is not None and effect.applied is False)):
        return None  # nothing of it reached the database: a plain rerun starts at statement 1
    total = last.statements_total
    if in_flight:
        sql = " ".join(first.statements[in_flight - 1].split())[:120] if in_flight <= len(first.statements) else "?"
        state = ("completed" if effect.applied else "did not complete") if effect and effect.applied is not None \
            else "may or may not have completed"
        how = f" ({effect.evidence})" if effect else ""
        if effect is None or effect.applied is None:
            before = f"Statements 1-{done} before it are in the database" if done else "No statement before it ran"
        else:
            before = f"Statements 1-{done} are in the database" if done else "No statement of it is in the database"
        where = (f"Migration {first.tag} was interrupted in run {last.run_id}: its process stopped while statement "
                 f"{in_flight} of {total} was running (`{sql}`); that statement {state}{how}. {before} and it is not "
                 "recorded in __drizzle_migrations.")
    else:
        why = "interrupted (its process stopped)" if last.status == audit.RUNNING else last.status
        where = (f"Migration {first.tag} stopped at statement {done + 1} of {total} in run {last.run_id} "
                 f"({why}{': ' + last.error if last.error else ''}); statements 1-{done} are in the database "
                 "and it is not recorded in __drizzle_migrations.")
    origin = last.backup_key
    undo = (f", or restore the pre-migration backup taken before that run's first statement: "
            f"`{restore_command(origin, database)}`"
            if origin else " (that run took no pre-migration backup)")
    unknown = bool(in_flight) and (effect is None or effect.applied is None)
    if unknown:
        next_step = (f"check whether statement {in_flight} took effect; if it did, record it with `UPDATE "
                     f"{audit.AUDIT_TABLE} SET statements_applied = {in_flight} WHERE id = {last.id}`; then rerun "
                     f"with --resume (it continues after the last completed statement){undo}.")
    else:
        next_step = (f"fix the cause, then rerun with --resume to continue at statement {done + 1}{undo} (if you "
                     f"undid statements 1-{done} by hand instead, retire that attempt with "
                     f"`DELETE FROM {audit.AUDIT_TABLE} WHERE id = {last.id}`).")
    if not resume:
        raise ResumeRequired(where, next_step=next_step, migration=first.tag, statement=done + 1,
                             interrupted=bool(in_flight), in_flight=in_flight,
                             in_flight_applied=effect.applied if effect else None, origin_backup=origin)
    point = {"migration": first.tag, "statement": done + 1, "previous_run": last.run_id, "origin_backup": origin}
    if in_flight:
        point["interrupted_at"] = in_flight
        point["in_flight_applied"] = effect.applied if effect else None
    if last.hash != first.hash:
        point["file_changed"] = f"{last.hash} -> {first.hash}"
    return point


def _take_backup(backup: BackupFn | None, say) -> str:
    if backup is None:
        raise ConfigError("No backup function is configured for the pre-migration backup.",
                          next_step="configure the backup store (RUSING_BACKUP_URL) or rerun with --no-backup.")
    say("taking the pre-migration backup")
    try:
        ref = backup("pre-migration")
    except Exception as exc:  # the store or the dump failed: stop before anything is applied
        text = exc.message if isinstance(exc, OpsError) else f"{type(exc).__name__}: {exc}"
        raise OpsError(f"The pre-migration backup failed, so no migration was applied: {scrub_secret(text).rstrip('.')}.",
                       next_step="fix the backup store (RUSING_BACKUP_URL) and rerun, or rerun with --no-backup "
                                 "deliberately.") from exc
    key = str(getattr(ref, "key", ref))
    say(f"pre-migration backup: {key}")
    return key


def _run(conn: Connection, result: ApplyResult, say) -> None:
    total = sum(len(m.statements) for m in result.plan.pending)
    progress = Progress("migrate", unit="statements", total=total, log=say)
    cursor = conn.connection.dbapi_connection.cursor()
    for m in result.plan.pending:
        start = result.start_of(m)
        audit_id = audit.start(conn, run_id=result.run_id, migration=m.tag, hash=m.hash, created_at=m.when,
                               total=len(m.statements), first_statement=start, already_applied=start - 1,
                               backup_key=result.restore_key)
        say(f"applying {m.tag}: statements {start}-{len(m.statements)}")
        for number in range(start, len(m.statements) + 1):
            statement = m.statements[number - 1]
            audit.starting(conn, audit_id, number)
            pause_point(f"migrate-statement-{number}")
            try:
                cursor.execute(statement)  # args=None: sent verbatim, no %-formatting, as drizzle sends it
                while cursor.nextset():
                    pass
            except pymysql.MySQLError as exc:
                errno = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
                message = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
                error = f"{_ER_NAMES.get(errno, 'error')} ({errno}): {message}"
                failed = _failure(result, m, number, statement, errno, message)
                failed.data["sql_state"] = _sql_state(cursor)
                try:
                    audit.finish(conn, audit_id, audit.FAILED, error=error, failed_statement=statement)
                except Exception as audit_exc:  # e.g. the connection died with the statement; report the statement
                    failed.data["audit_error"] = scrub_secret(str(audit_exc))
                raise failed from None
            pause_point(f"migrate-statement-{number}-done")
            audit.progress(conn, audit_id, number)
            result.statements_run += 1
            progress.advance(1, detail=m.tag)
        cursor.execute(INSERT_MIGRATION_ROW, (m.hash, m.when))
        audit.finish(conn, audit_id, audit.APPLIED)
        result.applied.append(m.tag)
        say(f"applied {m.tag} (recorded in __drizzle_migrations, created_at {m.when})")
    progress.finish()


def _sql_state(cursor) -> str | None:
    """The failed statement's SQLSTATE (PyMySQL drops it from the exception), read before anything else runs."""
    try:
        cursor.execute("GET DIAGNOSTICS CONDITION 1 @rusing_ops_sqlstate = RETURNED_SQLSTATE")
        cursor.execute("SELECT @rusing_ops_sqlstate")
        row = cursor.fetchone()
        return row[0] if row else None
    except pymysql.MySQLError:
        return None  # a server without GET DIAGNOSTICS outside stored programs, or a dead connection


def _failure(result: ApplyResult, m: Migration, number: int, statement: str, errno: int | None,
             message: str) -> MigrationFailed:
    start = result.start_of(m)
    before = f"statements 1-{number - 1} of {m.tag} are applied" if number > 1 else f"no statement of {m.tag} is applied"
    if errno in _CONNECTION_LOST:
        before += f"; statement {number} may or may not have completed (the connection was lost while it ran)"
    recorded = ", ".join(result.applied) if result.applied else "none"
    restore = restore_command(result.restore_key, result.database) if result.restore_key else None
    next_step = (f"restore the pre-migration backup with `{restore}`, or fix the database by hand and rerun "
                 f"`rusing-ops db migrate --resume` to continue at statement {number}."
                 if restore else f"fix the database by hand and rerun `rusing-ops db migrate --resume` to continue at "
                                 f"statement {number} (no pre-migration backup was taken).")
    return MigrationFailed(
        f"Migration {m.tag} failed at statement {number} of {len(m.statements)}: {_ER_NAMES.get(errno, 'error')} "
        f"({errno}) {scrub_secret(message)}\nStatement: {statement.strip()}\nAlready in the database: {before} "
        f"(committed); migrations recorded by this run: {recorded}. {m.tag} is not recorded in __drizzle_migrations.",
        changed=True, next_step=next_step,
        migration=m.tag, statement_index=number, statement=statement, errno=errno, code=_ER_NAMES.get(errno),
        server_message=message, statements_applied=number - 1, started_at_statement=start,
        applied_migrations=list(result.applied), backup_key=result.backup_key, restore_key=result.restore_key,
        restore_command=restore,
        rolled_back=False)


def _maybe_roll_back(failure: MigrationFailed, result: ApplyResult, restore: RestoreFn | None, say) -> None:
    if restore is None or not result.restore_key:
        return
    say(f"automatic rollback: restoring {result.restore_key}")
    try:
        restore(result.restore_key)
    except Exception as exc:  # report both failures; the migration error stays the primary one
        failure.data["rollback_error"] = scrub_secret(str(exc))
        failure.message += f"\nAutomatic rollback FAILED: {scrub_secret(str(exc))}"
    else:
        failure.data["rolled_back"] = True
        failure.message += f"\nAutomatic rollback: the pre-migration backup {result.restore_key} was restored."
    failure.args = (failure.render(),)
