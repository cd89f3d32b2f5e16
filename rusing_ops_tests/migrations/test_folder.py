"""Folder model: drizzle's hash and split, and every corrupted-folder case refused with a message naming the file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from rusing_ops.migrations import sqlfile
from rusing_ops.migrations.folder import FolderInvalid, load_folder, read_folder

from .conftest import EDGE, RUSING


def test_genuine_folder_reads_clean_with_drizzles_hashes_and_chunks():
    folder = read_folder(RUSING / "drizzle")
    rows = json.loads((RUSING / "reference" / "migrations_table_rows.json").read_text())
    assert [(m.hash, m.when) for m in folder.migrations] == [(r["hash"], r["created_at"]) for r in rows]
    assert [len(m.statements) for m in folder.migrations] == [34, 7, 3, 2, 9]
    assert folder.problems == []
    assert folder.head.tag == "0004_drop_hourly_rate_rename_path_courses"
    assert folder.latest_snapshot.path.name == "0004_snapshot.json"


def test_chunks_are_exactly_what_drizzle_sent():
    folder = read_folder(RUSING / "drizzle")
    log = [json.loads(line)["query"] for line in (RUSING / "reference" / "migrator_query_log.jsonl").read_text().splitlines()]
    sent = [q for q in log if not q.startswith(("\n\t\t\tcreate table if not exists", "select id", "insert into"))
            and q not in ("begin", "commit")]
    assert sent == [s for m in folder.migrations for s in m.statements]


def test_hash_matches_node_for_crlf_accents_and_invalid_utf8():
    rows = json.loads((EDGE / "hash-bytes" / "reference" / "result.json").read_text())["rows_after"]
    files = sorted((EDGE / "hash-bytes" / "drizzle").glob("*.sql"))
    assert [sqlfile.drizzle_hash(f.read_bytes()) for f in files] == [r["hash"] for r in rows]
    latin1 = files[3].read_bytes()
    assert sqlfile.drizzle_hash(latin1) != hashlib.sha256(latin1).hexdigest()
    assert sqlfile.split_statements("a;--> statement-breakpoint\nb;") == ["a;", "\nb;"]


def _journal(folder: Path) -> dict:
    return json.loads((folder / "meta" / "_journal.json").read_text())


def _write_journal(folder: Path, journal: dict) -> None:
    (folder / "meta" / "_journal.json").write_text(json.dumps(journal, indent=2))


def _snapshot(folder: Path, n: int) -> tuple[Path, dict]:
    path = folder / "meta" / f"{n:04d}_snapshot.json"
    return path, json.loads(path.read_text())


def _missing_journal(f):
    (f / "meta" / "_journal.json").unlink()


def _malformed_journal(f):
    (f / "meta" / "_journal.json").write_text('{"version": "7", "entries": [')


def _entry_without_file(f):
    (f / "0002_add_timezone_primary_coach.sql").unlink()


def _file_without_entry(f):
    (f / "0005_stray.sql").write_text("CREATE TABLE `stray` (`id` int);")


def _duplicate_idx(f):
    j = _journal(f)
    j["entries"][3]["idx"] = 2
    _write_journal(f, j)


def _duplicate_tag(f):
    j = _journal(f)
    j["entries"].append(dict(j["entries"][4], idx=5, when=j["entries"][4]["when"] + 1000))
    _write_journal(f, j)


def _non_increasing_when(f):
    j = _journal(f)
    j["entries"][2]["when"] = j["entries"][1]["when"]
    _write_journal(f, j)


def _broken_chain(f):
    path, snap = _snapshot(f, 3)
    snap["prevId"] = "11111111-2222-3333-4444-555555555555"
    path.write_text(json.dumps(snap, indent=2))


def _duplicate_snapshot_id(f):
    _, first = _snapshot(f, 1)
    path, snap = _snapshot(f, 2)
    snap["id"] = first["id"]
    path.write_text(json.dumps(snap, indent=2))


def _empty_statement(f):
    path = f / "0002_add_timezone_primary_coach.sql"
    path.write_bytes(path.read_bytes() + b"--> statement-breakpoint\n")


def _bom(f):
    path = f / "0001_add_availability_certificates.sql"
    path.write_bytes(sqlfile.BOM + path.read_bytes())


CORRUPTIONS = {
    "missing journal": (_missing_journal, "meta/_journal.json: not found"),
    "malformed journal": (_malformed_journal, "meta/_journal.json: is not valid JSON"),
    "entry without file": (_entry_without_file, "0002_add_timezone_primary_coach.sql: missing: meta/_journal.json entry "
                                                "'0002_add_timezone_primary_coach' has no SQL file"),
    "file without entry": (_file_without_entry, "0005_stray.sql: has no entry in meta/_journal.json"),
    "duplicate idx": (_duplicate_idx, "meta/_journal.json: duplicate idx 2: entries '0002_add_timezone_primary_coach' "
                                      "and '0003_backfill_timezone_and_primary_coach'"),
    "duplicate tag": (_duplicate_tag, "meta/_journal.json: duplicate tag '0004_drop_hourly_rate_rename_path_courses'"),
    "non-increasing when": (_non_increasing_when, "meta/_journal.json: `when` does not increase: entry "
                                                  "'0002_add_timezone_primary_coach' has 1795713136426"),
    "broken snapshot chain": (_broken_chain, "meta/0003_snapshot.json: broken snapshot chain: prevId "
                                             "11111111-2222-3333-4444-555555555555 is not the id of meta/0002_snapshot.json"),
    "duplicate snapshot id": (_duplicate_snapshot_id, "meta/0002_snapshot.json: has the same id"),
    "empty statement": (_empty_statement, "0002_add_timezone_primary_coach.sql: statement 4 of 4 is empty"),
    "bom": (_bom, "0001_add_availability_certificates.sql: starts with a UTF-8 byte order mark"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupted_folder_is_refused_naming_the_file(case, rusing_folder):
    corrupt, expected = CORRUPTIONS[case]
    corrupt(rusing_folder)
    with pytest.raises(FolderInvalid) as err:
        read_folder(rusing_folder)
    text = str(err.value)
    assert expected in text
    assert text.startswith(f"Drizzle folder {rusing_folder} is not valid")
    assert text.endswith("Nothing was changed. Next: fix the files named above (or regenerate them with drizzle-kit), "
                         "then run `rusing-ops db validate`.")


def test_several_statements_in_one_chunk_and_comment_only_chunk():
    nobp = load_folder(EDGE / "no-breakpoints-genuine" / "drizzle")
    assert [str(p) for p in nobp.errors] == [
        "0000_no_breakpoints.sql: statement 1 holds several SQL statements (the journal says breakpoints: false); "
        "drizzle-orm sends it as one query, which fails with ER_PARSE_ERROR (1064). Separate them with "
        "`--> statement-breakpoint`"]
    custom = load_folder(EDGE / "custom-unedited-comment-only" / "drizzle")
    assert custom.errors == []
    assert "0001_custom_unedited.sql: statement 1 is only a comment" in str(custom.warnings[0])
    assert not sqlfile.counts_several_statements("CREATE TRIGGER t BEFORE INSERT ON x FOR EACH ROW BEGIN SET @a=1; SET @b=2; END")
    assert not sqlfile.counts_several_statements("INSERT INTO t VALUES ('a;b');")
