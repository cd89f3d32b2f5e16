"""Database URLs: parse `DATABASE_URL` (SQLAlchemy's URL grammar), its connection options, and the masked name.

Every option of the URL's query reaches every connection (SQLAlchemy engine and raw PyMySQL alike) through
:meth:`DatabaseURL.pymysql_kwargs`: ``ssl_mode`` (the mysql client's DISABLED / PREFERRED / REQUIRED / VERIFY_CA /
VERIFY_IDENTITY), ``ssl_ca``, ``ssl_cert``, ``ssl_key``, ``ssl_verify_cert``, ``ssl_verify_identity`` (PyMySQL's
names), ``charset`` and ``connect_timeout``. Without ``ssl_mode`` a host that is not loopback gets
``VERIFY_IDENTITY`` against the system CA bundle (TiDB Cloud's own recommendation); loopback gets ``PREFERRED``.
An option this module does not know is refused, never ignored.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from dataclasses import dataclass
from urllib.parse import quote, unquote

from .errors import ConfigError

DEFAULT_DATABASE_URL = "mysql://root@127.0.0.1:3306/rusing"
_ACCEPTED_SCHEMES = {"mysql", "mysql+pymysql", "mariadb", "mariadb+pymysql"}
SSL_MODES = ("DISABLED", "PREFERRED", "REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY")
OPTIONS = ("ssl_mode", "ssl_ca", "ssl_cert", "ssl_key", "ssl_verify_cert", "ssl_verify_identity", "charset",
           "connect_timeout", "ssl")
_EXAMPLE = "mysql://user:password@host:4000/dbname?ssl_mode=VERIFY_IDENTITY"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# SQLAlchemy 2.0's URL grammar (sqlalchemy.engine.url._parse_url), written here so that parsing a URL does not
# import SQLAlchemy (~0.2 s): a backup process never needs it otherwise.
_URL = re.compile(r"""
    (?P<name>[\w\+]+)://
    (?:(?P<username>[^:/]*)(?::(?P<password>[^@]*))?@)?
    (?:(?:\[(?P<ipv6host>[^/\?]+)\]|(?P<ipv4host>[^/:\?]+))?(?::(?P<port>[^/\?]*))?)?
    (?:/(?P<database>[^\?]*))?
    (?:\?(?P<query>.*))?
    """, re.VERBOSE)
_SCHEME_PREFIX = re.compile(r"^[^A-Za-z0-9]*(?:[A-Za-z][A-Za-z0-9+.-]*:?/{1,2})?")
_PASSWORD_PARAM = re.compile(r"(?i)\b(password|passwd|pwd)=[^&\s]*")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclass(frozen=True)
class TLSSettings:
    """What one connection does about TLS: ``mode`` (one of SSL_MODES) and the files it uses."""

    mode: str
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    why: str = ""  # how the mode was chosen, for messages ("ssl_mode=REQUIRED", "default for a remote host")

    @property
    def verifies(self) -> bool:
        return self.mode in ("VERIFY_CA", "VERIFY_IDENTITY")

    @property
    def required(self) -> bool:
        return self.mode in ("REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY")


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed MySQL-protocol URL. ``str()`` never shows the password; use :meth:`pymysql_kwargs` to connect."""

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
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mysql://{auth}@{host}:{self.port}/{self.database}"

    @property
    def options(self) -> dict[str, str]:
        return _parse_query(self.query, self.masked())

    @property
    def tls(self) -> TLSSettings:
        return resolve_tls(self.options, self.host, self.masked())

    @property
    def charset(self) -> str:
        return self.options.get("charset", "utf8mb4")

    @property
    def connect_timeout(self) -> float:
        raw = self.options.get("connect_timeout")
        return 10.0 if raw is None else float(raw)

    def sqlalchemy_url(self, database: str | None = None):
        """The engine's URL: credentials and address only; every option goes through ``connect_args``."""
        from sqlalchemy.engine import URL

        return URL.create(
            "mysql+pymysql",
            username=self.user,
            password=self.password or None,
            host=self.host,
            port=self.port,
            database=self.database if database is None else (database or None),
        )

    def with_database(self, database: str) -> DatabaseURL:
        return DatabaseURL(self.user, self.password, self.host, self.port, database, self.query)

    def pymysql_kwargs(self, database: str | None = None) -> dict:
        """``pymysql.connect`` arguments (JSON-serialisable) carrying every option of the URL, TLS included."""
        kwargs = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.database if database is None else (database or None),
            "charset": self.charset,
            "connect_timeout": self.connect_timeout,
        }
        kwargs.update(tls_kwargs(self.tls, self.masked()))
        return kwargs


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def system_ca_bundle() -> str | None:
    """The system's CA bundle file (SSL_CERT_FILE, OpenSSL's default, then certifi's)."""
    paths = ssl.get_default_verify_paths()
    candidates = [os.environ.get("SSL_CERT_FILE"), paths.cafile, paths.openssl_cafile]
    try:
        import certifi

        candidates.append(certifi.where())
    except ImportError:  # pragma: no cover - requests depends on certifi
        pass
    return next((c for c in candidates if c and os.path.isfile(c)), None)


