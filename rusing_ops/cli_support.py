"""What every `rusing-ops` subcommand shares: the Dagster instance, running a job in process (:func:`run_job`,
:func:`run_op`) and the database write slot. How a command prints its result or fails is cli_output.py (re-exported
here, so a command imports one module)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cli_output import (  # noqa: F401  (re-exported: the commands' one import)
    CommandFailed,
    plain_metadata,
    print_json,
    print_table,
    progress_bar,
    report,
    table_lines,
)
from .settings import dagster_home, env, shipped_file


def dagster_instance():
    """The configured instance (``DAGSTER_HOME``, default ``.dagster_home`` in the working directory), so CLI runs
    show in the UI. A new folder gets the project's dagster.yaml (a symlink)."""
    from dagster import DagsterInstance

    home = dagster_home()
    os.environ["DAGSTER_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() and not config.is_symlink():
        config.symlink_to(shipped_file("dagster.yaml"))
    return DagsterInstance.get()


def configured_store():
    """The backup store with its protection (encryption, second copy, lock) exactly as the jobs open it: the
    ``backup_store`` resource built from the environment (settings.VARIABLES)."""
    from .resources import default_resources

    return default_resources()["backup_store"].process_config_and_initialize().get_store()


def configured_database() -> str:
    """DATABASE_URL's database name (a malformed URL raises its ConfigError)."""
    from .settings import database_url

    return database_url().database


def failure_message(result) -> str:
    """The first step failure of a run as one paragraph: the op, its error, and the run id to look up in the UI.

    A ``dg.Failure`` (every OpsError, translated once in dagster_support) gives its description: the paragraph the
    UI shows; any other error its own message (the cause, not Dagster's wrapper around it)."""
    from .dagster_support import failure_text

    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            if data.error and data.error.cls_name == "DagsterExecutionInterruptedError":
                text = ("interrupted (Ctrl-C or SIGTERM). What it had done up to then is in its log; rerun the "
                        "command: it finds what the interrupted run left and says what to do")
            else:
                text = failure_text(data)
            return f"step {event.step_key} failed: {text} (run {result.run_id})"
    return f"run {result.run_id} failed"


def run_failed(result, *, data: dict | None = None, lines: Iterable[str] = ()) -> CommandFailed:
    """The :class:`CommandFailed` of a failed run: its first step failure, naming the run."""
    return CommandFailed(failure_message(result), run_id=result.run_id, data=data, lines=lines)


# Dagster's console log level for CLI runs: the run's full log is in the UI; the terminal shows warnings and
# the failure message of the command unless `rusing-ops -v` (or RUSING_OPS_LOG_LEVEL) asks for more.
CONSOLE_LOG_LEVEL = env("RUSING_OPS_LOG_LEVEL")


def execute(job_name: str, run_config: dict | None = None, *, tags: dict | None = None, instance=None):
    """Run ``job_name`` from the code location in this process against the configured instance; return the result.

    A job with an op in the ``app_db_write`` pool first claims that slot here (:func:`claim_write_slot`): waiting
    is announced, sleeps, frees slots of dead runs, stops on Ctrl-C / SIGTERM and gives up after RUSING_WRITE_WAIT_S.
    """
    from dagster._core.utils import make_new_run_id

    from .definitions import defs

    job = defs.resolve_job_def(job_name)
    instance = instance or dagster_instance()
    run_id = make_new_run_id()
    config = {"loggers": {"console": {"config": {"log_level": CONSOLE_LOG_LEVEL}}}, **(run_config or {})}
    steps = write_steps(job)
    with sigterm_as_interrupt():
        try:
            if steps:
                claim_write_slot(instance, run_id, steps[0])
            return job.execute_in_process(run_config=config, instance=instance, run_id=run_id,
                                          tags={**(tags or {}), **process_tags()}, raise_on_error=False)
        finally:
            if steps:  # a run that ended (or never started its step) keeps no slot
                instance.event_log_storage.free_concurrency_slots_for_run(run_id)


def run_job(job_name: str, run_config: dict | None = None, *, tags: dict | None = None, instance=None):
    """Like :func:`execute`, but raises :class:`CommandFailed` with the failing step's message when the run fails."""
    result = execute(job_name, run_config, tags=tags, instance=instance)
    if not result.success:
        raise run_failed(result)
    return result


def run_op(job_name: str, op: str, config: dict, *, tags: dict | None = None) -> tuple[Any, str]:
    """Run ``job_name`` with ``op``'s config (progress drawn on a terminal); the op's output and the run id, or
    :class:`CommandFailed` naming the failed step."""
    with progress_bar():
        result = run_job(job_name, {"ops": {op: {"config": config}}}, tags=tags)
    return result.output_for_node(op), result.run_id


# ------------------------------------------------------------------------------------------- the write slot
# CLI runs are `execute_in_process` runs: no run launcher, so run monitoring never sees them die. A process killed
# -9 while holding the app_db_write slot would keep it forever. Every CLI run therefore records where it runs
# (host, pid and the pid's start time, so a reused pid is not mistaken for it), and a command that needs the slot
# frees the slots of holder runs whose process is gone before it waits. The server-side GET_LOCK still guards
# every write: it dies with its connection, so it never needs this.
PROCESS_TAG = "rusing/process"
WAIT_VARIABLE = "RUSING_WRITE_WAIT_S"
ORPHAN_AFTER_S = 120  # a slot claimed for a run that was never created (killed between claim and run start)


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) from Linux's /proc; the start time tells a reused pid apart."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], fields[19]


