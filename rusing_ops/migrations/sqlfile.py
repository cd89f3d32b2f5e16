"""One Drizzle migration file, hashed and split exactly as drizzle-orm's migrator does.

drizzle-orm 0.45 (`drizzle-orm/src/migrator.ts` L42-52, ../shared/research/drizzle.md §1.4, §1.6) reads the file with
`readFileSync(path).toString()` (UTF-8, invalid bytes become U+FFFD), hashes that text with sha256 and splits it on
the plain substring `--> statement-breakpoint`, without trimming or dropping empty chunks. That split stays here as a
thin layer; quotes, comments and `;` are lexed by the project's one lexer, `backups/sqlsplit.py`.
"""

from __future__ import annotations

import hashlib
import re

from ..backups import sqlsplit

BREAKPOINT = "--> statement-breakpoint"
BOM = b"\xef\xbb\xbf"

_ROUTINE = re.compile(r"\s*CREATE\s+(?:DEFINER\s*=\s*\S+\s+)?(?:TRIGGER|PROCEDURE|FUNCTION|EVENT)\b", re.IGNORECASE)


def decode(raw: bytes) -> str:
    """The text drizzle-orm works on: UTF-8 with every invalid sequence replaced by U+FFFD (as Node does)."""
    return raw.decode("utf-8", "replace")


def drizzle_hash(raw: bytes) -> str:
    """The `hash` drizzle-orm records: sha256 hex of the decoded text re-encoded (= sha256 of the bytes for valid UTF-8)."""
    return hashlib.sha256(decode(raw).encode("utf-8")).hexdigest()


def split_statements(text: str) -> list[str]:
    """The chunks drizzle-orm sends, one query each: a plain split on the breakpoint marker, nothing trimmed."""
    return text.split(BREAKPOINT)


def strip_comments(statement: str) -> str:
    """The statement with string literals blanked to '' and comments removed (for checks, never for sending)."""
    return sqlsplit.strip_comments(statement)


def is_blank(statement: str) -> bool:
    """Whitespace only: the server answers ER_EMPTY_QUERY (1065) to such a query."""
    return not statement.strip()


def is_comment_only(statement: str) -> bool:
    """Only comments (MariaDB accepts it; MySQL 8 may answer "Query was empty")."""
    return not is_blank(statement) and not strip_comments(statement).strip()


def counts_several_statements(statement: str) -> bool:
    """True when a chunk holds more than one statement: sent as one query it fails with ER_PARSE_ERROR (1064)."""
    if _ROUTINE.match(strip_comments(statement)):
        return False  # a trigger/procedure body holds `;` inside BEGIN ... END
    try:
        return len(sqlsplit.split_text(statement)) > 1
    except sqlsplit.SqlSyntaxError:
        return False  # an unclosed quote: the server's own error names it


def first_invalid_utf8_offset(raw: bytes) -> int | None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start
    return None


def split_script(text: str) -> list[str]:
    """Statements of a hand-written SQL script: drizzle's breakpoints when present, else as the ``mysql`` client
    splits it (``;`` outside quotes and comments, ``DELIMITER`` understood, the last ``;`` optional).

    Comment-only and blank pieces are dropped (a reverse-SQL file is not a Drizzle migration).
    """
    pieces = split_statements(text) if BREAKPOINT in text else sqlsplit.split_text(text)
    return [p.strip() for p in pieces if strip_comments(p).strip().rstrip(";").strip()]
