"""The configuration contract (DESIGN.md §5) in one place: every environment variable this tool reads, its meaning
and its default, declared once in :data:`VARIABLES` and read through :func:`env` (README's configuration table is
generated from it: :func:`readme_table`, kept equal by rusing_ops_tests/test_settings.py).

Relative paths (``RUSING_BACKUP_URL=./backups``, ``DRIZZLE_DIR``, ``DAGSTER_HOME``) are taken from the working
directory of the command, the daemon or the code server: not from where the package is installed (that is
``site-packages`` on a normal install)."""

from __future__ import annotations

import os
from pathlib import Path

from .core.dburl import DEFAULT_DATABASE_URL, parse_database_url
from .core.store import DEFAULT_BACKUP_URL

# The source checkout (README.md, dagster.yaml, deploy/): files shipped beside the package, never a default location
# for data. Only :func:`shipped_file` and the tests use it.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DRIZZLE_DIR = "examples/rusing-app/drizzle"
DEFAULT_GENERATE_COMMAND = "pnpm drizzle-kit generate"
DEFAULT_WEBHOOK_PATH = "/api/stripe/webhook"
DEFAULT_HEALTH_PATH = "/api/health"
DEFAULT_DAGSTER_HOME = ".dagster_home"

# name -> (meaning, default); README's configuration table is generated from the same facts.
VARIABLES: dict[str, tuple[str, str | None]] = {
    "DATABASE_URL": (("application database, mysql://user:pass@host:port/db (also mysql+pymysql://); TLS options "
                     "below"), DEFAULT_DATABASE_URL),
    "RUSING_BACKUP_URL": ("where backups live: s3://bucket/prefix, file:///abs/dir or a relative dir", DEFAULT_BACKUP_URL),
    "DRIZZLE_DIR": ("the app's Drizzle folder (meta/_journal.json inside)", DEFAULT_DRIZZLE_DIR),
    "DRIZZLE_GENERATE_COMMAND": ("what `db generate` runs in the app repo", DEFAULT_GENERATE_COMMAND),
    "STRIPE_SECRET_KEY": ("Stripe API key (secret)", None),
    "STRIPE_WEBHOOK_SECRET": ("the app's webhook endpoint signing secret (secret)", None),
    "STRIPE_API_BASE": ("Stripe API base URL (tests, local servers)", None),
    "APP_BASE_URL": ("the app, for /api/health and the webhook endpoint", None),
    "APP_WEBHOOK_PATH": ("the app's Stripe webhook path", DEFAULT_WEBHOOK_PATH),
    "APP_HEALTH_PATH": ("the app's health path", DEFAULT_HEALTH_PATH),
    "RUSING_APP_STOP_COMMAND": ("shell command that stops the app, e.g. `pm2 stop all`", None),
    "RUSING_APP_START_COMMAND": ("shell command that starts the app, e.g. `pm2 start all`", None),
    "RUSING_APP_RESTART_COMMAND": ("shell command that restarts the app, e.g. `pm2 restart all`", None),
    "SLACK_BOT_TOKEN": ("Slack bot token for run-failure alerts (secret)", None),
    "RUSING_SLACK_CHANNEL": ("Slack channel for alerts, e.g. #ops-alerts", None),
    "RUSING_ALERT_WEBHOOK_URL": ("generic webhook URL for alerts when Slack is not configured", None),
    "SLACK_API_BASE_URL": ("override of Slack's API base URL (tests, proxies)", None),
    "RUSING_BINLOG_ARCHIVE_INTERVAL_S": ("seconds between binlog archive passes under writes (the RPO's bound)", "60"),
    "RUSING_WRITE_WAIT_S": ("seconds a CLI write command waits for the database write slot before giving up", "600"),
    "RUSING_BACKUP_RECIPIENTS": (("age public keys (age1..., comma or space separated) every backup is encrypted to; "
                                 "unset = backups are not encrypted"), None),
    "RUSING_BACKUP_IDENTITY": (("the age identity that decrypts backups to restore or verify them: the "
                               "AGE-SECRET-KEY-1... itself or the path of a file holding it (secret)"), None),
    "RUSING_BACKUP_COPY_URL": (("a second store every backup is copied to and checked in (another bucket, endpoint "
                               "or folder); unset = one copy"), None),
    "RUSING_BACKUP_SSE": ("S3 server-side encryption of every upload: AES256 (SSE-S3) or aws:kms (SSE-KMS)", None),
    "RUSING_BACKUP_SSE_KMS_KEY_ID": ("the KMS key id of RUSING_BACKUP_SSE=aws:kms (default: the bucket's key)", None),
    "RUSING_BACKUP_LOCK_DAYS": (("days of S3 Object Lock retention on every data object and manifest (the bucket "
                                "needs versioning + Object Lock); unset = not locked"), None),
    "RUSING_BACKUP_LOCK_MODE": ("Object Lock mode: GOVERNANCE or COMPLIANCE", "GOVERNANCE"),
    "RUSING_DRILL_CRON": ("cron of the restore drill (restore_drill_schedule, America/Toronto)", "0 5 * * 0"),
    "RUSING_DRILL_PICK": ("which backup a drill restores: latest, or random:N (random within the last N days)",
                          "latest"),
    "RUSING_RTO_TARGET_S": ("restore drill target: a restore takes at most this many seconds", "3600"),
    "RUSING_RPO_TARGET_H": ("restore drill target: the newest verified backup is at most this many hours old", "26"),
    "RUSING_RETENTION_CRON": ("cron of the scheduled prune (retention_schedule, America/Toronto)", "30 4 * * *"),
    "RUSING_RETENTION_APPLY": ("true = the scheduled prune deletes; anything else = dry run (reports only)", "false"),
    "DAGSTER_HOME": (("the Dagster instance folder (dagster.yaml, run storage); a new one gets the project's "
                     "dagster.yaml"), DEFAULT_DAGSTER_HOME),
    "DAGSTER_WEBSERVER_URL": ("the Dagster UI's address, e.g. https://ops.example.com: alerts link to the failed run",
                              None),
    "RUSING_OPS_LOG_LEVEL": (("the Dagster log level a CLI run prints on the terminal (`rusing-ops -v` = DEBUG); the "
                             "full log is in the UI"), "CRITICAL"),
}


def env(name: str) -> str | None:
    """The variable's value, or its documented default; empty strings count as unset."""
    value = os.environ.get(name, "").strip()
    return value or VARIABLES[name][1]


def database_url():
    """DATABASE_URL parsed (its documented default when unset): the one reading of it for the CLI and the UI's
    load-time labels. A malformed URL raises its ConfigError (the UI's callers catch it: the code location loads)."""
    return parse_database_url(env("DATABASE_URL"))


def resolve_path(path: str | Path) -> Path:
    """A relative path is taken from the working directory (of the command, the daemon or the code server)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path.cwd() / p


def dagster_home() -> Path:
    """The instance folder: ``DAGSTER_HOME``, else ``.dagster_home`` in the working directory (absolute)."""
    return resolve_path(env("DAGSTER_HOME")).resolve()


def shipped_file(name: str) -> Path:
    """A file shipped with the project (e.g. ``dagster.yaml``), from the source checkout."""
    return PROJECT_ROOT / name


def readme_table() -> str:
    """README's configuration table, generated from :data:`VARIABLES` (one row per variable, in order)."""
    rows = ["| variable | meaning | default |", "|---|---|---|"]
    for name, (meaning, default) in VARIABLES.items():
        rows.append(f"| `{name}` | {meaning} | {f'`{default}`' if default is not None else 'unset'} |")
    return "\n".join(rows) + "\n"
