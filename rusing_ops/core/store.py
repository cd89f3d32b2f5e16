"""Where backups live: a local directory or an S3 bucket, behind one small interface.

Writes are all-or-nothing: a local object appears by atomic rename of a finished temp file, an S3 object by
completing a multipart upload. A writer that is abandoned (exception) leaves no object under its key; one that is
killed (kill -9, power loss) leaves a hidden ``.<name>.<random>.partial`` file or an open multipart upload, which
:meth:`BackupStore.list_partial` lists and :meth:`BackupStore.discard_partial` removes (``retention.sweep``).

Every failure is a :class:`StoreError` naming the store, the object and the cause (connection refused, disk full).
"""

from __future__ import annotations

import abc
import datetime as dt
import errno
import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator
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


class ObjectWriter(abc.ABC):
    """A write-only binary stream; ``commit()`` makes the object visible, ``abort()`` discards it."""

    bytes_written = 0

    @abc.abstractmethod
    def write(self, data: bytes) -> int: ...

    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def abort(self) -> None: ...

    def __enter__(self) -> "ObjectWriter":
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
    def open_write(self, key: str) -> ObjectWriter:
        """A writer for ``key``; the object exists only after a clean ``commit()`` (or ``with`` exit)."""

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
    def __init__(self, store: "LocalStore", final: Path):
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
            os.replace(self.tmp, self.final)
        except OSError as exc:
            self.abort()
            raise self.store._error("finish", self.final, exc) from None

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

    def open_write(self, key: str) -> ObjectWriter:
        return _LocalWriter(self, self._path(key))

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
                found.append(StoredObject(key, st.st_size, dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc)))
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
            found.append(PartialUpload(key, dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc), st.st_size,
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


# ---------------------------------------------------------------------------------------------- S3


class _S3Writer(ObjectWriter):
    """Multipart upload that buffers one part at a time: memory stays at about ``PART_SIZE``."""

    def __init__(self, store: "S3Store", key: str):
        self.store = store
        self.key = key
        self.buffer = io.BytesIO()
        self.parts: list[dict] = []
        self.upload_id: str | None = None
        self.bytes_written = 0

    def write(self, data: bytes) -> int:
        self.buffer.write(data)
        self.bytes_written += len(data)
        if self.buffer.tell() >= PART_SIZE:
            self._flush_part()
        return len(data)

    def _flush_part(self) -> None:
        body = self.buffer.getvalue()
        self.buffer = io.BytesIO()
        s3, bucket = self.store.client, self.store.bucket
        try:
            if self.upload_id is None:
                self.upload_id = s3.create_multipart_upload(Bucket=bucket, Key=self.key,
                                                            **self.store.write_args(self.key))["UploadId"]
            number = len(self.parts) + 1
            etag = s3.upload_part(Bucket=bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body)
            self.parts.append({"ETag": etag["ETag"], "PartNumber": number})
        except Exception as exc:
            raise self.store._error("upload a part of", f"s3://{bucket}/{self.key}", exc) from None

    def commit(self) -> None:
        s3, bucket = self.store.client, self.store.bucket
        try:
            if self.upload_id is None:  # small object: one PUT
                s3.put_object(Bucket=bucket, Key=self.key, Body=self.buffer.getvalue(), **self.store.write_args(self.key))
                return
            if self.buffer.tell():
                self._flush_part()
            s3.complete_multipart_upload(
                Bucket=bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
            )
        except StoreError:
            self.abort()
            raise
        except Exception as exc:
            self.abort()
            raise self.store._error("complete the upload of", f"s3://{bucket}/{self.key}", exc) from None

    def abort(self) -> None:
        if self.upload_id is not None:
            try:
                s3 = self.store.client
                s3.abort_multipart_upload(Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id)
            except Exception:
                pass  # invisible to readers; `rusing-ops db prune --apply` aborts it once it is old (retention.sweep)
            self.upload_id = None


class _S3Body:
    """An object's body being read: a connection lost mid-read is a StoreError naming the store, not botocore's."""

    def __init__(self, store: "S3Store", key: str, body):
        self.store, self.key, self.body = store, key, body

    def read(self, n: int = -1) -> bytes:
        try:
            return self.body.read(n if n is not None and n >= 0 else None)
        except Exception as exc:  # urllib3 / botocore streaming errors (server gone, reset, timeout)
            raise self.store._error("read", self.store.uri(self.key), exc) from None

    def close(self) -> None:
        self.body.close()

    def __enter__(self) -> "_S3Body":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class S3Store(BackupStore):
    """An S3 bucket (or any S3-compatible server: boto3 honours ``AWS_ENDPOINT_URL``)."""

    def __init__(self, bucket: str, prefix: str = "", client=None):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client or boto3.client(
            "s3", config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=120)
        )
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        # Extra arguments of every upload (PUT / multipart start), by full key: server-side encryption and Object
        # Lock retention (backups/protect.py sets it from RUSING_BACKUP_SSE / RUSING_BACKUP_LOCK_DAYS).
        self.write_args = lambda full_key: {}

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, action: str, where: str, exc: Exception) -> StoreError:
        return StoreError(f"The backup store {self.url} could not {action} {where}: {s3_cause(exc)}.", changed=None,
                          cause=s3_cause(exc), next_step="check that the S3 endpoint is up and the credentials and "
                          "bucket are right (`rusing-ops db backups` reads the store), then run the command again.")

    def open_write(self, key: str) -> ObjectWriter:
        return _S3Writer(self, self._key(key))

    def open_read(self, key: str) -> BinaryIO:
        try:
            return _S3Body(self, key, self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"])
        except self.client.exceptions.NoSuchKey:
            raise NotFound(f"No backup object {key!r} in {self.url}.") from None
        except Exception as exc:
            raise self._error("read", self.uri(key), exc) from None

    def list(self, prefix: str = "") -> list[StoredObject]:
        full = self._key(prefix) if prefix else (self.prefix + "/" if self.prefix else "")
        found = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(self.prefix) + 1 :] if self.prefix else obj["Key"]
                    found.append(StoredObject(key, obj["Size"], obj["LastModified"]))
        except Exception as exc:
            raise self._error("list", self.url, exc) from None
        return sorted(found, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise self._error("delete", self.uri(key), exc) from None

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except Exception as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._error("check", self.uri(key), exc) from None

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def list_partial(self) -> list[PartialUpload]:
        full = self.prefix + "/" if self.prefix else ""
        found = []
        try:
            for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=full):
                for up in page.get("Uploads", []):
                    key = up["Key"][len(full):]
                    found.append(PartialUpload(key, up["Initiated"], 0, up["UploadId"]))
        except Exception as exc:
            raise self._error("list the unfinished uploads of", self.url, exc) from None
        return sorted(found, key=lambda p: (p.started, p.key))

    def discard_partial(self, partial: PartialUpload) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._key(partial.key), UploadId=partial.handle)
        except Exception as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("NoSuchUpload", "404"):
                return
            raise self._error("abort the unfinished upload of", self.uri(partial.key), exc) from None


