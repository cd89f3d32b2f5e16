"""Drift: the latest Drizzle snapshot against the live database, with MariaDB's rewrites normalised away.

Structure (tables, views, primary keys, indexes, unique constraints, foreign keys, checks) comes from SQLAlchemy's
inspector; column details from information_schema.COLUMNS (the exact COLUMN_TYPE / COLUMN_DEFAULT / EXTRA).
Normalised (research/drizzle.md §5): integer display widths, `boolean` = `tinyint(1)`, `json` = `longtext` (+ its
implicit `CHECK (json_valid(..))`), `serial`, `(now())` = `current_timestamp()`, quoted / numeric default spellings,
`DEFAULT NULL`, PK names (always PRIMARY), the index InnoDB adds for a foreign key, CHECK text qualifiers and case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .audit import AUDIT_TABLE
from .planner import MIGRATIONS_TABLE

IGNORED_TABLES = {MIGRATIONS_TABLE, AUDIT_TABLE}
OWN_PREFIX = "rusing_ops_"  # this tool's own bookkeeping tables and non-unique read indexes
_INT_TYPES = ("tinyint", "smallint", "mediumint", "int", "bigint")
_NOW = {"now()", "current_timestamp", "current_timestamp()", "localtimestamp", "localtimestamp()", "localtime()"}


@dataclass(frozen=True)
class DriftFinding:
    """One difference: the object kind, table, object (column / index / ... name), expected and actual."""

    kind: str
    table: str
    name: str | None
    expected: str | None
    actual: str | None

    def __str__(self) -> str:
        where = (f"view `{self.table}`" if self.kind == "view"
                 else f"table `{self.table}`" + (f" {self.kind} `{self.name}`" if self.name else ""))
        if self.expected is None:
            return f"{where}: in the database but not in the snapshot ({self.actual})"
        if self.actual is None:
            return f"{where}: in the snapshot but missing from the database ({self.expected})"
        return f"{where}: snapshot says {self.expected}, database has {self.actual}"

    def as_dict(self) -> dict:
        return {"kind": self.kind, "table": self.table, "name": self.name, "expected": self.expected,
                "actual": self.actual, "message": str(self)}


def canonical_type(sql_type: str) -> str:
    """A column type in one spelling, e.g. `int(11)` -> `int`, `boolean` -> `tinyint(1)`, `json` -> `longtext`."""
    t = re.sub(r"\s+", " ", sql_type.strip().lower())
    t = re.sub(r" (character set|charset|collate) \S+", "", t)
    t = re.sub(r"\s*,\s*", ",", t).replace("( ", "(").replace(" )", ")")
    t = {"boolean": "tinyint(1)", "bool": "tinyint(1)", "json": "longtext", "integer": "int",
         "serial": "bigint unsigned", "decimal": "decimal(10,0)", "dec": "decimal(10,0)"}.get(t, t)
    m = re.fullmatch(r"(tinyint|smallint|mediumint|int|integer|bigint)(\((\d+)\))?( unsigned)?( zerofill)?", t)
    if m:
        base = "int" if m.group(1) == "integer" else m.group(1)
        width = "(1)" if base == "tinyint" and m.group(3) == "1" else ""
        return base + width + (m.group(4) or "") + (m.group(5) or "")
    return re.sub(r"^(varchar|char|varbinary|binary|decimal|numeric|float|double)\b", lambda x: x.group(1), t)


def canonical_default(value) -> str | None:
    """A column default in one spelling: None for no default / NULL, `current_timestamp`, unquoted literals."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return _number(str(value))
    v = str(value).strip()
    while v.startswith("(") and v.endswith(")"):
        v = v[1:-1].strip()
    if v.upper() == "NULL":
        return None
    if v.lower() in _NOW or re.fullmatch(r"(?i)(now|current_timestamp)\(\d*\)", v):
        return "current_timestamp"
    if len(v) >= 2 and v[0] == v[-1] == "'":
        v = v[1:-1].replace("''", "'").replace("\\'", "'")
    if v.lower() in ("true", "false"):
        return "1" if v.lower() == "true" else "0"
    return _number(v)


def _number(v: str) -> str:
    try:
        d = Decimal(v)
    except InvalidOperation:
        return v
    return format(d.normalize(), "f") if d.is_finite() else v


