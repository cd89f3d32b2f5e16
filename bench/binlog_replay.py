"""Benchmark: replaying the binlog archive (rusing_ops.pitr.replay.apply) against `mariadb-binlog | mariadb`.

Starts its own MariaDB with ROW binlogs (rusing_ops_tests.mariadb_server, a datadir in a temp folder), writes
``--transactions`` transactions (multi-row INSERTs, UPDATEs and DELETEs on an e-learning-like `enrollments` table),
archives the binlog into a local store, then replays it into a fresh copy of the empty schema, in pairs (ours,
peer, ours, peer...: the machine's speed drifts, so the ratio is taken per pair and the median reported):

- ours: the archive's segments filtered to the database's transactions, decoded by mariadb-binlog, run statement by
  statement over one PyMySQL connection (what `rusing-ops db restore --to` does after loading the backup);
- peer: ``mariadb-binlog --database=SRC --rewrite-db=SRC->DST <files> | mariadb DST`` on the raw binlog files.

    .venv/bin/python bench/binlog_replay.py --transactions 20000 --pairs 3

Prints events/s for each and ours/peer wall time (below 1 = ours faster).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rusing_ops.core.dburl import parse_database_url
from rusing_ops.core.store import LocalStore
from rusing_ops.pitr import archive, replay
from rusing_ops_tests.mariadb_server import MariaDBServer

SCHEMA = ("CREATE TABLE enrollments (id INT PRIMARY KEY AUTO_INCREMENT, user_id INT NOT NULL, course_id INT NOT NULL, "
          "status VARCHAR(20) NOT NULL, progress DECIMAL(5,2) NOT NULL DEFAULT 0, note TEXT, "
          "updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3), KEY (user_id), KEY (course_id))")


def workload(server: MariaDBServer, db: str, transactions: int) -> None:
    conn = server.socket_connection(database=db)
    with conn.cursor() as cur:
        for n in range(transactions):
            kind = n % 10
            if kind < 6:
                cur.execute("INSERT INTO enrollments (user_id, course_id, status, note) VALUES "
                            + ",".join(f"({n % 5000},{(n * 7 + i) % 300},'active','{'x' * (n % 200)}')"
                                       for i in range(5)))
            elif kind < 9:
                cur.execute("UPDATE enrollments SET progress = LEAST(progress + 12.5, 100), status = 'progress' "
                            "WHERE user_id = %s", (n % 5000,))
            else:
                cur.execute("DELETE FROM enrollments WHERE user_id = %s AND status = 'active' LIMIT 2", (n % 5000,))
    conn.close()


def fresh(server: MariaDBServer, name: str) -> None:
    conn = server.socket_connection()
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cur.execute(f"CREATE DATABASE `{name}`")
        cur.execute(f"USE `{name}`")
        cur.execute(SCHEMA)
    conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transactions", type=int, default=20000)
    ap.add_argument("--pairs", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-binlog-"))
    server = MariaDBServer.start(work / "server", extra_args=[
        "--log-bin=mariadb-bin", "--binlog-format=ROW", "--server-id=9", "--max-binlog-size=64M",
        "--innodb-flush-log-at-trx-commit=2", "--sync-binlog=0"])
    try:
        fresh(server, "src")
        conn = server.socket_connection()
        with conn.cursor() as cur:
            cur.execute("SHOW MASTER STATUS")
            file, pos = cur.fetchone()[:2]
        conn.close()
        url = parse_database_url(server.url("src"))
        store = LocalStore(work / "store")
        archive.archive_once(url, store, start=(file, int(pos)))
        t0 = time.perf_counter()
        workload(server, "src", args.transactions)
        print(f"workload: {args.transactions:,} transactions in {time.perf_counter() - t0:.1f} s")
        archive.archive_once(url, store)
        server_key = archive.read_server_log(url).server_key
        plan = replay.plan(store, server_key, "src", (file, int(pos)), replay.Stop())
        events = plan.events
        raw = work / "raw"
        raw.mkdir()
        files = []
        for seg in archive.segments(store, server_key):
            path = raw / f"{seg.file}.{seg.start}"
            path.write_bytes(store.get_bytes(seg.key))
            files.append(str(path))
        ours, peer = [], []
        for _ in range(args.pairs):
            fresh(server, "dst")
            t = time.perf_counter()
            replay.apply(url, plan, "dst")
            ours.append(time.perf_counter() - t)
            fresh(server, "dst")
            t = time.perf_counter()
            decode = subprocess.Popen(["mariadb-binlog", "--database=src", "--rewrite-db=src->dst", *files],
                                      stdout=subprocess.PIPE)
            subprocess.run(["mariadb", f"--socket={server.workdir / 'mysqld.sock'}", "-uroot",
                            f"-p{server.password}", "dst"], stdin=decode.stdout, check=True)
            decode.wait()
            peer.append(time.perf_counter() - t)
        ratios = [a / b for a, b in zip(ours, peer, strict=True)]
        print(f"events: {events:,} ({len(plan.groups):,} transactions)")
        print(f"ours (replay.apply):               median {statistics.median(ours):.2f} s, "
              f"{events / statistics.median(ours):,.0f} events/s")
        print(f"peer (mariadb-binlog | mariadb):   median {statistics.median(peer):.2f} s, "
              f"{events / statistics.median(peer):,.0f} events/s")
        print(f"ours / peer wall time: median {statistics.median(ratios):.2f} (pairs: "
              f"{', '.join(f'{r:.2f}' for r in ratios)})")
    finally:
        server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
