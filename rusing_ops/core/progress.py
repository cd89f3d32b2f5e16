"""Progress of long work: counts and rates, sent to a log function every few seconds and to any listener.

The library reports progress; it does not know who watches. A Dagster op passes ``context.log.info`` as
``log``; the CLI adds a listener that draws a progress bar on the terminal (both see the same numbers).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

_listeners: list[Callable[[ProgressState], None]] = []


def add_listener(listener: Callable[[ProgressState], None]) -> None:
    _listeners.append(listener)


def remove_listener(listener: Callable[[ProgressState], None]) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


@dataclass
class ProgressState:
    label: str
    unit: str = "rows"
    done: int = 0
    total: int | None = None
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: bool = False
    detail: str = ""

    @property
    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    def line(self) -> str:
        rate = self.done / self.elapsed
        parts = [f"{self.label}: {self.done:,}" + (f"/{self.total:,}" if self.total else "") + f" {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.done / self.total:.0f}%)"
        if self.bytes:
            parts.append(f"{self.bytes / 1e6:,.1f} MB")
            parts.append(f"{self.bytes / 1e6 / self.elapsed:,.1f} MB/s")
        parts.append(f"{rate:,.0f} {self.unit}/s")
        parts.append(f"{self.elapsed:,.1f}s")
        if self.detail:
            parts.append(self.detail)
        return ", ".join(parts)


class Progress:
    """Report with ``advance(n, nbytes)``; a log line goes out at most every ``every_s`` seconds and at the end."""

    def __init__(self, label: str, *, unit: str = "rows", total: int | None = None,
                 log: Callable[[str], None] | None = None, every_s: float = 5.0):
        self.state = ProgressState(label=label, unit=unit, total=total)
        self.log = log
        self.every_s = every_s
        self._last_log = time.monotonic()
        self._last_notify = 0.0

    def advance(self, n: int = 0, nbytes: int = 0, detail: str | None = None) -> None:
        self.state.done += n
        self.state.bytes += nbytes
        if detail is not None:
            self.state.detail = detail
        now = time.monotonic()
        if now - self._last_notify >= 0.2:
            self._last_notify = now
            for listener in _listeners:
                listener(self.state)
        if self.log and now - self._last_log >= self.every_s:
            self._last_log = now
            self.log(self.state.line())

    def finish(self, detail: str | None = None) -> ProgressState:
        if detail is not None:
            self.state.detail = detail
        self.state.finished = True
        for listener in _listeners:
            listener(self.state)
        if self.log:
            self.log(self.state.line())
        return self.state
