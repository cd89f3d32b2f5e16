"""The swap: every live table to ``<target>__pre_restore_<ts>`` and every staged table into the target, in one
``RENAME TABLE`` statement, then views, routines and triggers recreated in the target. The caller holds the
database write lock for the whole restore.

MariaDB refuses to move a table that has triggers to another database (ER_TRG_IN_WRONG_SCHEMA), so the live
triggers are dropped just before the rename, and the restored views / triggers / routines can only be created
after it. A crash between those statements would leave the target without its objects. So an intent journal
(table ``_rusing_ops_swap`` in the ``__pre_restore_`` database, written before anything is dropped) records the
live triggers' definitions and the statements still to run (the live views are not journalled: nothing drops
them before the rename, and after it the backup's views replace them). :func:`repair_swap` reads it and either
undoes the swap (rename not done: the old triggers are recreated) or finishes it (rename done: the restored
objects are created); every restore runs it first, and ``rusing-ops db restore --repair`` runs it alone.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import pymysql

from ..core.database import (
    DB_WRITE_LOCK,
    ROW_TABLES,
    as_text,
    held_lock,
    list_tables,
    quote_ident,
)
from ..core.dburl import DatabaseURL
from ..core.errors import OpsError
from ..core.faults import pause_point
from .connection import open_connection
from .load import SESSION

JOURNAL = "_rusing_ops_swap"
PREPARED, RENAMED, DONE, UNDONE = "prepared", "renamed", "done", "undone"
_ALREADY_EXISTS = (1304, 1359, 1050)  # routine, trigger, view/table already exists (a repair's second pass)


class SwapFailed(OpsError):
    """The rename or the recreation of views / triggers / routines failed."""


@dataclass
class SwapResult:
    pre_restore_db: str | None
    tables: int
    recreated: list[str] = field(default_factory=list)


@dataclass
class RepairResult:
    journal_db: str
    action: str  # "undone" (target is as before the restore) or "finished" (target holds the restored copy)
    detail: list[str] = field(default_factory=list)

    def line(self) -> str:
        what = ("undid the interrupted swap: the target is as it was before that restore"
                if self.action == UNDONE else "finished the interrupted swap: the target holds the restored copy")
        return f"{what} (journal `{self.journal_db}`)" + (f": {'; '.join(self.detail)}" if self.detail else "")


@contextlib.contextmanager
def write_lock(url: DatabaseURL, timeout_s: float = 10.0):
    """The database write lock (``GET_LOCK``) shared with migrate, rollback and the app's own migrator."""
    conn = open_connection(url, "")
    try:
        def first(sql: str, args: tuple) -> tuple | None:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchone()

        with held_lock(first, conn.get_server_info() or "", url, DB_WRITE_LOCK, timeout_s, gone=pymysql.err.MySQLError):
            yield
    finally:
        with contextlib.suppress(Exception):  # closing releases the lock too
            conn.close()


def _names(cur, sql: str, *args) -> list[str]:
    cur.execute(sql, args)
    return [as_text(r[0]) for r in cur.fetchall()]


def _tables(cur, database: str) -> list[str]:
    return list_tables(cur, database, (*ROW_TABLES, "SEQUENCE"))


def _trigger_names(cur, database: str) -> list[str]:
    return _names(cur, "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s "
                       "ORDER BY TRIGGER_NAME", database)


def _triggers(cur, database: str) -> list[tuple[str, str]]:
    q = quote_ident
    out = []
    for name in _trigger_names(cur, database):
        cur.execute(f"SHOW CREATE TRIGGER {q(database)}.{q(name)}")
        out.append((name, as_text(cur.fetchone()[2])))
    return out


def _why(exc: Exception) -> str:
    """A server error's own text (a dead connection's InterfaceError has none: its class then)."""
    return str(exc.args[-1]) if exc.args and exc.args[-1] else type(exc).__name__


def _journal(cur, db: str, state: str) -> None:
    cur.execute(f"UPDATE {quote_ident(db)}.`{JOURNAL}` SET state = %s, updated_at = NOW(6)", (state,))


