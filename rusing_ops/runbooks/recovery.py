"""Runbook §6 "Data Loss Recovery": stop the app -> back up what is left -> restore -> validate the schema as
`pnpm db:validate` does -> start the app.

The procedure composes the capabilities: the restore (``backups.restore.restore_backup``, or with ``stop`` the
point-in-time restore ``pitr.recover.restore_to``) takes the pre-restore backup, checks the staged copy against
the manifest's row counts and checksums and swaps it in with one rename; the validation is the migrations
capability's report, read as data.

Every step is logged as it happens and listed in the result. When the restore or the validation fails, the app
is left stopped (starting it on the wrong data would make things worse) and the error says how to start it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..backups.restore import RestoreResult, restore_backup
from ..core.app import AppControl
from ..core.database import raw_connect
from ..core.dburl import DatabaseURL
from ..core.errors import OpsError, require_confirm
from ..core.store import BackupStore


class RecoveryFailed(OpsError):
    """A recovery step failed; the message says which, what state the data and the app are in, and what next."""


@dataclass
class RecoveryResult:
    target: str
    steps: list[tuple[str, str]] = field(default_factory=list)  # (step, what happened)
    pre_restore_backup: str | None = None
    restore: RestoreResult | None = None

    def lines(self) -> list[str]:
        return [f"{i}. {step}: {what}" for i, (step, what) in enumerate(self.steps, 1)]


def recover_from_data_loss(url: DatabaseURL, store: BackupStore, app: AppControl, *, confirm: str,
                           backup: str = "latest", database: str | None = None, pre_restore_backup: bool = True,
                           lock: Callable | None = None, run_id: str | None = None,
                           validate: Callable[[DatabaseURL], object] | None = None, stop=None, skip: list[str] = (),
                           log: Callable[[str], None] = lambda _line: None) -> RecoveryResult:
    """Run the data-loss recovery procedure against ``database`` (default: the one in ``url``).

    :param confirm: must equal the target database name, else nothing happens.
    :param backup: ``latest``, a backup name/key, or a local SQL file (ignored with ``stop``).
    :param lock: context-manager factory held around the swap (the database write lock).
    :param validate: schema validation of the restored database, returning the migrations capability's
        ``ValidationReport`` (``ok``, ``pending``, ``lines()``); not ok leaves the app stopped, since the app's code
        expects the schema its migrations made. None skips the step.
    :param stop: a ``pitr.replay.Stop``: restore to that point in time from the newest backup before it plus the
        binlog archive, leaving out the ``skip`` transactions.
    """
    target = database or url.database
    require_confirm(confirm, target, "the app was not stopped and nothing was restored")
    result = RecoveryResult(target)

    def step(name: str, what: str) -> None:
        result.steps.append((name, what))
        log(f"step {len(result.steps)} {name}: {what}")

    start_hint = "start it with RUSING_APP_START_COMMAND" + (f" (`{app.commands['start']}`)" if app.commands.get("start") else "")

    raw_connect(url, "").close()  # a wrong DATABASE_URL or CA refuses here, before the app is stopped
    stopped = app.run("stop")
    step("stop app", stopped.describe())
    if not stopped.ok:
        raise RecoveryFailed(f"Stopping the app failed ({stopped.describe()}); nothing was restored.",
                             next_step="stop the app by hand (pm2 stop all / Railway pause), then run the recovery again.")
    try:
        if stop is not None:
            from ..pitr.recover import restore_to

            out = restore_to(url, store, stop, confirm=target, database=target, skip=list(skip),
                             pre_restore_backup=pre_restore_backup, run_id=run_id, log=log)
            restored = RestoreResult(f"{out['backup']} + binlogs to {out['to']}", target, out["pre_restore_db"],
                                     out["pre_restore_backup"], out["tables"], True, out["duration_s"])
        else:
            restored = restore_backup(url, store, backup, database=database, pre_restore_backup=pre_restore_backup,
                                      lock=lock, run_id=run_id, log=log)
        result.restore, result.pre_restore_backup = restored, restored.pre_restore_backup
        step("back up what is left", restored.pre_restore_backup or (
            "skipped (pre_restore_backup is off)" if not pre_restore_backup else "skipped (no tables)"))
        step("restore", f"{restored.source} -> `{target}`, {sum(restored.tables.values()):,} rows checked against "
                        f"the backup in staging; replaced tables in `{restored.pre_restore_db or '(none)'}`")
        if validate is not None:
            report = validate(url.with_database(target))
            lines = report.lines()
            findings = lines[1:-1]  # between the header line and the verdict
            step("validate schema", lines[-1] if report.ok else "; ".join(findings))
            if not report.ok:
                raise RecoveryFailed(
                    f"The data was restored, but schema validation of `{target}` found: {'; '.join(findings)}.",
                    changed=True,
                    next_step=("apply the pending migrations with `rusing-ops db migrate`" if report.pending else
                               "review with `rusing-ops db validate`"))
    except OpsError as exc:
        step("stopped", "the app is left stopped")
        raise RecoveryFailed(f"Recovery of `{target}` failed: {exc.message} The app is left stopped.",
                             changed=exc.changed, next_step=(exc.next_step or "fix the cause") + f"; then {start_hint}.")
    started = app.run("start")
    step("start app", started.describe())
    if not started.ok:
        raise RecoveryFailed(f"The data was restored, but starting the app failed ({started.describe()}).",
                             changed=True, next_step=start_hint + ", and check `rusing-ops health`.")
    if app.configured:
        health = app.health()
        healthy = health.status_code == 200 and not health.error
        step("check health", f"{health.url} answered {health.status_code or health.error} in {health.latency_ms} ms")
        if not healthy:
            raise RecoveryFailed(f"The data was restored and the app started, but {health.url} is not healthy "
                                 f"({health.status_code or health.error}).", changed=True,
                                 next_step="check the app's logs (railway logs --latest).")
    return result
