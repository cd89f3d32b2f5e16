"""Read a two-column text result set straight from the MySQL protocol packets: each row's SQL text and its checksum.

PyMySQL turns every row into several Python objects (packet, row tuple, converters); with one text column per row
that was 11 of 12 profiled seconds of a backup (and half the trial dumper's time in research/bench.md §4c). Here a
row is one packet holding two length-encoded strings: the row's SQL text, then the row's CRC32 (checksum.py) as a
decimal number; a few slices per row (:func:`scan_py`, and the same in C: ``_speedups.scan``). Where the C build is
there, the server sends the values plain instead and ``_speedups.render`` writes the row's SQL text from them (the
server's formatting was half of its work on a backup). PyMySQL still sends the query and reads the column
definitions; only the rows are read here, and the connection is left exactly as PyMySQL leaves it after an
unbuffered result.
"""

from __future__ import annotations

import itertools
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


# scan()'s statuses: where it stopped and why.
MORE, END, ERROR, SPLIT, BAD = range(5)


def scan_py(buf: bytes, pos: int) -> tuple[list[bytes | None], list[int], int, bool, int, int]:
    """Take the whole row packets of ``buf[pos:]``; stop at the first one that is incomplete or not a row.

    Returns ``(rows, ends, total, special, pos, status)``: the first column of each row (NULL is ``None``), the
    cumulative sizes ``len(row) + 1`` (what dump.dump_rows cuts statements by; 1 for NULL), the sum of the rows'
    10-digit numbers, whether a row is NULL or starts with ``!`` (rows dump.dump_rows must look at one by one),
    where the scan stopped (the packet not taken, or just past the EOF packet) and why (:data:`MORE` data needed,
    :data:`END` of the result, an :data:`ERROR` packet at ``pos``, a :data:`SPLIT` row over 16 MiB, a packet that
    is not a row of this layout: :data:`BAD`). ``_speedups.scan`` (C) is this function, result for result.
    """
    rows: list[bytes | None] = []
    digits = bytearray()
    status = MORE
    n = len(buf)
    while pos + 4 <= n:
        length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
        end = pos + 4 + length
        if end > n:
            break
        if not length:
            status = BAD
            break
        first = buf[pos + 4]
        if first < 0xFB and first + 12 == length:  # the common case inline: a text under 251 bytes
            rows.append(buf[pos + 5:end - 11])
        elif first == 0xFB and length == 12:
            rows.append(None)
        elif first == 0xFE and length < 9:  # EOF: the result set is complete
            pos = end
            status = END
            break
        elif first == 0xFF:
            status = ERROR
            break
        elif length == _MAX_PACKET:
            status = SPLIT
            break
        elif first in _PREFIX and length >= _PREFIX[first] + 11 and buf[end - 11] == SUM_DIGITS and int.from_bytes(
                buf[pos + 5:pos + 4 + _PREFIX[first]], "little") == length - 11 - _PREFIX[first]:
            rows.append(buf[pos + 4 + _PREFIX[first]:end - 11])
        else:
            status = BAD
            break
        digits += buf[end - 10:end]
        pos = end
    special = None in rows or bool(rows) and (
        (least := min(rows))[:1] == b"!" or not least and any(t[:1] == b"!" for t in rows))  # min: '!' sorts first
    if special:
        ends = list(itertools.accumulate(1 if t is None else len(t) + 1 for t in rows))
    else:
        ends = list(itertools.accumulate(len(t) + 1 for t in rows))
    return rows, ends, digit_sum(digits), special, pos, status


try:
    # The C build (setup.py; optional: no compiler, no extension): scan is scan_py; render writes each row's SQL
    # tuple from its plain values, as the server does for scan (schema.Table.client_select against select_sql).
    from ._speedups import render, scan
    ACCELERATED = True
except ImportError:  # pragma: no cover - a machine that could not build it
    scan = scan_py
    render = None
    ACCELERATED = False


def checked_rows(conn: pymysql.connections.Connection, sql: str, *, scanner=None,
                 kinds: bytes | None = None) -> Iterator[tuple[list[bytes | None], list[int], int, bool]]:
    """Run ``sql`` (two columns: a text, and an integer as exactly 10 digits, :data:`SUM_DIGITS`; with ``kinds``,
    one column per value, then that integer) on ``conn``; yield, batch by batch in result order, ``(rows, ends, total, special)`` as :func:`scan_py` gives them: the first
    column's values (NULL is ``None``), their cumulative sizes, the sum of the second column's over the same rows,
    and whether a row is NULL or starts with ``!``. The fixed width puts the number at a known place.

    Raises the server's error as PyMySQL would; a row over 16 MiB (split packets) raises ``err.DataError``.
    ``scanner``: :func:`scan_py` or the C ``scan`` (default: :data:`scan`, the C one where it was built).
    ``kinds``: the query has one column per value and the checksum last (schema.Table.client_select), and the C
    :data:`render` writes each row's tuple by these kinds, one per value column.
    """
    if kinds is not None:
        scanner = lambda buf, pos: render(buf, pos, kinds)
    scanner = scanner or scan
    conn.query(sql, unbuffered=True)
    result = conn._result
    if result.field_count != (2 if kinds is None else len(kinds) + 1):
        raise err.ProgrammingError(f"checked_rows expects {2 if kinds is None else len(kinds) + 1} columns, the "
                                   f"query returned {result.field_count}")
    rfile = conn._rfile
    buf = b""
    pos = 0
    try:
        while True:
            chunk = rfile.read1(READ_BYTES)
            if not chunk:
                raise err.OperationalError(2013, "Lost connection to MySQL server during query")
            buf = buf[pos:] + chunk
            rows, ends, total, special, pos, status = scanner(buf, 0)
            if status == END:
                result.unbuffered_active = False
                result.connection = None
                if rows:
                    yield rows, ends, total, special
                return
            if status == ERROR:
                result.unbuffered_active = False
                length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
                err.raise_mysql_exception(buf[pos + 4:pos + 4 + length])
            if status == SPLIT:
                raise err.DataError(2020, "a row is larger than 16 MiB; this reader does not join split packets")
            if status == BAD:
                raise err.DataError(2020, "a row is not of the layout this reader takes apart (its values, then its "
                                          f"checksum column as {SUM_DIGITS} digits)")
            if rows:
                yield rows, ends, total, special
    finally:
        if result.unbuffered_active:  # abandoned midway: the rest of the result is still on the wire
            result.unbuffered_active = False  # so that PyMySQL does not read it from the closed socket later
            conn.close()
