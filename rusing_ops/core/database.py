"""The one connection layer: every connection to the application database (SQLAlchemy engine or raw PyMySQL)
is opened here, from one :class:`DatabaseURL`, with every option of the URL (TLS included) applied.

:class:`Database` bundles them: ``engine``, ``raw()`` connections, the write lock and the masked name.
``create_engine(url)`` / ``raw_connect(url)`` are the same layer for code that holds only a URL.
"""

from __future__ import annotations

import contextlib
import os
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import pymysql
import pymysql.converters

if TYPE_CHECKING:  # SQLAlchemy is imported where an engine is used: a backup (raw PyMySQL) never loads it (~0.2 s)
    from sqlalchemy.engine import Connection, Engine

from .dburl import DatabaseURL, parse_database_url, scrub_secret
from .errors import ConfigError, DatabaseUnavailable, LockBusy

# The GET_LOCK every writer of the application database holds (migrate, restore swap, rollback, recovery).
DB_WRITE_LOCK = "rusing_ops.app_db_write"


def scoped_lock_name(name: str, database: str) -> str:
    """``name`` for one database: ``GET_LOCK`` names are server-wide, and two databases on one server (the app's and
    a drill's, or two apps) must not wait for each other. MySQL caps a lock name at 64 characters: a long database
    name is replaced by its hash (still one name per database)."""
    scoped = f"{name}.{database}"
    if len(scoped) <= 64:
        return scoped
    import hashlib

    return f"{name}.{hashlib.sha256(database.encode()).hexdigest()[: 63 - len(name)]}"

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

# Encoders only (keyed by Python type): parameters are still escaped, but every value comes back as raw bytes.
RAW_CONVERSIONS = {k: v for k, v in pymysql.converters.conversions.items() if isinstance(k, type)}
_URL_KEYS = ("host", "port", "user", "password", "database")


def quote_ident(name: str) -> str:
    """Backtick-quote a schema, table or column name: any name MySQL accepts (a backtick inside is doubled).

    Refused: the empty name, NUL, and names over 64 characters (MySQL's limit for every identifier).
    """
    if not isinstance(name, str) or not name or "\x00" in name or len(name) > 64:
        raise ConfigError(f"{name!r} is not a name MySQL accepts (1 to 64 characters, no NUL).",
                          next_step="use the database, table or column name exactly as the server shows it.")
    return "`" + name.replace("`", "``") + "`"


def create_engine(url: DatabaseURL | str, *, database: str | None = None, pool_size: int = 4, **kwargs) -> Engine:
    """An engine with pre-ping, recycling and short connect timeouts (TiDB Cloud closes idle connections).

    Every URL option reaches every pooled connection through ``connect_args`` (the engine's URL carries only the
    address); a connection that should be encrypted and is not is closed before it is used.
    """
    import sqlalchemy as sa

    if isinstance(url, str):
        url = parse_database_url(url)
    connect_args = {k: v for k, v in url.pymysql_kwargs(database).items() if k not in _URL_KEYS}
    connect_args.update(read_timeout=None, write_timeout=None)
    connect_args.update(kwargs.pop("connect_args", {}))
    engine = sa.create_engine(
        url.sqlalchemy_url(database),
        pool_pre_ping=True,
        pool_recycle=300,
        pool_size=pool_size,
        max_overflow=4,
        connect_args=connect_args,
        hide_parameters=True,
        **kwargs,
    )
    if url.tls.required:
        @sa.event.listens_for(engine, "connect")
        def _refuse_plain_text(dbapi_conn, _record):
            _check_secure(dbapi_conn, url)
    return engine


class _SharedTLSConnection(pymysql.connections.Connection):
    """PyMySQL's connection, except that connections with the same TLS settings share one ``SSLContext`` (built
    by PyMySQL's own code, so the same verification): PyMySQL builds one per connection, loading the CA bundle each
    time (~30 ms; a backup opens four). A CA, certificate or key file that changes on disk gets a new context."""

    _contexts: ClassVar[dict] = {}
    _lock = threading.Lock()

    def _create_ssl_ctx(self, sslp):
        if isinstance(sslp, ssl.SSLContext):
            return sslp
        files = tuple(os.stat(sslp[k]).st_mtime_ns if sslp.get(k) else None for k in ("ca", "capath", "cert", "key"))
        key = (tuple(sorted((k, str(v)) for k, v in sslp.items())), files)
        with self._lock:
            if key not in self._contexts:
                self._contexts[key] = super()._create_ssl_ctx(sslp)
            return self._contexts[key]


def raw_connect(url: DatabaseURL, database: str | None = None, *, raw_bytes: bool = True, **kwargs):
    """A PyMySQL connection (autocommit) to ``database`` (default: the URL's; ``""`` for none).

    ``raw_bytes``: every value comes back as bytes (``use_unicode=False`` and no decoders), as dump, load and
    verify need. Failures become :class:`DatabaseUnavailable` naming the masked URL (TLS failures said as such).
    """
    options = url.pymysql_kwargs(database)
    options["autocommit"] = True
    if raw_bytes:
        options.update(use_unicode=False, conv=RAW_CONVERSIONS)
    options.update(kwargs)
    shown = url.with_database(url.database if database is None else (database or url.database))
    try:
        conn = _SharedTLSConnection(**options)
    except (pymysql.err.MySQLError, ssl.SSLError, OSError) as exc:
        raise explain_connection_error(exc, shown) from None
    try:
        _check_secure(conn, shown)
    except DatabaseUnavailable:
        conn.close()
        raise
    return conn


def _check_secure(conn, url: DatabaseURL) -> None:
    """Belt and braces over PyMySQL >= 1.2: a connection whose mode requires TLS and that is not encrypted."""
    if url.tls.required and not isinstance(getattr(conn, "_sock", None), ssl.SSLSocket):
        raise DatabaseUnavailable(
            f"Cannot connect to {url.masked()}: the connection is not encrypted although ssl_mode={url.tls.mode} "
            "requires it; it was closed before any query.",
            next_step="check that the server has TLS enabled (`SHOW VARIABLES LIKE 'have_ssl'`).",
        )


class Database:
    """The application database reached through one ``DATABASE_URL``: engine, raw connections, write lock, name.

    Built once per process and URL (:meth:`of`); the server flavour is detected on first use and kept.
    """

    _instances: ClassVar[dict] = {}

    def __init__(self, url: DatabaseURL | str | None):
        self.url = url if isinstance(url, DatabaseURL) else parse_database_url(url)
        self._engine: Engine | None = None
        self._flavour = None

    @classmethod
    def of(cls, url: DatabaseURL | str | None) -> Database:
        url = url if isinstance(url, DatabaseURL) else parse_database_url(url)
        if url not in cls._instances:
            cls._instances[url] = cls(url)
        return cls._instances[url]

    @property
    def name(self) -> str:
        return self.url.masked()

    def __repr__(self) -> str:
        return f"Database({self.name!r})"

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self.url)
        return self._engine

    def raw(self, database: str | None = None, **kwargs):
        """A raw-bytes PyMySQL connection (see :func:`raw_connect`)."""
        return raw_connect(self.url, database, **kwargs)

    @contextlib.contextmanager
    def connect(self) -> Iterator[Connection]:
        with connect(self.engine, self.url) as conn:
            yield conn

    @contextlib.contextmanager
    def write_lock(self, timeout_s: float = 10.0) -> Iterator[Connection]:
        with named_lock(self.engine, self.url, DB_WRITE_LOCK, timeout_s) as conn:
            yield conn

    def flavour(self):
        """The server's :class:`~rusing_ops.core.flavour.Flavour` (detected once per server)."""
        if self._flavour is None:
            from .flavour import flavour_of

            self._flavour = flavour_of(self.url)
        return self._flavour

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def explain_connection_error(exc: BaseException, url: DatabaseURL) -> DatabaseUnavailable:
    """One line: which server, what went wrong (TLS failures named as such), with the password never shown."""
    from .flavour import paused_cluster_message

    orig = getattr(exc, "orig", exc)
    cause = getattr(orig, "original_exception", None) or orig
    code = orig.args[0] if getattr(orig, "args", None) and isinstance(orig.args[0], int) else None
    detail = str(orig.args[1]) if code is not None and len(orig.args) > 1 else str(orig)
    detail = scrub_secret(detail.splitlines()[0] if detail else type(orig).__name__, url.password)
    tls = _explain_tls(cause, code, detail, url)
    if tls is not None:
        return tls
    paused = paused_cluster_message(code, detail)
    if paused is not None:
        return DatabaseUnavailable(f"Cannot connect to {url.masked()}: {paused} (error {code}: {detail}).",
                                   next_step="resume the cluster in the TiDB Cloud console, then rerun.", code=code)
    reason = _LOGIN_ERRORS.get(code, "the connection failed")
    return DatabaseUnavailable(
        f"Cannot connect to {url.masked()}: {reason} (error {code}: {detail}).",
        next_step="check DATABASE_URL (host, port, user, password, database) and that the server is up.",
        code=code,
    )


def _explain_tls(cause: BaseException, code: int | None, detail: str, url: DatabaseURL) -> DatabaseUnavailable | None:
    """The TLS reading of a connection failure, or None when it was not about TLS."""
    where = f"Cannot connect to {url.masked()}:"
    tls = url.tls
    ca = f"ssl_ca {tls.ca}" if tls.ca else "the system CA bundle"
    if isinstance(cause, ssl.SSLCertVerificationError):
        why = cause.verify_message or str(cause)
        if "hostname" in why.lower() or "ip address mismatch" in why.lower():
            return DatabaseUnavailable(
                f"{where} TLS certificate verification failed: the server's certificate does not name host "
                f"{url.host!r} ({why}); connect by a name the certificate lists, or set ssl_mode=VERIFY_CA in "
                "DATABASE_URL. Nothing was sent but the TLS handshake.",
                next_step="fix DATABASE_URL's host or ssl_mode, then rerun.", code=code, tls=True)
        return DatabaseUnavailable(
            f"{where} TLS certificate verification failed against {ca} ({why}); set ssl_ca=/path/to/the CA that "
            "signed the server's certificate in DATABASE_URL. Nothing was sent but the TLS handshake.",
            next_step="add ssl_ca=... to DATABASE_URL, then rerun.", code=code, tls=True)
    if isinstance(cause, ssl.SSLError):
        return DatabaseUnavailable(
            f"{where} the TLS handshake failed ({scrub_secret(str(cause), url.password)}); check ssl_ca, ssl_cert "
            "and ssl_key in DATABASE_URL. Nothing was sent but the TLS handshake.",
            next_step="fix the TLS options, then rerun.", code=code, tls=True)
    if code == 2026:  # CR_SSL_CONNECTION_ERROR: TLS required, the server offers none
        return DatabaseUnavailable(
            f"{where} the server does not offer TLS, and ssl_mode={tls.mode} ({tls.why}) requires it; the password "
            "was not sent. Enable TLS on the server, or on a trusted network set ssl_mode=PREFERRED in DATABASE_URL.",
            next_step="enable TLS on the server (or change ssl_mode), then rerun.", code=code, tls=True)
    lowered = detail.lower()
    if tls.mode == "DISABLED" and code == 1045:  # MariaDB's answer to a plain-text login under require_secure_transport
        return DatabaseUnavailable(
            f"{where} the server refused the login (error {code}: {detail}), and ssl_mode=DISABLED sent it without "
            "TLS: a server that requires secure transport answers exactly this. Remove ssl_mode=DISABLED (or set "
            "ssl_mode=VERIFY_IDENTITY) in DATABASE_URL; otherwise check the user name and password.",
            next_step="change ssl_mode in DATABASE_URL, then rerun.", code=code, tls=True)
    if tls.mode in ("DISABLED", "PREFERRED") and ("secure transport" in lowered or "--require-secure" in lowered):
        return DatabaseUnavailable(
            f"{where} the server requires TLS and ssl_mode={tls.mode} ({tls.why}) did not use it (error {code}: "
            f"{detail}); set ssl_mode=VERIFY_IDENTITY (with ssl_ca=... for a private CA) in DATABASE_URL.",
            next_step="change ssl_mode in DATABASE_URL, then rerun.", code=code, tls=True)
    return None


@contextlib.contextmanager
def connect(engine: Engine, url: DatabaseURL) -> Iterator[Connection]:
    """A connection whose login failures come out as :class:`DatabaseUnavailable` naming the masked URL."""
    import sqlalchemy as sa

    try:
        conn = engine.connect()
    except (sa.exc.DBAPIError, ssl.SSLError, OSError) as exc:
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
        from .flavour import kind_from_version

        return kind_from_version(self.server_version)


def ping(engine: Engine, url: DatabaseURL) -> PingResult:
    """Round-trip ``SELECT VERSION()``; return server version and latency in milliseconds."""
    import sqlalchemy as sa

    with connect(engine, url) as conn:
        started = time.perf_counter()
        version = conn.execute(sa.text("SELECT VERSION()")).scalar_one()
        latency = (time.perf_counter() - started) * 1000
        database = conn.execute(sa.text("SELECT DATABASE()")).scalar_one()
    return PingResult(server_version=str(version), latency_ms=round(latency, 2), database=str(database))


@contextlib.contextmanager
def named_lock(engine: Engine, url: DatabaseURL, name: str, timeout_s: float = 10.0) -> Iterator[Connection]:
    """Hold MySQL's ``GET_LOCK(name)`` for the duration of the block, on a connection of its own. The database write
    lock ``DB_WRITE_LOCK`` is taken for ``url``'s database only.

    The lock lives as long as that connection, so a crashed process releases it. Raises :class:`LockBusy`
    naming the holder's connection id (and what it is running) when it is not free within ``timeout_s``.
    """
    import sqlalchemy as sa

    with connect(engine, url) as conn:
        version = getattr(conn.connection.dbapi_connection, "server_version", "") or ""
        with held_lock(lambda sql, args: conn.exec_driver_sql(sql, args).first(), version, url, name, timeout_s,
                       gone=sa.exc.DBAPIError):
            yield conn


@contextlib.contextmanager
def held_lock(row: Callable[[str, tuple], tuple | None], version: str, url: DatabaseURL, name: str,
              timeout_s: float, gone: type[BaseException] | tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """:func:`named_lock` on any connection: ``row(sql, args)`` runs one query (``%s`` parameters) on the connection
    that is to hold the lock and returns its first row. ``gone``: the errors of a connection that went away (its
    lock went with it), ignored on release. The restore takes its lock so on a PyMySQL connection (no SQLAlchemy:
    0.14 s less per restore process)."""
    from .flavour import kind_from_version, lock_wait_seconds

    if name == DB_WRITE_LOCK:  # the write lock is per database (see scoped_lock_name)
        name = scoped_lock_name(name, url.database)
    timeout_s = lock_wait_seconds(version, timeout_s)
    got = row("SELECT GET_LOCK(%s, %s)", (name, timeout_s))
    if got is None or got[0] is None or int(got[0]) != 1:  # 0: timed out; NULL: an error (killed)
        if kind_from_version(version) == "tidb":  # TiDB's IS_USED_LOCK does not name the holder (locking-functions)
            raise LockBusy(
                f"Database lock {name!r} on {url.masked()} is held by another session (TiDB does not say which); "
                f"waited {timeout_s:g}s.",
                next_step="wait for the other rusing-ops run (or the app's migrator) to finish; `SHOW PROCESSLIST` "
                          "lists the sessions.", holder=None)
        found = row("SELECT IS_USED_LOCK(%s)", (name,))
        holder = int(found[0]) if found and found[0] is not None else None
        info = ""
        if holder is not None:
            who = row("SELECT USER, HOST, COMMAND, TIME, INFO FROM information_schema.PROCESSLIST WHERE ID = %s",
                      (holder,))
            if who is not None:
                user, host, command, seconds = (as_text(v) if isinstance(v, bytes) else v for v in who[:4])
                info = f" ({user}@{host}, {command} for {seconds}s)"
        raise LockBusy(
            f"Database lock {name!r} on {url.masked()} is held by connection {holder}{info}; "
            f"waited {timeout_s:g}s.",
            next_step=f"wait for that run to finish, or inspect it with `SHOW PROCESSLIST` (KILL {holder} only if it is stuck).",
            holder=holder,
        )
    try:
        yield
    finally:
        try:
            row("SELECT RELEASE_LOCK(%s)", (name,))
        except gone:
            pass  # the connection is gone, and the lock with it


def database_exists(conn: Connection, name: str) -> bool:
    import sqlalchemy as sa

    return conn.execute(
        sa.text("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :n"), {"n": name}
    ).scalar_one() == 1


# ------------------------------------------------------------------------------- the tables of a schema
# The two questions asked of information_schema.TABLES, written once. Each takes a SQLAlchemy Connection or a raw
# PyMySQL cursor (the backup pipeline's connections), and names are str either way (PyMySQL's binary-safe
# connections give bytes). ``schema=None`` means the connection's current database (DATABASE()).
ROW_TABLES = ("BASE TABLE", "SYSTEM VERSIONED")  # what holds rows (MariaDB's system-versioned tables included)


def _query(conn, sql: str, args: tuple) -> list[tuple]:
    if hasattr(conn, "exec_driver_sql"):  # a SQLAlchemy Connection (a PyMySQL cursor has no such method)
        return [tuple(r) for r in conn.exec_driver_sql(sql, args)]
    conn.execute(sql, args)
    return list(conn.fetchall())


def as_text(value) -> str:
    """A value PyMySQL returned (bytes from information_schema and SHOW output, a number, NULL) as str; NULL is ""."""
    return value.decode() if isinstance(value, (bytes, bytearray)) else "" if value is None else str(value)


def list_tables(conn, schema: str | None = None, kind: str | tuple[str, ...] = "BASE TABLE") -> list[str]:
    """The names of ``schema``'s tables of ``kind`` (one TABLE_TYPE or several, e.g. :data:`ROW_TABLES`), sorted."""
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    where = "TABLE_SCHEMA = %s" if schema is not None else "TABLE_SCHEMA = DATABASE()"
    sql = (f"SELECT TABLE_NAME FROM information_schema.TABLES WHERE {where} "
           f"AND TABLE_TYPE IN ({', '.join(['%s'] * len(kinds))}) ORDER BY TABLE_NAME")
    return [as_text(r[0]) for r in _query(conn, sql, ((schema,) if schema is not None else ()) + kinds)]


def table_exists(conn, name: str, schema: str | None = None) -> bool:
    """Whether ``schema`` (default: the current database) holds a table or view named ``name``."""
    where = "TABLE_SCHEMA = %s" if schema is not None else "TABLE_SCHEMA = DATABASE()"
    rows = _query(conn, f"SELECT COUNT(*) FROM information_schema.TABLES WHERE {where} AND TABLE_NAME = %s",
                  ((schema,) if schema is not None else ()) + (name,))
    return int(rows[0][0]) > 0
