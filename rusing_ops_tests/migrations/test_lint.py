"""Destructive-change lint on genuine drizzle-kit output and on each statement kind it must catch."""

from __future__ import annotations

import pytest

from rusing_ops.migrations.folder import read_folder
from rusing_ops.migrations.lint import lint_migrations, lint_statement, narrowing

from .conftest import FAILING_RENAME, fixture_dir


def test_genuine_destructive_migration_is_flagged_statement_by_statement():
    findings = [str(f) for f in lint_migrations(read_folder(fixture_dir("drizzle-rusing/drizzle")))]
    assert findings == [
        "0004_drop_hourly_rate_rename_path_courses statement 1: DROP TABLE certificates (every row in it is deleted)",
        "0004_drop_hourly_rate_rename_path_courses statement 2: RENAME TABLE learning_path_courses -> "
        "learning_path_items (the running app still uses the old name)",
        "0004_drop_hourly_rate_rename_path_courses statement 5: DROP PRIMARY KEY learning_path_items (uniqueness lifted "
        "until re-added; refused on an AUTO_INCREMENT key (ER_WRONG_AUTO_KEY 1075))",
        "0004_drop_hourly_rate_rename_path_courses statement 9: DROP COLUMN coaches.hourlyRateCents (its data is deleted)",
    ]
    failing = lint_migrations(read_folder(FAILING_RENAME / "drizzle"))
    assert [(f.statement, f.kind) for f in failing] == [(1, "DROP TABLE"), (2, "RENAME TABLE"), (3, "DROP INDEX"),
                                                        (6, "DROP PRIMARY KEY"), (11, "DROP COLUMN")]


BEFORE = {"users": {"columns": {
    "timezone": {"type": "varchar(64)", "notNull": False},
    "age": {"type": "int", "notNull": True},
    "bio": {"type": "text", "notNull": False},
    "price": {"type": "decimal(10,2)", "notNull": True},
    "status": {"type": "enum('a','b','c')", "notNull": True},
}}}


@pytest.mark.parametrize("sql, expected", [
    ("DROP TABLE `users`;", [("DROP TABLE", "users")]),
    ("DROP INDEX `users_email_idx` ON `users`;", [("DROP INDEX", "users_email_idx")]),
    ("ALTER TABLE `users` DROP INDEX `users_email_unique`;", [("DROP INDEX", "users.users_email_unique")]),
    ("ALTER TABLE `users` DROP COLUMN `bio`;", [("DROP COLUMN", "users.bio")]),
    ("RENAME TABLE `a` TO `b`, `c` TO `d`;", [("RENAME TABLE", "a -> b"), ("RENAME TABLE", "c -> d")]),
    ("ALTER TABLE `users` RENAME COLUMN `bio` TO `about`;", [("RENAME COLUMN", "users.bio -> about")]),
    ("ALTER TABLE `users` RENAME TO `people`;", [("RENAME TABLE", "users -> people")]),
    ("ALTER TABLE `users` MODIFY `timezone` varchar(32);", [("MODIFY/CHANGE narrowing", "users.timezone")]),
    ("ALTER TABLE `users` MODIFY `timezone` varchar(128);", []),
    ("ALTER TABLE `users` MODIFY `timezone` varchar(64) NOT NULL;", [("MODIFY/CHANGE narrowing", "users.timezone")]),
    ("ALTER TABLE `users` CHANGE `age` `age` tinyint NOT NULL;", [("MODIFY/CHANGE narrowing", "users.age")]),
    ("ALTER TABLE `users` MODIFY `age` bigint NOT NULL;", []),
    ("ALTER TABLE `users` MODIFY `bio` varchar(255);", [("MODIFY/CHANGE narrowing", "users.bio")]),
    ("ALTER TABLE `users` MODIFY `price` decimal(8,2) NOT NULL;", [("MODIFY/CHANGE narrowing", "users.price")]),
    ("ALTER TABLE `users` MODIFY `status` enum('a','b') NOT NULL;", [("MODIFY/CHANGE narrowing", "users.status")]),
    ("ALTER TABLE `users` MODIFY `nickname` varchar(10);", [("MODIFY/CHANGE", "users.nickname")]),
    ("TRUNCATE TABLE `users`;", [("TRUNCATE", "users")]),
    ("DELETE FROM `users`;", [("DELETE without WHERE", "users")]),
    ("DELETE FROM `users` WHERE `id` = 1;", []),
    ("UPDATE `users` SET `timezone` = 'UTC';", [("UPDATE without WHERE", "users")]),
    ("UPDATE `users` SET `timezone` = 'UTC' WHERE `timezone` IS NULL;", []),
    ("ALTER TABLE `users` ADD `x` int;", []),
    ("-- DROP TABLE users\nSELECT 1;", []),
])
def test_statement_kinds(sql, expected):
    assert [(kind, target) for kind, target, _ in lint_statement(sql, BEFORE)] == expected


def test_narrowing_reasons():
    assert narrowing("varchar(64)", "varchar(32)") == "shorter"
    assert narrowing("int", "int unsigned") == "signedness changes"
    assert narrowing("enum('a','b')", "enum('a')") == "enum values removed: ['b']"
    assert narrowing("datetime", "date") == "type changes from datetime to date"
    assert narrowing("int", "bigint") is None
