"""Where a restore reads from: a backup in the store (with its manifest), or a plain SQL file (mysqldump)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from ..core.errors import NotFound, OpsError
from ..core.store import BackupStore
from . import catalog, keys
from .manifest import Manifest
from .sqlsplit import SqlSyntaxError, split_statements
from .streams import HashingReader, decompressed_chunks


class BackupCorrupt(OpsError):
    """The data object does not match its manifest (truncated, altered) or cannot be decompressed."""


@dataclass
class Source:
    label: str  # what an operator calls it: the key, or the file path
    opener: Callable[[], BinaryIO]
    compression: str
    manifest: Manifest | None = None

    def check_integrity(self) -> None:
        """Read the whole object once: size and sha256 must equal the manifest's (no database is touched)."""
        if self.manifest is None:
            return
        with self.opener() as stream:
            reader = HashingReader(stream)
            reader.drain()
        if reader.bytes != self.manifest.bytes or reader.hash.hexdigest() != self.manifest.sha256:
            raise BackupCorrupt(
                f"Backup {self.label!r} does not match its manifest: {reader.bytes:,} bytes with sha256 "
                f"{reader.hash.hexdigest()[:16]}..., expected {self.manifest.bytes:,} bytes with sha256 "
                f"{self.manifest.sha256[:16]}... (truncated or altered). It was not restored.",
                next_step=f"restore another backup ({catalog.NEXT_LIST}).", key=self.label)

    def statements(self) -> Iterator[bytes]:
        """The statements of the decompressed SQL text; a damaged stream raises :class:`BackupCorrupt`.

        Once exhausted, the bytes read were compared with the manifest again (the object could have been
        replaced since :meth:`check_integrity`).
        """
        with self.opener() as stream:
            reader = HashingReader(stream)
            try:
                yield from split_statements(decompressed_chunks(reader, self.compression))
            except (ValueError, SqlSyntaxError) as exc:
                raise BackupCorrupt(f"{self.label!r} cannot be read as SQL: {exc}.",
                                    next_step="check the file, or restore another backup.") from None
            reader.drain()
        if self.manifest is not None and reader.hash.hexdigest() != self.manifest.sha256:
            raise BackupCorrupt(f"Backup {self.label!r} changed while it was being restored (sha256 differs from "
                                "its manifest).", next_step="run the restore again.", key=self.label)


def store_source(store: BackupStore, ref: str | None, database: str | None = None) -> Source:
    """A backup from the store: ``latest``, a key or a partition name (must be complete), or a plain object."""
    if ref and keys.parse_key(ref) is None and store.exists(ref):
        return Source(ref, lambda: store.open_read(ref), keys.compression_of(ref))
    entry = catalog.resolve(store, ref, database)  # `latest` of ``database`` (catalog.py: scope)
    return Source(entry.key, lambda: store.open_read(entry.key), entry.compression, entry.manifest)


def file_source(path: str | os.PathLike) -> Source:
    p = Path(path).expanduser()
    if not p.is_file():
        raise NotFound(f"There is no file {str(p)!r}.", next_step="check the path given to --file.")
    return Source(str(p), lambda: open(p, "rb"), keys.compression_of(p.name))


def resolve_source(store: BackupStore, ref: str | None, database: str | None = None) -> Source:
    """``ref`` as a local file path if one exists there, else as a backup in the store."""
    if ref and ref != "latest" and Path(ref).expanduser().is_file():
        return file_source(ref)
    return store_source(store, ref, database)
