"""Dagster face of the health checks: three asset checks run by job `health_check` every 5 minutes."""

import dagster as dg

from ..dagster_support import max_runtime
from ..resources import AppResource, DatabaseResource, StripeResource
from . import checks

RUSING_APP = dg.AssetSpec("rusing_app", description="The live RusingAcademy application (APP_BASE_URL).", group_name="health", kinds={"nodejs"})
APP_DATABASE = dg.AssetSpec("app_database", description="The application database server (DATABASE_URL).", group_name="health", kinds={"mysql"})
STRIPE_ACCOUNT = dg.AssetSpec("stripe_account", description="The Stripe account the app takes payments with (STRIPE_SECRET_KEY).", group_name="health", kinds={"stripe"})

CHECK_SPECS = [
    dg.AssetCheckSpec("app_health_endpoint", asset=RUSING_APP.key,
                      description="GET /api/health answers 200 with status=ok, db=connected, stripe=configured."),
    dg.AssetCheckSpec("database_reachable", asset=APP_DATABASE.key,
                      description="The database accepts a connection and answers SELECT VERSION(); latency over 500 ms warns."),
    dg.AssetCheckSpec("stripe_reachable", asset=STRIPE_ACCOUNT.key,
                      description="The Stripe key is accepted and the app's webhook endpoint is registered and enabled."),
]


def _result(group: checks.CheckGroup, spec: dg.AssetCheckSpec) -> dg.AssetCheckResult:
    metadata = {
        "summary": group.summary(),
        "configured": group.configured,
        "checks": dg.MetadataValue.table(
            [dg.TableRecord({"check": r.check, "status": r.status, "detail": r.detail}) for r in group.rows],
            schema=dg.TableSchema(columns=[dg.TableColumn("check"), dg.TableColumn("status"), dg.TableColumn("detail")])),
        "rows": dg.MetadataValue.json(checks.rows_of([group])),
        **{k: dg.MetadataValue.float(v) for k, v in group.metrics.items()},
    }
    # Not configured or a warning is not green: passed=False with WARN severity (yellow in the UI, the reason in the
    # description); only a failure is ERROR (and fails the run, which alerts).
    return dg.AssetCheckResult(asset_key=spec.asset_key, check_name=spec.name, passed=group.passed,
                               severity=dg.AssetCheckSeverity.ERROR if group.failed else dg.AssetCheckSeverity.WARN,
                               metadata=metadata, description=group.summary())


@dg.multi_asset_check(specs=CHECK_SPECS, can_subset=True,
                       description="Runbook §5: app, database and Stripe health (each check can be executed alone).")
def health_checks(context: dg.AssetCheckExecutionContext, database: DatabaseResource, app: AppResource,
                  stripe: StripeResource):
    control = app.get_control()
    selected = context.selected_asset_check_keys
    run = {
        "app_health_endpoint": lambda: checks.check_app(control),
        "database_reachable": lambda: checks.check_database(database.ping),
        "stripe_reachable": lambda: checks.check_stripe(stripe.get_client() if stripe.configured else None,
                                                        stripe.mode, control.webhook_url),
    }
    groups = [(spec, run[spec.name]()) for spec in CHECK_SPECS if spec.key in selected]
    for _, group in groups:
        for row in group.rows:
            (context.log.error if row.failed else context.log.info)(f"{row.check}: {row.status} - {row.detail}")
    for spec, group in groups:
        yield _result(group, spec)
    failed = [g for _, g in groups if g.failed]
    if failed:
        # Fail the run too, so the run-failure alert fires (a failed check alone alerts nobody).
        raise dg.Failure(description="Health check failed: " + " | ".join(f"{g.name}: {g.summary()}" for g in failed),
                         metadata={"failed": ", ".join(g.name for g in failed)}, allow_retries=False)


health_check = dg.define_asset_job(
    "health_check",
    tags=max_runtime(4 / 60),  # every 5 minutes: a hung check is cancelled before the next one starts
    selection=dg.AssetSelection.checks(*[s.key for s in CHECK_SPECS]),
    description="Runbook §5: checks the app's /api/health (each field), database connectivity and latency, and the "
    "Stripe key and webhook endpoint. Runs every 5 minutes; a failure fails the run, which alerts.",
)

health_check_every_5_minutes = dg.ScheduleDefinition(
    name="health_check_every_5_minutes",
    job=health_check,
    cron_schedule="*/5 * * * *",
    execution_timezone="UTC",
    description="Runs health_check every 5 minutes.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

defs = dg.Definitions(
    assets=[RUSING_APP, APP_DATABASE, STRIPE_ACCOUNT],
    asset_checks=[health_checks],
    jobs=[health_check],
    schedules=[health_check_every_5_minutes],
)
