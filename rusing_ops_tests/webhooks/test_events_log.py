"""webhook_events_log access on the real MariaDB: the table as the app creates it, our index, keyset reads."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from rusing_ops.core.errors import ConfigError
from rusing_ops.webhooks import events_log as log
from rusing_ops_tests.conftest import FIXTURES, admin_connection

from .conftest import insert_row

COLUMNS_SQL = ("SELECT COLUMN_NAME, ORDINAL_POSITION, COLUMN_DEFAULT, IS_NULLABLE, COLUMN_TYPE, EXTRA "
               "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = 'webhook_events_log' "
               "ORDER BY ORDINAL_POSITION")


def _fixture_ddl() -> str:
    sql = (FIXTURES / "drizzle-rusing" / "drizzle" / "0000_initial_schema.sql").read_text()
    return re.search(r"CREATE TABLE `webhook_events_log` \(.*?\n\);", sql, re.DOTALL).group(0)


def test_ensure_creates_the_apps_table_exactly_plus_our_index_and_audit(engine, fresh_db, server_url):
    ref = f"{fresh_db.database}__ref"
    admin = admin_connection(server_url)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{ref}`")
        cur.execute(f"USE `{ref}`")
        cur.execute(_fixture_ddl())
        cur.execute(COLUMNS_SQL, (ref,))
        expected = cur.fetchall()
        cur.execute(COLUMNS_SQL, (fresh_db.database,))
        got = cur.fetchall()
    assert got == expected and len(got) == 10
    with engine.connect() as conn:
        assert log.index_exists(conn, log.STATUS_INDEX)
        assert log.table_exists(conn, log.AUDIT_TABLE)
    assert log.ensure(engine, fresh_db) == []  # second call: nothing to do


def test_ensure_adds_only_the_index_to_an_existing_app_table(fresh_db, db_conn):
    from rusing_ops.core.database import create_engine

    with db_conn.cursor() as cur:
        cur.execute(log.APP_TABLE_DDL)
        cur.execute("CREATE INDEX `webhook_events_log_status_created_idx` ON `webhook_events_log` (`status`,`createdAt`)")
    insert_row(db_conn, "evt_keep1", status="processed")
    eng = create_engine(fresh_db)
    assert log.ensure(eng, fresh_db) == [f"webhook_events_log.{log.STATUS_INDEX}", log.AUDIT_TABLE]
    with db_conn.cursor() as cur:
        cur.execute("SELECT stripeEventId, status FROM webhook_events_log")
        assert cur.fetchall() == (("evt_keep1", "processed"),)
    eng.dispose()


@pytest.mark.parametrize("bad", ["evt_1' OR '1'='1", "evt_", "EVT_abc", "ch_123", "evt_abc;DROP TABLE x", "evt_" + "a" * 300,
                                 " evt_abc", "evt_abc\n", None, 123])
def test_malformed_ids_are_refused(bad):
    with pytest.raises(ConfigError) as err:
        log.validate_event_id(bad)
    assert "is not a Stripe event id (expected evt_ followed by letters and digits); refused before any query was sent." \
        in str(err.value)


def test_keyset_reads_failed_and_stuck_rows_in_change_order(engine, db_conn):
    insert_row(db_conn, "evt_old", ago_s=300)
    insert_row(db_conn, "evt_mid", ago_s=200)
    insert_row(db_conn, "evt_dead", attempts=3, ago_s=150)
    insert_row(db_conn, "evt_new", ago_s=100)
    insert_row(db_conn, "evt_now", ago_s=0)  # same second as the read: left for the next tick
    insert_row(db_conn, "evt_ok", status="processed", ago_s=250)
    insert_row(db_conn, "evt_stuck", status="processing", ago_s=3600)
    insert_row(db_conn, "evt_busy", status="processing", ago_s=5)
    with engine.connect() as conn:
        first = log.read_after(conn, "failed", log.Position(), limit=2, max_attempts=log.MAX_ATTEMPTS)
        assert [r.stripe_event_id for r in first] == ["evt_old", "evt_mid"]
        nxt = log.read_after(conn, "failed", log.Position(first[-1].updated_ts, first[-1].id), limit=10,
                             max_attempts=log.MAX_ATTEMPTS)
        assert [r.stripe_event_id for r in nxt] == ["evt_new"]
        assert [r.stripe_event_id for r in log.list_stuck(conn, stuck_after_s=900, limit=10)] == ["evt_stuck"]
        assert log.count_status(conn, stuck_after_s=900) == {"failed": 5, "dead_lettered": 1, "stuck": 1}
        plan = conn.execute(sa.text(
            "EXPLAIN SELECT id FROM webhook_events_log FORCE INDEX (rusing_ops_status_updated_idx) WHERE status = 'failed' "
            "AND updatedAt >= FROM_UNIXTIME(1) AND NOT (updatedAt = FROM_UNIXTIME(1) AND id <= 0) "
            "ORDER BY updatedAt, id LIMIT 10")).mappings().one()
    assert plan["key"] == log.STATUS_INDEX and plan["type"] == "range"


def test_reset_never_reopens_a_processed_or_busy_row(engine, db_conn):
    insert_row(db_conn, "evt_done", status="processed", attempts=1)
    insert_row(db_conn, "evt_busy", status="processing", attempts=1, ago_s=5)
    insert_row(db_conn, "evt_dead", status="failed", attempts=3)
    with engine.connect() as conn:
        assert log.reset_for_retry(conn, "evt_done", stuck_after_s=900) == 0
        assert log.reset_for_retry(conn, "evt_busy", stuck_after_s=900) == 0
        assert log.reset_for_retry(conn, "evt_dead", stuck_after_s=900) == 1
        assert log.get_row(conn, "evt_dead").attempts == 0
        log.audit(conn, actor="test", action="reset_attempts", outcome="done", event_id="evt_dead", detail={"a": 3})
        assert log.audit_rows(conn, "evt_dead")[0]["detail"] == '{"a": 3}'
