"""A backup with a manifest is restored in one pass (restore.stage): each statement is checked as it is loaded into
the staging database, and the stored bytes are hashed on the way. These tests hold that pass to the guarantees of
the whole-file check it replaced: a bad statement in the middle stops the load at its line (staging dropped, the
target untouched, the rest of the file never read), and bytes that are not the manifest's are refused before any
swap even when they load cleanly, or replaced by the second copy."""

from __future__ import annotations

import hashlib

import pytest
import zstandard

from rusing_ops.backups import keys, record
from rusing_ops.backups.dump import backup_database
from rusing_ops.backups.manifest import Manifest
from rusing_ops.backups.protect import Protection, protect
from rusing_ops.backups.restore import restore_backup
from rusing_ops.backups.source import BackupCorrupt
from rusing_ops.core.errors import OpsError
from rusing_ops.core.store import LocalStore

from .conftest import databases_like, query, snapshot


class ReadCounting(LocalStore):
    """A local store that counts the bytes read from its data objects (the manifests are read whole elsewhere)."""

    def __init__(self, root):
        super().__init__(root)
        self.read = 0

    def open_read(self, key: str):
        stream = super().open_read(key)
        store = self
        original = stream.read

        def read(n=-1):
            data = original(n)
            store.read += len(data)
            return data

        stream.read = read
        return stream


def _fill(url, rows: int) -> None:
    """A table of ``rows`` rows of incompressible-ish text: ~1 KiB a row, so the backup holds many INSERTs."""
    query(url, url.database, "CREATE TABLE big (id INT PRIMARY KEY, body TEXT NOT NULL)")
    query(url, url.database, "INSERT INTO big SELECT seq, CONCAT(SHA2(seq, 512), SHA2(seq + 1, 512), "
                             "SHA2(seq + 2, 512), SHA2(seq + 3, 512), SHA2(seq + 4, 512), SHA2(seq + 5, 512), "
                             f"SHA2(seq + 6, 512), SHA2(seq + 7, 512)) FROM seq_1_to_{rows}")


def _rewrite(store, key: str, edit) -> None:
    """Replace the backup object by ``edit(text)`` recompressed, and give the manifest the new size and sha256."""
    text = zstandard.ZstdDecompressor().decompressobj().decompress(store.get_bytes(key))
    data = zstandard.ZstdCompressor(level=1).compress(edit(text))
    store.put_bytes(key, data)
    manifest = Manifest.from_json(store.get_bytes(keys.manifest_key(key)), key)
    manifest.sha256, manifest.bytes = hashlib.sha256(data).hexdigest(), len(data)
    store.put_bytes(keys.manifest_key(key), manifest.to_json())


def test_a_hostile_statement_in_the_middle_stops_the_load_at_its_line(fresh_db, server_url, tmp_path):
    _fill(fresh_db, 20_000)  # ~20 MiB of text: ~20 INSERTs of up to 1 MiB
    store = ReadCounting(tmp_path / "store")
    key = backup_database(fresh_db, store).manifest.key
    planted: dict[str, int] = {}

    def plant(text: bytes) -> bytes:
        frames, at = [], 0
        while len(frames) < 3:
            at = text.index(b"\n-- @", at) + 1
            frames.append(at)
        at = frames[2]  # before the 3rd INSERT: two have been sent by then
        planted["line"] = text.count(b"\n", 0, at) + 1
        return text[:at] + b"GRANT ALL ON *.* TO 'intruder'@'%';\n" + text[at:]

    _rewrite(store, key, plant)
    stored = len(store.get_bytes(key))
    target = fresh_db.database + "_onepass"
    query(server_url, "", f"CREATE DATABASE `{target}`")
    query(server_url, target, "CREATE TABLE live (id INT PRIMARY KEY)")
    query(server_url, target, "INSERT INTO live VALUES (7)")
    before = snapshot(server_url, target)
    store.read = 0
    try:
        with pytest.raises(OpsError) as err:
            restore_backup(fresh_db, store, key, database=target, pre_restore_backup=False,
                           from_database=fresh_db.database)
        message = str(err.value)
        assert f"line {planted['line']}: a GRANT statement (only data and schema statements may be in a dump)" \
            in message, message
        assert "ran in `" in message and "only (it is dropped); the target database was not touched" in message
        assert "intruder" not in message
        assert query(server_url, "", "SELECT COUNT(*) FROM mysql.user WHERE User = 'intruder'") == [(0,)]
        assert snapshot(server_url, target) == before
        assert databases_like(server_url, target + "__") == []  # the staging database was dropped
        # The load stopped there: the file was not read on (the head sniff, the pass up to the bad line and the
        # few INSERTs queued ahead of it, then the whole object once more to tell damage from a refusal).
        assert store.read < stored * 1.7, (store.read, stored)
    finally:
        query(server_url, "", "DROP USER IF EXISTS 'intruder'@'%%'")
        query(server_url, "", f"DROP DATABASE IF EXISTS `{target}`")