def canonical_check(text: str) -> str:
    t = re.sub(r"`[^`]+`\.(?=`)", "", text)  # table qualifier
    t = t.replace("`", "").lower()
    t = re.sub(r"\s+", " ", t).strip()
    while t.startswith("(") and t.endswith(")"):
        t = t[1:-1].strip()
    return re.sub(r"\s*([()<>=!,])\s*", r"\1", t)


def _columns(conn: Connection, table: str) -> dict[str, dict]:
    rows = conn.execute(sa.text(
        "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t ORDER BY ORDINAL_POSITION"), {"t": table})
    out = {}
    for r in rows:
        extra = (r.EXTRA or "").lower()
        out[r.COLUMN_NAME] = {"type": canonical_type(r.COLUMN_TYPE), "notNull": r.IS_NULLABLE == "NO",
                              "default": canonical_default(r.COLUMN_DEFAULT), "autoincrement": "auto_increment" in extra,
                              "onUpdate": "on update" in extra,
                              "generated": "stored" if "stored generated" in extra or "persistent" in extra
                              else "virtual" if "virtual generated" in extra else None}
    return out


def live_schema(conn: Connection) -> dict:
    """The live database in the snapshot's terms: ``{"tables": {...}, "views": {name: [columns]}}``, ignoring this tool's tables."""
    insp = sa.inspect(conn)
    tables = {}
    for name in insp.get_table_names():
        if name in IGNORED_TABLES or name.startswith(OWN_PREFIX):
            continue
        tables[name] = {
            "columns": _columns(conn, name),
            "pk": list(insp.get_pk_constraint(name).get("constrained_columns") or []),
            "indexes": {i["name"]: {"columns": list(i["column_names"]), "unique": bool(i["unique"])}
                        for i in insp.get_indexes(name)},
            "foreignKeys": {f["name"]: {"tableTo": f["referred_table"], "columnsFrom": list(f["constrained_columns"]),
                                        "columnsTo": list(f["referred_columns"]),
                                        "onDelete": _action(f["options"].get("ondelete")),
                                        "onUpdate": _action(f["options"].get("onupdate"))}
                            for f in insp.get_foreign_keys(name)},
            "checks": {c["name"]: canonical_check(c["sqltext"]) for c in insp.get_check_constraints(name)},
        }
    views = {v: sorted(c["name"] for c in insp.get_columns(v)) for v in insp.get_view_names()}
    return {"tables": tables, "views": views}


def _action(value) -> str:
    v = (value or "no action").lower()
    return "no action" if v == "restrict" else v  # identical in InnoDB


def compare(snapshot: dict, live: dict) -> list[DriftFinding]:
    """Every difference between a snapshot's `tables` / `views` and :func:`live_schema`, tables in name order."""
    out: list[DriftFinding] = []
    want, have = snapshot.get("tables") or {}, live["tables"]
    for table in sorted(set(want) | set(have)):
        if table not in have:
            out.append(DriftFinding("table", table, None, "table", None))
        elif table not in want:
            out.append(DriftFinding("table", table, None, None, f"{len(have[table]['columns'])} columns"))
        else:
            out += _compare_table(table, want[table], have[table])
    want_views, have_views = snapshot.get("views") or {}, live["views"]
    for view in sorted(set(want_views) | set(have_views)):
        if view not in have_views:
            out.append(DriftFinding("view", view, None, "view", None))
        elif view not in want_views:
            out.append(DriftFinding("view", view, None, None, "view"))
        else:
            columns = sorted(want_views[view].get("columns") or {})
            if columns and columns != have_views[view]:
                out.append(DriftFinding("view", view, None, f"columns {_show(columns)}",
                                        f"columns {_show(have_views[view])}"))
    return out