def _start_ticks(pid: int) -> str | None:
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def process_tags() -> dict[str, str]:
    """Where this CLI run runs; and never retried by the daemon (an in-process run has no origin to relaunch)."""
    pid = os.getpid()
    return {PROCESS_TAG: f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or ''}", "dagster/max_retries": "0"}


def process_alive(tag: str) -> bool | None:
    """True / False for a process of this host, None when it runs elsewhere (or the tag is unreadable)."""
    try:
        host, pid_text, ticks = tag.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc (not Linux): the pid exists, take it as alive
    state, started = stat
    return state not in ("Z", "X") and (not ticks or started == ticks)  # a zombie or a reused pid is not the run


def write_steps(job) -> list[str]:
    """The step keys of ``job``'s ops in the app_db_write pool (one per writing job)."""
    from .resources import DB_WRITE_POOL

    return [node.name for node in job.nodes_in_topological_order if getattr(node.definition, "pool", None) == DB_WRITE_POOL]


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM stops a command the way Ctrl-C does (KeyboardInterrupt), so its cleanup runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class SlotHolder:
    run_id: str
    job: str | None
    status: str | None
    process: str | None
    since: dt.datetime | None
    dead: str | None  # why its slot can be freed, or None while it may still be running

    def describe(self) -> str:
        where = ""
        if self.process:
            host, pid, _ = (self.process.rsplit(":", 2) + ["", ""])[:3]
            where = f", pid {pid} on {host}"
        since = f", since {self.since:%Y-%m-%d %H:%M:%S} UTC" if self.since else ""
        return f"run {self.run_id} ({self.job or 'unknown job'}, {self.status or 'not started'}{where}{since})"


def slot_holders(instance, pool: str, *, exclude: str) -> list[SlotHolder]:
    """The runs holding ``pool``'s slots or queued for one ahead of ``exclude``, each judged alive or dead."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    seen: dict[str, dt.datetime | None] = {}
    for slot in info.claimed_slots:
        seen.setdefault(slot.run_id, None)
    for step in info.pending_steps:
        seen[step.run_id] = seen.get(step.run_id) or step.assigned_timestamp or step.enqueued_timestamp
    holders = []
    now = dt.datetime.now(dt.UTC)
    for run_id, since in seen.items():
        if run_id == exclude:
            continue
        run = instance.get_run_by_id(run_id)
        if run is None:
            old = since is not None and (now - since).total_seconds() > ORPHAN_AFTER_S
            holders.append(SlotHolder(run_id, None, None, None, since,
                                      f"no run {run_id} exists {ORPHAN_AFTER_S} s after its claim" if old else None))
            continue
        record = instance.get_run_record_by_id(run_id)
        started = record.start_time if record and record.start_time else None
        since = dt.datetime.fromtimestamp(started, dt.UTC) if started else since
        process = run.tags.get(PROCESS_TAG)
        dead = None
        if run.is_finished:
            dead = f"the run already ended ({run.status.value})"
        elif process and process_alive(process) is False:
            dead = "its process is gone (killed or crashed)"
        holders.append(SlotHolder(run_id, run.job_name, run.status.value, process, since, dead))
    return holders


def _free_dead(instance, holder: SlotHolder) -> str:
    """Free a dead holder's slots (marking its run failed if it never ended); say what was done."""
    from .resources import DB_WRITE_POOL

    run = instance.get_run_by_id(holder.run_id)
    marked = run is not None and not run.is_finished
    if marked:
        instance.report_run_failed(run, message=f"Marked failed by rusing-ops: {holder.dead}; its {DB_WRITE_POOL} "
                                                "slot was freed.")
    instance.event_log_storage.free_concurrency_slots_for_run(holder.run_id)
    return (f"freed the {DB_WRITE_POOL} slot of {holder.describe()}: {holder.dead}"
            + ("; marked the run failed" if marked else ""))


