"""The packet scan of the backup's row reader: the C build (_speedups.c) against the pure-Python one (rawrows.scan_py),
result for result, on every packet layout the reader takes or refuses, cut at every byte, and on random bytes.

The Python scan is the reference (the reader used it alone before the C one; test_rawrows.py runs the reader against
a real server); the C one is what the backup runs wherever setup.py could compile it, as it can here.
"""

from __future__ import annotations

import itertools
import random
import shutil
import sysconfig

import pytest

from rusing_ops.backups import rawrows
from rusing_ops.backups.confine import outside_py


def packet(payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + b"\x00" + payload


def lenenc(data: bytes, prefix: int | None = None) -> bytes:
    n = len(data)
    if prefix is None:
        prefix = 0 if n < 0xFB else 0xFC if n < 1 << 16 else 0xFD if n < 1 << 24 else 0xFE
    size = {0: 0, 0xFC: 2, 0xFD: 3, 0xFE: 8}[prefix]
    return (bytes([n]) if not prefix else bytes([prefix]) + n.to_bytes(size, "little")) + data


def row(text: bytes | None, number: int, prefix: int | None = None) -> bytes:
    first = b"\xfb" if text is None else lenenc(text, prefix)
    return packet(first + lenenc(b"%010d" % number))


EOF_PACKET = packet(b"\xfe\x00\x00\x22\x00")
ERROR_PACKET = packet(b"\xff\x15\x04#28000Access denied")

STREAMS = {
    "short rows": [row(b"(1,'a')", 7), row(b"", 0), row(b"(2,'b')", 4294967295)],
    "every prefix": [row(b"x" * 250, 1), row(b"y" * 251, 2), row(b"z" * 70000, 3), row(b"w" * 40, 4, 0xFC),
                     row(b"v" * 30, 5, 0xFD), row(b"u" * 20, 6, 0xFE)],
    "null and marker rows": [row(b"(1)", 1), row(None, 2), row(b"!`id`<=>3", 3), row(b"(4)", 4)],
    "an empty row before a marker": [row(b"", 1), row(b"!`id`<=>9", 9), row(b"(5)", 5)],
    "a marker only": [row(b"!", 0)],
    "error packet": [row(b"(1)", 1), ERROR_PACKET, row(b"(2)", 2)],
    "split row": [packet(b"\xfd" + b"\x00" * (0xFFFFFF - 1)), row(b"(1)", 1)],
    "nine digits": [row(b"(1)", 1), packet(lenenc(b"(2)") + lenenc(b"123456789"))],
    "declared length wrong": [packet(b"\xfc\x05\x00abc" + lenenc(b"0000000001"))],
    "too short for its prefix": [packet(b"\xfd\x00\x00\x00\x0a12")],
    "zero-length packet": [row(b"(1)", 1), packet(b""), row(b"(2)", 2)],
    "not digits": [row(b"(1)", 1), packet(lenenc(b"(2)") + lenenc(b"12345abc/~"))],
}


def both(buf: bytes, pos: int = 0):
    from rusing_ops.backups import _speedups

    expected = rawrows.scan_py(buf, pos)
    assert _speedups.scan(buf, pos) == expected
    return expected


def test_the_c_scan_was_built_here():
    """The backup's speed (README, Performance) is the C scan's: a machine with a C compiler must have it."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if not shutil.which(compiler):
        pytest.skip(f"no C compiler ({compiler}): the pure-Python scan runs")
    assert rawrows.ACCELERATED and rawrows.scan is not rawrows.scan_py


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_c_and_python_scans_agree_on_every_layout_cut_at_every_byte(name):
    pytest.importorskip("rusing_ops.backups._speedups")
    stream = b"".join(STREAMS[name]) + EOF_PACKET
    whole = both(stream)
    cuts = range(len(stream) + 1) if len(stream) < 5000 else sorted(
        {0, 1, 3, 4, 5, len(stream) - 1, len(stream)} | set(random.Random(name).sample(range(len(stream)), 200)))
    for cut in cuts:  # what the reader sees when a read ends at ``cut``: whole packets only, then MORE or a stop
        rows, _, _, _, pos, status = both(stream[:cut])
        assert rows == whole[0][:len(rows)] and pos <= whole[4]
        if status == rawrows.MORE:  # stopped at the incomplete packet: nothing more to take from there
            assert pos <= cut and both(stream[:cut], pos)[0] == []
    both(stream, 3)  # a start inside the first packet: whatever it reads there, the two read it alike


def test_what_the_scan_returns_for_each_layout():
    """The figures themselves (the Python scan; the C one agrees, above)."""
    scan = rawrows.scan_py
    stream = b"".join(STREAMS["short rows"]) + EOF_PACKET
    rows, ends, total, special, pos, status = scan(stream + b"next", 0)
    assert (rows, ends, total, special, pos, status) == ([b"(1,'a')", b"", b"(2,'b')"], [8, 9, 17], 4294967302,
                                                          False, len(stream), rawrows.END)
    rows, ends, total, special, _, status = scan(b"".join(STREAMS["every prefix"]) + EOF_PACKET, 0)
    assert [len(r) for r in rows] == [250, 251, 70000, 40, 30, 20] and total == 21 and status == rawrows.END
    assert ends[-1] == sum(len(r) + 1 for r in rows) and not special
    rows, _, _, special, _, _ = scan(b"".join(STREAMS["null and marker rows"]), 0)
    assert rows == [b"(1)", None, b"!`id`<=>3", b"(4)"] and special
    assert scan(b"".join(STREAMS["an empty row before a marker"]), 0)[3] is True  # min() is b"": every row looked at
    assert scan(row(b"(1)", 1) + row(b"", 2), 0)[3] is False
    for name, status in [("error packet", rawrows.ERROR), ("split row", rawrows.SPLIT), ("nine digits", rawrows.BAD),
                         ("declared length wrong", rawrows.BAD), ("too short for its prefix", rawrows.BAD),
                         ("zero-length packet", rawrows.BAD)]:
        stream = b"".join(STREAMS[name])
        result = scan(stream, 0)
        assert result[5] == status, name
        assert stream[result[4]:].startswith(STREAMS[name][-2 if name in ("error packet", "zero-length packet") else
                                                          -1 if name not in ("split row",) else 0]), name
    assert scan(b"".join(STREAMS["error packet"]), 0)[0] == [b"(1)"]  # rows before the stop are returned


def test_c_and_python_scans_agree_on_random_bytes():
    pytest.importorskip("rusing_ops.backups._speedups")
    rng = random.Random(15)
    for _ in range(3000):
        parts = []
        for _ in range(rng.randrange(1, 6)):  # mostly plausible packets, damaged here and there
            kind = rng.random()
            if kind < 0.5:
                parts.append(row(rng.randbytes(rng.randrange(0, 300)), rng.randrange(10 ** 10)))
            elif kind < 0.6:
                parts.append(row(None, rng.randrange(10 ** 10)))
            elif kind < 0.8:
                body = bytearray(row(rng.randbytes(rng.randrange(0, 40)), rng.randrange(10 ** 10)))
                body[rng.randrange(len(body))] = rng.randrange(256)
                parts.append(bytes(body))
            else:
                parts.append(rng.randbytes(rng.randrange(0, 30)))
        buf = b"".join(parts)
        both(buf, rng.randrange(len(buf) + 1))


def test_the_c_scan_refuses_what_is_not_a_buffer_and_a_position_in_it():
    _speedups = pytest.importorskip("rusing_ops.backups._speedups")
    with pytest.raises(TypeError):
        _speedups.scan(bytearray(b"abc"), 0)
    with pytest.raises(ValueError):
        _speedups.scan(b"abc", 4)
    with pytest.raises(ValueError):
        _speedups.scan(b"abc", -1)


SPECIALS = [
    """CREATE TABLE specials (
      id INT NOT NULL PRIMARY KEY,
      long_text LONGTEXT NULL,
      short_text VARCHAR(300) NULL,
      mb3 TEXT CHARACTER SET utf8mb3 NULL,
      asc_text MEDIUMTEXT CHARACTER SET ascii NULL,
      latin TEXT CHARACTER SET latin1 NULL,
      latin_enum ENUM('é','b') CHARACTER SET latin1 NULL,
      blob_value LONGBLOB NULL,
      fixed BINARY(4) NULL,
      zero_fill INT(6) UNSIGNED ZEROFILL NULL,
      small FLOAT NULL,
      bits BIT(12) NULL,
      zero_date DATE NULL,
      zero_time DATETIME(6) NULL,
      addr INET6 NULL,
      uid UUID NULL,
      place POINT NULL
    ) DEFAULT CHARSET=utf8mb4""",
    "CREATE TABLE no_key (v LONGTEXT NULL, n INT NULL)",
]
NASTY = "\\ ' \" \0 \x1a \r\n \t é🎓 ` % _ \\' '' \\0 \\Z"


@pytest.fixture
def specials_db(fresh_db):
    from rusing_ops.backups.connection import open_connection

    conn = open_connection(fresh_db)
    rng = random.Random(7)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_mode = ''")
            for sql in SPECIALS:
                cur.execute(sql)
            rows = [(1, NASTY * 30, NASTY, "é\\'" * 200, "\\'\0\x1a" * 90, "café \\ '", "é", bytes(range(256)) * 3,
                     b"\x00'\\\x1a", 42, -0.0, 0b101000000001, "0000-00-00", "0000-00-00 00:00:00", "::1",
                     "123e4567-e89b-12d3-a456-426614174000"),
                    (2, "", "", "", "", "", "b", b"", b"\x00\x00\x00\x00", 0, 3.4e38, 0, "2024-02-29",
                     "2024-02-29 23:59:59.999999", "2001:db8::ff00:42:8329", "00000000-0000-0000-0000-000000000000"),
                    (3, "x" * 5000, None, None, None, None, None, b"\xff" * 5000, None, None, None, None, None, None,
                     None, None)]
            rows += [(i, "".join(rng.choice(NASTY + "abc") for _ in range(rng.randrange(0, 600))),
                      rng.randbytes(rng.randrange(0, 40)).decode("latin1"), None, None, None, None,
                      rng.randbytes(rng.randrange(0, 700)), rng.randbytes(4), rng.randrange(10 ** 6), rng.random(),
                      rng.randrange(4096), None, None, None, None) for i in range(4, 200)]
            cur.executemany("INSERT INTO specials (id, long_text, short_text, mb3, asc_text, latin, latin_enum, "
                            "blob_value, fixed, zero_fill, small, bits, zero_date, zero_time, addr, uid) VALUES "
                            "(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", rows)
            cur.execute("UPDATE specials SET place = POINT(id, -id / 3) WHERE id % 3 = 0")
            cur.execute("INSERT INTO no_key VALUES (REPEAT('y', 3000), 1), (NULL, NULL), ('z', 2)")
    finally:
        conn.close()
    return fresh_db


@pytest.mark.parametrize("database", ["every_type_db", "specials_db"])
@pytest.mark.parametrize("large_bytes", [None, 2000])
def test_the_c_render_writes_each_row_as_the_server_does(request, database, large_bytes):
    """rawrows.render on schema.Table.client_select (plain values) gives the very rows -- text, ``!`` markers of
    large rows, order -- and checksums that the server's own literals give (select_sql, read by scan): the dump is
    the same bytes whichever writes them."""
    _speedups = pytest.importorskip("rusing_ops.backups._speedups")
    from rusing_ops.backups.checksum import row_checksum
    from rusing_ops.backups.connection import open_connection
    from rusing_ops.backups.schema import read_tables

    url = request.getfixturevalue(database)
    conn = open_connection(url)
    try:
        with conn.cursor() as cur:
            tables = read_tables(cur, url.database, with_ddl=False)
        kinds_seen, markers = set(), 0
        for table in tables:
            checksum = f"LPAD({row_checksum(table)},10,'0')"
            server = list(rawrows.checked_rows(conn, table.select_sql(large_bytes, also=checksum),
                                               scanner=rawrows.scan_py))
            sql, kinds = table.client_select(large_bytes, also=checksum)
            client = list(rawrows.checked_rows(conn, sql, kinds=kinds))  # batches are cut by packet bytes: not alike
            assert [r for b in client for r in b[0]] == [r for b in server for r in b[0]], (table.name, kinds)
            assert sum(b[2] for b in client) == sum(b[2] for b in server), table.name
            assert any(b[3] for b in client) == any(b[3] for b in server), table.name
            for rows, ends, _, special in client:
                assert ends == list(itertools.accumulate(len(r) + 1 if r else 1 for r in rows))
                assert special == any(r is None or r[:1] == b"!" for r in rows)
            markers += sum(r[:1] == b"!" for b in client for r in b[0])
            kinds_seen |= set(kinds.decode())
    finally:
        conn.close()
    assert kinds_seen >= ({"q", "x", "r", "m"} if large_bytes else {"q", "x", "r"})
    assert (markers > 0) == (database == "specials_db" and large_bytes is not None)  # large rows came as markers


def test_the_c_render_refuses_a_row_that_is_not_of_its_kinds():
    _speedups = pytest.importorskip("rusing_ops.backups._speedups")
    good = packet(lenenc(b"a'b") + b"\xfb" + lenenc(b"\x00\xff") + lenenc(b"%010d" % 5))
    assert _speedups.render(good, 0, b"qqx")[:2] == ([b"('a\\'b',NULL,X'00FF')"], [22])
    assert _speedups.render(good, 0, b"qq")[5] == rawrows.BAD  # a value more than the kinds say
    assert _speedups.render(good, 0, b"qqxq")[5] == rawrows.BAD  # one fewer
    assert _speedups.render(good, 0, b"qrx")[:4] == ([None], [1], 5, True)  # NULL where the server writes: None
    marker = packet(lenenc(b"!`id`<=>1") + b"\xfb" + lenenc(b"%010d" % 2))
    assert _speedups.render(marker, 0, b"mq")[:4] == ([b"!`id`<=>1"], [10], 2, True)
    for bad_kinds in (b"qm", b"z", b""):
        with pytest.raises(ValueError):
            _speedups.render(good, 0, bad_kinds)
    truncated = packet(b"\xfc\xff\x00ab" + lenenc(b"%010d" % 5))  # a value running past its packet
    assert _speedups.render(truncated, 0, b"q")[5] == rawrows.BAD


def render_reference(buf: bytes, pos: int, kinds: bytes):
    """rawrows.render as the docstring of _speedups.c says, written plainly in Python: the fuzz test's reference."""
    rows, ends, total, special, status = [], [], 0, False, rawrows.MORE
    while True:
        if pos + 4 > len(buf):
            break
        length = int.from_bytes(buf[pos:pos + 3], "little")
        end = pos + 4 + length
        if end > len(buf):
            break
        first = buf[pos + 4] if length else None
        if not length:
            status = rawrows.BAD
        elif first == 0xFE and length < 9:
            status, pos = rawrows.END, end
        elif first == 0xFF:
            status = rawrows.ERROR
        elif length == 0xFFFFFF:
            status = rawrows.SPLIT
        if status != rawrows.MORE:
            break
        if length < 11 + len(kinds) or buf[end - 11] != 10:
            status = rawrows.BAD
            break
        at, values, row = pos + 4, [], None
        for _ in kinds:
            if at >= end - 11 or buf[at] == 0xFF:
                values = None
                break
            if buf[at] == 0xFB:
                values.append(None)
                at += 1
                continue
            size = {0xFC: 3, 0xFD: 4, 0xFE: 9}.get(buf[at], 1)
            n = buf[at] if size == 1 else int.from_bytes(buf[at + 1:at + size], "little")
            if at + size > end - 11 or n > end - 11 - at - size:
                values = None
                break
            values.append(buf[at + size:at + size + n])
            at += size + n
        if values is None or at != end - 11:
            status = rawrows.BAD
            break
        if kinds[:1] == b"m" and values[0] is not None:
            row = values[0]
        elif any(v is None and k == ord("r") for v, k in zip(values, kinds)):
            row = None
        else:
            parts = []
            for v, k in zip(values, kinds):
                if k == ord("m"):
                    continue
                if v is None:
                    parts.append(b"NULL")
                elif k == ord("r"):
                    parts.append(v)
                elif k == ord("x"):
                    parts.append(b"X'" + v.hex().upper().encode() + b"'")
                else:
                    escaped = v.replace(b"\\", b"\\\\").replace(b"'", b"\\'").replace(b"\0", b"\\0")
                    parts.append(b"'" + escaped.replace(b"\x1a", b"\\Z") + b"'")
            row = b"(" + b",".join(parts) + b")"
        rows.append(row)
        special = special or row is None or row[:1] == b"!"
        ends.append((ends[-1] if ends else 0) + (1 if row is None else len(row) + 1))
        total += sum((c - 48) * 10 ** (9 - i) for i, c in enumerate(buf[end - 10:end]))
        pos = end
    return rows, ends, total, special, pos, status


def test_the_c_render_agrees_with_a_plain_reference_on_random_rows():
    _speedups = pytest.importorskip("rusing_ops.backups._speedups")
    rng = random.Random(21)
    for _ in range(3000):
        kinds = bytes(rng.choice(b"qxr") for _ in range(rng.randrange(1, 5)))
        if rng.random() < 0.3:
            kinds = b"m" + kinds
        parts = []
        for _ in range(rng.randrange(1, 5)):
            values = b""
            for k in kinds:
                if rng.random() < 0.2 or (k == ord("m") and rng.random() < 0.7):
                    values += b"\xfb"
                else:
                    values += lenenc(bytes(rng.choice(b"ab'\\\x00\x1a\r\xff") for _ in range(rng.randrange(0, 300))))
            body = bytearray(packet(values + lenenc(b"%010d" % rng.randrange(10 ** 10))))
            if rng.random() < 0.2:  # damaged
                body[rng.randrange(len(body))] = rng.randrange(256)
            parts.append(bytes(body))
        buf = b"".join(parts) + (EOF_PACKET if rng.random() < 0.5 else b"")
        start = 0 if rng.random() < 0.8 else rng.randrange(len(buf) + 1)
        assert _speedups.render(buf, start, kinds) == render_reference(buf, start, kinds), (buf, start, kinds)


@pytest.mark.parametrize("values", [b"", b"(1,'a')", b"(1,'it''s')", b"('\\'',2)", b"('a\\\\',3)", b"('unclosed",
                                    b"('\\", b"\\", b"(1)\\'", b"('a'\\''b')", b"('x\\\ny')", b"''''''", b"'\\''"])
def test_outside_the_literals_as_the_plain_split_gives_it(values):
    """confine.py's check of an INSERT's values takes the text outside its literals from the C ``outside``; the
    escapes-then-split it computed before (``outside_py``, still its fallback) is the reference."""
    _speedups = pytest.importorskip("rusing_ops.backups._speedups")
    assert _speedups.outside(values) == outside_py(values)


def test_outside_the_literals_on_random_values():
    _speedups = pytest.importorskip("rusing_ops.backups._speedups")
    rng = random.Random(3)
    for _ in range(20000):
        values = bytes(rng.choice(b"'\\\\(),1aX\n\x00") for _ in range(rng.randrange(0, 40)))
        assert _speedups.outside(values) == outside_py(values), values


@pytest.mark.parametrize("database", ["every_type_db", "specials_db"])
def test_a_backup_is_the_same_bytes_with_or_without_the_c_reader(request, database, tmp_path, monkeypatch):
    """The whole dump, end to end: written by the C reader from plain values, and by the server's literals read by
    the Python scan (what a machine without a compiler runs), byte for byte the same file (one connection: the
    statements come in one order), and the same manifest checksums."""
    pytest.importorskip("rusing_ops.backups._speedups")
    import datetime as dt

    from rusing_ops.backups.dump import backup_database
    from rusing_ops.backups.streams import decompressed_chunks
    from rusing_ops.core.store import LocalStore

    url = request.getfixturevalue(database)
    now = dt.datetime(2026, 12, 1, 18, 0, tzinfo=dt.UTC)
    made = {}
    for name in ("c", "python"):
        if name == "python":
            monkeypatch.setattr(rawrows, "render", None)
            monkeypatch.setattr(rawrows, "scan", rawrows.scan_py)
        store = LocalStore(tmp_path / name)
        result = backup_database(url, store, workers=1, now=now, statement_bytes=4096)
        with store.open_read(result.manifest.key) as raw:
            made[name] = (b"".join(decompressed_chunks(raw, result.manifest.compression)), result.manifest)
    (c_dump, c_manifest), (py_dump, py_manifest) = made["c"], made["python"]
    assert c_dump.count(b"INSERT INTO") > 3 and c_dump == py_dump
    assert {n: e.server_checksum for n, e in c_manifest.tables.items()} == \
        {n: e.server_checksum for n, e in py_manifest.tables.items()}
