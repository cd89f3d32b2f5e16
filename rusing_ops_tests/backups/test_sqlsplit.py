"""The one SQL lexer (quotes, comments, DELIMITER, the two fast paths, line numbers) and the statement checks built on
it (confine.py: what a dump file may run, decided without a server)."""

from __future__ import annotations

import pytest

from rusing_ops.backups import confine
from rusing_ops.backups.sqlsplit import (
    SqlSyntaxError,
    numbered_statements,
    split_statements,
    strip_comments,
)
from rusing_ops.migrations.sqlfile import counts_several_statements, split_script

GENERAL = b"""SET NAMES utf8mb4;
/* block; comment */ CREATE TABLE `a;b` (x int); # trailing
-- line; comment
INSERT INTO t VALUES (1,'a;\\n\\'b'),(2,'x''y;'),(3,"q;"),(4,'multi
line;
');
DELIMITER ;;
CREATE TRIGGER x BEFORE INSERT ON t FOR EACH ROW BEGIN SET NEW.a = 'x;'; SET NEW.b=1; END;;
DELIMITER ;
/*!40101 SET x=1 */;
SELECT '--not a comment', `a``;b`;
"""
EXPECTED = [
    b"SET NAMES utf8mb4",
    b"CREATE TABLE `a;b` (x int)",
    b"INSERT INTO t VALUES (1,'a;\\n\\'b'),(2,'x''y;'),(3,\"q;\"),(4,'multi\nline;\n')",
    b"CREATE TRIGGER x BEFORE INSERT ON t FOR EACH ROW BEGIN SET NEW.a = 'x;'; SET NEW.b=1; END",
    b"/*!40101 SET x=1 */",
    b"SELECT '--not a comment', `a``;b`",
]


def chunked(data: bytes, n: int) -> list[bytes]:
    return [data[i:i + n] for i in range(0, len(data), n)]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 100_000])
def test_general_text_splits_the_same_at_any_chunk_size(size):
    assert list(split_statements(chunked(GENERAL, size))) == EXPECTED


@pytest.mark.parametrize("size", [1, 5, 100_000])
def test_framed_inserts_are_taken_by_length(size):
    insert = b"INSERT INTO `t` (`a`) VALUES ('x;\nINSERT INTO y;\n'),('\\'');\n"
    text = b"-- rusing_ops test\nCREATE TABLE t (a text);\n-- @%d\n%s-- @%d\n%s" % (
        len(insert), insert, len(insert), insert)
    assert list(split_statements(chunked(text, size))) == [b"CREATE TABLE t (a text)", insert[:-2], insert[:-2]]


@pytest.mark.parametrize("size", [1, 5, 100_000])
def test_mysqldump_one_line_inserts(size):
    text = b"-- MariaDB dump 10.19\nLOCK TABLES `t` WRITE;\nINSERT INTO `t` VALUES (1,'a\\nb;'),(2,NULL);\nUNLOCK TABLES;\n"
    assert list(split_statements(chunked(text, size))) == [
        b"LOCK TABLES `t` WRITE", b"INSERT INTO `t` VALUES (1,'a\\nb;'),(2,NULL)", b"UNLOCK TABLES"]


@pytest.mark.parametrize("text", [b"SELECT 'abc", b"SELECT 1", b"SELECT /* x", b"-- rusing_ops\n-- @100\nINSERT"])
def test_truncated_text_raises(text):
    with pytest.raises(SqlSyntaxError):
        list(split_statements(chunked(text, 3)))


def test_comments_and_blank_text_yield_nothing():
    assert list(split_statements([b""])) == []
    assert list(split_statements([b"SELECT 1;\n-- the end\n\n"])) == [b"SELECT 1"]


def test_statements_carry_the_line_they_start_on_at_any_chunk_size():
    for size in (1, 3, 100_000):
        lines = [line for line, _ in numbered_statements(chunked(GENERAL, size))]
        assert lines == [1, 2, 4, 8, 10, 11]
    framed = b"-- rusing_ops\nSET x=1;\n-- @13\nINSERT a\nb;\nSELECT 2;\n"
    assert list(numbered_statements(chunked(framed, 2))) == [(2, b"SET x=1"), (4, b"INSERT a\nb"), (6, b"SELECT 2")]


def test_mariadb_dump_sandbox_line_keeps_the_one_line_insert_path():
    text = b"/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump 10.19\nINSERT INTO `t` VALUES ('a;b');\n"
    assert list(numbered_statements([text])) == [(3, b"INSERT INTO `t` VALUES ('a;b')")]


