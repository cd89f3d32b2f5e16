"""`rusing-ops db backup | backups | restore`: runbook §3's commands. `backup` and `restore` run the same Dagster jobs
as the UI (backup_database, restore_database) in process, with a progress bar; `backups` reads the store."""

from __future__ import annotations

from pathlib import Path

from ..cli_support import (
    CommandFailed,
    configured_database,
    configured_store,
    plain_metadata,
    print_json,
    progress_bar,
    report,
    run_job,
    table_lines,
)
from . import catalog
from .retention import RetentionPolicy


def backup(args) -> int:
    with progress_bar():
        result = run_job("backup_database", {"ops": {"newest_backup": {"config": {
            "reason": args.reason, "compression": args.compression, "level": args.level}}}})
    [mat] = [m for m in result.asset_materializations_for_node("newest_backup") if m.partition is None]
    md = plain_metadata(mat.metadata)
    return report(args, md, [
        (f"backup {md['key']}: {md['dagster/row_count']:,} rows, {md['bytes'] / 1e6:,.1f} MB "
        f"({md['compressed_ratio']}x), sha256 {md['sha256'][:16]}..., {md['duration_s']:.1f}s, migration head "
        f"{md['migration_head']}"),
        f"stored at {md['uri']} (run {result.run_id})"], run_id=result.run_id)


def _scope(args) -> str | None:
    """The database whose backups a command sees: DATABASE_URL's, or None (every database) with --all-databases."""
    return None if getattr(args, "all_databases", False) else configured_database()


def _backup_row(r: dict, every_database: bool) -> dict:
    return {"name": r["name"], "taken_at": r["taken_at"][:19].replace("T", " ") + "Z", "reason": r["reason"],
            **({"database": r["database"] or "?"} if every_database else {}),
            "MB": f"{r['bytes'] / 1e6:,.1f}", "rows": f"{r['rows']:,}" if r["complete"] else "-",
            "verified": "yes" if r["verified"] else "no", "pinned": "yes" if r["pinned"] else "",
            "encrypted": f"age ({r['encrypted']})" if r.get("encrypted") else "no",
            "state": "complete" if r["complete"] else (
                f"restorable, NOT COMPLETE: {r['copy_problem']}" if r.get("copy_problem")
                else f"NOT RESTORABLE: {r['problem']}")}


def backups(args) -> int:
    store = configured_store()  # second copies count (a backup is complete when every copy is)
    database = _scope(args)
    rows = [e.summary() for e in catalog.list_backups(store, database, include_partial=True)]
    if args.json:  # the list itself (scripts read it as one)
        print_json(rows)
        return 0
    return report(args, {}, [
        f"backups of {'every database' if database is None else f'`{database}`'} in {store.url}, newest first:",
        *table_lines([_backup_row(r, database is None) for r in rows])])


def unpin(args) -> int:
    entry = catalog.unpin(configured_store(), args.backup)
    return report(args, {"name": entry.name, "key": entry.key, "pins": entry.pins}, [
        (f"unpinned {entry.name} (was: {'; '.join(p.get('why', '') for p in entry.pins)}); `rusing-ops db prune` "
        "may now delete it when the retention policy does not keep it")])


def restore(args) -> int:
    from ..pitr import cli as pitr_cli

    if pitr_cli.wants_point_in_time(args):
        return pitr_cli.restore_to(args)
    if args.dry_run:
        raise CommandFailed("--dry-run goes with --to / --to-position / --to-gtid / --skip (a point-in-time "
                            "restore); nothing was changed.", code=2)
    if not args.confirm:
        raise CommandFailed("--confirm NAME (the target database's name) is required to restore; nothing was "
                            "changed.", code=2)
    if args.repair:
        config = {"confirm": args.confirm, "repair": True, **({"database": args.database} if args.database else {})}
        result = run_job("restore_database", {"ops": {"restore_database_op": {"config": config}}})
        out = result.output_for_node("restore_database_op")
        return report(args, out, out["repaired"], run_id=result.run_id)
    ref = args.file
    if ref != "latest" and Path(ref).expanduser().is_file():
        ref = str(Path(ref).expanduser().resolve())
    config = {"backup": ref, "confirm": args.confirm, "pre_restore_backup": not args.no_pre_restore_backup}
    if args.database:
        config["database"] = args.database
    if args.from_database:
        config["from_database"] = args.from_database
    with progress_bar():
        result = run_job("restore_database", {"ops": {"restore_database_op": {"config": config}}})
    out = result.output_for_node("restore_database_op")
    lines = [f"restored {out['source']} into `{out['target']}`: {out['rows']:,} rows in {len(out['tables'])} tables, "
             f"{out['duration_s']:.1f}s" + (" (sha256 and manifest verified)" if out["verified_against_manifest"] else "")]
    if args.from_database and args.from_database != out["target"]:
        lines.append(f"note: this was a backup of database `{args.from_database}`, restored into `{out['target']}`")
    if out["pre_restore_backup"]:
        lines.append(f"pre-restore backup: {out['pre_restore_backup']}")
    if out["pre_restore_db"]:
        lines.append(f"replaced tables kept in `{out['pre_restore_db']}` (DROP DATABASE it once the restore is "
                     "confirmed good)")
    return report(args, out, lines, run_id=result.run_id)


