"""Client-side encryption of backups: the age format (https://age-encryption.org/v1) through ``pyrage``.

A backup is encrypted to one or more recipient public keys (``RUSING_BACKUP_RECIPIENTS``: ``age1...`` keys,
separated by commas or spaces), so the machine that takes the nightly backups cannot read old ones. The identity
(private key) is needed only to restore or verify (``RUSING_BACKUP_IDENTITY``: the ``AGE-SECRET-KEY-1...`` string
itself, or the path of an age identity file holding it; a secret, never logged, never in an error).

Order (dump.py): SQL text -> compress -> encrypt -> sha256 over the stored bytes -> store. The manifest records
``encryption = {"format": "age", "recipients": [fingerprint, ...]}`` where a fingerprint is the first 16 hex digits
of sha256 of the recipient string: enough to tell which key opens it, nothing that reveals a key.

``pyrage.encrypt_io`` / ``decrypt_io`` stream but pull their input; the backup pipeline pushes bytes, so each runs
on a thread of its own behind a bounded queue (memory stays flat: a few chunks in flight).
"""

from __future__ import annotations

import hashlib
import io
import queue
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import pyrage

from ..core.errors import ConfigError, OpsError
from .streams import HashingReader

SUFFIX = ".age"
RECIPIENTS_VAR = "RUSING_BACKUP_RECIPIENTS"
IDENTITY_VAR = "RUSING_BACKUP_IDENTITY"
PROBE_BYTES = 64 * 1024  # the age header (and the first payload chunk) lie in the first 64 KiB
_SECRET_PREFIX = "AGE-SECRET-KEY-1"
_END = object()


class IdentityProblem(OpsError):
    """An encrypted backup cannot be opened: no identity configured, or not one of its recipients'."""


def fingerprint(recipient: str) -> str:
    """What the manifest records of a recipient: the first 16 hex digits of sha256 of its ``age1...`` string."""
    return hashlib.sha256(recipient.strip().encode()).hexdigest()[:16]


def parse_recipients(text: str | None) -> tuple[str, ...]:
    """``RUSING_BACKUP_RECIPIENTS`` as a tuple of ``age1...`` strings (each checked); empty = no encryption."""
    found = tuple(r for r in re.split(r"[\s,]+", text or "") if r)
    for r in found:
        try:
            pyrage.x25519.Recipient.from_str(r)
        except Exception as exc:  # pyrage raises its own RecipientError
            raise ConfigError(f"{RECIPIENTS_VAR}: {r[:12]}... is not an age public key (age1...): {exc}. No backup "
                              "was taken.", next_step=f"set {RECIPIENTS_VAR} to the output of `age-keygen -y "
                              "identity.txt` (one or more age1... keys, comma separated).") from None
    return found


def _identity_text(value: str) -> str:
    if value.strip().startswith(_SECRET_PREFIX):
        return value
    path = Path(value.strip()).expanduser()
    try:
        return path.read_text()
    except OSError:
        raise IdentityProblem(f"{IDENTITY_VAR} is neither an age secret key (AGE-SECRET-KEY-1...) nor a readable "
                              "identity file. Nothing was restored or touched.",
                              next_step=f"set {IDENTITY_VAR} to the AGE-SECRET-KEY-1... line, or to the path of the "
                              "age identity file that holds it.") from None


def parse_identities(value: str | None) -> list:
    """The ``pyrage`` identities of ``RUSING_BACKUP_IDENTITY`` (a key, or a file of keys; ``#`` lines ignored)."""
    if not (value or "").strip():
        return []
    out = []
    for line in _identity_text(value).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            out.append(pyrage.x25519.Identity.from_str(line))
        except Exception:  # the text is the secret: never quoted
            raise IdentityProblem(f"{IDENTITY_VAR} holds a line that is not an age secret key (the value is not "
                                  "shown). Nothing was restored or touched.",
                                  next_step=f"set {IDENTITY_VAR} to the AGE-SECRET-KEY-1... line printed by "
                                  "`age-keygen`.") from None
    if not out:
        raise IdentityProblem(f"{IDENTITY_VAR} names a file with no age secret key in it. Nothing was restored or "
                              "touched.", next_step=f"point {IDENTITY_VAR} at the age identity file.")
    return out


@dataclass(frozen=True)
class Encryption:
    """What a store encrypts to and decrypts with; ``identity`` is the secret (never printed: repr hides it)."""

    recipients: tuple[str, ...] = ()
    identity: str | None = field(default=None, repr=False)

    @property
    def enabled(self) -> bool:
        return bool(self.recipients)

    def manifest_entry(self) -> dict:
        return {"format": "age", "recipients": [fingerprint(r) for r in self.recipients]}


def of(store) -> Encryption:
    """The encryption configured on ``store`` (attached by protect.py); none = plain backups."""
    return getattr(store, "encryption", None) or Encryption()


# ---------------------------------------------------------------------------------------------- writing


class _QueueReader(io.RawIOBase):
    """A readable stream fed by a queue of byte chunks (``_END`` ends it): pyrage's input."""

    def __init__(self, q: queue.Queue):
        self.q, self.rest, self.done = q, b"", False

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        while not self.rest and not self.done:
            item = self.q.get()
            if item is _END:
                self.done = True
            else:
                self.rest = item
        n = min(len(buf), len(self.rest))
        buf[:n] = self.rest[:n]
        self.rest = self.rest[n:]
        return n


class _ListWriter(io.RawIOBase):
    def __init__(self, owner: Encryptor):
        self.owner = owner

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        with self.owner.lock:
            self.owner.out.append(bytes(data))
        return len(data)


