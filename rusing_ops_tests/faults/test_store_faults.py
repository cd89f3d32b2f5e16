"""Issue 8 item 7, the store's faults: a kill -9 mid-backup, a stopped S3 server, a full disk, a failed manifest
write, an unreadable manifest. Nothing incomplete is ever offered as a good backup, the listing never fails as a
whole, prune sweeps what killed writers leave (once it is old enough to be surely dead), and every failure names
the store and the cause.

Real processes: the `rusing-ops` CLI killed with SIGKILL, a SeaweedFS server of this test's own stopped with
SIGKILL mid-upload and started again on the same data, a 2 MiB tmpfs, the local MariaDB."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rusing_ops.backups import catalog, keys
from rusing_ops.backups.dump import backup_database
from rusing_ops.backups.retention import RetentionPolicy, prune_backups
from rusing_ops.core.errors import StoreError
from rusing_ops.core.store import LocalStore, S3Store
from rusing_ops_tests.backups.conftest import query
from rusing_ops_tests.conftest import _start_seaweedfs

UTC = dt.UTC
DAY_AFTER = dt.timedelta(hours=25)


def _bulk(url, rows: int) -> None:
    """Incompressible-ish rows (hex of SHA2), so the dump takes a while and S3 gets several parts."""
    query(url, url.database, "CREATE TABLE bulk (id INT PRIMARY KEY, a VARCHAR(200), b VARCHAR(200))")
    query(url, url.database, f"INSERT INTO bulk SELECT seq, SHA2(seq, 512), SHA2(-seq, 512) FROM seq_1_to_{rows}")


def _small(url) -> None:
    query(url, url.database, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
    query(url, url.database, "INSERT INTO t VALUES (1, 'a'), (2, 'b')")


@pytest.fixture
def cli(fresh_db, database_url_str, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DATABASE_URL": database_url_str, "RUSING_BACKUP_URL": str(tmp_path / "backups"),
           "DAGSTER_HOME": str(home)}

    def command(*args: str) -> list[str]:
        return [sys.executable, "-m", "rusing_ops.cli", "db", *args]

    def run(*args: str, **extra_env: str) -> subprocess.CompletedProcess:
        return subprocess.run(command(*args), env={**env, **extra_env}, capture_output=True, text=True, timeout=300)

    run.command, run.env = command, env
    return run


# ------------------------------------------------------------------------------------------------ listing


def test_one_unreadable_manifest_never_hides_the_other_backups(fresh_db, any_store):
    _small(fresh_db)
    good = [backup_database(fresh_db, any_store, now=dt.datetime(2026, 1, d, 3, tzinfo=UTC)).manifest for d in (1, 2)]
    bad = [backup_database(fresh_db, any_store, now=dt.datetime(2026, 1, d, 3, tzinfo=UTC)).manifest for d in (3, 4, 5)]
    raw = json.loads(good[0].to_json())
    any_store.put_bytes(keys.manifest_key(bad[0].key), b"{ not json")
    any_store.put_bytes(keys.manifest_key(bad[1].key), json.dumps(  # parses, but a field has the wrong type
        {**raw, "key": bad[1].key, "tables": {"t": {"rows": "many", "checksum": "x"}}}).encode())
    any_store.put_bytes(keys.manifest_key(bad[2].key), json.dumps([1, 2]).encode())
    any_store.put_bytes(keys.verified_key(good[1].key), b"[]")  # a verification record that is not an object
    any_store.put_bytes("backup-2026-01-06T030000Z.sql.zst", b"a data object whose manifest was never written")

    entries = catalog.list_backups(any_store, fresh_db.database)
    summary = {f"{e.taken_at:%Y-%m-%dT%H%M%S}": (e.complete, e.problem) for e in entries}
    assert summary["2026-01-01T030000"] == summary["2026-01-02T030000"] == (True, None)
    assert summary["2026-01-03T030000"][1].startswith("manifest unreadable: The manifest of backup ")
    assert summary["2026-01-04T030000"][1] == ("manifest unreadable: a field has the wrong type (a table's row "
                                               "count is not a number)")
    assert summary["2026-01-05T030000"][1].startswith("manifest unreadable: The manifest of backup ")
    assert summary["2026-01-06T030000"] == (False, catalog.INCOMPLETE)
    assert [e.summary()["complete"] for e in entries] == [False, False, False, False, True, True]
    assert not entries[-2].verified
    assert catalog.resolve(any_store, "latest", fresh_db.database).key == good[1].key
    with pytest.raises(catalog.ManifestError, match="is not restorable: manifest unreadable: "):
        catalog.resolve(any_store, bad[0].key)

    plan = prune_backups(any_store, RetentionPolicy(0, 0, 0), dry_run=True, now=dt.datetime.now(UTC) + DAY_AFTER)
    assert sorted(e.key for e in plan.delete) == sorted([good[0].key, "backup-2026-01-06T030000Z.sql.zst"])
    assert all(plan.keep[m.key][0].startswith("not deleted: manifest unreadable") for m in bad)


# ------------------------------------------------------------------------------------------------ writes that fail


def test_a_failed_manifest_write_deletes_the_data_object(fresh_db, local_store):
    _small(fresh_db)
    when = dt.datetime(2026, 1, 1, 3, tzinfo=UTC)
    key = keys.make_key(when, "nightly", database=fresh_db.database)
    (local_store.root / keys.manifest_key(key)).mkdir(parents=True)  # the manifest's place is taken
    with pytest.raises(StoreError) as err:
        backup_database(fresh_db, local_store, reason="nightly", now=when)
    text = str(err.value)
    assert text.startswith(f"The backup's data was stored but its manifest could not be written: The backup store "
                           f"{local_store.url} could not finish {keys.manifest_key(key)}: ")
    assert "The data object was deleted again: nothing of this backup remains in the store. No backup was taken." \
        in text
    assert not local_store.exists(key)
    assert catalog.list_backups(local_store, include_partial=True) == []


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MiB tmpfs (the tests run as root); skipped where mounting is not allowed."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_names_the_store_and_the_cause_and_leaves_nothing(cli, fresh_db, tiny_disk):
    query(fresh_db, fresh_db.database, "CREATE TABLE blobs (id INT PRIMARY KEY, b LONGBLOB)")
    for i in range(4):  # 4 MiB of random bytes: twice what the disk holds, even compressed
        query(fresh_db, fresh_db.database, "INSERT INTO blobs VALUES (%s, %s)", (i, os.urandom(1024 * 1024)))
    store = LocalStore(tiny_disk / "backups")
    done = cli("backup", "--reason", "nightly", RUSING_BACKUP_URL=str(store.root))
    assert done.returncode == 1
    assert f"The backup store {store.url} could not write backup-" in done.stderr
    assert "-nightly.sql.zst: the disk is full (No space left on device). The unfinished file was removed; nothing " \
           "was stored under that name." in done.stderr
    assert "Error occurred while executing" not in done.stderr
    assert store.list_partial() == [] and store.list() == []
    listed = cli("backups", "--json", RUSING_BACKUP_URL=str(store.root))
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


# ------------------------------------------------------------------------------------------------ kill -9


def test_kill_9_mid_backup_is_listed_as_unfinished_and_swept_by_prune_once_old(cli, fresh_db, tmp_path):
    _bulk(fresh_db, 150_000)
    store = LocalStore(tmp_path / "backups")
    proc = subprocess.Popen(cli.command("backup", "--reason", "nightly"), env=cli.env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while not [p for p in store.list_partial() if p.size > 0]:  # the dump is writing: kill it there
            assert proc.poll() is None, f"the backup finished before it could be killed: {proc.stderr.read()[-500:]!r}"
            assert time.monotonic() < deadline, "the backup never started writing"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    [partial] = store.list_partial()
    assert store.list() == []

    listed = cli("backups", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert (row["key"], row["complete"], row["rows"]) == (partial.key, False, None)
    assert row["problem"].startswith("unfinished upload (last written ")
    assert "killed, or still running" in row["problem"]
    table = cli("backups").stdout
    assert "NOT RESTORABLE: unfinished upload" in table
    refused = cli("restore", "--file", keys.parse_key(partial.key).name, "--confirm", fresh_db.database)
    assert refused.returncode == 1
    assert f"Backup {keys.parse_key(partial.key).name} is not restorable: unfinished upload" in refused.stderr

    fresh = cli("prune", "--apply")  # written to a moment ago: it may be a running backup, so it stays
    assert fresh.returncode == 0, fresh.stderr
    assert "removed" not in fresh.stdout.split("kept")[0] and store.list_partial() == [partial]

    old = time.time() - DAY_AFTER.total_seconds()
    os.utime(partial.handle, (old, old))  # a day later
    swept = cli("prune", "--apply")
    assert swept.returncode == 0, swept.stderr
    assert f"removed unfinished upload of {partial.key} started " in swept.stdout
    assert store.list_partial() == [] and not Path(partial.handle).exists()
    assert catalog.list_backups(store, include_partial=True) == []  # what `backups --json` lists (asserted above)


# ------------------------------------------------------------------------------------------------ S3 stopped


def test_s3_stopped_mid_backup_names_the_store_then_prune_aborts_the_upload(fresh_db, tmp_path, monkeypatch):
    import boto3

    # SeaweedFS takes its admin identity from these; boto3's default session (the readiness probe) caches the first
    # credentials it saw, so use the same ones as the session's s3_server fixture.
    creds = {"AWS_ACCESS_KEY_ID": "test-access-key", "AWS_SECRET_ACCESS_KEY": "test-secret-key-do-not-log",
             "AWS_REGION": "us-east-1"}
    for name, value in creds.items():
        monkeypatch.setenv(name, value)
    _bulk(fresh_db, 150_000)
    workdir = tmp_path / "weed"
    workdir.mkdir()
    server = _start_seaweedfs(str(workdir))

    def client(endpoint):
        return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")

    try:
        s3 = client(server.endpoint)
        s3.create_bucket(Bucket="backups")
        s3.delete_object(Bucket="readiness-probe", Key="probe")  # so a restart's readiness probe can recreate it
        s3.delete_bucket(Bucket="readiness-probe")
        store = S3Store("backups", "prod", client=s3)
        failed: list[BaseException] = []

        def run():
            try:
                backup_database(fresh_db, store, reason="nightly")
            except BaseException as exc:  # handed to the test thread
                failed.append(exc)

        worker = threading.Thread(target=run)
        worker.start()
        deadline = time.monotonic() + 120
        while not s3.list_multipart_uploads(Bucket="backups").get("Uploads"):
            assert worker.is_alive(), f"the backup ended before the server could be stopped: {failed}"
            assert time.monotonic() < deadline, "no multipart upload started"
            time.sleep(0.02)
        os.killpg(server.proc.pid, signal.SIGKILL)  # the S3 server dies mid-upload
        server.proc.wait()
        worker.join(300)
        assert not worker.is_alive()
        [err] = failed
        assert isinstance(err, StoreError), repr(err)
        assert str(err).startswith(f"The backup store {store.url} could not upload a part of s3://backups/prod/backup-")
        assert f"cannot connect to the S3 endpoint {server.endpoint} (is it running?)" in str(err)
        assert "Next: check that the S3 endpoint is up" in str(err)

        server = _start_seaweedfs(str(workdir))  # the same data, new ports
        store = S3Store("backups", "prod", client=client(server.endpoint))
        [partial] = store.list_partial()  # the upload the dead server could not abort
        assert partial.key.startswith("backup-") and partial.key.endswith("-nightly.sql.zst")
        assert catalog.list_backups(store) == []  # nothing incomplete looks like a backup
        [entry] = catalog.list_backups(store, include_partial=True)
        assert not entry.complete and entry.problem.startswith("unfinished upload")
        kept = prune_backups(store, RetentionPolicy(), dry_run=False)
        assert kept.partial == [] and store.list_partial() == [partial]  # young: maybe still running
        swept = prune_backups(store, RetentionPolicy(), dry_run=False, now=partial.started + DAY_AFTER)
        assert swept.swept == [f"{partial.key} (unfinished upload)"]
        assert store.list_partial() == [] and store.list() == []

        store.put_stream("big.bin", iter([os.urandom(1024 * 1024)] * 64))  # more than any socket buffer holds
        with store.open_read("big.bin") as body:
            assert len(body.read(1024 * 1024)) == 1024 * 1024
            os.killpg(server.proc.pid, signal.SIGKILL)  # the server dies while a restore reads
            server.proc.wait()
            with pytest.raises(StoreError) as err:
                while body.read(1024 * 1024):
                    pass
        assert str(err.value).startswith(f"The backup store {store.url} could not read s3://backups/prod/big.bin: ")
    finally:
        try:
            os.killpg(server.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        server.proc.wait()


def test_orphan_sidecars_are_swept_once_old(fresh_db, any_store):
    _small(fresh_db)
    made = backup_database(fresh_db, any_store, reason="pre-migration").manifest  # pinned when taken
    any_store.delete(made.key)  # e.g. a prune interrupted after the data object went (or a hand deletion)
    catalog.record_verification(any_store, made.key, {"ok": True})
    assert catalog.list_backups(any_store) == []
    now = dt.datetime.now(UTC)
    assert prune_backups(any_store, RetentionPolicy(), dry_run=False, now=now).orphans == []
    swept = prune_backups(any_store, RetentionPolicy(), dry_run=False, now=now + DAY_AFTER)
    assert sorted(swept.swept) == sorted(keys_ for keys_ in (keys.manifest_key(made.key), keys.pin_key(made.key),
                                                             keys.verified_key(made.key)))
    assert any_store.list() == []


def test_a_sink_failing_on_the_final_flush_raises_instead_of_hanging():
    """zstd keeps data until its flush, so a full disk often fails only there; close() used to wait forever."""
    from rusing_ops.backups.streams import CompressingWriter

    def sink(data: bytes) -> None:
        raise StoreError("The backup store file:///x could not write y: the disk is full.")

    out = CompressingWriter(sink, "zstd")
    out.write(b"small enough to stay in the compressor's buffer")
    raised: list[BaseException] = []
    closer = threading.Thread(target=lambda: raised.append(pytest.raises(StoreError, out.close).value))
    closer.start()
    closer.join(60)  # a guard against the hang, not a timing assertion
    assert not closer.is_alive(), "close() hangs when the sink fails on the final flush"
    assert [str(e) for e in raised] == ["The backup store file:///x could not write y: the disk is full. Nothing "
                                        "was changed."]


def test_kill_9_mid_s3_backup_leaves_an_open_upload_listed_then_aborted(cli, fresh_db, s3_store):
    _bulk(fresh_db, 150_000)
    env = {**cli.env, "RUSING_BACKUP_URL": s3_store.url}  # AWS_ENDPOINT_URL and keys: the s3_server fixture's
    proc = subprocess.Popen(cli.command("backup", "--reason", "nightly"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while not s3_store.list_partial():  # the first 8 MiB part is uploaded: kill it there
            assert proc.poll() is None, f"the backup finished before it could be killed: {proc.stderr.read()[-500:]!r}"
            assert time.monotonic() < deadline, "no multipart upload started"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    [partial] = s3_store.list_partial()
    assert s3_store.list() == []

    listed = cli("backups", "--json", RUSING_BACKUP_URL=s3_store.url)
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert (row["key"], row["complete"]) == (partial.key, False) and row["problem"].startswith("unfinished upload")
    assert prune_backups(s3_store, RetentionPolicy(), dry_run=False).partial == []  # young: maybe running, kept
    swept = prune_backups(s3_store, RetentionPolicy(), dry_run=False, now=partial.started + DAY_AFTER)
    assert swept.swept == [f"{partial.key} (unfinished upload)"]
    assert s3_store.list_partial() == [] and catalog.list_backups(s3_store, include_partial=True) == []
