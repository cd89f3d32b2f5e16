"""The run-failure sensor posts job, step and error to a real HTTP endpoint (generic webhook or Slack's API shape)."""

import json

import dagster as dg
import pytest

from rusing_ops.alerting.defs import alert_on_run_failure
from rusing_ops.resources import AlertResource
from rusing_ops_tests.conftest import JsonServer

SECRET = "sk_live_never_in_alerts_42"


@pytest.fixture
def receiver():
    """A local endpoint recording posts: a generic webhook, or Slack's chat.postMessage (answers like Slack)."""
    server = JsonServer(lambda method, path, headers, body: (200, {"ok": True, "channel": "C1", "ts": "1.2"}))
    yield server
    server.close()


@dg.op
def charge_ledger():
    raise dg.Failure(description=f"ledger write refused for payment pi_123 (key {SECRET})")


@dg.job
def nightly_ledger_job():
    charge_ledger()


def fire_sensor(instance, alerts: AlertResource):
    result = nightly_ledger_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
    context = dg.build_run_status_sensor_context(
        sensor_name="alert_on_run_failure", dagster_instance=instance, dagster_run=run, dagster_event=failure,
        resources={"alerts": alerts},
    ).for_run_failure()
    alert_on_run_failure(context)
    return result.run_id


def test_generic_webhook_gets_job_step_and_error_without_secret(dagster_instance, receiver, monkeypatch):
    monkeypatch.setenv("STRIPE_SECRET_KEY", SECRET)
    run_id = fire_sensor(dagster_instance, AlertResource(webhook_url=receiver.base_url + "/hook"))
    assert len(receiver.calls) == 1
    _, path, _, body = receiver.calls[0]
    payload = json.loads(body)
    assert path == "/hook"
    assert payload["job"] == "nightly_ledger_job" and payload["step"] == "charge_ledger" and payload["run_id"] == run_id
    assert "job `nightly_ledger_job` failed in step `charge_ledger`" in payload["text"]
    assert "ledger write refused for payment pi_123 (key ***)" in payload["text"]
    assert SECRET not in body


def test_slack_is_preferred_when_token_and_channel_are_set(dagster_instance, receiver, monkeypatch):
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test-token-777")
    fire_sensor(dagster_instance, AlertResource(slack_token="xoxb-test-token-777", slack_channel="#ops-alerts",
                                                slack_api_base=receiver.base_url + "/api/", webhook_url=receiver.base_url + "/hook"))
    assert len(receiver.calls) == 1
    _, path, headers, body = receiver.calls[0]
    assert path == "/api/chat.postMessage" and headers["Authorization"] == "Bearer xoxb-test-token-777"
    assert "ops-alerts" in body and "nightly_ledger_job" in body and "xoxb-test-token-777" not in body


def test_without_any_destination_it_only_logs(dagster_instance, receiver):
    fire_sensor(dagster_instance, AlertResource())
    assert receiver.calls == []


def _sensor_on(instance, result, alerts: AlertResource):
    run = instance.get_run_by_id(result.run_id)
    failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
    context = dg.build_run_status_sensor_context(
        sensor_name="alert_on_run_failure", dagster_instance=instance, dagster_run=run, dagster_event=failure,
        resources={"alerts": alerts},
    ).for_run_failure()
    alert_on_run_failure(context)


@dg.op
def restore_with_wrong_confirm():
    from rusing_ops.core.errors import ConfirmMismatch, require_confirm
    from rusing_ops.dagster_support import failure

    try:
        require_confirm("prod", "rusing", "nothing was restored")
    except ConfirmMismatch as exc:
        raise failure(exc) from None


@dg.job
def refused_job():
    restore_with_wrong_confirm()


def test_an_operator_refusal_is_not_alerted_as_an_incident(dagster_instance, receiver):
    result = refused_job.execute_in_process(instance=dagster_instance, raise_on_error=False)
    assert not result.success
    _sensor_on(dagster_instance, result, AlertResource(webhook_url=receiver.base_url + "/hook"))
    assert receiver.calls == []
    # a real failure of the same shape still alerts (the check is the refusal mark, not the job)
    fire_sensor(dagster_instance, AlertResource(webhook_url=receiver.base_url + "/hook"))
    assert len(receiver.calls) == 1


@dg.asset
def nightly_report():
    raise dg.Failure(description="report source unavailable")


def test_a_run_started_from_the_asset_page_is_named_by_its_asset(dagster_instance, receiver):
    defs = dg.Definitions(assets=[nightly_report])
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.name.startswith("__ASSET_JOB")  # what the UI's Materialize button launches
    result = job.execute_in_process(instance=dagster_instance, asset_selection=[nightly_report.key],
                                    raise_on_error=False)
    _sensor_on(dagster_instance, result, AlertResource(webhook_url=receiver.base_url + "/hook"))
    payload = json.loads(receiver.calls[0][3])
    assert payload["text"].startswith(":rotating_light: rusing_ops run of `nightly_report` failed in step "
                                      "`nightly_report`.\nError: report source unavailable")
    assert payload["job"] == "nightly_report" and "__ASSET_JOB" not in payload["text"]


@dg.op
def load_ledger():
    rows = {"pi_1": None}
    raise ValueError(f"ledger row pi_1 has no currency ({len(rows)} row read)")


@dg.job
def ledger_load_job():
    load_ledger()


def test_a_plain_exception_is_alerted_by_its_own_message_not_dagsters_wrapper(dagster_instance, receiver):
    """An op that lets a plain exception through: Dagster wraps it ("Error occurred while executing op ..."); the
    alert names the cause."""
    result = ledger_load_job.execute_in_process(instance=dagster_instance, raise_on_error=False)
    [failed] = [e for e in result.all_events if e.is_step_failure]
    assert failed.step_failure_data.error.message.startswith("dagster._core.errors.DagsterExecutionStepExecutionError")
    _sensor_on(dagster_instance, result, AlertResource(webhook_url=receiver.base_url + "/hook"))
    text = json.loads(receiver.calls[0][3])["text"]
    assert "Error: ValueError: ledger row pi_1 has no currency (1 row read)" in text, text
    assert "Error occurred while executing" not in text
