"""Dagster face of webhook reconciliation (runbook §4): sensor, jobs, daily sweep, stats asset and its checks, and
the one setup job that changes schema.

Thin: read Config, build a Redriver from the resources, call the library, turn the report into metadata or a
dg.Failure. The re-drive jobs change `webhook_events_log` rows only (through the app, plus the guarded
manual-retry reset), never schema, so they carry no DB_WRITE_TAGS; they run in the `stripe_webhooks` pool so runs
queue instead of hammering the app and Stripe together. Read paths (sensor, stats, checks) never write: the
status index and the audit table are created only by `setup_webhook_tables`, in the database-write pool.
Ops that call Stripe retry transient Stripe failures (no answer, 429, 5xx) with backoff and jitter; refusals
(bad key, invalid request) and everything else fail at once.
"""


from typing import Literal

import dagster as dg
from pydantic import Field

from ..core.errors import OpsError
from ..dagster_support import failure, max_runtime
from ..resources import (
    DB_WRITE_POOL,
    DB_WRITE_TAGS,
    AppResource,
    DatabaseResource,
    StripeResource,
)
from . import events_log, watch
from . import reconcile as rec
from . import stats as stats_mod
from . import sweep as sweep_mod
from .redeliver import Redriver

POOL = "stripe_webhooks"
STUCK_AFTER_MINUTES = events_log.STUCK_AFTER_S // 60
GROUP = "stripe_webhooks"
SETUP_JOB = "setup_webhook_tables"
# Transient Stripe failures only (every other failure these ops raise carries allow_retries=False): 3 retries
# after ~5, ~10, ~20 s (+/- jitter), so a Stripe blip or a rate limit does not page anybody. Each attempt's Stripe
# calls are bounded by core.stripe_api's timeouts.
STRIPE_RETRY = dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
# Set by the CLI: an operator at a terminal gets the first attempt's answer (bounded by the Stripe timeouts) instead
# of waiting out the backoff; scheduled, sensor and UI runs retry.
INTERACTIVE_TAG = "rusing/interactive"


def _may_retry(context, transient: bool) -> bool:
    return transient and context.run.tags.get(INTERACTIVE_TAG) != "true"


def _failure(context, exc: OpsError, **metadata) -> dg.Failure:
    """The one translation (dagster_support.failure), retryable only for a transient error outside the CLI."""
    error = failure(exc, **metadata)
    return dg.Failure(description=error.description, metadata=error.metadata,
                      allow_retries=_may_retry(context, bool(getattr(exc, "transient", False))))


class RedriveConfig(dg.Config):
    mode: Literal["redeliver", "stripe_retry"] = Field(
        default="redeliver", description="redeliver: fetch the event from Stripe and POST it to the app with a fresh "
        "Stripe-Signature; stripe_retry: ask Stripe to retry it (POST /v1/events/{id}/retry) to webhook_endpoint.")
    webhook_endpoint: str | None = Field(default=None, description="The app's endpoint id in Stripe (we_...), for stripe_retry.")
    stuck_after_minutes: int = Field(default=STUCK_AFTER_MINUTES, description="A row in `processing` this long is stuck.")
    dry_run: bool = Field(default=False, description="Fetch from Stripe and report what would be re-driven; deliver nothing.")


class ReconcileEventsConfig(RedriveConfig):
    event_ids: list[str] = Field(default_factory=list, description="Stripe event ids (evt_...) to re-drive.")
    all_failed: bool = Field(default=False, description="Also select every failed row (not dead-lettered) in webhook_events_log.")
    include_stuck: bool = Field(default=True, description="With all_failed, also rows stuck in processing.")
    max_events: int = Field(default=500, description="At most this many events per run.")
    concurrency: int = Field(default=4, description="Deliveries in flight at once (1-8).")
    rate_per_second: float = Field(default=10.0, description="At most this many deliveries started per second.")


class RetryEventConfig(RedriveConfig):
    event_id: str = Field(description="The Stripe event id (evt_...) to retry, as in the runbook's Manual Retry.")


