"""Validation and drift against the real MariaDB: silent on a freshly migrated database, precise on hand edits."""

from __future__ import annotations

import pytest

from rusing_ops.migrations.applier import apply_migrations
from rusing_ops.migrations.drift import canonical_check, canonical_default, canonical_type
from rusing_ops.migrations.validate import validate_schema

from .conftest import RUSING, fixture_dir, query, replay_drizzle_log


@pytest.fixture
def migrated(fresh_db, engine):
    apply_migrations(engine, fresh_db, fixture_dir("drizzle-rusing/drizzle"), no_backup=True, force=True)
    return fresh_db


def test_freshly_migrated_database_shows_no_drift(migrated, engine):
    report = validate_schema(engine, migrated, fixture_dir("drizzle-rusing/drizzle"))
    assert report.ok, report.lines()
    assert (report.snapshot, report.last_applied, report.pending, report.drift) == (
        "meta/0004_snapshot.json", "0004_drop_hourly_rate_rename_path_courses", [], [])


def test_database_migrated_by_drizzle_itself_shows_no_drift(fresh_db, engine):
    replay_drizzle_log(fresh_db, RUSING / "reference" / "migrator_query_log.jsonl", migrations=5)
    assert validate_schema(engine, fresh_db, fixture_dir("drizzle-rusing/drizzle")).ok


def test_hand_made_changes_are_each_named(migrated, engine):
    for sql in ["ALTER TABLE `users` ADD `nickname` varchar(40)",
                "ALTER TABLE `courses` ALTER `currency` SET DEFAULT 'EUR'",
                "ALTER TABLE `coaches` MODIFY `displayName` varchar(200) NULL",
                "ALTER TABLE `courses` DROP INDEX `courses_slug_unique`",
                "CREATE INDEX `users_email_idx` ON `users` (`email`)",
                "ALTER TABLE `refunds` MODIFY `amountCents` bigint NOT NULL",
                "CREATE VIEW `paid_purchases` AS SELECT `id` FROM `purchases`"]:
        query(migrated, sql)
    report = validate_schema(engine, migrated, fixture_dir("drizzle-rusing/drizzle"))
    assert not report.ok and report.folder_ok and report.migrations_ok
    assert sorted(str(d) for d in report.drift) == sorted([
        "table `users` column `nickname`: in the database but not in the snapshot (varchar(40))",
        "table `courses` column default `currency`: snapshot says CAD, database has EUR",
        "table `coaches` column notNull `displayName`: snapshot says true, database has false",
        "table `courses` unique index `courses_slug_unique`: in the snapshot but missing from the database "
        "(unique (slug))",
        "table `users` index `users_email_idx`: in the database but not in the snapshot (index on (email))",
        "table `refunds` column type `amountCents`: snapshot says int, database has bigint",
        "view `paid_purchases`: in the database but not in the snapshot (view)"])

def test_pending_migrations_are_pending_not_drift(fresh_db, engine):
    replay_drizzle_log(fresh_db, RUSING / "reference" / "migrator_query_log.jsonl", migrations=2)
    report = validate_schema(engine, fresh_db, fixture_dir("drizzle-rusing/drizzle"))
    assert report.drift == [] and report.snapshot == "meta/0001_snapshot.json"
    assert report.pending == ["0002_add_timezone_primary_coach", "0003_backfill_timezone_and_primary_coach",
                              "0004_drop_hourly_rate_rename_path_courses"]
    assert not report.migrations_ok and report.folder_ok


def test_empty_database_and_invalid_folder(fresh_db, engine, rusing_folder):
    (rusing_folder / "0002_add_timezone_primary_coach.sql").unlink()
    report = validate_schema(engine, fresh_db, rusing_folder)
    assert report.folder_errors[0].startswith("0002_add_timezone_primary_coach.sql: missing")
    assert report.drift_skipped == "no migration is applied yet"
    assert query(fresh_db, "SHOW TABLES") == []


@pytest.mark.parametrize("snapshot, live", [
    ("int", "int(11)"), ("tinyint", "tinyint(4)"), ("smallint", "smallint(6)"), ("boolean", "tinyint(1)"),
    ("bigint unsigned", "bigint(20) unsigned"), ("json", "longtext"), ("decimal(5,2)", "decimal(5,2)"),
    ("serial", "bigint(20) unsigned"), ("enum('a','b')", "enum('a','b')"),
])
def test_type_spellings(snapshot, live):
    assert canonical_type(snapshot) == canonical_type(live)


@pytest.mark.parametrize("snapshot, live", [
    ("(now())", "current_timestamp()"), ("'0.00'", "0.00"), (0, "0"), (False, "0"), (True, "1"),
    ("'America/Toronto'", "'America/Toronto'"), (None, "NULL"), (None, None), (60, "60"),
])
def test_default_spellings(snapshot, live):
    assert canonical_default(snapshot) == canonical_default(live)


def test_check_spelling():
    assert canonical_check("`enrollments`.`progressPercent` >= 0 AND `enrollments`.`progressPercent` <= 100") == \
        canonical_check("`progressPercent` >= 0 and `progressPercent` <= 100")


def test_views_by_columns_and_own_tables_ignored(migrated, engine):
    import json

    from rusing_ops.migrations.drift import compare, live_schema

    snapshot = json.loads((fixture_dir("drizzle-rusing/drizzle") / "meta" / "0004_snapshot.json").read_text())
    snapshot["views"] = {"paid_purchases": {"name": "paid_purchases", "columns": {"id": {}, "userId": {}},
                                            "definition": "select `id`, `userId` from `purchases`"}}
    query(migrated, "CREATE TABLE `rusing_ops_webhook_audit` (`id` int)")
    query(migrated, "CREATE VIEW `paid_purchases` AS SELECT `id`, `userId` FROM `purchases`")
    with engine.connect() as conn:
        assert compare(snapshot, live_schema(conn)) == []
        query(migrated, "CREATE OR REPLACE VIEW `paid_purchases` AS SELECT `id` FROM `purchases`")
        assert [str(d) for d in compare(snapshot, live_schema(conn))] == [
            "view `paid_purchases`: snapshot says columns (id, userId), database has columns (id)"]


def test_webhooks_own_index_is_not_drift_but_a_hand_made_one_is(migrated, engine):
    """The webhooks capability adds `rusing_ops_status_updated_idx` to the app's webhook_events_log for its
    keyset cursor; validation must stay silent about it, and still name an index someone added by hand."""
    from rusing_ops.webhooks import events_log

    events_log.ensure(engine, migrated)
    assert validate_schema(engine, migrated, fixture_dir("drizzle-rusing/drizzle")).ok
    query(migrated, "CREATE INDEX `hand_idx` ON `webhook_events_log` (`eventType`)")
    drift = validate_schema(engine, migrated, fixture_dir("drizzle-rusing/drizzle")).drift
    assert [(d.table, d.name) for d in drift] == [("webhook_events_log", "hand_idx")]
