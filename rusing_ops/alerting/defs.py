"""Dagster face of alerting: a run-failure sensor over every job of this code location.

An operator's refusal (dagster_support.refusal: a mistyped ``confirm``, a partition that is not a backup) is
not an incident: it is logged by the sensor and not sent. A run started from an asset's page (Dagster's
``__ASSET_JOB``) is named by its assets and checks, the names the operator clicked.
"""


import dagster as dg

from ..core.dburl import scrub_secret
from ..dagster_support import failure_text, is_refusal
from ..resources import AlertResource
from .notify import FailureAlert, first_error_line, known_secrets, send_alert


def _failed_step(context: dg.RunFailureSensorContext) -> tuple[str | None, str, bool]:
    """(step key, first line of the step's own error, whether every failed step was an operator refusal)."""
    events = context.get_step_failure_events()
    refusal = bool(events) and all(is_refusal(e.step_failure_data) for e in events)
    for event in events:
        # the op's own text: a Failure's description, else the cause under Dagster's wrappers ("Error occurred
        # while executing op ...", "Exceeded max_retries")
        return event.step_key, first_error_line(failure_text(event.step_failure_data)), refusal
    return None, first_error_line(context.failure_event.message or ""), False


def run_assets(run: dg.DagsterRun) -> tuple[str, ...]:
    """For a run started from an asset page (Dagster's ``__ASSET_JOB``), the assets and checks it ran; else ()."""
    if not run.job_name.startswith("__ASSET_JOB"):
        return ()
    names = sorted(k.to_user_string() for k in (run.asset_selection or ()))
    names += sorted(f"{k.asset_key.to_user_string()} check {k.name}" for k in (run.asset_check_selection or ()))
    return tuple(names) or ("an asset",)


@dg.run_failure_sensor(
    name="alert_on_run_failure",
    description="Posts every failed run (job, failing step, error; never a secret) to Slack when SLACK_BOT_TOKEN "
    "and RUSING_SLACK_CHANNEL are set, else to RUSING_ALERT_WEBHOOK_URL, else only logs it. An operator's refusal "
    "(a mistyped confirm) is logged, not alerted; runs from an asset page are named by their assets.",
    monitor_all_code_locations=False,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)
def alert_on_run_failure(context: dg.RunFailureSensorContext, alerts: AlertResource):
    step, error, refusal = _failed_step(context)
    run = context.dagster_run
    assets = run_assets(run)
    alert = FailureAlert(job_name=", ".join(assets) if assets else run.job_name, run_id=run.run_id, step_key=step,
                         error=error, ui_url=alerts.ui_url, assets=assets)
    if refusal:
        context.log.info(f"Not alerted (an operator's refusal, nothing was changed): {alert.text()}")
        return
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
