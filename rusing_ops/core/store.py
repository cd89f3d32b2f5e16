"""Where backups live: a local directory or an S3 bucket, behind one small interface.

Writes are all-or-nothing: a local object appears by atomic rename of a finished temp file, an S3 object by
completing a multipart upload. A writer that is abandoned (exception, kill) leaves no object under its key.
"""

from __future__ import annotations

import abc
import datetime as dt
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


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: dt.datetime


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
    def __init__(self, final: Path):
        self.final = final
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
        self.tmp = Path(tmp)
        self.file = os.fdopen(fd, "wb")
        self.bytes_written = 0

    def write(self, data: bytes) -> int:
        self.file.write(data)
        self.bytes_written += len(data)
        return len(data)

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


class LocalStore(BackupStore):
    """A directory on this machine: temp file + fsync + atomic rename."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        self.url = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def open_write(self, key: str) -> ObjectWriter:
        return _LocalWriter(self._path(key))

    def open_read(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise NotFound(f"No backup object {key!r} in {self.url}.") from None

    def list(self, prefix: str = "") -> list[StoredObject]:
        if not self.root.exists():
            return []
        found = []
        for path in self.root.rglob("*"):
            if not path.is_file() or path.name.endswith(".partial"):
                continue
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix):
                st = path.stat()
                found.append(StoredObject(key, st.st_size, dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc)))
        return sorted(found, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

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
                self.upload_id = s3.create_multipart_upload(Bucket=bucket, Key=self.key)["UploadId"]
            number = len(self.parts) + 1
            etag = s3.upload_part(Bucket=bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body)
            self.parts.append({"ETag": etag["ETag"], "PartNumber": number})
        except Exception as exc:
            raise self.store._error("upload part of", f"s3://{bucket}/{self.key}", exc) from None

    def commit(self) -> None:
        s3, bucket = self.store.client, self.store.bucket
        try:
            if self.upload_id is None:  # small object: one PUT
                s3.put_object(Bucket=bucket, Key=self.key, Body=self.buffer.getvalue())
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
            raise self.store._error("complete upload of", f"s3://{bucket}/{self.key}", exc) from None

    def abort(self) -> None:
        if self.upload_id is not None:
            try:
                self.store.client.abort_multipart_upload(Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id)
            except Exception:
                pass  # an unfinished multipart upload is invisible to readers; a bucket lifecycle rule reaps it
            self.upload_id = None


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

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, action: str, where: str, exc: Exception) -> StoreError:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
        return StoreError(f"S3 could not {action} {where}: {code}.", changed=None)

    def open_write(self, key: str) -> ObjectWriter:
        return _S3Writer(self, self._key(key))

    def open_read(self, key: str) -> BinaryIO:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
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