def test_stored_bytes_that_are_not_the_manifests_are_refused_though_they_load_cleanly(every_type_db, server_url,
                                                                                      tmp_path):
    store = LocalStore(tmp_path / "store")
    key = backup_database(every_type_db, store).manifest.key
    text = zstandard.ZstdDecompressor().decompressobj().decompress(store.get_bytes(key))
    store.put_bytes(key, zstandard.ZstdCompressor(level=19).compress(text))  # valid SQL, not the bytes hashed
    query(every_type_db, every_type_db.database, "DELETE FROM audit_no_pk")  # the live data moved on
    before = snapshot(server_url, every_type_db.database)
    with pytest.raises(BackupCorrupt) as err:
        restore_backup(every_type_db, store, key, pre_restore_backup=False)
    assert str(err.value).startswith(f"Backup {key!r} does not match its manifest: ")
    assert "(truncated or altered). It was not restored. Nothing was changed." in str(err.value)
    assert snapshot(server_url, every_type_db.database) == before
    assert databases_like(server_url, every_type_db.database + "__") == []


def test_a_primary_that_loads_but_is_not_as_stored_is_loaded_again_from_the_copy(every_type_db, server_url, tmp_path):
    primary = LocalStore(tmp_path / "primary")
    store = protect(primary, Protection(copy_url=str(tmp_path / "copy")))
    before = snapshot(server_url, every_type_db.database)
    rec = record.take(every_type_db, store, reason="nightly")
    text = zstandard.ZstdDecompressor().decompressobj().decompress(primary.get_bytes(rec.key))
    primary.put_bytes(rec.key, zstandard.ZstdCompressor(level=19).compress(text))  # loads cleanly, wrong sha256
    query(every_type_db, every_type_db.database, "DELETE FROM audit_no_pk")
    lines: list[str] = []
    restore_backup(every_type_db, store, rec.name, pre_restore_backup=False, log=lines.append)
    notes = [line for line in lines if line.startswith("note: the primary object")]
    assert len(notes) == 1 and "does not match its manifest" in notes[0], lines
    assert f"using the copy at {(tmp_path / 'copy' / rec.key).as_uri()} instead" in notes[0]
    assert "is loaded again from it" in notes[0]
    assert snapshot(server_url, every_type_db.database) == before  # the backup's rows, from the copy
    assert databases_like(server_url, every_type_db.database + "__restore") == []


@pytest.mark.parametrize("change", ["rows", "checksum", "extra table"])
def test_a_loaded_copy_that_differs_from_the_manifest_is_refused(change, every_type_db, server_url, tmp_path):
    """The row counts come from the same server pass as the checksums (restore.loaded_checksums): a wrong count, a
    wrong value or a table the manifest does not list each refuse the swap."""
    store = LocalStore(tmp_path / "store")
    key = backup_database(every_type_db, store).manifest.key
    if change == "extra table":
        _rewrite(store, key, lambda text: text + b"CREATE TABLE planted (id INT PRIMARY KEY);\n"
                                                 b"INSERT INTO planted VALUES (1);\n")
    else:
        manifest = Manifest.from_json(store.get_bytes(keys.manifest_key(key)), key)
        table = manifest.tables["payments"]
        if change == "rows":
            table.rows += 1
        else:
            table.server_checksum = table.server_checksum[:-1] + ("1" if table.server_checksum[-1] != "1" else "2")
        store.put_bytes(keys.manifest_key(key), manifest.to_json())
    before = snapshot(server_url, every_type_db.database)
    with pytest.raises(OpsError) as err:
        restore_backup(every_type_db, store, key, pre_restore_backup=False)
    message = str(err.value)
    if change == "checksum":
        assert "the server checksum of table(s) payments differs from the manifest's" in message, message
    else:
        table, pair = ("planted", "(1, None)") if change == "extra table" else ("payments", None)
        assert "does not match its manifest: (loaded, expected) rows per table {" + f"'{table}'" in message, message
        if pair:
            assert pair in message
    assert "The target database was not touched." in message
    assert snapshot(server_url, every_type_db.database) == before
    assert databases_like(server_url, every_type_db.database + "__") == []


