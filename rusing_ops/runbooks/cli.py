"""`rusing-ops db recover`: runbook §6 data-loss recovery, the same job as in the UI, in process."""

from __future__ import annotations

from ..cli_support import TerminalProgress, run_job


def recover(args) -> int:
    config = {"confirm": args.confirm, "backup": args.file, "pre_restore_backup": not args.no_pre_restore_backup}
    if args.database:
        config["database"] = args.database
    if args.to or args.skip:
        config.update(to=args.to, skip=args.skip or [])
    with TerminalProgress():
        result = run_job("recover_from_data_loss", {"ops": {"recover_from_data_loss_op": {"config": config}}})
    out = result.output_for_node("recover_from_data_loss_op")
    for line in out["steps"]:
        print(line)
    print(f"recovered `{out['target']}` from {out['source']}: {out['rows']:,} rows (run {result.run_id})")
    if out["pre_restore_db"]:
        print(f"replaced tables kept in `{out['pre_restore_db']}` (DROP DATABASE it once the data is confirmed good)")
    return 0


def register(subparsers) -> None:
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
    p.set_defaults(func=recover)
