"""The Dagster face against real rows, real HTTP servers and a real (SQLite) instance."""

from __future__ import annotations

import json
import logging
import threading

import dagster as dg
import pytest

from rusing_ops.core.stripe_api import connect_stripe
from rusing_ops.resources import AppResource, DatabaseResource, StripeResource
from rusing_ops.webhooks import defs as wh
from rusing_ops.webhooks.reconcile import retry_event
from rusing_ops.webhooks.redeliver import Redriver
from rusing_ops.webhooks.watch import Cursor
from rusing_ops_tests.conftest import free_port
from rusing_ops_tests.silent_server import SilentServer

from .conftest import (
    API_KEY,
    WEBHOOK_SECRET,
    failure_text,
    fast_retry,
    insert_row,
    make_event,
    retries,
)


@pytest.fixture
def resources(database_url_str, stripe_server, app_endpoint):
    return {"database": DatabaseResource(url=database_url_str),
            "stripe": StripeResource(api_key=API_KEY, webhook_secret=WEBHOOK_SECRET, api_base=stripe_server.base),
            "app": AppResource(base_url=app_endpoint.base)}


def tick(resources, instance, cursor=None):
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as ctx:
        return wh.failed_webhook_events(ctx)


def run(job, resources, instance, config: dict, op: str):
    return job.execute_in_process(run_config={"ops": {op: {"config": config}}}, resources=resources, instance=instance,
                                  raise_on_error=False)


def all_log_text(instance, result) -> str:
    records = instance.all_logs(result.run_id)
    run = instance.get_run_by_id(result.run_id)
    return json.dumps([r.user_message for r in records]) + str([r.dagster_event for r in records]) + str(run.run_config)


def test_sensor_requests_one_run_per_batch_then_skips(resources, engine, db_conn, dagster_instance):
    insert_row(db_conn, "evt_s1", ago_s=120)
    insert_row(db_conn, "evt_s2", ago_s=100)
    insert_row(db_conn, "evt_sdead", attempts=3, ago_s=90)
    insert_row(db_conn, "evt_sok", status="processed", ago_s=80)
    result = tick(resources, dagster_instance)
    assert [r.run_config["ops"]["reconcile_events"]["config"]["event_ids"] for r in result.run_requests] == \
        [["evt_s1", "evt_s2", "evt_sdead"]]
    key = result.run_requests[0].run_key
    assert key.startswith("failed_webhook_events:")
    cursor = result.cursor
    again = tick(resources, dagster_instance, cursor)
    assert isinstance(again, dg.SkipReason)
    assert again.skip_message.startswith("No new failed or stuck rows in webhook_events_log since ")
    assert again.skip_message.endswith("(the log now holds 3 failed rows, dead-lettered ones included, and 0 stuck; "
                                       "see webhook_processing_stats).")
    # the same row failing again later is a new state, so a new run key
    with db_conn.cursor() as cur:
        cur.execute("UPDATE webhook_events_log SET attempts = 2, updatedAt = NOW() - INTERVAL 10 SECOND "
                    "WHERE stripeEventId = 'evt_s1'")
    third = tick(resources, dagster_instance, cursor)
    assert [r.run_config["ops"]["reconcile_events"]["config"]["event_ids"] for r in third.run_requests] == [["evt_s1"]]
    assert third.run_requests[0].run_key != key
    assert Cursor.decode(third.cursor).failed.ts > Cursor.decode(cursor).failed.ts


def test_sensor_skips_without_reading_when_redelivery_is_not_configured(resources, engine, db_conn, dagster_instance):
    insert_row(db_conn, "evt_nc1")
    resources["app"] = AppResource()
    result = tick(resources, dagster_instance)
    assert result.skip_message == ("Re-delivery is not configured (APP_BASE_URL not set); webhook_events_log was not "
                                   "read and the cursor did not move.")


