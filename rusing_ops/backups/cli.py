"""`rusing-ops db backup | backups | restore`: runbook §3's commands. `backup` and `restore` run the same Dagster jobs
as the UI (backup_database, restore_database) in process, with a progress bar; `backups` reads the store."""

from __future__ import annotations

import sys
from pathlib import Path

from ..cli_support import TerminalProgress, print_json, print_table, run_job
from ..core.errors import OpsError
from ..core.store import open_store
from ..settings import PROJECT_ROOT, env
from . import catalog


def backup(args) -> int:
    with TerminalProgress():
        result = run_job("backup_database", {"ops": {"newest_backup": {"config": {
            "reason": args.reason, "compression": args.compression}}}})
    [mat] = [m for m in result.asset_materializations_for_node("newest_backup") if m.partition is None]
    md = {k: v.value for k, v in mat.metadata.items()}
    print(f"backup {md['key']}: {md['dagster/row_count']:,} rows, {md['bytes'] / 1e6:,.1f} MB ({md['compressed_ratio']}x), "
          f"sha256 {md['sha256'][:16]}..., {md['duration_s']:.1f}s, migration head {md['migration_head']}")
    print(f"stored at {md['uri']} (run {result.run_id})")
    return 0


def backups(args) -> int:
    try:
        entries = catalog.list_backups(open_store(env("RUSING_BACKUP_URL"), base_dir=PROJECT_ROOT))
    except OpsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rows = [e.summary() for e in entries]
    if args.json:
        print_json(rows)
        return 0
    print_table([{"name": r["name"], "taken_at": r["taken_at"][:19].replace("T", " ") + "Z", "reason": r["reason"],
                  "MB": f"{r['bytes'] / 1e6:,.1f}", "rows": f"{r['rows']:,}" if r["complete"] else "-",
                  "complete": "yes" if r["complete"] else "NO (no manifest)",
                  "verified": "yes" if r["verified"] else "no"} for r in rows])
    return 0


def restore(args) -> int:
    ref = args.file
    if ref != "latest" and Path(ref).expanduser().is_file():
        ref = str(Path(ref).expanduser().resolve())
    config = {"backup": ref, "confirm": args.confirm, "pre_restore_backup": not args.no_pre_restore_backup}
    if args.database:
        config["database"] = args.database
    with TerminalProgress():
        result = run_job("restore_database", {"ops": {"restore_database_op": {"config": config}}})
    out = result.output_for_node("restore_database_op")
    print(f"restored {out['source']} into `{out['target']}`: {out['rows']:,} rows in {len(out['tables'])} tables, "
          f"{out['duration_s']:.1f}s" + (" (sha256 and manifest verified)" if out["verified_against_manifest"] else ""))
    if out["pre_restore_backup"]:
        print(f"pre-restore backup: {out['pre_restore_backup']}")
    if out["pre_restore_db"]:
        print(f"replaced tables kept in `{out['pre_restore_db']}` (DROP DATABASE it once the restore is confirmed good)")
    return 0


def verify(args) -> int:
    with TerminalProgress():
        result = run_job("verify_backup", {"ops": {"verify_backup_op": {"config": {"backup": args.backup}}}})
    out = result.output_for_node("verify_backup_op")
    print(f"verified {out['key']}: restored into a scratch database, {len(out['tables'])} tables match the manifest's "
          f"row counts and content checksums ({out['duration_s']:.1f}s, run {result.run_id})")
    return 0


def prune(args) -> int:
    config = {"keep_daily": args.keep_daily, "keep_weekly": args.keep_weekly, "keep_monthly": args.keep_monthly,
              "dry_run": not args.apply}
    out = run_job("prune_backups", {"ops": {"prune_backups_op": {"config": config}}}).output_for_node("prune_backups_op")
    verb = "would delete" if out["dry_run"] else "deleted"
    for key in out["delete"]:
        print(f"{verb} {key}")
    print(f"kept {out['kept']}, {verb} {out['to_delete']} ({out['freed_bytes'] / 1e6:,.1f} MB)"
          + (" — dry run: add --apply to delete" if out["dry_run"] else ""))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("backup", help="back up the database to the backup store (job backup_database)",
                              description="Take a consistent backup of DATABASE_URL's database into RUSING_BACKUP_URL.")
    p.add_argument("--reason", default="manual", help="word recorded in the backup's name and manifest (default manual)")
    p.add_argument("--compression", choices=["zstd", "gzip"], default="zstd", help="default zstd")
    p.set_defaults(func=backup)

    p = subparsers.add_parser("backups", help="list backups, newest first, with size, rows and verification",
                              description="List the backups in RUSING_BACKUP_URL, newest first.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=backups)

    p = subparsers.add_parser("restore", help="restore a backup through a staging database (job restore_database)",
                              description="Verify a backup, load it into a staging database, check row counts, back up "
                              "the live database, then swap atomically. The replaced tables are kept.")
    p.add_argument("--file", default="latest", metavar="KEY|PATH",
                   help="backup name/key from `db backups`, or a local .sql/.sql.gz/.sql.zst file (default: latest)")
    p.add_argument("--database", help="restore into this database instead of DATABASE_URL's")
    p.add_argument("--confirm", required=True, metavar="NAME", help="the target database's name, to confirm")
    p.add_argument("--no-pre-restore-backup", action="store_true", help="skip backing up the live database first")
    p.set_defaults(func=restore)

    p = subparsers.add_parser("verify", help="prove a backup restores (job verify_backup)",
                              description="Restore a backup into a scratch database, compare every table's rows and "
                              "content checksum with its manifest, drop the scratch database; recorded on the partition.")
    p.add_argument("--backup", default="latest", metavar="KEY", help="backup name/key (default: latest)")
    p.set_defaults(func=verify)

    p = subparsers.add_parser("prune", help="apply the retention policy (job prune_backups; dry run unless --apply)",
                              description="Keep the newest backup of each of the last N days, weeks and months, and "
                              "always the newest verified one; list (or, with --apply, delete) the rest.")
    p.add_argument("--keep-daily", type=int, default=7, metavar="N")
    p.add_argument("--keep-weekly", type=int, default=4, metavar="N")
    p.add_argument("--keep-monthly", type=int, default=6, metavar="N")
    p.add_argument("--apply", action="store_true", help="really delete (default: only list)")
    p.set_defaults(func=prune)
