"""Destructive-change lint: statements that lose data or break the running app, found by parsing with sqlglot.

Flagged: DROP TABLE / DATABASE, ALTER ... DROP COLUMN / INDEX / PRIMARY KEY, DROP INDEX, RENAME TABLE, RENAME
COLUMN / ALTER ... RENAME TO, MODIFY / CHANGE that narrows a column (judged against the previous snapshot's type
when there is one), TRUNCATE, DELETE / UPDATE without WHERE. A statement sqlglot cannot parse is checked by its
leading keywords, so nothing destructive hides behind a parser gap.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import sqlfile
from .folder import Migration, MigrationFolder

if TYPE_CHECKING:
    from sqlglot import exp

_INT_RANK = {"tinyint": 1, "smallint": 2, "mediumint": 3, "int": 4, "integer": 4, "bigint": 5, "serial": 5}
_TEXT_RANK = {"tinytext": 255, "text": 65535, "mediumtext": 16777215, "longtext": 4294967295}


@dataclass(frozen=True)
class Finding:
    """One destructive statement: where it is, what kind, on what object, and why it matters."""

    migration: str
    statement: int  # 1-based, as an operator counts
    kind: str
    target: str
    detail: str

    def __str__(self) -> str:
        return f"{self.migration} statement {self.statement}: {self.kind} {self.target} ({self.detail})"

    def as_dict(self) -> dict:
        return {"migration": self.migration, "statement": self.statement, "kind": self.kind,
                "target": self.target, "detail": self.detail}


def lint_migration(migration: Migration, before: dict | None = None) -> list[Finding]:
    """Findings for every statement of ``migration``.

    :param before: the snapshot `tables` dict as it was before this migration (for MODIFY/CHANGE narrowing).
    """
    findings = []
    for number, statement in enumerate(migration.statements, start=1):
        for kind, target, detail in lint_statement(statement, before or {}):
            findings.append(Finding(migration.tag, number, kind, target, detail))
    return findings


def lint_statement(statement: str, before: dict) -> list[tuple[str, str, str]]:
    """``(kind, target, detail)`` for each destructive action in one SQL statement."""
    body = sqlfile.strip_comments(statement).strip()
    if not body:
        return []
    import sqlglot  # here, not at import: 0.2 s that every CLI command and the code location paid
    from sqlglot import exp

    quiet = logging.getLogger("sqlglot")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its "falling back to Command" warning is handled below
    try:
        parsed = [e for e in sqlglot.parse(statement, read="mysql") if e is not None]
    except sqlglot.errors.SqlglotError:
        parsed = []
    finally:
        quiet.setLevel(level)
    if not parsed or any(isinstance(e, exp.Command) for e in parsed):
        return _by_keywords(body)
    out = []
    for tree in parsed:
        out += _from_tree(tree, before)
    return out


def _name(node) -> str:
    return node.sql("mysql").replace("`", "") if node is not None else "?"


def _names(drop: exp.Drop) -> list[str]:
    nodes = drop.args.get("tables") or drop.expressions or ([drop.this] if drop.this is not None else [])
    return [_name(n) for n in nodes] or ["?"]


def _from_tree(tree: exp.Expression, before: dict) -> list[tuple[str, str, str]]:
    from sqlglot import exp  # imported by lint_statement already

    if isinstance(tree, exp.Drop):
        kind = str(tree.args.get("kind") or "").upper()
        if kind in ("TABLE", "DATABASE", "SCHEMA"):
            return [(f"DROP {kind}", ", ".join(_names(tree)), "every row in it is deleted")]
        if kind == "INDEX":
            return [("DROP INDEX", ", ".join(_names(tree)), "queries relying on it slow down; a unique rule is lifted")]
        return []
    if isinstance(tree, exp.TruncateTable):
        return [("TRUNCATE", ", ".join(_name(t) for t in tree.expressions), "every row is deleted")]
    if isinstance(tree, exp.Delete) and not tree.args.get("where"):
        return [("DELETE without WHERE", _name(tree.this), "every row is deleted")]
    if isinstance(tree, exp.Update) and not tree.args.get("where"):
        return [("UPDATE without WHERE", _name(tree.this), "every row is overwritten")]
    if isinstance(tree, exp.Alter):
        table = tree.this.name if tree.this is not None else "?"
        out = []
        for action in tree.args.get("actions") or []:
            out += _alter_action(table, action, before)
        return out
    return []


def _alter_action(table: str, action: exp.Expression, before: dict) -> list[tuple[str, str, str]]:
    from sqlglot import exp  # imported by lint_statement already

    if isinstance(action, exp.Drop):
        kind = str(action.args.get("kind") or "COLUMN").upper()
        target = f"{table}.{_names(action)[0]}"
        if kind == "COLUMN":
            return [("DROP COLUMN", target, "its data is deleted")]
        if kind in ("INDEX", "KEY"):
            return [("DROP INDEX", target, "queries relying on it slow down; a unique rule is lifted")]
        return []
    if isinstance(action, exp.DropPrimaryKey):
        return [("DROP PRIMARY KEY", table, "uniqueness lifted until re-added; refused on an AUTO_INCREMENT key (ER_WRONG_AUTO_KEY 1075)")]
    if isinstance(action, exp.AlterRename):
        return [("RENAME TABLE", f"{table} -> {action.this.name}", "the running app still uses the old name")]
    if isinstance(action, exp.RenameColumn):
        return [("RENAME COLUMN", f"{table}.{action.this.name} -> {action.args['to'].name}",
                 "the running app still uses the old name")]
    if isinstance(action, exp.ModifyColumn):
        coldef = action.this
        old_name = action.args.get("rename_from")
        column = (old_name.name if old_name is not None else coldef.name)
        new_type = coldef.args["kind"].sql("mysql").lower() if coldef.args.get("kind") is not None else "?"
        not_null = any(isinstance(c.args.get("kind"), exp.NotNullColumnConstraint) for c in coldef.constraints)
        old = ((before.get(table) or {}).get("columns") or {}).get(column)
        out = []
        if old_name is not None and old_name.name != coldef.name:
            out.append(("RENAME COLUMN", f"{table}.{column} -> {coldef.name}", "the running app still uses the old name"))
        if old is None:
            out.append(("MODIFY/CHANGE", f"{table}.{column}", f"type set to {new_type}; previous type unknown, "
                                                              "check it does not narrow"))
            return out
        why = narrowing(old["type"], new_type)
        if not_null and not old.get("notNull"):
            why = (why + "; " if why else "") + "NULL no longer allowed"
        if why:
            out.append(("MODIFY/CHANGE narrowing", f"{table}.{column}", f"{old['type']} -> {new_type}: {why}"))
        return out
    return []


def narrowing(old: str, new: str) -> str | None:
    """Why changing a column from ``old`` to ``new`` can lose or reject data (None when it widens or keeps)."""
    if re.sub(r"\s+", "", old.lower()) == re.sub(r"\s+", "", new.lower()):
        return None
    o, n = _type_parts(old), _type_parts(new)
    if o[0] in _INT_RANK and n[0] in _INT_RANK:
        if _INT_RANK[n[0]] < _INT_RANK[o[0]]:
            return "smaller integer type"
        return "signedness changes" if ("unsigned" in old.lower()) != ("unsigned" in new.lower()) else None
    if o[0] in ("varchar", "char", "varbinary", "binary") and n[0] in ("varchar", "char", "varbinary", "binary"):
        return "shorter" if o[1] and n[1] and n[1][0] < o[1][0] else None
    if o[0] in _TEXT_RANK and n[0] in _TEXT_RANK:
        return "smaller text type" if _TEXT_RANK[n[0]] < _TEXT_RANK[o[0]] else None
    if o[0] in _TEXT_RANK and n[0] in ("varchar", "char"):
        return "text to a bounded string"
    if o[0] == n[0] == "decimal":
        (op, os_), (np_, ns) = (o[1] + [10, 0])[:2], (n[1] + [10, 0])[:2]
        return "less precision or scale" if np_ - ns < op - os_ or ns < os_ else None
    if o[0] == n[0] == "enum":
        removed = set(_enum_values(old)) - set(_enum_values(new))
        return f"enum values removed: {sorted(removed)}" if removed else None
    return f"type changes from {o[0]} to {n[0]}"


def _type_parts(sql_type: str) -> tuple[str, list[int]]:
    m = re.match(r"\s*([a-z]+)\s*(?:\(([^)]*)\))?", sql_type.lower())
    if not m:
        return sql_type.lower(), []
    args = [int(a) for a in re.findall(r"\d+", m.group(2) or "")] if m.group(1) != "enum" else []
    return m.group(1), args


def _enum_values(sql_type: str) -> list[str]:
    return re.findall(r"'((?:[^']|'')*)'", sql_type)


def _by_keywords(body: str) -> list[tuple[str, str, str]]:
    """Fallback for statements sqlglot does not parse (e.g. `RENAME TABLE a TO b, c TO d`)."""
    words = re.sub(r"\s+", " ", body).strip().rstrip(";")
    m = re.match(r"(?i)RENAME TABLE (.+)", words)
    if m:
        return [("RENAME TABLE", pair.strip().replace("`", "").replace(" TO ", " -> ").replace(" to ", " -> "),
                 "the running app still uses the old name") for pair in m.group(1).split(",")]
    checks = [
        (r"(?i)^DROP (TABLE|DATABASE|SCHEMA)\b", "DROP", "every row in it is deleted"),
        (r"(?i)^TRUNCATE\b", "TRUNCATE", "every row is deleted"),
        (r"(?i)\bDROP (COLUMN )?`?\w+`?\s*(,|$)", "DROP COLUMN", "its data is deleted"),
        (r"(?i)\bDROP (INDEX|KEY)\b", "DROP INDEX", "queries relying on it slow down; a unique rule is lifted"),
        (r"(?i)\b(MODIFY|CHANGE)\b", "MODIFY/CHANGE", "check it does not narrow the column"),
        (r"(?i)^(DELETE|UPDATE)\b(?!.*\bWHERE\b)", "DELETE/UPDATE without WHERE", "touches every row"),
    ]
    return [(kind, words[:80], detail) for pattern, kind, detail in checks if re.search(pattern, words)]


def lint_migrations(folder: MigrationFolder, migrations: list[Migration] | None = None) -> list[Finding]:
    """Lint ``migrations`` (default: all of ``folder``), each against the snapshot before it."""
    findings = []
    for m in folder.migrations if migrations is None else migrations:
        findings += lint_migration(m, folder.tables_before(m))
    return findings
