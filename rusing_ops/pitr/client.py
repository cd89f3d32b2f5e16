"""The one place that runs ``mariadb-binlog`` (or ``mysqlbinlog``): copying binlogs from the server, decoding them.

It is the only program besides the connection layer that talks to the database, so it gets the same settings:
user, password, host and port from ``DATABASE_URL`` and the TLS mode of ``core.dburl`` (VERIFY_IDENTITY and
VERIFY_CA both become ``--ssl-verify-server-cert``, the client's only verifying mode, which also checks the host
name; REQUIRED is ``--ssl``; DISABLED ``--skip-ssl``). The password goes in a 0600 option file that is deleted
afterwards, never on the command line (``ps`` shows arguments to every user).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..core.dburl import DatabaseURL, scrub_secret, system_ca_bundle
from ..core.errors import ConfigError, OpsError

TIMEOUT_S = 600  # one copy or decode; a hung server must not hang the archive pass forever


class BinlogToolFailed(OpsError):
    """``mariadb-binlog`` failed (connection, privileges, a purged file)."""


def program() -> str:
    for name in ("mariadb-binlog", "mysqlbinlog"):
        found = shutil.which(name)
        if found:
            return found
    raise ConfigError("Point-in-time recovery needs the `mariadb-binlog` (or `mysqlbinlog`) program, which is not "
                      "installed.", next_step="install it (Debian: apt-get install mariadb-client).")


@contextlib.contextmanager
def option_file(url: DatabaseURL) -> Iterator[str]:
    """A ``[client]`` option file with the login and TLS settings of ``url``; removed on exit."""
    tls = url.tls
    lines = ["[client]", f"user={url.user}", f"host={url.host}", f"port={url.port}"]
    if url.password:
        lines.append(f"password={url.password}")
    if tls.mode == "DISABLED":
        lines.append("skip-ssl")
    elif tls.mode != "PREFERRED":
        lines.append("ssl")
        ca = tls.ca or (system_ca_bundle() if tls.verifies else None)
        if ca:
            lines.append(f"ssl-ca={ca}")
        if tls.cert:
            lines += [f"ssl-cert={tls.cert}", f"ssl-key={tls.key}"]
        if tls.verifies:
            lines.append("ssl-verify-server-cert")
    fd, path = tempfile.mkstemp(prefix="rusing-binlog-", suffix=".cnf")
    try:
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        yield path
    finally:
        os.unlink(path)


def _run(url: DatabaseURL, args: list[str], *, what: str, stdout=None) -> subprocess.CompletedProcess:
    with option_file(url) as cnf:
        cmd = [program(), f"--defaults-extra-file={cnf}", *args]
        try:
            done = subprocess.run(cmd, check=False, stdout=stdout if stdout is not None else subprocess.PIPE,
                                  stderr=subprocess.PIPE, timeout=TIMEOUT_S, env={**os.environ, "TZ": "UTC"})
        except subprocess.TimeoutExpired:
            raise BinlogToolFailed(f"{what} on {url.masked()} did not finish within {TIMEOUT_S} s.",
                                   next_step="check the server, then run the command again.") from None
    if done.returncode != 0:
        detail = scrub_secret(done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:][0]
                              if done.stderr.strip() else f"exit code {done.returncode}", url.password)
        raise BinlogToolFailed(f"{what} on {url.masked()} failed: {detail}.",
                               next_step="check the user's REPLICATION SLAVE / BINLOG MONITOR privileges and that "
                                         "the file is still on the server (SHOW BINARY LOGS).")
    return done


def copy_raw(url: DatabaseURL, file: str, start_pos: int, folder: Path) -> Path:
    """Copy ``file`` from ``start_pos`` to its current end into ``folder`` (magic + format description + events)."""
    folder.mkdir(parents=True, exist_ok=True)
    prefix = str(folder) + os.sep
    _run(url, ["--read-from-remote-server", "--raw", f"--start-position={start_pos}", f"--result-file={prefix}", file],
         what=f"copying binlog {file} from position {start_pos}")
    out = folder / file
    if not out.is_file():
        raise BinlogToolFailed(f"copying binlog {file} from {url.masked()} produced no file.",
                               next_step="run `rusing-ops db binlogs archive` again.")
    return out


def decode(url: DatabaseURL, files: list[Path], *, database: str, rewrite_to: str | None = None,
           flashback: bool = False, verbose: bool = False) -> bytes:
    """SQL text for ``files`` (local), only ``database``'s events, optionally renamed to ``rewrite_to``.

    ``flashback`` inverts row events (``--flashback``); ``verbose`` shows rows as pseudo-SQL comments (preview).
    """
    args = [f"--database={database}"]
    if rewrite_to and rewrite_to != database:
        args.append(f"--rewrite-db={database}->{rewrite_to}")
    if flashback:
        args.append("--flashback")
    if verbose:
        args += ["--verbose", "--base64-output=decode-rows"]
    args += [str(f) for f in files]
    return _run(url, args, what="decoding archived binlogs").stdout
