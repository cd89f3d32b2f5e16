"""Byte pipelines: compress + hash + upload on a worker thread while dumping; hash + decompress while reading.

Compression (zstd / zlib) and sha256 release the GIL, so the worker runs beside the thread that reads rows from
the server (research/bench.md §4: moving zstd off the dumping thread gained 1.2x). Memory is bounded by the queue.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import zlib
from collections.abc import Callable
from typing import BinaryIO

import zstandard

from ..core.errors import ConfigError

# zstd -1 by default: half the CPU of -3, and on the benchmark's dumps smaller too (1x app 13.9 vs 15.1 MB, 0.13 vs
# 0.26 s; 4x 55.6 vs 60.7 MB; giant 8.3 vs 9.2 MB). On prose and JSON -1 is 7-15% larger than -3 (mysqldump's dump
# of `mysql`, botocore's JSON, Stripe's sources): a backup's `level` option (1-19) trades CPU for size (issue 15).
ZSTD_LEVEL = 1
GZIP_LEVEL = 6
LEVELS = {"zstd": range(1, 20), "gzip": range(1, 10)}
_STOP = object()


def make_compressor(compression: str, level: int | None = None):
    """An object with ``compress(bytes) -> bytes`` and ``flush() -> bytes`` for ``zstd``, ``gzip`` or ``none``;
    ``level``: the compressor's (zstd 1-19, gzip 1-9; None = :data:`ZSTD_LEVEL` / :data:`GZIP_LEVEL`)."""
    if level is not None and compression in LEVELS and level not in LEVELS[compression]:
        allowed = LEVELS[compression]
        raise ConfigError(f"Compression level {level} is not one of {compression}'s ({allowed[0]}-{allowed[-1]}); "
                          "no backup was written.", next_step=f"give a level from {allowed[0]} to {allowed[-1]}.")
    if compression == "zstd":
        # threads=0: compressed on the caller's (worker) thread. threads=1 added a zstd worker with its own job
        # buffers: peak RSS of a 4x backup 125-128 MiB -> 88-96 MiB, same speed, output +0.5% (issue 15).
        return zstandard.ZstdCompressor(level=level or ZSTD_LEVEL).compressobj()
    if compression == "gzip":
        return zlib.compressobj(level or GZIP_LEVEL, zlib.DEFLATED, 31)
    if compression == "none":
        return _Identity()
    raise ConfigError(f"Compression {compression!r} is not supported; choose one of: zstd, gzip.")


class _Identity:
    def compress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


class CompressingWriter:
    """``write()`` SQL text; a worker thread compresses it, hashes the compressed bytes and hands them to ``sink``.

    ``close()`` flushes and waits, then ``sha256``, ``bytes`` (compressed) and ``raw_bytes`` are final. Errors
    raised by the sink (upload failures) surface in the caller's next ``write()`` or ``close()``.
    """

    def __init__(self, sink: Callable[[bytes], object], compression: str = "zstd", max_pending: int = 8,
                 wrap: Callable | None = None, level: int | None = None):
        self._sink = sink
        self._compressor = make_compressor(compression, level)
        if wrap is not None:  # e.g. crypto.Encryptor: what reaches the sink (and the hash) is ciphertext
            self._compressor = wrap(self._compressor)
        self._queue: queue.Queue = queue.Queue(max_pending)
        self._hash = hashlib.sha256()
        self._error: BaseException | None = None
        self.raw_bytes = 0
        self.bytes = 0
        self._thread = threading.Thread(target=self._run, name="backup-compress", daemon=True)
        self._thread.start()

    def _emit(self, data: bytes) -> None:
        if data:
            self._hash.update(data)
            self.bytes += len(data)
            self._sink(data)

    def _run(self) -> None:
        stopped = False
        try:
            while (item := self._queue.get()) is not _STOP:
                self._emit(self._compressor.compress(item))
            stopped = True
            self._emit(self._compressor.flush())
        except BaseException as exc:  # handed to the producer thread
            self._error = exc
            # Drain so the producer never blocks on a dead worker -- unless the stop was already taken (the final
            # flush failed, e.g. on a full disk): waiting for a second one would hang close() forever.
            while not stopped and self._queue.get() is not _STOP:
                pass

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, data: bytes) -> None:
        self._check()
        self.raw_bytes += len(data)
        self._queue.put(data)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()
        self._check()

    def abandon(self) -> None:
        """Stop the worker without raising (used when the dump itself failed)."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


class HashingReader:
    """Wrap a binary stream; count and sha256 every byte read through it."""

    def __init__(self, stream: BinaryIO):
        self.stream = stream
        self.hash = hashlib.sha256()
        self.bytes = 0

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.hash.update(data)
        self.bytes += len(data)
        return data

    def drain(self) -> None:
        while self.read(1024 * 1024):
            pass


def decompressed_chunks(stream: BinaryIO, compression: str, chunk_size: int = 1024 * 1024):
    """Yield decompressed chunks of ``stream``. A truncated or corrupt stream raises ``ValueError``."""
    if compression == "none":
        while chunk := stream.read(chunk_size):
            yield chunk
        return
    if compression == "zstd":
        new, errors = (lambda: zstandard.ZstdDecompressor().decompressobj()), (zstandard.ZstdError,)
    else:
        new, errors = (lambda: zlib.decompressobj(47)), (zlib.error,)
    d = new()
    while data := stream.read(chunk_size // 16):  # compressed input: 4-10x that comes out; memory stays small
        while data:
            try:
                out = d.decompress(data)
            except errors as exc:
                raise ValueError(f"{compression}: {exc}") from None
            if out:
                yield out
            if d.eof:  # concatenated frames / members
                data = d.unused_data
                d = new() if data else d
            else:
                data = b""
    if not d.eof:
        raise ValueError(f"{compression}: the stream ends before its end marker (truncated)")
