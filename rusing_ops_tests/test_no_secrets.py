"""Secrets never land anywhere: run the main procedures from the CLI with a database password and Stripe/Slack
secrets in the environment, then search every byte Dagster stored, every backup object and all output."""

import os
import subprocess
import sys

import pytest

from rusing_ops_tests.conftest import EXAMPLE_DRIZZLE

DB_PASSWORD = "Pw-9f3kQ2-never-shown"
SECRETS = [DB_PASSWORD, "sk_test_secret_never_shown_51", "whsec_never_shown_77", "xoxb-never-shown-99"]


@pytest.fixture
def password_user(fresh_db, db_conn):
    user = "u" + fresh_db.database[-12:]
    with db_conn.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{DB_PASSWORD}'")
        cur.execute(f"GRANT ALL PRIVILEGES ON `{fresh_db.database}`.* TO '{user}'@'%'")
        cur.execute(f"GRANT ALL PRIVILEGES ON `{fresh_db.database}\\_\\_%`.* TO '{user}'@'%'")
    yield user
    with db_conn.cursor() as cur:
        cur.execute(f"DROP USER '{user}'@'%'")


def test_no_secret_in_dagster_storage_backups_or_output(fresh_db, password_user, tmp_path):
    home, backups = tmp_path / "dagster_home", tmp_path / "backups"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "RUSING_BACKUP_URL": str(backups),
           "DRIZZLE_DIR": str(EXAMPLE_DRIZZLE), "STRIPE_SECRET_KEY": SECRETS[1], "STRIPE_WEBHOOK_SECRET": SECRETS[2],
           "STRIPE_API_BASE": "http://127.0.0.1:1", "SLACK_BOT_TOKEN": SECRETS[3], "RUSING_SLACK_CHANNEL": "#ops",
           "DATABASE_URL": f"mysql://{password_user}:{DB_PASSWORD}@{fresh_db.host}:{fresh_db.port}/{fresh_db.database}"}
    output = []
    for args in (["db", "migrate"], ["db", "backup"], ["db", "validate"], ["health"], ["webhooks", "status"],
                 ["db", "restore", "--confirm", fresh_db.database]):
        done = subprocess.run([sys.executable, "-m", "rusing_ops.cli", *args], env=env, capture_output=True, text=True,
                              timeout=300)
        output.append(done.stdout + done.stderr)
    assert "applied 5 migration(s)" in output[0] and output[1].startswith("backup backup-")
    assert "stripe key" in output[3] and "FAIL" in output[3]  # the Stripe API is unreachable: a failure, no crash
    wrong = subprocess.run([sys.executable, "-m", "rusing_ops.cli", "db", "backup"], capture_output=True, text=True,
                           env={**env, "DATABASE_URL": env["DATABASE_URL"].replace(DB_PASSWORD, DB_PASSWORD[::-1])},
                           timeout=300)
    assert wrong.returncode == 1 and f"mysql://{password_user}:***@" in wrong.stderr
    output.append(wrong.stdout + wrong.stderr)

    stored = [p for root in (home, backups) for p in root.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in stored) and any(p.name.endswith(".sql.zst") for p in stored)
    for secret in SECRETS + [DB_PASSWORD[::-1]]:
        assert not any(secret in text for text in output), secret
        leaked = [str(p) for p in stored if secret.encode() in p.read_bytes()]
        assert leaked == [], (secret, leaked)
