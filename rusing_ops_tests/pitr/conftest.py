"""A database with a history on the test-owned binlog server: a backup, writes at T1, a bad DELETE at T2, more
writes at T3 — the "someone ran a DELETE without a WHERE at 14:02" morning, with every expected state recorded."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import pytest

from rusing_ops.backups.dump import backup_database
from rusing_ops.core.dburl import DatabaseURL, parse_database_url
from rusing_ops.core.store import LocalStore
from rusing_ops.pitr import archive


@dataclass
class History:
    url: DatabaseURL
    store: LocalStore
    server: object
    backup_key: str
    before_delete: list[tuple]  # rows just before the bad DELETE (after T1)
    final: list[tuple]  # rows now (after T3)
    without_delete: list[tuple]  # what the rows would be had the DELETE never run
    deleted: list[tuple]
    t2: int  # the DELETE's second (UTC epoch)
    delete_gtid: str


def rows(server, database: str) -> list[tuple]:
    conn = server.socket_connection(database=database)
    with conn.cursor() as cur:
        cur.execute("SELECT id, amount, note FROM payments ORDER BY id")
        out = [(r[0], str(r[1]), r[2]) for r in cur.fetchall()]
    conn.close()
    return out


def run(server, database: str, *statements: str) -> None:
    conn = server.socket_connection(database=database)
    with conn.cursor() as cur:
        for sql in statements:
            cur.execute(sql)
    conn.close()


def next_second() -> None:
    """Sleep past the next whole second, so that the next write has a later binlog timestamp."""
    time.sleep(1.05 - (time.time() % 1.0))


def make_history(server, tmp_path, protection=None) -> History:
    name = f"pitr_{uuid.uuid4().hex[:8]}"
    server.create_database(name)
    url = parse_database_url(server.url(name))
    store = LocalStore(tmp_path / "backups")
    if protection is not None:
        from rusing_ops.backups.protect import protect

        protect(store, protection)
    run(server, name,
        "CREATE TABLE payments (id INT PRIMARY KEY AUTO_INCREMENT, amount DECIMAL(10,2) NOT NULL, note VARCHAR(100))",
        "INSERT INTO payments (amount, note) VALUES (10.00,'a'),(75.50,'b'),(20.00,'c'),(120.00,'d')")
    backup = backup_database(url, store, reason="nightly")
    archive.archive_once(url, store)  # the archive starts at the backup's position
    next_second()
    run(server, name, "INSERT INTO payments (amount, note) VALUES (30.00,'t1-e'),(99.99,'t1-f')",
        "UPDATE payments SET note = 'b-edited' WHERE id = 2")
    before = rows(server, name)
    next_second()
    conn = server.socket_connection(database=name)
    with conn.cursor() as cur:
        cur.execute("SELECT UNIX_TIMESTAMP()")
        t2 = int(cur.fetchone()[0])
        cur.execute("DELETE FROM payments WHERE amount < 50")  # the bad statement
        cur.execute("SELECT @@last_gtid")
        gtid = cur.fetchone()[0]
    conn.close()
    deleted = [r for r in before if float(r[1]) < 50]
    next_second()
    run(server, name, "INSERT INTO payments (amount, note) VALUES (55.00,'t3-g')",
        "UPDATE payments SET note = 'd-edited' WHERE id = 4")
    final = rows(server, name)
    without = sorted([r for r in before if r[0] != 4] + [r for r in final if r[0] == 4 or r[2] == "t3-g"])
    archive.archive_once(url, store)
    return History(url, store, server, backup.manifest.key, before, final, without, deleted, t2, gtid)


@pytest.fixture
def history(binlog_server, tmp_path):
    return make_history(binlog_server, tmp_path)