def free_dead_cli_runs(instance, limit: int = 200, exclude: str | None = None) -> list[str]:
    """Mark failed every unfinished CLI run whose process on this host is gone, freeing its slots: such a run would
    otherwise hold the app_db_write slot, and count against the run queue's db-write tag limit, forever."""
    from dagster import DagsterRunStatus, RunsFilter

    said = []
    unfinished = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED,
                  DagsterRunStatus.CANCELING]
    for run in instance.get_runs(RunsFilter(statuses=unfinished), limit=limit):
        process = run.tags.get(PROCESS_TAG)
        if process and run.run_id != exclude and process_alive(process) is False:
            said.append(_free_dead(instance, SlotHolder(run.run_id, run.job_name, run.status.value, process, None,
                                                        "its process is gone (killed or crashed)")))
    return said


def _ensure_pool_limit(storage, pool: str) -> bool:
    """Create the pool's limit from the instance default the way Dagster's executor does; False if unlimited."""
    from dagster._core.instance.config import PoolGranularity

    config = storage.get_pool_config()
    if not storage.supports_global_concurrency_limits or config.pool_granularity == PoolGranularity.RUN:
        return False
    limits = {p.name: p for p in storage.get_pool_limits()}
    info = limits.get(pool)
    if (info is None and config.default_pool_limit is not None) or (
            info is not None and info.from_default and info.limit != config.default_pool_limit):
        storage.initialize_concurrency_limit_to_default(pool)
        info = {p.name: p for p in storage.get_pool_limits()}.get(pool)
    return info is not None


def claim_write_slot(instance, run_id: str, step_key: str, *, wait_s: float | None = None,
                     say=lambda line: print(line, file=sys.stderr, flush=True), poll_s: float = 2.0) -> bool:
    """Claim the app_db_write slot for step ``step_key`` of the run about to start as ``run_id``.

    Dead holders (process gone on this host, run already ended, or a claim whose run never appeared) are marked
    failed and their slots freed. While a live run holds it, says which run, process and since when, sleeps, and
    raises :class:`CommandFailed` after ``wait_s`` (default RUSING_WRITE_WAIT_S) or on Ctrl-C / SIGTERM, having
    withdrawn its own claim. Returns False when the instance puts no limit on the pool (nothing to claim).
    """
    from .resources import DB_WRITE_POOL as pool

    storage = instance.event_log_storage
    if not _ensure_pool_limit(storage, pool):
        return False
    wait_s = float(env(WAIT_VARIABLE)) if wait_s is None else wait_s
    started, told = time.monotonic(), None
    try:
        for line in free_dead_cli_runs(instance, exclude=run_id):
            say(line)
        while True:
            if storage.claim_concurrency_slot(pool, run_id, step_key).is_claimed:
                return True
            holders = slot_holders(instance, pool, exclude=run_id)
            dead = [h for h in holders if h.dead]
            for holder in dead:
                say(_free_dead(instance, holder))
            if dead:
                continue
            live = "; ".join(h.describe() for h in holders) or "a run that just released it"
            waited = time.monotonic() - started
            if waited >= wait_s:
                raise CommandFailed(
                    f"Gave up after {waited:.0f} s waiting for the database write slot ({pool}), held by {live}. "
                    "Nothing was changed. Next: wait for that run to finish and rerun this command (its log is in "
                    "the Dagster UI under Runs); if its process is gone on another host, terminate the run in the UI "
                    f"(that frees its slot); or rerun with {WAIT_VARIABLE}=<seconds> to wait longer.")
            if live != told:
                say(f"waiting for the database write slot ({pool}): held by {live}; waiting up to {wait_s:.0f} s "
                    f"({WAIT_VARIABLE}); Ctrl-C stops waiting and changes nothing")
                told = live
            time.sleep(max(0.05, min(poll_s, wait_s - waited)))
    except KeyboardInterrupt:
        storage.free_concurrency_slots_for_run(run_id)
        raise CommandFailed(f"Stopped while waiting for the database write slot ({pool}). Nothing was changed. "
                            "Next: rerun the command when the run holding it has finished.", code=130) from None
    except BaseException:
        storage.free_concurrency_slots_for_run(run_id)
        raise