REVERSE_WITH_TRIGGER = """DROP TRIGGER IF EXISTS audit_fx;
DELIMITER ;;
CREATE TRIGGER audit_fx BEFORE INSERT ON payments FOR EACH ROW BEGIN
  IF NEW.fx IS NULL THEN SET NEW.fx = 1.0; END IF; SET @note = 'a;b';
END;;
DELIMITER ;
ALTER TABLE payments DROP COLUMN fx -- the last one has no semicolon
"""


def test_rollback_reverse_sql_splits_like_the_mysql_client():
    """Issue 10 item 9: split_script cut this DELIMITER ;; trigger into six pieces; the one lexer gives it whole."""
    assert split_script(REVERSE_WITH_TRIGGER) == [
        "DROP TRIGGER IF EXISTS audit_fx",
        ("CREATE TRIGGER audit_fx BEFORE INSERT ON payments FOR EACH ROW BEGIN\n  IF NEW.fx IS NULL THEN SET NEW.fx = "
        "1.0; END IF; SET @note = 'a;b';\nEND"),
        "ALTER TABLE payments DROP COLUMN fx -- the last one has no semicolon",
    ]
    assert split_script("a;--> statement-breakpoint\nb;") == ["a;", "b;"]  # drizzle's breakpoints win
    assert strip_comments("SELECT '--x' -- y\n, `a#b` # c\n/* d */ 1") == "SELECT ''  \n, `a#b`  \n  1"
    assert counts_several_statements("SELECT 1; SELECT 2") and not counts_several_statements("SELECT ';'; -- x")


# ------------------------------------------------------------------------------------ confine: no server needed

SCOPE = {"label": "f.sql", "staging": "app__restore_1", "others": frozenset({"app", "other", "mysql", "sys"}),
             "version": 101106, "mariadb": True}


def check_all(text: bytes, own: str | None = "app") -> list[confine.Action]:
    c = confine.Confiner(confine.Scope(**SCOPE, own=own))
    out = [c.check(line, stmt) for line, stmt in numbered_statements([text])]
    c.finish()
    return out


@pytest.mark.parametrize("statement, kind, sql", [
    (b"INSERT INTO t VALUES (1,'a;b',X'00',0xff,-1.5e-300,NULL,_binary 'x')", "data", None),
    (b"INSERT INTO `app`.`t` (`a`) VALUES (1)", "data", b"INSERT INTO `t` (`a`) VALUES (1)"),
    (b"/*!40101 SET NAMES utf8mb4 */", "session", b"SET NAMES utf8mb4"),
    (b"/*!40014 SET @OLD_FK=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */", "session",
     b"SET @OLD_FK=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0"),
    ((b"/*!50001 CREATE ALGORITHM=UNDEFINED */\n/*!50013 DEFINER=`root`@`localhost` SQL SECURITY DEFINER */\n"
     b"/*!50001 VIEW `v` AS select `app`.`t`.`a` AS `a` from `app`.`t` */"), "deferred",
     (b"CREATE ALGORITHM=UNDEFINED  \n  DEFINER=`root`@`localhost` SQL SECURITY DEFINER  \n  VIEW `v` AS select "
     b"`t`.`a` AS `a` from `t`")),
    ((b"/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`127.0.0.1`*/ /*!50003 TRIGGER x BEFORE INSERT ON t FOR EACH ROW "
     b"SET NEW.a = 1 */"), "deferred",
     b"CREATE    DEFINER=`root`@`127.0.0.1`    TRIGGER x BEFORE INSERT ON t FOR EACH ROW SET NEW.a = 1"),
    (b"DROP FUNCTION IF EXISTS `cents`", "deferred", None),
    (b"CREATE TABLE t (a int) ENGINE=InnoDB /*!80016 DEFAULT ENCRYPTION='N' */", "ddl",
     b"CREATE TABLE t (a int) ENGINE=InnoDB"),  # MySQL 8's comment: MariaDB does not run it, nor is it sent
    (b"DO SETVAL(`s1`, 1001, 0)", "ddl", None),
    (b"/*!40000 DROP DATABASE IF EXISTS `app`*/", "skip", b""),
    (b"USE `app`", "skip", b""),
    (b"LOCK TABLES `t` WRITE", "skip", b""),
    (b"SET @@SESSION.SQL_LOG_BIN= 0", "skip", b""),
    (b"SET @@GLOBAL.GTID_PURGED=/*!80000 '+'*/ '3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5'", "skip", b""),
])
def test_allowed_statements(statement, kind, sql):
    [action] = check_all(statement + b";\n")
    assert action.kind == kind
    assert action.sql == (statement if sql is None else sql)


