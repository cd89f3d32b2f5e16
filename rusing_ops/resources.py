"""Dagster resources: thin wrappers that build the library's clients from the configuration contract.

Secrets (database password inside DATABASE_URL, Stripe keys, Slack token) are only ever passed as
``dg.EnvVar``: Dagster then stores and shows the variable's name, never its value.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr
from sqlalchemy.engine import Connection, Engine

from .core import database as dbmod
from .core.app import AppControl
from .core.dburl import DatabaseURL, parse_database_url
from .core.store import BackupStore, open_store
from .core.stripe_api import CONNECT_TIMEOUT_S, READ_TIMEOUT_S, StripeAPI, connect_stripe, key_mode
from .settings import DEFAULT_DRIZZLE_DIR, DEFAULT_GENERATE_COMMAND, VARIABLES, resolve_path

# Every job that writes to the application database carries this tag (queued, one at a time, by the
# QueuedRunCoordinator's tag limit in dagster.yaml) and runs its writing op in this pool (a slot claimed at step
# start, which also holds for CLI / in-process runs against the instance). The database lock below is the
# last line: it also keeps out the app's own migrator and any process outside Dagster.
DB_WRITE_TAG_KEY = "rusing/db-write"
DB_WRITE_TAGS = {DB_WRITE_TAG_KEY: "app-db"}
DB_WRITE_POOL = "app_db_write"
DB_WRITE_LOCK = dbmod.DB_WRITE_LOCK


def from_env(name: str):
    """``dg.EnvVar(name)`` when the variable is set (Dagster then records only its name), else the documented
    default from settings.VARIABLES (``None`` for every secret)."""
    if os.environ.get(name, "").strip():
        return dg.EnvVar(name)
    return VARIABLES[name][1]


class DatabaseResource(dg.ConfigurableResource):
    """The application database (MySQL protocol: TiDB Cloud, MySQL, MariaDB) reached through DATABASE_URL."""

    url: str = Field(description="DATABASE_URL: mysql://user:password@host:port/db (set through an environment variable).")
    lock_timeout_seconds: float = Field(default=10.0, description="How long to wait for the database write lock.")
    drizzle_dir: str = Field(default=DEFAULT_DRIZZLE_DIR, description="DRIZZLE_DIR: the app's Drizzle folder (its "
                             "migrations; meta/_journal.json inside); a relative path is taken from the working directory.")
    generate_command: str = Field(default=DEFAULT_GENERATE_COMMAND, description="DRIZZLE_GENERATE_COMMAND: what "
                                  "`db generate` runs in the app repository.")

    _db: dbmod.Database | None = PrivateAttr(default=None)

    @property
    def parsed(self) -> DatabaseURL:
        return parse_database_url(self.url)

    @property
    def db(self) -> dbmod.Database:
        """The connection layer for DATABASE_URL (engine, raw connections, write lock, masked name, flavour)."""
        if self._db is None:
            self._db = dbmod.Database(self.parsed)
        return self._db

    def drizzle_folder(self, configured: str | None = None) -> Path:
        """The Drizzle folder describing this database's schema: a run's own ``drizzle_dir``, else DRIZZLE_DIR."""
        return resolve_path(configured or self.drizzle_dir)

    @property
    def engine(self) -> Engine:
        return self.db.engine

    def teardown_after_execution(self, context) -> None:
        if self._db is not None:
            self._db.dispose()

    def ping(self) -> dbmod.PingResult:
        return dbmod.ping(self.engine, self.parsed)

    @contextlib.contextmanager
    def connect(self) -> Iterator[Connection]:
        with dbmod.connect(self.engine, self.parsed) as conn:
            yield conn

    @contextlib.contextmanager
    def write_lock(self, timeout_s: float | None = None) -> Iterator[Connection]:
        """Hold the database-wide write lock (``GET_LOCK``) shared by migrate, restore, rollback and recovery."""
        with self.db.write_lock(self.lock_timeout_seconds if timeout_s is None else timeout_s) as conn:
            yield conn


class BackupStoreResource(dg.ConfigurableResource):
    """Where backups live: S3 (boto3 reads AWS_* itself, AWS_ENDPOINT_URL included) or a local directory."""

    url: str = Field(default=VARIABLES["RUSING_BACKUP_URL"][1], description="RUSING_BACKUP_URL: s3://bucket/prefix, file:///dir or a path relative to the working directory.")
    recipients: str | None = Field(default=None, description="RUSING_BACKUP_RECIPIENTS: age public keys (age1...) backups are encrypted to; unset = not encrypted.")
    identity: str | None = Field(default=None, description="RUSING_BACKUP_IDENTITY (secret, environment variable only): the AGE-SECRET-KEY-1... or the path of its file; needed to restore or verify encrypted backups.")
    copy_url: str | None = Field(default=None, description="RUSING_BACKUP_COPY_URL: a second store every backup is copied to (s3://other-bucket/prefix or a folder).")
    sse: str | None = Field(default=None, description="RUSING_BACKUP_SSE: S3 server-side encryption of every upload, AES256 or aws:kms.")
    sse_kms_key_id: str | None = Field(default=None, description="RUSING_BACKUP_SSE_KMS_KEY_ID: the KMS key of aws:kms.")
    lock_days: str | None = Field(default=None, description="RUSING_BACKUP_LOCK_DAYS: Object Lock retention (days) of every data object and manifest; unset = not locked.")
    lock_mode: str | None = Field(default=None, description="RUSING_BACKUP_LOCK_MODE: GOVERNANCE (default) or COMPLIANCE.")

    def get_store(self) -> BackupStore:
        from .backups.protect import Protection, protect

        here = resolve_path(".")  # a relative path is taken from the working directory (settings.py)
        return protect(open_store(self.url, base_dir=here),
                       Protection(self.recipients, self.identity, self.copy_url, self.sse, self.sse_kms_key_id,
                                  self.lock_days, self.lock_mode), base_dir=here)


class StripeResource(dg.ConfigurableResource):
    """Stripe through the official SDK (StripeClient), network retries on; unset key = "not configured"."""

    api_key: str | None = Field(default=None, description="STRIPE_SECRET_KEY (environment variable only).")
    webhook_secret: str | None = Field(default=None, description="STRIPE_WEBHOOK_SECRET: the app endpoint's signing secret (environment variable only).")
    api_base: str | None = Field(default=None, description="STRIPE_API_BASE: override of https://api.stripe.com (local servers, tests).")
    connect_timeout_seconds: float = Field(default=CONNECT_TIMEOUT_S, description="Connect timeout of each Stripe call.")
    read_timeout_seconds: float = Field(default=READ_TIMEOUT_S, description="Read timeout of each Stripe call (a Stripe that accepts and never answers fails after this, once per SDK attempt).")

    @property
    def configured(self) -> bool:
        return bool(self.api_key)

    @property
    def mode(self) -> str:
        return key_mode(self.api_key)

    def get_client(self) -> StripeAPI:
        return connect_stripe(self.api_key, self.api_base, connect_timeout_s=self.connect_timeout_seconds,
                              read_timeout_s=self.read_timeout_seconds)


class AppResource(dg.ConfigurableResource):
    """The RusingAcademy app: health and webhook endpoints, and stop/start/restart commands (pm2, Railway, ...)."""

    base_url: str | None = Field(default=None, description="APP_BASE_URL, e.g. https://www.rusingacademy.ca; unset = app checks skipped.")
    health_path: str = Field(default="/api/health", description="APP_HEALTH_PATH.")
    webhook_path: str = Field(default="/api/stripe/webhook", description="APP_WEBHOOK_PATH.")
    stop_command: str | None = Field(default=None, description="RUSING_APP_STOP_COMMAND, e.g. `pm2 stop all`; unset = stopping does nothing and says so.")
    start_command: str | None = Field(default=None, description="RUSING_APP_START_COMMAND, e.g. `pm2 start all`.")
    restart_command: str | None = Field(default=None, description="RUSING_APP_RESTART_COMMAND, e.g. `pm2 restart all` or `railway redeploy -y`.")
    timeout_seconds: float = Field(default=10.0, description="HTTP timeout for the app's endpoints.")

    def get_control(self) -> AppControl:
        return AppControl(self.base_url, health_path=self.health_path, webhook_path=self.webhook_path,
                          stop_command=self.stop_command, start_command=self.start_command,
                          restart_command=self.restart_command, timeout_s=self.timeout_seconds)


class AlertResource(dg.ConfigurableResource):
    """Where run-failure alerts go: Slack (token + channel), else a generic webhook URL, else the log only."""

    slack_token: str | None = Field(default=None, description="SLACK_BOT_TOKEN (environment variable only).")
    slack_channel: str | None = Field(default=None, description="RUSING_SLACK_CHANNEL, e.g. #ops-alerts.")
    webhook_url: str | None = Field(default=None, description="RUSING_ALERT_WEBHOOK_URL (environment variable only; may embed a token).")
    slack_api_base: str | None = Field(default=None, description="SLACK_API_BASE_URL: override of https://slack.com/api/ (tests, proxies).")
    ui_url: str | None = Field(default=None, description="DAGSTER_WEBSERVER_URL: the UI's address, so an alert links to the failed run.")


def default_resources() -> dict:
    """Resources built from the environment as it is when the code location loads."""
    return {
        "database": DatabaseResource(url=from_env("DATABASE_URL"), drizzle_dir=from_env("DRIZZLE_DIR"),
                                     generate_command=from_env("DRIZZLE_GENERATE_COMMAND")),
        "backup_store": BackupStoreResource(
            url=from_env("RUSING_BACKUP_URL"), recipients=from_env("RUSING_BACKUP_RECIPIENTS"),
            identity=from_env("RUSING_BACKUP_IDENTITY"), copy_url=from_env("RUSING_BACKUP_COPY_URL"),
            sse=from_env("RUSING_BACKUP_SSE"), sse_kms_key_id=from_env("RUSING_BACKUP_SSE_KMS_KEY_ID"),
            lock_days=from_env("RUSING_BACKUP_LOCK_DAYS"), lock_mode=from_env("RUSING_BACKUP_LOCK_MODE")),
        "stripe": StripeResource(api_key=from_env("STRIPE_SECRET_KEY"),
                                 webhook_secret=from_env("STRIPE_WEBHOOK_SECRET"),
                                 api_base=from_env("STRIPE_API_BASE")),
        "app": AppResource(base_url=from_env("APP_BASE_URL"),
                           health_path=from_env("APP_HEALTH_PATH"), webhook_path=from_env("APP_WEBHOOK_PATH"),
                           stop_command=from_env("RUSING_APP_STOP_COMMAND"),
                           start_command=from_env("RUSING_APP_START_COMMAND"),
                           restart_command=from_env("RUSING_APP_RESTART_COMMAND")),
        "alerts": AlertResource(slack_token=from_env("SLACK_BOT_TOKEN"),
                                slack_channel=from_env("RUSING_SLACK_CHANNEL"),
                                webhook_url=from_env("RUSING_ALERT_WEBHOOK_URL"),
                                slack_api_base=from_env("SLACK_API_BASE_URL"),
                                ui_url=from_env("DAGSTER_WEBSERVER_URL")),
    }
