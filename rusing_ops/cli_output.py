"""How every `rusing-ops` command ends: :func:`report` prints its result (text lines, or one JSON object with
``--json``), :class:`CommandFailed` is how it fails (``rusing_ops.cli.main`` prints it once), and
:func:`progress_bar` draws the library's progress with ``rich``. Nothing here imports Dagster."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterable
from typing import Any

from .core import progress


class CommandFailed(Exception):
    """A command that cannot finish: ``rusing_ops.cli.main`` prints ``error: <message>`` on stderr (with ``--json``
    also ``{"ok": false, "error", "run_id", ...data}`` on stdout), prints ``lines`` first, and exits ``code``.
    Raising it prints nothing, so a caller (or a test) can catch it."""

    def __init__(self, message: str, code: int = 1, *, run_id: str | None = None, data: dict | None = None,
                 lines: Iterable[str] = ()):
        super().__init__(message)
        self.message, self.code, self.run_id, self.data, self.lines = message, code, run_id, data or {}, list(lines)

    def print(self, as_json: bool = False) -> int:
        if as_json:
            print_json({"ok": False, "run_id": self.run_id, "error": self.message, **self.data})
        else:
            for line in self.lines:
                print(line)
        print(f"error: {self.message}", file=sys.stderr)
        return self.code


def plain_metadata(metadata: dict) -> dict:
    """Dagster metadata as plain values (a table as its list of rows), the way the UI shows them."""
    def plain(value):
        records = getattr(value, "records", None)
        return [r.data for r in records] if records is not None else getattr(value, "value", value)

    return {key: plain(value) for key, value in metadata.items()}


def report(args, data: dict, lines: Iterable[str] = (), *, run_id: str | None = None, ok: bool = True) -> int:
    """The one way a command prints its result: with ``--json`` one object ``{"ok", "run_id", **data}`` on stdout,
    otherwise ``lines``. Returns the exit code (0, or 1 when ``ok`` is False: a result that is a finding)."""
    if getattr(args, "json", False):
        print_json({"ok": ok, **({"run_id": run_id} if run_id else {}), **data})
    else:
        for line in lines:
            print(line)
    return 0 if ok else 1


def table_lines(rows: list[dict[str, Any]], columns: list[str] | None = None) -> list[str]:
    """Rows as an aligned text table (upper-case header), or ``(none)``."""
    if not rows:
        return ["(none)"]
    columns = columns or list(rows[0])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    return ["  ".join(c.upper().ljust(widths[c]) for c in columns)] + [
        "  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]


def print_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    for line in table_lines(rows, columns):
        print(line)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str, ensure_ascii=False))


@contextlib.contextmanager
def progress_bar(force: bool = False):
    """Draw the library's progress (core.progress) as ``rich`` progress bars on stderr while the block runs; only
    when stderr is a terminal (or ``force``), so output piped to a file or read by a test stays clean."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    console = Console(stderr=True, force_terminal=True if force else None)
    if not console.is_terminal:
        yield None
        return
    bars = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                    TextColumn("{task.fields[line]}"), console=console)
    tasks: dict[int, Any] = {}

    def listen(state: progress.ProgressState) -> None:
        key = id(state)
        if key not in tasks:
            tasks[key] = bars.add_task(state.label, total=state.total, line="")
        bars.update(tasks[key], completed=state.done, total=state.total,
                    line=state.line().removeprefix(f"{state.label}: "))

    with bars:
        progress.add_listener(listen)
        try:
            yield bars
        finally:
            progress.remove_listener(listen)
