"""Runbook §5, health checks: the app's /api/health, the database, and Stripe. Each check returns rows; an
unconfigured part is reported as "not configured" (never a crash, and never a pass: nothing was checked)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.app import AppControl
from ..core.errors import OpsError
from ..core.stripe_api import StripeAPI

OK, FAIL, WARN, SKIP = "ok", "FAIL", "warn", "not configured"
EXPECTED_APP_HEALTH = {"status": "ok", "db": "connected", "stripe": "configured"}
SLOW_DB_MS = 500.0


@dataclass(frozen=True)
class CheckRow:
    check: str
    status: str
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == FAIL


@dataclass
class CheckGroup:
    """One area (app, database, stripe): its rows and the numbers worth plotting (latencies)."""

    name: str
    rows: list[CheckRow] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    def add(self, check: str, status: str, detail: str) -> None:
        self.rows.append(CheckRow(check, status, detail))

    @property
    def failed(self) -> bool:
        return any(r.failed for r in self.rows)

    @property
    def configured(self) -> bool:
        return not all(r.status == SKIP for r in self.rows)

    @property
    def warned(self) -> bool:
        return any(r.status == WARN for r in self.rows)

    @property
    def passed(self) -> bool:
        """Green only when something was checked and nothing failed or warned: "not configured" is not a pass."""
        return self.configured and not self.failed and not self.warned

    def summary(self) -> str:
        bad = [r for r in self.rows if r.failed] or [r for r in self.rows if r.status == WARN]
        if bad:
            return ("" if self.failed else "warning: ") + "; ".join(f"{r.check}: {r.detail}" for r in bad)
        if not self.configured:
            return "not configured, nothing checked: " + "; ".join(r.detail for r in self.rows)
        return "all checks passed"


def check_app(control: AppControl) -> CheckGroup:
    """GET /api/health and compare each field with ``{"status":"ok","db":"connected","stripe":"configured"}``."""
    group = CheckGroup("app")
    if not control.configured:
        group.add("app /api/health", SKIP, "APP_BASE_URL is not set; app checks skipped")
        return group
    resp = control.health()
    group.metrics["app_latency_ms"] = resp.latency_ms
    if resp.status_code is None:
        group.add("app reachable", FAIL, f"{resp.url} did not answer: {resp.error}")
        return group
    status_ok = resp.status_code == 200
    group.add("app reachable", OK if status_ok else FAIL, f"{resp.url} answered HTTP {resp.status_code} in {resp.latency_ms:.0f} ms")
    if resp.body is None:
        group.add("app health body", FAIL, resp.error or "no JSON body")
        return group
    for key, expected in EXPECTED_APP_HEALTH.items():
        got = resp.body.get(key)
        if got == expected:
            group.add(f"app {key}", OK, f"{key}={got!r}")
        else:
            group.add(f"app {key}", FAIL, f"{key}={got!r}, expected {expected!r}")
    return group


def check_database(ping: Callable[[], object]) -> CheckGroup:
    """Connect, run ``SELECT VERSION()``, time it; slow (> 500 ms) is a warning, an error is a failure."""
    group = CheckGroup("database")
    started = time.perf_counter()
    try:
        result = ping()
    except OpsError as exc:
        group.add("database connection", FAIL, exc.message)
        return group
    connect_ms = round((time.perf_counter() - started) * 1000, 1)
    group.metrics["db_latency_ms"] = result.latency_ms
    group.metrics["db_connect_ms"] = connect_ms
    group.add("database connection", OK, f"{result.database} on {result.server_version}")
    status = WARN if result.latency_ms > SLOW_DB_MS else OK
    group.add("database latency", status, f"query {result.latency_ms:.1f} ms, connect+query {connect_ms:.1f} ms")
    return group


def check_stripe(api: StripeAPI | None, mode: str, webhook_url: str | None) -> CheckGroup:
    """Key validity (``GET /v1/balance``) and, when the app URL is known, an enabled webhook endpoint for it."""
    group = CheckGroup("stripe")
    if api is None:
        group.add("stripe key", SKIP, "STRIPE_SECRET_KEY is not set; Stripe checks skipped")
        return group
    started = time.perf_counter()
    try:
        api.call(f"checking the {mode} key (GET /v1/balance)", api.client.v1.balance.retrieve)
        group.metrics["stripe_latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
        group.add("stripe key", OK, f"{mode} key accepted")
    except OpsError as exc:
        group.add("stripe key", FAIL, _said(exc))
        return group
    try:
        endpoints = api.call("listing webhook endpoints",
                             lambda: list(api.client.v1.webhook_endpoints.list({"limit": 100}).auto_paging_iter()))
    except OpsError as exc:
        group.add("stripe webhook endpoints", FAIL, _said(exc))
        return group
    enabled = [e for e in endpoints if getattr(e, "status", None) == "enabled"]
    if webhook_url is None:
        status = OK if enabled else WARN
        group.add("stripe webhook endpoints", status, f"{len(enabled)} of {len(endpoints)} enabled (APP_BASE_URL unset: not matched to the app)")
    else:
        mine = [e for e in endpoints if getattr(e, "url", None) == webhook_url]
        if any(getattr(e, "status", None) == "enabled" for e in mine):
            group.add("stripe webhook endpoints", OK, f"{webhook_url} is enabled")
        elif mine:
            group.add("stripe webhook endpoints", FAIL, f"{webhook_url} is registered but disabled")
        else:
            group.add("stripe webhook endpoints", FAIL, f"no Stripe webhook endpoint points at {webhook_url}")
    return group


def _said(exc: OpsError) -> str:
    """A check row's detail: what failed and the next step (a health check changes nothing, so no "changed" note)."""
    return exc.message + (f" Next: {exc.next_step}" if exc.next_step else "")


def rows_of(groups: list[CheckGroup]) -> list[dict[str, str]]:
    return [{"check": r.check, "status": r.status, "detail": r.detail} for g in groups for r in g.rows]
