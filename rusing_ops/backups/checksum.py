"""The independent table checksum: computed by the server from the stored values, never from the dump's text.

Each row hashes to ``CRC32`` of its stored columns' values joined by 0x1F, and a NULL flag per column; large
values (BLOB/TEXT/JSON/geometry) enter as ``<length>:<CRC32 of the value>`` so that no row expression can
exceed ``max_allowed_packet``. The table's checksum is the row count and the SUM of the rows' hashes (a SUM, not
BIT_XOR: two equal rows do not cancel out), independent of row order, computed in one pass by the server.
FLOAT/DOUBLE enter as their exact value (``CAST(.. AS DOUBLE)``) plus the sign of zero. Only functions MariaDB,
MySQL and TiDB share are used. CRC32 of CONCAT_WS, not MD5 of length-prefixed values: on the benchmark's 1x
dataset the MD5 pass took 3.9 s, length-prefixed CRC32 0.5 s, this 0.2 s (the dump's own query: 1.0 s); a changed
row goes unnoticed with odds of 2^-32.
It guards against rendering bugs and damage, not against someone who can rewrite the manifest too.

The backup has the server compute each row's hash in the dump's own query, beside (never from) the row's SQL text,
inside the snapshot transaction, and adds them up itself (one scan of the table instead of two); restore and
verify have the server compute the same sum on the loaded copy. A value the dump rendered wrongly therefore fails
the comparison.
"""

from __future__ import annotations

from ..core.database import quote_ident
from ..core.flavour import kind_from_version
from .schema import FLOATING, Column, Table

PREFIX = "crc32ws"  # names the method inside the value, so that a later method cannot be mistaken for this one
# The session a checksum is computed in, as the backup's snapshot has it (snapshot.start_snapshot): TIMESTAMPs
# hash as UTC text, and a server-wide PAD_CHAR_TO_FULL_LENGTH would change how CHARs read.
CHECKSUM_SESSION = "SET SESSION time_zone = '+00:00', SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO'"


def _joined_as_is(column: Column) -> bool:
    """Whether :func:`_value` gives the column itself: a text of its own character set, for CONCAT_WS to join."""
    return column.text_charset is not None and not column.large and column.data_type not in FLOATING and \
        column.data_type not in ("bit", "json")


def settle(cur, database: str, tables: list[Table]) -> None:
    """Set ``checksum_in_unicode`` on each table whose row checksum the server refuses as written (error 1271,
    "Illegal mix of collations": texts of two character sets it cannot join, cp1251 with latin2, utf16 with
    utf8mb4). Asked of the server itself, with the very expression (``LIMIT 0``: nothing is read), for the tables
    whose texts have two character sets or more; the schema decides it, so the backup and the restored copy agree.
    A table the server takes as it is keeps the hashes earlier backups recorded."""
    for table in tables:
        if len({c.text_charset for c in table.columns if _joined_as_is(c)} - {"ascii"}) < 2:
            continue
        try:
            cur.execute(f"SELECT {row_checksum(table)} FROM {quote_ident(database)}.{quote_ident(table.name)} "
                        "LIMIT 0")
            cur.fetchall()
        except Exception as exc:  # pymysql's OperationalError 1271 (or 1267/1270: the other collation mixes)
            if not (exc.args and exc.args[0] in (1267, 1270, 1271)):
                raise
            table.checksum_in_unicode = True


def _value(column: Column, in_unicode: bool = False) -> str:
    """The column's stored value in a form that differs whenever the stored bits differ (``in_unicode``: a text
    converted to utf8mb4, where the server cannot join the table's character sets as they are)."""
    q = quote_ident(column.name)
    if in_unicode and _joined_as_is(column) and column.text_charset != "utf8mb4":
        return f"CONVERT({q} USING utf8mb4)"
    if column.large:
        return f"CONCAT(LENGTH({q}),':',CRC32({q}))"  # bounded, whatever the value's size
    if column.data_type in FLOATING:
        return f"CONCAT(CAST({q} AS DOUBLE),IF({q}=0 AND ATAN2({q},-1)<0,'-',''))"
    if column.data_type == "bit":
        return f"HEX({q})"
    if column.data_type == "json":  # MySQL/TiDB's binary JSON: its canonical text
        return f"CAST({q} AS CHAR)"
    return q  # numbers, dates and times as text; strings as their bytes (the binary separator makes it binary)


