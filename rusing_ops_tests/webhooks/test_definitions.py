"""What the webhooks and payouts code locations expose, each described for the operator reading the UI."""

import dagster as dg

from rusing_ops.resources import default_resources
from rusing_ops.webhooks import defs as wh
from rusing_ops.webhooks.payouts_defs import defs as payouts_defs


def test_names_crons_and_descriptions():
    repo = dg.Definitions.merge(wh.defs, dg.Definitions(resources=default_resources())).get_repository_def()
    jobs = {j.name: j for j in repo.get_all_jobs() if not j.name.startswith("__")}
    assert set(jobs) == {"reconcile_webhook_events", "retry_webhook_event", "sweep_stripe_events",
                         "report_webhook_processing_stats", "setup_webhook_tables"}
    assert {s.name: (s.cron_schedule, s.job_name) for s in repo.schedule_defs} == {
        "stripe_event_sweep": ("30 4 * * *", "sweep_stripe_events")}
    assert {s.name: s.job_name for s in repo.sensor_defs} == {"failed_webhook_events": "reconcile_webhook_events"}
    graph = repo.asset_graph
    assert [k.to_user_string() for k in graph.get_all_asset_keys()] == ["webhook_processing_stats"]
    assert {k.name for k in graph.asset_check_keys} == {"no_dead_lettered_events", "no_stuck_events"}
    assert all(j.description for j in jobs.values())
    assert all(s.description for s in [*repo.schedule_defs, *repo.sensor_defs])
    payouts = dg.Definitions.merge(payouts_defs, dg.Definitions(resources=default_resources()))
    assert [j.name for j in payouts.get_repository_def().get_all_jobs() if not j.name.startswith("__")] == \
        ["check_coach_accounts"]


def test_every_config_field_is_described():
    for config in (wh.ReconcileEventsConfig, wh.RetryEventConfig, wh.SweepEventsConfig):
        missing = [name for name, field in config.model_fields.items() if not field.description]
        assert missing == [], config.__name__


def test_redrive_ops_share_a_pool_and_write_no_schema_tags():
    from rusing_ops.resources import DB_WRITE_POOL, DB_WRITE_TAG_KEY

    for job in (wh.reconcile_webhook_events, wh.retry_webhook_event, wh.sweep_stripe_events):
        assert {n.definition.pool for n in job.graph.nodes} == {wh.POOL}
        assert DB_WRITE_TAG_KEY not in job.tags
    # the only schema change (index + audit table) is the setup job's, in the database-write pool and queue
    assert {n.definition.pool for n in wh.setup_webhook_tables.graph.nodes} == {DB_WRITE_POOL}
    assert wh.setup_webhook_tables.tags[DB_WRITE_TAG_KEY] and wh.setup_webhook_tables.tags["dagster/max_runtime"]


def test_stripe_ops_retry_with_backoff_and_jitter():
    from rusing_ops.webhooks.payouts_defs import check_accounts

    for op in (wh.reconcile_events, wh.retry_event, wh.sweep_events, check_accounts):
        policy = op.retry_policy
        assert (policy.max_retries, policy.backoff, policy.jitter) == (3, dg.Backoff.EXPONENTIAL, dg.Jitter.PLUS_MINUS)
        assert policy.delay > 0


def test_stats_asset_sits_in_the_webhooks_group():
    assert wh.webhook_processing_stats.group_names_by_key[wh.webhook_processing_stats.key] == "stripe_webhooks"


def test_loads_inside_the_code_location():
    from rusing_ops.definitions import defs

    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("retry_webhook_event").description.startswith("Runbook manual retry")
