"""Health job against real MariaDB, a local app stand-in and a local Stripe-compatible endpoint (real SDK, real HTTP)."""

import dagster as dg
import pytest

from rusing_ops.health.defs import defs as health_defs
from rusing_ops.resources import AppResource, DatabaseResource, StripeResource
from rusing_ops_tests.conftest import JsonServer
from rusing_ops_tests.silent_server import SilentServer

GOOD_KEY = "sk_test_good_key_123456"


class StripeStandIn(JsonServer):
    """Answers GET /v1/balance and GET /v1/webhook_endpoints as Stripe does, checking the bearer key."""

    def __init__(self, endpoints):
        self.endpoints = endpoints
        super().__init__(self._respond)
        self.url = self.base_url

    def _respond(self, method, path, headers, body):
        if headers.get("Authorization") != f"Bearer {GOOD_KEY}":
            return 401, {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}}
        if path.startswith("/v1/balance"):
            return 200, {"object": "balance", "available": [], "pending": [], "livemode": False}
        if path.startswith("/v1/webhook_endpoints"):
            return 200, {"object": "list", "url": "/v1/webhook_endpoints", "has_more": False, "data": self.endpoints}
        return 404, {"error": {"message": "no route"}}


@pytest.fixture
def stripe_stand_in():
    server = StripeStandIn([])
    yield server
    server.close()


def run_health(instance, database_url, app_url=None, stripe_key=None, stripe_base=None):
    resources = {
        "database": DatabaseResource(url=database_url),
        "app": AppResource(base_url=app_url),
        "stripe": StripeResource(api_key=stripe_key, api_base=stripe_base),
    }
    job = dg.Definitions.merge(health_defs, dg.Definitions(resources=resources)).resolve_job_def("health_check")
    result = job.execute_in_process(instance=instance, raise_on_error=False)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    return result, checks


def rows(evaluation):
    """The check's table (MetadataValue.table) as "| check | status | detail |" lines."""
    return "\n".join(f"| {r.data['check']} | {r.data['status']} | {r.data['detail']} |"
                     for r in evaluation.metadata["checks"].records)


def test_all_healthy(dagster_instance, database_url_str, app_stand_in, stripe_stand_in):
    stripe_stand_in.endpoints = [{"id": "we_1", "object": "webhook_endpoint", "status": "enabled",
                                  "url": app_stand_in.base_url + "/api/stripe/webhook"}]
    result, checks = run_health(dagster_instance, database_url_str, app_stand_in.base_url, GOOD_KEY, stripe_stand_in.url)
    assert result.success
    assert {n: c.passed for n, c in checks.items()} == {"app_health_endpoint": True, "database_reachable": True, "stripe_reachable": True}
    assert "| app status | ok | status='ok' |" in rows(checks["app_health_endpoint"])
    assert "| app db | ok | db='connected' |" in rows(checks["app_health_endpoint"])
    assert "| stripe webhook endpoints | ok |" in rows(checks["stripe_reachable"])
    assert checks["database_reachable"].metadata["db_latency_ms"].value >= 0
    assert app_stand_in.requests == [("GET", "/api/health")]