HOSTILE = [
    (b"DROP DATABASE other", "DROP DATABASE of a second database (`other`; the dump's own is `app`)"),
    (b"DROP TABLE other.t", "a name in another database (`other`)"),
    (b"INSERT INTO other.t VALUES (1)", "an INSERT into another database (`other`)"),
    (b"INSERT INTO `other` . `t` VALUES (1)", "an INSERT into another database (`other`)"),
    (b"CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW INSERT INTO other.t VALUES (1)",
     "a name in another database (`other`)"),
    (b"CREATE VIEW v AS SELECT * FROM mysql.user", "a name in another database (`mysql`)"),
    (b"GRANT ALL ON *.* TO 'x'@'%'", "a GRANT statement"),
    (b"CREATE USER 'x'@'%' IDENTIFIED BY 'pw'", "a CREATE USER statement"),
    (b"SET GLOBAL max_connections = 1", "a SET GLOBAL statement"),
    (b"/*!40101 SET @@GLOBAL.general_log = 1 */", "a SET of a global server variable"),
    (b"SET @@GLOBAL.GTID_PURGED = (SELECT 1)", "a SET of a global server variable"),
    (b"SET PASSWORD = PASSWORD('x')", "a SET PASSWORD statement"),
    (b"SELECT * FROM t INTO OUTFILE '/tmp/x'", "a SELECT statement"),
    (b"LOAD DATA INFILE '/etc/passwd' INTO TABLE t", "a LOAD statement"),
    (b"INSERT INTO t VALUES (LOAD_FILE('/etc/passwd'))", "an INSERT whose values are not plain literals"),
    (b"INSERT INTO t SELECT * FROM other.t", "an INSERT in a form dumps do not write"),
    (b"INSERT INTO t VALUES (1) -- '\n, ((SELECT 2)) -- '", "an INSERT whose values are not plain literals"),
    (b"SHUTDOWN", "a SHUTDOWN statement"), (b"KILL 1", "a KILL statement"),
    (b"INSTALL PLUGIN x SONAME 'x.so'", "an INSTALL statement"), (b"CALL p()", "a CALL statement"),
    (b"PREPARE s FROM 'DROP DATABASE other'", "a PREPARE statement"), (b"FLUSH PRIVILEGES", "a FLUSH statement"),
    (b"CHANGE MASTER TO MASTER_HOST='x'", "a CHANGE statement"), (b"PURGE BINARY LOGS BEFORE NOW()", "a PURGE"),
    (b"HANDLER t OPEN", "a HANDLER statement"),
    (b"CREATE PROCEDURE p() BEGIN PREPARE s FROM @x; EXECUTE s; END", "CREATE PROCEDURE containing PREPARE"),
    (b"CREATE TABLE x (a int) ENGINE=CONNECT TABLE_TYPE=CSV FILE_NAME='/etc/passwd'", "CREATE TABLE with a storage engine other"),
    (b"CREATE TABLE x (a int) DATA DIRECTORY='/tmp'", "CREATE TABLE with a DIRECTORY option"),
    (b"SET sql_mode='ANSI_QUOTES'", "a SET sql_mode with ANSI_QUOTES"),
    (b"SET @m='NO_BACKSLASH_ESCAPES';\nSET sql_mode=@m", "a SET sql_mode from a variable that is not a saved copy"),
    (b"SET NAMES gbk", "a SET NAMES with a character set other than"),
    (b"SET @a = (SELECT 1)", "a SET whose value is not a literal or a variable"),
    (b"/*!40101 SELECT 1; */ DROP TABLE x", "a SELECT statement"),
    (b"CREATE DATABASE mysql", "CREATE DATABASE of the system database `mysql`"),
    (b"USE `app2`", "USE of a second database (a database this server does not have; the dump's own is `app`)"),
]


@pytest.mark.parametrize("statement, reason", HOSTILE, ids=[h[0][:40].decode() for h in HOSTILE])
def test_hostile_statements_are_refused_naming_the_line(statement, reason):
    text = b"-- MariaDB dump 10.19\nCREATE TABLE t (a int);\n" + statement + b";\n"  # INSERTs: the one-line path
    with pytest.raises(confine.DumpRefused) as err:
        check_all(text)
    line = 3 if b";\n" not in statement else 4
    assert f"'f.sql' line {line}: {reason}" in str(err.value)
    assert "No statement of the file was run." in str(err.value)
    for secret in (b"/etc/passwd", b"pw", b"MASTER_HOST", b"x.so"):  # never the file's text
        if secret in statement:
            assert secret.decode() not in str(err.value).replace("f.sql", "")


