"""What every `rusing-ops` subcommand shares: the Dagster instance, running a job in process, output."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from .core import progress
from .settings import PROJECT_ROOT


class CommandFailed(SystemExit):
    """Exit non-zero with one paragraph on stderr."""

    def __init__(self, message: str, code: int = 1):
        print(f"error: {message}", file=sys.stderr)
        super().__init__(code)


def dagster_instance():
    """The configured instance (``DAGSTER_HOME``, default ``.dagster_home`` beside README.md), so CLI runs show in the UI."""
    from dagster import DagsterInstance

    home = Path(os.environ.get("DAGSTER_HOME") or PROJECT_ROOT / ".dagster_home").resolve()
    os.environ["DAGSTER_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() and not config.is_symlink():
        config.symlink_to(PROJECT_ROOT / "dagster.yaml")
    return DagsterInstance.get()


def failure_message(result) -> str:
    """The first step failure of a run as one paragraph: the op, its error, and the run id to look up in the UI."""
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            text = error.message.strip() if error else "unknown error"
            if error and error.cls_name in ("Failure",):
                text = text.removeprefix("dagster._core.definitions.events.Failure: ")
            return f"step {event.step_key} failed: {text} (run {result.run_id})"
    return f"run {result.run_id} failed"


# Dagster's console log level for CLI runs: the run's full log is in the UI; the terminal shows warnings and
# the failure message of the command unless `rusing-ops -v` (or RUSING_OPS_LOG_LEVEL) asks for more.
CONSOLE_LOG_LEVEL = os.environ.get("RUSING_OPS_LOG_LEVEL", "CRITICAL")


def execute(job_name: str, run_config: dict | None = None, *, tags: dict | None = None, instance=None):
    """Run ``job_name`` from the code location in this process against the configured instance; return the result."""
    from .definitions import defs

    job = defs.resolve_job_def(job_name)
    config = {"loggers": {"console": {"config": {"log_level": CONSOLE_LOG_LEVEL}}}, **(run_config or {})}
    return job.execute_in_process(run_config=config, instance=instance or dagster_instance(), tags=tags,
                                  raise_on_error=False)


def run_job(job_name: str, run_config: dict | None = None, *, tags: dict | None = None, instance=None):
    """Like :func:`execute`, but raises :class:`CommandFailed` with the failing step's message when the run fails."""
    result = execute(job_name, run_config, tags=tags, instance=instance)
    if not result.success:
        raise CommandFailed(failure_message(result))
    return result


def print_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    if not rows:
        print("(none)")
        return
    columns = columns or list(rows[0])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str, ensure_ascii=False))


class TerminalProgress:
    """A one-line progress bar on stderr (only when stderr is a terminal, or when forced)."""

    def __init__(self, force: bool = False):
        self.enabled = force or sys.stderr.isatty()
        self._last_label = None

    def __call__(self, state: progress.ProgressState) -> None:
        if not self.enabled:
            return
        bar = ""
        if state.total:
            filled = int(20 * min(state.done / state.total, 1.0))
            bar = "[" + "#" * filled + "." * (20 - filled) + "] "
        sys.stderr.write("\r\033[K" + bar + state.line())
        if state.finished:
            sys.stderr.write("\n")
        sys.stderr.flush()

    def __enter__(self):
        progress.add_listener(self)
        return self

    def __exit__(self, *exc):
        progress.remove_listener(self)
