"""Secondary indexes and foreign keys added after the rows are in (as ``myloader --innodb-optimize-keys`` does).

InnoDB inserting into a table maintains every secondary index row by row (random B-tree page writes); adding the
index afterwards sorts the keys once and builds the tree bottom-up. The restore loads into a staging database, so a
``CREATE TABLE`` can be split into the bare table (columns, PRIMARY KEY, CHECK constraints, options) and one
``ALTER TABLE ... ADD UNIQUE KEY ..., ADD KEY ..., ADD CONSTRAINT ... FOREIGN KEY ...`` run after the load, in the
order ``SHOW CREATE TABLE`` printed them, so the final ``SHOW CREATE TABLE`` is the same (the tests compare it).

Only statements in ``SHOW CREATE TABLE``'s own layout are split (one definition per line, two-space indent), which
is what this tool's backups and mysqldump write; anything else is run as it is. FULLTEXT and SPATIAL keys stay in
the CREATE (their builds differ and they are rare). With ``FOREIGN_KEY_CHECKS=0`` (the load's session) adding a
foreign key does not re-read the rows, as the load never checked them either.
"""

from __future__ import annotations

import re

_DEFERRED = re.compile(rb"^  (?:UNIQUE KEY |KEY |CONSTRAINT `(?:[^`]|``)*` FOREIGN KEY )")
_HEAD = re.compile(rb"^CREATE (?:OR REPLACE )?TABLE (?:IF NOT EXISTS )?(`(?:[^`]|``)*`) \($")


def split_create(sql: bytes) -> tuple[bytes, bytes | None]:
    """(the CREATE TABLE without its secondary keys and foreign keys, the ALTER TABLE adding them or None)."""
    lines = sql.split(b"\n")
    head = _HEAD.match(lines[0]) if lines else None
    if head is None or len(lines) < 3 or not lines[-1].startswith(b")"):
        return sql, None
    body = lines[1:-1]
    if not all(line.startswith(b"  ") and not line.startswith(b"   ") for line in body):
        return sql, None  # not SHOW CREATE TABLE's layout (a definition over several lines): run as written
    defs = [line[:-1] if line.endswith(b",") else line for line in body]
    later = [d for d in defs if _DEFERRED.match(d)]
    kept = [d for d in defs if not _DEFERRED.match(d)]
    if not later or not kept:
        return sql, None
    bare = b"\n".join([lines[0], b",\n".join(kept), lines[-1]])
    alter = b"ALTER TABLE " + head.group(1) + b" " + b", ".join(b"ADD " + d.strip() for d in later)
    return bare, alter
