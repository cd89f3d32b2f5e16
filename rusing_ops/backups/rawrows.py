"""Read a two-column text result set straight from the MySQL protocol packets: each row's SQL text and its checksum.

PyMySQL turns every row into several Python objects (packet, row tuple, converters); with one text column per row
that was 11 of 12 profiled seconds of a backup (and half the trial dumper's time in research/bench.md §4c). Here a
row is one packet holding two length-encoded strings: the row's SQL text, then the row's CRC32 (checksum.py) as a
decimal number; a few slices per row. PyMySQL still sends the query and reads the column definitions; only the
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


def checked_rows(conn: pymysql.connections.Connection, sql: str) -> Iterator[tuple[list[bytes | None], int]]:
    """Run ``sql`` (two columns: a text, a non-NULL integer) on ``conn``; yield, batch by batch in result order,
    the first column's values (NULL is ``None``) and the sum of the second column's over the same rows.

    Raises the server's error as PyMySQL would; a row over 16 MiB (split packets) raises ``err.DataError``.
    """
    conn.query(sql, unbuffered=True)
    result = conn._result
    if result.field_count != 2:
        raise err.ProgrammingError(f"checked_rows expects two columns, the query returned {result.field_count}")
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
                first = buf[pos + 4]
                if first < 0xFB:  # the common case inline: a text under 251 bytes
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
                elif length == _MAX_PACKET:
                    raise err.DataError(2020, "a row is larger than 16 MiB; this reader does not join split packets")
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
