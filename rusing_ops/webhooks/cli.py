"""`rusing-ops webhooks setup | status | reconcile [--dry-run] | retry evt_...`: the webhook jobs, run in process on the
configured instance (so each run shows in the UI), with their results printed for the terminal."""

from __future__ import annotations

from ..cli_support import execute, report, run_failed, table_lines

OUTCOME_COLUMNS = ["event", "type", "outcome", "attempts", "error"]


def _execute(job_name: str, op: str, config: dict):
    """Run a re-drive job; its result, or :class:`CommandFailed` with the outcome table the UI shows."""
    # rusing/interactive: no op-level retry from a terminal (the answer comes after one bounded attempt);
    # rusing/dry-run: the Runs list tells a dry run apart
    tags = {"rusing/interactive": "true", **({"rusing/dry-run": "true"} if config.get("dry_run") else {})}
    result = execute(job_name, {"ops": {op: {"config": config}}}, tags=tags)
    if not result.success:
        raise _failed(result)
    return result


def _failure_metadata(result) -> dict:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.user_failure_data:
            return event.step_failure_data.user_failure_data.metadata or {}
    return {}


def _failed(result):
    events = _failure_metadata(result).get("events")
    rows = [r.data for r in events.records] if events is not None and hasattr(events, "records") else []
    return run_failed(result, data={"events": rows} if rows else None,
                      lines=table_lines(rows, OUTCOME_COLUMNS) if rows else ())


def status(args) -> int:
    result = execute("report_webhook_processing_stats")
    if not result.success:
        raise _failed(result)
    stats = result.asset_materializations_for_node("webhook_processing_stats")[0].metadata["stats"].value
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    age = stats["oldest_unprocessed_age_s"]
    lines = table_lines([{"status": k, "events": v} for k, v in sorted(stats["by_status"].items())] or
                        [{"status": "(no events logged)", "events": 0}], ["status", "events"])
    lines += ["", (f"total {stats['total']}, failed {stats['failed']}, dead-lettered {stats['dead_lettered']}, "
              f"stuck {stats['stuck']}, oldest unprocessed: {'none' if age is None else f'{age}s ago'}")]
    if stats["recent_failures"]:
        lines += ["", "recent failures:", *table_lines(stats["recent_failures"], [
            "event_id", "type", "attempts", "dead_lettered", "idle_s", "last_error"])]
    lines += [f"check {name}: {'passed' if passed else 'FAILED'}" for name, passed in sorted(checks.items())]
    return report(args, {"checks": checks, **stats}, lines, run_id=result.run_id, ok=all(checks.values()))


def _outcome_rows(outcomes: list[dict]) -> list[dict]:
    return [{"event": o["event_id"], "type": o["event_type"] or "", "outcome": o["outcome"],
             "attempts": "" if o["attempts"] is None else o["attempts"], "error": (o["error"] or "")[:120]}
            for o in outcomes]


def _redrive_config(args) -> dict:
    config = {"dry_run": args.dry_run}
    if args.via_stripe:
        config.update(mode="stripe_retry", webhook_endpoint=args.via_stripe)
    return config


def reconcile(args) -> int:
    config = {**_redrive_config(args), "event_ids": args.event_id or [], "all_failed": not args.event_id}
    result = _execute("reconcile_webhook_events", "reconcile_events", config)
    out = result.output_for_node("reconcile_events")
    return report(args, out, [*table_lines(_outcome_rows(out["outcomes"]), OUTCOME_COLUMNS), "",
                              f"{out['summary']} (run {result.run_id})"], run_id=result.run_id)


def retry(args) -> int:
    result = _execute("retry_webhook_event", "retry_event", {**_redrive_config(args), "event_id": args.event_id})
    out = result.output_for_node("retry_event")
    return report(args, out, [*table_lines(_outcome_rows([out]), OUTCOME_COLUMNS),
                              *(["actions: " + "; ".join(out["actions"])] if out["actions"] else [])],
                  run_id=result.run_id)


def setup(args) -> int:
    result = execute("setup_webhook_tables")
    if not result.success:
        raise run_failed(result)
    created = result.output_for_node("create_webhook_tables")
    return report(args, {"created": created}, [f"created: {', '.join(created)}" if created else
                                               "nothing to do: the index and the audit table exist"],
                  run_id=result.run_id)


def register(subparsers) -> None:
    p = subparsers.add_parser("setup", help="create the status index on webhook_events_log and the audit table (once)",
                              description="Runs setup_webhook_tables (database-write pool): the only schema change the "
                                          "webhook tooling makes. Creates only what is missing.")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=setup)

    p = subparsers.add_parser("status", help="webhook_events_log totals, failures, dead-lettered and stuck events",
                              description="Materializes webhook_processing_stats; exits 1 when an event is dead-lettered or stuck.")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=status)

    common = [("--dry-run", {"action": "store_true", "help": "fetch from Stripe and show what would happen; deliver nothing"}),
              ("--via-stripe", {"metavar": "WE_ID", "help": "ask Stripe to retry to this webhook endpoint (we_...) instead of "
                                                          "re-delivering signed from here"}),
              ("--json", {"action": "store_true", "help": "print the result as JSON"})]
    p = subparsers.add_parser("reconcile", help="re-drive every failed or stuck event (or the named ones) into the app",
                              description="Runs reconcile_webhook_events: fetch each event from Stripe, deliver it signed, "
                                          "read the log row back. Exits 1 when any event did not end processed.")
    p.add_argument("--event-id", action="append", metavar="EVT_ID", help="only this event (repeatable)")
    for flag, kwargs in common:
        p.add_argument(flag, **kwargs)
    p.set_defaults(func=reconcile)

    p = subparsers.add_parser("retry", help="the runbook's manual retry of one event (resets attempts, re-drives)",
                              description="Runs retry_webhook_event. Exits 1 unless the event ends processed.")
    p.add_argument("event_id", metavar="evt_...", help="the Stripe event id")
    for flag, kwargs in common:
        p.add_argument(flag, **kwargs)
    p.set_defaults(func=retry)
