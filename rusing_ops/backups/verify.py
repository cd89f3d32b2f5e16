"""Verification by real restore: load a backup into a scratch database, compare every table's row count and
server checksum (checksum.py: computed from the stored values, in the backup's snapshot and again in the loaded
copy, never from the dump's text) and every sequence's next value with the manifest, then drop the scratch database.

"An integrity hash is not a recovery test" (research/anchors.md §3.8): the sha256 check is only the first step.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import pymysql

from ..core.database import quote_ident
from ..core.dburl import DatabaseURL
from ..core.errors import OpsError
from ..core.store import BackupStore
from . import catalog
from .connection import open_connection
from .manifest import ManifestError
from .restore import StageResult, derived_name, drop_database, stage, stamp
from .source import store_source
from .swap import recreate_objects


@dataclass
class VerifyResult:
    key: str
    ok: bool
    scratch_db: str
    tables: dict[str, dict] = field(default_factory=dict)  # name -> expected/found rows, checksum_ok
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. the primary object was damaged: the copy was verified
    duration_s: float = 0.0
    verified_at: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def sequence_values(url: DatabaseURL, database: str, names: list[str]) -> dict[str, int | None]:
    """The next value of each sequence ``names`` of ``database`` (None when it is missing)."""
    conn = open_connection(url, "")
    out: dict[str, int | None] = {}
    try:
        with conn.cursor() as cur:
            for name in names:
                try:
                    cur.execute(f"SELECT next_not_cached_value FROM {quote_ident(database)}.{quote_ident(name)}")
                    out[name] = int(cur.fetchone()[0])
                except pymysql.err.MySQLError:
                    out[name] = None
    finally:
        conn.close()
    return out


def compare(manifest, staged: StageResult, sequences: dict[str, int | None], result: VerifyResult) -> None:
    """Fill ``result`` with the per-table comparison of the loaded copy with ``manifest``."""
    for name, expected in manifest.tables.items():
        rows = staged.tables.get(name)
        found = staged.checksums.get(name)
        compared = expected.server_checksum is not None and bool(staged.checksums)  # not across server kinds
        ok = found == expected.server_checksum if compared else None
        result.tables[name] = {"rows_expected": expected.rows, "rows_found": rows, "checksum_ok": ok}
        if rows != expected.rows or ok is False:
            result.problems.append(f"table {name}: {rows} rows (expected {expected.rows}), server checksum "
                                   f"{'differs' if ok is False else 'matches'}")
    for name in sorted(set(staged.tables) - set(manifest.tables)):
        result.problems.append(f"table {name} is in the file but not in the manifest")
    for name, value in sorted(manifest.sequences.items()):
        if sequences.get(name) != value:
            result.problems.append(f"sequence {name}: next value {sequences.get(name)} (expected {value})")


def verify_backup(url: DatabaseURL, store: BackupStore, ref: str | None = "latest", *,
                  log: Callable[[str], None] | None = None, record: bool = True) -> VerifyResult:
    """Restore ``ref`` into ``<db>__verify_<ts>`` and compare it with the manifest; record the result in the store.

    A damaged backup gives ``ok=False`` with the reason in ``problems`` (it does not raise); only a missing
    backup or manifest raises.
    """
    started = time.monotonic()
    log = log or (lambda _line: None)
    source = store_source(store, ref, url.database)  # `latest` of the configured database
    if source.manifest is None:
        raise ManifestError(f"{source.label!r} has no manifest: only backups taken by this tool can be "
                                    "verified.", next_step="verify a backup listed by `rusing-ops db backups`.")
    scratch = derived_name(url.database, "verify", stamp())
    result = VerifyResult(source.label, False, scratch)
    try:
        for note in source.notes:  # why this backup (`latest` skipped a newer one), or read from a copy
            log(f"note: {note}")
        # One read, as a restore: stage() hashes the object while loading it and, when it is damaged, loads the
        # second copy that matches the manifest (copies.py), saying so in source.notes.
        staged = stage(url, source, scratch, log=log)
        result.notes.extend(source.notes)
        recreate_objects(url, scratch, staged.deferred)
        compare(source.manifest, staged, sequence_values(url, scratch, sorted(source.manifest.sequences)), result)
        result.ok = not result.problems
    except OpsError as exc:
        result.problems.append(exc.message)
    finally:
        drop_database(url, scratch)
    result.duration_s = round(time.monotonic() - started, 3)
    result.verified_at = dt.datetime.now(dt.UTC).isoformat()
    log(f"verification of {source.label}: {'OK' if result.ok else 'FAILED: ' + '; '.join(result.problems)}")
    if record:
        catalog.record_verification(store, source.label, result.to_dict())
    return result
