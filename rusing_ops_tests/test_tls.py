"""Every capability through a test-owned MariaDB that requires TLS (``--require-secure-transport=ON``, its own CA).

With the CA that signed the server: health, migrate, validate, webhooks setup/status/reconcile, backup, verify,
restore and recovery all work. With a CA that did not sign it, each one is refused before any data moves (no
database, table or backup object appears). A plain-text attempt is refused. PREFERRED on loopback verifies nothing
but works (against the plain local MariaDB too).
"""

from __future__ import annotations

import ast
import json
import time
import uuid
from pathlib import Path

import pytest

from rusing_ops import cli
from rusing_ops.backups.dump import backup_database
from rusing_ops.backups.restore import restore_backup
from rusing_ops.backups.verify import verify_backup
from rusing_ops.core import database as dbmod
from rusing_ops.core.app import AppControl
from rusing_ops.core.dburl import parse_database_url
from rusing_ops.core.errors import DatabaseUnavailable
from rusing_ops.core.store import LocalStore
from rusing_ops.health.checks import check_database
from rusing_ops.migrations.applier import apply_migrations
from rusing_ops.migrations.validate import validate_schema
from rusing_ops.runbooks.recovery import recover_from_data_loss
from rusing_ops.webhooks import events_log
from rusing_ops_tests.conftest import EXAMPLE_DRIZZLE, JsonServer

ROOT = Path(__file__).resolve().parents[1]
TLS_FAILED = "TLS certificate verification failed"


def _rows(conn, sql: str, *args) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return [tuple(v.decode() if isinstance(v, bytes) else v for v in r) for r in cur.fetchall()]


def _server_state(server) -> dict:
    """Every database and table on the server, seen over its unix socket (no TLS involved)."""
    conn = server.socket_connection()
    try:
        return {db: sorted(t for (t,) in _rows(conn, "SELECT TABLE_NAME FROM information_schema.TABLES "
                                                    "WHERE TABLE_SCHEMA = %s", db))
                for (db,) in _rows(conn, "SHOW DATABASES")}
    finally:
        conn.close()


@pytest.fixture
def tls_db(tls_server):
    name = f"tls_{uuid.uuid4().hex[:8]}"
    tls_server.create_database(name)
    yield name
    conn = tls_server.socket_connection()
    with conn.cursor() as cur:
        for (db,) in _rows(conn, "SHOW DATABASES LIKE %s", name + "%"):
            cur.execute(f"DROP DATABASE `{db}`")
    conn.close()


def _url(server, db: str, query: str):
    return parse_database_url(server.url(db, query=query))


def _stripe_stand_in(event_id: str) -> JsonServer:
    event = {"id": event_id, "object": "event", "type": "payment_intent.succeeded", "created": int(time.time()) - 60,
             "data": {"object": {"id": "pi_tls", "object": "payment_intent", "amount": 4900}}}
    return JsonServer(lambda method, path, headers, body: (200, event) if path == f"/v1/events/{event_id}"
                      else (404, {"error": {"message": "no such thing", "type": "invalid_request_error"}}))




def _cli(monkeypatch, tmp_path, url_text: str, stripe_base: str, *argv: str) -> int:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    for name, value in {"DAGSTER_HOME": str(home), "DATABASE_URL": url_text, "STRIPE_SECRET_KEY": "sk_test_tls",
                        "STRIPE_API_BASE": stripe_base, "STRIPE_WEBHOOK_SECRET": "whsec_tls",
                        "APP_BASE_URL": "http://127.0.0.1:1", "RUSING_BACKUP_URL": str(tmp_path / "cli-backups")}.items():
        monkeypatch.setenv(name, value)
    return cli.main(list(argv))