def _flag(options: dict, name: str, shown: str) -> bool | None:
    raw = options.get(name)
    if raw is None:
        return None
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ConfigError(f"DATABASE_URL {shown!r}: {name}={raw!r} is not true or false.")


def resolve_tls(options: dict, host: str, shown: str) -> TLSSettings:
    """The TLS mode for ``host`` from the URL's options; contradictory options are refused, never guessed."""
    ca, cert, key = options.get("ssl_ca"), options.get("ssl_cert"), options.get("ssl_key")
    verify_cert, verify_identity = _flag(options, "ssl_verify_cert", shown), _flag(options, "ssl_verify_identity", shown)
    mysql2 = options.get("ssl")
    if mysql2 is not None:  # mysql2 / Drizzle style: ssl={"rejectUnauthorized":true}
        compact = mysql2.replace(" ", "")
        if compact == '{"rejectUnauthorized":true}':
            verify_cert = True if verify_cert is None else verify_cert
        elif compact == '{"rejectUnauthorized":false}':
            verify_cert = False if verify_cert is None else verify_cert
        else:
            raise ConfigError(f"DATABASE_URL {shown!r}: ssl={mysql2!r} is not understood; use ssl_mode=VERIFY_IDENTITY "
                              "(or REQUIRED, VERIFY_CA, PREFERRED, DISABLED).")
    if cert and not key or key and not cert:
        raise ConfigError(f"DATABASE_URL {shown!r}: ssl_cert and ssl_key go together (a client certificate and its key).")
    if "ssl_mode" in options:
        mode = options["ssl_mode"].upper()
        if mode not in SSL_MODES:
            raise ConfigError(f"DATABASE_URL {shown!r}: ssl_mode={options['ssl_mode']!r} is not one of {', '.join(SSL_MODES)}.")
        why = f"ssl_mode={mode}"
        clash = None
        if mode == "DISABLED" and (ca or cert or verify_cert or verify_identity):
            clash = "ssl_mode=DISABLED with TLS options"
        elif mode == "PREFERRED" and (ca or cert or verify_cert or verify_identity):
            clash = "ssl_mode=PREFERRED verifies nothing, yet TLS options are given (use VERIFY_IDENTITY or VERIFY_CA)"
        elif mode in ("VERIFY_CA", "VERIFY_IDENTITY") and verify_cert is False:
            clash = f"ssl_mode={mode} with ssl_verify_cert=false"
        elif mode == "VERIFY_IDENTITY" and verify_identity is False:
            clash = "ssl_mode=VERIFY_IDENTITY with ssl_verify_identity=false"
        elif mode in ("REQUIRED", "VERIFY_CA") and verify_identity:
            clash = f"ssl_mode={mode} with ssl_verify_identity=true"
        elif mode == "REQUIRED" and verify_cert:
            clash = "ssl_mode=REQUIRED with ssl_verify_cert=true"
        if clash:
            raise ConfigError(f"DATABASE_URL {shown!r}: {clash}; keep one of them.")
    else:
        if verify_cert is False and verify_identity:
            raise ConfigError(f"DATABASE_URL {shown!r}: ssl_verify_cert=false with ssl_verify_identity=true; keep one.")
        if verify_cert is False:
            mode, why = "REQUIRED", "ssl_verify_cert=false"
        elif verify_identity is False:
            mode, why = "VERIFY_CA", "ssl_verify_identity=false"
        elif not is_loopback(host):
            mode, why = "VERIFY_IDENTITY", "default for a host that is not loopback"
        elif ca or cert or verify_identity:
            mode, why = "VERIFY_IDENTITY", "TLS options given"
        elif verify_cert:
            mode, why = "VERIFY_CA", "ssl_verify_cert=true"
        else:
            mode, why = "PREFERRED", "default on a loopback host"
    return TLSSettings(mode=mode, ca=ca, cert=cert, key=key, why=why)


def tls_kwargs(tls: TLSSettings, shown: str) -> dict:
    """PyMySQL (>= 1.2) arguments for ``tls``. Any ``ssl_*`` argument makes PyMySQL require TLS before it logs in."""
    if tls.mode == "DISABLED":
        return {"ssl_disabled": True}
    if tls.mode == "PREFERRED":
        return {}  # PyMySQL 1.2's own default: TLS when offered, verifying nothing; plain otherwise
    for name, path in (("ssl_ca", tls.ca), ("ssl_cert", tls.cert), ("ssl_key", tls.key)):
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"DATABASE_URL {shown!r}: {name} file {path!r} does not exist or is not a file.",
                              next_step=f"point {name} at a readable PEM file.")
    ca = tls.ca or system_ca_bundle()
    if ca is None:
        raise ConfigError(f"DATABASE_URL {shown!r}: {tls.mode} needs a CA bundle and none was found on this machine.",
                          next_step="add ssl_ca=/path/to/ca.pem to DATABASE_URL.")
    kwargs = {"ssl_ca": ca, "ssl_verify_cert": tls.verifies, "ssl_verify_identity": tls.mode == "VERIFY_IDENTITY"}
    if tls.cert:
        kwargs.update(ssl_cert=tls.cert, ssl_key=tls.key)
    return kwargs