def swap_in(url: DatabaseURL, staging: str, target: str, pre_db: str, deferred: list[str], *,
            check: Callable | None = None, log: Callable[[str], None] = lambda _l: None) -> SwapResult:
    """Swap the tables of ``staging`` into ``target``; ``deferred`` (views, routines, triggers) run afterwards.

    The caller holds the database write lock. ``check(cursor)`` runs first, before anything is touched (the
    restore's "has the target changed since the restore began" test): it raises to refuse the swap.
    """
    q = quote_ident
    conn = open_connection(url, "")
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS {q(target)} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
            staged, live = _tables(cur, staging), _tables(cur, target)
            triggers = _triggers(cur, target)
            if check is not None:
                check(cur)
            cur.execute(f"CREATE DATABASE {q(pre_db)} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
            cur.execute(f"CREATE TABLE {q(pre_db)}.`{JOURNAL}` (state varchar(16) NOT NULL, target varchar(64) NOT "
                        "NULL, staging varchar(64) NOT NULL, plan longtext NOT NULL, created_at datetime(6) NOT NULL, "
                        "updated_at datetime(6) NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
            plan = {"live": live, "staged": staged, "old_triggers": triggers, "deferred": deferred}
            cur.execute(f"INSERT INTO {q(pre_db)}.`{JOURNAL}` VALUES (%s, %s, %s, %s, NOW(6), NOW(6))",
                        (PREPARED, target, staging, json.dumps(plan)))
            pause_point("swap-before-drop-triggers")
            for name, _sql in triggers:
                cur.execute(f"DROP TRIGGER {q(target)}.{q(name)}")
            pause_point("swap-before-rename")
            renames = [f"{q(target)}.{q(t)} TO {q(pre_db)}.{q(t)}" for t in live]
            renames += [f"{q(staging)}.{q(t)} TO {q(target)}.{q(t)}" for t in staged]
            try:
                if renames:
                    cur.execute("RENAME TABLE " + ", ".join(renames))
            except pymysql.err.MySQLError as exc:
                try:
                    _undo(cur, pre_db, target, triggers)
                except pymysql.err.MySQLError as undo_exc:  # both causes: the rename's first, it is the reason
                    raise SwapFailed(
                        f"RENAME TABLE into `{target}` failed ({_why(exc)}), and undoing its preparation failed "
                        f"too ({_why(undo_exc)}): `{target}` holds its own tables, but the triggers dropped for the "
                        f"rename ({', '.join(f'`{n}`' for n, _ in triggers) or 'none'}) may be missing. The swap's "
                        f"journal (`{pre_db}`) "
                        f"and the loaded copy (`{staging}`) are kept for the repair.", changed=True,
                        next_step=f"run `rusing-ops db restore --repair --confirm {target}` (it puts the triggers "
                                  "back from the journal), then fix the cause and run the restore again.") from None
                raise SwapFailed(f"RENAME TABLE into `{target}` failed ({_why(exc)}); `{target}` is unchanged "
                                 "(its triggers were put back) and the loaded copy is dropped.",
                                 next_step="fix the cause, then run the restore again.") from None
            _journal(cur, pre_db, RENAMED)
            log(f"swapped {len(staged)} tables into `{target}`" + (f"; replaced tables kept in `{pre_db}`" if live else ""))
            pause_point("swap-after-rename")
            recreated = _recreate(cur, target, deferred)
            _finish(cur, pre_db, staging, keep=bool(live))
    finally:
        conn.close()
    return SwapResult(pre_db if live else None, len(staged), recreated)


def _undo(cur, pre_db: str, target: str, triggers: list[tuple[str, str]]) -> list[str]:
    """Before the rename: put the dropped triggers back and remove the journal's database."""
    have = set(_trigger_names(cur, target))
    cur.execute(f"USE {quote_ident(target)}")
    done = []
    for name, sql in triggers:
        if name not in have:
            cur.execute(sql)
            done.append(name)
    cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(pre_db)}")
    return done


def _finish(cur, pre_db: str, staging: str, *, keep: bool) -> None:
    _journal(cur, pre_db, DONE)
    cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(staging)}")
    if not keep:  # the target held no table: nothing was replaced, the journal was all it held
        cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(pre_db)}")


