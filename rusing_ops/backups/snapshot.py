"""One consistent snapshot shared by several connections, so that tables can be dumped in parallel.

InnoDB gives each ``START TRANSACTION WITH CONSISTENT SNAPSHOT`` its own read view. To make the views of N
connections identical, writes are held for the instant the N transactions start: a separate locker connection
takes ``FLUSH TABLES WITH READ LOCK`` (needs RELOAD) or else ``LOCK TABLES ... READ`` on every table, the workers
start their snapshots, the locker unlocks (mydumper's ``--trx-consistency-only`` does the same). Without either
privilege, or when the lock is not granted within ``LOCK_WAIT_S``, the dump falls back to one connection.
"""

from __future__ import annotations

from typing import Callable

import pymysql

from ..core.database import quote_ident
from ..core.dburl import DatabaseURL

LOCK_WAIT_S = 10


def start_snapshot(conn) -> None:
    """Begin a read-only REPEATABLE READ transaction with its snapshot taken now (UTC session, no sql_mode tricks)."""
    with conn.cursor() as cur:
        cur.execute("SET SESSION time_zone = '+00:00', SESSION net_write_timeout = 3600, "
                    "SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO'")
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")


def _hold_writes(locker, database: str) -> str | None:
    """Block writes on ``locker``'s session; return how, or None when the server refused both ways."""
    with locker.cursor() as cur:
        cur.execute(f"SET SESSION lock_wait_timeout = {LOCK_WAIT_S}")
        try:
            cur.execute("FLUSH TABLES WITH READ LOCK")
            return "FLUSH TABLES WITH READ LOCK"
        except pymysql.err.MySQLError:
            pass
        cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                    "AND TABLE_TYPE = 'BASE TABLE'", (database,))
        names = [r[0].decode() if isinstance(r[0], bytes) else r[0] for r in cur.fetchall()]
        if not names:
            return "no tables"
        try:
            cur.execute("LOCK TABLES " + ", ".join(f"{quote_ident(n)} READ" for n in names))
            return "LOCK TABLES"
        except pymysql.err.MySQLError:
            return None


def open_snapshots(url: DatabaseURL, count: int, connect: Callable, log: Callable[[str], None]) -> list:
    """``count`` connections (``connect(url)``) inside one shared snapshot; fewer (one) if writes cannot be held."""
    conns = [connect(url)]
    try:
        if count > 1:
            locker = connect(url)
            try:
                how = _hold_writes(locker, url.database)
                if how is None:
                    log("parallel dump needs FLUSH TABLES WITH READ LOCK (RELOAD) or LOCK TABLES privileges, or "
                        "the lock was not granted in time: dumping on one connection")
                else:
                    conns += [connect(url) for _ in range(count - 1)]
                    for conn in conns:
                        start_snapshot(conn)
                    return conns
            finally:
                locker.close()  # releases the lock (UNLOCK TABLES happens with the session)
        start_snapshot(conns[0])
        return conns
    except BaseException:
        for conn in conns:
            conn.close()
        raise
