"""`rusing-ops db migrate | generate | validate`: the runbook's migration commands, each running the same Dagster
job as the UI (migrate_database, plan_migrations for --dry-run, generate_migrations, validate_schema) in process.
(`db rollback`, a procedure composed from these capabilities, is in runbooks/cli.py.)"""

from __future__ import annotations

from ..cli_support import CommandFailed, execute, report, run_failed, run_op


def migrate(args) -> int:
    if args.generate_only and (args.no_backup or args.force or args.resume or args.dry_run or args.accept_skipped):
        raise CommandFailed("--generate-only only generates files; it takes none of --dry-run, --no-backup, --force, "
                            "--resume, --accept-skipped. Nothing was changed.", code=2)
    if args.generate_only:
        return generate(args)
    flags = ("no_backup", "force", "resume", "accept_skipped") + (() if args.dry_run else ("auto_rollback",))
    config = {k: True for k in flags if getattr(args, k)}
    if args.dry_run:  # the dry run is its own read-only job, outside the database-write pool
        out, run_id = run_op("plan_migrations", "plan_pending_migrations", config)
        return report(args, out, [out["plan"]], run_id=run_id)
    out, run_id = run_op("migrate_database", "apply_migrations", config)
    return report(args, out, [
        out["plan"], f"applied {len(out['applied'])} migration(s): {', '.join(out['applied']) or 'none'}"
        + (f"; pre-migration backup {out['backup_key']}" if out.get("backup_key") else "") + f" (run {run_id})"],
        run_id=run_id)


def generate(args) -> int:
    out, run_id = run_op("generate_migrations", "generate_migration_files", {})
    return report(args, out, out["lines"], run_id=run_id)  # GenerateResult.lines(), as the run logs them


def validate(args) -> int:
    result = execute("validate_schema")
    # The checks carry the full report (recorded on the asset's checks in the UI too), pass or fail.
    reports = [e.metadata["report"].value for e in result.get_asset_check_evaluations() if "report" in e.metadata]
    if not reports:
        raise run_failed(result)
    report_ = reports[0]
    return report(args, report_, report_["lines"], run_id=result.run_id, ok=report_["ok"])  # ValidationReport.lines()


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
