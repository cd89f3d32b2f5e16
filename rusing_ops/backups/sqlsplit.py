"""The one SQL lexer of this project: statements split as the ``mysql`` client does (quotes, comments,
``DELIMITER``), each with the line it starts on, and the tokens of one statement for the checks built on it.

Three splitting paths. In this tool's files each INSERT is preceded by a ``-- @<bytes>`` comment (ignored by
``mysql``), so it is taken whole by length. mysqldump puts every INSERT on one line (line breaks inside strings are
escaped), so an INSERT is taken up to its ``;\\n`` with one ``find``. Everything else goes through a
regular-expression tokenizer that respects quotes, backticks, comments and the current delimiter.

Users: backups/confine.py (what a dump may run), backups/source.py (restore), migrations/sqlfile.py (drizzle's
files and hand-written reverse SQL: :func:`split_text`, :func:`strip_comments`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

FRAME = b"-- @"  # in this tool's files, "-- @<n>\n" announces that the next statement is <n> bytes (";\n" included)
_FRAMED_HEADER = b"-- rusing_ops"
_ONE_LINE_INSERT_HEADERS = (b"-- MySQL dump", b"-- MariaDB dump")
_SPACE = re.compile(rb"\s*")
_DELIMITER_LINE = re.compile(rb"delimiter[ \t]+(\S+)[ \t]*\r?\n", re.IGNORECASE)
_NOISE = re.compile(rb"(?:\s+|--[ \t][^\n]*\n|--\n|#[^\n]*\n|/\*(?!!).*?\*/)*", re.DOTALL)


class SqlSyntaxError(ValueError):
    """The text ends inside a quoted string or comment, or a statement lacks its delimiter (truncated file)."""


def _tokenizer(delimiter: bytes) -> re.Pattern:
    return re.compile(
        rb"'[^'\\]*(?:(?:\\.|'')[^'\\]*)*'"
        rb'|"[^"\\]*(?:(?:\\.|"")[^"\\]*)*"'
        rb"|`[^`]*(?:``[^`]*)*`"
        rb"|(?P<end>" + re.escape(delimiter) + rb")"  # before comments: mariadb-binlog's delimiter is /*!*/;
        rb"|/\*.*?\*/"
        rb"|(?:--[ \t]|--(?=\n)|#)[^\n]*\n"
        rb"|[^'\"`/#\-" + re.escape(delimiter[:1]) + rb"]+"
        rb"|.",
        re.DOTALL,
    )


class _Buffer:
    """A sliding window over the chunks that also counts the lines of the bytes it lets go of."""

    def __init__(self, chunks: Iterable[bytes]):
        self.chunks = iter(chunks)
        self.data = b""
        self.eof = False
        self.line = 1  # line number at position ``counted``
        self.counted = 0

    def line_at(self, pos: int) -> int:
        """The 1-based line of position ``pos`` (positions asked for never go backwards)."""
        if pos > self.counted:
            self.line += self.data.count(b"\n", self.counted, pos)
            self.counted = pos
        return self.line

    def more(self, keep_from: int) -> int:
        """Drop bytes before ``keep_from``, append the next chunk; return how far positions moved (or -1 at EOF)."""
        for chunk in self.chunks:
            if chunk:
                self.line_at(keep_from)
                self.counted -= keep_from
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
    for _line, statement in numbered_statements(chunks):
        yield statement


def numbered_statements(chunks: Iterable[bytes], *, final_delimiter: bool = True) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line, statement)``: each statement without its delimiter and the 1-based line it starts on.

    :param final_delimiter: the last statement must end with the delimiter (a file cut short is an error); with
        ``False`` it may end at the end of the text, as a hand-written script's last statement often does.
    """
    b = _Buffer(chunks)
    b.more(0)
    framed = b.data.startswith(_FRAMED_HEADER)
    head = b.data[:512]  # mariadb-dump >= 10.11.8 writes a /*M!999999\- sandbox */ line before its header
    one_line_inserts = any(h in head for h in _ONE_LINE_INSERT_HEADERS)
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
            try:
                size = int(b.data[pos + len(FRAME):nl])
            except ValueError:
                raise SqlSyntaxError(f"Line {b.line_at(pos)} announces a statement without a valid length.") from None
            start = b.ensure(start, size)
            if len(b.data) - start < size or b.data[start + size - 2:start + size] != b";\n":
                raise SqlSyntaxError("The SQL text ends inside a statement (truncated file).")
            yield b.line_at(start), b.data[start:start + size - 2]
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
                yield b.line_at(pos), b.data[pos:end]
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
                        if not final_delimiter:
                            yield b.line_at(pos), data[pos:].rstrip()
                            return
                        raise SqlSyntaxError(f"The SQL text ends with a statement that has no "
                                             f"{delimiter.decode()!r} (truncated file).")
                    return
            if m.group("end") is not None:
                yield b.line_at(pos), data[pos:m.start()]
                pos = m.end()
                break
            i = m.end()


