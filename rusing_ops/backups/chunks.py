"""Primary-key range chunks: one large table dumped by several connections of the same snapshot.

A table is cut into ranges of its key's first column (``id < 1000``, ``id >= 1000 AND id < 2000``, ...,
``id >= 9000``), sized from ``information_schema.TABLES.DATA_LENGTH`` (an estimate, like MySQL Shell's chunker
and mydumper ``-r``). The bounds come from ``MIN``/``MAX`` read inside the snapshot; the first range has no lower
bound and the last no upper one, so the ranges cover every row exactly once whatever the estimate said. Rows
inside a chunk still come in key order.

Which tables are cut: those with a key (primary, or unique over NOT NULL columns: schema.Table.key) whose first
column is an integer. A table without such a key -- no key at all, or a key starting with a string, date or
decimal -- is dumped whole on one connection, as before: ranges of text depend on the collation and a range
query without an index would scan the whole table once per chunk.

Checksums stay exact: the independent checksum (checksum.py) is a row count and an order-independent SUM of
per-row CRC32s, so each chunk's query sums its own rows' hashes and the chunks' sums add up to the whole table's.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from ..core.database import quote_ident
from .checksum import PREFIX, checksum_text
from .manifest import TableEntry
from .schema import Table

INTEGER = {"tinyint", "smallint", "mediumint", "int", "integer", "bigint"}
MIN_CHUNK_BYTES = 4 * 1024 * 1024
MAX_CHUNK_BYTES = 64 * 1024 * 1024  # MySQL Shell's default chunk size
MAX_CHUNKS = 64


@dataclass(frozen=True)
class Chunk:
    table: Table
    where: str | None  # None: the whole table
    index: int = 0
    count: int = 1
    estimated_bytes: int = 0


def chunk_column(table: Table) -> str | None:
    """The column a table's rows are cut by: its key's first column when that is an integer, else None."""
    if not table.key:
        return None
    first = next((c for c in table.columns if c.name == table.key[0]), None)
    return first.name if first is not None and first.data_type in INTEGER else None


def chunk_bytes_for(total_bytes: int, workers: int) -> int:
    """About four chunks per worker over the whole database, within 4 .. 64 MiB."""
    return max(min(total_bytes // max(4 * workers, 1), MAX_CHUNK_BYTES), MIN_CHUNK_BYTES)


def bounds(low: int, high: int, parts: int) -> list[int]:
    """The ``parts - 1`` inner cut points of the integer range ``low .. high`` (fewer when the range is small)."""
    span = high - low + 1
    parts = max(min(parts, span), 1)
    return sorted({low + span * i // parts for i in range(1, parts)})


def conditions(column: str, cuts: list[int]) -> list[str | None]:
    """WHERE conditions covering every value exactly once: ``< c1``, ``>= c1 AND < c2``, ..., ``>= cN``."""
    if not cuts:
        return [None]
    q = quote_ident(column)
    out = [f"{q} < {cuts[0]}"]
    out += [f"{q} >= {a} AND {q} < {b}" for a, b in itertools.pairwise(cuts)]
    return out + [f"{q} >= {cuts[-1]}"]


def data_lengths(cur, database: str) -> dict[str, int]:
    cur.execute("SELECT TABLE_NAME, IFNULL(DATA_LENGTH, 0) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
                (database,))
    return {(n.decode() if isinstance(n, bytes) else n): int(b) for n, b in cur.fetchall()}


def plan(cur, database: str, tables: list[Table], *, workers: int, chunk_bytes: int | None = None,
         sizes: dict[str, int] | None = None) -> list[Chunk]:
    """Every table as one or more chunks (through ``cur``, inside the snapshot), largest first. ``sizes``: bytes
    per table when the caller knows them better than ``information_schema`` (whose DATA_LENGTH of a table just
    loaded can still say 16 KiB)."""
    sizes = data_lengths(cur, database) if sizes is None else sizes
    size = chunk_bytes or chunk_bytes_for(sum(sizes.get(t.name, 0) for t in tables), workers)
    out: list[Chunk] = []
    for table in tables:
        nbytes = sizes.get(table.name, 0)
        column = chunk_column(table)
        parts = min(-(-nbytes // size), MAX_CHUNKS) if workers > 1 else 1
        wheres: list[str | None] = [None]
        if column is not None and parts > 1:
            q = quote_ident(column)
            cur.execute(f"SELECT MIN({q}), MAX({q}) FROM {quote_ident(table.name)}")
            low, high = cur.fetchone()
            if low is not None:
                wheres = conditions(column, bounds(int(low), int(high), parts))
        out += [Chunk(table, w, i, len(wheres), nbytes // len(wheres)) for i, w in enumerate(wheres)]
    return sorted(out, key=lambda c: (-c.estimated_bytes, -c.table.estimated_rows, c.table.name, c.index))


def combine_checksums(parts: list[str | None]) -> str | None:
    """The table's checksum from its chunks': counts and sums add up (None if any part is missing)."""
    if any(p is None for p in parts):
        return None
    count = total = 0
    for part in parts:
        prefix, n, s = part.split(":")
        if prefix != PREFIX:
            raise ValueError(f"not a {PREFIX} checksum: {part!r}")
        count, total = count + int(n), total + int(s)
    return checksum_text(count, total)


def combine(entries: list[TableEntry]) -> TableEntry:
    """One table's entry from its chunks' entries, in chunk order: the sum of rows and the combined server
    checksum (a single chunk is returned as is)."""
    if len(entries) == 1:
        return entries[0]
    return TableEntry(rows=sum(e.rows for e in entries),
                      server_checksum=combine_checksums([e.server_checksum for e in entries]))
