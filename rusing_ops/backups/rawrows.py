"""Read a two-column text result set straight from the MySQL protocol packets: each row's SQL text and its checksum.

PyMySQL turns every row into several Python objects (packet, row tuple, converters); with one text column per row
that was 11 of 12 profiled seconds of a backup (and half the trial dumper's time in research/bench.md §4c). Here a
row is one packet of length-encoded strings: the row's SQL text (or its parts, schema.Table.select_sql), then the
row's CRC32 (checksum.py) as a decimal number; a few slices per row. PyMySQL still sends the query and reads the column definitions; only the
rows are read here, and the connection is left exactly as PyMySQL leaves it after an unbuffered result.
"""

from __future__ import annotations

from collections.abc import Iterator

import pymysql
from pymysql import err

READ_BYTES = 1 << 20
_MAX_PACKET = 0xFFFFFF


def _value(buf: bytes, at: int) -> tuple[bytes | None, int]:
    """The length-encoded string at ``at`` (None for NULL) and where the next one starts."""
    first = buf[at]
    if first < 0xFB:
        return buf[at + 1:at + 1 + first], at + 1 + first
    if first == 0xFB:
        return None, at + 1
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}[first]
    length = int.from_bytes(buf[at + 1:at + 1 + size], "little")
    start = at + 1 + size
    return buf[start:start + length], start + length


def checked_rows(conn: pymysql.connections.Connection, sql: str, texts: int = 1) -> Iterator[tuple[list, int]]:
    """Run ``sql`` (``texts`` text columns, then a non-NULL integer) on ``conn``; yield, batch by batch in result
    order, the rows' texts (NULL is ``None``; a tuple of them per row when ``texts`` > 1) and the sum of the last
    column's values over the same rows.

    Raises the server's error as PyMySQL would; a row over 16 MiB (split packets) raises ``err.DataError``.
    """
    conn.query(sql, unbuffered=True)
    result = conn._result
    if result.field_count != texts + 1:
        raise err.ProgrammingError(f"checked_rows expects {texts + 1} columns, the query returned {result.field_count}")
    rfile = conn._rfile
    buf = b""
    pos = 0
    try:
        while True:
            batch: list[bytes | None] = []
            sums: list[bytes] = []
            chunk = rfile.read1(READ_BYTES)
            if not chunk:
                raise err.OperationalError(2013, "Lost connection to MySQL server during query")
            buf = buf[pos:] + chunk
            pos = 0
            end_of_data = len(buf)
            while pos + 4 <= end_of_data:
                length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
                end = pos + 4 + length
                if end > end_of_data:
                    break
                if length == _MAX_PACKET:
                    raise err.DataError(2020, "a row is larger than 16 MiB; this reader does not join split packets")
                first = buf[pos + 4]
                if texts > 1 and first != 0xFF and not (first == 0xFE and length < 9):
                    at = pos + 4
                    row = []
                    for _ in range(texts):
                        value, at = _value(buf, at)
                        row.append(value)
                    batch.append(tuple(row))
                elif first < 0xFB:  # the common case inline: a text under 251 bytes
                    batch.append(buf[pos + 5:pos + 5 + first])
                    at = pos + 5 + first
                elif first == 0xFE and length < 9:  # EOF: the result set is complete
                    result.unbuffered_active = False
                    result.connection = None
                    if batch:
                        yield batch, sum(map(int, sums))
                    return
                elif first == 0xFF:
                    result.unbuffered_active = False
                    err.raise_mysql_exception(buf[pos + 4:end])
                else:
                    text, at = _value(buf, pos + 4)
                    batch.append(text)
                if buf[at] >= 0xFB:
                    raise err.DataError(2020, "the row checksum column came back NULL or over 250 bytes")
                sums.append(buf[at + 1:end])
                pos = end
            if batch:
                yield batch, sum(map(int, sums))
    finally:
        if result.unbuffered_active:  # abandoned midway: the rest of the result is still on the wire
            result.unbuffered_active = False  # so that PyMySQL does not read it from the closed socket later
            conn.close()
