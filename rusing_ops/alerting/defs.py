"""Dagster face of alerting: a run-failure sensor over every job of this code location."""

import os

import dagster as dg

from ..core.dburl import scrub_secret
from ..resources import AlertResource
from .notify import FailureAlert, first_error_line, known_secrets, send_alert


def _failed_step(context: dg.RunFailureSensorContext) -> tuple[str | None, str]:
    for event in context.get_step_failure_events():
        error = event.step_failure_data.error
        return event.step_key, first_error_line(error.message if error else "")
    message = context.failure_event.message or ""
    return None, first_error_line(message)


@dg.run_failure_sensor(
    name="alert_on_run_failure",
    description="Posts every failed run (job, failing step, error; never a secret) to Slack when SLACK_BOT_TOKEN "
    "and RUSING_SLACK_CHANNEL are set, else to RUSING_ALERT_WEBHOOK_URL, else only logs it.",
    monitor_all_code_locations=False,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)
def alert_on_run_failure(context: dg.RunFailureSensorContext, alerts: AlertResource):
    step, error = _failed_step(context)
    alert = FailureAlert(job_name=context.dagster_run.job_name, run_id=context.dagster_run.run_id, step_key=step,
                         error=error, ui_url=os.environ.get("DAGSTER_WEBSERVER_URL"))
    slack = None
    if alerts.slack_token and alerts.slack_channel:
        from dagster_slack import SlackResource

        slack = SlackResource(token=alerts.slack_token).get_client()
        if alerts.slack_api_base:
            slack.base_url = alerts.slack_api_base.rstrip("/") + "/"
    try:
        where = send_alert(alert, slack_client=slack, slack_channel=alerts.slack_channel, webhook_url=alerts.webhook_url)
    except Exception as exc:  # an alert that cannot be sent must still be visible in the sensor's log
        context.log.error(f"Could not send the alert ({type(exc).__name__}: "
                          f"{scrub_secret(str(exc), *known_secrets())[:200]}); alert text follows.\n{alert.text()}")
        raise
    context.log.info(f"Alert sent ({where}): {alert.text()}")


@dg.sensor(
    name="free_slots_of_dead_cli_runs",
    description="`rusing-ops` commands run their job in process, which run monitoring never sees: marks failed every "
    "unfinished CLI run whose process on this host is gone (kill -9, crash) and frees its app_db_write slot, so a "
    "crashed command never wedges later writes or the run queue (alert_on_run_failure then reports it).",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
)
def free_slots_of_dead_cli_runs(context: dg.SensorEvaluationContext):
    from ..cli_support import free_dead_cli_runs

    freed = free_dead_cli_runs(context.instance)
    for line in freed:
        context.log.warning(line)
    return dg.SkipReason("; ".join(freed) or "no CLI run died unfinished")


defs = dg.Definitions(sensors=[alert_on_run_failure, free_slots_of_dead_cli_runs])
