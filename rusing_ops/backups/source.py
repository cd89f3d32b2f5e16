"""Where a restore reads from: a backup in the store (with its manifest), or a plain SQL file (mysqldump).

A local file is taken only when it is a dump (README "Restore: what a dump file may contain"): a regular file named
``*.sql``, ``*.sql.gz`` or ``*.sql.zst``, not under ``/proc``, ``/sys``, ``/dev`` or ``/run`` (symbolic links
resolved), whose decompressed text starts as SQL and holds no NUL byte. Nothing of a refused file reaches a server
and no error shows its content. (Through the UI's run config this is the same rule: a path is a dump or nothing.)
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..core.errors import NotFound, OpsError, StoreError
from ..core.store import BackupStore
from . import catalog, copies, crypto, keys
from .manifest import Manifest, ManifestError
from .sqlsplit import SqlSyntaxError, numbered_statements
from .streams import HashingReader, decompressed_chunks


class BackupCorrupt(OpsError):
    """The data object does not match its manifest (truncated, altered) or cannot be decompressed."""


class NotAsStored(BackupCorrupt):
    """The stored object's size or sha256 is not its manifest's: the message says it was not restored."""


class NotADump(OpsError):
    """A path given as a restore source is not a SQL dump file (or is in a place dumps are never read from)."""


DUMP_SUFFIXES = (".sql", ".sql.gz", ".sql.zst")
FORBIDDEN_ROOTS = ("/proc", "/sys", "/dev", "/run")
SNIFF_BYTES = 64 * 1024
_HEADER_DATABASE = re.compile(rb"^-- Host: \S*\s+Database: (\S+)[ \t]*$", re.MULTILINE)
_SQL_START = re.compile(rb"\s*(?:--|/\*|#|[A-Za-z])")


@dataclass
class Source:
    label: str  # what an operator calls it: the key, or the file path
    opener: Callable[[], BinaryIO]
    compression: str
    manifest: Manifest | None = None
    decrypt: Callable[[BinaryIO], BinaryIO] | None = None  # stored bytes -> plaintext (an encrypted backup: crypto.py)
    fallbacks: list[tuple[str, Callable[[], BinaryIO]]] = field(default_factory=list)  # (where, opener): copies.py
    notes: list[str] = field(default_factory=list)  # what the restore must say (e.g. read from the second copy)

    checked: bool = False  # the stored object was read whole and matched the manifest (use_copy)

    def damage(self) -> OpsError | None:
        """Read the stored object whole: why it does not match the manifest (size, sha256, unreadable), or None."""
        try:
            self._check_stored(self.opener)
        except (BackupCorrupt, StoreError, NotFound) as exc:
            return exc
        return None

    def use_copy(self, damage: OpsError) -> str | None:
        """The first second copy (copies.py) whose size and sha256 match the manifest replaces the damaged primary
        from here on; the returned note (also kept in :attr:`notes`) says so. None when no copy matches."""
        for where, opener in self.fallbacks:
            try:
                self._check_stored(opener)
            except (BackupCorrupt, StoreError, NotFound):
                continue
            self.opener, self.fallbacks, self.checked = opener, [], True
            note = (f"the primary object of {self.label} is unusable ({damage.message}); using the copy at {where} "
                    "instead: its size and sha256 match the manifest")
            self.notes.append(note)
            return note
        return None

    def _plain(self, stream):
        return self.decrypt(stream) if self.decrypt is not None else contextlib.nullcontext(stream)

    def _check_stored(self, opener) -> None:
        with opener() as stream:
            reader = HashingReader(stream)
            reader.drain()
        self._compare(reader)

    def _compare(self, reader: HashingReader) -> None:
        if reader.bytes != self.manifest.bytes or reader.hash.hexdigest() != self.manifest.sha256:
            raise NotAsStored(
                f"Backup {self.label!r} does not match its manifest: {reader.bytes:,} bytes with sha256 "
                f"{reader.hash.hexdigest()[:16]}..., expected {self.manifest.bytes:,} bytes with sha256 "
                f"{self.manifest.sha256[:16]}... (truncated or altered). It was not restored.",
                next_step=f"restore another backup ({catalog.NEXT_LIST}).", key=self.label)

    def numbered_statements(self) -> Iterator[tuple[int, bytes]]:
        """``(line, statement)`` of the decompressed SQL text; a damaged stream raises :class:`BackupCorrupt`.

        Once exhausted, every stored byte was hashed and compared with the manifest (:class:`BackupCorrupt`): the
        restore's and verify's integrity check (one read), or, for a copy :meth:`use_copy` already read whole, a
        check that the object was not replaced since.
        """
        with self.opener() as stream:
            reader = HashingReader(stream)
            try:
                with self._plain(reader) as plain:
                    yield from numbered_statements(decompressed_chunks(plain, self.compression))
            except (ValueError, SqlSyntaxError) as exc:
                raise BackupCorrupt(f"{self.label!r} cannot be read as SQL: {exc}.",
                                    next_step="check the file, or restore another backup.") from None
            reader.drain()
        if self.manifest is None:
            return
        if not self.checked:
            self._compare(reader)
        elif reader.hash.hexdigest() != self.manifest.sha256:
            raise BackupCorrupt(f"Backup {self.label!r} changed while it was being restored (sha256 differs from "
                                "its manifest).", next_step="run the restore again.", key=self.label)

    def head(self) -> bytes:
        """The first decompressed bytes (up to 64 KiB)."""
        out = b""
        with self.opener() as stream, self._plain(stream) as plain:
            try:
                for chunk in decompressed_chunks(plain, self.compression):
                    out += chunk
                    if len(out) >= SNIFF_BYTES:
                        break
            except ValueError as exc:
                if not out:
                    raise BackupCorrupt(f"{self.label!r} cannot be decompressed ({exc}).",
                                        next_step="check the file, or restore another backup.") from None
        return out[:SNIFF_BYTES]

    def own_database(self) -> str | None:
        """The database the dump was taken of: the manifest's, or the ``Database:`` of mysqldump's header.

        Also refuses (:class:`NotADump`) a text that does not start as SQL or holds a NUL byte (dumps escape it).
        """
        head = self.head()
        why = ("it holds binary data (a NUL byte)" if b"\0" in head else
               "its text does not start as SQL" if head.strip() and not _SQL_START.match(head) else
               "it is empty" if not head.strip() else "")
        if why:
            raise NotADump(f"{self.label!r} is not a SQL dump: {why}; its content is not shown and none of it was "
                           "sent to a server.", next_step=_NEXT_FILE)
        if self.manifest is not None:
            return self.manifest.database
        m = _HEADER_DATABASE.search(head[:4096])
        return m.group(1).decode("utf-8", "replace").strip("`") if m else None


_NEXT_FILE = ("name a dump file (*.sql, *.sql.gz, *.sql.zst written by mariadb-dump, mysqldump or `rusing-ops db "
              "backup`) with --file, or a backup from `rusing-ops db backups`.")


def store_source(store: BackupStore, ref: str | None, database: str | None = None) -> Source:
    """A backup from the store: ``latest``, a key or a partition name (must be complete), or a plain object."""
    if ref and keys.parse_key(ref) is None and store.exists(ref):
        return Source(ref, lambda: store.open_read(ref), keys.compression_of(ref))
    try:
        entry = catalog.resolve(store, ref, database)  # `latest` of ``database`` (catalog.py: scope)
    except (NotFound, ManifestError):  # not (complete) in the primary store: a second copy may hold it (copies.py)
        found = copies.resolve_in_copies(store, ref, database)
        if found is None:
            raise
        copy, entry = found
        source = backup_source(store, copy, entry)
        source.notes.append(f"backup {entry.name} is missing or incomplete in the primary store {store.url}; "
                            f"using the copy at {copy.uri(entry.key)}")
        return source
    source = backup_source(store, store, entry)
    source.notes.extend(entry.chosen)  # why `latest` is this backup (a newer one skipped, a copy store down)
    source.fallbacks = [(copy.uri(entry.key), functools.partial(copy.open_read, entry.key))
                        for copy in copies.stores(store)]
    return source


def backup_source(primary: BackupStore, holder: BackupStore, entry) -> Source:
    """A complete backup read from ``holder`` (the primary store or a copy), decrypted with ``primary``'s identity."""
    opener = functools.partial(holder.open_read, entry.key)
    decrypt = crypto.decryptor(primary, entry.manifest, entry.name, opener)  # no identity: refused here, in one line
    return Source(entry.key, opener, entry.compression, entry.manifest, decrypt)