def test_unconfigured_parts_are_not_green(dagster_instance, database_url_str):
    """Nothing checked is not a pass: WARN (yellow in the UI) with the reason; the run itself succeeds (no alert)."""
    result, checks = run_health(dagster_instance, database_url_str)
    assert result.success
    app, stripe_check, db = checks["app_health_endpoint"], checks["stripe_reachable"], checks["database_reachable"]
    assert (app.passed, app.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert (stripe_check.passed, stripe_check.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert app.description == "not configured, nothing checked: APP_BASE_URL is not set; app checks skipped"
    assert stripe_check.description == ("not configured, nothing checked: STRIPE_SECRET_KEY is not set; Stripe checks "
                                        "skipped")
    assert app.metadata["configured"].value is False
    assert db.passed and db.description == "all checks passed"
    assert "| app /api/health | not configured |" in rows(app)


def test_stripe_and_app_that_accept_and_never_answer_fail_naming_host_and_timeout(dagster_instance, database_url_str):
    """Bounded calls: before, 30 s x 3 attempts per Stripe call (103 s for `health`); now connect/read timeouts."""
    silent = SilentServer()
    try:
        resources = {"database": DatabaseResource(url=database_url_str),
                     "app": AppResource(base_url=silent.base_url, timeout_seconds=0.25),
                     "stripe": StripeResource(api_key=GOOD_KEY, api_base=silent.base_url, read_timeout_seconds=0.25,
                                              connect_timeout_seconds=1)}
        job = dg.Definitions.merge(health_defs, dg.Definitions(resources=resources)).resolve_job_def("health_check")
        result = job.execute_in_process(instance=dagster_instance, raise_on_error=False)
    finally:
        silent.close()
    assert not result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    host = f"127.0.0.1:{silent.port}"
    assert checks["stripe_reachable"].description == (
        f"stripe key: Stripe API at {host} did not answer within the 0.25 s read timeout while checking the test key "
        f"(GET /v1/balance) (2 attempt(s); ReadTimeout: HTTPConnectionPool(host='127.0.0.1', port={silent.port}): "
        "Read timed out. (read timeout=0.25)). Next: check STRIPE_API_BASE / the network "
        "(status.stripe.com), then run the same command again")
    app_detail = checks["app_health_endpoint"].description
    assert app_detail.startswith(f"app reachable: {silent.base_url}/api/health did not answer: ReadTimeout: ")
    assert "(read timeout=0.25)" in app_detail
    assert GOOD_KEY not in str(result.all_events)


def test_app_reporting_db_disconnected_fails_naming_the_field(dagster_instance, database_url_str, app_stand_in):
    app_stand_in.health_status = 503
    app_stand_in.health_body = {"status": "degraded", "db": "disconnected", "stripe": "configured"}
    result, checks = run_health(dagster_instance, database_url_str, app_stand_in.base_url)
    assert not result.success
    app = checks["app_health_endpoint"]
    assert not app.passed and checks["database_reachable"].passed
    table = rows(app)
    assert "| app reachable | FAIL |" in table and "HTTP 503" in table
    assert "| app db | FAIL | db='disconnected', expected 'connected' |" in table
    assert "| app stripe | ok |" in table


def test_app_down_and_database_down(dagster_instance, server_url):
    result, checks = run_health(dagster_instance, "mysql://root:pw-not-shown@127.0.0.1:1/nothing", "http://127.0.0.1:1")
    assert not result.success
    assert "did not answer" in rows(checks["app_health_endpoint"])
    db_summary = checks["database_reachable"].metadata["summary"].value
    assert db_summary.startswith("database connection: Cannot connect to mysql://root:***@127.0.0.1:1/nothing")
    assert "pw-not-shown" not in str(result.all_events)


def test_bad_stripe_key_and_disabled_endpoint(dagster_instance, database_url_str, app_stand_in, stripe_stand_in):
    result, checks = run_health(dagster_instance, database_url_str, None, "sk_test_wrong_key_999", stripe_stand_in.url)
    assert not checks["stripe_reachable"].passed
    assert (f"| stripe key | FAIL | Stripe at {stripe_stand_in.url.removeprefix('http://')} refused the API key while checking the test "
            "key (GET /v1/balance) (HTTP 401). Next: check STRIPE_SECRET_KEY (live vs test mode, "
            "not revoked) |") in rows(checks["stripe_reachable"])
    assert "sk_test_wrong_key_999" not in str(result.all_events)

    stripe_stand_in.endpoints = [{"id": "we_1", "object": "webhook_endpoint", "status": "disabled",
                                  "url": app_stand_in.base_url + "/api/stripe/webhook"}]
    result, checks = run_health(dagster_instance, database_url_str, app_stand_in.base_url, GOOD_KEY, stripe_stand_in.url)
    assert not result.success
    assert "is registered but disabled" in rows(checks["stripe_reachable"])


def test_cli_prints_the_table_and_exits_non_zero_on_failure(database_url_str, app_stand_in, tmp_path):
    import json
    import os
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "DATABASE_URL": database_url_str, "APP_BASE_URL": app_stand_in.base_url}

    def health(*args):
        return subprocess.run([sys.executable, "-m", "rusing_ops.cli", "health", *args], env=env, capture_output=True,
                              text=True, timeout=120, check=False)

    ok = health()
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0].split() == ["CHECK", "STATUS", "DETAIL"]
    assert any(line.split()[:3] == ["app", "status", "ok"] for line in ok.stdout.splitlines())
    app_stand_in.health_body = {"status": "ok", "db": "connected", "stripe": "missing"}
    bad = health("--json")
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert report["ok"] is False
    assert {"check": "app stripe", "status": "FAIL", "detail": "stripe='missing', expected 'configured'"} in report["checks"]
    assert {"check": "stripe key", "status": "not configured",
            "detail": "STRIPE_SECRET_KEY is not set; Stripe checks skipped"} in report["checks"]


def test_one_health_check_executes_alone(dagster_instance, database_url_str, app_stand_in):
    """The UI's "Execute" on one check runs that check only: here the database, with the app never called."""
    resources = {"database": DatabaseResource(url=database_url_str), "app": AppResource(base_url=app_stand_in.base_url),
                 "stripe": StripeResource()}
    key = dg.AssetCheckKey(dg.AssetKey("app_database"), "database_reachable")
    defs = dg.Definitions.merge(health_defs, dg.Definitions(
        resources=resources, jobs=[dg.define_asset_job("one_check", selection=dg.AssetSelection.checks(key))]))
    result = defs.resolve_job_def("one_check").execute_in_process(instance=dagster_instance)
    assert [(e.check_name, e.passed) for e in result.get_asset_check_evaluations()] == [("database_reachable", True)]
    assert app_stand_in.requests == []
