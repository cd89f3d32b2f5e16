"""The packet scan of the backup's row reader: the C build (_rowscan.c) against the pure-Python one (rawrows.scan_py),
result for result, on every packet layout the reader takes or refuses, cut at every byte, and on random bytes.

The Python scan is the reference (the reader used it alone before the C one; test_rawrows.py runs the reader against
a real server); the C one is what the backup runs wherever setup.py could compile it, as it can here.
"""

from __future__ import annotations

import random
import shutil
import sysconfig

import pytest

from rusing_ops.backups import rawrows


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
    from rusing_ops.backups import _rowscan

    expected = rawrows.scan_py(buf, pos)
    assert _rowscan.scan(buf, pos) == expected
    return expected


def test_the_c_scan_was_built_here():
    """The backup's speed (README, Performance) is the C scan's: a machine with a C compiler must have it."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if not shutil.which(compiler):
        pytest.skip(f"no C compiler ({compiler}): the pure-Python scan runs")
    assert rawrows.ACCELERATED and rawrows.scan is not rawrows.scan_py


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_c_and_python_scans_agree_on_every_layout_cut_at_every_byte(name):
    pytest.importorskip("rusing_ops.backups._rowscan")
    stream = b"".join(STREAMS[name]) + EOF_PACKET
    whole = both(stream)
    cuts = range(len(stream) + 1) if len(stream) < 5000 else sorted(
        {0, 1, 3, 4, 5, len(stream) - 1, len(stream)} | set(random.Random(name).sample(range(len(stream)), 200)))
    for cut in cuts:  # what the reader sees when a read ends at ``cut``: whole packets only, then MORE or a stop
        rows, _, _, _, pos, status = both(stream[:cut])
        assert rows == whole[0][:len(rows)] and pos <= whole[4]
        if status == rawrows.MORE:  # stopped at the incomplete packet: nothing more to take from there
            assert pos <= cut and both(stream[:cut], pos)[0] == []
    assert both(stream, 3)[5] in (rawrows.BAD, rawrows.MORE, rawrows.SPLIT, rawrows.ERROR, rawrows.END)


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
    pytest.importorskip("rusing_ops.backups._rowscan")
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
    _rowscan = pytest.importorskip("rusing_ops.backups._rowscan")
    with pytest.raises(TypeError):
        _rowscan.scan(bytearray(b"abc"), 0)
    with pytest.raises(ValueError):
        _rowscan.scan(b"abc", 4)
    with pytest.raises(ValueError):
        _rowscan.scan(b"abc", -1)