class SweepEventsConfig(RedriveConfig):
    days: int = Field(default=7, description="List handled events with delivery_success=false created in the last N days (<= 30).")
    hours: int = Field(default=26, description="Also list every handled event of the last N hours.")
    max_events: int = Field(default=500, description="Re-drive at most this many missing events per run.")
    concurrency: int = Field(default=4, description="Deliveries in flight at once (1-8).")
    rate_per_second: float = Field(default=10.0, description="At most this many deliveries started per second.")


def _redriver(context, config: RedriveConfig, database: DatabaseResource, stripe: StripeResource,
              app: AppResource) -> Redriver:
    try:
        return Redriver(database.engine, database.parsed, stripe.get_client() if stripe.configured else None,
                        app.get_control().webhook_url, stripe.webhook_secret,
                        actor=f"dagster:{context.job_name}"[:64], run_id=context.run_id, mode=config.mode,
                        webhook_endpoint=config.webhook_endpoint, stuck_after_s=config.stuck_after_minutes * 60)
    except OpsError as exc:
        raise _failure(context, exc, database=database.parsed.masked()) from None


def _fail_on(context, report, what: str, next_step: str, metadata: dict):
    problems = report.problems
    if problems:
        ids = " ".join(o.event_id for o in problems[:20])
        # Retried only when Stripe was unavailable for every problem event (the retry re-drives idempotently).
        transient = all(o.outcome == "stripe_unavailable" for o in problems)
        raise dg.Failure(
            description=f"{what}: {len(problems)} event(s) did not end processed ({report.summary()}). Events: {ids}. "
                        f"Next: {next_step}", metadata=metadata, allow_retries=_may_retry(context, transient))


@dg.op(pool=POOL, retry_policy=STRIPE_RETRY,
       description="Re-drive the selected webhook events into the app and read back each outcome.")
def reconcile_events(context: dg.OpExecutionContext, config: ReconcileEventsConfig, database: DatabaseResource,
                     stripe: StripeResource, app: AppResource) -> dict:
    redriver = _redriver(context, config, database, stripe, app)
    try:
        report = rec.reconcile(redriver, event_ids=config.event_ids, all_failed=config.all_failed,
                               include_stuck=config.include_stuck, dry_run=config.dry_run, max_events=config.max_events,
                               concurrency=config.concurrency, rate_per_s=config.rate_per_second, log_fn=context.log.info)
    except OpsError as exc:
        raise _failure(context, exc, database=database.parsed.masked()) from None
    metadata = {"selected": len(report.selected), "outcomes": dg.MetadataValue.json(report.counts),
                "events": _outcomes_table(report.outcomes),
                "dry_run": report.dry_run, "database": database.parsed.masked()}
    context.add_output_metadata(metadata)
    context.log.info(report.summary())
    if not config.dry_run:
        _fail_on(context, report, "reconcile", "look at the table; for dead-lettered events `rusing-ops webhooks retry evt_...` "
                 "once the app's error is fixed; for needs_object_repair re-sync the object from the Stripe API", metadata)
    return {"summary": report.summary(), "outcomes": [o.as_dict() for o in report.outcomes]}


@dg.op(pool=POOL, retry_policy=STRIPE_RETRY,
       description="The runbook's manual retry: validate the evt_ id, reset attempts (never a processed row), re-drive, report.")
def retry_event(context: dg.OpExecutionContext, config: RetryEventConfig, database: DatabaseResource,
                stripe: StripeResource, app: AppResource) -> dict:
    try:
        events_log.validate_event_id(config.event_id)
    except OpsError as exc:
        raise _failure(context, exc) from None
    redriver = _redriver(context, config, database, stripe, app)
    try:
        outcome = rec.retry_event(redriver, config.event_id, dry_run=config.dry_run)
    except OpsError as exc:
        raise _failure(context, exc, event_id=config.event_id) from None
    metadata = {"event_id": config.event_id, "outcome": outcome.outcome, "attempts": outcome.attempts or 0,
                "http_status": outcome.http_status or 0, "actions": "; ".join(outcome.actions) or "none",
                "error": outcome.error or ""}
    context.add_output_metadata(metadata)
    if not outcome.ok:
        raise dg.Failure(description=f"retry of {config.event_id} ended {outcome.outcome}: {outcome.error}. Next: fix the "
                         "cause shown, then run `rusing-ops webhooks retry " + config.event_id + "` again.", metadata=metadata,
                         allow_retries=_may_retry(context, outcome.outcome == "stripe_unavailable"))
    context.log.info(f"{config.event_id}: {outcome.outcome}")
    return outcome.as_dict()


