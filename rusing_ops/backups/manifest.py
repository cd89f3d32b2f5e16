"""The manifest: the JSON document written after a backup's data object, which makes the backup complete.

A backup without a manifest is incomplete and is never offered for restore (DESIGN.md §3).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from ..core.errors import OpsError

FORMAT = "rusing_ops-backup/1"


class ManifestError(OpsError):
    """A manifest is missing, unreadable, or does not describe its data object."""


@dataclass
class TableEntry:
    rows: int
    # The independent checksum (checksum.py): computed by the server from the stored values in the backup's
    # snapshot; verify and restore compare the loaded copy against it. None in backups of older versions.
    server_checksum: str | None = None
    # Backups of earlier versions: sha256 of the rows' SQL text as rendered, never compared by anything (the
    # object's sha256 and server_checksum are the checks); no longer computed (0.2 s of CPU per 100 MB of dump).
    checksum: str | None = None


@dataclass
class Manifest:
    key: str
    sha256: str
    bytes: int
    uncompressed_bytes: int
    compression: str
    database: str
    server_version: str
    tables: dict[str, TableEntry]
    views: list[str] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)
    routines: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    sequences: dict[str, int] = field(default_factory=dict)  # name -> next value (restored by ALTER SEQUENCE)
    notes: list[str] = field(default_factory=list)  # how the backup differs from the database (versioned tables)
    migration_head: dict | None = None
    reason: str = ""
    run_id: str | None = None
    tool_version: str = ""
    started_at: str = ""
    duration_s: float = 0.0
    server: dict | None = None  # the (server, database) it belongs to: address host:port, hostname, uuid
    snapshot: dict | None = None  # where the snapshot stands: binlog file/position/GTID or TiDB TSO (snapshot.py)
    # {"format": "age", "recipients": [sha256 fingerprint, ...]} when the data object is encrypted (crypto.py);
    # sha256 and bytes above are then those of the stored (encrypted) bytes. Never a key.
    encryption: dict | None = None
    format: str = FORMAT

    @property
    def total_rows(self) -> int:
        return sum(t.rows for t in self.tables.values())

    @property
    def ratio(self) -> float:
        """Uncompressed SQL bytes per stored byte."""
        return round(self.uncompressed_bytes / self.bytes, 2) if self.bytes else 0.0

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True, ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, data: bytes, key: str) -> Manifest:
        try:
            raw = json.loads(data)
            if raw.get("format") != FORMAT:
                raise ValueError(f"format {raw.get('format')!r}, expected {FORMAT!r}")
            raw["tables"] = {name: TableEntry(**entry) for name, entry in raw["tables"].items()}
            manifest = cls(**raw)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ManifestError(f"The manifest of backup {key!r} is unreadable ({exc}).",
                                next_step="restore another backup (`rusing-ops db backups` lists them).") from None
        if manifest.key != key:
            raise ManifestError(f"The manifest beside {key!r} describes {manifest.key!r}.",
                                next_step="restore another backup (`rusing-ops db backups` lists them).")
        return manifest
