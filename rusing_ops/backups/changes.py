"""Has a database changed? A fingerprint of every table (definition + server-computed checksum) and object.

A restore takes one when it begins and compares it with the target just before the swap, under the write lock:
anything written meanwhile (a migration from another Dagster instance, the app, a person) would be silently
replaced by the swap, so the swap is refused instead, naming what changed.
"""

from __future__ import annotations

import hashlib
import re

import pymysql

from ..core.database import as_text, list_tables, quote_ident


def _rows(cur, sql: str, *args) -> list[tuple]:
    cur.execute(sql, args)
    return cur.fetchall()


def _checksum(cur, database: str, table: str) -> str:
    name = f"{quote_ident(database)}.{quote_ident(table)}"
    for sql in (f"CHECKSUM TABLE {name}", f"ADMIN CHECKSUM TABLE {name}"):  # MariaDB/MySQL, then TiDB
        try:
            row = _rows(cur, sql)[0]
        except pymysql.err.MySQLError:
            continue
        if row[-1] is not None or len(row) > 2:
            return ":".join(as_text(v) for v in row[1:])
    return "rows:" + as_text(_rows(cur, f"SELECT COUNT(*) FROM {name}")[0][0])


def fingerprint(cur, database: str) -> dict[str, str]:
    """``{"table t": ..., "view v": ..., "trigger x": ..., "routine r": ...}`` for ``database`` (empty if absent)."""
    out = {}
    for table in list_tables(cur, database):
        create = as_text(_rows(cur, f"SHOW CREATE TABLE {quote_ident(database)}.{quote_ident(table)}")[0][1])
        create = re.sub(r" AUTO_INCREMENT=\d+", "", create)  # a failed insert moves it without changing data
        out[f"table {table}"] = hashlib.sha256(create.encode()).hexdigest()[:16] + "/" + _checksum(cur, database, table)
    for kind, sql in (
            ("view", "SELECT TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %s"),
            ("trigger", "SELECT TRIGGER_NAME, ACTION_STATEMENT FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s"),
            ("routine", "SELECT ROUTINE_NAME, ROUTINE_DEFINITION FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s")):
        for name, definition in _rows(cur, sql, database):
            out[f"{kind} {as_text(name)}"] = hashlib.sha256(as_text(definition).encode()).hexdigest()[:16]
    return out


def describe_changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """``["table `t` changed", "table `u` added", ...]``, empty when nothing changed."""
    out = []
    for key in sorted(set(before) | set(after)):
        kind, name = key.split(" ", 1)
        if key not in before:
            out.append(f"{kind} `{name}` added")
        elif key not in after:
            out.append(f"{kind} `{name}` removed")
        elif before[key] != after[key]:
            out.append(f"{kind} `{name}` changed")
    return out
