"""`rusing-ops db binlogs archive | status`, `db undo`, and the `--to` options of `db restore`: each runs the same
Dagster job as the UI (archive_binlogs, restore_to_time, undo_changes) in process; `status` reads the archive."""

from __future__ import annotations

from ..cli_support import (
    CommandFailed,
    plain_metadata,
    report,
    run_job,
    run_op,
    table_lines,
)
from ..core.store import open_store
from ..settings import database_url, env
from . import archive


def archive_pass(args) -> int:
    result = run_job("archive_binlogs")
    [mat] = list(result.get_asset_materialization_events())
    md = plain_metadata(mat.materialization.metadata)
    if not md.get("available"):
        raise CommandFailed(md.get("why") or "the binlog archive is not available", run_id=result.run_id, data=md)
    return report(args, md, [
        (f"archived {md['segments_written']} new segment(s); archive holds {md['files']} file(s), "
        f"{md['bytes'] / 1e6:,.2f} MB, lag {md['lag_s']:.0f} s, gaps: {len(md.get('gaps') or []) or 'none'}")],
        run_id=result.run_id)


def status(args) -> int:
    url = database_url()
    st = archive.status(url, open_store(env("RUSING_BACKUP_URL")))  # a relative path: from the working directory
    s = st.summary()
    lines = table_lines([{"server": s["server"], "files": s["files"], "segments": s["segments"],
                          "MB": f"{s['bytes'] / 1e6:,.2f}", "archived_to": s["archived_to"] or "-",
                          "server_at": s["server_at"], "lag_s": s["lag_s"] if s["lag_s"] is not None else "-",
                          "format": s["binlog_format"]}])
    return report(args, s, [*lines, *(f"GAP: {gap}" for gap in st.gaps)], ok=not st.gaps)


def wants_point_in_time(args) -> bool:
    """`--to`, `--to-position`, `--to-gtid`, or `--skip` alone (= everything archived but those transactions)."""
    return bool(getattr(args, "to", None) or getattr(args, "to_position", None) or getattr(args, "to_gtid", None)
                or getattr(args, "skip", None))


def restore_to(args) -> int:
    """`db restore --to ...` (with --dry-run: only the plan)."""
    config = {"to": args.to, "to_position": args.to_position, "to_gtid": args.to_gtid, "skip": args.skip or [],
              "database": args.database, "dry_run": args.dry_run, "confirm": args.confirm}
    out, run_id = run_op("restore_to_time", "restore_to_time_op", config)
    lines = [(f"backup {out['backup']} (taken {out['backup_taken_at'][:19]}Z), then binlogs {out['from']} -> "
             f"{out['to']}: {out['transactions']} transactions, {out['events']} events")]
    lines += [f"skipped: {line}" for line in out["skipped"]] + [f"note: {note}" for note in out["notes"]]
    if out["dry_run"]:
        lines.append(f"dry run: nothing was changed; run again without --dry-run and with --confirm {out['target']}")
    else:
        lines.append(f"restored `{out['target']}` to {out['to']} in {out['duration_s']:.1f}s; pre-restore backup "
                     f"{out.get('pre_restore_backup') or '(none: the database was empty)'}")
    return report(args, out, lines, run_id=run_id)


def undo(args) -> int:
    config = {"since": args.since, "until": args.until, "tables": args.table or [], "confirm": args.confirm}
    out, run_id = run_op("undo_changes", "undo_changes_op", config)
    lines = [(f"{out['transactions']} transaction(s) changed `{out['database']}` between {out['since']} and "
             f"{out['until']}:"), *(f"  {line}" for line in out["changes"][:50])]
    if len(out["changes"]) > 50:
        lines.append(f"  ... {len(out['changes']) - 50} more")
    if out["applied"]:
        lines.append(f"undone (their inverse applied); backup taken first: {out['pre_undo_backup']}")
    elif out["transactions"]:
        lines.append(f"preview only: nothing was changed; add --confirm {out['database']} to undo them")
    return report(args, out, lines, run_id=run_id)


def add_restore_arguments(p) -> None:
    """The point-in-time options of `db restore` (the restore verb itself lives in backups/cli.py)."""
    p.add_argument("--to", metavar="TIME", help="point in time: 'YYYY-MM-DD HH:MM:SS' (UTC unless a zone follows)")
    p.add_argument("--to-position", metavar="FILE:POS", help="or stop at this binlog position")
    p.add_argument("--to-gtid", metavar="GTID", help="or stop after this GTID")
    p.add_argument("--skip", action="append", metavar="GTID|FILE:POS", help="leave this transaction out (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="with --to: show the plan, change nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def register(subparsers) -> None:
    p = subparsers.add_parser("binlogs", help="the binlog archive for point-in-time recovery (archive, status)",
                              description="Copy the server's binary log into the backup store (one pass), or show "
                                          "the archive's lag, size and gaps.")
    verbs = p.add_subparsers(dest="binlogs_verb", metavar="VERB")
    verbs.required = True
    a = verbs.add_parser("archive", help="copy what is new since the last pass, then exit (job archive_binlogs)")
    a.add_argument("--json", action="store_true", help="print the result as JSON")
    a.set_defaults(func=archive_pass)
    s = verbs.add_parser("status", help="lag (RPO), files, bytes and gaps of the archive")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=status)

    u = subparsers.add_parser("undo", help="preview / undo a time window's row changes (job undo_changes)",
                              description="Show the row changes between --since and --until from the binlog archive; "
                                          "with --confirm, back up the database and apply their inverse.")
    u.add_argument("--since", required=True, metavar="TIME", help="'YYYY-MM-DD HH:MM:SS' (UTC unless a zone follows)")
    u.add_argument("--until", metavar="TIME", help="end of the window (default: now)")
    u.add_argument("--table", action="append", metavar="T", help="only this table (repeatable)")
    u.add_argument("--confirm", metavar="NAME", help="the database's name: apply the undo (default: preview)")
    u.add_argument("--json", action="store_true", help="machine-readable output")
    u.set_defaults(func=undo)
