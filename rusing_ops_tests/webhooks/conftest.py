"""Real servers for the webhook tests, each its own process on loopback: our Stripe-compatible API server
(events with filters, retry, Connect), localstripe 1.15.10 (real object lifecycles and its own signed webhook
deliveries), and the app's webhook endpoint stand-in writing the real `webhook_events_log` in MariaDB."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import pytest
import requests

from rusing_ops.core.database import create_engine
from rusing_ops.core.stripe_api import connect_stripe
from rusing_ops.webhooks import events_log
from rusing_ops.webhooks.redeliver import Redriver
from rusing_ops_tests.conftest import wait_for_port

ROOT = Path(__file__).resolve().parents[2]
# Distinctive values so tests can grep logs, metadata and the audit table for them.
API_KEY = "sk_test_" + secrets.token_hex(12)
WEBHOOK_SECRET = "whsec_" + secrets.token_hex(16)


def _die_with_parent() -> None:
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: no orphan servers if pytest is killed


def _spawn(args: list[str], env: dict | None = None, log_name: str = "server") -> tuple[subprocess.Popen, int]:
    log = open(Path(tempfile.gettempdir()) / f"rusing-wh-{log_name}-{os.getpid()}.log", "wb")  # noqa: SIM115 (the child writes it)
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=log, cwd=ROOT,
                            env={**os.environ, **(env or {})}, start_new_session=True,
                            preexec_fn=_die_with_parent)  # noqa: PLW1509 (prctl only, before exec)
    port = int(proc.stdout.readline().decode().strip())
    wait_for_port(port, 30, proc)
    return proc, port


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


class StripeServer:
    def __init__(self, base: str):
        self.base = base

    def control(self, path: str, body: dict | None = None):
        resp = requests.post(self.base + path, json=body or {}, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def add_events(self, *events: dict) -> None:
        self.control("/_test/events", {"events": list(events)})

    def requests(self) -> list[dict]:
        return self.control("/_test/requests")["requests"]

    def deliveries(self) -> list[dict]:
        return self.control("/_test/requests")["deliveries"]


def make_event(event_id: str, type_: str = "payment_intent.succeeded", *, age_s: int = 60, delivered: bool = True) -> dict:
    return {"id": event_id, "type": type_, "created": int(time.time()) - age_s, "delivered": delivered,
            "data": {"object": {"id": "pi_" + event_id[4:], "object": type_.split(".")[0], "amount": 4900}}}


@pytest.fixture(scope="session")
def stripe_server_proc():
    proc, port = _spawn(["-m", "rusing_ops_tests.webhooks.stripe_server"], log_name="stripe")
    yield f"http://127.0.0.1:{port}"
    _stop(proc)


@pytest.fixture
def stripe_server(stripe_server_proc) -> StripeServer:
    server = StripeServer(stripe_server_proc)
    server.control("/_test/reset")
    return server


@pytest.fixture(scope="session")
def app_server_proc():
    proc, port = _spawn(["-m", "rusing_ops_tests.webhooks.app_server"], log_name="app")
    yield f"http://127.0.0.1:{port}"
    _stop(proc)


class AppEndpoint:
    def __init__(self, base: str, db_conn):
        self.base = base
        self.webhook_url = base + "/api/stripe/webhook"
        self.db = db_conn

    def configure(self, **values) -> None:
        requests.post(self.base + "/_test/config", json=values, timeout=10).raise_for_status()

    def fail(self, event_id: str, times: int = -1) -> None:
        """Make the handler fail for ``event_id`` ``times`` more times (-1: always)."""
        self.configure(fail={event_id: times})

    def seen(self) -> list[dict]:
        return requests.get(self.base + "/_test/seen", timeout=10).json()["seen"]

    def effects(self, event_id: str) -> int:
        with self.db.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
                        "AND TABLE_NAME = 'app_effects'")
            if not cur.fetchone()[0]:
                return 0
            cur.execute("SELECT COUNT(*) FROM app_effects WHERE stripeEventId = %s", (event_id,))
            return cur.fetchone()[0]

    def row(self, event_id: str) -> dict | None:
        with self.db.cursor() as cur:
            cur.execute("SELECT status, attempts, lastError FROM webhook_events_log WHERE stripeEventId = %s", (event_id,))
            r = cur.fetchone()
        return dict(zip(("status", "attempts", "lastError"), r)) if r else None


@pytest.fixture
def app_endpoint(app_server_proc, fresh_db, db_conn) -> AppEndpoint:
    endpoint = AppEndpoint(app_server_proc, db_conn)
    endpoint.configure(db=fresh_db.pymysql_kwargs(), secret=WEBHOOK_SECRET, fail={}, delay_s=0.0)
    return endpoint


@pytest.fixture
def engine(fresh_db):
    eng = create_engine(fresh_db)
    events_log.ensure(eng, fresh_db, lock_timeout_s=120)  # GET_LOCK is server-wide: other suites may hold it
    yield eng
    eng.dispose()


@pytest.fixture
def stripe_client(stripe_server):
    return connect_stripe(API_KEY, stripe_server.base)


@pytest.fixture
def redriver(engine, fresh_db, stripe_client, app_endpoint) -> Redriver:
    return Redriver(engine, fresh_db, stripe_client, app_endpoint.webhook_url, WEBHOOK_SECRET, actor="test")


def insert_row(db_conn, event_id: str, *, status: str = "failed", attempts: int = 1, type_: str = "payment_intent.succeeded",
               ago_s: int = 60, error: str | None = "boom") -> None:
    """Arrange a log row as the app would have left it, changed ``ago_s`` seconds ago."""
    with db_conn.cursor() as cur:
        cur.execute("INSERT INTO webhook_events_log (stripeEventId, eventType, status, attempts, lastError, createdAt, "
                    "updatedAt) VALUES (%s, %s, %s, %s, %s, NOW() - INTERVAL %s SECOND, NOW() - INTERVAL %s SECOND)",
                    (event_id, type_, status, attempts, error, ago_s, ago_s))


@pytest.fixture(scope="session")
def localstripe_server():
    """localstripe 1.15.10 on loopback. Its store pickles itself to a hard-coded /tmp/localstripe.pickle on every
    write (shared with any other instance on the machine), so this process turns that dump off."""
    code = ("import sys, socket; from aiohttp import web; import localstripe.resources as r; "
            "r.Store.dump_to_disk = lambda self: None; from localstripe.server import app; "
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1], flush=True); "
            "web.run_app(app, sock=s, print=None)")
    proc, port = _spawn(["-c", code], log_name="localstripe")
    yield f"http://127.0.0.1:{port}"
    _stop(proc)


def failure_text(result) -> str:
    """The last step failure's own paragraph (after retries Dagster's error reads "Exceeded max_retries")."""
    data = [e.step_failure_data for e in result.all_events if e.is_step_failure][-1]
    if data.user_failure_data is not None:
        return data.user_failure_data.description
    return data.error.message.removeprefix("dagster._core.definitions.events.Failure: ")


def retries(result) -> int:
    return sum(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)


def fast_retry(job):
    """The same op with the production RetryPolicy's count cut to 1 and no delay (the policy itself is asserted in
    test_definitions): proves what is retried without waiting out the backoff."""
    op_def = job.graph.nodes[0].definition

    @dg.job(name=f"{job.name}_fast_retry")
    def fast():
        op_def.with_retry_policy(dg.RetryPolicy(max_retries=1, delay=0))()

    return fast
