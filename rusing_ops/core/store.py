"""Where backups live: a local directory or an S3 bucket (s3store.py), behind one small interface.

Writes are all-or-nothing: a local object appears by atomic rename of a finished temp file, an S3 object by
completing a multipart upload. A writer that is abandoned (exception) leaves no object under its key; one that is
killed (kill -9, power loss) leaves a hidden ``.<name>.<random>.partial`` file or an open multipart upload, which
:meth:`BackupStore.list_partial` lists and :meth:`BackupStore.discard_partial` removes (``retention.sweep``).

Every failure is a :class:`StoreError` naming the store, the object and the cause (connection refused, disk full).
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
import errno
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Self
from urllib.parse import urlsplit

from .errors import ConfigError, NotFound, StoreError

DEFAULT_BACKUP_URL = "./backups"
PART_SIZE = 8 * 1024 * 1024  # S3 multipart part size: 8 MiB kept boto3 under 160 MiB RSS here (research/bench.md §5)
_KEY = re.compile(r"[A-Za-z0-9._\-/]{1,512}")
_PARTIAL = re.compile(r"\.(?P<name>.+)\.[^.]+\.partial")  # tempfile.mkstemp(prefix=".<name>.", suffix=".partial")


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: dt.datetime


@dataclass(frozen=True)
class PartialUpload:
    """An unfinished write: a local ``.partial`` temp file or an S3 multipart upload that was never completed."""

    key: str  # the object it would have become
    started: dt.datetime
    size: int  # bytes so far (local); S3 does not say without listing parts: 0
    handle: str  # the temp file's path (local) or the upload id (S3)

    def describe(self) -> str:
        return f"unfinished upload of {self.key} started {self.started:%Y-%m-%d %H:%M}Z"


def _os_cause(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full (No space left on device)"
    if exc.errno == errno.EDQUOT:
        return "the disk quota is exceeded"
    if exc.errno == errno.EFBIG:
        return "the file size limit was reached (File too large)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied ({exc.strerror})"
    return exc.strerror or type(exc).__name__


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key or "") or ".." in key.split("/") or key.startswith("/"):
        raise ConfigError(f"{key!r} is not a valid backup key (letters, digits, . _ - /; no '..', no leading '/').")
    return key


class ObjectExists(StoreError):
    """An exclusive write found its key taken when it committed: nothing of this write was kept."""


def object_taken(url: str, where: str) -> ObjectExists:
    return ObjectExists(f"The backup store {url} already holds {where}, written by another run while this one was "
                        "writing; this write was discarded and the stored object left as it was.",
                        next_step="run the command again (the next backup gets the next second's name).")


class ObjectWriter(abc.ABC):
    """A write-only binary stream; ``commit()`` makes the object visible, ``abort()`` discards it."""

    bytes_written = 0
    exclusive = False

    @abc.abstractmethod
    def write(self, data: bytes) -> int: ...

    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def abort(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class BackupStore(abc.ABC):
    """The contract shared by every store. Keys are relative, '/'-separated."""

    url: str

    @abc.abstractmethod
    def open_write(self, key: str, *, exclusive: bool = False) -> ObjectWriter:
        """A writer for ``key``; the object exists only after a clean ``commit()`` (or ``with`` exit).
        ``exclusive``: the commit refuses (:class:`ObjectExists`, the writer's bytes discarded) when ``key`` exists
        by then -- two backups of one database taken in the same second never overwrite each other."""

    @abc.abstractmethod
    def open_read(self, key: str) -> BinaryIO:
        """A readable binary stream of ``key``; raises :class:`NotFound`."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[StoredObject]:
        """Objects whose key starts with ``prefix``, sorted by key."""

    @abc.abstractmethod
    def delete(self, key: str) -> None: ...

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def uri(self, key: str) -> str:
        """A human-readable location of ``key`` (``s3://bucket/prefix/key`` or ``file:///dir/key``)."""

    @abc.abstractmethod
    def list_partial(self) -> list[PartialUpload]:
        """Unfinished writes (killed writers, or ones still running), oldest first."""

    @abc.abstractmethod
    def discard_partial(self, partial: PartialUpload) -> None:
        """Remove an unfinished write (delete the temp file / abort the multipart upload)."""

    def put_stream(self, key: str, chunks) -> int:
        """Write every chunk of an iterable of bytes (or a readable stream) to ``key``; return the byte count."""
        if hasattr(chunks, "read"):
            src = chunks
            chunks = iter(lambda: src.read(1024 * 1024), b"")
        with self.open_write(key) as writer:
            for chunk in chunks:
                writer.write(chunk)
        return writer.bytes_written

    def get_stream(self, key: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        with self.open_read(key) as stream:
            while chunk := stream.read(chunk_size):
                yield chunk

    def put_bytes(self, key: str, data: bytes) -> None:
        self.put_stream(key, [data])

    def get_bytes(self, key: str) -> bytes:
        with self.open_read(key) as stream:
            return stream.read()


# ---------------------------------------------------------------------------------------------- local directory


class _LocalWriter(ObjectWriter):
    def __init__(self, store: LocalStore, final: Path):
        self.store = store
        self.final = final
        self.tmp: Path | None = None
        self.file = None
        self.bytes_written = 0
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
        except OSError as exc:
            raise store._error("create", final, exc, removed=False) from None
        self.tmp = Path(tmp)
        self.file = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> int:
        try:
            self.file.write(data)
        except OSError as exc:
            self.abort()
            raise self.store._error("write", self.final, exc) from None
        self.bytes_written += len(data)
        return len(data)

    def commit(self) -> None:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            if not self.exclusive:
                os.replace(self.tmp, self.final)
                return
            try:
                os.link(self.tmp, self.final)  # atomic, and never over an existing name
            except FileExistsError:
                self.abort()
                raise object_taken(self.store.url, self.final.relative_to(self.store.root).as_posix()) from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                    raise
                if self.final.exists():  # a file system without hard links: the check, then the rename
                    self.abort()
                    raise object_taken(self.store.url, self.final.relative_to(self.store.root).as_posix()) from None
                os.replace(self.tmp, self.final)
                return
        except OSError as exc:
            self.abort()
            raise self.store._error("finish", self.final, exc) from None
        # Linked: the object is stored. Its temp name goes (a failure to remove it is the sweep's: retention.py).
        with contextlib.suppress(OSError):
            self.tmp.unlink()

    def abort(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass  # a full disk can fail the close's flush too; the file goes anyway
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)


class LocalStore(BackupStore):
    """A directory on this machine: temp file + fsync + atomic rename."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        self.url = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _error(self, action: str, path: Path, exc: OSError, removed: bool = True) -> StoreError:
        where = path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) else str(path)
        text = f"The backup store {self.url} could not {action} {where}: {_os_cause(exc)}."
        if action in ("write", "finish"):
            text += " The unfinished file was removed; nothing was stored under that name."
        return StoreError(text, changed=False if removed else None, cause=_os_cause(exc),
                          next_step="free space in (or fix the permissions of) " + str(self.root) + ", then run the "
                          "command again." if action != "read" else None)

    def open_write(self, key: str, *, exclusive: bool = False) -> ObjectWriter:
        writer = _LocalWriter(self, self._path(key))
        writer.exclusive = exclusive
        return writer

    def open_read(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise NotFound(f"No backup object {key!r} in {self.url}.") from None
        except OSError as exc:
            raise self._error("read", self._path(key), exc) from None

    def _walk(self):
        if not self.root.exists():
            return
        try:
            yield from (p for p in self.root.rglob("*") if p.is_file())
        except OSError as exc:
            raise self._error("list", self.root, exc) from None

    def list(self, prefix: str = "") -> list[StoredObject]:
        found = []
        for path in self._walk():
            if path.name.endswith(".partial"):
                continue
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix):
                try:
                    st = path.stat()
                except FileNotFoundError:  # deleted (or renamed by a finishing writer) meanwhile
                    continue
                found.append(StoredObject(key, st.st_size, dt.datetime.fromtimestamp(st.st_mtime, dt.UTC)))
        return sorted(found, key=lambda o: o.key)

    def list_partial(self) -> list[PartialUpload]:
        found = []
        for path in self._walk():
            m = _PARTIAL.fullmatch(path.name)
            if not m:
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            key = (path.parent / m["name"]).relative_to(self.root).as_posix()
            found.append(PartialUpload(key, dt.datetime.fromtimestamp(st.st_mtime, dt.UTC), st.st_size,
                                       str(path)))
        return sorted(found, key=lambda p: (p.started, p.key))

    def discard_partial(self, partial: PartialUpload) -> None:
        path = Path(partial.handle)
        if path.parent.resolve().is_relative_to(self.root) and _PARTIAL.fullmatch(path.name):
            path.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise self._error("delete", self._path(key), exc) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()


def open_store(url: str | None, *, base_dir: str | os.PathLike | None = None, s3_client=None) -> BackupStore:
    """The store named by ``RUSING_BACKUP_URL``: ``s3://bucket/prefix``, ``file:///abs/dir`` or a directory path."""
    url = (url or DEFAULT_BACKUP_URL).strip()
    parts = urlsplit(url)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ConfigError(f"RUSING_BACKUP_URL {url!r} names no bucket; expected s3://bucket/prefix.")
        from .s3store import S3Store

        return S3Store(parts.netloc, parts.path, client=s3_client)
    if parts.scheme == "file":
        return LocalStore(parts.path)
    if parts.scheme and len(parts.scheme) > 1:
        raise ConfigError(f"RUSING_BACKUP_URL {url!r}: scheme {parts.scheme!r} is not supported; use s3://, file:// or a path.")
    path = Path(url)
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return LocalStore(path)


def __getattr__(name: str):
    """``S3Store`` and ``s3_cause`` live in s3store.py (imported when first asked for: boto3 is heavy)."""
    if name in ("S3Store", "s3_cause"):
        from . import s3store

        return getattr(s3store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
