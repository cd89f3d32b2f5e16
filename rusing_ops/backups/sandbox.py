"""Least privilege for a load: a temporary database user granted only on the staging (or scratch) database.

The statements of a backup or dump file are checked first (confine.py); they then run as this user, so even a
statement the checks misjudged cannot reach another database, a file (no FILE privilege) or a server setting (no
SUPER). The user is named ``rusing_tmp_<base36 time><hex>`` (TiDB Cloud's user prefix kept), has a random password
that is never logged nor stored, the host pattern of the account that creates it, and is dropped when the load
ends. A process killed mid-load leaves it behind: the next load drops every such user without a session whose
staging database is gone or that is ten minutes old. When the account may not create users (no CREATE USER privilege), the load runs as that account, says
so in its result, and relies on the checks alone.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable

import pymysql

from ..core.database import as_text, quote_ident
from ..core.dburl import DatabaseURL

PREFIX = "rusing_tmp_"
STALE_S = 600  # a load always holds a session: ten minutes without one is a dead load's user
_DENIED = {1044, 1045, 1142, 1227, 1410, 8121}  # access denied / needs a privilege (8121: TiDB's)


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out or "0"


class StagingUser:
    """``with StagingUser(admin_conn, url, staging) as load_url:`` connections to ``load_url`` may touch ``staging``
    only; ``note`` says which account the load runs as."""

    def __init__(self, admin, url: DatabaseURL, staging: str, log: Callable[[str], None] | None = None):
        self.admin, self.url, self.staging = admin, url, staging
        self.log = log or (lambda _line: None)
        self.account: tuple[str, str] | None = None
        self.note = ""

    def __enter__(self) -> DatabaseURL:
        with self.admin.cursor() as cur:
            cur.execute("SELECT CURRENT_USER()")
            user, _, host = as_text(cur.fetchone()[0]).rpartition("@")
            sweep(cur, host)
            prefix = user.split(".", 1)[0] + "." if "." in user else ""  # TiDB Cloud: every user is <prefix>.<name>
            name = f"{prefix}{PREFIX}{_b36(int(time.time()))}{secrets.token_hex(2)}"
            password = secrets.token_urlsafe(24) + "aA1-"  # also passes password-strength plugins
            try:
                cur.execute("CREATE USER %s@%s IDENTIFIED BY %s", (name, host, password))
            except pymysql.err.MySQLError as exc:
                if exc.args and exc.args[0] in _DENIED:
                    self.note = (f"the load runs as {self.url.user!r}, which may not create a temporary user "
                                 "(CREATE USER privilege): only the statement checks confine it")
                    self.log(f"note: {self.note}")
                    return self.url
                raise
            self.account = (name, host)
            try:
                cur.execute(f"GRANT ALL PRIVILEGES ON {quote_ident(self.staging)}.* TO %s@%s", self.account)
            except BaseException:
                self._drop(cur)
                raise
        self.note = f"the load runs as a temporary user granted only on `{self.staging}`"
        return dataclasses.replace(self.url, user=name, password=password)

    def __exit__(self, *exc) -> None:
        if self.account is not None:
            with self.admin.cursor() as cur:
                self._drop(cur)

    def _drop(self, cur) -> None:
        cur.execute("DROP USER IF EXISTS %s@%s", self.account)
        self.account = None


def sweep(cur, host: str) -> list[str]:
    """Drop the temporary users a killed load left; returns their names.

    A load keeps its connections open from start to end, so a user without a session is dead once its database
    (staging) is gone, or after ten minutes. Only an account that sees every session (PROCESS) sweeps: another
    account would take a running load's user for an idle one.
    """
    try:
        cur.execute("SELECT User, Host FROM mysql.user WHERE User LIKE %s", (f"%{PREFIX}%",))
        users = [(as_text(u), as_text(h)) for u, h in cur.fetchall()]
        if not users:
            return []
        cur.execute("SELECT COUNT(*) FROM information_schema.USER_PRIVILEGES WHERE PRIVILEGE_TYPE IN "
                    "('PROCESS', 'SUPER') AND GRANTEE = CONCAT(\"'\", SUBSTRING_INDEX(CURRENT_USER(), '@', 1), "
                    "\"'@'\", SUBSTRING_INDEX(CURRENT_USER(), '@', -1), \"'\")")
        if not int(cur.fetchone()[0]):
            return []
        cur.execute("SELECT DISTINCT USER FROM information_schema.PROCESSLIST")
        active = {as_text(r[0]) for r in cur.fetchall()}
        cur.execute("SELECT d.User FROM mysql.db d LEFT JOIN information_schema.SCHEMATA s ON s.SCHEMA_NAME = d.Db "
                    "WHERE d.User LIKE %s AND s.SCHEMA_NAME IS NULL", (f"%{PREFIX}%",))
        orphaned = {as_text(r[0]) for r in cur.fetchall()}
    except pymysql.err.MySQLError:
        return []  # no read access to mysql.user: nothing to sweep that this account could have created
    dropped = []
    now = int(time.time())
    for user, user_host in users:
        stamp = user.rsplit(PREFIX, 1)[-1][:-4]
        try:
            born = int(stamp, 36)
        except ValueError:
            continue
        if user not in active and (user in orphaned or now - born > STALE_S):
            cur.execute("DROP USER IF EXISTS %s@%s", (user, user_host))
            dropped.append(user)
    return dropped
