"""Fixtures for the backups tests: a database holding every column type the app uses, and ways to compare two."""

from __future__ import annotations

import pymysql
import pytest

from rusing_ops_tests.conftest import admin_connection

EVERY_TYPE_SCHEMA = [
    """CREATE TABLE users (
      id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
      email VARCHAR(190) NOT NULL UNIQUE,
      name VARCHAR(200) NOT NULL,
      bio TEXT NULL,
      role ENUM('learner','coach','admin') NOT NULL DEFAULT 'learner',
      flags SET('a','b','c') NOT NULL DEFAULT '',
      created_at DATETIME(3) NOT NULL,
      updated_at TIMESTAMP(6) NULL,
      birthday DATE NULL,
      lesson_time TIME(2) NULL,
      grad_year YEAR NULL,
      active BIT(3) NOT NULL DEFAULT b'101',
      email_domain VARCHAR(190) AS (SUBSTRING_INDEX(email, '@', -1)) VIRTUAL,
      name_upper VARCHAR(200) AS (UPPER(name)) STORED,
      legacy_latin1 VARCHAR(50) CHARACTER SET latin1 NULL
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci AUTO_INCREMENT=1000""",
    """CREATE TABLE payments (
      id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
      user_id INT UNSIGNED NOT NULL,
      amount DECIMAL(19,4) NOT NULL,
      fx DECIMAL(18,8) NULL,
      ratio DOUBLE NULL,
      score FLOAT NULL,
      meta JSON NULL,
      receipt BLOB NULL,
      token BINARY(16) NULL,
      sig VARBINARY(64) NULL,
      CONSTRAINT fk_pay_user FOREIGN KEY (user_id) REFERENCES users (id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci""",
    """CREATE TABLE enrollments (
      user_id INT UNSIGNED NOT NULL,
      course VARCHAR(40) NOT NULL,
      progress TINYINT NOT NULL DEFAULT 0,
      PRIMARY KEY (user_id, course),
      CONSTRAINT fk_enr_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci""",
    """CREATE TABLE audit_no_pk (
      happened_at DATETIME NOT NULL,
      note VARCHAR(100) NULL
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci""",
    """CREATE TABLE empty_table (id INT PRIMARY KEY) ENGINE=InnoDB""",
    """CREATE TABLE __drizzle_migrations (
      id SERIAL PRIMARY KEY, hash TEXT NOT NULL, created_at BIGINT
    ) ENGINE=InnoDB""",
    "CREATE VIEW user_totals AS SELECT u.id, u.name, COALESCE(SUM(p.amount), 0) AS total "
    "FROM users u LEFT JOIN payments p ON p.user_id = u.id GROUP BY u.id, u.name",
    "CREATE VIEW a_top_users AS SELECT id, name FROM user_totals WHERE total > 10",  # sorts before its dependency
    "CREATE FUNCTION cents(amount DECIMAL(19,4)) RETURNS BIGINT DETERMINISTIC RETURN ROUND(amount * 100)",
    """CREATE PROCEDURE touch_user(IN uid INT)
    BEGIN
      UPDATE users SET updated_at = NOW(6) WHERE id = uid;
      SELECT 'done;';
    END""",
    """CREATE TRIGGER payments_default_fx BEFORE INSERT ON payments FOR EACH ROW
    BEGIN
      IF NEW.fx IS NULL THEN SET NEW.fx = 1.0; END IF;
    END""",
]

USERS = [
    (1, "zoe@example.com", "Zoé Tremblay-Côté", "Élève « première » 🎓\nligne 2\r\nfin", "coach", "a,c",
     "2024-01-02 03:04:05.678", "2024-01-02 03:04:05.123456", "1990-02-28", "12:34:56.78", 2012, 0b011, "café"),
    (2, "null@example.com", "", None, "learner", "", "2024-01-03 00:00:00.000", None, None, None, None, 0, None),
    (3, "empty@example.com", "Quote ' \" \\ back\\slash", "", "admin", "b", "2024-01-04 23:59:59.999",
     "2038-01-01 00:00:00", "0001-01-01", "-838:59:59", 1901, 0b111, ""),
    (4, "emoji@example.com", "🚀🇫🇷 naïve señor", "semi;colon;\n;", "learner", "a,b,c", "1970-01-01 00:00:00.001",
     None, None, None, 2155, 0b100, "naïve"),
]
PAYMENTS = [
    (1, 1, "1234567.8912", "1.30000001", 3.141592653589793, 1.5, '{"a": "é", "b": [1, 2.5, null], "c": {"d": "🎓"}}',
     b"\x00\x01\xff'\\\n", bytes(range(16)), b""),
    (2, 2, "-0.0001", None, None, None, None, None, None, None),
    (3, 4, "0.0000", "0.00000000", -1e-300, -0.0, "[]", b"", b"\x00" * 16, b"\x00"),
]