def test_every_capability_over_verified_tls(tls_server, tls_db, tmp_path, monkeypatch, capsys, fresh_definitions):
    url = _url(tls_server, tls_db, f"ssl_ca={tls_server.tls.ca}")
    assert (url.tls.mode, url.tls.ca) == ("VERIFY_IDENTITY", str(tls_server.tls.ca))
    raw = dbmod.raw_connect(url)
    assert _rows(raw, "SHOW SESSION STATUS LIKE 'Ssl_version'")[0][1].startswith("TLS")
    raw.close()
    engine = dbmod.create_engine(url)
    try:
        health = check_database(lambda: dbmod.ping(engine, url))
        assert health.passed, health.rows
        assert health.rows[0].detail.startswith(f"{tls_db} on 10.11")

        applied = apply_migrations(engine, url, EXAMPLE_DRIZZLE, no_backup=True, force=True)
        assert len(applied.applied) == 5 and applied.statements_run > 0
        report = validate_schema(engine, url, EXAMPLE_DRIZZLE)
        assert report.ok, report.lines()
        assert report.pending == [] and report.drift == []

        created = events_log.ensure(engine, url)
        assert created  # the app's table, our index and the audit table, created over TLS
    finally:
        engine.dispose()

    admin = tls_server.socket_connection(database=tls_db)
    with admin.cursor() as cur:
        cur.execute("INSERT INTO webhook_events_log (stripeEventId, eventType, status, attempts, lastError, createdAt, "
                    "updatedAt) VALUES ('evt_tls1', 'payment_intent.succeeded', 'failed', 1, 'boom', NOW() - INTERVAL 5 SECOND, "
                    "NOW() - INTERVAL 5 SECOND)")  # a failure of the current second is left for the next pass
        cur.execute("CREATE TABLE tls_probe (id INT PRIMARY KEY, v VARBINARY(32), f DOUBLE)")
        cur.execute("INSERT INTO tls_probe VALUES (1, 0x00ff10, 3.141592653589793), (2, NULL, -0.5)")
    stripe = _stripe_stand_in("evt_tls1")
    try:
        code = _cli(monkeypatch, tmp_path, tls_server.url(tls_db, query=f"ssl_ca={tls_server.tls.ca}"),
                       stripe.base_url, "webhooks", "status", "--json")
        status = json.loads(capsys.readouterr().out)
        assert (code, status["total"], status["failed"]) == (0, 1, 1)
        code = _cli(monkeypatch, tmp_path, tls_server.url(tls_db, query=f"ssl_ca={tls_server.tls.ca}"),
                       stripe.base_url, "webhooks", "reconcile", "--dry-run", "--json")
        out = json.loads(capsys.readouterr().out)
        assert code == 0 and [(o["event_id"], o["outcome"]) for o in out["outcomes"]] == [("evt_tls1", "would_redrive")]
    finally:
        stripe.close()

    store = LocalStore(tmp_path / "backups")
    made = backup_database(url, store, reason="tls")
    assert made.manifest.tables["tls_probe"].rows == 2
    checked = verify_backup(url, store, "latest")
    assert checked.ok, checked.problems
    with admin.cursor() as cur:
        cur.execute("DELETE FROM tls_probe")
    recovered = recover_from_data_loss(url, store, AppControl(None), confirm=tls_db, backup=made.manifest.key,
                                       pre_restore_backup=True)
    assert recovered.restore.tables["tls_probe"] == 2 and recovered.pre_restore_backup
    assert _rows(admin, f"SELECT id, HEX(v), f FROM `{tls_db}`.tls_probe ORDER BY id") == [
        (1, "00FF10", 3.141592653589793), (2, None, -0.5)]
    # A plain restore, into a drill database (a second swap into tls_db within the same second would collide on
    # the pre-restore database's name: restore.py's naming, reported separately).
    drill = tls_db + "__drill"
    restored = restore_backup(url, store, made.manifest.key, database=drill, from_database=tls_db,
                              pre_restore_backup=False)
    assert restored.tables["tls_probe"] == 2
    assert _rows(admin, f"SELECT id, HEX(v), f FROM `{drill}`.tls_probe ORDER BY id") == [
        (1, "00FF10", 3.141592653589793), (2, None, -0.5)]
    admin.close()


def test_wrong_ca_refuses_every_capability_before_any_data_moves(tls_server, tls_db, tmp_path, monkeypatch, capsys,
                                                                fresh_definitions):
    good = _url(tls_server, tls_db, f"ssl_ca={tls_server.tls.ca}")
    store = LocalStore(tmp_path / "backups")
    backup_database(good, store, reason="good")  # something a restore / verify could use
    objects = sorted(o.key for o in store.list())
    before = _server_state(tls_server)

    bad = _url(tls_server, tls_db, f"ssl_ca={tls_server.tls.other_ca}")
    app_events = tmp_path / "app-events"
    app = AppControl(None, stop_command=f"sh -c 'echo stop >> {app_events}'")
    engine = dbmod.create_engine(bad)
    attempts = {
        "health": lambda: dbmod.ping(engine, bad),
        "migrate": lambda: apply_migrations(engine, bad, EXAMPLE_DRIZZLE, no_backup=True, force=True),
        "validate": lambda: validate_schema(engine, bad, EXAMPLE_DRIZZLE),
        "webhooks setup": lambda: events_log.ensure(engine, bad),
        "backup": lambda: backup_database(bad, store, reason="bad"),
        "verify": lambda: verify_backup(bad, store, "latest"),
        "restore": lambda: restore_backup(bad, store, "latest", pre_restore_backup=True),
        "recover": lambda: recover_from_data_loss(bad, store, app, confirm=tls_db, pre_restore_backup=True),
        "write lock": lambda: dbmod.Database(bad).write_lock().__enter__(),
    }
    refused = {}
    try:
        for name, attempt in attempts.items():
            with pytest.raises(DatabaseUnavailable) as err:
                attempt()
            refused[name] = str(err.value)
    finally:
        engine.dispose()
    for name, text in refused.items():
        assert TLS_FAILED in text and "ssl_ca=" in text and "nothing answered" not in text, (name, text)
        assert tls_server.password not in text
    health = check_database(lambda: dbmod.ping(dbmod.create_engine(bad), bad))
    assert health.failed
    assert TLS_FAILED in health.rows[0].detail

    code = _cli(monkeypatch, tmp_path, tls_server.url(tls_db, query=f"ssl_ca={tls_server.tls.other_ca}"),
                   "http://127.0.0.1:1", "webhooks", "status")
    captured = capsys.readouterr()
    assert code == 1 and TLS_FAILED in captured.err, captured

    assert not app_events.exists()  # the recovery did not even stop the app
    assert _server_state(tls_server) == before  # no database, no table appeared or went
    assert sorted(o.key for o in store.list()) == objects  # no backup object written
    assert list(store.list_partial()) == []


