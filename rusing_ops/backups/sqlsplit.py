"""Split a stream of SQL text into statements, as the ``mysql`` client does: quotes, comments, ``DELIMITER``.

Three paths. In this tool's files each INSERT is preceded by a ``-- @<bytes>`` comment (ignored by ``mysql``), so it
is taken whole by length. mysqldump puts every INSERT on one line (line breaks inside strings are escaped), so an
INSERT is taken up to its ``;\\n`` with one ``find``. Everything else goes through a regular-expression tokenizer
that respects quotes, backticks, comments and the current delimiter.
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator

FRAME = b"-- @"  # in this tool's files, "-- @<n>\n" announces that the next statement is <n> bytes (";\n" included)
_FRAMED_HEADER = b"-- rusing_ops"
_ONE_LINE_INSERT_HEADERS = (b"-- MySQL dump", b"-- MariaDB dump")
_SPACE = re.compile(rb"\s*")
_DELIMITER_LINE = re.compile(rb"delimiter[ \t]+(\S+)[ \t]*\r?\n", re.I)
_NOISE = re.compile(rb"(?:\s+|--[ \t][^\n]*\n|--\n|#[^\n]*\n|/\*(?!!).*?\*/)*", re.S)


class SqlSyntaxError(ValueError):
    """The text ends inside a quoted string or comment, or a statement lacks its delimiter (truncated file)."""


def _tokenizer(delimiter: bytes) -> re.Pattern:
    return re.compile(
        rb"'[^'\\]*(?:(?:\\.|'')[^'\\]*)*'"
        rb'|"[^"\\]*(?:(?:\\.|"")[^"\\]*)*"'
        rb"|`[^`]*(?:``[^`]*)*`"
        rb"|/\*.*?\*/"
        rb"|(?:--[ \t]|--(?=\n)|#)[^\n]*\n"
        rb"|(?P<end>" + re.escape(delimiter) + rb")"
        rb"|[^'\"`/#\-" + re.escape(delimiter[:1]) + rb"]+"
        rb"|.",
        re.S,
    )


class _Buffer:
    def __init__(self, chunks: Iterable[bytes]):
        self.chunks = iter(chunks)
        self.data = b""
        self.eof = False

    def more(self, keep_from: int) -> int:
        """Drop bytes before ``keep_from``, append the next chunk; return how far positions moved (or -1 at EOF)."""
        for chunk in self.chunks:
            if chunk:
                self.data = self.data[keep_from:] + chunk
                return keep_from
        self.eof = True
        return -1

    def ensure(self, pos: int, n: int) -> int:
        """Read until ``n`` bytes follow ``pos`` (or EOF); return ``pos`` in the possibly rebased buffer."""
        while len(self.data) - pos < n and not self.eof:
            shift = self.more(pos)
            if shift >= 0:
                pos -= shift
        return pos

    def ensure_line(self, pos: int) -> int:
        """Read until a newline follows ``pos`` (or EOF); return ``pos`` in the possibly rebased buffer."""
        while self.data.find(b"\n", pos) < 0 and not self.eof:
            shift = self.more(pos)
            if shift >= 0:
                pos -= shift
        return pos


def split_statements(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Yield each statement of the SQL text in ``chunks`` without its delimiter (comments between them dropped).

    Raises :class:`SqlSyntaxError` when the text ends inside a string or comment, or without a final delimiter.
    """
    b = _Buffer(chunks)
    b.more(0)
    framed = b.data.startswith(_FRAMED_HEADER)
    one_line_inserts = b.data.startswith(_ONE_LINE_INSERT_HEADERS)
    delimiter = b";"
    token = _tokenizer(delimiter)
    pos = 0
    while True:
        pos = _SPACE.match(b.data, b.ensure(pos, 1)).end()
        pos = b.ensure(pos, len(FRAME) + 1)
        if framed and b.data.startswith(FRAME, pos):
            pos = b.ensure_line(pos)
            nl = b.data.find(b"\n", pos)
            start = nl + 1
            size = int(b.data[pos + len(FRAME):nl])
            start = b.ensure(start, size)
            if len(b.data) - start < size or b.data[start + size - 2:start + size] != b";\n":
                raise SqlSyntaxError("The SQL text ends inside a statement (truncated file).")
            yield b.data[start:start + size - 2]
            pos = start + size
            continue
        pos = b.ensure_line(pos)
        m = _NOISE.match(b.data, pos)
        if m.end() < len(b.data) and b.data.find(b"\n", m.end()) < 0 and not b.eof:
            pos = b.ensure_line(m.end())  # keep skipping once the rest of the line is here
            continue
        pos = m.end()
        if pos >= len(b.data):
            if b.eof:
                return
            pos = b.ensure(pos, 1)
            continue
        data = b.data
        if data[pos:pos + 9].lower() == b"delimiter":
            m = _DELIMITER_LINE.match(data + (b"\n" if b.eof else b""), pos)
            if m:
                delimiter = m.group(1)
                token = _tokenizer(delimiter)
                pos = m.end()
                continue
        if one_line_inserts and delimiter == b";" and data[pos:pos + 7].upper() in (b"INSERT ", b"REPLACE"):
            end = data.find(b";\n", pos)
            while end < 0 and not b.eof:
                pos = b.ensure(pos, len(b.data) - pos + 1)
                end = b.data.find(b";\n", pos)
            if end >= 0:
                yield b.data[pos:end]
                pos = end + 2
                continue
        # general path: tokens until the delimiter outside quotes and comments
        i = pos
        while True:
            data = b.data
            m = token.match(data, i)
            unclosed = m is not None and _unclosed(m.group(0), data, i)
            if m is None or m.end() == len(data) or unclosed:
                if not b.eof:
                    shift = b.more(pos)
                    if shift >= 0:
                        i, pos = i - shift, 0
                    continue
                if unclosed:
                    raise SqlSyntaxError("The SQL text ends inside a quoted string or comment (truncated file).")
                if m is None:
                    if data[pos:].strip():
                        raise SqlSyntaxError(f"The SQL text ends with a statement that has no "
                                             f"{delimiter.decode()!r} (truncated file).")
                    return
            if m.group("end") is not None:
                yield data[pos:m.start()]
                pos = m.end()
                break
            i = m.end()


def _unclosed(tok: bytes, data: bytes, i: int) -> bool:
    """The fallback single-byte token matched an opening quote or ``/*``: its closing part is not in ``data``."""
    return len(tok) == 1 and (tok in b"'\"`" or data[i:i + 2] == b"/*")
