"""The atomic swap: every live table to ``<target>__pre_restore_<ts>`` and every staged table into the target,
in one ``RENAME TABLE`` statement, then views, routines and triggers recreated in the target.

Triggers cannot move between databases with their table, so the live triggers are dropped just before the
rename (their definitions are in the pre-restore backup) and recreated if the rename fails.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import pymysql

from ..core.database import DB_WRITE_LOCK, create_engine, named_lock, quote_ident
from ..core.dburl import DatabaseURL
from ..core.errors import OpsError
from .connection import open_connection
from .load import SESSION


class SwapFailed(OpsError):
    """The rename or the recreation of views / triggers / routines failed."""


@dataclass
class SwapResult:
    pre_restore_db: str | None
    tables: int
    recreated: list[str] = field(default_factory=list)


@contextlib.contextmanager
def write_lock(url: DatabaseURL, timeout_s: float = 10.0):
    """The database write lock (``GET_LOCK``) shared with migrate, rollback and the app's own migrator."""
    engine = create_engine(url, pool_size=1)
    try:
        with named_lock(engine, url, DB_WRITE_LOCK, timeout_s):
            yield
    finally:
        engine.dispose()


def _names(cur, sql: str, *args) -> list[str]:
    cur.execute(sql, args)
    return [r[0].decode() for r in cur.fetchall()]


def swap_in(url: DatabaseURL, staging: str, target: str, pre_db: str, deferred: list[str], *,
            lock: Callable | None = None, log: Callable[[str], None] = lambda _l: None) -> SwapResult:
    """Swap the tables of ``staging`` into ``target``; ``deferred`` (views, routines, triggers) run afterwards.

    :param lock: context-manager factory held around the swap; default :func:`write_lock` on ``url``'s server.
    """
    q = quote_ident
    conn = open_connection(url, "")
    try:
        with (lock() if lock else write_lock(url)), conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS {q(target)} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
            staged = _names(cur, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                                 "AND TABLE_TYPE = 'BASE TABLE'", staging)
            live = _names(cur, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                               "AND TABLE_TYPE = 'BASE TABLE'", target)
            triggers = []
            for name in _names(cur, "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s",
                               target):
                cur.execute(f"SHOW CREATE TRIGGER {q(target)}.{q(name)}")
                triggers.append((name, cur.fetchone()[2].decode()))
            renames = [f"{q(target)}.{q(t)} TO {q(pre_db)}.{q(t)}" for t in live]
            renames += [f"{q(staging)}.{q(t)} TO {q(target)}.{q(t)}" for t in staged]
            if live:
                cur.execute(f"CREATE DATABASE {q(pre_db)} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
            for name, _sql in triggers:
                cur.execute(f"DROP TRIGGER {q(target)}.{q(name)}")
            try:
                if renames:
                    cur.execute("RENAME TABLE " + ", ".join(renames))
            except pymysql.err.MySQLError as exc:
                cur.execute(f"USE {q(target)}")
                for _name, sql in triggers:
                    cur.execute(sql)
                if live:
                    cur.execute(f"DROP DATABASE IF EXISTS {q(pre_db)}")
                raise SwapFailed(f"RENAME TABLE into `{target}` failed ({exc.args[-1]}); `{target}` is unchanged "
                                 f"and the loaded copy is kept in `{staging}`.",
                                 next_step=f"fix the cause, then run the restore again (DROP DATABASE `{staging}` "
                                           "when done).") from None
            log(f"swapped {len(staged)} tables into `{target}`" + (f"; replaced tables kept in `{pre_db}`" if live else ""))
            recreated = _recreate(cur, target, deferred)
            cur.execute(f"DROP DATABASE IF EXISTS {q(staging)}")
    finally:
        conn.close()
    return SwapResult(pre_db if live else None, len(staged), recreated)


def recreate_objects(url: DatabaseURL, database: str, deferred: list[str]) -> list[str]:
    """Run the deferred view / routine / trigger statements in ``database`` (used by verification)."""
    conn = open_connection(url, "")
    try:
        with conn.cursor() as cur:
            return _recreate(cur, database, deferred)
    finally:
        conn.close()


def _recreate(cur, target: str, deferred: list[str]) -> list[str]:
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
            raise SwapFailed(
                f"The tables were swapped into `{target}`, but recreating a view/trigger/routine failed "
                f"({exc.args[-1]}): {sql[:160]}", changed=True,
                next_step="create it by hand from the backup file, or restore the `__pre_restore_` tables.") from None
        done.append(" ".join(sql.split()[:4])[:80])
    return done