@dg.op(pool=POOL, retry_policy=STRIPE_RETRY,
       description="List Stripe's undelivered and recent handled events, diff with webhook_events_log, re-drive what it lacks.")
def sweep_events(context: dg.OpExecutionContext, config: SweepEventsConfig, database: DatabaseResource,
                 stripe: StripeResource, app: AppResource) -> dict:
    redriver = _redriver(context, config, database, stripe, app)
    try:
        report = sweep_mod.sweep(redriver, days=config.days, hours=config.hours, dry_run=config.dry_run,
                                 max_events=config.max_events, concurrency=config.concurrency,
                                 rate_per_s=config.rate_per_second, log_fn=context.log.info)
    except OpsError as exc:
        raise _failure(context, exc, database=database.parsed.masked()) from None
    metadata = {"undelivered_listed": report.undelivered, "recent_listed": report.recent,
                "in_log": dg.MetadataValue.json(report.in_log), "missing": len(report.missing),
                "events": _outcomes_table(report.outcomes),
                "dry_run": report.dry_run}
    context.add_output_metadata(metadata)
    context.log.info(report.summary())
    if not config.dry_run:
        _fail_on(context, report, "sweep", "see the table; `rusing-ops webhooks retry evt_...` per event", metadata)
    return {"summary": report.summary(), "missing": report.missing}


@dg.job(tags=max_runtime(1), description="Re-drive webhook events (named ids, or all failed/stuck rows) into the app: fetch each from Stripe, "
        "deliver signed, read the log row back. Triggered by the failed_webhook_events sensor, `rusing-ops webhooks "
        "reconcile`, or the UI; the daily stripe_event_sweep catches events the log never saw.",
        executor_def=dg.in_process_executor)
def reconcile_webhook_events():
    reconcile_events()


@dg.job(tags=max_runtime(0.25), description="Runbook manual retry of one event (evt_...): reset attempts as the runbook's SQL does (guarded), "
        "re-drive, report processed / failed again / not claimed. Run by `rusing-ops webhooks retry evt_...`.",
        executor_def=dg.in_process_executor)
def retry_webhook_event():
    retry_event()


@dg.job(tags=max_runtime(1), description="Daily Stripe-side sweep: handled events Stripe says were not delivered (last N days) and all handled "
        "events of the last N hours, diffed against webhook_events_log; missing ones are re-driven. Scheduled by "
        "stripe_event_sweep.", executor_def=dg.in_process_executor)
def sweep_stripe_events():
    sweep_events()


stripe_event_sweep = dg.ScheduleDefinition(
    name="stripe_event_sweep", job=sweep_stripe_events, cron_schedule="30 4 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 04:30 UTC: find handled Stripe events the app never logged (delivery_success=false over 7 days, "
                "everything of the last 26 hours) and re-drive them.")


@dg.sensor(job=reconcile_webhook_events, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Watches webhook_events_log for rows that turned failed or stuck in processing since its cursor "
                       "(keyset on status, updatedAt, id) and requests reconcile_webhook_events per batch of 50. Read "
                       f"only: without the status index ({SETUP_JOB} creates it) it reads the same rows by scanning.")
def failed_webhook_events(context: dg.SensorEvaluationContext, database: DatabaseResource, stripe: StripeResource,
                          app: AppResource):
    missing = [name for name, value in (("STRIPE_SECRET_KEY", stripe.api_key), ("STRIPE_WEBHOOK_SECRET",
               stripe.webhook_secret), ("APP_BASE_URL", app.base_url)) if not value]
    if missing:  # the cursor stays put: the rows are picked up once re-delivery is possible
        return dg.SkipReason(f"Re-delivery is not configured ({', '.join(missing)} not set); webhook_events_log was "
                             "not read and the cursor did not move.")
    plan = watch.plan_tick(database.engine, database.parsed, context.cursor, stuck_after_s=STUCK_AFTER_MINUTES * 60)
    if plan.no_table:
        return dg.SkipReason(plan.skip_reason(watch.Cursor.decode(context.cursor)))
    note = _index_note(plan.missing)
    if note:
        context.log.warning(note)
    for row in plan.dead_lettered:
        context.log.warning(f"{row.stripe_event_id} ({row.event_type}) is dead-lettered after {row.attempts} attempts "
                            f"(its run will fail and alert): `rusing-ops webhooks retry {row.stripe_event_id}` once "
                            "the cause is fixed")
    if not plan.batches:
        context.update_cursor(plan.cursor.encode())
        return dg.SkipReason(plan.skip_reason(watch.Cursor.decode(context.cursor)) + (f" {note}" if note else ""))
    requests = [dg.RunRequest(run_key=plan.run_key(batch), tags={"rusing/webhook-events": str(len(batch))},
                              run_config={"ops": {"reconcile_events": {"config": {
                                  "event_ids": [r.stripe_event_id for r in batch]}}}})
                for batch in plan.batches]
    return dg.SensorResult(run_requests=requests, cursor=plan.cursor.encode())


