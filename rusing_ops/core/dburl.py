"""Database URLs: parse `DATABASE_URL`, normalise the driver, and hide the password everywhere."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from .errors import ConfigError

DEFAULT_DATABASE_URL = "mysql://root@127.0.0.1:3306/rusing"
_ACCEPTED_SCHEMES = {"mysql", "mysql+pymysql", "mariadb", "mariadb+pymysql"}
_PASSWORD_IN_URL = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<tail>@)", re.I)


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed MySQL-protocol URL. ``str()`` never shows the password; use :meth:`sqlalchemy_url` to connect."""

    user: str
    password: str
    host: str
    port: int
    database: str
    query: str = ""

    def __str__(self) -> str:
        return self.masked()

    def __repr__(self) -> str:
        return f"DatabaseURL({self.masked()!r})"

    def masked(self) -> str:
        auth = quote(self.user, safe="") + (":***" if self.password else "")
        return f"mysql://{auth}@{self.host}:{self.port}/{self.database}"

    def sqlalchemy_url(self, database: str | None = None):
        from sqlalchemy.engine import URL

        query = dict(part.split("=", 1) for part in self.query.split("&") if "=" in part)
        query.setdefault("charset", "utf8mb4")
        return URL.create(
            "mysql+pymysql",
            username=self.user,
            password=self.password or None,
            host=self.host,
            port=self.port,
            database=self.database if database is None else (database or None),
            query=query,
        )

    def with_database(self, database: str) -> "DatabaseURL":
        return DatabaseURL(self.user, self.password, self.host, self.port, database, self.query)

    def pymysql_kwargs(self, database: str | None = None) -> dict:
        return dict(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=self.database if database is None else (database or None),
            charset="utf8mb4",
        )


def parse_database_url(url: str | None) -> DatabaseURL:
    """Parse ``url`` (``mysql://`` or ``mysql+pymysql://``); raise :class:`ConfigError` naming the problem.

    The error text never contains the password.
    """
    if url is None or not url.strip():
        url = DEFAULT_DATABASE_URL
    url = url.strip()
    shown = mask_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"DATABASE_URL {shown!r} is not a valid URL ({_scrub(str(exc), url)}).") from None
    scheme = parts.scheme.lower()
    if scheme not in _ACCEPTED_SCHEMES:
        raise ConfigError(
            f"DATABASE_URL {shown!r} has scheme {scheme or '(none)'!r}; expected mysql:// or mysql+pymysql://, "
            "e.g. mysql://user:password@host:3306/dbname."
        )
    if not parts.hostname:
        raise ConfigError(f"DATABASE_URL {shown!r} names no host; expected mysql://user:password@host:3306/dbname.")
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise ConfigError(f"DATABASE_URL {shown!r} names no database; expected mysql://user:password@host:3306/dbname.")
    if not re.fullmatch(r"[A-Za-z0-9_$-]{1,64}", database):
        raise ConfigError(f"DATABASE_URL {shown!r}: database name {database!r} has characters this tool does not accept.")
    return DatabaseURL(
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        host=parts.hostname,
        port=port or 3306,
        database=database,
        query=parts.query,
    )


def mask_url(url: str) -> str:
    """Replace the password of any ``scheme://user:password@`` in ``url`` (or any text) with ``***``."""
    return _PASSWORD_IN_URL.sub(lambda m: m.group("head") + "***" + m.group("tail"), url)


def _scrub(text: str, url: str) -> str:
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return text.replace(password, "***") if password else text


def scrub_secret(text: str, *secrets: str | None) -> str:
    """Remove every given secret (and any URL password) from ``text``."""
    text = mask_url(text)
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    return text
