"""What a backup contains besides rows, and how each value is written so that it loads back bit for bit.

Objects: tables (base, system-versioned: current rows only, said in the manifest's notes; partitioned; without a
key), sequences with their next value, views (in dependency order), triggers, routines, events. Any other object
refuses the backup by name (:class:`SchemaRefused`): nothing is left out silently.

Values (:meth:`Column.sql_text`): each is written as an SQL literal -- by the backup's C reader from the plain
value where it can (:meth:`Column.client_kind`, rawrows.render), else by the server, the same bytes either way.
FLOAT/DOUBLE through ``CAST(.. AS DOUBLE)`` (a FLOAT column prints 6 digits) with the sign of zero kept; binary as ``X'..'``; text in utf8 by
``QUOTE``, in any other character set as ``_<charset> X'..'`` (its own bytes); a value the server cannot format
(over ``max_allowed_packet``) makes the whole row NULL, which the dump refuses, never a NULL value.

Everything is read with plain PyMySQL on the dumping connection (``use_unicode=False``: values are bytes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pymysql

from ..core.database import as_text, list_tables, quote_ident
from ..core.errors import OpsError

NUMERIC = {"tinyint", "smallint", "mediumint", "int", "integer", "bigint", "decimal", "numeric", "year"}
FLOATING = {"float", "double", "real", "double precision"}
BINARY = {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "geometry", "point", "linestring",
          "polygon", "multipoint", "multilinestring", "multipolygon", "geometrycollection"}
# Types whose values can reach max_allowed_packet; every other column of a row fits in InnoDB's 64 KiB row.
LARGE = {"blob", "mediumblob", "longblob", "text", "mediumtext", "longtext", "json", "geometry", "linestring",
         "polygon", "multipoint", "multilinestring", "multipolygon", "geometrycollection"}
_QUOTE_CHARSETS = {"utf8mb4", "utf8mb3", "utf8", "ascii"}  # QUOTE() in utf8mb4 is exact; others go as hex
LONG_TEXT = {"text", "mediumtext", "longtext"}  # a value over LONG_BYTES is quoted by REPLACE (Column._escaped)
LONG_BYTES = 256
# Types whose text-protocol value is the very text QUOTE() is given (the backup's C reader then quotes it itself,
# rawrows.render); a type not here keeps the server's own literal (Column.sql_text).
CLIENT_QUOTED = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set", "date", "datetime",
                 "timestamp", "time"}
_GENERATED = re.compile(r"\b(?:VIRTUAL|STORED|PERSISTENT)\s+GENERATED\b", re.IGNORECASE)  # not DEFAULT_GENERATED
_DEFINER = re.compile(r"\s*DEFINER\s*=\s*(?:`(?:[^`]|``)*`|'[^']*'|\S+?)@(?:`(?:[^`]|``)*`|'[^']*'|[^\s*]+)", re.IGNORECASE)


class SchemaUnreadable(OpsError):
    """The server hid an object's definition from the backup user."""


class SchemaRefused(OpsError):
    """The database holds an object this tool cannot back up: the backup is refused, naming it."""