def _index_note(missing: list[str]) -> str | None:
    if "index" not in missing:
        return None
    return (f"The status index {events_log.STATUS_INDEX} on {events_log.TABLE} is missing, so this read scanned the "
            f"table (correct, slower on a large log). Run the {SETUP_JOB} job once to create it.")


def _table(rows: list[dict], columns: list[str]) -> dg.MetadataValue:
    """Rows shown to operators as a Dagster table (typed columns, sortable in the UI)."""
    types = {bool: "bool", int: "int", float: "float"}
    schema = dg.TableSchema(columns=[dg.TableColumn(c, types.get(type(rows[0].get(c)), "string") if rows else "string")
                                     for c in columns])
    records = [dg.TableRecord({c: ("" if r.get(c) is None else r.get(c)) for c in columns}) for r in rows]
    return dg.MetadataValue.table(records, schema=schema)


def _outcomes_table(outcomes) -> dg.MetadataValue:
    rows = [{"event": o.event_id, "type": o.event_type or "", "outcome": o.outcome,
             "attempts": -1 if o.attempts is None else o.attempts, "http": o.http_status or 0,
             "error": (o.error or "")[:200]} for o in outcomes[:200]]
    return _table(rows, ["event", "type", "outcome", "attempts", "http", "error"])


@dg.asset(group_name=GROUP, kinds={"mysql"},
          description="Webhook processing statistics (runbook's Admin Stability view): totals by status and type, failed, "
          "dead-lettered and stuck counts, oldest unprocessed age, recent failures. Read only.")
def webhook_processing_stats(context: dg.AssetExecutionContext, database: DatabaseResource) -> dg.MaterializeResult:
    with database.connect() as conn:
        missing = events_log.missing_schema(conn)
        if "table" in missing:  # nothing logged yet: all zeros, and said so
            s = stats_mod.WebhookStats(0, {}, {}, 0, 0, 0, None, stuck_after_s=STUCK_AFTER_MINUTES * 60)
        else:
            s = stats_mod.collect(conn, stuck_after_s=STUCK_AFTER_MINUTES * 60, indexed="index" not in missing)
    note = (f"{events_log.TABLE} does not exist yet (the app creates it on its first webhook)." if "table" in missing
            else _index_note(missing))
    if note:
        context.log.warning(note)
    by_type = [{"type": t, **{k: c.get(k, 0) for k in ("processed", "processing", "failed")}}
               for t, c in sorted(s.by_type.items())]
    return dg.MaterializeResult(metadata={
        "dagster/row_count": s.total, "total": s.total, "failed": s.failed, "dead_lettered": s.dead_lettered,
        "stuck": s.stuck,
        "oldest_unprocessed_age_s": s.oldest_unprocessed_age_s if s.oldest_unprocessed_age_s is not None else 0,
        "by_status": dg.MetadataValue.json(s.by_status),
        "by_type": _table(by_type, ["type", "processed", "processing", "failed"]),
        "recent_failures": _table(s.recent_failures, ["event_id", "type", "attempts", "dead_lettered", "idle_s",
                                                      "last_error"]),
        "status_index": ("no table yet" if "table" in missing else "present" if "index" not in missing
                         else f"missing: run the {SETUP_JOB} job to create it"),
        "stats": dg.MetadataValue.json(s.as_dict())})