def test_plain_text_is_refused_and_never_explained_as_an_unreachable_host(tls_server, tls_db, server_url):
    plain = _url(tls_server, tls_db, "ssl_mode=DISABLED")
    with pytest.raises(DatabaseUnavailable) as err:
        dbmod.raw_connect(plain)
    text = str(err.value)
    assert "ssl_mode=DISABLED sent it without TLS" in text and "nothing answered" not in text
    local_has_tls = _rows(dbmod.raw_connect(server_url, ""), "SHOW VARIABLES LIKE 'have_ssl'")[0][1] == "YES"
    if not local_has_tls:  # the local MariaDB on 3306 has no TLS: a required mode refuses before logging in
        required = parse_database_url(f"mysql://{server_url.user}@{server_url.host}:{server_url.port}/x?ssl_mode=REQUIRED")
        with pytest.raises(DatabaseUnavailable) as err:
            dbmod.raw_connect(required, "")
        assert "the server does not offer TLS" in str(err.value) and "the password was not sent" in str(err.value)


def test_preferred_on_loopback_works_with_and_without_tls(tls_server, tls_db, fresh_db):
    preferred = _url(tls_server, tls_db, "")
    assert preferred.tls.mode == "PREFERRED" and preferred.tls.why == "default on a loopback host"
    conn = dbmod.raw_connect(preferred)  # encrypted (the server insists) but verified against nothing
    assert _rows(conn, "SHOW SESSION STATUS LIKE 'Ssl_version'")[0][1].startswith("TLS")
    conn.close()
    assert fresh_db.tls.mode == "PREFERRED"
    assert dbmod.ping(dbmod.create_engine(fresh_db), fresh_db).database == fresh_db.database  # plain local server


def test_client_certificate_reaches_every_connection(tls_server, tls_db):
    t = tls_server.tls
    url = _url(tls_server, tls_db, f"ssl_ca={t.ca}&ssl_cert={t.client_cert}&ssl_key={t.client_key}")
    conn = dbmod.raw_connect(url)
    try:
        assert _rows(conn, "SHOW SESSION STATUS LIKE 'Ssl_version'")[0][1].startswith("TLS")
    finally:
        conn.close()
    engine = dbmod.create_engine(url)
    try:
        with engine.connect() as sa_conn:
            assert sa_conn.exec_driver_sql("SHOW SESSION STATUS LIKE 'Ssl_cipher'").fetchone()[1]
    finally:
        engine.dispose()


_CONNECTORS = {("pymysql", "connect"), ("pymysql", "Connect"), ("pymysql", "Connection"), ("sa", "create_engine"),
               ("sqlalchemy", "create_engine")}


def test_no_module_outside_the_connection_layer_opens_a_connection():
    offenders = []
    for path in sorted((ROOT / "rusing_ops").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "rusing_ops/core/database.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("pymysql", "pymysql.connections", "sqlalchemy"):
                offenders += [f"{rel}:{node.lineno} imports {a.name}" for a in node.names
                              if a.name in ("connect", "Connect", "Connection", "create_engine")]
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and (node.value.id, node.attr) in _CONNECTORS:
                offenders.append(f"{rel}:{node.lineno} uses {node.value.id}.{node.attr}")
            if isinstance(node, ast.Attribute) and node.attr == "Connection" and isinstance(node.value, ast.Attribute) \
                    and node.value.attr == "connections" and _called(tree, node):
                offenders.append(f"{rel}:{node.lineno} instantiates pymysql.connections.Connection")
    assert offenders == []


def _called(tree, attr) -> bool:
    return any(isinstance(n, ast.Call) and n.func is attr for n in ast.walk(tree))
