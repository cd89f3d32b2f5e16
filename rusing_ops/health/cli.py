"""`rusing-ops health`: run the health_check job in process and print its table; non-zero exit on failure."""

from __future__ import annotations

import sys

from ..cli_support import execute, failure_message, print_json, print_table


def _rows(result) -> list[dict]:
    return [row for evaluation in result.get_asset_check_evaluations() for row in evaluation.metadata["rows"].value]


def run(args) -> int:
    result = execute("health_check")
    rows = _rows(result)
    if args.json:
        print_json({"ok": result.success, "run_id": result.run_id, "checks": rows})
    else:
        print_table(rows, ["check", "status", "detail"])
    if not result.success:
        if not rows:
            print(f"error: {failure_message(result)}", file=sys.stderr)
        else:
            print(f"\nhealth check FAILED (run {result.run_id})", file=sys.stderr)
        return 1
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("health", help="check the app, the database and Stripe (runbook §5)",
                              description="Runs the health_check job in process; exits 1 when any check fails.")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)