def _counts(database: DatabaseResource):
    with database.connect() as conn:
        missing = events_log.missing_schema(conn)
        if "table" in missing:
            return None, [], []
        indexed = "index" not in missing
        counts = events_log.count_status(conn, stuck_after_s=STUCK_AFTER_MINUTES * 60, indexed=indexed)
        dead = events_log.list_dead_lettered(conn, limit=20)
        stuck = events_log.list_stuck(conn, stuck_after_s=STUCK_AFTER_MINUTES * 60, limit=20, indexed=indexed)
    return counts, dead, stuck


def _no_table_result() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN,
                               description=f"{events_log.TABLE} does not exist yet (the app creates it on its first "
                                           "webhook): nothing was checked.")


@dg.asset_check(asset=webhook_processing_stats, description="No event has failed 3 times (dead-lettered).")
def no_dead_lettered_events(database: DatabaseResource) -> dg.AssetCheckResult:
    counts, rows, _ = _counts(database)
    if counts is None:
        return _no_table_result()
    count = counts["dead_lettered"]
    return dg.AssetCheckResult(
        passed=count == 0, severity=dg.AssetCheckSeverity.ERROR,
        description=None if not count else f"{count} dead-lettered event(s); fix the cause, then `rusing-ops webhooks retry evt_...`",
        metadata={"dead_lettered": count, "events": ", ".join(r.stripe_event_id for r in rows) or "none"})


@dg.asset_check(asset=webhook_processing_stats, description=f"No event stuck in processing for more than {STUCK_AFTER_MINUTES} minutes.")
def no_stuck_events(database: DatabaseResource) -> dg.AssetCheckResult:
    counts, _, stuck = _counts(database)
    if counts is None:
        return _no_table_result()
    count = counts["stuck"]
    return dg.AssetCheckResult(
        passed=count == 0, severity=dg.AssetCheckSeverity.ERROR,
        description=None if not count else f"{count} event(s) stuck in processing; `rusing-ops webhooks reconcile` releases and re-drives them",
        metadata={"stuck": count, "events": ", ".join(r.stripe_event_id for r in stuck) or "none"})


report_webhook_processing_stats = dg.define_asset_job(
    "report_webhook_processing_stats", selection=dg.AssetSelection.assets(webhook_processing_stats),
    tags=max_runtime(10 / 60),
    description="Materialize webhook_processing_stats and run its checks (dead-lettered, stuck). Run by `rusing-ops webhooks status`.")


@dg.op(name="create_webhook_tables", pool=DB_WRITE_POOL,
       description=f"Create what is missing: {events_log.TABLE} as the app would, the index "
                   f"{events_log.STATUS_INDEX} (status, updatedAt), and {events_log.AUDIT_TABLE}.")
def create_webhook_tables(context: dg.OpExecutionContext, database: DatabaseResource) -> list[str]:
    try:
        created = events_log.ensure(database.engine, database.parsed, lock_timeout_s=database.lock_timeout_seconds)
    except OpsError as exc:
        raise failure(exc, database=database.parsed.masked()) from None
    context.log.info(f"created: {', '.join(created)}" if created else "nothing to do: everything exists")
    context.add_output_metadata({"created": ", ".join(created) or "nothing (all present)",
                                 "database": database.parsed.masked()})
    return created


@dg.job(name=SETUP_JOB, tags={**DB_WRITE_TAGS, **max_runtime(1)}, executor_def=dg.in_process_executor,
        description=f"One-time setup of the webhook tooling, the only schema change it makes: the non-unique index "
        f"{events_log.STATUS_INDEX} (status, updatedAt) on the app's {events_log.TABLE}, which the sensor's keyset "
        f"reads need at scale (the app indexes createdAt only), and this tool's audit table {events_log.AUDIT_TABLE}. "
        "Creates only what is missing, under the database write lock; tell the app team (they may add the index to "
        "their Drizzle schema). Read paths work without the index and say so.")
def setup_webhook_tables():
    create_webhook_tables()


defs = dg.Definitions(
    jobs=[reconcile_webhook_events, retry_webhook_event, sweep_stripe_events, report_webhook_processing_stats,
          setup_webhook_tables],
    schedules=[stripe_event_sweep], sensors=[failed_webhook_events], assets=[webhook_processing_stats],
    asset_checks=[no_dead_lettered_events, no_stuck_events])