def _unclosed(tok: bytes, data: bytes, i: int) -> bool:
    """The fallback single-byte token matched an opening quote or ``/*``: its closing part is not in ``data``."""
    return len(tok) == 1 and (tok in b"'\"`" or data[i:i + 2] == b"/*")


def split_text(text: str) -> list[str]:
    """The statements of a hand-written script (``DELIMITER`` understood, the last ``;`` optional), stripped."""
    return [s.decode("utf-8", "surrogateescape").strip()
            for _line, s in numbered_statements([(text + "\n").encode("utf-8", "surrogateescape")],
                                                final_delimiter=False)
            if s.strip()]


# ---------------------------------------------------------------------------------------------- one statement

STRING = rb"'[^'\\]*(?:(?:\\.|'')[^'\\]*)*'|\"[^\"\\]*(?:(?:\\.|\"\")[^\"\\]*)*\""
_LEXEME = re.compile(
    rb"(?P<str>" + STRING + rb")"
    rb"|(?P<ident>`[^`]*(?:``[^`]*)*`)"
    rb"|(?P<vopen>/\*(?:M?!\d*|T!\[[^\]*]*\]))"  # MySQL/MariaDB /*!50003, MariaDB /*M!100100, TiDB /*T![feature]
    rb"|(?P<comment>/\*.*?\*/|(?:--[ \t\r\n]|--$|#)[^\n]*)"
    rb"|(?P<vclose>\*/)"
    rb"|(?P<var>@@?(?:`[^`]*(?:``[^`]*)*`|'[^']*'|\"[^\"]*\"|[0-9A-Za-z_$.\x80-\xff]+)?)"
    rb"|(?P<word>[0-9A-Za-z_$\x80-\xff]+)"
    rb"|(?P<space>\s+)"
    rb"|(?P<punct>.)", re.DOTALL)


@dataclass(frozen=True)
class Token:
    kind: str  # str | ident | vopen | comment | vclose | var | word | space | punct
    text: bytes

    @property
    def upper(self) -> str:
        return self.text.decode("utf-8", "replace").upper()

    @property
    def name(self) -> str:
        """An identifier's name: backticks removed (doubled backticks undone), or the bare word."""
        raw = self.text.decode("utf-8", "replace")
        return raw[1:-1].replace("``", "`") if self.kind == "ident" else raw


def tokens(statement: bytes) -> list[Token]:
    """Every token of one statement, whitespace and comments included (joined they give the statement back).

    A versioned comment ``/*!50003 ... */`` (MariaDB's ``/*M!100100 ... */``, TiDB's ``/*T![feature] ... */``) is
    not one token: its opening
    marker (``vopen``), the tokens inside and its ``*/`` (``vclose``), because the server runs what is inside.
    An opening quote without its end comes out as a ``punct`` token.
    """
    return [Token(m.lastgroup, m.group(0)) for m in _LEXEME.finditer(statement)]


def strip_comments(statement: str) -> str:
    """The statement with string literals blanked to '' and comments removed (for checks, never for sending).

    Versioned comments count as comments here, as drizzle's files never rely on them.
    """
    out = []
    in_versioned = False
    for tok in tokens(statement.encode("utf-8", "surrogateescape")):
        if tok.kind == "vopen":
            in_versioned = True
        elif tok.kind == "vclose" and in_versioned:
            in_versioned = False
        elif in_versioned:
            continue
        elif tok.kind == "str":
            out.append(b"''")
        elif tok.kind == "comment":
            out.append(b" ")
        else:
            out.append(tok.text)
    return b"".join(out).decode("utf-8", "surrogateescape")