class Encryptor:
    """Wraps a compressor (``compress(bytes) -> bytes``, ``flush() -> bytes``) so what comes out is age ciphertext.

    Fits streams.CompressingWriter unchanged: the encryption runs on its own thread; each call returns the
    ciphertext produced so far, ``flush()`` the rest (after the age trailer).
    """

    def __init__(self, inner, recipients: tuple[str, ...]):
        self.inner = inner
        self.keys = [pyrage.x25519.Recipient.from_str(r) for r in recipients]
        self.q: queue.Queue = queue.Queue(4)
        self.out: list[bytes] = []
        self.lock = threading.Lock()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="backup-encrypt", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        reader = _QueueReader(self.q)
        try:
            pyrage.encrypt_io(reader, _ListWriter(self), self.keys)
        except BaseException as exc:  # handed to the compressing thread
            self.error = exc
            while not reader.done and self.q.get() is not _END:
                pass

    def _take(self) -> bytes:
        if self.error is not None:
            raise OpsError(f"Encrypting the backup failed: {self.error}. No backup was written.")
        with self.lock:
            data, self.out = b"".join(self.out), []
        return data

    def _feed(self, data: bytes) -> None:
        if data and self.thread.is_alive():
            self.q.put(data)

    def compress(self, data: bytes) -> bytes:
        self._feed(self.inner.compress(data))
        return self._take()

    def flush(self) -> bytes:
        self._feed(self.inner.flush())
        if self.thread.is_alive():
            self.q.put(_END)
        self.thread.join()
        return self._take()


def wrap_for(store):
    """For streams.CompressingWriter: a function wrapping its compressor, or None when ``store`` is not encrypting."""
    enc = of(store)
    if not enc.enabled:
        return None
    return lambda compressor: Encryptor(compressor, enc.recipients)


# ---------------------------------------------------------------------------------------------- reading


class _QueueWriter(io.RawIOBase):
    def __init__(self, owner: DecryptingReader):
        self.owner = owner

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if self.owner.closed_by_reader:
            raise BrokenPipeError("reader closed")
        self.owner.q.put(bytes(data))
        return len(data)


class DecryptingReader:
    """A readable stream of the plaintext of an age ``stream`` (which is read on a thread of its own).

    A damaged or altered ciphertext (age authenticates every 64 KiB chunk) raises ``ValueError`` from ``read``.
    """

    def __init__(self, stream, identities: list):
        self.stream, self.identities = stream, identities
        self.q: queue.Queue = queue.Queue(8)
        self.rest = b""
        self.finished = False
        self.closed_by_reader = False
        self.thread = threading.Thread(target=self._run, name="restore-decrypt", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            pyrage.decrypt_io(self.stream, _QueueWriter(self), self.identities)
            self.q.put(_END)
        except BaseException as exc:  # handed to the reading thread
            if not self.closed_by_reader:
                self.q.put(exc)

    def read(self, n: int = -1) -> bytes:
        parts, size = [], 0
        while not self.finished and (n < 0 or size < n):
            if not self.rest:
                item = self.q.get()
                if item is _END:
                    self.finished = True
                    break
                if isinstance(item, BaseException):
                    self.finished = True
                    raise ValueError(f"age: the encrypted data does not decrypt ({item}): altered or truncated")
                self.rest = item
            take = self.rest if n < 0 else self.rest[: n - size]
            self.rest = self.rest[len(take):]
            parts.append(take)
            size += len(take)
        return b"".join(parts)

    def close(self) -> None:
        self.closed_by_reader = True
        while self.thread.is_alive():
            try:
                self.q.get(timeout=0.05)
            except queue.Empty:
                pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _describe(manifest) -> str:
    fps = (manifest.encryption or {}).get("recipients") or []
    return f"encrypted with age to recipient(s) {', '.join(fps) or '?'} (sha256 fingerprints)"


def _stored_intact(opener, manifest) -> bool:
    """Whether the stored object still has the manifest's sha256 (then a refusal is the identity's fault)."""
    try:
        with opener() as stream:
            reader = HashingReader(stream)
            reader.drain()
    except OpsError:
        return False
    return reader.hash.hexdigest() == manifest.sha256


def decryptor(store, manifest, label: str, opener):
    """For source.Source: ``stream -> plaintext stream`` for an encrypted backup (None for a plain one).

    Checks first, reading only the first 64 KiB: an identity is configured, and it is one of the recipients'. Both
    failures are one line naming ``RUSING_BACKUP_IDENTITY``, before any database is touched.
    """
    if manifest is None or not getattr(manifest, "encryption", None):
        return None
    value = of(store).identity
    if not (value or "").strip():
        raise IdentityProblem(f"Backup {label} is {_describe(manifest)} and {IDENTITY_VAR} is not set: it cannot be "
                              "restored or verified. Nothing was restored and no database was touched.",
                              next_step=f"set {IDENTITY_VAR} (the AGE-SECRET-KEY-1... of one of those recipients, or "
                              "the path of its identity file) and run the command again.")
    identities = parse_identities(value)
    with opener() as stream:
        head = stream.read(PROBE_BYTES)
    try:
        pyrage.decrypt_io(io.BytesIO(head), io.BytesIO(), identities)
    except pyrage.DecryptError as exc:
        if "No matching keys" in str(exc) and _stored_intact(opener, manifest):  # (a damaged header is not the key's
            raise IdentityProblem(f"{IDENTITY_VAR} does not open backup {label}: it is {_describe(manifest)}, and "
                                  "the configured identity is none of them. Nothing was restored and no database "
                                  "was touched.", next_step=f"set {IDENTITY_VAR} to the identity of one of those "
                                  "recipients and run the command again.") from None
    except (OSError, ValueError):
        pass  # the header opened; the payload is only cut short by the probe (hashed whole while it is restored or verified)
    return lambda stream: DecryptingReader(stream, identities)