def _parse_query(query: str, shown: str) -> dict[str, str]:
    from urllib.parse import parse_qsl

    options: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in OPTIONS:
            raise ConfigError(f"DATABASE_URL {shown!r}: option {name!r} is not one this tool knows "
                              f"({', '.join(OPTIONS)}).")
        if name in options:
            raise ConfigError(f"DATABASE_URL {shown!r}: option {name!r} is given twice.")
        options[name] = value
    if "charset" in options and not re.fullmatch(r"[A-Za-z0-9_]{1,32}", options["charset"]):
        raise ConfigError(f"DATABASE_URL {shown!r}: charset={options['charset']!r} is not a character set name.")
    if "connect_timeout" in options:
        try:
            seconds = float(options["connect_timeout"])
        except ValueError:
            seconds = -1
        if not 0 < seconds <= 3600:
            raise ConfigError(f"DATABASE_URL {shown!r}: connect_timeout={options['connect_timeout']!r} is not a "
                              "number of seconds between 0 and 3600.")
    return options


def parse_database_url(url: str | None) -> DatabaseURL:
    """Parse ``url`` (``mysql://`` or ``mysql+pymysql://``); raise :class:`ConfigError` naming the problem.

    The error text never contains the password, whatever the shape of the text.
    """
    if url is None or not url.strip():
        url = DEFAULT_DATABASE_URL
    url = url.strip()
    shown = mask_url(url) if not re.search(r"\s", url) else "(a value with spaces, not shown)"
    match = _SCHEME.match(url)
    if not match:
        scheme = url.split(":", 1)[0] if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", url) and "@" not in url.split(":", 1)[0] else ""
        raise ConfigError(
            f"DATABASE_URL {shown!r} has scheme {scheme or '(none)'!r} but no '://'; expected {_EXAMPLE}."
        )
    scheme = match.group(0)[:-3].lower()
    if scheme not in _ACCEPTED_SCHEMES:
        raise ConfigError(
            f"DATABASE_URL {shown!r} has scheme {scheme!r}; expected mysql:// or mysql+pymysql://, e.g. {_EXAMPLE}."
        )
    parsed = _URL.match(url)
    if parsed is None or (parsed["port"] is not None and not re.fullmatch(r"\d+", parsed["port"])):
        raise ConfigError(f"DATABASE_URL {shown!r} is not a valid URL; expected {_EXAMPLE}.")
    port = int(parsed["port"]) if parsed["port"] else None
    host = parsed["ipv4host"] or parsed["ipv6host"] or ""
    if not host:
        raise ConfigError(f"DATABASE_URL {shown!r} names no host; expected {_EXAMPLE}.")
    if "@" in host or "/" in host:
        raise ConfigError(f"DATABASE_URL {shown!r} is not a valid URL (an '@' or '/' in the password must be written "
                          "%40 / %2F).")
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"DATABASE_URL {shown!r} is not a valid URL (port {port} is out of range).")
    database = unquote(parsed["database"] or "")
    if not database or "/" in database:
        raise ConfigError(f"DATABASE_URL {shown!r} names no database; expected {_EXAMPLE}.")
    if not re.fullmatch(r"[A-Za-z0-9_$-]{1,64}", database):
        raise ConfigError(f"DATABASE_URL {shown!r}: database name {database!r} has characters this tool does not accept "
                          "(letters, digits, _, $ and -, at most 64).")
    query = url.split("?", 1)[1] if "?" in url else ""
    result = DatabaseURL(
        user=unquote(parsed["username"] or "") or "root",
        password=unquote(parsed["password"] or ""),
        host=host,
        port=port or 3306,
        database=database,
        query=query,
    )
    result.tls  # noqa: B018 - refuse bad options now, not at the first connection
    return result


def _mask_token(token: str) -> str:
    token = _PASSWORD_PARAM.sub(lambda m: m.group(1) + "=***", token)
    at = token.rfind("@")
    if at < 0:
        return token
    head = token[:at]
    prefix = _SCHEME_PREFIX.match(head).group(0)
    rest = head[len(prefix):]
    colon = rest.find(":")
    if colon < 0:
        return token
    return prefix + rest[:colon + 1] + "***" + token[at:]


def mask_url(url: str) -> str:
    """Hide the password of any ``user:password@`` in ``url`` or in any text, with or without ``scheme://``."""
    return "".join(part if part.isspace() else _mask_token(part) for part in re.split(r"(\s+)", url))


def scrub_secret(text: str, *secrets: str | None) -> str:
    """Remove every given secret (and any URL password) from ``text``."""
    text = mask_url(text)
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    return text
