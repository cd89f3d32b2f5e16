"""A restore that stops after it already changed something says so: the repair of an earlier interrupted swap, the
pre-restore backup it wrote, and a RENAME whose undo failed too (both causes, not the last one only)."""

from __future__ import annotations

import os
import threading

import pymysql
import pytest

from rusing_ops.backups.restore import RestoreRefused, repair, restore_backup
from rusing_ops.backups.swap import SwapFailed, interrupted_swaps
from rusing_ops.core.errors import OpsError
from rusing_ops_tests.backups.conftest import snapshot
from rusing_ops_tests.faults import test_crashes as crashes
from rusing_ops_tests.faults.test_crashes import RESTORE, kill9, library, paused, rows, wait_for

swap_case = crashes.swap_case  # the fixtures: the swap case, and no paused process outlives its test
_no_process_outlives_its_test = crashes._no_process_outlives_its_test


def test_a_refusal_after_the_repair_of_an_earlier_swap_says_the_repair_changed_the_target(
        swap_case, fresh_db, database_url_str, tmp_path):
    """The repair finishes a killed swap (the target now holds that restore's copy); a refusal later in this
    restore used to say "Nothing was changed" (changed=False)."""
    store, key, backed_up, _live = swap_case
    kill9(paused(library(RESTORE, database_url_str, str(store.root), key, "0"), os.environ,
                 "swap-after-rename", tmp_path))

    def replay_fails(_staging: str) -> None:  # what point-in-time recovery runs in the staging database
        raise RestoreRefused("The binlog replay stopped: the archive has a gap. The target database was not touched.")

    with pytest.raises(RestoreRefused) as refused:
        restore_backup(fresh_db, store, key, pre_restore_backup=False, after_stage=replay_fails)
    text = str(refused.value)
    assert refused.value.changed is True
    assert text.startswith(f"First, an earlier restore's interrupted swap into `{fresh_db.database}` was repaired: "
                           "finished the interrupted swap: the target holds the restored copy (journal "), text
    assert "After that repair: The binlog replay stopped" in text
    assert "Nothing was changed" not in text
    assert snapshot(fresh_db, fresh_db.database) == backed_up  # what the repair did is what the error says
    assert interrupted_swaps(fresh_db, fresh_db.database) == []


def test_a_refused_rename_after_the_pre_restore_backup_names_the_backup(swap_case, fresh_db, db_conn):
    """The live database has a VIEW where the backup has a table: the RENAME is refused after the pre-restore
    backup was written; the error used to say only "unchanged" (changed=False) and not name the backup."""
    store, key, _backed_up, _live = swap_case
    with db_conn.cursor() as cur:
        cur.execute("RENAME TABLE `empty_table` TO `empty_table_v2`")
        cur.execute("CREATE VIEW `empty_table` AS SELECT `id` FROM `empty_table_v2`")
    before = snapshot(fresh_db, fresh_db.database)
    with pytest.raises(SwapFailed) as failed:
        restore_backup(fresh_db, store, key, pre_restore_backup=True)
    [pre_key] = [o.key for o in store.list("") if "-pre-restore." in o.key and o.key.endswith((".zst", ".gz"))]
    text = str(failed.value)
    assert failed.value.changed is True
    assert f"RENAME TABLE into `{fresh_db.database}` failed (Table 'empty_table' already exists)" in text
    assert f"The pre-restore backup {pre_key} was written before the refusal and is kept" in text
    assert "Nothing was changed" not in text
    assert snapshot(fresh_db, fresh_db.database) == before


def test_a_rename_whose_undo_fails_reports_both_causes_and_the_repair_undoes_it(swap_case, fresh_db):
    """The swap's connection dies during its RENAME (killed while the RENAME waits for a table another session
    reads): the RENAME fails and so does putting the dropped triggers back on the dead connection. The error used to
    be the undo's alone; now it names both, keeps the journal, and `repair` puts the target back as it was."""
    store, key, _backed_up, live = swap_case
    reader = pymysql.connect(**fresh_db.pymysql_kwargs(), autocommit=False)
    outcome: dict = {}

    def run():
        try:
            restore_backup(fresh_db, store, key, pre_restore_backup=False)
        except OpsError as exc:
            outcome["error"] = exc
        except Exception as exc:  # the old behaviour: the undo's raw error, the RENAME's cause lost
            outcome["raw"] = exc

    try:
        with reader.cursor() as cur:  # a table without triggers: the DROP TRIGGERs pass, the RENAME waits
            cur.execute("BEGIN")
            cur.execute("SELECT COUNT(*) FROM `empty_table`")
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        [(waiting,)] = wait_for(lambda: rows(fresh_db, "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO "
                                                      "LIKE 'RENAME TABLE %%' AND STATE LIKE '%%metadata lock%%'"),
                                "the swap's RENAME waiting for the reader's table")
        rows(fresh_db, f"KILL CONNECTION {int(waiting)}")
        thread.join(120)
    finally:
        reader.rollback()
        reader.close()
    assert not thread.is_alive()
    assert "raw" not in outcome, repr(outcome.get("raw"))
    error = outcome["error"]
    assert isinstance(error, SwapFailed) and error.changed is True
    text = str(error)
    assert text.startswith(f"RENAME TABLE into `{fresh_db.database}` failed ("), text
    assert "and undoing its preparation failed too (" in text
    assert "the triggers dropped for the rename (`payments_default_fx`" in text
    assert f"run `rusing-ops db restore --repair --confirm {fresh_db.database}`" in text
    assert snapshot(fresh_db, fresh_db.database)["triggers"] != live["triggers"]  # the damage it names
    assert [state for _db, state in interrupted_swaps(fresh_db, fresh_db.database)] == ["prepared"]
    [line] = repair(fresh_db, fresh_db.database)
    assert line.startswith("undid the interrupted swap"), line
    assert snapshot(fresh_db, fresh_db.database) == live
    assert rows(fresh_db, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE %s",
                (fresh_db.database + "\\_\\_%",)) == []
