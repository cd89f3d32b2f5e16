"""Signed re-delivery over real HTTP: Stripe API server process -> this tool -> app stand-in process -> MariaDB."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from rusing_ops.core.database import create_engine
from rusing_ops.core.errors import ConfigError
from rusing_ops.core.stripe_api import connect_stripe
from rusing_ops.webhooks import events_log as log
from rusing_ops.webhooks.redeliver import Redriver, redrive_many
from rusing_ops.webhooks.stripe_events import fetch_event, list_events
from rusing_ops_tests.conftest import free_port

from .conftest import API_KEY, WEBHOOK_SECRET, insert_row, make_event


def test_failed_event_is_redriven_once_and_ends_processed(redriver, stripe_server, app_endpoint):
    stripe_server.add_events(make_event("evt_fail1"))
    app_endpoint.fail("evt_fail1", times=1)
    first = redriver.redrive("evt_fail1")  # the original delivery, failing in the app's handler
    assert (first.outcome, first.attempts, first.http_status) == ("failed", 1, 500)
    assert first.error == "handler error: simulated failure for evt_fail1"
    again = redriver.redrive("evt_fail1")
    assert (again.outcome, again.attempts, again.http_status) == ("processed", 2, 200)
    assert app_endpoint.row("evt_fail1")["status"] == "processed"
    assert app_endpoint.effects("evt_fail1") == 1
    third = redriver.redrive("evt_fail1")
    assert third.outcome == "already_processed" and app_endpoint.effects("evt_fail1") == 1
    with redriver.engine.connect() as conn:
        audit = log.audit_rows(conn, "evt_fail1")
    assert [(a["action"], a["outcome"]) for a in reversed(audit)] == [("redeliver", "failed"), ("redeliver", "processed")]


def test_three_failures_dead_letter_and_manual_retry_brings_it_back(redriver, stripe_server, app_endpoint):
    stripe_server.add_events(make_event("evt_dl1", "invoice.payment_failed"))
    app_endpoint.fail("evt_dl1", times=-1)
    outcomes = [redriver.redrive("evt_dl1").outcome for _ in range(4)]
    assert outcomes == ["failed", "failed", "dead_lettered", "dead_lettered"]
    assert app_endpoint.row("evt_dl1")["attempts"] == 3
    assert len(app_endpoint.seen()) == 3  # the 4th stopped before delivering: the app would not claim it
    app_endpoint.configure(fail={})
    back = redriver.redrive("evt_dl1", reset=True)
    assert (back.outcome, back.attempts) == ("processed", 1)
    assert back.actions[0] == "reset attempts 3->0"
    assert app_endpoint.effects("evt_dl1") == 1


def test_racing_redrives_process_a_duplicate_once(redriver, stripe_server, app_endpoint, db_conn):
    stripe_server.add_events(make_event("evt_race1"))
    insert_row(db_conn, "evt_race1", attempts=1)
    app_endpoint.configure(delay_s=0.5)
    results = []
    threads = [threading.Thread(target=lambda r=reset: results.append(redriver.redrive("evt_race1", reset=r)))
               for reset in (False, True, False, True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.outcome for r in results).count("processed") == 1
    assert app_endpoint.effects("evt_race1") == 1
    assert [s["claim"] for s in app_endpoint.seen()].count("claimed") == 1


def test_event_older_than_30_days_needs_object_repair(redriver, stripe_server, app_endpoint, db_conn):
    insert_row(db_conn, "evt_old1", ago_s=40 * 86400)
    stripe_server.add_events(make_event("evt_old1", age_s=40 * 86400))
    out = redriver.redrive("evt_old1")
    assert out.outcome == "needs_object_repair"
    assert out.error.startswith("first seen 40 days ago; Stripe keeps events 30 days")
    assert app_endpoint.seen() == []


def test_event_unknown_to_stripe_is_not_delivered(redriver, app_endpoint):
    out = redriver.redrive("evt_unknown1")
    assert out.outcome == "not_in_stripe" and "No such event: 'evt_unknown1'" in out.error
    assert app_endpoint.seen() == []


def test_forged_id_refused_before_any_query(stripe_server, app_endpoint, fresh_db):
    dead_db = fresh_db.with_database("nope")
    dead_db = type(dead_db)(dead_db.user, "", "127.0.0.1", free_port(), "nope")  # nothing listens: a query would fail
    r = Redriver(create_engine(dead_db), dead_db, connect_stripe(API_KEY, stripe_server.base),
                 app_endpoint.webhook_url, WEBHOOK_SECRET)
    for bad in ("evt_1' OR 1=1 --", "../v1/customers", "evt_x/../../v1/accounts"):
        with pytest.raises(ConfigError, match="refused before any query was sent"):
            r.redrive(bad)
        with pytest.raises(ConfigError, match="refused before any query was sent"):
            redrive_many(r, ["evt_good1", bad])
    assert stripe_server.requests() == [] and app_endpoint.seen() == []


def test_unreachable_stripe_changes_nothing(engine, fresh_db, app_endpoint, db_conn):
    insert_row(db_conn, "evt_ns1", attempts=3)
    port = free_port()
    r = Redriver(engine, fresh_db, connect_stripe(API_KEY, f"http://127.0.0.1:{port}"),
                 app_endpoint.webhook_url, WEBHOOK_SECRET)
    out = r.redrive("evt_ns1", reset=True)
    assert out.outcome == "stripe_unavailable" and out.error.startswith(
        f"Stripe API at 127.0.0.1:{port} could not be reached while fetching evt_ns1 (2 attempt(s); ConnectionError: ")
    assert app_endpoint.row("evt_ns1") == {"status": "failed", "attempts": 3, "lastError": "boom"}


def test_unreachable_app_undoes_the_reset(engine, fresh_db, stripe_server, stripe_client, app_endpoint, db_conn):
    stripe_server.add_events(make_event("evt_na1"))
    insert_row(db_conn, "evt_na1", attempts=3)
    url = f"http://127.0.0.1:{free_port()}/api/stripe/webhook"
    r = Redriver(engine, fresh_db, stripe_client, url, WEBHOOK_SECRET)
    out = r.redrive("evt_na1", reset=True)
    assert out.outcome == "app_unreachable" and out.error.startswith(f"{url} did not answer: ConnectionError")
    assert out.actions == ["reset attempts 3->0", "undid reset: attempts back to 3"]
    assert app_endpoint.row("evt_na1") == {"status": "failed", "attempts": 3, "lastError": "boom"}
    with engine.connect() as conn:
        text = str(log.audit_rows(conn))
    assert API_KEY not in text and WEBHOOK_SECRET not in text


def test_stripe_retry_endpoint_delivers_and_is_read_back(engine, fresh_db, stripe_server, stripe_client, app_endpoint, db_conn):
    stripe_server.add_events(make_event("evt_sr1", "charge.refunded"))
    stripe_server.control("/_test/webhook_endpoints", {"id": "we_app1", "url": app_endpoint.webhook_url,
                                                       "secret": WEBHOOK_SECRET})
    insert_row(db_conn, "evt_sr1", attempts=1)
    r = Redriver(engine, fresh_db, stripe_client, None, None, mode="stripe_retry", webhook_endpoint="we_app1", wait_s=10)
    out = r.redrive("evt_sr1")
    assert (out.outcome, out.attempts) == ("processed", 2)
    assert stripe_server.deliveries() == [{"event": "evt_sr1", "status": 200}]
    retry = [q for q in stripe_server.requests() if q["path"].endswith("/retry")]
    assert retry == [{"method": "POST", "path": "/v1/events/evt_sr1/retry", "params": {"webhook_endpoint": "we_app1"},
                      "stripe_account": None}]


def test_list_events_sends_stripes_filters(stripe_server, stripe_client):
    stripe_server.add_events(make_event("evt_l1", delivered=False), make_event("evt_l2", "customer.created", delivered=False),
                             make_event("evt_l3", "invoice.payment_failed", delivered=True, age_s=10),
                             make_event("evt_l4", "charge.refunded", delivered=False, age_s=5 * 86400))
    got = [e["id"] for e in list_events(stripe_client, created_gte=int(time.time()) - 86400, delivery_success=False,
                                        page_size=1)]
    assert got == ["evt_l1"]
    assert [e["id"] for e in list_events(stripe_client, page_size=2)] == ["evt_l3", "evt_l1", "evt_l4"]
    first = stripe_server.requests()[0]
    assert first["params"]["types"] == {str(i): t for i, t in enumerate(
        ["checkout.session.completed", "payment_intent.succeeded", "charge.refunded", "account.updated",
         "customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted",
         "invoice.payment_succeeded", "invoice.payment_failed"])}
    assert first["params"]["delivery_success"] == "false"


def test_localstripe_event_delivered_by_localstripe_then_redriven(localstripe_server, engine, fresh_db, app_endpoint):
    """localstripe covers real object lifecycles and its own signed delivery: a real payment_intent.succeeded."""
    requests.delete(localstripe_server + "/_config/data", timeout=10)
    requests.post(localstripe_server + "/_config/webhooks/app", timeout=10, json={
        "url": app_endpoint.webhook_url, "secret": WEBHOOK_SECRET, "events": ["payment_intent.succeeded"]})
    app_endpoint.configure(fail={"*": 1})
    client = connect_stripe(API_KEY, localstripe_server)
    intent = client.client.v1.payment_intents.create({"amount": 4900, "currency": "cad", "payment_method": "pm_card_visa",
                                               "confirm": True})
    event_id = next(e.id for e in client.client.v1.events.list({"type": "payment_intent.succeeded"}).auto_paging_iter()
                    if e.data.object.id == intent.id)
    deadline = time.monotonic() + 15
    while app_endpoint.row(event_id) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert app_endpoint.row(event_id)["status"] == "failed"  # localstripe's own delivery hit the failing handler
    assert fetch_event(client, event_id).type == "payment_intent.succeeded"
    out = Redriver(engine, fresh_db, client, app_endpoint.webhook_url, WEBHOOK_SECRET).redrive(event_id)
    assert (out.outcome, out.attempts) == ("processed", 2)
    assert app_endpoint.effects(event_id) == 1


def test_stuck_row_is_released_then_processed(redriver, stripe_server, app_endpoint, db_conn):
    stripe_server.add_events(make_event("evt_stuck1", "customer.subscription.deleted"))
    insert_row(db_conn, "evt_stuck1", status="processing", attempts=1, ago_s=3600, error=None)
    insert_row(db_conn, "evt_busy1", status="processing", attempts=1, ago_s=5, error=None)
    from rusing_ops.webhooks.reconcile import reconcile

    report = reconcile(redriver, all_failed=True)
    assert report.selected == ["evt_stuck1"]
    out = report.outcomes[0]
    assert (out.outcome, out.attempts) == ("processed", 2)
    assert out.actions[0].startswith("released stuck row (processing 36")
    assert app_endpoint.row("evt_busy1")["status"] == "processing"  # in flight, not touched


def test_connect_event_is_fetched_from_the_coachs_account(redriver, stripe_server, app_endpoint, db_conn):
    event = {**make_event("evt_acct1", "account.updated"), "account": "acct_coach1"}
    stripe_server.add_events(event)
    insert_row(db_conn, "evt_acct1", type_="account.updated")
    with db_conn.cursor() as cur:
        cur.execute("UPDATE webhook_events_log SET payload = %s WHERE stripeEventId = 'evt_acct1'",
                    ('{"id": "evt_acct1", "account": "acct_coach1"}',))
    out = redriver.redrive("evt_acct1")
    assert out.outcome == "processed"
    fetches = [(q["path"], q["stripe_account"]) for q in stripe_server.requests()]
    assert fetches == [("/v1/events/evt_acct1", None), ("/v1/events/evt_acct1", "acct_coach1")]


@pytest.mark.parametrize(("status", "kind", "error_type"), [
    (503, "StripeUnavailable", "api_error"), (429, "StripeUnavailable", "rate_limit_error"),
    (500, "StripeUnavailable", "api_error"), (400, "StripeRefused", "invalid_request_error"),
    (403, "StripeRefused", "invalid_request_error"), (404, "NotFound", "invalid_request_error")])
def test_stripe_errors_are_transient_or_refused_once_for_all_callers(status, kind, error_type):
    """One translation: what a RetryPolicy may retry (transient) and what it must not (a refusal)."""
    from rusing_ops_tests.conftest import JsonServer

    server = JsonServer(lambda method, path, headers, body: (
        status, {"error": {"type": error_type, "message": f"simulated {status} for {API_KEY}"}}))
    try:
        api = connect_stripe(API_KEY, server.base_url, network_retries=0)
        with pytest.raises(Exception) as err:
            fetch_event(api, "evt_e1")
    finally:
        server.close()
    assert type(err.value).__name__ == kind
    assert getattr(err.value, "transient", False) is (kind == "StripeUnavailable")
    text = str(err.value)
    assert "fetching evt_e1" in text and API_KEY not in text  # the key Stripe echoed back is scrubbed
    if kind != "NotFound":
        assert f"Stripe at {server.base_url.removeprefix('http://')} " in text and f"HTTP {status}" in text
