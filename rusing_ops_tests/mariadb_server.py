"""Test-owned MariaDB servers: their own datadir, port and socket, started by the tests (about 5 s to boot here).

``MariaDBServer.start(workdir, tls=..., extra_args=[...])`` runs ``mariadb-install-db`` then ``mariadbd`` as a child
process; ``stop()`` / ``kill()`` / ``restart()`` act on that process only. ``make_tls_material`` writes a CA and a
server certificate for 127.0.0.1 / localhost (and a second, unrelated CA) with the ``cryptography`` package.
Nothing here touches the machine's own MariaDB on 3306.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pymysql

from rusing_ops_tests.ports import free_port

MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
INSTALL_DB = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"


@dataclass
class TlsMaterial:
    ca: Path            # the CA that signed the server certificate
    cert: Path
    key: Path
    other_ca: Path      # a CA that signed nothing this server presents
    client_cert: Path   # a client certificate signed by ``ca`` (for ssl_cert / ssl_key tests)
    client_key: Path


def _key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write(path: Path, cert=None, key=None) -> Path:
    from cryptography.hazmat.primitives import serialization

    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return path


def _cert(subject_cn: str, issuer_cn: str, public_key, signing_key, *, ca: bool, sans=()):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def make_tls_material(folder: Path, hostnames=("localhost",), ips=("127.0.0.1",)) -> TlsMaterial:
    """A CA, a server certificate it signed (SANs: ``hostnames`` and ``ips``), a client pair and an unrelated CA."""
    from cryptography import x509

    folder.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _cert("rusing-test-ca", "rusing-test-ca", ca_key.public_key(), ca_key, ca=True)
    server_key = _key()
    sans = [x509.DNSName(h) for h in hostnames] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    server = _cert(hostnames[0], "rusing-test-ca", server_key.public_key(), ca_key, ca=False, sans=sans)
    client_key = _key()
    client = _cert("rusing-test-client", "rusing-test-ca", client_key.public_key(), ca_key, ca=False)
    other_key = _key()
    other = _cert("some-other-ca", "some-other-ca", other_key.public_key(), other_key, ca=True)
    return TlsMaterial(
        ca=_write(folder / "ca.pem", cert=ca), cert=_write(folder / "server-cert.pem", cert=server),
        key=_write(folder / "server-key.pem", key=server_key), other_ca=_write(folder / "other-ca.pem", cert=other),
        client_cert=_write(folder / "client-cert.pem", cert=client),
        client_key=_write(folder / "client-key.pem", key=client_key),
    )


class MariaDBServer:
    """One mariadbd child process with its own datadir; root@% with ``password`` over TCP on ``port``."""

    def __init__(self, workdir: Path, port: int, args: list[str], password: str, tls: TlsMaterial | None):
        self.workdir, self.port, self.args, self.password, self.tls = workdir, port, args, password, tls
        self.datadir = workdir / "data"
        self.proc: subprocess.Popen | None = None

    @classmethod
    def start(cls, workdir: Path, *, tls: TlsMaterial | None = None, require_tls: bool = False,
              extra_args: list[str] = (), password: str = "test-root-pw") -> MariaDBServer:
        workdir = Path(workdir)
        datadir = workdir / "data"
        datadir.mkdir(parents=True, exist_ok=True)
        subprocess.run([INSTALL_DB, "--no-defaults", f"--datadir={datadir}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        args = []
        if tls is not None:
            args += [f"--ssl-ca={tls.ca}", f"--ssl-cert={tls.cert}", f"--ssl-key={tls.key}"]
        if require_tls:
            args.append("--require-secure-transport=ON")
        server = cls(workdir, free_port(), args + list(extra_args), password, tls)
        server._launch()
        server._bootstrap()
        return server

    def _launch(self) -> None:
        cmd = [MARIADBD, "--no-defaults", f"--datadir={self.datadir}", f"--port={self.port}",
               "--bind-address=127.0.0.1", f"--socket={self.workdir / 'mysqld.sock'}",
               f"--pid-file={self.workdir / 'mysqld.pid'}", "--user=root", "--skip-name-resolve",
               "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=48M", "--max-connections=200",
               f"--log-error={self.workdir / 'error.log'}", *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited with {self.proc.returncode}: "
                                   f"{(self.workdir / 'error.log').read_text()[-2000:]}")
            try:
                conn = pymysql.connect(unix_socket=str(self.workdir / "mysqld.sock"), user="root",
                                       password=self.password, connect_timeout=2)
                conn.close()
                return
            except pymysql.err.OperationalError as exc:
                if exc.args and exc.args[0] == 1045:  # first boot: root has no password yet over the socket
                    try:
                        pymysql.connect(unix_socket=str(self.workdir / "mysqld.sock"), user="root",
                                        connect_timeout=2).close()
                        return
                    except pymysql.err.MySQLError:
                        pass
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def socket_connection(self, **kwargs):
        """An admin connection over the unix socket (no TLS needed there), for arranging and asserting."""
        try:
            return pymysql.connect(unix_socket=str(self.workdir / "mysqld.sock"), user="root",
                                   password=self.password, autocommit=True, **kwargs)
        except pymysql.err.OperationalError:
            return pymysql.connect(unix_socket=str(self.workdir / "mysqld.sock"), user="root", autocommit=True,
                                   **kwargs)

    def _bootstrap(self) -> None:
        conn = self.socket_connection()
        with conn.cursor() as cur:
            cur.execute("SELECT Host FROM mysql.user WHERE User = 'root'")
            for (host,) in cur.fetchall():  # install-db's root@127.0.0.1, root@::1, root@<hostname>: empty password
                if (host.decode() if isinstance(host, bytes) else host) != "localhost":
                    cur.execute("DROP USER IF EXISTS 'root'@%s", (host,))
            cur.execute("ALTER USER 'root'@'localhost' IDENTIFIED BY %s", (self.password,))
            cur.execute("CREATE USER IF NOT EXISTS 'root'@'%%' IDENTIFIED BY %s", (self.password,))
            cur.execute("GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION")
            cur.execute("FLUSH PRIVILEGES")
        conn.close()

    def url(self, database: str, host: str = "127.0.0.1", query: str = "", user: str = "root",
            password: str | None = None) -> str:
        """A ``DATABASE_URL`` for this server (password included, as an operator would set it)."""
        pw = self.password if password is None else password
        return f"mysql://{user}:{pw}@{host}:{self.port}/{database}" + (f"?{query}" if query else "")

    def create_database(self, name: str) -> None:
        conn = self.socket_connection()
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        conn.close()

    def stop(self, timeout: float = 30) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self._launch()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
