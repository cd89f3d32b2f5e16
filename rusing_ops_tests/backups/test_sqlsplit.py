"""The statement splitter: the mysql client's rules (quotes, comments, DELIMITER) and the two fast paths."""

from __future__ import annotations

import pytest

from rusing_ops.backups.load import classify
from rusing_ops.backups.sqlsplit import SqlSyntaxError, split_statements

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


@pytest.mark.parametrize("statement, kind", [
    (b"INSERT INTO t VALUES (1)", "data"),
    (b"/*!40101 SET NAMES utf8mb4 */", "session"),
    (b"/*!50001 CREATE ALGORITHM=UNDEFINED */\n/*!50013 DEFINER=`root`@`localhost` SQL SECURITY DEFINER */\n"
     b"/*!50001 VIEW `v` AS select 1 */", "deferred"),
    (b"/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`127.0.0.1`*/ /*!50003 TRIGGER x BEFORE INSERT ON t FOR EACH ROW SET @a=1 */",
     "deferred"),
    (b"DROP FUNCTION IF EXISTS `cents`", "deferred"),
    (b"CREATE TABLE t (a int)", "ddl"),
    (b"USE `prod`", "skip"),
    (b"LOCK TABLES `t` WRITE", "skip"),
])
def test_classify(statement, kind):
    assert classify(statement) == kind
