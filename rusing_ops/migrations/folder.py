"""The Drizzle folder on disk: journal, SQL files and snapshots, read and checked before any database is touched.

What drizzle-orm reads (journal order, `<tag>.sql`, statement split, hash) is in :mod:`.sqlfile`; this module adds
the checks drizzle never makes (../shared/research/drizzle.md §1.2, §1.11 item 5, §2): every problem names its file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import OpsError
from . import sqlfile

JOURNAL = "meta/_journal.json"
WHEN_ORDER = "when-order"
FIRST_PREV_ID = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class Migration:
    """One journal entry with its SQL file, as drizzle-orm would run it."""

    idx: int
    tag: str
    when: int
    breakpoints: bool
    path: Path
    raw: bytes
    hash: str
    statements: tuple[str, ...]

    @property
    def filename(self) -> str:
        return self.path.name

    @property
    def snapshot_name(self) -> str:
        # drizzle-kit names the snapshot after the tag's prefix (`drop.ts`: tag.split('_')[0]).
        return f"meta/{self.tag.split('_')[0]}_snapshot.json"


@dataclass(frozen=True)
class Snapshot:
    """One `meta/NNNN_snapshot.json`: the schema drizzle-kit believed in after that migration."""

    path: Path
    id: str
    prev_id: str
    data: dict

    @property
    def tables(self) -> dict:
        return self.data.get("tables") or {}

    @property
    def views(self) -> dict:
        return self.data.get("views") or {}


@dataclass(frozen=True)
class Problem:
    """Something wrong with the folder: the file it is about (relative to the folder) and what."""

    file: str
    message: str
    blocking: bool = True
    code: str = ""  # set on problems a flag may accept (WHEN_ORDER: --accept-skipped)

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass
class MigrationFolder:
    path: Path
    migrations: list[Migration] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.blocking]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if not p.blocking]

    @property
    def head(self) -> Migration | None:
        return self.migrations[-1] if self.migrations else None

    @property
    def latest_snapshot(self) -> Snapshot | None:
        """The snapshot drizzle-kit generate diffs against: the lexicographically last one (`utils.ts` L96-113)."""
        return max(self.snapshots, key=lambda s: s.path.name) if self.snapshots else None

    def snapshot_of(self, migration: Migration) -> Snapshot | None:
        return next((s for s in self.snapshots if f"meta/{s.path.name}" == migration.snapshot_name), None)

    def tables_before(self, migration: Migration) -> dict:
        """The snapshot tables as they were before ``migration`` ({} for the first or when unknown)."""
        position = self.migrations.index(migration)
        snap = self.snapshot_of(self.migrations[position - 1]) if position > 0 else None
        return snap.tables if snap else {}

    def by_tag(self, tag: str) -> Migration | None:
        return next((m for m in self.migrations if m.tag == tag), None)


class FolderInvalid(OpsError):
    """The Drizzle folder cannot be trusted; nothing was run."""


def load_folder(path: Path | str) -> MigrationFolder:
    """Read ``path`` (the folder holding ``meta/_journal.json``) and collect every problem; never raises for content.

    :param path: the Drizzle `out` folder (``DRIZZLE_DIR``).
    """
    folder = MigrationFolder(Path(path))
    journal = _read_journal(folder)
    if journal is None:
        return folder
    _read_entries(folder, journal)
    _check_unlisted_sql(folder, journal)
    _read_snapshots(folder)
    return folder


def read_folder(path: Path | str, *, accept: frozenset[str] = frozenset()) -> MigrationFolder:
    """:func:`load_folder`, raising :class:`FolderInvalid` listing every blocking problem.

    :param accept: problem codes to let through (``{WHEN_ORDER}`` when skipped entries are accepted).
    """
    folder = load_folder(path)
    raise_if_invalid(folder, accept=accept)
    return folder


def raise_if_invalid(folder: MigrationFolder, *, accept: frozenset[str] = frozenset()) -> None:
    errors = [p for p in folder.errors if p.code not in accept]
    if errors:
        lines = "\n".join(f"  - {p}" for p in errors)
        raise FolderInvalid(
            f"Drizzle folder {folder.path} is not valid ({len(errors)} problem{'s' * (len(errors) != 1)}):\n{lines}\n",
            next_step="fix the files named above (or regenerate them with drizzle-kit), then run `rusing-ops db validate`.",
            problems=[str(p) for p in errors],
        )


def _read_journal(folder: MigrationFolder) -> list[dict] | None:
    journal_path = folder.path / JOURNAL
    if not folder.path.is_dir():
        folder.problems.append(Problem(str(folder.path), "the Drizzle folder does not exist (check DRIZZLE_DIR)"))
        return None
    if not journal_path.is_file():
        folder.problems.append(Problem(JOURNAL, "not found: drizzle-orm refuses to migrate without it "
                                                "(\"Can't find meta/_journal.json file\")"))
        return None
    raw = journal_path.read_bytes()
    if raw.startswith(sqlfile.BOM):
        folder.problems.append(Problem(JOURNAL, "starts with a UTF-8 byte order mark; JSON.parse in drizzle-orm rejects it"))
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        folder.problems.append(Problem(JOURNAL, f"is not valid JSON ({exc})"))
        return None
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        folder.problems.append(Problem(JOURNAL, "has no `entries` list"))
        return None
    if data.get("dialect") not in (None, "mysql"):
        folder.problems.append(Problem(JOURNAL, f"dialect is {data.get('dialect')!r}, expected \"mysql\""))
    return entries


def _read_entries(folder: MigrationFolder, entries: list) -> None:
    seen_idx: dict[int, str] = {}
    seen_tag: set[str] = set()
    previous: tuple[str, int] | None = None
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            folder.problems.append(Problem(JOURNAL, f"entry #{position} is not an object"))
            continue
        tag, when, idx = entry.get("tag"), entry.get("when"), entry.get("idx")
        if not isinstance(tag, str) or not tag or "/" in tag or "\\" in tag:
            folder.problems.append(Problem(JOURNAL, f"entry #{position} has no usable `tag` ({tag!r})"))
            continue
        where = f"{JOURNAL} entry {tag!r}"
        bad = False
        if not isinstance(when, int) or isinstance(when, bool):
            folder.problems.append(Problem(JOURNAL, f"entry {tag!r} has `when` {when!r}; expected milliseconds since epoch"))
            bad = True
        if not isinstance(idx, int) or isinstance(idx, bool):
            folder.problems.append(Problem(JOURNAL, f"entry {tag!r} has `idx` {idx!r}; expected an integer"))
            bad = True
        elif idx in seen_idx:
            folder.problems.append(Problem(JOURNAL, f"duplicate idx {idx}: entries {seen_idx[idx]!r} and {tag!r}"))
        else:
            seen_idx[idx] = tag
        if tag in seen_tag:
            folder.problems.append(Problem(JOURNAL, f"duplicate tag {tag!r}"))
            continue
        seen_tag.add(tag)
        if not bad and previous is not None and when <= previous[1]:
            folder.problems.append(Problem(
                JOURNAL, f"`when` does not increase: entry {tag!r} has {when}, not after {previous[0]!r} ({previous[1]}); "
                         "drizzle-orm would skip it on any database already past the earlier entry", code=WHEN_ORDER))
        if not bad:
            previous = (tag, when)
        sql_path = folder.path / f"{tag}.sql"
        if not sql_path.is_file():
            folder.problems.append(Problem(f"{tag}.sql", f"missing: {where} has no SQL file (drizzle-orm: "
                                                         f"\"No file {sql_path} found\")"))
            continue
        if bad:
            continue
        raw = sql_path.read_bytes()
        text = sqlfile.decode(raw)
        statements = tuple(sqlfile.split_statements(text))
        _check_sql(folder, sql_path.name, raw, statements, entry.get("breakpoints", True))
        folder.migrations.append(Migration(idx=idx, tag=tag, when=when, breakpoints=bool(entry.get("breakpoints", True)),
                                           path=sql_path, raw=raw, hash=sqlfile.drizzle_hash(raw), statements=statements))


def _check_sql(folder: MigrationFolder, name: str, raw: bytes, statements: tuple[str, ...], breakpoints) -> None:
    if raw.startswith(sqlfile.BOM):
        folder.problems.append(Problem(name, "starts with a UTF-8 byte order mark; drizzle-orm sends it to the server "
                                             "as part of statement 1, which fails with ER_PARSE_ERROR (1064)"))
    offset = sqlfile.first_invalid_utf8_offset(raw)
    if offset is not None:
        folder.problems.append(Problem(name, f"is not valid UTF-8 (byte {offset}); drizzle-orm would send U+FFFD "
                                             "in place of those bytes and record a hash that differs from sha256sum"))
    for number, statement in enumerate(statements, start=1):
        if sqlfile.is_blank(statement):
            folder.problems.append(Problem(name, f"statement {number} of {len(statements)} is empty (a stray or trailing "
                                                 "`--> statement-breakpoint`); the server answers ER_EMPTY_QUERY (1065)"))
        elif sqlfile.counts_several_statements(statement):
            hint = " (the journal says breakpoints: false)" if breakpoints is False else ""
            folder.problems.append(Problem(name, f"statement {number} holds several SQL statements{hint}; drizzle-orm "
                                                 "sends it as one query, which fails with ER_PARSE_ERROR (1064). "
                                                 "Separate them with `--> statement-breakpoint`"))
        elif sqlfile.is_comment_only(statement):
            folder.problems.append(Problem(name, f"statement {number} is only a comment (accepted by MariaDB, "
                                                 "may be rejected as an empty query by MySQL 8)", blocking=False))


def _check_unlisted_sql(folder: MigrationFolder, entries: list) -> None:
    tags = {e.get("tag") for e in entries if isinstance(e, dict)}
    for sql_path in sorted(folder.path.glob("*.sql")):
        if sql_path.stem not in tags:
            folder.problems.append(Problem(sql_path.name, f"has no entry in {JOURNAL}: drizzle-orm would never run it"))


def _read_snapshots(folder: MigrationFolder) -> None:
    seen_ids: dict[str, str] = {}
    for snap_path in sorted((folder.path / "meta").glob("*_snapshot.json")):
        rel = f"meta/{snap_path.name}"
        try:
            data = json.loads(snap_path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            folder.problems.append(Problem(rel, f"is not valid JSON ({exc})"))
            continue
        if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not isinstance(data.get("prevId"), str):
            folder.problems.append(Problem(rel, "has no string `id` / `prevId`: not a drizzle-kit snapshot"))
            continue
        if data.get("dialect") not in (None, "mysql") or not isinstance(data.get("tables", {}), dict):
            folder.problems.append(Problem(rel, "is not a MySQL snapshot (dialect / tables)"))
            continue
        if data["id"] in seen_ids:
            folder.problems.append(Problem(rel, f"has the same id {data['id']} as {seen_ids[data['id']]}"))
        seen_ids.setdefault(data["id"], rel)
        folder.snapshots.append(Snapshot(snap_path, data["id"], data["prevId"], data))
    expected = FIRST_PREV_ID
    previous = None
    for snap in folder.snapshots:
        if snap.prev_id != expected:
            after = f"the id of {previous}" if previous else "the all-zero id (first snapshot)"
            folder.problems.append(Problem(f"meta/{snap.path.name}",
                                           f"broken snapshot chain: prevId {snap.prev_id} is not {after} ({expected})"))
        expected, previous = snap.id, f"meta/{snap.path.name}"
    if not folder.snapshots:
        folder.problems.append(Problem("meta/", "holds no snapshots: schema drift cannot be checked", blocking=False))
        return
    for migration in folder.migrations:
        if not (folder.path / migration.snapshot_name).is_file():
            folder.problems.append(Problem(migration.snapshot_name, f"missing: migration {migration.tag!r} has no "
                                           "snapshot (drizzle-kit diffs against the last one)", blocking=False))
