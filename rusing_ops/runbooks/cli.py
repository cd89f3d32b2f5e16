"""`rusing-ops db rollback | recover`: the runbook's composed procedures (§2 rollback of a migration, §6 data-loss
recovery), each the same Dagster job as in the UI (rollback_migration, recover_from_data_loss), in process."""

from __future__ import annotations

from ..cli_support import report, run_op


def rollback(args) -> int:
    config = {"migration": args.migration, "reverse_sql_file": args.sql, "confirm": args.confirm or "",
              "dry_run": args.dry_run, "no_backup": args.no_backup}
    out, run_id = run_op("rollback_migration", "rollback_migration_op", config)
    return report(args, out, out["lines"], run_id=run_id)  # RollbackResult.lines(), the UI's checklist


def recover(args) -> int:
    config = {"confirm": args.confirm, "backup": args.file, "pre_restore_backup": not args.no_pre_restore_backup}
    if args.database:
        config["database"] = args.database
    if args.to or args.skip:
        config.update(to=args.to, skip=args.skip or [])
    out, run_id = run_op("recover_from_data_loss", "recover_from_data_loss_op", config)
    lines = [*out["steps"], f"recovered `{out['target']}` from {out['source']}: {out['rows']:,} rows (run {run_id})"]
    if out["pre_restore_db"]:
        lines.append(f"replaced tables kept in `{out['pre_restore_db']}` (DROP DATABASE it once the data is confirmed "
                     "good)")
    return report(args, out, lines, run_id=run_id)


def register(subparsers) -> None:
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

    p = subparsers.add_parser("recover", help="runbook §6 data-loss recovery (job recover_from_data_loss)",
                              description="Stop the app, back up what is left, restore, validate row counts and "
                              "schema, start the app, check its health. The app stays stopped if a step fails.")
    p.add_argument("--file", default="latest", metavar="KEY|PATH", help="backup to restore (default: latest)")
    p.add_argument("--database", help="recover this database instead of DATABASE_URL's")
    p.add_argument("--confirm", required=True, metavar="NAME", help="the target database's name, to confirm")
    p.add_argument("--no-pre-restore-backup", action="store_true", help="skip backing up what is left first")
    p.add_argument("--to", metavar="TIME", help="point in time: restore the newest backup before it plus the binlog "
                   "archive up to it ('YYYY-MM-DD HH:MM:SS', UTC unless a zone follows)")
    p.add_argument("--skip", action="append", metavar="GTID|FILE:POS",
                   help="with --to: leave this transaction out (repeatable; `db restore --to ... --dry-run` lists them)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=recover)
