"""The application: its HTTP endpoints and how to stop, start and restart it (pm2, Railway, ... by command)."""

from __future__ import annotations

import shlex
import subprocess
import time
from dataclasses import dataclass

import requests

from .dburl import scrub_secret
from .errors import OpsError


@dataclass(frozen=True)
class CommandResult:
    action: str
    command: str | None
    ran: bool
    returncode: int | None
    output: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return not self.ran or self.returncode == 0

    def describe(self) -> str:
        if not self.ran:
            return f"app {self.action}: no command configured (RUSING_APP_{self.action.upper()}_COMMAND); did nothing."
        state = "ok" if self.returncode == 0 else f"FAILED with exit code {self.returncode}"
        return f"app {self.action}: `{self.command}` {state} in {self.duration_s:.1f}s"


@dataclass(frozen=True)
class HealthResponse:
    url: str
    status_code: int | None
    body: dict | None
    error: str | None
    latency_ms: float


class AppControl:
    """HTTP access to the app and its lifecycle commands. Commands run without a shell when they can."""

    def __init__(self, base_url: str | None, *, health_path: str = "/api/health", webhook_path: str = "/api/stripe/webhook",
                 stop_command: str | None = None, start_command: str | None = None, restart_command: str | None = None,
                 timeout_s: float = 10.0, command_timeout_s: float = 300.0):
        self.base_url = base_url.rstrip("/") if base_url else None
        self.health_path = health_path
        self.webhook_path = webhook_path
        self.commands = {"stop": stop_command, "start": start_command, "restart": restart_command}
        self.timeout_s = timeout_s
        self.command_timeout_s = command_timeout_s

    @property
    def configured(self) -> bool:
        return bool(self.base_url)

    @property
    def health_url(self) -> str | None:
        return f"{self.base_url}{self.health_path}" if self.base_url else None

    @property
    def webhook_url(self) -> str | None:
        return f"{self.base_url}{self.webhook_path}" if self.base_url else None

    def health(self) -> HealthResponse:
        url = self.health_url
        if url is None:
            raise OpsError("APP_BASE_URL is not set, so the app's health endpoint is unknown.",
                           next_step="set APP_BASE_URL, e.g. https://www.rusingacademy.ca")
        started = time.perf_counter()
        try:
            # (connect, read): an app that accepts and never answers fails after timeout_s, naming host and timeout.
            resp = requests.get(url, timeout=(min(5.0, self.timeout_s), self.timeout_s),
                                headers={"Accept": "application/json"})
        except requests.RequestException as exc:
            return HealthResponse(url, None, None, f"{type(exc).__name__}: {scrub_secret(str(exc))[:300]}",
                                  round((time.perf_counter() - started) * 1000, 1))
        latency = round((time.perf_counter() - started) * 1000, 1)
        try:
            body = resp.json()
            body = body if isinstance(body, dict) else None
        except ValueError:
            body = None
        error = None if body is not None else f"response is not a JSON object: {resp.text[:200]!r}"
        return HealthResponse(url, resp.status_code, body, error, latency)

    def run(self, action: str) -> CommandResult:
        """Run the configured ``stop`` / ``start`` / ``restart`` command; a missing command does nothing and says so."""
        command = self.commands[action]
        if not command:
            return CommandResult(action, None, False, None, "", 0.0)
        started = time.perf_counter()
        try:
            proc = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=self.command_timeout_s)
            output = (proc.stdout + proc.stderr)[-2000:]
            code = proc.returncode
        except FileNotFoundError as exc:
            output, code = f"command not found: {exc.filename}", 127
        except subprocess.TimeoutExpired:
            output, code = f"timed out after {self.command_timeout_s:g}s", 124
        return CommandResult(action, command, True, code, scrub_secret(output), round(time.perf_counter() - started, 2))
