"""`rusing-ops webhooks ...` as an operator runs it: separate processes, configuration from the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import API_KEY, ROOT, WEBHOOK_SECRET, insert_row, make_event


@pytest.fixture
def cli(tmp_path, database_url_str, stripe_server, app_endpoint):
    env = {**os.environ, "DATABASE_URL": database_url_str, "STRIPE_SECRET_KEY": API_KEY,
           "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET, "STRIPE_API_BASE": stripe_server.base,
           "APP_BASE_URL": app_endpoint.base, "DAGSTER_HOME": str(tmp_path / "dagster_home")}

    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "rusing_ops.cli", "webhooks", *args], env=env, cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(*args: str) -> tuple[int, str, str]:
        proc = start(*args)
        out, err = proc.communicate(timeout=120)
        return proc.returncode, out, err

    run.start = start
    return run


def test_status_reconcile_retry_end_to_end(cli, engine, db_conn, stripe_server, app_endpoint):
    stripe_server.add_events(make_event("evt_c1"), make_event("evt_c2", "invoice.payment_failed"))
    insert_row(db_conn, "evt_c1", attempts=1)
    insert_row(db_conn, "evt_c2", attempts=3, error="handler error: no such invoice")
    code, out, err = cli("status", "--json")
    data = json.loads(out)
    assert code == 1 and data["checks"] == {"no_dead_lettered_events": False, "no_stuck_events": True}
    assert (data["failed"], data["dead_lettered"]) == (2, 1)

    code, out, err = cli("reconcile", "--dry-run")
    assert code == 0 and "would_redrive" in out and app_endpoint.seen() == []
    code, out, err = cli("reconcile")
    assert code == 0, err
    assert "1 event(s): 1 processed" in out and app_endpoint.row("evt_c1")["status"] == "processed"

    code, out, err = cli("retry", "evt_c2")
    assert code == 0, err
    assert "actions: reset attempts 3->0; POST " in out
    assert app_endpoint.row("evt_c2")["status"] == "processed"
    code, out, err = cli("status")
    assert code == 0 and "check no_dead_lettered_events: passed" in out
    for text in (out, err):
        assert API_KEY not in text and WEBHOOK_SECRET not in text


def test_retry_refuses_a_forged_id_and_reports_failures(cli, engine, db_conn, stripe_server, app_endpoint):
    code, _out, err = cli("retry", "evt_x' OR 1=1")
    assert code == 1
    assert "is not a Stripe event id (expected evt_ followed by letters and digits); refused before any query was sent." in err
    assert stripe_server.requests() == []
    stripe_server.add_events(make_event("evt_cf1"))
    app_endpoint.fail("evt_cf1", times=-1)
    code, _out, err = cli("retry", "evt_cf1")
    assert code == 1
    assert "retry of evt_cf1 ended failed: handler error: simulated failure for evt_cf1." in err


def test_two_processes_racing_on_one_event_process_it_once(cli, engine, db_conn, stripe_server, app_endpoint):
    stripe_server.add_events(make_event("evt_cr1"))
    insert_row(db_conn, "evt_cr1", attempts=2)
    app_endpoint.configure(delay_s=0.3)
    procs = [cli.start("reconcile", "--event-id", "evt_cr1"), cli.start("retry", "evt_cr1")]
    for p in procs:
        p.communicate(timeout=120)
    assert app_endpoint.effects("evt_cr1") == 1
    assert app_endpoint.row("evt_cr1")["status"] == "processed"
