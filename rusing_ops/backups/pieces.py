"""Rows too large to render as one SQL text: their large values are dumped in bounded pieces.

The server cannot build a string longer than ``max_allowed_packet`` (``CONCAT``/``HEX`` return NULL), and one
protocol packet carries at most 16 MiB. A row whose BLOB/TEXT values add up to more than ``large_bytes`` is
therefore announced by the dump's main query as ``!<key condition>`` and written here as::

    SET @rusing_ops_b7_0 = X'<piece>';                                  -- one statement per piece
    SET @rusing_ops_b7_0 = CONCAT(@rusing_ops_b7_0, X'<piece>');
    INSERT INTO `t` (...) VALUES (1, 'small', @rusing_ops_b7_0);      -- the row, whole, in one INSERT
    SET @rusing_ops_b7_0 = NULL;

User variables rather than ``UPDATE t SET c = CONCAT(c, ..)``: the row is inserted once with its final values, so a
CHECK constraint (MariaDB's JSON is ``json_valid()``-checked LONGTEXT) never sees a partial value. Text is cut on
character boundaries (``SUBSTRING`` counts characters in a text column) and each piece carries the column's
character set, so the bytes stored are the bytes read. The variable names are unique within one backup, so pieces
of rows dumped in parallel may interleave. A value longer than ``max_allowed_packet`` cannot be rebuilt by any
statement: the backup refuses, naming the table, the row and the column.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from ..core.database import quote_ident
from ..core.errors import OpsError
from .schema import BINARY, Table
from .sqlsplit import FRAME

_names = itertools.count(1)
PIECE_BYTES = 1 << 20  # raw bytes per piece: a 2 MiB statement


class ValueTooLarge(OpsError):
    """A value cannot be written as SQL within the server's max_allowed_packet."""


def statement(sql: bytes) -> bytes:
    """One statement announced by its length, like the dump's INSERTs (sqlsplit.py takes it without parsing)."""
    return b"%s%d\n%s;\n" % (FRAME, len(sql) + 2, sql)


def dump_big_row(conn, table: Table, condition: bytes, emit: Callable[[bytes], None], framed: Callable,
                 *, max_packet: int, piece_bytes: int = PIECE_BYTES) -> int:
    """Write the row of ``table`` selected by ``condition`` (SQL text from the server) through ``emit``.

    ``framed(head, body)`` frames the INSERT as the dump frames its others. Returns the number of bytes emitted.
    """
    cond = condition.decode("utf-8", "replace")
    large = table.large_columns
    n = next(_names)
    var = {c.name: f"@rusing_ops_b{n}_{i}" for i, c in enumerate(large)}
    parts = [f"IF({quote_ident(c.name)} IS NULL,'NULL','{var[c.name]}')" if c.name in var else c.sql_text()
             for c in table.columns]
    sizes = ",".join(f"LENGTH({quote_ident(c.name)}),CHAR_LENGTH({quote_ident(c.name)})" for c in large)
    where = f"FROM {quote_ident(table.name)} WHERE {cond}"
    with conn.cursor() as cur:
        row_text = "CONCAT('('," + ",',',".join(parts) + ",')')"
        cur.execute(f"SELECT {row_text},{sizes} {where}")
        rows = cur.fetchall()
        if len(rows) != 1:
            raise OpsError(f"Table {table.name!r}: the row {cond} was not found again in the snapshot "
                           f"({len(rows)} rows).", next_step="run `rusing-ops db backup` again.")
        row = rows[0]
        written = 0
        for i, column in enumerate(large):
            nbytes, nchars = row[1 + 2 * i], row[2 + 2 * i]
            if nbytes is None:
                continue
            nbytes = int(nbytes)
            if nbytes > max_packet - 1024:
                raise ValueTooLarge(
                    f"Table {table.name!r}, row {cond}: column {column.name!r} holds {nbytes:,} bytes, more than "
                    f"the server's max_allowed_packet ({max_packet:,}); no SQL statement can restore it. No backup "
                    "was written.",
                    next_step="raise max_allowed_packet on the server (SET GLOBAL max_allowed_packet=1073741824) "
                              "and run `rusing-ops db backup` again.")
            charset = column.text_charset or ("utf8mb4" if column.data_type == "json" else None)  # MySQL's JSON
            binary = column.data_type in BINARY or charset is None
            # A piece's hex (2 bytes a byte) must fit one server string and, as a SET, one statement.
            raw = max(min(piece_bytes, (max_packet - 64 * 1024) // 4), 1024)
            step = raw if binary else raw // 4  # a character is at most 4 bytes
            total = nbytes if binary else int(nchars)
            intro = "" if binary else f"_{charset} "
            name = var[column.name]
            for pos in range(1, max(total, 1) + 1, step):
                cur.execute(f"SELECT HEX(SUBSTRING({quote_ident(column.name)},{pos},{step})) {where}")
                hexed = cur.fetchone()[0]
                if hexed is None:  # cannot happen with the sizes above; never write a missing piece as nothing
                    raise ValueTooLarge(f"Table {table.name!r}, row {cond}: the server could not return a piece of "
                                        f"column {column.name!r}. No backup was written.",
                                        next_step="raise max_allowed_packet on the server and run `rusing-ops db "
                                                  "backup` again.")
                piece = f"{intro}X'".encode() + hexed + b"'"
                value = piece if pos == 1 else b"CONCAT(%s,%s)" % (name.encode(), piece)
                stmt = statement(b"SET %s = %s" % (name.encode(), value))
                emit(stmt)
                written += len(stmt)
    stmt = framed(table.insert_head(), row[0])
    emit(stmt)
    if var:
        emit(statement(("SET " + ", ".join(f"{v} = NULL" for v in var.values())).encode()))
    return written + len(stmt)
