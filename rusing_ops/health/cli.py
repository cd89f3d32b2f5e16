"""`rusing-ops health`: run the health_check job in process and print its table; non-zero exit on failure."""

from __future__ import annotations

import sys

from ..cli_support import execute, report, run_failed, table_lines


def run(args) -> int:
    result = execute("health_check")
    rows = [row for evaluation in result.get_asset_check_evaluations() for row in evaluation.metadata["rows"].value]
    if not result.success and not rows:  # the job failed before any check ran
        raise run_failed(result, data={"checks": []})
    code = report(args, {"checks": rows}, table_lines(rows, ["check", "status", "detail"]), run_id=result.run_id,
                  ok=result.success)
    if code:
        print(f"\nhealth check FAILED (run {result.run_id})", file=sys.stderr)
    return code


def register(subparsers) -> None:
    p = subparsers.add_parser("health", help="check the app, the database and Stripe (runbook §5)",
                              description="Runs the health_check job in process; exits 1 when any check fails.")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)
