"""Read a one-column text result set straight from the MySQL protocol packets.

PyMySQL turns every row into several Python objects (packet, row tuple, converters); with one text column per row
that was 11 of 12 profiled seconds of a backup (and half the trial dumper's time in research/bench.md §4c). Here a
row is one packet whose payload is a length-encoded string, so the value is the payload minus its length prefix:
a few slices per row. PyMySQL still sends the query and reads the column definitions; only the rows are read here,
and the connection is left exactly as PyMySQL leaves it after an unbuffered result.
"""

from __future__ import annotations

from collections.abc import Iterator

import pymysql
from pymysql import err

READ_BYTES = 1 << 20
_PREFIX = {0xFC: 3, 0xFD: 4, 0xFE: 9}  # length-encoded integer sizes; below 0xFB the prefix is one byte
_MAX_PACKET = 0xFFFFFF


def text_rows(conn: pymysql.connections.Connection, sql: str) -> Iterator[list[bytes | None]]:
    """Run ``sql`` (one column) on ``conn`` and yield its values in batches, in result order; NULL is ``None``.

    Raises the server's error as PyMySQL would; a row over 16 MiB (split packets) raises ``err.DataError``.
    """
    conn.query(sql, unbuffered=True)
    result = conn._result
    if result.field_count != 1:
        raise err.ProgrammingError(f"text_rows expects one column, the query returned {result.field_count}")
    rfile = conn._rfile
    buf = b""
    pos = 0
    try:
        while True:
            batch: list[bytes | None] = []
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
                if first < 0xFB:
                    batch.append(buf[pos + 5:end])
                elif first == 0xFB:
                    batch.append(None)
                elif first == 0xFE and length < 9:  # EOF: the result set is complete
                    result.unbuffered_active = False
                    result.connection = None
                    if batch:
                        yield batch
                    return
                elif first == 0xFF:
                    result.unbuffered_active = False
                    err.raise_mysql_exception(buf[pos + 4:end])
                elif length == _MAX_PACKET:
                    raise err.DataError(2020, "a row is larger than 16 MiB; this reader does not join split packets")
                else:
                    batch.append(buf[pos + 4 + _PREFIX[first]:end])
                pos = end
            if batch:
                yield batch
    finally:
        if result.unbuffered_active:  # abandoned midway: the rest of the result is still on the wire
            result.unbuffered_active = False  # so that PyMySQL does not read it from the closed socket later
            conn.close()
