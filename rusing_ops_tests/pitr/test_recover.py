"""Point-in-time recovery on a real MariaDB writing ROW binlogs: restore to a second, skip a statement, undo it."""

from __future__ import annotations

import datetime as dt

import pytest

from rusing_ops.core.errors import ConfirmMismatch
from rusing_ops.pitr import archive, recover, replay

from .conftest import rows


def at(epoch: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def test_the_backup_records_its_binlog_position(history):
    [entry] = [e for e in __import__("rusing_ops.backups.catalog", fromlist=["x"]).list_backups(history.store)]
    point = entry.manifest.snapshot
    assert point["kind"] == "binlog" and point["file"].startswith("mariadb-bin.") and point["position"] > 4


def test_restore_to_one_second_before_the_delete_gives_the_rows_just_before_it(history):
    db = history.url.database
    out = recover.restore_to(history.url, history.store, replay.Stop(time=at(history.t2 - 1)), confirm=db)
    assert out["backup"] == history.backup_key
    assert rows(history.server, db) == history.before_delete
    assert out["pre_restore_backup"]  # the damaged state was kept


def test_replay_everything_but_the_bad_delete_keeps_the_later_writes(history):
    db = history.url.database
    out = recover.restore_to(history.url, history.store, replay.Stop(), confirm=db, skip=[history.delete_gtid])
    assert [s.split(" at ")[0] for s in out["skipped"]] == [history.delete_gtid]
    assert rows(history.server, db) == history.without_delete


def test_dry_run_shows_the_plan_and_changes_nothing(history):
    db = history.url.database
    out = recover.restore_to(history.url, history.store, replay.Stop(), confirm=None, dry_run=True,
                             skip=[history.delete_gtid])
    assert out["dry_run"] and out["backup"] == history.backup_key
    assert out["transactions"] == 4  # T1 insert, T1 update, T3 insert, T3 update (the DELETE is skipped)
    assert out["skipped"][0].startswith(history.delete_gtid) and "delete on" in out["skipped"][0]
    assert rows(history.server, db) == history.final


def test_restore_to_a_time_needs_the_confirm(history):
    with pytest.raises(ConfirmMismatch):
        recover.restore_to(history.url, history.store, replay.Stop(), confirm="wrong")
    assert rows(history.server, history.url.database) == history.final


def test_undo_of_the_delete_alone_restores_exactly_its_rows(history):
    db = history.url.database
    since = until = at(history.t2)
    preview = recover.undo(history.url, history.store, since, until)
    assert preview["applied"] is False and preview["transactions"] == 1
    assert len(preview["changes"]) == len(history.deleted)  # one line per deleted row, with its values
    assert all(line.startswith("DELETE FROM") and " WHERE @1=" in line for line in preview["changes"])
    assert rows(history.server, db) == history.final  # a preview changes nothing
    done = recover.undo(history.url, history.store, since, until, confirm=db)
    assert done["applied"] and done["pre_undo_backup"]
    assert rows(history.server, db) == sorted(history.final + history.deleted)


def test_a_gap_in_the_archive_is_named_and_refused(history):
    from .conftest import run

    db = history.url.database
    server = archive.read_server_log(history.url).server_key
    before = len(archive.segments(history.store, server))
    for n in range(2):  # two more passes after the history: at least two more segments
        run(history.server, db, f"INSERT INTO payments (amount, note) VALUES (5.00,'pass-{n}')")
        archive.archive_once(history.url, history.store)
    segs = archive.segments(history.store, server)
    assert len(segs) >= before + 2
    middle = segs[before]  # the first segment after the history: a hole between T3 and the last pass
    history.store.delete(middle.key)
    history.store.delete(middle.key[: -len(".binlog")] + ".json")
    st = archive.status(history.url, history.store)
    assert st.gaps and all(middle.file in gap or "missing" in gap for gap in st.gaps)
    with pytest.raises(replay.ReplayRefused, match="has a gap"):
        recover.restore_to(history.url, history.store, replay.Stop(), confirm=db)
    assert len(rows(history.server, db)) == len(history.final) + 2  # nothing was restored
    # before the gap, recovery still works
    recover.restore_to(history.url, history.store, replay.Stop(time=at(history.t2 - 1)), confirm=db)
    assert rows(history.server, db) == history.before_delete


def test_the_archive_survives_a_rotation_and_a_server_restart(history):
    from .conftest import run

    db = history.url.database
    run(history.server, db, "FLUSH BINARY LOGS", "INSERT INTO payments (amount, note) VALUES (1.00,'after-rotate')")
    history.server.restart()
    run(history.server, db, "INSERT INTO payments (amount, note) VALUES (2.00,'after-restart')")
    archive.archive_once(history.url, history.store)
    st = archive.status(history.url, history.store)
    assert st.gaps == [] and st.lag_s == 0.0 and st.files >= 2
    live = rows(history.server, db)
    recover.restore_to(history.url, history.store, replay.Stop(), confirm=db, pre_restore_backup=False)
    assert rows(history.server, db) == live


def test_status_reports_format_and_lag(history):
    from .conftest import run

    st = archive.status(history.url, history.store)
    assert st.binlog_format == "ROW" and st.lag_s == 0.0 and st.gaps == []
    run(history.server, history.url.database, "INSERT INTO payments (amount, note) VALUES (3.00,'unarchived')")
    st = archive.status(history.url, history.store)
    assert st.lag_s is not None and st.lag_s >= 0 and st.server != st.last


def test_the_backup_position_matches_its_snapshot_under_concurrent_writes(binlog_server, tmp_path):
    """A writer commits all through the backup: backup + replay from the recorded position must equal the live
    rows exactly (a position too early replays rows twice and fails; too late loses rows)."""
    import threading
    import time
    import uuid

    from rusing_ops.backups.dump import backup_database
    from rusing_ops.core.dburl import parse_database_url
    from rusing_ops.core.store import LocalStore

    from .conftest import run

    name = f"pitr_cw_{uuid.uuid4().hex[:6]}"
    binlog_server.create_database(name)
    run(binlog_server, name, "CREATE TABLE payments (id INT PRIMARY KEY AUTO_INCREMENT, amount DECIMAL(10,2) NOT NULL, "
                             "note VARCHAR(100))",
        "CREATE TABLE other (id INT PRIMARY KEY AUTO_INCREMENT, v INT)",
        *[f"INSERT INTO other (v) VALUES ({i})" for i in range(200)])
    url = parse_database_url(binlog_server.url(name))
    store = LocalStore(tmp_path / "b")
    stop = threading.Event()
    written = []

    def writer():
        conn = binlog_server.socket_connection(database=name)
        with conn.cursor() as cur:
            n = 0
            while not stop.is_set():
                cur.execute("INSERT INTO payments (amount, note) VALUES (%s, %s)", (n % 100, f"w{n}"))
                cur.execute("UPDATE other SET v = v + 1 WHERE id = %s", (n % 200 + 1,))
                n += 1
            written.append(n)
        conn.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        deadline = time.monotonic() + 60
        while len(rows(binlog_server, name)) < 5:  # the writer is going (or died: then written is empty)
            assert t.is_alive() and time.monotonic() < deadline, "the concurrent writer never wrote 5 rows"
            time.sleep(0.05)
        backup = backup_database(url, store, reason="nightly", workers=2)  # two connections, one snapshot
        archive.archive_once(url, store)
        time.sleep(0.5)
    finally:
        stop.set()
        t.join()
    archive.archive_once(url, store)
    assert 0 < backup.manifest.tables["payments"].rows < written[0]
    live_payments = rows(binlog_server, name)
    conn = binlog_server.socket_connection(database=name)
    with conn.cursor() as cur:
        cur.execute("SELECT id, v FROM other ORDER BY id")
        live_other = cur.fetchall()
    conn.close()
    target = f"{name}_copy"
    recover.restore_to(url, store, replay.Stop(), confirm=target, database=target, source=name,
                       pre_restore_backup=False)
    assert rows(binlog_server, target) == live_payments
    conn = binlog_server.socket_connection(database=target)
    with conn.cursor() as cur:
        cur.execute("SELECT id, v FROM other ORDER BY id")
        assert cur.fetchall() == live_other
    conn.close()


def test_archive_retention_follows_the_oldest_retained_backup(history):
    """Files wholly older than the oldest backup's position go; the file holding it stays."""
    from rusing_ops.backups import catalog, keys
    from rusing_ops.backups.dump import backup_database

    from .conftest import run

    db = history.url.database
    run(history.server, db, "FLUSH BINARY LOGS", "INSERT INTO payments (amount, note) VALUES (4.00,'x')")
    archive.archive_once(history.url, history.store)
    newer = backup_database(history.url, history.store, reason="nightly")
    server = archive.read_server_log(history.url).server_key
    first_file = archive.segments(history.store, server)[0].file
    assert archive.prune(history.store, server, archive.oldest_backup_position(history.store), apply=True) == []
    for entry in catalog.list_backups(history.store):  # retention deleted the older backup
        if entry.key != newer.manifest.key:
            history.store.delete(keys.manifest_key(entry.key))
            history.store.delete(entry.key)
    oldest = archive.oldest_backup_position(history.store)
    assert oldest == archive.backup_position(newer.manifest) and oldest[0] != first_file
    gone = archive.prune(history.store, server, oldest, apply=True)
    assert gone and any(f"/{first_file}/" in key for key in gone)
    assert all(archive.file_number(key.split("/")[2]) < archive.file_number(oldest[0]) for key in gone)
    kept = {s.file for s in archive.segments(history.store, server)}
    assert oldest[0] in kept and all(archive.file_number(f) >= archive.file_number(oldest[0]) for f in kept)


def test_restore_to_a_gtid_or_a_position_stops_there(history):
    """--to-gtid of the transaction before the DELETE, and --to-position of its end, both give the rows before it."""
    db = history.url.database
    server = archive.read_server_log(history.url).server_key
    start = archive.backup_position(__import__("rusing_ops.backups.catalog", fromlist=["x"])
                                    .list_backups(history.store)[0].manifest)
    whole = replay.plan(history.store, server, db, start, replay.Stop())
    groups = whole.groups
    before = groups[[g.gtid for g in groups].index(history.delete_gtid) - 1]
    before_file = next(seg.file for seg, _h, gs in whole.files if before in gs)
    plan = recover.restore_to(history.url, history.store, replay.Stop(gtid=before.gtid), confirm=db, dry_run=True)
    assert plan["last"].startswith(before.gtid) and plan["transactions"] == 2
    recover.restore_to(history.url, history.store, replay.parse_stop(to_gtid=before.gtid), confirm=db)
    assert rows(history.server, db) == history.before_delete
    out = recover.restore_to(history.url, history.store, replay.parse_stop(to_position=f"{before_file}:{before.end_pos}"),
                             confirm=db, pre_restore_backup=False)
    assert out["backup"] == history.backup_key  # not the newer pre-restore backup: it stands after that position
    assert rows(history.server, db) == history.before_delete
    with pytest.raises(replay.ReplayRefused, match="is not in the binlog archive"):
        recover.restore_to(history.url, history.store, replay.Stop(gtid="0-999-1"), confirm=db, dry_run=True)


def test_encrypted_archive_with_a_second_copy_survives_a_damaged_primary(binlog_server, tmp_path):
    """With recipients set the segments hold no readable value; a damaged primary segment is read from the copy
    (and said); without the identity a replay refuses in one line."""
    import pyrage

    from rusing_ops.backups.protect import Protection, protect

    from .conftest import make_history

    ident = pyrage.x25519.Identity.generate()
    h = make_history(binlog_server, tmp_path, protection=Protection(
        recipients=str(ident.to_public()), identity=str(ident), copy_url=str(tmp_path / "copy")))
    server = archive.read_server_log(h.url).server_key
    segs = archive.segments(h.store, server)
    assert segs and all(s.encryption for s in segs)
    for seg in segs:
        assert b"t1-e" not in h.store.get_bytes(seg.key) and b"payments" not in h.store.get_bytes(seg.key)
    damaged = segs[-1]
    data = bytearray(h.store.get_bytes(damaged.key))
    data[len(data) // 2] ^= 0xFF
    h.store.put_bytes(damaged.key, bytes(data))
    said = []
    recover.restore_to(h.url, h.store, replay.Stop(), confirm=h.url.database, skip=[h.delete_gtid], log=said.append)
    assert rows(binlog_server, h.url.database) == h.without_delete
    assert any("read from the copy" in line and damaged.key in line for line in said)
    h.store.identity = None
    protect(h.store, Protection(recipients=str(ident.to_public()), copy_url=str(tmp_path / "copy")))
    with pytest.raises(Exception, match="RUSING_BACKUP_IDENTITY is not set"):
        recover.restore_to(h.url, h.store, replay.Stop(), confirm=h.url.database, dry_run=True)


def test_an_archive_that_began_at_the_backup_and_holds_nothing_yet_is_not_a_gap(binlog_server, tmp_path):
    """Backup, then an archive pass with nothing logged since: no gap, no lag, and a restore to now is the backup."""
    import uuid

    from rusing_ops.backups.dump import backup_database
    from rusing_ops.core.dburl import parse_database_url
    from rusing_ops.core.store import LocalStore

    from .conftest import run

    name = f"pitr_q_{uuid.uuid4().hex[:6]}"
    binlog_server.create_database(name)
    run(binlog_server, name, "CREATE TABLE payments (id INT PRIMARY KEY, amount DECIMAL(10,2) NOT NULL, "
                             "note VARCHAR(100))", "INSERT INTO payments VALUES (1, 9.99, 'only')")
    url, store = parse_database_url(binlog_server.url(name)), LocalStore(tmp_path / "b")
    backup = backup_database(url, store, reason="nightly")
    assert archive.archive_once(url, store) == []  # nothing was logged since the backup (one worker, one server)
    st = archive.status(url, store, needed=archive.backup_position(backup.manifest))
    assert not any("not in the archive" in g for g in st.gaps)
    out = recover.restore_to(url, store, replay.Stop(), confirm=name, pre_restore_backup=False)
    assert out["backup"] == backup.manifest.key and rows(binlog_server, name) == [(1, "9.99", "only")]


@pytest.mark.parametrize("text, utc", [
    ("2026-12-01 14:02:00", "2026-12-01 14:02:00"), ("2026-12-01T14:02:00Z", "2026-12-01 14:02:00"),
    ("2026-12-01 09:02:00 America/Toronto", "2026-12-01 14:02:00"),  # a zone name with a 'T' in it
    ("2026-12-01 14:02:00+01:00", "2026-12-01 13:02:00"), ("2026-12-01 14:02", "2026-12-01 14:02:00")])
def test_times_are_utc_unless_a_zone_is_given(text, utc):
    assert f"{replay.parse_time(text):%Y-%m-%d %H:%M:%S}" == utc


@pytest.mark.parametrize("text, said", [("not a time", "is not a time like 'YYYY-MM-DD HH:MM:SS'"),
                                         ("2026-12-01 14:02:00 Mars/Base", "'Mars/Base' in")])
def test_a_bad_time_is_named(text, said):
    with pytest.raises(Exception, match=said):
        replay.parse_time(text)


def test_when_a_pass_is_due_and_which_settings_defeat_recovery():
    """The sensor's rule and the settings check, as library functions (no Dagster, no server)."""
    current = archive.Status("s", last=("f.000001", 900), server=("f.000001", 900), lag_s=0.0, binlog_format="ROW")
    behind = archive.Status("s", last=("f.000001", 900), server=("f.000001", 1200), lag_s=12.0, binlog_format="ROW")
    assert "current" in archive.pass_due(current, last_pass=0, interval_s=60, now=1000)
    assert archive.pass_due(behind, last_pass=900, interval_s=60, now=1000) is None
    assert "next pass is due" in archive.pass_due(behind, last_pass=980, interval_s=60, now=1000)
    assert archive.settings_problems(behind, 60) == []
    bad = archive.Status("s", binlog_format="MIXED", expire_s=30)
    assert [p.split(" ")[0] for p in archive.settings_problems(bad, 60)] == ["binlog_format", "binlogs"]