def _compare_table(table: str, want: dict, have: dict) -> list[DriftFinding]:
    out = []
    json_columns = set()
    for name in list(want.get("columns") or {}) + [c for c in have["columns"] if c not in (want.get("columns") or {})]:
        w, h = (want.get("columns") or {}).get(name), have["columns"].get(name)
        if h is None:
            out.append(DriftFinding("column", table, name, w["type"], None))
            continue
        if w is None:
            out.append(DriftFinding("column", table, name, None, h["type"]))
            continue
        if w["type"].strip().lower() == "json":
            json_columns.add(name)
        expected = {"type": canonical_type(w["type"]), "notNull": bool(w.get("notNull")),
                    "default": canonical_default(w.get("default")), "autoincrement": bool(w.get("autoincrement")),
                    "onUpdate": bool(w.get("onUpdate")), "generated": (w.get("generated") or {}).get("type")}
        if w["type"].strip().lower() == "serial":
            expected.update(notNull=True, autoincrement=True)
        for key, value in expected.items():
            if h[key] != value:
                out.append(DriftFinding(f"column {key}", table, name, _show(value), _show(h[key])))
    pk_cols = next(iter((want.get("compositePrimaryKeys") or {}).values()), {}).get("columns", [])
    if list(pk_cols) != have["pk"]:
        out.append(DriftFinding("primary key", table, None, _show(pk_cols), _show(have["pk"])))
    out += _compare_indexes(table, want, have)
    out += _compare_fks(table, want, have)
    checks = {n: canonical_check(c["value"]) for n, c in (want.get("checkConstraint") or {}).items()}
    live_checks = {n: c for n, c in have["checks"].items() if not re.fullmatch(r"json_valid\((\w+)\)", c)
                   or re.fullmatch(r"json_valid\((\w+)\)", c).group(1) not in json_columns}
    for name in sorted(set(checks) | set(live_checks)):
        if checks.get(name) != live_checks.get(name):
            out.append(DriftFinding("check", table, name, checks.get(name), live_checks.get(name)))
    return out


def _compare_indexes(table: str, want: dict, have: dict) -> list[DriftFinding]:
    expected = {n: {"columns": list(i["columns"]), "unique": bool(i.get("isUnique"))}
                for n, i in (want.get("indexes") or {}).items()}
    expected.update({n: {"columns": list(u["columns"]), "unique": True}
                     for n, u in (want.get("uniqueConstraints") or {}).items()})
    out = []
    for name, idx in have["indexes"].items():
        fk = have["foreignKeys"].get(name)
        if name not in expected and fk and idx["columns"] == fk["columnsFrom"] and not idx["unique"]:
            continue  # InnoDB's own index for a foreign key that had no usable one
        if name not in expected and name.startswith(OWN_PREFIX) and not idx["unique"]:
            continue  # this tool's own read index (e.g. webhooks' keyset index on webhook_events_log)
        w = expected.get(name)
        if w is None:
            kind = "unique index" if idx["unique"] else "index"
            out.append(DriftFinding(kind, table, name, None, f"{kind} on {_show(idx['columns'])}"))
        elif w != idx:
            out.append(DriftFinding("index", table, name, _index(w), _index(idx)))
    for name, w in expected.items():
        if name not in have["indexes"]:
            out.append(DriftFinding("unique index" if w["unique"] else "index", table, name, _index(w), None))
    return out


def _compare_fks(table: str, want: dict, have: dict) -> list[DriftFinding]:
    expected = {n: {"tableTo": f["tableTo"], "columnsFrom": list(f["columnsFrom"]), "columnsTo": list(f["columnsTo"]),
                    "onDelete": _action(f.get("onDelete")), "onUpdate": _action(f.get("onUpdate"))}
                for n, f in (want.get("foreignKeys") or {}).items()}
    out = []
    for name in sorted(set(expected) | set(have["foreignKeys"])):
        w, h = expected.get(name), have["foreignKeys"].get(name)
        if w != h:
            out.append(DriftFinding("foreign key", table, name, _fk(w) if w else None, _fk(h) if h else None))
    return out


def _index(i: dict) -> str:
    return ("unique " if i["unique"] else "") + _show(i["columns"])


def _fk(f: dict) -> str:
    return (f"{_show(f['columnsFrom'])} -> {f['tableTo']}{_show(f['columnsTo'])} on delete {f['onDelete']} "
            f"on update {f['onUpdate']}")


def _show(value) -> str:
    if isinstance(value, list):
        return "(" + ", ".join(value) + ")"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else str(value)


def detect_drift(conn: Connection, snapshot_data: dict) -> list[DriftFinding]:
    """:func:`compare` of ``snapshot_data`` (a parsed snapshot) with the database behind ``conn``."""
    return compare(snapshot_data, live_schema(conn))
