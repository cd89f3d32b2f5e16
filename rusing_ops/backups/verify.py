"""Verification by real restore: load a backup into a scratch database, compare every table's row count and
content checksum with the manifest (taken from the source snapshot), then drop the scratch database.

"An integrity hash is not a recovery test" (research/anchors.md §3.8): the sha256 check is only the first step.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from ..core.dburl import DatabaseURL
from ..core.errors import OpsError
from ..core.store import BackupStore
from . import catalog
from .manifest import ManifestError
from .connection import open_connection
from .dump import dump_rows
from .snapshot import start_snapshot
from .restore import derived_name, drop_database, stage, stamp
from .schema import read_schema
from .source import store_source
from .swap import recreate_objects


@dataclass
class VerifyResult:
    key: str
    ok: bool
    scratch_db: str
    tables: dict[str, dict] = field(default_factory=dict)  # name -> expected/found rows, checksum_ok
    problems: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    verified_at: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def content_checksums(url: DatabaseURL, database: str) -> dict[str, tuple[int, str]]:
    """(rows, checksum) per table of ``database``, computed exactly as the backup computed them."""
    conn = open_connection(url, database)
    try:
        start_snapshot(conn)
        with conn.cursor() as cur:
            schema = read_schema(cur, database)
        out = {}
        for table in schema.tables:
            entry = dump_rows(conn, table, lambda _stmt: None)
            out[table.name] = (entry.rows, entry.checksum)
        conn.rollback()
        return out
    finally:
        conn.close()


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
        source.check_integrity()
        staged = stage(url, source, scratch, log=log)
        recreate_objects(url, scratch, staged.deferred)
        found = content_checksums(url, scratch)
        for name, expected in source.manifest.tables.items():
            rows, checksum = found.get(name, (None, None))
            result.tables[name] = {"rows_expected": expected.rows, "rows_found": rows,
                                   "checksum_ok": checksum == expected.checksum}
            if rows != expected.rows or checksum != expected.checksum:
                result.problems.append(f"table {name}: {rows} rows (expected {expected.rows}), content checksum "
                                       f"{'matches' if checksum == expected.checksum else 'differs'}")
        for name in sorted(set(found) - set(source.manifest.tables)):
            result.problems.append(f"table {name} is in the file but not in the manifest")
        result.ok = not result.problems
    except OpsError as exc:
        result.problems.append(exc.message)
    finally:
        drop_database(url, scratch)
    result.duration_s = round(time.monotonic() - started, 3)
    result.verified_at = dt.datetime.now(dt.timezone.utc).isoformat()
    log(f"verification of {source.label}: {'OK' if result.ok else 'FAILED: ' + '; '.join(result.problems)}")
    if record:
        catalog.record_verification(store, source.label, result.to_dict())
    return result
