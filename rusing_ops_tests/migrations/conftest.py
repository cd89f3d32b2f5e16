"""Fixtures for the migrations tests: copies of the genuine drizzle-kit folders in temp dirs, DB helpers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pymysql
import pytest

from rusing_ops.core.database import create_engine
from rusing_ops_tests.conftest import FIXTURES

RUSING = FIXTURES / "drizzle-rusing"
FAILING_RENAME = FIXTURES / "drizzle-rusing-failing-rename"
EDGE = FIXTURES / "synthetic-edge-cases"


def fixture_dir(name: str) -> Path:
    """A fixture folder of ``rusing_ops_tests/fixtures`` (a fixture that is missing fails the test loudly)."""
    path = FIXTURES / name
    assert path.exists(), f"fixture {path} is missing"
    return path


def copy_folder(src: Path, dest: Path, *, only: list[str] | None = None, drop_snapshots: bool = False) -> Path:
    """Copy a Drizzle folder; ``only`` keeps just those journal tags and SQL files (snapshots too unless dropped)."""
    shutil.copytree(src, dest)
    if only is not None:
        journal_path = dest / "meta" / "_journal.json"
        journal = json.loads(journal_path.read_text())
        for entry in journal["entries"]:
            if entry["tag"] not in only:
                (dest / f"{entry['tag']}.sql").unlink()
                snap = dest / "meta" / f"{entry['tag'].split('_')[0]}_snapshot.json"
                if drop_snapshots and snap.exists():
                    snap.unlink()
        journal["entries"] = [e for e in journal["entries"] if e["tag"] in only]
        journal_path.write_text(json.dumps(journal, indent=2))
    return dest


@pytest.fixture
def rusing_folder(tmp_path) -> Path:
    """A private, writable copy of the genuine drizzle-rusing folder."""
    return copy_folder(fixture_dir("drizzle-rusing/drizzle"), tmp_path / "drizzle")


@pytest.fixture
def engine(fresh_db):
    eng = create_engine(fresh_db)
    yield eng
    eng.dispose()


def query(url, sql: str, args=None) -> list[tuple]:
    conn = pymysql.connect(**url.pymysql_kwargs(), autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


def migration_rows(url) -> list[dict]:
    return [{"id": r[0], "hash": r[1], "created_at": r[2]}
            for r in query(url, "SELECT id, hash, created_at FROM `__drizzle_migrations` ORDER BY id")]


def schema_dump(url) -> dict[str, str]:
    """SHOW CREATE TABLE / VIEW of every object, AUTO_INCREMENT counters and DEFINER normalised (fixture README)."""
    import re

    out = {}
    for name, kind in query(url, "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES "
                                 "WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME"):
        row = query(url, f"SHOW CREATE {'VIEW' if kind == 'VIEW' else 'TABLE'} `{name}`")[0]
        text = re.sub(r" AUTO_INCREMENT=\d+", "", row[1])
        out[name] = re.sub(r"DEFINER=`[^`]*`@`[^`]*`", "DEFINER=?", text)
    return out


def reference_show_create(path: Path) -> dict[str, str]:
    """The fixture's show_create_tables.sql parsed into {name: statement}, normalised like :func:`schema_dump`."""
    import re

    out = {}
    text = path.read_text()
    parts = re.split(r"^-- (\S+) \[([A-Z ]+)\]$", text, flags=re.MULTILINE)
    for i in range(1, len(parts), 3):
        name, body = parts[i], parts[i + 2].strip()
        body = body.removesuffix(";")
        body = re.sub(r" AUTO_INCREMENT=\d+", "", body)
        out[name] = re.sub(r"DEFINER=`[^`]*`@`[^`]*`", "DEFINER=?", body)
    return out


def replay_drizzle_log(url, log_path: Path, migrations: int) -> None:
    """Send the queries drizzle-orm's migrator sent (its logged text and params) until ``migrations`` rows are in."""
    conn = pymysql.connect(**url.pymysql_kwargs(), autocommit=True)
    inserted = 0
    try:
        with conn.cursor() as cur:
            for line in log_path.read_text().splitlines():
                entry = json.loads(line)
                if entry["params"]:
                    cur.execute(entry["query"].replace("?", "%s"), entry["params"])
                else:
                    cur.execute(entry["query"])
                if entry["query"].startswith("insert into"):
                    inserted += 1
                    if inserted == migrations:
                        cur.execute("commit")
                        return
    finally:
        conn.close()


def use_general_ci(url) -> None:
    """The fixture references were made in a database with the server default collation (utf8mb4_general_ci)."""
    query(url, f"ALTER DATABASE `{url.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
