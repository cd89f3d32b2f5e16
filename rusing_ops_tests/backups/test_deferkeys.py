"""Deferred keys (deferkeys.py): the restore creates bare tables, loads the rows, then adds secondary keys and
foreign keys in one ALTER per table; the restored ``SHOW CREATE TABLE`` is exactly the source's. (Off by default,
``load.DEFER_KEYS``: measured slower end to end on this machine's MariaDB.)"""

from __future__ import annotations

from rusing_ops.backups import load
from rusing_ops.backups.deferkeys import split_create
from rusing_ops.backups.dump import backup_database
from rusing_ops.backups.restore import restore_backup
from rusing_ops.backups.verify import verify_backup
from rusing_ops_tests.backups.conftest import query

SCHEMA = [
    ("CREATE TABLE users (id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, email VARCHAR(190) NOT NULL UNIQUE, "
    "name VARCHAR(50) NOT NULL, KEY by_name (name(10), id)) DEFAULT CHARSET=utf8mb4"),
    ("CREATE TABLE courses (id INT UNSIGNED NOT NULL PRIMARY KEY, coach_id INT UNSIGNED NOT NULL, title TEXT, "
    "FULLTEXT KEY ft_title (title), CONSTRAINT fk_coach FOREIGN KEY (coach_id) REFERENCES users (id) "
    "ON DELETE CASCADE) DEFAULT CHARSET=utf8mb4"),
    ("CREATE TABLE enrollments (user_id INT UNSIGNED NOT NULL, course_id INT UNSIGNED NOT NULL, "
    "status ENUM('a','b') NOT NULL, PRIMARY KEY (user_id, course_id), UNIQUE KEY `weird``name` (course_id, user_id), "
    "CONSTRAINT fk_u FOREIGN KEY (user_id) REFERENCES users (id), "
    "CONSTRAINT fk_c FOREIGN KEY (course_id) REFERENCES courses (id), CONSTRAINT chk CHECK (status <> '')) "
    "DEFAULT CHARSET=utf8mb4"),
    ("CREATE TABLE events (id BIGINT PRIMARY KEY, payload JSON NOT NULL, KEY pre (payload(20))) "
    "DEFAULT CHARSET=utf8mb4"),
    "CREATE TABLE nokeys (a INT, b TEXT)",
]


def _creates(url, database: str) -> dict[str, str]:
    names = [r[0] for r in query(url, database, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE "
                                                "TABLE_SCHEMA = DATABASE() ORDER BY 1")]
    return {n: query(url, database, f"SHOW CREATE TABLE `{n}`")[0][1] for n in names}


def test_split_create_keeps_the_table_and_moves_its_keys():
    create = (b"CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  `e` varchar(9) NOT NULL,\n  `u` int(11) DEFAULT NULL,\n"
              b"  PRIMARY KEY (`id`),\n  UNIQUE KEY `e` (`e`),\n  KEY `fk` (`u`),\n"
              b"  CONSTRAINT `fk` FOREIGN KEY (`u`) REFERENCES `p` (`id`),\n  CONSTRAINT `c` CHECK (`id` > 0)\n"
              b") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
    bare, alter = split_create(create)
    assert bare == (b"CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  `e` varchar(9) NOT NULL,\n"
                    b"  `u` int(11) DEFAULT NULL,\n  PRIMARY KEY (`id`),\n  CONSTRAINT `c` CHECK (`id` > 0)\n"
                    b") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
    assert alter == (b"ALTER TABLE `t` ADD UNIQUE KEY `e` (`e`), ADD KEY `fk` (`u`), "
                     b"ADD CONSTRAINT `fk` FOREIGN KEY (`u`) REFERENCES `p` (`id`)")
    assert split_create(b"CREATE TABLE t (id INT PRIMARY KEY, KEY k (id))") == (
        b"CREATE TABLE t (id INT PRIMARY KEY, KEY k (id))", None)  # not SHOW CREATE's layout: as written
    assert split_create(b"CREATE TABLE `n` (\n  `a` int(11) DEFAULT NULL\n) ENGINE=InnoDB")[1] is None


def test_restored_tables_are_identical_after_their_keys_are_added_late(fresh_db, local_store, monkeypatch):
    url = fresh_db
    altered = []

    def spy(sql):  # the real split, recorded: the restore below does defer the keys
        bare, alter = split_create(sql)
        if alter is not None:
            altered.append(alter.split(b"`")[1].decode())
        return bare, alter

    monkeypatch.setattr(load, "split_create", spy)
    monkeypatch.setattr(load, "DEFER_KEYS", True)  # off by default: measured slower on this server
    for sql in SCHEMA:
        query(url, url.database, sql)
    query(url, url.database, "INSERT INTO users (email, name) SELECT CONCAT('u', seq, '@x'), CONCAT('n', seq) "
                             "FROM seq_1_to_500")
    query(url, url.database, "INSERT INTO courses SELECT seq, 1 + seq %% 500, CONCAT('t', seq) FROM seq_1_to_50")
    query(url, url.database, "INSERT IGNORE INTO enrollments SELECT 1 + seq %% 500, 1 + seq %% 50, 'a' FROM seq_1_to_900")
    query(url, url.database, "INSERT INTO events SELECT seq, JSON_OBJECT('n', seq) FROM seq_1_to_100")
    source = _creates(url, url.database)
    split = {n: split_create(c.encode())[1] is not None for n, c in source.items()}
    assert split == {"users": True, "courses": True, "enrollments": True, "events": True, "nokeys": False}
    backup = backup_database(url, local_store)
    copy = url.database + "__copy"
    restore_backup(url, local_store, backup.manifest.key, database=copy, pre_restore_backup=False,
                   from_database=url.database)
    assert sorted(altered) == ["courses", "enrollments", "events", "users"]
    assert _creates(url, copy) == source  # same keys, same order, same AUTO_INCREMENT, same foreign keys
    result = verify_backup(url, local_store, backup.manifest.key)
    assert result.ok, result.problems