def sql_string(text: str) -> str:
    """``text`` as an SQL string literal (for the server to echo back verbatim)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


@dataclass
class Column:
    name: str
    data_type: str
    charset: str | None
    nullable: bool = True

    @property
    def large(self) -> bool:
        return self.data_type in LARGE

    @property
    def text_charset(self) -> str | None:
        """The character set of a text column (None for binary and non-string types)."""
        return None if self.data_type in BINARY or self.charset in (None, "binary") else self.charset

    def sql_text(self) -> str:
        """A server-side expression rendering this column as an SQL literal that restores it bit for bit.

        Never NULL for a NULL value (that is ``'NULL'``); NULL only when the server could not build the text (over
        ``max_allowed_packet``), which makes the whole row NULL so that the dump notices (never a silent NULL).
        """
        q = quote_ident(self.name)
        if self.data_type in NUMERIC:
            return f"IFNULL({q},'NULL')"
        if self.data_type in FLOATING:
            # CAST(.. AS DOUBLE) prints the exact binary value with enough digits (a FLOAT column prints 6);
            # -0 prints as 0, so it is written as a value that rounds to -0 (MariaDB keeps FLOAT -0 only so).
            neg_zero = "'-1e-50'" if self.data_type == "float" else "'-0e0'"
            return f"IF({q} IS NULL,'NULL',IF({q}=0 AND ATAN2({q},-1)<0,{neg_zero},CAST({q} AS DOUBLE)))"
        if self.data_type == "bit":
            return f"IFNULL(CONCAT('0x',HEX({q})),'NULL')"
        if self.data_type in BINARY:
            return f"IF({q} IS NULL,'NULL',CONCAT('X''',HEX({q}),''''))"
        if self.charset and self.charset not in _QUOTE_CHARSETS:  # the column's own bytes, announced as such
            return f"IF({q} IS NULL,'NULL',CONCAT('_{self.charset} X''',HEX({q}),''''))"
        if self.data_type in LONG_TEXT:
            return f"IF(LENGTH({q})>{LONG_BYTES},{self._escaped()},QUOTE({q}))"
        return f"QUOTE({q})"

    def client_kind(self) -> str:
        """How rawrows.render writes this column's value from the plain one the server sends: ``q`` quoted as
        QUOTE() does, ``x`` as ``X'..'``, or ``r``: the server writes the literal (:meth:`sql_text`) and it is
        copied. Byte for byte the text :meth:`sql_text` gives (test_speedups.py compares the two)."""
        if self.data_type in BINARY:
            return "x"
        if self.data_type in CLIENT_QUOTED and (self.charset is None or self.charset in _QUOTE_CHARSETS):
            return "q"
        return "r"

    def _escaped(self) -> str:
        """``QUOTE(column)`` of a non-NULL value, byte for byte, by four REPLACEs (backslash first, then quote, NUL,
        Ctrl-Z): MariaDB's QUOTE copies character by character, REPLACE searches; on the benchmark's 2 KB JSON
        payloads 2.5-3x less server time, on values under a few hundred bytes more (hence LONG_BYTES)."""
        q, cs = quote_ident(self.name), self.charset
        value = rf"REPLACE(REPLACE({q},'\\','\\\\'),'''','\\''')"
        value = rf"REPLACE(REPLACE({value},CHAR(0 USING {cs}),'\\0'),CHAR(26 USING {cs}),'\\Z')"
        return f"CONCAT('''',{value},'''')"


@dataclass
class Table:
    name: str
    create_sql: str
    columns: list[Column]  # stored columns only: generated columns are computed again by the server
    order_by: list[str]
    estimated_rows: int = 0
    key: list[str] | None = None  # primary key, or a unique key of NOT NULL columns: addresses one row
    kind: str = "BASE TABLE"
    # The row checksum takes the table's texts in utf8mb4 (checksum.settle): set where the server cannot join the
    # texts of its columns' character sets as they are (cp1251 with latin2, utf16 with utf8mb4).
    checksum_in_unicode: bool = False

    @property
    def large_columns(self) -> list[Column]:
        return [c for c in self.columns if c.large]

    def row_expression(self) -> str:
        return "CONCAT('('," + ",',',".join(c.sql_text() for c in self.columns) + ",')')"

    def key_condition(self) -> str:
        """A server-side expression giving the SQL condition that selects this row (``\\`id\\`<=>42``)."""
        by_name = {c.name: c for c in self.columns}
        parts = []
        for i, name in enumerate(self.key or []):
            parts.append(sql_string((" AND " if i else "") + quote_ident(name) + "<=>"))
            parts.append(by_name[name].sql_text())
        return "CONCAT(" + ",".join(parts) + ")"

    def insert_head(self) -> bytes:
        cols = ",".join(quote_ident(c.name) for c in self.columns)
        return f"INSERT INTO {quote_ident(self.name)} ({cols}) VALUES ".encode()

    def client_select(self, large_bytes: int | None = None, where: str | None = None,
                      also: str | None = None) -> tuple[str, bytes]:
        """(the query, its kinds) for rawrows.render: one column per value, as :meth:`Column.client_kind` says, and
        the rows of :meth:`select_sql` once rendered -- the same text, the same ``!`` rows (their large values not
        sent), the same order. ``also`` comes last."""
        kinds = "".join(c.client_kind() for c in self.columns)
        values = [quote_ident(c.name) if k != "r" else c.sql_text() for c, k in zip(self.columns, kinds)]
        big = self._big_row(large_bytes)
        if big:
            condition, marker = big
            values = [f"IF({condition},NULL,{v})" if c.large else v for c, v in zip(self.columns, values)]
            values.insert(0, f"IF({condition},{marker},NULL)")
            kinds = "m" + kinds
        return self._select(",".join(values), where, also), kinds.encode()

    def select_sql(self, large_bytes: int | None = None, where: str | None = None, also: str | None = None) -> str:
        """One text column per row: the row as an SQL tuple ``(...)``; a row whose large values add up to more
        than ``large_bytes`` comes as ``!`` and its key condition instead (then dumped in pieces, pieces.py).
        ``where``: only the rows of one key range (chunks.py). ``also``: a second column (the row's checksum)."""
        expr = self.row_expression()
        big = self._big_row(large_bytes)
        if big:
            expr = f"IF({big[0]},{big[1]},{expr})"
        return self._select(expr, where, also)

    def _big_row(self, large_bytes: int | None) -> tuple[str, str] | None:
        """(the condition that a row's large values add up to more than ``large_bytes``, the ``!`` marker that
        stands for such a row), or None when the table has no large column or no limit is set."""
        large = self.large_columns
        if not (large and large_bytes):
            return None
        size = "+".join(f"IFNULL(LENGTH({quote_ident(c.name)}),0)" for c in large)
        return f"{size}>{int(large_bytes)}", f"CONCAT('!',{self.key_condition()})" if self.key else "'!'"

    def _select(self, columns: str, where: str | None, also: str | None) -> str:
        where_sql = f" WHERE {where}" if where else ""
        also_sql = f",{also}" if also else ""
        order = ",".join(quote_ident(c) for c in self.order_by)
        return f"SELECT {columns}{also_sql} FROM {quote_ident(self.name)}{where_sql} ORDER BY {order}"

@dataclass
class Sequence:
    name: str
    create_sql: str
    next_value: int  # next_not_cached_value: no value handed out before the backup is handed out again

    def sql(self) -> str:
        q = quote_ident(self.name)
        return (f"DROP SEQUENCE IF EXISTS {q};\n{self.create_sql};\n"
                f"ALTER SEQUENCE {q} RESTART WITH {self.next_value};\n")


@dataclass
class Schema:
    tables: list[Table]
    views: list[tuple[str, str]] = field(default_factory=list)  # (name, CREATE VIEW) in dependency order
    triggers: list[tuple[str, str]] = field(default_factory=list)
    routines: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, name, CREATE ...)
    events: list[tuple[str, str]] = field(default_factory=list)
    sequences: list[Sequence] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the backup holds differently from the database