def fill_every_type(conn) -> None:
    """Create the schema above and its rows in the connection's database."""
    with conn.cursor() as cur:
        for sql in EVERY_TYPE_SCHEMA:
            cur.execute(sql)
        cur.executemany(
            "INSERT INTO users (id, email, name, bio, role, flags, created_at, updated_at, birthday, lesson_time, "
            "grad_year, active, legacy_latin1) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", USERS)
        cur.executemany("INSERT INTO payments (id, user_id, amount, fx, ratio, score, meta, receipt, token, sig) "
                        "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", PAYMENTS)
        cur.execute("INSERT INTO payments (user_id, amount) SELECT 1 + seq % 4, seq / 7 FROM seq_1_to_3000")
        cur.execute("INSERT INTO enrollments VALUES (1,'fr-101',10),(1,'fr-102',100),(4,'en-101',0)")
        cur.execute("INSERT INTO audit_no_pk VALUES ('2024-01-01 00:00:00','x'),('2024-01-01 00:00:00','x'),"
                    "('2023-01-01 00:00:00',NULL)")
        cur.execute("INSERT INTO __drizzle_migrations (hash, created_at) VALUES ('aaa', 1700000000000), "
                    "('bbb', 1700000001000)")


@pytest.fixture
def every_type_db(fresh_db, db_conn):
    """``fresh_db`` filled with every column type, a view on a view, a function, a procedure and a trigger."""
    fill_every_type(db_conn)
    return fresh_db


def snapshot(url, database: str) -> dict:
    """Everything a round trip must preserve: per-table CHECKSUM TABLE and counts, DDL of every object."""
    conn = admin_connection(url)
    out: dict = {"tables": {}, "views": {}, "triggers": {}, "routines": {}}
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                        "ORDER BY TABLE_NAME", (database,))
            for name, kind in cur.fetchall():
                if kind == "VIEW":
                    cur.execute(f"SHOW CREATE VIEW `{database}`.`{name}`")
                    out["views"][name] = cur.fetchone()[1].replace(f"`{database}`.", "")  # shown qualified
                    continue
                cur.execute(f"CHECKSUM TABLE `{database}`.`{name}`")
                checksum = cur.fetchone()[1]
                cur.execute(f"SELECT COUNT(*) FROM `{database}`.`{name}`")
                count = cur.fetchone()[0]
                cur.execute(f"SHOW CREATE TABLE `{database}`.`{name}`")
                out["tables"][name] = (checksum, count, cur.fetchone()[1])
            cur.execute("SELECT TRIGGER_NAME, ACTION_STATEMENT, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS "
                        "WHERE TRIGGER_SCHEMA = %s", (database,))
            out["triggers"] = {r[0]: r[1:] for r in cur.fetchall()}
            cur.execute("SELECT ROUTINE_NAME, ROUTINE_TYPE, ROUTINE_DEFINITION FROM information_schema.ROUTINES "
                        "WHERE ROUTINE_SCHEMA = %s", (database,))
            out["routines"] = {r[0]: r[1:] for r in cur.fetchall()}
    finally:
        conn.close()
    return out


def databases_like(url, prefix: str) -> list[str]:
    conn = admin_connection(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE %s "
                        "ORDER BY SCHEMA_NAME", (prefix.replace("_", r"\_") + "%",))
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


def query(url, database: str, sql: str, args=()) -> list[tuple]:
    conn = pymysql.connect(**url.pymysql_kwargs(database=database), autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()
