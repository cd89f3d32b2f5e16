"""What a backup contains besides rows: table DDL, columns and keys, views (in dependency order), triggers, routines.

Everything is read with plain PyMySQL on the dumping connection (``use_unicode=False``: values are bytes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..core.database import quote_ident
from ..core.errors import OpsError

NUMERIC = {"tinyint", "smallint", "mediumint", "int", "integer", "bigint", "decimal", "numeric", "float", "double",
           "real", "year"}
BINARY = {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "geometry", "point", "linestring",
          "polygon", "multipoint", "multilinestring", "multipolygon", "geometrycollection"}
_DEFINER = re.compile(r"\s*DEFINER\s*=\s*(?:`(?:[^`]|``)*`|'[^']*'|\S+?)@(?:`(?:[^`]|``)*`|'[^']*'|[^\s*]+)", re.I)


class SchemaUnreadable(OpsError):
    """The server hid an object's definition from the backup user."""


@dataclass
class Column:
    name: str
    data_type: str
    charset: str | None

    def sql_text(self) -> str:
        """A server-side expression rendering this column as an SQL literal (never NULL itself)."""
        q = quote_ident(self.name)
        if self.data_type in NUMERIC:
            return f"IFNULL({q},'NULL')"
        if self.data_type == "bit":
            return f"IFNULL(CONCAT('0x',HEX({q})),'NULL')"
        if self.data_type in BINARY:
            return f"IFNULL(CONCAT('X''',HEX({q}),''''),'NULL')"
        if self.charset and self.charset not in ("utf8mb4", "utf8mb3", "utf8", "ascii", "binary"):
            q = f"CONVERT({q} USING utf8mb4)"
        return f"QUOTE({q})"


@dataclass
class Table:
    name: str
    create_sql: str
    columns: list[Column]  # stored columns only: generated columns are computed again by the server
    order_by: list[str]
    estimated_rows: int = 0

    def row_expression(self) -> str:
        return "CONCAT('('," + ",',',".join(c.sql_text() for c in self.columns) + ",')')"

    def insert_head(self) -> bytes:
        cols = ",".join(quote_ident(c.name) for c in self.columns)
        return f"INSERT INTO {quote_ident(self.name)} ({cols}) VALUES ".encode()

    def select_sql(self) -> str:
        order = ",".join(quote_ident(c) for c in self.order_by)
        return f"SELECT {self.row_expression()} FROM {quote_ident(self.name)} ORDER BY {order}"


@dataclass
class Schema:
    tables: list[Table]
    views: list[tuple[str, str]] = field(default_factory=list)  # (name, CREATE VIEW) in dependency order
    triggers: list[tuple[str, str]] = field(default_factory=list)
    routines: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, name, CREATE ...)


def strip_definer(sql: str) -> str:
    """Drop ``DEFINER=user@host`` so the restoring user owns views, triggers and routines (no SUPER needed)."""
    return _DEFINER.sub("", sql, count=1)


def _text(value) -> str:
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)


def _definition(cur, what: str, column: int) -> str:
    """``SHOW CREATE <what>``'s DDL; the server returns NULL when the user may not read it (not its definer)."""
    cur.execute(f"SHOW CREATE {what}")
    value = cur.fetchone()[column]
    if value is None:
        raise SchemaUnreadable(
            f"The backup user may not read the definition of {what} (SHOW CREATE returned NULL).",
            next_step="back up as the objects' definer, or grant the backup user SELECT on mysql.proc "
                      "(routines) / TRIGGER and SHOW VIEW on the database.")
    return strip_definer(_text(value))


def _rows(cur, sql: str, args=()) -> list[tuple]:
    cur.execute(sql, args)
    return [tuple(_text(v) if v is not None else None for v in row) for row in cur.fetchall()]


def read_schema(cur, database: str) -> Schema:
    """Read every schema object of ``database`` through cursor ``cur`` (inside the snapshot transaction)."""
    tables = []
    base = _rows(cur, "SELECT TABLE_NAME, IFNULL(TABLE_ROWS, 0) FROM information_schema.TABLES "
                      "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME", (database,))
    columns: dict[str, list[Column]] = {}
    for table, name, dtype, charset, extra in _rows(
        cur, "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, CHARACTER_SET_NAME, EXTRA FROM information_schema.COLUMNS "
             "WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME, ORDINAL_POSITION", (database,)):
        if "GENERATED" in (extra or "").upper():
            continue
        columns.setdefault(table, []).append(Column(name, dtype.lower(), charset))
    keys: dict[str, dict[str, list[str]]] = {}
    for table, index, column in _rows(
        cur, "SELECT TABLE_NAME, INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS "
             "WHERE TABLE_SCHEMA = %s AND NON_UNIQUE = 0 AND SUB_PART IS NULL ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
        (database,)):
        keys.setdefault(table, {}).setdefault(index, []).append(column)
    for name, estimate in base:
        cur.execute(f"SHOW CREATE TABLE {quote_ident(name)}")
        create = _text(cur.fetchone()[1])
        cols = columns.get(name, [])
        uniques = keys.get(name, {})
        # Primary key, else the first unique key, else every column: rows always come out in one stable order.
        order = uniques.get("PRIMARY") or next(iter(uniques.values()), None) or [c.name for c in cols]
        tables.append(Table(name, create, cols, order, int(estimate)))

    views = []
    for (name,) in _rows(cur, "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %s "
                              "ORDER BY TABLE_NAME", (database,)):
        views.append((name, _definition(cur, f"VIEW {quote_ident(name)}", 1)))

    triggers = []
    for (name,) in _rows(cur, "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s "
                              "ORDER BY EVENT_OBJECT_TABLE, ACTION_ORDER", (database,)):
        triggers.append((name, _definition(cur, f"TRIGGER {quote_ident(name)}", 2)))

    routines = []
    for kind, name in _rows(cur, "SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES "
                                 "WHERE ROUTINE_SCHEMA = %s ORDER BY ROUTINE_TYPE, ROUTINE_NAME", (database,)):
        routines.append((kind, name, _definition(cur, f"{kind} {quote_ident(name)}", 2)))
    return Schema(tables, order_views(views), triggers, routines)


def order_views(views: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Views ordered so that each comes after the views it selects from (name order among independent ones)."""
    pending = dict(views)
    ordered: list[tuple[str, str]] = []
    while pending:
        ready = [n for n, sql in pending.items()
                 if not any(f"`{other}`" in sql.split(" AS ", 1)[-1] for other in pending if other != n)]
        if not ready:  # a cycle can only be a false match on a name; keep name order
            ready = sorted(pending)
        for n in sorted(ready):
            ordered.append((n, pending.pop(n)))
    return ordered
