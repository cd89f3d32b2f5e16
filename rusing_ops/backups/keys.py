"""Backup object names: ``backup-<database>-YYYY-MM-DDTHHMMSSZ[-<reason>].sql.zst`` and the sidecars beside it: the
manifest (makes the backup complete), the verification record and the pin (keeps it from prune).

The database is in the name so that two databases backed up into one store in the same second with the same reason
get two keys (without it the second was refused, or, started at once, both passed the "already exists" test and
the second replaced the first). Names without it (``backup-YYYY-MM-DDTHHMMSSZ[-<reason>]``, written before) are
read the same way; the manifest, not the name, says which database a backup holds."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass

from ..core.errors import ConfigError

EXTENSIONS = {"zstd": ".sql.zst", "gzip": ".sql.gz", "none": ".sql"}
MANIFEST_SUFFIX = ".manifest.json"
VERIFIED_SUFFIX = ".verified.json"
PIN_SUFFIX = ".pin.json"
SIDECAR_SUFFIXES = (MANIFEST_SUFFIX, VERIFIED_SUFFIX, PIN_SUFFIX)
_KEY = re.compile(r"(?:.*/)?backup-(?:(?P<db>[A-Za-z0-9_-]+?)-)?(?P<ts>\d{4}-\d{2}-\d{2}T\d{6}Z)(?:-(?P<reason>[a-z0-9-]+))?(?P<ext>\.sql(?:\.zst|\.gz)?)(?P<age>\.age)?")
ENCRYPTED_SUFFIX = ".age"  # an age-encrypted data object (crypto.py): backup-<ts>-<reason>.sql.zst.age


@dataclass(frozen=True)
class BackupName:
    key: str
    taken_at: dt.datetime
    reason: str
    compression: str
    encrypted: bool = False

    @property
    def name(self) -> str:
        """The partition key: the object name without directory or extension."""
        base = self.key.rsplit("/", 1)[-1]
        if self.encrypted:
            base = base[: -len(ENCRYPTED_SUFFIX)]
        return base[: -len(EXTENSIONS[self.compression])]


def clean_reason(reason: str | None) -> str:
    """Lower-case letters, digits and dashes only, at most 40 characters (it becomes part of an object key)."""
    text = re.sub(r"[^a-z0-9]+", "-", (reason or "").lower()).strip("-")
    return text[:40].strip("-")


def database_tag(database: str | None) -> str:
    """``database`` as it appears in a key: letters, digits and ``_`` kept, any other run of characters one ``-``. A name
    that rule leaves as it is (at most 64 characters) is its own tag; any other also gets 8 hex digits of its sha256,
    so that names the rule would write alike (``app prod``, ``app.prod``, ``app--prod``; ``школа`` and ``学校``, which
    keep nothing) still get keys of their own."""
    if not database:
        return ""
    tag = re.sub(r"[^A-Za-z0-9_]+", "-", database).strip("-")
    if tag == database and len(tag) <= 64:
        return tag
    digest = hashlib.sha256(database.encode()).hexdigest()[:8]
    return f"{tag[:55].strip('-')}-{digest}" if tag else digest


def make_key(taken_at: dt.datetime, reason: str | None = None, compression: str = "zstd",
             encrypted: bool = False, database: str | None = None) -> str:
    """The data object's key for a backup of ``database`` started at ``taken_at`` (converted to UTC); ``.age`` when
    encrypted."""
    if compression not in EXTENSIONS:
        raise ConfigError(f"Compression {compression!r} is not supported; choose one of: zstd, gzip.")
    stamp = taken_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    reason, tag = clean_reason(reason), database_tag(database)
    return (f"backup-{tag + '-' if tag else ''}{stamp}{'-' + reason if reason else ''}{EXTENSIONS[compression]}"
            f"{ENCRYPTED_SUFFIX if encrypted else ''}")


def partition_name(taken_at: dt.datetime, reason: str | None = None, database: str | None = None) -> str:
    """The backup's name (and ``database_backup`` partition key): its key without extension."""
    return make_key(taken_at, reason, "none", database=database)[: -len(EXTENSIONS["none"])]


def parse_name(name: str) -> BackupName | None:
    """The parts of a backup name (partition key), e.g. ``backup-app-2026-11-26T080000Z-nightly``."""
    return parse_key(name + EXTENSIONS["none"])


def parse_key(key: str) -> BackupName | None:
    """The parts of a data object's key, or None when ``key`` is not one (manifest, marker, foreign file)."""
    m = _KEY.fullmatch(key)
    if not m:
        return None
    taken = dt.datetime.strptime(m["ts"], "%Y-%m-%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    compression = {v: k for k, v in EXTENSIONS.items()}[m["ext"]]
    return BackupName(key, taken, m["reason"] or "", compression, bool(m["age"]))


def manifest_key(key: str) -> str:
    return key + MANIFEST_SUFFIX


def verified_key(key: str) -> str:
    return key + VERIFIED_SUFFIX


def pin_key(key: str) -> str:
    return key + PIN_SUFFIX


def sidecar_of(key: str) -> str | None:
    """The data object's key that sidecar ``key`` (manifest, verification, pin) belongs to, or None."""
    for suffix in SIDECAR_SUFFIXES:
        if key.endswith(suffix) and parse_key(key[: -len(suffix)]) is not None:
            return key[: -len(suffix)]
    return None


def compression_of(path_or_key: str) -> str:
    """Compression inferred from a file name: ``.zst`` -> zstd, ``.gz`` -> gzip, anything else -> none."""
    if path_or_key.endswith(".zst"):
        return "zstd"
    if path_or_key.endswith(".gz"):
        return "gzip"
    return "none"