def test_sensor_run_redrives_failed_event_to_processed(resources, engine, db_conn, stripe_server, app_endpoint,
                                                       dagster_instance):
    stripe_server.add_events(make_event("evt_d1", "checkout.session.completed"))
    insert_row(db_conn, "evt_d1", attempts=1, ago_s=30)
    first = tick(resources, dagster_instance)
    request = first.run_requests[0]
    result = wh.reconcile_webhook_events.execute_in_process(run_config=request.run_config, resources=resources,
                                                            instance=dagster_instance)
    assert result.success
    assert app_endpoint.row("evt_d1")["status"] == "processed" and app_endpoint.effects("evt_d1") == 1
    outputs = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    assert outputs[0].event_specific_data.metadata["outcomes"].value == {"processed": 1}
    text = all_log_text(dagster_instance, result)
    assert API_KEY not in text and WEBHOOK_SECRET not in text


def test_sensor_run_and_manual_retry_race_processes_once(resources, engine, fresh_db, db_conn, stripe_server,
                                                         app_endpoint, dagster_instance):
    """The sensor's run (a Dagster run) and the manual retry (the library call the retry job makes) in two threads.

    Two Dagster runs cannot share one process concurrently (Dagster's log-manager setup deadlocks on the logging
    module's locks), so the manual side is the library call; the CLI test races two processes.
    """
    stripe_server.add_events(make_event("evt_r1"))
    insert_row(db_conn, "evt_r1", attempts=2, ago_s=30)
    app_endpoint.configure(delay_s=0.3)
    request = tick(resources, dagster_instance).run_requests[0]
    manual_redriver = Redriver(engine, fresh_db, connect_stripe(API_KEY, stripe_server.base), app_endpoint.webhook_url,
                               WEBHOOK_SECRET, actor="cli")
    results = {}

    def sensor_run():
        results["sensor"] = wh.reconcile_webhook_events.execute_in_process(
            run_config=request.run_config, resources=resources, instance=dagster_instance, raise_on_error=False)

    def manual():
        results["manual"] = retry_event(manual_redriver, "evt_r1")

    threads = [threading.Thread(target=sensor_run), threading.Thread(target=manual)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert app_endpoint.effects("evt_r1") == 1
    assert app_endpoint.row("evt_r1")["status"] == "processed"
    assert [s["claim"] for s in app_endpoint.seen()].count("claimed") == 1
    assert results["manual"].outcome in ("processed", "already_processed", "not_claimed")


def test_dead_lettered_fails_the_check_and_manual_retry_brings_it_back(resources, engine, db_conn, stripe_server,
                                                                       app_endpoint, dagster_instance):
    stripe_server.add_events(make_event("evt_x1", "invoice.payment_failed"))
    app_endpoint.fail("evt_x1", times=-1)
    for _ in range(3):
        result = run(wh.reconcile_webhook_events, resources, dagster_instance, {"event_ids": ["evt_x1"]}, "reconcile_events")
        assert not result.success
    assert "1 event(s) did not end processed (1 event(s): 1 dead_lettered). Events: evt_x1." in failure_text(result)
    assert app_endpoint.row("evt_x1")["attempts"] == 3
    with db_conn.cursor() as cur:  # let the row settle (the sensor leaves the current seconds for the next tick)
        cur.execute("UPDATE webhook_events_log SET updatedAt = NOW() - INTERVAL 10 SECOND")
    request = tick(resources, dagster_instance).run_requests[0]
    sensor_run = wh.reconcile_webhook_events.execute_in_process(run_config=request.run_config, resources=resources,
                                                                instance=dagster_instance, raise_on_error=False)
    assert "1 dead_lettered). Events: evt_x1." in failure_text(sensor_run)  # a failed run: alert_on_run_failure fires
    assert len(app_endpoint.seen()) == 3  # nothing delivered for a dead-lettered row
    stats = dg.materialize([wh.webhook_processing_stats, wh.no_dead_lettered_events, wh.no_stuck_events],
                           resources=resources, instance=dagster_instance, raise_on_error=False)
    checks = {e.check_name: e for e in stats.get_asset_check_evaluations()}
    assert checks["no_dead_lettered_events"].passed is False and checks["no_stuck_events"].passed is True
    assert checks["no_dead_lettered_events"].metadata["events"].value == "evt_x1"
    mat = stats.asset_materializations_for_node("webhook_processing_stats")[0].metadata
    assert mat["dead_lettered"].value == 1 and mat["dagster/row_count"].value == 1
    assert [r.data["event_id"] for r in mat["recent_failures"].records] == ["evt_x1"]
    assert mat["recent_failures"].records[0].data["dead_lettered"] is True
    assert [r.data for r in mat["by_type"].records] == [
        {"type": "invoice.payment_failed", "processed": 0, "processing": 0, "failed": 1}]
    assert mat["status_index"].value == "present"

    app_endpoint.configure(fail={})
    retry = run(wh.retry_webhook_event, resources, dagster_instance, {"event_id": "evt_x1"}, "retry_event")
    assert retry.success
    assert app_endpoint.row("evt_x1") == {"status": "processed", "attempts": 1, "lastError": None}
    stats = dg.materialize([wh.webhook_processing_stats, wh.no_dead_lettered_events], resources=resources,
                           instance=dagster_instance)
    assert all(e.passed for e in stats.get_asset_check_evaluations())


def test_sweep_finds_and_delivers_missed_events(resources, engine, db_conn, stripe_server, app_endpoint, dagster_instance):
    stripe_server.add_events(
        make_event("evt_m1", "customer.subscription.updated", delivered=False, age_s=3 * 86400),  # missed, undelivered
        make_event("evt_m2", "account.updated", delivered=True, age_s=3600),   # "delivered", yet absent from the log
        make_event("evt_m3", "charge.refunded", delivered=True, age_s=7200),   # delivered and processed
        make_event("evt_m4", "customer.created", delivered=False, age_s=60),   # not a handled type
        make_event("evt_m5", "invoice.payment_failed", delivered=False, age_s=20 * 86400))  # older than the window
    insert_row(db_conn, "evt_m3", status="processed")
    ctx = dg.build_schedule_context(instance=dagster_instance)
    request = wh.stripe_event_sweep.evaluate_tick(ctx).run_requests[0]
    result = wh.sweep_stripe_events.execute_in_process(run_config=request.run_config, resources=resources,
                                                       instance=dagster_instance)
    assert result.success
    assert app_endpoint.row("evt_m1")["status"] == "processed" and app_endpoint.row("evt_m2")["status"] == "processed"
    assert app_endpoint.row("evt_m4") is None and app_endpoint.row("evt_m5") is None
    assert app_endpoint.effects("evt_m3") == 0
    meta = next(e for e in result.all_events if e.event_type_value == "STEP_OUTPUT").event_specific_data.metadata
    assert (meta["undelivered_listed"].value, meta["recent_listed"].value, meta["missing"].value) == (1, 2, 2)
    listing = [q for q in stripe_server.requests() if q["path"] == "/v1/events"]
    assert listing[0]["params"]["delivery_success"] == "false" and "delivery_success" not in listing[1]["params"]


@pytest.mark.parametrize("days", [0, 31])
def test_sweep_window_outside_stripes_30_days_is_refused_before_anything_is_sent(days, stripe_server):
    from rusing_ops.core.errors import ConfigError
    from rusing_ops.webhooks.sweep import sweep

    with pytest.raises(ConfigError) as err:
        sweep(None, days=days)  # refused before the redriver (database, Stripe, app) is touched
    assert str(err.value) == (f"days={days}: Stripe lists events of the last 30 days only; use 1-30. "
                              "Nothing was changed.")
    assert stripe_server.requests() == []


def test_forged_id_refused_by_the_retry_job_before_any_query(resources, stripe_server, app_endpoint, dagster_instance):
    resources["database"] = DatabaseResource(url=f"mysql://root@127.0.0.1:{free_port()}/nothing_here")
    result = run(wh.retry_webhook_event, resources, dagster_instance, {"event_id": "evt_1' OR '1'='1"}, "retry_event")
    assert not result.success
    assert failure_text(result).startswith('"evt_1\' OR \'1\'=\'1" is not a Stripe event id')
    assert stripe_server.requests() == [] and app_endpoint.seen() == []


def test_unreachable_app_fails_clearly_and_marks_nothing_done(resources, engine, db_conn, stripe_server, app_endpoint,
                                                              dagster_instance, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    stripe_server.add_events(make_event("evt_u1"))
    insert_row(db_conn, "evt_u1", attempts=3)
    resources["app"] = AppResource(base_url=f"http://127.0.0.1:{free_port()}")
    result = run(wh.retry_webhook_event, resources, dagster_instance, {"event_id": "evt_u1"}, "retry_event")
    assert not result.success
    assert "retry of evt_u1 ended app_unreachable: http://127.0.0.1:" in failure_text(result)
    assert app_endpoint.row("evt_u1") == {"status": "failed", "attempts": 3, "lastError": "boom"}
    resources["stripe"] = StripeResource(api_key=API_KEY, webhook_secret=WEBHOOK_SECRET,
                                         api_base=f"http://127.0.0.1:{free_port()}")
    insert_row(db_conn, "evt_u2", attempts=1)
    result = run(fast_retry(wh.reconcile_webhook_events), resources, dagster_instance, {"all_failed": True},
                 "reconcile_events")
    assert "1 event(s): 1 stripe_unavailable" in failure_text(result)
    assert retries(result) == 1  # Stripe unavailable is transient: retried
    assert app_endpoint.row("evt_u2") == {"status": "failed", "attempts": 1, "lastError": "boom"}
    assert app_endpoint.seen() == []
    console = capfd.readouterr()
    text = all_log_text(dagster_instance, result) + caplog.text + console.out + console.err
    assert "STEP_FAILURE" in console.err and "urllib3" in caplog.text  # the captured logs did see these runs
    assert API_KEY not in text and WEBHOOK_SECRET not in text


def test_dry_run_delivers_nothing(resources, engine, db_conn, stripe_server, app_endpoint, dagster_instance):
    stripe_server.add_events(make_event("evt_dry1"))
    insert_row(db_conn, "evt_dry1", attempts=1)
    result = run(wh.reconcile_webhook_events, resources, dagster_instance, {"all_failed": True, "dry_run": True},
                 "reconcile_events")
    assert result.success and app_endpoint.seen() == []
    assert app_endpoint.row("evt_dry1")["attempts"] == 1


def test_stripe_that_never_answers_is_retried_then_fails_naming_host_and_timeout(resources, engine, db_conn,
                                                                                 app_endpoint, dagster_instance):
    """Before: 30 s x 3 SDK attempts per call (93 s for `webhooks retry`), with no host or timeout in the message."""
    insert_row(db_conn, "evt_t1", attempts=3)
    silent = SilentServer()
    try:
        resources["stripe"] = StripeResource(api_key=API_KEY, webhook_secret=WEBHOOK_SECRET, api_base=silent.base_url,
                                             read_timeout_seconds=0.25, connect_timeout_seconds=1)
        result = run(fast_retry(wh.retry_webhook_event), resources, dagster_instance, {"event_id": "evt_t1"},
                     "retry_event")
        cli_run = wh.retry_webhook_event.execute_in_process(  # as `rusing-ops webhooks retry` runs it
            run_config={"ops": {"retry_event": {"config": {"event_id": "evt_t1"}}}}, resources=resources,
            instance=dagster_instance, tags={wh.INTERACTIVE_TAG: "true"}, raise_on_error=False)
    finally:
        silent.close()
    # the terminal gets the first bounded attempt's answer, without waiting out the backoff
    assert retries(cli_run) == 0 and failure_text(cli_run) == failure_text(result)
    assert not result.success and retries(result) == 1
    assert failure_text(result).startswith(
        f"retry of evt_t1 ended stripe_unavailable: Stripe API at 127.0.0.1:{silent.port} did not answer within the "
        "0.25 s read timeout while fetching evt_t1 (2 attempt(s); ReadTimeout: ")
    assert app_endpoint.row("evt_t1") == {"status": "failed", "attempts": 3, "lastError": "boom"}
    assert app_endpoint.seen() == []


def test_refused_key_fails_at_once_without_retry(resources, engine, db_conn, stripe_server, app_endpoint,
                                                 dagster_instance):
    stripe_server.add_events(make_event("evt_k1"))
    insert_row(db_conn, "evt_k1", attempts=3)
    resources["stripe"] = StripeResource(api_key="rk_revoked_key_0000", webhook_secret=WEBHOOK_SECRET,
                                         api_base=stripe_server.base)
    result = run(wh.retry_webhook_event, resources, dagster_instance, {"event_id": "evt_k1"}, "retry_event")
    assert not result.success and retries(result) == 0  # the production policy (3 retries) never fired
    assert failure_text(result).startswith(
        f"retry of evt_k1 ended stripe_refused: Stripe at {stripe_server.base.removeprefix('http://')} refused the API "
        "key while fetching evt_k1 (HTTP 401).")
    assert [q["path"] for q in stripe_server.requests()] == ["/v1/events/evt_k1"]
    assert app_endpoint.row("evt_k1") == {"status": "failed", "attempts": 3, "lastError": "boom"}


def test_read_paths_never_write_and_the_setup_job_creates_the_index(database_url_str, fresh_db, db_conn,
                                                                    stripe_server, app_endpoint, dagster_instance):
    """Before: the stats asset and the sensor ran CREATE INDEX on the app's table (and created tables)."""
    from rusing_ops.webhooks import events_log as log

    def schema():
        with db_conn.cursor() as cur:
            cur.execute("SELECT TABLE_NAME, INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = "
                        "DATABASE() ORDER BY 1, 2")
            return cur.fetchall()

    resources = {"database": DatabaseResource(url=database_url_str),
                 "stripe": StripeResource(api_key=API_KEY, webhook_secret=WEBHOOK_SECRET, api_base=stripe_server.base),
                 "app": AppResource(base_url=app_endpoint.base)}
    nothing = tick(resources, dagster_instance)  # no table at all: skipped, nothing created
    assert nothing.skip_message.startswith("webhook_events_log does not exist yet (the app creates it on its first")
    empty = dg.materialize([wh.webhook_processing_stats, wh.no_stuck_events], resources=resources,
                           instance=dagster_instance)
    meta = empty.asset_materializations_for_node("webhook_processing_stats")[0].metadata
    assert (meta["total"].value, meta["status_index"].value, meta["stats"].value["total"]) == (0, "no table yet", 0)
    [check] = empty.get_asset_check_evaluations()
    assert (check.passed, check.severity) == (False, dg.AssetCheckSeverity.WARN)  # nothing checked: not green
    assert schema() == ()
    with db_conn.cursor() as cur:
        cur.execute(log.APP_TABLE_DDL)  # the app's table, as the app creates it: no rusing_ops index
    before = schema()
    insert_row(db_conn, "evt_ni1", ago_s=120)
    found = tick(resources, dagster_instance)
    assert [r.run_config["ops"]["reconcile_events"]["config"]["event_ids"] for r in found.run_requests] == [["evt_ni1"]]
    stats = dg.materialize([wh.webhook_processing_stats, wh.no_stuck_events], resources=resources,
                           instance=dagster_instance)
    mat = stats.asset_materializations_for_node("webhook_processing_stats")[0].metadata
    assert (mat["failed"].value, mat["dagster/row_count"].value) == (1, 1)
    assert mat["status_index"].value == "missing: run the setup_webhook_tables job to create it"
    assert schema() == before  # read paths changed nothing
    refused = run(wh.reconcile_webhook_events, resources, dagster_instance, {"event_ids": ["evt_ni1"]},
                  "reconcile_events")
    assert failure_text(refused).startswith(f"{fresh_db.masked()} has no rusing_ops_webhook_audit table, where every "
                                            "re-drive is recorded. Nothing was changed. Next: run the "
                                            "setup_webhook_tables job once")
    assert retries(refused) == 0 and app_endpoint.seen() == []

    setup = wh.setup_webhook_tables.execute_in_process(resources=resources, instance=dagster_instance)
    assert setup.output_for_node("create_webhook_tables") == [f"webhook_events_log.{log.STATUS_INDEX}", log.AUDIT_TABLE]
    assert ("webhook_events_log", log.STATUS_INDEX) in schema()
    again = wh.setup_webhook_tables.execute_in_process(resources=resources, instance=dagster_instance)
    assert again.output_for_node("create_webhook_tables") == []