def interrupted_swaps(url: DatabaseURL, target: str) -> list[tuple[str, str]]:
    """``(journal database, state)`` of every swap into ``target`` that did not reach ``done``."""
    conn = open_connection(url, "")
    try:
        with conn.cursor() as cur:
            pattern = target.replace("_", "\\_") + "\\_\\_pre\\_restore\\_%"
            found = []
            for db in _names(cur, "SELECT TABLE_SCHEMA FROM information_schema.TABLES WHERE TABLE_SCHEMA LIKE %s "
                                  "AND TABLE_NAME = %s ORDER BY TABLE_SCHEMA", pattern, JOURNAL):
                cur.execute(f"SELECT state FROM {quote_ident(db)}.`{JOURNAL}`")
                row = cur.fetchone()
                if row and as_text(row[0]) not in (DONE, UNDONE):
                    found.append((db, as_text(row[0])))
            return found
    finally:
        conn.close()


def repair_swap(url: DatabaseURL, target: str, *, log: Callable[[str], None] = lambda _l: None) -> list[RepairResult]:
    """Undo or finish every interrupted swap into ``target`` (the caller holds the write lock)."""
    results = []
    for journal_db, _state in interrupted_swaps(url, target):
        conn = open_connection(url, "")
        try:
            with conn.cursor() as cur:
                cur.execute(f"SELECT staging, plan FROM {quote_ident(journal_db)}.`{JOURNAL}`")
                staging, plan = (as_text(v) for v in cur.fetchone())
                plan = json.loads(plan)
                in_target = set(_tables(cur, target))
                renamed = bool(plan["staged"]) and set(plan["staged"]) <= in_target and not (
                    set(_tables(cur, staging)) & set(plan["staged"]))
                if not plan["staged"]:  # nothing was to move in: the rename moved the live tables out, or not
                    renamed = bool(plan["live"]) and set(plan["live"]) <= set(_tables(cur, journal_db))
                if renamed:
                    for name in _trigger_names(cur, target):  # a partial first pass
                        cur.execute(f"DROP TRIGGER {quote_ident(target)}.{quote_ident(name)}")
                    recreated = _recreate(cur, target, plan["deferred"], repair=True)
                    _finish(cur, journal_db, staging, keep=bool(plan["live"]))
                    result = RepairResult(journal_db, "finished", [f"{len(plan['staged'])} restored tables in place",
                                                                  f"{len(recreated)} views/routines/triggers created"])
                else:
                    back = _undo(cur, journal_db, target, [tuple(t) for t in plan["old_triggers"]])
                    cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(staging)}")
                    result = RepairResult(journal_db, UNDONE, [f"triggers recreated: {', '.join(back) or 'none'}",
                                                               f"staging `{staging}` dropped"])
        finally:
            conn.close()
        log(result.line())
        results.append(result)
    return results


def recreate_objects(url: DatabaseURL, database: str, deferred: list[str]) -> list[str]:
    """Run the deferred view / routine / trigger statements in ``database`` (used by verification)."""
    conn = open_connection(url, "")
    try:
        with conn.cursor() as cur:
            return _recreate(cur, database, deferred)
    finally:
        conn.close()


def _recreate(cur, target: str, deferred: list[str], *, repair: bool = False) -> list[str]:
    """Drop the target's old views, then run the backup's view / routine / trigger statements in the target."""
    q = quote_ident
    cur.execute(f"USE {q(target)}")
    cur.execute(SESSION)
    for view in _names(cur, "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %s", target):
        cur.execute(f"DROP VIEW IF EXISTS {q(view)}")
    done = []
    for sql in deferred:
        try:
            cur.execute(sql)
        except pymysql.err.MySQLError as exc:
            if repair and exc.args and exc.args[0] in _ALREADY_EXISTS:
                continue
            raise SwapFailed(
                f"The tables were swapped into `{target}`, but recreating a view/trigger/routine failed "
                f"({exc.args[-1]}): {' '.join(sql.split()[:4])[:80]} ... (the rest of the file's text is not shown)",
                changed=True,
                next_step="create it by hand from the backup file, then run `rusing-ops db restore --repair "
                          f"--confirm {target}` to finish the swap (its journal is kept), or restore the "
                          "`__pre_restore_` tables.") from None
        done.append(" ".join(sql.split()[:4])[:80])
    return done