def file_source(path: str | os.PathLike) -> Source:
    """A local dump file, refused (:class:`NotADump`) unless it is a regular ``*.sql[.gz|.zst]`` file outside
    ``/proc``, ``/sys``, ``/dev`` and ``/run`` whose text starts as SQL (nothing of it is read into an error)."""
    p = Path(path).expanduser()
    real = os.path.realpath(p)
    shown = str(p)
    for root in FORBIDDEN_ROOTS:
        if real == root or real.startswith(root + "/"):
            raise NotADump(f"{shown!r} is not a dump file: it is under {root}, where no dump is read from. None of "
                           "it was read.", next_step=_NEXT_FILE)
    try:
        st = os.stat(real)
    except OSError:
        raise NotFound(f"There is no file {shown!r}.", next_step="check the path given to --file.") from None
    if not stat.S_ISREG(st.st_mode):
        raise NotADump(f"{shown!r} is not a regular file. None of it was read.", next_step=_NEXT_FILE)
    name = os.path.basename(real)
    if not name.endswith(DUMP_SUFFIXES):
        raise NotADump(f"{shown!r} is not named like a dump ({', '.join(DUMP_SUFFIXES)}). None of it was read.",
                       next_step=_NEXT_FILE)
    source = Source(shown, functools.partial(open, real, "rb"), keys.compression_of(name))
    source.own_database()  # refuses a binary or non-SQL file before anything else happens
    return source


def resolve_source(store: BackupStore, ref: str | None, database: str | None = None) -> Source:
    """``ref`` as a local file path if one exists there, else as a backup in the store."""
    if ref and ref != "latest" and Path(ref).expanduser().is_file():
        return file_source(ref)
    return store_source(store, ref, database)
