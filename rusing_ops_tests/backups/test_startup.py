"""A backup or restore process starts small: a local backup or restore loads neither SQLAlchemy (the engine layer,
~0.2 s of imports before core.database imported it lazily; the restore's write lock took it until it held the lock on
a PyMySQL connection, 0.14 s) nor boto3 nor Dagster; its connections share one TLS context."""

from __future__ import annotations

import json
import subprocess
import sys

from rusing_ops.backups.connection import open_connection

SCRIPT = """
import json, sys
from rusing_ops.core.dburl import parse_database_url
from rusing_ops.core.store import LocalStore
from rusing_ops.backups.dump import backup_database
backup_database(parse_database_url(sys.argv[1]), LocalStore(sys.argv[2]), reason="startup")
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {"sqlalchemy", "boto3", "botocore", "dagster"})))
"""


def test_a_local_backup_loads_no_engine_no_s3_client_no_dagster(every_type_db, tmp_path):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(every_type_db), str(tmp_path / "store")],
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == []
    assert list((tmp_path / "store").rglob("*.manifest.json")) or list((tmp_path / "store").rglob("*.json"))


RESTORE = """
import json, sys
from rusing_ops.core.dburl import parse_database_url
from rusing_ops.core.store import LocalStore
from rusing_ops.backups.restore import restore_backup
url = parse_database_url(sys.argv[1])
restore_backup(url, LocalStore(sys.argv[2]), "latest", database=url.database + "__copy", pre_restore_backup=False,
               from_database=url.database)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {"sqlalchemy", "boto3", "botocore", "dagster"})))
"""


def test_a_local_restore_loads_no_engine_no_s3_client_no_dagster(every_type_db, tmp_path):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(every_type_db), str(tmp_path / "store")],
                         capture_output=True, text=True, check=True)
    out = subprocess.run([sys.executable, "-c", RESTORE, str(every_type_db), str(tmp_path / "store")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.splitlines()[-1]) == []
    conn = open_connection(every_type_db, every_type_db.database + "__copy")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM payments")
            assert int(cur.fetchone()[0]) > 0
    finally:
        conn.close()


def test_connections_with_the_same_tls_settings_share_one_context(server_url):
    first, second = open_connection(server_url, ""), open_connection(server_url, "")
    try:
        assert first.ctx is second.ctx  # PREFERRED on loopback: PyMySQL would build one per connection
    finally:
        first.close()
        second.close()


def test_the_code_location_loads_neither_the_stripe_sdk_nor_sqlglot_until_used():
    """Every `rusing-ops` command and code-server start imports the code location: the Stripe SDK (with aiohttp) and
    sqlglot cost 0.5-0.7 s of it and are imported where a Stripe client is made or a migration is linted."""
    script = ("import json, sys, rusing_ops.definitions; "
              "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'stripe', 'sqlglot', 'aiohttp'})))")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == []
