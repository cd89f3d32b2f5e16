"""The application database: engine, ping, named locks, identifiers. Plain SQLAlchemy over PyMySQL."""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .dburl import DatabaseURL, parse_database_url, scrub_secret
from .errors import ConfigError, DatabaseUnavailable, LockBusy

# The GET_LOCK every writer of the application database holds (migrate, restore swap, rollback, recovery).
DB_WRITE_LOCK = "rusing_ops.app_db_write"

_IDENT = re.compile(r"[A-Za-z0-9_$]{1,64}")

# Server error codes that mean "check your settings", with the advice to give.
_LOGIN_ERRORS = {
    1045: "the server refused the user name or password",
    1044: "the user may not use that database",
    1049: "the database does not exist",
    2003: "nothing answered at that host and port",
    2005: "the host name does not resolve",
    2013: "the connection was lost during the handshake",
}


def quote_ident(name: str) -> str:
    """Backtick-quote a schema, table or column name after checking it is a plain identifier."""
    if not _IDENT.fullmatch(name or ""):
        raise ConfigError(f"{name!r} is not an identifier this tool accepts (letters, digits, _ and $; 1-64 chars).")
    return f"`{name}`"


def create_engine(url: DatabaseURL | str, *, database: str | None = None, pool_size: int = 4, **kwargs) -> Engine:
    """An engine with pre-ping, recycling and short connect timeouts (TiDB Cloud closes idle connections)."""
    if isinstance(url, str):
        url = parse_database_url(url)
    connect_args = {"connect_timeout": 10, "read_timeout": None, "write_timeout": None}
    connect_args.update(kwargs.pop("connect_args", {}))
    return sa.create_engine(
        url.sqlalchemy_url(database),
        pool_pre_ping=True,
        pool_recycle=300,
        pool_size=pool_size,
        max_overflow=4,
        connect_args=connect_args,
        hide_parameters=True,
        **kwargs,
    )


def explain_connection_error(exc: BaseException, url: DatabaseURL) -> DatabaseUnavailable:
    """One line: which server, what went wrong, with the password never shown."""
    orig = getattr(exc, "orig", exc)
    code = orig.args[0] if getattr(orig, "args", None) and isinstance(orig.args[0], int) else None
    detail = str(orig.args[1]) if code is not None and len(orig.args) > 1 else str(orig)
    detail = scrub_secret(detail.splitlines()[0] if detail else type(orig).__name__, url.password)
    reason = _LOGIN_ERRORS.get(code, "the connection failed")
    return DatabaseUnavailable(
        f"Cannot connect to {url.masked()}: {reason} (error {code}: {detail}).",
        next_step="check DATABASE_URL (host, port, user, password, database) and that the server is up.",
        code=code,
    )


@contextlib.contextmanager
def connect(engine: Engine, url: DatabaseURL) -> Iterator[Connection]:
    """A connection whose login failures come out as :class:`DatabaseUnavailable` naming the masked URL."""
    try:
        conn = engine.connect()
    except sa.exc.DBAPIError as exc:
        raise explain_connection_error(exc, url) from None
    with conn:
        yield conn


@dataclass(frozen=True)
class PingResult:
    server_version: str
    latency_ms: float
    database: str

    @property
    def flavour(self) -> str:
        v = self.server_version.lower()
        return "tidb" if "tidb" in v else "mariadb" if "mariadb" in v else "mysql"


def ping(engine: Engine, url: DatabaseURL) -> PingResult:
    """Round-trip ``SELECT VERSION()``; return server version and latency in milliseconds."""
    with connect(engine, url) as conn:
        started = time.perf_counter()
        version = conn.execute(sa.text("SELECT VERSION()")).scalar_one()
        latency = (time.perf_counter() - started) * 1000
        database = conn.execute(sa.text("SELECT DATABASE()")).scalar_one()
    return PingResult(server_version=str(version), latency_ms=round(latency, 2), database=str(database))


def lock_holder(conn: Connection, name: str) -> int | None:
    """The connection id holding lock ``name``, or None."""
    return conn.execute(sa.text("SELECT IS_USED_LOCK(:n)"), {"n": name}).scalar()


@contextlib.contextmanager
def named_lock(engine: Engine, url: DatabaseURL, name: str, timeout_s: float = 10.0) -> Iterator[Connection]:
    """Hold MySQL's ``GET_LOCK(name)`` for the duration of the block, on a connection of its own.

    The lock lives as long as that connection, so a crashed process releases it. Raises :class:`LockBusy`
    naming the holder's connection id (and what it is running) when it is not free within ``timeout_s``.
    """
    with connect(engine, url) as conn:
        got = conn.execute(sa.text("SELECT GET_LOCK(:n, :t)"), {"n": name, "t": timeout_s}).scalar()
        if got != 1:
            holder = lock_holder(conn, name)
            info = ""
            if holder is not None:
                row = conn.execute(
                    sa.text("SELECT USER, HOST, COMMAND, TIME, INFO FROM information_schema.PROCESSLIST WHERE ID = :i"),
                    {"i": holder},
                ).first()
                if row is not None:
                    info = f" ({row.USER}@{row.HOST}, {row.COMMAND} for {row.TIME}s)"
            raise LockBusy(
                f"Database lock {name!r} on {url.masked()} is held by connection {holder}{info}; "
                f"waited {timeout_s:g}s.",
                next_step=f"wait for that run to finish, or inspect it with `SHOW PROCESSLIST` (KILL {holder} only if it is stuck).",
                holder=holder,
            )
        try:
            yield conn
        finally:
            try:
                conn.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": name})
            except sa.exc.DBAPIError:
                pass  # the connection is gone, and the lock with it


def database_exists(conn: Connection, name: str) -> bool:
    return conn.execute(
        sa.text("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :n"), {"n": name}
    ).scalar_one() == 1


def list_tables(conn: Connection, schema: str, kind: str = "BASE TABLE") -> list[str]:
    rows = conn.execute(
        sa.text(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = :s AND TABLE_TYPE = :k "
            "ORDER BY TABLE_NAME"
        ),
        {"s": schema, "k": kind},
    )
    return [r[0] for r in rows]
