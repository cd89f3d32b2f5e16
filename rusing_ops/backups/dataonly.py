"""A data-only dump (``mysqldump --no-create-info``) restored into an existing database: its tables, sequences,
views and triggers are taken from the target itself, so the swap replaces the rows and keeps the schema.

The dump must hold every base table of the target (its INSERTs, or the ``LOCK TABLES`` / ``ALTER TABLE ... DISABLE
KEYS`` it writes for an empty table): a restore replaces whole tables, and a table left out would come back empty.
Routines and events stay in the target (a swap does not move them).
"""

from __future__ import annotations

import re

from ..core.dburl import DatabaseURL
from ..core.errors import OpsError
from .connection import open_connection
from .schema import read_schema
from .sqlsplit import split_text

_TRIGGER_NAME = re.compile(r"\bTRIGGER\s+(?:IF\s+NOT\s+EXISTS\s+)?(`(?:[^`]|``)+`|\w+)", re.IGNORECASE)


class DataOnlyRefused(OpsError):
    """A data-only dump does not fit the database it is restored into."""


class Carried:
    """The target's views and triggers, to recreate after the swap (a trigger the file defines is the file's)."""

    def __init__(self, views: list[str], triggers: list[tuple[str, str]]):
        self.views, self.triggers = views, triggers

    def deferred(self, file_deferred: list[str]) -> list[str]:
        own = {_name(m.group(1)) for sql in file_deferred for m in [_TRIGGER_NAME.search(sql)] if m}
        return self.views + [sql for name, sql in self.triggers if name not in own] + file_deferred


def copy_schema(url: DatabaseURL, target: str | None, staging: str, tables: list[str], label: str) -> Carried:
    """Create the target's tables and sequences in ``staging``; return its views and triggers (:class:`Carried`)."""
    if target is None:
        raise DataOnlyRefused(f"{label!r} is a data-only dump (no CREATE TABLE): it can only be restored into an "
                              "existing database, whose schema it keeps. No statement of the file was run.",
                              next_step="restore it with `rusing-ops db restore --file ...`, or use a dump with its "
                                        "schema.")
    conn = open_connection(url, target)
    try:
        with conn.cursor() as cur:
            schema = read_schema(cur, target)
    finally:
        conn.close()
    have = {t.name for t in schema.tables}
    if not have:
        raise DataOnlyRefused(
            f"{label!r} is a data-only dump (no CREATE TABLE), and `{target}` has no tables to take the schema from. "
            "The restore is refused; no statement of the file was run.",
            next_step="restore a dump that includes the schema, or create the tables first (e.g. `rusing-ops db "
                      "migrate`).")
    unknown, missing = sorted(set(tables) - have), sorted(have - set(tables))
    if unknown or missing:
        what = (f"rows for {len(unknown)} table(s) `{target}` does not have ({', '.join(unknown)})" if unknown else
                f"no rows for {len(missing)} of the {len(have)} tables of `{target}` ({', '.join(missing)}): they "
                "would come back empty")
        raise DataOnlyRefused(f"{label!r} is a data-only dump (no CREATE TABLE) with {what}. The restore is refused; "
                              "no statement of the file was run.",
                              next_step="dump every table of the database (mysqldump --no-create-info DB), or a dump "
                                        "with its schema.")
    conn = open_connection(url, staging)
    try:
        with conn.cursor() as cur:
            cur.execute("SET FOREIGN_KEY_CHECKS = 0")
            for seq in schema.sequences:
                for stmt in split_text(seq.sql()):
                    cur.execute(stmt)
            for table in schema.tables:
                cur.execute(table.create_sql)
    finally:
        conn.close()
    return Carried([sql for _view, sql in schema.views], list(schema.triggers))


def _name(raw: str) -> str:
    return raw[1:-1].replace("``", "`") if raw.startswith("`") else raw