def row_checksum(table: Table) -> str:
    """The server-side expression of one row's hash: ``CRC32(CONCAT_WS(0x1f, <values>, <one NULL flag per
    column>))``. Every part is bounded (large values enter by their length and CRC32), so the text never reaches
    ``max_allowed_packet`` and the hash is never NULL. The backup selects it beside each row's SQL text (one scan,
    dump.py); restore and verify sum it over the loaded copy (:func:`checksum_sql`): one definition for both."""
    if not table.columns:
        return "0"
    values = ",".join(_value(c, table.checksum_in_unicode) for c in table.columns)
    return f"CRC32(CONCAT_WS(0x1f,{values},{null_flags(table)}))"


def null_flags(table: Table) -> str:
    """One digit per column, ``ISNULL(column)``: a NOT NULL column's flag is the constant ``0`` it always is (in a
    select list ISNULL of a NOT NULL column is 0, zero dates included), and neighbouring constants are one literal
    -- the same text as ISNULL over every column, with 30% less server time on the benchmark's tables."""
    parts: list[str] = []
    for column in table.columns:
        if column.nullable:
            parts.append(f"ISNULL({quote_ident(column.name)})")
        elif parts and parts[-1].startswith("'"):
            parts[-1] = parts[-1][:-1] + "0'"
        else:
            parts.append("'0'")
    return parts[0] if len(parts) == 1 else "CONCAT(" + ",".join(parts) + ")"


def checksum_text(count: int, total: int) -> str:
    """How a table's checksum is written in the manifest: ``crc32ws:<rows>:<sum of the rows' hashes>``."""
    return f"{PREFIX}:{count}:{total}"


def rows_of(checksum: str) -> int:
    """The row count a checksum (:func:`checksum_text`) holds."""
    return int(checksum.split(":")[1])


def checksum_sql(database: str, table: Table, where: str | None = None) -> str:
    """``(rows, sum of the rows' hashes)`` of ``database.table`` (:func:`row_checksum`), or of the rows ``where``
    selects (a key-range chunk: chunks.py; the chunks' counts and sums add up to the table's)."""
    return (f"SELECT COUNT(*), IFNULL(SUM({row_checksum(table)}),0) "
            f"FROM {quote_ident(database)}.{quote_ident(table.name)}" + (f" WHERE {where}" if where else ""))


def table_checksum(cur, database: str, table: Table, where: str | None = None) -> str:
    """The checksum of one table, or of the rows ``where`` selects, through ``cur`` (a session in
    :data:`CHECKSUM_SESSION`): the one query restore and verify hash the loaded copy with."""
    cur.execute(checksum_sql(database, table, where))
    count, total = cur.fetchone()
    return checksum_text(int(count), int(total))


def same_flavour(conn, server_version: str) -> bool:
    """Whether ``conn``'s server is of the kind that took a backup (``server_version`` from its manifest).

    The checksum hashes values as the server prints them; MariaDB, MySQL and TiDB print some DOUBLEs and JSON
    differently (TiDB: 3141500000000000 for 3.1415e15), so checksums only compare between servers of one kind.
    """
    with conn.cursor() as cur:
        cur.execute("SELECT VERSION(), @@version_comment")
        version, comment = (v.decode() if isinstance(v, (bytes, bytearray)) else str(v) for v in cur.fetchone())
    return kind_from_version(version, comment) == kind_from_version(server_version)
