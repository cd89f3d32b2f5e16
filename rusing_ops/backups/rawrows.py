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
_PREFIX = {0xFC: 3, 0xFD: 4, 0xFE: 9}  # length-encoded integer sizes, the first byte included; below 0xFB: one byte
SUM_DIGITS = 10  # the second column's width: a CRC32 (at most 4294967295) as LPAD(.., 10, '0')


def digit_sum(digits: bytes | bytearray, width: int = 10) -> int:
    """The sum of the ``width``-digit decimal numbers laid end to end in ``digits``, by digit position: ten C-level
    passes instead of one ``int()`` per number (0.5 us each, a third of the reader's time per row)."""
    count = len(digits) // width
    return sum(10 ** (width - 1 - k) * (sum(digits[k::width]) - 48 * count) for k in range(width))


def checked_rows(conn: pymysql.connections.Connection, sql: str) -> Iterator[tuple[list[bytes | None], int]]:
    """Run ``sql`` (two columns: a text, and an integer as exactly 10 digits, :data:`SUM_DIGITS`) on ``conn``;
    yield, batch by batch in result order, the first column's values (NULL is ``None``) and the sum of the second
    column's over the same rows. The fixed width puts the number at a known place: fewer steps per row.

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
            digits = bytearray()
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
                if first < 0xFB and first + 12 == length:  # the common case inline: a text under 251 bytes
                    batch.append(buf[pos + 5:end - 11])
                elif first == 0xFB and length == 12:
                    batch.append(None)
                elif first == 0xFE and length < 9:  # EOF: the result set is complete
                    result.unbuffered_active = False
                    result.connection = None
                    if batch:
                        yield batch, digit_sum(digits)
                    return
                elif first == 0xFF:
                    result.unbuffered_active = False
                    err.raise_mysql_exception(buf[pos + 4:end])
                elif length == _MAX_PACKET:
                    raise err.DataError(2020, "a row is larger than 16 MiB; this reader does not join split packets")
                elif first in _PREFIX and buf[end - 11] == SUM_DIGITS and int.from_bytes(
                        buf[pos + 5:pos + 4 + _PREFIX[first]], "little") == length - 11 - _PREFIX[first]:
                    batch.append(buf[pos + 4 + _PREFIX[first]:end - 11])
                else:
                    raise err.DataError(2020, f"a row's checksum column is not {SUM_DIGITS} digits")
                digits += buf[end - 10:end]
                pos = end
            if batch:
                yield batch, digit_sum(digits)
    finally:
        if result.unbuffered_active:  # abandoned midway: the rest of the result is still on the wire
            result.unbuffered_active = False  # so that PyMySQL does not read it from the closed socket later
            conn.close()