def verify(args) -> int:
    with progress_bar():
        result = run_job("verify_backup", {"ops": {"verify_backup_op": {"config": {"backup": args.backup}}}})
    out = result.output_for_node("verify_backup_op")
    return report(args, out, [
        (f"verified {out['key']}: restored into a scratch database, {len(out['tables'])} tables match the manifest's "
        f"row counts and server checksums ({out['duration_s']:.1f}s, run {result.run_id})")], run_id=result.run_id)


def prune(args) -> int:
    config = {"keep_daily": args.keep_daily, "keep_weekly": args.keep_weekly, "keep_monthly": args.keep_monthly,
              "dry_run": not args.apply, "all_databases": args.all_databases}
    result = run_job("prune_backups", {"ops": {"prune_backups_op": {"config": config}}})
    out = result.output_for_node("prune_backups_op")
    verb = "would delete" if out["dry_run"] else "deleted"
    return report(args, out, [
        *out["lines"],
        f"kept {out['kept']} ({out['pinned']} pinned), {verb} {out['to_delete']} and "
        f"{'would remove' if out['dry_run'] else 'removed'} {out['to_sweep']} leftovers "
        f"({out['freed_bytes'] / 1e6:,.1f} MB)" + (" — dry run: add --apply to delete" if out["dry_run"] else "")],
        run_id=result.run_id)


JSON_HELP = "print the result as one JSON object"


def register(subparsers) -> None:
    p = subparsers.add_parser("backup", help="back up the database to the backup store (job backup_database)",
                              description="Take a consistent backup of DATABASE_URL's database into RUSING_BACKUP_URL.")
    p.add_argument("--reason", default="manual", help="word recorded in the backup's name and manifest (default manual)")
    p.add_argument("--compression", choices=["zstd", "gzip"], default="zstd", help="default zstd")
    p.add_argument("--level", type=int, default=None, metavar="N",
                   help="compression level (zstd 1-19, default 1: half the CPU of 3, which is 7-15%% smaller on "
                        "prose and JSON; gzip 1-9, default 6)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=backup)

    p = subparsers.add_parser("backups", help="list backups, newest first, with size, rows and verification",
                              description="List the backups of DATABASE_URL's database in RUSING_BACKUP_URL (every "
                              "database's with --all-databases), newest first; what is not restorable says why.")
    p.add_argument("--json", action="store_true", help="print the list as one JSON array")
    p.add_argument("--all-databases", action="store_true",
                   help="list the backups of every database in the store (default: DATABASE_URL's database)")
    p.set_defaults(func=backups)

    p = subparsers.add_parser("unpin", help="let prune delete a pinned backup again",
                              description="Remove the pins of a backup (taken before a migration, restore or rollback, "
                              "which the procedure's report points to). Nothing is deleted now.")
    p.add_argument("backup", metavar="NAME", help="backup name or key from `db backups`")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=unpin)

    p = subparsers.add_parser("restore", help="restore a backup through a staging database (job restore_database)",
                              description="Verify a backup, load it into a staging database, check row counts, back up "
                              "the live database, then swap atomically. The replaced tables are kept.")
    p.add_argument("--file", default="latest", metavar="KEY|PATH",
                   help="backup name/key from `db backups`, or a local .sql/.sql.gz/.sql.zst file (default: latest)")
    p.add_argument("--database", help="restore into this database instead of DATABASE_URL's")
    p.add_argument("--from-database", metavar="NAME", help="allow a backup taken from this other database (e.g. the "
                   "app's backup into a drill --database); `latest` then means its latest")
    p.add_argument("--confirm", metavar="NAME", help="the target database's name, to confirm (required unless "
                   "--dry-run)")
    p.add_argument("--no-pre-restore-backup", action="store_true", help="skip backing up the live database first")
    p.add_argument("--repair", action="store_true", help="only finish or undo the swap of a restore that was killed "
                   "half-way (every restore also does this first)")
    from ..pitr.cli import add_restore_arguments

    add_restore_arguments(p)
    p.set_defaults(func=restore)

    p = subparsers.add_parser("verify", help="prove a backup restores (job verify_backup)",
                              description="Restore a backup into a scratch database, compare every table's rows and "
                              "server checksum with its manifest, drop the scratch database; recorded on the partition.")
    p.add_argument("--backup", default="latest", metavar="KEY", help="backup name/key (default: latest)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=verify)

    p = subparsers.add_parser("prune", help="apply the retention policy (job prune_backups; dry run unless --apply)",
                              description="Per database: keep the newest backup of each of the last N days, weeks and "
                              "months, and always the newest complete, the newest verified and every pinned one; list "
                              "(or, with --apply, delete) the rest, and leftovers of killed backups older than 24 h.")
    policy = RetentionPolicy()  # the defaults are the policy's own (backups/retention.py)
    p.add_argument("--keep-daily", type=int, default=policy.daily, metavar="N", help=f"default {policy.daily}")
    p.add_argument("--keep-weekly", type=int, default=policy.weekly, metavar="N", help=f"default {policy.weekly}")
    p.add_argument("--keep-monthly", type=int, default=policy.monthly, metavar="N", help=f"default {policy.monthly}")
    p.add_argument("--apply", action="store_true", help="really delete (default: only list)")
    p.add_argument("--all-databases", action="store_true",
                   help="prune every database's backups, each on its own (default: DATABASE_URL's database)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=prune)
