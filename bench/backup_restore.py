"""Benchmark: this project's backup and restore against mysqldump | zstd, zstd -dc | mysql and mydumper / myloader.

Builds a reproducible e-learning dataset inside MariaDB (SEQUENCE engine, no client-side row traffic) at two sizes
(1x and 4x ``--rows`` users), then for each size runs paired A/B rounds (ours, peer, ours, peer, ...: the machine's
speed drifts, so a ratio is taken per pair and the median reported). Prints wall time, data MB/s (InnoDB
data_length / wall), output size, peak RSS of the largest process, and the ratio to each peer.

    .venv/bin/python bench/backup_restore.py --rows 50000 --pairs 2

Datasets (``--datasets``): ``app`` (the e-learning tables in bench.md §1 ratios) and ``giant`` (one table,
``webhook_events_log`` with JSON payloads and long texts, holds ~90% of the bytes: the case a per-table parallel
dump cannot split). Our side runs the library (``backup_database`` / ``restore_backup``) in a fresh Python process
writing to a local store; the ``cli`` phase (1x app) runs ``rusing-ops db backup`` (the Dagster job) against the
same library call, paired, and prints Dagster's overhead. The ``physical`` phase (``mariabackup`` installed) is the
reference limit: on a server of its own (rusing_ops_tests/mariadb_server.py, never the machine's own), ours
against ``mariabackup --backup --stream=xbstream | zstd -3`` and, for restore, ``mbstream -x`` + ``--prepare`` +
``--copy-back`` into an empty datadir (the server start that follows is not counted).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pymysql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rusing_ops.core.dburl import parse_database_url
from rusing_ops_tests.mariadb_server import MariaDBServer

SCHEMA = [
    """CREATE TABLE users (
      id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
      email VARCHAR(190) NOT NULL UNIQUE,
      full_name VARCHAR(200) NOT NULL,
      bio TEXT NULL,
      avatar BLOB NULL,
      token_hash BINARY(32) NOT NULL,
      role ENUM('learner','coach','admin') NOT NULL DEFAULT 'learner',
      created_at DATETIME(3) NOT NULL,
      balance DECIMAL(19,4) NOT NULL DEFAULT 0
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci""",
    """CREATE TABLE courses (
      id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
      coach_id INT UNSIGNED NOT NULL,
      title VARCHAR(255) NOT NULL,
      description MEDIUMTEXT NOT NULL,
      price DECIMAL(10,2) NOT NULL,
      published_at DATETIME(3) NULL,
      CONSTRAINT fk_courses_coach FOREIGN KEY (coach_id) REFERENCES users (id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci""",
    """CREATE TABLE enrollments (
      user_id INT UNSIGNED NOT NULL,
      course_id INT UNSIGNED NOT NULL,
      progress TINYINT UNSIGNED NOT NULL DEFAULT 0,
      status ENUM('active','completed','refunded') NOT NULL,
      enrolled_at DATETIME(3) NOT NULL,
      PRIMARY KEY (user_id, course_id),
      CONSTRAINT fk_enr_user FOREIGN KEY (user_id) REFERENCES users (id),
      CONSTRAINT fk_enr_course FOREIGN KEY (course_id) REFERENCES courses (id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci""",
    """CREATE TABLE purchases (
      id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
      user_id INT UNSIGNED NOT NULL,
      course_id INT UNSIGNED NOT NULL,
      stripe_payment_intent VARCHAR(64) NOT NULL,
      amount DECIMAL(10,2) NOT NULL,
      currency CHAR(3) NOT NULL DEFAULT 'cad',
      note VARCHAR(500) NULL,
      created_at DATETIME(3) NOT NULL,
      CONSTRAINT fk_pur_user FOREIGN KEY (user_id) REFERENCES users (id),
      CONSTRAINT fk_pur_course FOREIGN KEY (course_id) REFERENCES courses (id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci""",
    """CREATE TABLE ledger_entries (
      id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
      purchase_id BIGINT UNSIGNED NOT NULL,
      account VARCHAR(40) NOT NULL,
      amount DECIMAL(19,4) NOT NULL,
      fx_rate DECIMAL(18,8) NULL,
      memo VARCHAR(255) NOT NULL DEFAULT '',
      created_at DATETIME(3) NOT NULL,
      CONSTRAINT fk_led_purchase FOREIGN KEY (purchase_id) REFERENCES purchases (id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci""",
    """CREATE TABLE webhook_events_log (
      id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
      event_id VARCHAR(64) NOT NULL UNIQUE,
      event_type VARCHAR(80) NOT NULL,
      payload JSON NOT NULL,
      signature VARBINARY(64) NULL,
      status ENUM('received','processed','failed') NOT NULL,
      error TEXT NULL,
      received_at DATETIME(3) NOT NULL,
      CONSTRAINT fk_wh_dummy CHECK (JSON_VALID(payload))
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci""",
    """CREATE VIEW course_revenue AS
      SELECT c.id AS course_id, c.title, COUNT(p.id) AS sales, COALESCE(SUM(p.amount), 0) AS revenue
      FROM courses c LEFT JOIN purchases p ON p.course_id = c.id GROUP BY c.id, c.title""",
    """CREATE TRIGGER ledger_memo_default BEFORE INSERT ON ledger_entries FOR EACH ROW
      SET NEW.memo = IF(NEW.memo = '', CONCAT('auto ', NEW.account), NEW.memo)""",
    """CREATE FUNCTION cents(amount DECIMAL(19,4)) RETURNS BIGINT DETERMINISTIC RETURN ROUND(amount * 100)""",
]

_TEXT = "'Élève « première » leçon — café, naïve, señor 🎓🚀 '"


def fill(conn, users: int, giant: bool = False) -> dict[str, int]:
    """Insert ``users`` users and the proportional rows of every other table (bench.md §1 ratios).

    ``giant``: the database is mostly one table -- ``webhook_events_log`` with the same number of events but
    larger JSON payloads and long error texts holds ~90% of the bytes, the other tables are 1/8 of the usual size.
    """
    events = users * 4 // 5
    users = users // 8 if giant else users
    courses = max(users // 100, 10)
    enrollments = users * 4
    purchases = users * 3 // 2
    extra = f", 'lines', JSON_ARRAY(REPEAT(SHA2(seq, 256), 6), REPEAT({_TEXT}, 4))" if giant else ""
    long_error = f"REPEAT(CONCAT('Erreur: délai dépassé ', seq, ' {_TEXT[1:-1]} '), 6)" if giant else \
        "CONCAT('Erreur: délai dépassé ', seq)"
    statements = [
        f"""INSERT INTO users (id, email, full_name, bio, avatar, token_hash, role, created_at, balance)
            SELECT seq, CONCAT('user', seq, '@example.com'), CONCAT('Zoé Tremblay-Côté ', seq),
                   IF(seq % 7 = 0, NULL, IF(seq % 11 = 0, '', REPEAT(CONCAT({_TEXT}, seq, ' '), 1 + seq % 4))),
                   IF(seq % 5 = 0, UNHEX(SHA2(seq, 512)), NULL), UNHEX(SHA2(seq, 256)),
                   ELT(1 + seq % 3, 'learner', 'coach', 'admin'),
                   TIMESTAMP('2024-01-01') + INTERVAL (seq * 7919000) MICROSECOND,
                   (seq % 100000) / 7
            FROM seq_1_to_{users}""",
        f"""INSERT INTO courses (id, coach_id, title, description, price, published_at)
            SELECT seq, 1 + (seq * 13) % {users}, CONCAT('Cours de français n°', seq, ' 🇫🇷'),
                   REPEAT(CONCAT({_TEXT}, seq), 20), 19.99 + seq % 300, IF(seq % 9 = 0, NULL, '2024-02-01 10:00:00.123')
            FROM seq_1_to_{courses}""",
        f"""INSERT INTO enrollments (user_id, course_id, progress, status, enrolled_at)
            SELECT 1 + (seq - 1) DIV 4, 1 + ((seq - 1) DIV 4 + (seq % 4) * 7) % {courses}, seq % 101,
                   ELT(1 + seq % 3, 'active', 'completed', 'refunded'), TIMESTAMP('2024-03-01') + INTERVAL seq SECOND
            FROM seq_1_to_{enrollments}""",
        f"""INSERT INTO purchases (id, user_id, course_id, stripe_payment_intent, amount, currency, note, created_at)
            SELECT seq, 1 + seq % {users}, 1 + seq % {courses}, CONCAT('pi_', MD5(seq)), 9.99 + (seq % 50000) / 100,
                   IF(seq % 2 = 0, 'cad', 'usd'), IF(seq % 3 = 0, NULL, CONCAT('Reçu « ', seq, ' » ✅')),
                   TIMESTAMP('2024-04-01') + INTERVAL seq * 3 SECOND
            FROM seq_1_to_{purchases}""",
        f"""INSERT INTO ledger_entries (id, purchase_id, account, amount, fx_rate, memo, created_at)
            SELECT seq, 1 + (seq - 1) DIV 2, IF(seq % 2 = 0, 'revenue', 'stripe_fees'),
                   IF(seq % 2 = 0, 1, -1) * ((seq % 99991) / 10000), IF(seq % 4 = 0, NULL, 1.3 + (seq % 1000) / 1e7),
                   IF(seq % 5 = 0, 'rembours. partiel', ''), TIMESTAMP('2024-04-01') + INTERVAL seq SECOND
            FROM seq_1_to_{purchases * 2}""",
        f"""INSERT INTO webhook_events_log (id, event_id, event_type, payload, signature, status, error, received_at)
            SELECT seq, CONCAT('evt_', MD5(seq)), ELT(1 + seq % 4, 'checkout.session.completed',
                   'payment_intent.succeeded', 'charge.refunded', 'invoice.paid'),
                   JSON_OBJECT('id', CONCAT('evt_', MD5(seq)), 'object', 'event', 'api_version', '2024-06-20',
                     'created', 1700000000 + seq, 'livemode', FALSE,
                     'data', JSON_OBJECT('object', JSON_OBJECT('id', CONCAT('pi_', MD5(seq)), 'amount', seq % 100000,
                       'currency', 'cad', 'description', {_TEXT}, 'metadata', JSON_OBJECT('user_id', seq, 'note', 'Reçu'),
                       'charges', REPEAT(SHA2(seq, 512), 8)){extra})),
                   IF(seq % 3 = 0, NULL, UNHEX(SHA2(CONCAT('sig', seq), 256))),
                   ELT(1 + seq % 3, 'received', 'processed', 'failed'),
                   IF(seq % 3 = 2, {long_error}, NULL),
                   TIMESTAMP('2024-05-01') + INTERVAL seq SECOND
            FROM seq_1_to_{events}""",
    ]
    with conn.cursor() as cur:
        cur.execute("SET FOREIGN_KEY_CHECKS=0, UNIQUE_CHECKS=0")
        for sql in statements:
            cur.execute(sql)
        cur.execute("SET FOREIGN_KEY_CHECKS=1, UNIQUE_CHECKS=1")
        cur.execute("ANALYZE TABLE users, courses, enrollments, purchases, ledger_entries, webhook_events_log")
        cur.fetchall()  # fresh statistics: data_length (the MB/s base) is otherwise stale after a bulk load
    return {"users": users, "courses": courses, "enrollments": enrollments, "purchases": purchases,
            "ledger_entries": purchases * 2, "webhook_events_log": events}


def build_dataset(url, database: str, users: int, giant: bool = False) -> dict[str, int]:
    """(Re)create ``database`` on the server of ``url`` (a DatabaseURL) and fill it."""
    conn = pymysql.connect(**url.pymysql_kwargs(database=""), autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
            cur.execute(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
            cur.execute(f"USE `{database}`")
            for sql in SCHEMA:
                cur.execute(sql)
        return fill(conn, users, giant)
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------------ measuring

OURS_BACKUP = """
import sys
from rusing_ops.core.dburl import parse_database_url
from rusing_ops.core.store import LocalStore
from rusing_ops.backups.dump import backup_database
backup_database(parse_database_url(sys.argv[1]), LocalStore(sys.argv[2]), reason="bench")
"""
OURS_RESTORE = """
import sys
from rusing_ops.core.dburl import parse_database_url
from rusing_ops.core.store import LocalStore
from rusing_ops.backups.restore import restore_backup
restore_backup(parse_database_url(sys.argv[1]), LocalStore(sys.argv[2]), "latest", database=sys.argv[3],
               pre_restore_backup=False, from_database=sys.argv[3].replace("_dst_", "_src_"))  # backups belong to a db
"""


def timed(shell: str) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB of the largest process) of a shell pipeline, via GNU time."""
    out = subprocess.run(["/usr/bin/time", "-f", "%e %M", "sh", "-c", shell], check=False, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{shell!r} failed: {out.stderr[-800:]}")
    wall, rss_kb = out.stderr.strip().splitlines()[-1].split()
    return float(wall), int(rss_kb) / 1024


def admin(url, sql: str):
    conn = pymysql.connect(**url.pymysql_kwargs(database=""), autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def data_mb(url, db: str) -> float:
    return float(admin(url, f"SELECT SUM(DATA_LENGTH) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}'")[0][0]) / 1e6


def du(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6 if path.is_dir() else path.stat().st_size / 1e6


def checksums(url, db: str) -> list:
    tables = [r[0] for r in admin(url, f"SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}' "
                                        "AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1")]
    return [(t, r[1]) for t in tables for r in admin(url, f"CHECKSUM TABLE `{db}`.`{t}`")]


class Bench:
    def __init__(self, url, work: Path, pairs: int, mydumper: bool):
        self.url, self.work, self.pairs, self.mydumper = url, work, pairs, mydumper
        self.cli = f"-h {url.host} -P {url.port} -u {url.user}" + (f" -p{url.password}" if url.password else "")
        self.py = f"{sys.executable} -c"
        self.rows: list[dict] = []

    def fresh(self, db: str) -> None:
        admin(self.url, f"DROP DATABASE IF EXISTS `{db}`")
        admin(self.url, f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")

    def backup_cmds(self, src: str) -> dict[str, tuple[str, Path]]:
        w = self.work
        url = f"mysql://{self.url.user}@{self.url.host}:{self.url.port}/{src}"
        cmds = {
            "rusing_ops (zstd)": (f"rm -rf {w}/ours && {self.py} '{OURS_BACKUP}' {url} {w}/ours", w / "ours"),
            "mysqldump | zstd -3": ((f"mysqldump {self.cli} --single-transaction --quick --hex-blob --routines "
                                     f"--triggers {src} | zstd -3 -q > {w}/md.sql.zst"), w / "md.sql.zst"),
            # The level ours uses (streams.ZSTD_LEVEL): the same peer, compressing as cheaply as ours does.
            "mysqldump | zstd -1": ((f"mysqldump {self.cli} --single-transaction --quick --hex-blob --routines "
                                     f"--triggers {src} | zstd -1 -q > {w}/md1.sql.zst"), w / "md1.sql.zst"),
        }
        if self.mydumper:
            cmds["mydumper -t 2 -c"] = ((f"rm -rf {w}/myd && mydumper {self.cli} -B {src} -t 2 "
                                         f"--trx-consistency-only -R -G -c -o {w}/myd 2>/dev/null"), w / "myd")
        return cmds

    def restore_cmds(self, dst: str) -> dict[str, str]:
        w = self.work
        url = f"mysql://{self.url.user}@{self.url.host}:{self.url.port}/{dst}"
        cmds = {
            "rusing_ops": f"{self.py} '{OURS_RESTORE}' {url} {w}/ours {dst}",
            "zstd -dc | mysql": f"zstd -dc {w}/md.sql.zst | mysql {self.cli} {dst}",
        }
        if self.mydumper:
            cmds["myloader -t 2"] = f"myloader {self.cli} -d {w}/myd -B {dst} -t 2 -o"
        return cmds

    def run_paired(self, size: str, phase: str, cmds: dict, mb: float, before=None, check=None) -> None:
        """Each round runs every command once (ours first); ratios are ours / peer within the same round."""
        times: dict[str, list[float]] = {k: [] for k in cmds}
        rss: dict[str, float] = {k: 0.0 for k in cmds}
        outputs: dict[str, float] = {}
        for _ in range(self.pairs):
            for name, cmd in cmds.items():
                shell, out = cmd if isinstance(cmd, tuple) else (cmd, None)
                if before:
                    before()
                wall, peak = timed(shell)
                times[name].append(wall)
                rss[name] = max(rss[name], peak)
                if out is not None:
                    outputs[name] = du(out)
                if check:
                    check(name)
        ours = next(iter(cmds))
        for name in cmds:
            ratios = [a / b for a, b in zip(times[ours], times[name])]
            self.rows.append({"size": size, "phase": phase, "tool": name, "wall_s": statistics.median(times[name]),
                              "MB/s": mb / statistics.median(times[name]), "out_MB": outputs.get(name),
                              "peak_RSS_MiB": rss[name], "ours/peer": statistics.median(ratios)})

    def print(self) -> None:
        print(f"\n{'size':<8} {'phase':<8} {'tool':<26} {'wall s':>7} {'MB/s':>7} {'out MB':>7} {'RSS MiB':>8} "
              f"{'ours/peer wall':>14}  (<1 = ours faster)")
        for r in self.rows:
            out = f"{r['out_MB']:.1f}" if r["out_MB"] is not None else "-"
            print(f"{r['size']:<8} {r['phase']:<8} {r['tool']:<26} {r['wall_s']:>7.2f} {r['MB/s']:>7.1f} {out:>7} "
                  f"{r['peak_RSS_MiB']:>8.1f} {r['ours/peer']:>14.2f}")
        cli = {r["tool"]: r["wall_s"] for r in self.rows if r["phase"] == "cli"}
        if len(cli) == 2:
            lib, dag = cli["library backup_database"], cli["rusing-ops db backup"]
            print(f"Dagster CLI overhead for `db backup`: {dag - lib:.2f} s on top of the library's {lib:.2f} s")


def cli_phase(bench: Bench, src: str, mb: float) -> None:
    """``rusing-ops db backup`` (Dagster job, in process) against the library call, paired: Dagster's overhead."""
    w = bench.work
    home = w / "dagster_home"
    home.mkdir(exist_ok=True)
    url = f"mysql://{bench.url.user}@{bench.url.host}:{bench.url.port}/{src}"
    cli = Path(sys.executable).parent / "rusing-ops"
    env = f"DATABASE_URL={url} RUSING_BACKUP_URL={w}/cli DAGSTER_HOME={home}"
    timed(f"{env} {cli} db backup --reason warmup > /dev/null")  # the SQLite instance is created once
    cmds = {"library backup_database": (f"rm -rf {w}/ours && {bench.py} '{OURS_BACKUP}' {url} {w}/ours", w / "ours"),
            "rusing-ops db backup": (f"rm -rf {w}/cli && {env} {cli} db backup --reason bench > /dev/null", w / "cli")}
    bench.run_paired("1x", "cli", cmds, mb)


def physical_phase(bench: Bench, work: Path, scale: int, users: int, giant: bool, size: str) -> None:
    """Ours against mariabackup on a server of its own (same dataset), paired."""
    server = MariaDBServer.start(work / f"phys_{scale}", extra_args=["--innodb-buffer-pool-size=256M"])
    try:
        url = parse_database_url(server.url("rbench_phys"))
        src, dst = "rbench_src_phys", "rbench_dst_phys"
        build_dataset(url, src, users, giant)
        mb = data_mb(url, src)
        w = bench.work
        own = Bench(url, w, bench.pairs, False)
        login = f"--user=root --password={server.password} --socket={server.workdir / 'mysqld.sock'}"
        ours_url = server.url(src)
        bench.run_paired(size, "physical", {
            "rusing_ops (zstd)": (f"rm -rf {w}/ours && {bench.py} '{OURS_BACKUP}' {ours_url} {w}/ours", w / "ours"),
            "mariabackup | zstd -3": ((f"rm -rf {w}/pt && mkdir -p {w}/pt && mariabackup --backup {login} "
                                       f"--stream=xbstream --target-dir={w}/pt 2>/dev/null | zstd -3 -q > {w}/phys.zst"),
                                      w / "phys.zst"),
        }, mb)
        restore = (f"rm -rf {w}/px {w}/pd && mkdir -p {w}/px {w}/pd && zstd -dc {w}/phys.zst | mbstream -x -C {w}/px && "
                   f"mariabackup --prepare --target-dir={w}/px 2>/dev/null && "
                   f"mariabackup --copy-back --target-dir={w}/px --datadir={w}/pd 2>/dev/null")
        bench.run_paired(size, "phys-rst", {
            "rusing_ops": f"{bench.py} '{OURS_RESTORE}' {server.url(dst)} {w}/ours {dst}",
            "mariabackup prepare+copy": restore,
        }, mb, before=lambda: own.fresh(dst))
    finally:
        server.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000, help="users at 1x (other tables scale from it)")
    parser.add_argument("--scales", default="1,4", help="dataset sizes as multiples of --rows")
    parser.add_argument("--datasets", default="app,giant", help="app (bench.md ratios), giant (one table ~90%%)")
    parser.add_argument("--pairs", type=int, default=2, help="A/B rounds per measurement")
    parser.add_argument("--url", default="mysql://root@127.0.0.1:3306/rbench", help="server to use (its database is unused)")
    parser.add_argument("--no-mydumper", action="store_true", help="skip mydumper/myloader even if installed")
    parser.add_argument("--no-physical", action="store_true", help="skip the mariabackup reference even if installed")
    parser.add_argument("--no-cli", action="store_true", help="skip the Dagster CLI overhead phase")
    parser.add_argument("--keep", action="store_true", help="keep the bench databases afterwards")
    parser.add_argument("--phases", default="backup,restore,cli",
                        help="which of backup, restore, cli to run (restore needs backup: it loads its output)")
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    url = parse_database_url(args.url)
    mydumper = not args.no_mydumper and shutil.which("mydumper") is not None
    physical = not args.no_physical and shutil.which("mariabackup") is not None
    if not mydumper:
        print("mydumper/myloader not installed (apt-get install -y mydumper): those lines are skipped")
    if not physical:
        print("mariabackup not installed (apt-get install -y mariadb-backup): the physical line is skipped")
    work = Path(tempfile.mkdtemp(prefix="rbench-"))
    bench = Bench(url, work, args.pairs, mydumper)
    try:
        for dataset in args.datasets.split(","):
            giant = dataset == "giant"
            for scale in (int(s) for s in args.scales.split(",")):
                size = f"{scale}x" + ("-giant" if giant else "")
                src, dst = f"rbench_src_{scale}x", f"rbench_dst_{scale}x"
                started = time.monotonic()
                counts = build_dataset(url, src, args.rows * scale, giant)
                mb = data_mb(url, src)
                share = float(admin(url, "SELECT MAX(DATA_LENGTH) / SUM(DATA_LENGTH) FROM information_schema.TABLES "
                                         f"WHERE TABLE_SCHEMA = '{src}'")[0][0])
                print(f"{size}: {sum(counts.values()):,} rows, {mb:,.0f} MB data_length ({share:.0%} in the largest "
                      f"table), built in {time.monotonic() - started:.0f}s", flush=True)
                bench.run_paired(size, "backup", bench.backup_cmds(src), mb)
                expected = checksums(url, src) if "restore" in phases else None

                def verify(name: str, dst=dst, expected=expected) -> None:
                    if checksums(url, dst) != expected:
                        raise RuntimeError(f"{name}: restored checksums differ from the source")

                if "restore" in phases:
                    bench.run_paired(size, "restore", bench.restore_cmds(dst), mb,
                                     before=lambda dst=dst: bench.fresh(dst), check=verify)
                if scale == 1 and not giant and not args.no_cli and "cli" in phases:
                    cli_phase(bench, src, mb)
                if not args.keep:
                    admin(url, f"DROP DATABASE IF EXISTS `{src}`")
                    admin(url, f"DROP DATABASE IF EXISTS `{dst}`")
                if physical:
                    physical_phase(bench, work, scale, args.rows * scale, giant, size)
                bench.print()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
