"""The S3 backup store (any S3-compatible server: boto3 honours ``AWS_ENDPOINT_URL``), behind store.BackupStore.

An object appears by completing a multipart upload (or one PUT when small); a killed writer leaves an open upload
that :meth:`S3Store.list_partial` lists and :meth:`S3Store.discard_partial` aborts. Every failure is a
:class:`StoreError` naming the store, the object and the cause (:func:`s3_cause`: never a credential).
"""

from __future__ import annotations

import io
from typing import BinaryIO, Self
from urllib.parse import urlsplit

from .errors import NotFound, StoreError
from .store import PART_SIZE, BackupStore, ObjectWriter, PartialUpload, StoredObject, check_key, object_taken


class _S3Writer(ObjectWriter):
    """Multipart upload that buffers one part at a time: memory stays at about ``PART_SIZE``."""

    def __init__(self, store: S3Store, key: str):
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
        """Store the object. Exclusive: refused (:func:`object_taken`) when the name exists -- checked first, then
        made a condition of the write itself (``If-None-Match: *``, which AWS S3, SeaweedFS and MinIO honour), so a
        name taken between the check and the write is refused too; a server that answers the condition with
        NotImplemented is written to without it (the check alone, one round trip of window)."""
        bucket = self.store.bucket
        try:
            if self.exclusive and self.store.exists_full(self.key):  # the name taken since the backup began
                self.abort()
                raise object_taken(self.store.url, f"s3://{bucket}/{self.key}")
            if self.buffer.tell() and self.upload_id is not None:
                self._flush_part()
            condition = {"IfNoneMatch": "*"} if self.exclusive else {}
            try:
                self._store(condition)
            except Exception as exc:
                code = _code(exc)
                if condition and code in ("PreconditionFailed", "412"):
                    self.abort()
                    raise object_taken(self.store.url, f"s3://{bucket}/{self.key}") from None
                if not condition or code not in ("NotImplemented", "501"):
                    raise
                self._store({})
        except StoreError:
            self.abort()
            raise
        except Exception as exc:
            self.abort()
            raise self.store._error("complete the upload of", f"s3://{bucket}/{self.key}", exc) from None

    def _store(self, condition: dict) -> None:
        s3, bucket = self.store.client, self.store.bucket
        if self.upload_id is None:  # small object: one PUT
            s3.put_object(Bucket=bucket, Key=self.key, Body=self.buffer.getvalue(), **self.store.write_args(self.key),
                          **condition)
        else:
            s3.complete_multipart_upload(Bucket=bucket, Key=self.key, UploadId=self.upload_id,
                                         MultipartUpload={"Parts": self.parts}, **condition)

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

    def __init__(self, store: S3Store, key: str, body):
        self.store, self.key, self.body = store, key, body

    def read(self, n: int = -1) -> bytes:
        try:
            return self.body.read(n if n is not None and n >= 0 else None)
        except Exception as exc:  # urllib3 / botocore streaming errors (server gone, reset, timeout)
            raise self.store._error("read", self.store.uri(self.key), exc) from None

    def close(self) -> None:
        self.body.close()

    def __enter__(self) -> Self:
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

    def open_write(self, key: str, *, exclusive: bool = False) -> ObjectWriter:
        writer = _S3Writer(self, self._key(key))
        writer.exclusive = exclusive
        return writer

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
        return self.exists_full(self._key(key))

    def exists_full(self, full_key: str) -> bool:
        """Whether the object ``full_key`` (the prefix included) exists."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=full_key)
            return True
        except Exception as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._error("check", f"s3://{self.bucket}/{full_key}", exc) from None

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
            if _code(exc) in ("NoSuchUpload", "404"):
                return
            raise self._error("abort the unfinished upload of", self.uri(partial.key), exc) from None


def _code(exc: Exception) -> str | None:
    """The S3 error code of a botocore ClientError (``NoSuchKey``, ``PreconditionFailed``, ``404``), else None."""
    return getattr(exc, "response", {}).get("Error", {}).get("Code")


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