def strip_definer(sql: str) -> str:
    """Drop ``DEFINER=user@host`` so the restoring user owns views, triggers and routines (no SUPER needed)."""
    return _DEFINER.sub("", sql, count=1)


def _definition(cur, kind: str, database: str, name: str, column: int) -> str:
    """``SHOW CREATE <kind> <name>``'s DDL; the server returns NULL when the user may not read it (not its definer)."""
    what = f"{kind} {quote_ident(name)}"
    cur.execute(f"SHOW CREATE {kind} {quote_ident(database)}.{quote_ident(name)}")
    value = cur.fetchone()[column]
    if value is None:
        raise SchemaUnreadable(
            f"The backup user may not read the definition of {what} (SHOW CREATE returned NULL).",
            next_step="back up as the objects' definer, or grant the backup user SELECT on mysql.proc "
                      "(routines) / TRIGGER and SHOW VIEW on the database.")
    return strip_definer(as_text(value))


def _rows(cur, sql: str, args=()) -> list[tuple]:
    cur.execute(sql, args)
    return [tuple(as_text(v) if v is not None else None for v in row) for row in cur.fetchall()]


def read_tables(cur, database: str, *, with_ddl: bool = True) -> list[Table]:
    """The tables of ``database`` that hold rows (base and system-versioned), with their stored columns and keys."""
    q = quote_ident(database)
    base = _rows(cur, "SELECT TABLE_NAME, IFNULL(TABLE_ROWS, 0), TABLE_TYPE FROM information_schema.TABLES "
                      "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') "
                      "ORDER BY TABLE_NAME", (database,))
    columns: dict[str, list[Column]] = {}
    for table, name, dtype, charset, extra, nullable in _rows(
        cur, "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, CHARACTER_SET_NAME, EXTRA, IS_NULLABLE "
             "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME, ORDINAL_POSITION",
            (database,)):
        if _GENERATED.search(extra or ""):
            continue
        columns.setdefault(table, []).append(Column(name, dtype.lower(), charset, nullable == "YES"))
    keys: dict[str, dict[str, list[str]]] = {}
    for table, index, column in _rows(
        cur, "SELECT TABLE_NAME, INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS "
             "WHERE TABLE_SCHEMA = %s AND NON_UNIQUE = 0 AND SUB_PART IS NULL ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
        (database,)):
        keys.setdefault(table, {}).setdefault(index, []).append(column)
    tables = []
    for name, estimate, kind in base:
        create = ""
        if with_ddl:
            cur.execute(f"SHOW CREATE TABLE {q}.{quote_ident(name)}")
            create = as_text(cur.fetchone()[1])
        cols = columns.get(name, [])
        nullable = {c.name for c in cols if c.nullable}
        stored = {c.name for c in cols}
        uniques = {i: k for i, k in keys.get(name, {}).items() if set(k) <= stored}
        # A key addresses one row: the primary key, else a unique key without NULLs (several NULLs are allowed).
        key = uniques.get("PRIMARY") or next((k for k in uniques.values() if not set(k) & nullable), None)
        # Rows always come out in one stable order: by that key, else the first unique key, else every column.
        order = key or next(iter(uniques.values()), None) or [c.name for c in cols]
        tables.append(Table(name, create, cols, order, int(estimate), key, kind))
    from .checksum import settle  # checksum.py reads this module's types

    settle(cur, database, tables)
    return tables


