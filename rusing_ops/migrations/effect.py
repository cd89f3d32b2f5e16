"""Did a DDL statement take effect? Read from the live schema, for a statement whose run was killed mid-flight.

A client killed during ``ALTER TABLE`` does not stop the server: the statement usually completes on its own. The
audit can only say "statement k was started"; this module looks at the schema to say whether it completed, for the
statement shapes drizzle-kit generates. Anything else is "cannot tell" (``None``) and the operator is asked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..core.database import table_exists

_NAME = r"`((?:[^`]|``)+)`"


@dataclass(frozen=True)
class Effect:
    """``applied``: True (the schema shows the statement's result), False (it shows the state before), None."""

    applied: bool | None
    evidence: str


def _table(conn: Connection, table: str) -> bool:
    return table_exists(conn, table)


def _column(conn: Connection, table: str, column: str) -> bool:
    return conn.execute(sa.text("SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
                                "AND TABLE_NAME = :t AND COLUMN_NAME = :c"), {"t": table, "c": column}).scalar_one() > 0


def _index(conn: Connection, table: str, index: str) -> bool:
    return conn.execute(sa.text("SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() "
                                "AND TABLE_NAME = :t AND INDEX_NAME = :i"), {"t": table, "i": index}).scalar_one() > 0


def _constraint(conn: Connection, table: str, name: str) -> bool:
    return conn.execute(sa.text("SELECT COUNT(*) FROM information_schema.TABLE_CONSTRAINTS WHERE "
                                "CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = :t AND CONSTRAINT_NAME = :n"),
                        {"t": table, "n": name}).scalar_one() > 0


def _u(name: str) -> str:
    return name.replace("``", "`")


# (pattern, check(conn, *names) -> bool, wording of the evidence, applied when check is True)
_RULES = [
    (rf"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?{_NAME}", lambda c, t: _table(c, t), "table `{0}` exists", True),
    (rf"DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?{_NAME}\s*;?\s*$", lambda c, t: _table(c, t), "table `{0}` exists", False),
    (rf"RENAME\s+TABLE\s+{_NAME}\s+TO\s+{_NAME}", lambda c, a, b: _table(c, b) and not _table(c, a),
     "table `{1}` exists and `{0}` does not", True),
    (rf"ALTER\s+TABLE\s+{_NAME}\s+RENAME\s+(?:TO\s+|AS\s+)?{_NAME}", lambda c, a, b: _table(c, b) and not _table(c, a),
     "table `{1}` exists and `{0}` does not", True),
    (rf"ALTER\s+TABLE\s+{_NAME}\s+RENAME\s+COLUMN\s+{_NAME}\s+TO\s+{_NAME}",
     lambda c, t, a, b: _column(c, t, b) and not _column(c, t, a), "column `{0}`.`{2}` exists and `{1}` does not", True),
    (rf"ALTER\s+TABLE\s+{_NAME}\s+ADD\s+CONSTRAINT\s+{_NAME}", lambda c, t, n: _constraint(c, t, n),
     "constraint `{1}` exists on `{0}`", True),
    (rf"ALTER\s+TABLE\s+{_NAME}\s+DROP\s+FOREIGN\s+KEY\s+{_NAME}", lambda c, t, n: _constraint(c, t, n),
     "foreign key `{1}` exists on `{0}`", False),
    (rf"ALTER\s+TABLE\s+{_NAME}\s+DROP\s+(?:INDEX|KEY)\s+{_NAME}", lambda c, t, n: _index(c, t, n),
     "index `{1}` exists on `{0}`", False),
    (rf"ALTER\s+TABLE\s+{_NAME}\s+DROP\s+(?:COLUMN\s+)?{_NAME}", lambda c, t, n: _column(c, t, n),
     "column `{0}`.`{1}` exists", False),
    (rf"ALTER\s+TABLE\s+{_NAME}\s+ADD\s+(?:COLUMN\s+)?{_NAME}", lambda c, t, n: _column(c, t, n),
     "column `{0}`.`{1}` exists", True),
    (rf"CREATE\s+(?:UNIQUE\s+)?INDEX\s+{_NAME}\s+ON\s+{_NAME}", lambda c, i, t: _index(c, t, i),
     "index `{0}` exists on `{1}`", True),
    (rf"DROP\s+INDEX\s+{_NAME}\s+ON\s+{_NAME}", lambda c, i, t: _index(c, t, i), "index `{0}` exists on `{1}`", False),
]


def statement_effect(conn: Connection, statement: str) -> Effect:
    """Whether ``statement`` (run on ``conn``'s current database) is visible in the live schema."""
    sql = re.sub(r"^\s*(--[^\n]*\n\s*|/\*.*?\*/\s*)*", "", statement, flags=re.DOTALL)
    for pattern, check, wording, when_true in _RULES:
        m = re.match(pattern, sql, flags=re.IGNORECASE | re.DOTALL)
        if m:
            names = [_u(n) for n in m.groups()]
            seen = bool(check(conn, *names))
            return Effect(seen == when_true, f"{wording.format(*names)}: {'yes' if seen else 'no'}")
    return Effect(None, "the schema cannot tell for this kind of statement")