def s3_cause(exc: Exception) -> str:
    """A short, secret-free reason for a boto3/botocore failure (no request signature, no credentials)."""
    from botocore import exceptions as bx

    error = getattr(exc, "response", {}).get("Error", {})
    if error.get("Code"):
        message = error.get("Message") or ""
        return f"{error['Code']}" + (f" ({message[:160]})" if message and message != error["Code"] else "")
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError)):
        endpoint = urlsplit(getattr(exc, "kwargs", {}).get("endpoint_url", "") or "")
        endpoint = f"{endpoint.scheme}://{endpoint.netloc}" if endpoint.netloc else "(unknown)"
        return f"cannot connect to the S3 endpoint {endpoint} (is it running?)"
    if isinstance(exc, bx.ReadTimeoutError):
        return "the S3 endpoint stopped answering (read timeout)"
    if isinstance(exc, bx.NoCredentialsError):
        return "no S3 credentials (set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or an instance role)"
    if isinstance(exc, bx.BotoCoreError):
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return type(exc).__name__


def open_store(url: str | None, *, base_dir: str | os.PathLike | None = None, s3_client=None) -> BackupStore:
    """The store named by ``RUSING_BACKUP_URL``: ``s3://bucket/prefix``, ``file:///abs/dir`` or a directory path."""
    url = (url or DEFAULT_BACKUP_URL).strip()
    parts = urlsplit(url)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ConfigError(f"RUSING_BACKUP_URL {url!r} names no bucket; expected s3://bucket/prefix.")
        return S3Store(parts.netloc, parts.path, client=s3_client)
    if parts.scheme == "file":
        return LocalStore(parts.path)
    if parts.scheme and len(parts.scheme) > 1:
        raise ConfigError(f"RUSING_BACKUP_URL {url!r}: scheme {parts.scheme!r} is not supported; use s3://, file:// or a path.")
    path = Path(url)
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return LocalStore(path)