def test_a_row_planted_after_a_table_is_complete_is_still_counted(fresh_db, server_url, tmp_path):
    """restore.EarlyChecksums hashes a table as soon as it holds the manifest's rows, while the rest loads: a row
    an edited file adds to that table afterwards makes it late (load.LoadResult.late), so it is hashed again and
    the restore refused, not passed on the early figure."""
    _fill(fresh_db, 3000)
    store = LocalStore(tmp_path / "store")
    key = backup_database(fresh_db, store).manifest.key
    _rewrite(store, key, lambda text: text.replace(b"-- rusing_ops backup complete",
                                                   b"INSERT INTO `big` VALUES (999999,'planted');\n"
                                                   b"-- rusing_ops backup complete"))
    before = snapshot(server_url, fresh_db.database)
    with pytest.raises(OpsError) as err:
        restore_backup(fresh_db, store, key, pre_restore_backup=False)
    assert "(loaded, expected) rows per table {'big': (3001, 3000)}" in str(err.value), str(err.value)
    assert snapshot(server_url, fresh_db.database) == before
    assert databases_like(server_url, fresh_db.database + "__") == []


def test_the_loader_says_when_each_table_is_complete_and_which_took_rows_after(fresh_db):
    from rusing_ops.backups.confine import Action
    from rusing_ops.backups.load import Loader

    completed: list[str] = []
    actions = [Action("ddl", b"CREATE TABLE a (id INT PRIMARY KEY)", 1, "CREATE TABLE"),
               Action("ddl", b"CREATE TABLE b (id INT PRIMARY KEY)", 2, "CREATE TABLE"),
               Action("data", b"INSERT INTO `a` VALUES (1),(2)", 3, "INSERT", "a"),
               Action("data", b"INSERT INTO `b` VALUES (1)", 4, "INSERT", "b"),
               Action("data", b"INSERT INTO `a` VALUES (3)", 5, "INSERT", "a"),
               Action("data", b"INSERT INTO `b` VALUES (2)", 6, "INSERT", "b")]
    loaded = Loader(fresh_db, fresh_db.database, workers=1, expected_rows={"a": 3, "b": 1},
                    on_complete=lambda table, nbytes: completed.append((table, nbytes))).load(actions)
    assert completed == [("b", len(actions[3].sql)), ("a", len(actions[2].sql) + len(actions[4].sql))]  # b at
    # its first row (the manifest said 1), a at its third
    assert loaded.late == {"b"}  # b took a row after it was complete: its early hash is stale


def test_early_checksums_that_fail_leave_every_table_to_the_final_pass(fresh_db):
    """restore.EarlyChecksums is an overlap, never a verdict: its connection failing (here: a database that does
    not exist; in a manual run, its query KILLed mid-restore, which then staged and swapped normally) gives no
    figures, and loaded_checksums hashes every table after the load."""
    import time

    from rusing_ops.backups.restore import EarlyChecksums, loaded_checksums

    query(fresh_db, fresh_db.database, "CREATE TABLE t (id INT PRIMARY KEY)")
    query(fresh_db, fresh_db.database, "INSERT INTO t VALUES (1), (2)")
    gone = EarlyChecksums(fresh_db, fresh_db.database + "_missing", chunk_bytes=4 << 20, workers=2)
    gone.complete("t", 20)
    assert gone.finish() == {}
    early = EarlyChecksums(fresh_db, fresh_db.database, chunk_bytes=4 << 20, workers=2)
    early.complete("t", 20)
    early.complete("not_a_table", 5)
    deadline = time.monotonic() + 10
    while not early.parts and time.monotonic() < deadline:  # the thread hashes t while "the load" goes on
        time.sleep(0.01)
    expected = loaded_checksums(fresh_db, fresh_db.database, workers=1)["t"]
    assert expected.startswith("crc32ws:2:") and early.finish() == {("t", 0, 1): expected}
