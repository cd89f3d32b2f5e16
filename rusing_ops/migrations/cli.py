"""`rusing-ops db migrate | generate | validate | rollback`: the runbook's migration commands, each running the same
Dagster job as the UI (migrate_database, plan_migrations for --dry-run, generate_migrations, validate_schema,
rollback_migration) in process."""

from __future__ import annotations

import sys

from ..cli_support import TerminalProgress, execute, failure_message, print_json


def _fail(result, as_json: bool = False) -> int:
    message = failure_message(result)
    if as_json:
        print_json({"ok": False, "run_id": result.run_id, "error": message})
    print(f"error: {message}", file=sys.stderr)
    return 1


def _run(job: str, op: str, config: dict, as_json: bool) -> tuple[int, dict | None]:
    """Run ``job``; on success return the op's output (already printed when ``as_json``), else the exit code."""
    with TerminalProgress():
        result = execute(job, {"ops": {op: {"config": config}}})
    if not result.success:
        return _fail(result, as_json), None
    out = result.output_for_node(op)
    if as_json:
        print_json({"ok": True, "run_id": result.run_id, **out})
    return 0, {**out, "run_id": result.run_id}


def migrate(args) -> int:
    if args.generate_only and (args.no_backup or args.force or args.resume or args.dry_run or args.accept_skipped):
        print("error: --generate-only only generates files; it takes none of --dry-run, --no-backup, --force, "
              "--resume, --accept-skipped. Nothing was changed.", file=sys.stderr)
        return 2
    if args.generate_only:
        return generate(args)
    flags = ("no_backup", "force", "resume", "accept_skipped") + (() if args.dry_run else ("auto_rollback",))
    config = {k: True for k in flags if getattr(args, k)}
    if args.dry_run:  # the dry run is its own read-only job, outside the database-write pool
        code, out = _run("plan_migrations", "plan_pending_migrations", config, args.json)
    else:
        code, out = _run("migrate_database", "apply_migrations", config, args.json)
    if out is None or args.json:
        return code
    print(out["plan"])
    if not args.dry_run:
        print(f"applied {len(out['applied'])} migration(s): {', '.join(out['applied']) or 'none'}"
              + (f"; pre-migration backup {out['backup_key']}" if out.get("backup_key") else "")
              + f" (run {out['run_id']})")
    return 0


def _print_generated(out: dict) -> None:
    for name in out["added"]:
        print(f"added   {name}")
    for name in out["changed"]:
        print(f"changed {name}")
    if not out["added"] and not out["changed"]:
        print("no files written (the schema matches the latest snapshot)")
    for f in out["destructive"]:
        print(f"DESTRUCTIVE {f['migration']} statement {f['statement']}: {f['kind']} {f['target']} ({f['detail']})")
    for e in out["folder_errors"]:
        print(f"FOLDER {e}")


def generate(args) -> int:
    code, out = _run("generate_migrations", "generate_migration_files", {}, args.json)
    if out is not None and not args.json:
        _print_generated(out)
    return code


def validate(args) -> int:
    result = execute("validate_schema")
    # The checks carry the full report (recorded on the asset's checks in the UI too), pass or fail.
    reports = [e.metadata["report"].value for e in result.get_asset_check_evaluations() if "report" in e.metadata]
    if not reports:
        return _fail(result, args.json)
    report = reports[0]
    if args.json:
        print_json({**report, "run_id": result.run_id})
    else:
        _print_report(report)
    return 0 if report["ok"] else 1


def _print_report(r: dict) -> None:
    print(f"database {r['database']}, folder {r['folder']}: head {r['head'] or '(none)'}, "
          f"last applied {r['last_applied'] or '(none)'}")
    for line in r["folder_errors"]:
        print(f"FOLDER  {line}")
    for line in r["folder_warnings"]:
        print(f"warning {line}")
    for tag in r["pending"]:
        print(f"PENDING {tag}")
    for line in r["anomalies"]:
        print(f"ANOMALY {line}")
    if r["drift_skipped"]:
        print(f"DRIFT   not checked: {r['drift_skipped']}")
    for d in r["drift"]:
        print(f"DRIFT   {d['message']}")
    print(f"OK: folder valid, all migrations applied, no drift from {r['snapshot']}" if r["ok"] else "NOT OK")


def rollback(args) -> int:
    config = {"migration": args.migration, "reverse_sql_file": args.sql, "confirm": args.confirm or "",
              "dry_run": args.dry_run, "no_backup": args.no_backup}
    code, out = _run("rollback_migration", "rollback_migration_op", config, args.json)
    if out is not None and not args.json:
        print(("DRY RUN: " if out["dry_run"] else "") + f"rollback of {out['migration']} on {out['database']}")
        for s in out["steps"]:
            print(f"{s['number']}. {s['name']}: {s['status']}" + (f" - {s['detail']}" if s["detail"] else ""))
    return code


def register(subparsers) -> None:
    p = subparsers.add_parser("migrate", help="apply pending Drizzle migrations (runbook §1, pre-migration backup)",
                              description="Runs the migrate_database job: validate the folder, plan like drizzle-orm, "
                              "lint, lock, back up, apply. Exit 1 with the failing statement and restore command.")
    p.add_argument("--dry-run", action="store_true", help="print the plan and every SQL statement; change nothing")
    p.add_argument("--generate-only", action="store_true", help="only run DRIZZLE_GENERATE_COMMAND and report new files")
    p.add_argument("--no-backup", action="store_true", help="skip the pre-migration backup (refused for destructive plans)")
    p.add_argument("--force", action="store_true", help="allow a destructive plan without backup; accept edited applied files")
    p.add_argument("--resume", action="store_true", help="continue a half-applied migration at its failing statement")
    p.add_argument("--accept-skipped", action="store_true", help="proceed although drizzle would skip some entries forever")
    p.add_argument("--auto-rollback", action="store_true",
                   help="restore the pre-migration backup if a statement fails (writes made meanwhile are lost)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=migrate)

    g = subparsers.add_parser("generate", help="run drizzle-kit generate (DRIZZLE_GENERATE_COMMAND) and lint the result")
    g.add_argument("--json", action="store_true", help="print the result as JSON")
    g.set_defaults(func=generate)

    v = subparsers.add_parser("validate", help="journal vs files vs snapshots, applied migrations, schema drift",
                              description="Runs the validate_schema job; exit 1 on any finding.")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(func=validate)

    r = subparsers.add_parser("rollback", help="undo the last applied migration (runbook §2 checklist)",
                              description="Runs the rollback_migration job: stop app, backup, reverse SQL, delete the "
                              "__drizzle_migrations row, update the journal, restart app, verify health.")
    r.add_argument("--migration", required=True, metavar="TAG", help="the migration's journal tag")
    r.add_argument("--sql", required=True, metavar="FILE", help="file holding the reverse SQL")
    r.add_argument("--confirm", metavar="NAME", help="the target database name (required unless --dry-run)")
    r.add_argument("--dry-run", action="store_true", help="list every step; change nothing")
    r.add_argument("--no-backup", action="store_true", help="skip the fresh backup (not recommended)")
    r.add_argument("--json", action="store_true", help="print the result as JSON")
    r.set_defaults(func=rollback)