def read_schema(cur, database: str) -> Schema:
    """Read every schema object of ``database`` through cursor ``cur`` (inside the snapshot transaction).

    Every object is either in the returned schema or named in :class:`SchemaRefused`: nothing is left out silently.
    """
    q = quote_ident(database)
    tables = read_tables(cur, database)
    notes = [f"table {t.name!r} is system-versioned: its current rows are backed up, its history is not (it "
             "restores as a versioned table whose history starts at the restore)" for t in tables
             if t.kind == "SYSTEM VERSIONED"]
    refused = [f"{kind.lower()} {name!r}" for name, kind in _rows(
        cur, "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
             "AND TABLE_TYPE NOT IN ('BASE TABLE', 'SYSTEM VERSIONED', 'VIEW', 'SEQUENCE') ORDER BY TABLE_NAME",
        (database,))]

    sequences = []
    for name in list_tables(cur, database, "SEQUENCE"):
        create = _definition(cur, "SEQUENCE", database, name, 1)
        try:  # MariaDB reads a sequence as a one-row table; TiDB has no such read: refused, never left out
            cur.execute(f"SELECT next_not_cached_value FROM {q}.{quote_ident(name)}")
        except pymysql.err.MySQLError as exc:
            refused.append(f"sequence {name!r} (its next value cannot be read here: error {exc.args[0]})")
            continue
        sequences.append(Sequence(name, create, int(cur.fetchone()[0])))

    views = []
    for (name,) in _rows(cur, "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %s "
                              "ORDER BY TABLE_NAME", (database,)):
        views.append((name, _definition(cur, "VIEW", database, name, 1)))

    triggers = []
    for (name,) in _rows(cur, "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s "
                              "ORDER BY EVENT_OBJECT_TABLE, ACTION_ORDER", (database,)):
        triggers.append((name, _definition(cur, "TRIGGER", database, name, 2)))

    routines = []
    for kind, name in _rows(cur, "SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES "
                                 "WHERE ROUTINE_SCHEMA = %s ORDER BY ROUTINE_TYPE, ROUTINE_NAME", (database,)):
        if kind not in ("FUNCTION", "PROCEDURE"):
            refused.append(f"{kind.lower()} {name!r}")
            continue
        routines.append((kind, name, _definition(cur, kind, database, name, 2)))

    events = []
    for (name,) in _rows(cur, "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s "
                              "ORDER BY EVENT_NAME", (database,)):
        events.append((name, _definition(cur, "EVENT", database, name, 3)))
    if refused:
        raise SchemaRefused(
            f"Database `{database}` holds objects this tool cannot back up: {', '.join(refused)}. No backup was "
            "written.", next_step="back them up with `mariadb-dump` (or drop them), then run `rusing-ops db backup` "
                                  "again.", objects=refused)
    return Schema(tables, order_views(views), triggers, routines, events, sequences, notes)


def order_views(views: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Views ordered so that each comes after the views it selects from (name order among independent ones).

    The tables a view reads are taken from its parsed query (sqlglot; the lexer's identifiers if it cannot parse),
    and ordered with graphlib: a name inside a string or a column alias is no dependency.
    """
    if len(views) < 2:  # nothing to order (and sqlglot's import alone costs ~0.15 s of a backup)
        return list(views)
    import graphlib

    names = {n for n, _sql in views}
    graph = graphlib.TopologicalSorter()
    for name, sql in sorted(views):
        graph.add(name, *sorted(_reads(sql) & names - {name}))
    by_name = dict(views)
    try:
        graph.prepare()
    except graphlib.CycleError:  # only a misread name can make one: keep name order
        return sorted(views)
    ordered: list[tuple[str, str]] = []
    while graph.is_active():
        ready = sorted(graph.get_ready())
        ordered += [(n, by_name[n]) for n in ready]
        graph.done(*ready)
    return ordered


def _reads(sql: str) -> set[str]:
    """The names a ``CREATE VIEW`` statement's query reads from."""
    import logging

    import sqlglot
    from sqlglot import exp

    from .sqlsplit import tokens

    toks = [t for t in tokens(sql.encode()) if t.kind not in ("space", "comment")]
    at = next((i for i, t in enumerate(toks) if t.upper == "VIEW"), None)
    body = toks[at + 3:] if at is not None and at + 2 < len(toks) and toks[at + 2].upper == "AS" else toks
    query = b" ".join(t.text for t in body).decode()
    quiet = logging.getLogger("sqlglot")
    level, quiet.level = quiet.level, logging.CRITICAL
    try:
        return {t.name for t in sqlglot.parse_one(query, read="mysql").find_all(exp.Table)}
    except sqlglot.errors.SqlglotError:
        return {t.name for t in body if t.kind in ("ident", "word")}
    finally:
        quiet.level = level
