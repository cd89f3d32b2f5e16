"""`rusing-ops webhooks setup | status | reconcile [--dry-run] | retry evt_...`: the webhook jobs, run in process on the
configured instance (so each run shows in the UI), with their results printed for the terminal."""

from __future__ import annotations

import sys

from ..cli_support import execute, failure_message, print_json, print_table


def _execute(job_name: str, op: str, config: dict):
    # rusing/interactive: no op-level retry from a terminal (the answer comes after one bounded attempt);
    # rusing/dry-run: the Runs list tells a dry run apart
    tags = {"rusing/interactive": "true", **({"rusing/dry-run": "true"} if config.get("dry_run") else {})}
    return execute(job_name, {"ops": {op: {"config": config}}}, tags=tags)


def _failure_metadata(result) -> dict:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.user_failure_data:
            return event.step_failure_data.user_failure_data.metadata or {}
    return {}


def _fail(result) -> int:
    events = _failure_metadata(result).get("events")
    if events is not None and hasattr(events, "records"):  # the outcome table the UI shows
        print_table([r.data for r in events.records], ["event", "type", "outcome", "attempts", "error"])
    print(f"error: {failure_message(result)}", file=sys.stderr)
    return 1


def status(args) -> int:
    result = execute("report_webhook_processing_stats")
    if not result.success:
        return _fail(result)
    stats = result.asset_materializations_for_node("webhook_processing_stats")[0].metadata["stats"].value
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    if args.json:
        print_json({"ok": all(checks.values()), "run_id": result.run_id, "checks": checks, **stats})
    else:
        age = stats["oldest_unprocessed_age_s"]
        print_table([{"status": k, "events": v} for k, v in sorted(stats["by_status"].items())] or
                    [{"status": "(no events logged)", "events": 0}], ["status", "events"])
        print(f"\ntotal {stats['total']}, failed {stats['failed']}, dead-lettered {stats['dead_lettered']}, "
              f"stuck {stats['stuck']}, oldest unprocessed: {'none' if age is None else f'{age}s ago'}")
        if stats["recent_failures"]:
            print("\nrecent failures:")
            print_table(stats["recent_failures"], ["event_id", "type", "attempts", "dead_lettered", "idle_s", "last_error"])
        for name, passed in sorted(checks.items()):
            print(f"check {name}: {'passed' if passed else 'FAILED'}")
    return 0 if all(checks.values()) else 1


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
    if not result.success:
        return _fail(result)
    out = result.output_for_node("reconcile_events")
    if args.json:
        print_json({"ok": True, "run_id": result.run_id, **out})
    else:
        print_table(_outcome_rows(out["outcomes"]), ["event", "type", "outcome", "attempts", "error"])
        print(f"\n{out['summary']} (run {result.run_id})")
    return 0


def retry(args) -> int:
    result = _execute("retry_webhook_event", "retry_event", {**_redrive_config(args), "event_id": args.event_id})
    if not result.success:
        return _fail(result)
    out = result.output_for_node("retry_event")
    if args.json:
        print_json({"ok": True, "run_id": result.run_id, **out})
    else:
        print_table(_outcome_rows([out]), ["event", "type", "outcome", "attempts", "error"])
        if out["actions"]:
            print("actions: " + "; ".join(out["actions"]))
    return 0


def setup(args) -> int:
    result = execute("setup_webhook_tables")
    if not result.success:
        return _fail(result)
    created = result.output_for_node("create_webhook_tables")
    if args.json:
        print_json({"ok": True, "run_id": result.run_id, "created": created})
    else:
        print(f"created: {', '.join(created)}" if created else "nothing to do: the index and the audit table exist")
    return 0


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