def test_the_dumps_own_database_is_learned_from_create_database_and_use():
    text = (b"DROP DATABASE IF EXISTS `shop`;\nCREATE DATABASE `shop`;\nUSE `shop`;\n"
            b"CREATE TABLE `shop`.`t` (a int);\nINSERT INTO `shop`.t VALUES (1);\n")
    actions = check_all(text, own=None)
    assert [a.kind for a in actions] == ["skip", "skip", "skip", "ddl", "data"]
    assert actions[3].sql == b"CREATE TABLE `t` (a int)" and actions[4].sql == b"INSERT INTO t VALUES (1)"
    with pytest.raises(confine.DumpRefused, match="line 1: DROP DATABASE names a database that is not the dump's"):
        check_all(b"DROP DATABASE other;\nCREATE DATABASE shop;\n", own=None)


@pytest.mark.parametrize("server, sent", [
    ({"version": 101106, "mariadb": True}, b"CREATE TABLE t (a bigint   , KEY (a)   ) ENGINE=InnoDB  "),
    ({"version": 80035, "mariadb": False}, (b"CREATE TABLE t (a bigint   , KEY (a)   ) ENGINE=InnoDB   DEFAULT "
                                           b"ENCRYPTION='N'")),
    ({"version": 80011, "mariadb": False, "tidb": True},
     b"CREATE TABLE t (a bigint   AUTO_RANDOM(5)  , KEY (a)   CLUSTERED  ) ENGINE=InnoDB  "),
])
def test_versioned_comments_are_resolved_per_server_and_never_sent(server, sent):
    stmt = (b"CREATE TABLE t (a bigint /*T![auto_rand] AUTO_RANDOM(5) */, KEY (a) /*T![clustered_index] CLUSTERED */)"
            b" ENGINE=InnoDB /*!80016 DEFAULT ENCRYPTION='N' */")
    scope = confine.Scope("f.sql", "s", frozenset({"other"}), own="app", **server)
    assert confine.Confiner(scope).check(1, stmt).sql == sent.strip()
    hidden = b"CREATE VIEW v AS SELECT 1 /*T![x] FROM other.t */ /*M!100000 , (SELECT 1 FROM other.t) */"
    if server.get("tidb") or server["mariadb"]:
        with pytest.raises(confine.DumpRefused, match="a name in another database"):
            confine.Confiner(scope).check(1, hidden)
    else:
        assert confine.Confiner(scope).check(1, hidden).sql == b"CREATE VIEW v AS SELECT 1"


def test_views_are_ordered_by_what_their_query_reads():
    """Issue 10 item 9: a view's dependencies come from its parsed query, not from a substring of its text."""
    from rusing_ops.backups.schema import order_views

    views = [
        ("a_top", "CREATE VIEW `a_top` AS select `totals`.`id` AS `id` from `totals` where `totals`.`sum` > 10"),
        ("totals", "CREATE VIEW `totals` AS select `u`.`id` AS `id`, 'a_top' AS `s`, 1 AS `sum` from `users` `u`"),
        ("b_alias", "CREATE VIEW `b_alias` AS select 1 AS `a_top`, `x`.`a` AS `totals` from `t` `x`"),
        ("c_joined", "CREATE VIEW `c_joined` AS select 1 AS `one` from (`a_top` join `users`)"),
    ]
    assert [n for n, _ in order_views(views)] == ["b_alias", "totals", "a_top", "c_joined"]
    # an alias named like a view made a false cycle, and the name-order fallback created a_view before b_view
    views = [("a_view", "CREATE VIEW `a_view` AS select `b_view`.`x` AS `x` from `b_view`"),
             ("b_view", "CREATE VIEW `b_view` AS select 1 AS `x`, 2 AS `a_view`")]
    assert [n for n, _ in order_views(views)] == ["b_view", "a_view"]


def test_load_errors_never_quote_row_values():
    """1366 / 1292 quote the value that failed; 1064 / 1062 quote the text: none of it is shown."""
    from rusing_ops.backups.load import _QUOTED

    for message in ("Incorrect string value: '\\xF0\\x9F secret' for column `t`.`c` at row 1",
                    "Incorrect datetime value: '2026-13-45 secret' for column `t`.`d` at row 1",
                    "Duplicate entry 'secret@example.com' for key 'email'",
                    "You have an error in your SQL syntax; check the manual near 'secret stuff' at line 1"):
        assert "secret" not in _QUOTED.sub(lambda m: f"{m.group(1)} (text not shown){m.group(2)}", message)
