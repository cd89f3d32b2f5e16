"""rusing_ops run the production way, on this machine's PostgreSQL: a code server (gRPC) serving rusing_ops, a
dagster-daemon and a dagster-webserver, each its own process, on an instance folder from `rusing-ops instance
init --postgres`, with the workspace shipped in deploy/. Through them: the real nightly_backup schedule ticks and
its run is dequeued by the queued coordinator and run in its own worker process; the failed_webhook_events sensor
requests a run; two database writers launched over GraphQL run one at a time; a kill -9 of the first writer's
worker in the middle of its pre-migration backup leaves the run FAILED, its app_db_write slot freed and the second
writer running; a crash (kill -9) of the code server and a restart of the daemon keep runs, schedule state and
sensor cursors, while a writer that died with its code server stays STARTED until force-terminated.
Every claim is read back from the Postgres tables (runs, event_logs, job_ticks, instigators, concurrency_slots)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import re
import shutil
import signal
import time
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg2
import pytest
import yaml

from rusing_ops.core.database import create_engine
from rusing_ops.instance import init_instance
from rusing_ops.migrations.applier import apply_migrations
from rusing_ops_tests.conftest import EXAMPLE_DRIZZLE, free_port, wait_for_port
from rusing_ops_tests.topology.stack import (
    LOCATION,
    Postgres,
    Stack,
    ancestors,
    wait_for,
)

pytestmark = [pytest.mark.topology, pytest.mark.slow]

PG = {"host": os.environ.get("RUSING_TEST_PG_HOST", "127.0.0.1"), "port": os.environ.get("RUSING_TEST_PG_PORT", "5432"),
      "user": os.environ.get("RUSING_TEST_PG_USER", "postgres")}
WRITER_TAG = "rusing/db-write"
EVENT_ID = "evt_topology_" + uuid.uuid4().hex[:8]
# Secrets the processes get; trust auth ignores the Postgres password, so it only has to stay out of everything.
PG_PASSWORD = "pg-topology-" + uuid.uuid4().hex[:12]
STRIPE_KEY = "sk_test_topology" + uuid.uuid4().hex[:12]
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
SLOT_GRACE_S = 3  # the daemon's queue (a pass a second) sees a killed run's slot held 2-3 times before it is freed


@pytest.fixture
def pg_database():
    """A fresh PostgreSQL database for the instance, dropped afterwards (connections forced out)."""
    name = f"rusing_topo_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg2.connect(dbname="postgres", **PG)
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG['host']}:{PG['port']} as {PG['user']}: {exc}. The topology "
                    "test needs it (set RUSING_TEST_PG_HOST/PORT/USER for another server).")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    yield name
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def drizzle_upto(target: Path, last_idx: int) -> Path:
    """A copy of the example app's Drizzle folder holding journal entries 0..last_idx only."""
    shutil.copytree(EXAMPLE_DRIZZLE, target)
    journal = json.loads((target / "meta" / "_journal.json").read_text())
    for entry in journal["entries"][last_idx + 1:]:
        (target / f"{entry['tag']}.sql").unlink()
        (target / "meta" / f"{entry['idx']:04d}_snapshot.json").unlink()
    journal["entries"] = journal["entries"][:last_idx + 1]
    (target / "meta" / "_journal.json").write_text(json.dumps(journal, indent=2))
    return target


def last_nightly_tick(now: dt.datetime) -> dt.datetime:
    """The most recent 03:00 America/Toronto (nightly_backup's cron) at or before ``now``."""
    local = now.astimezone(ZoneInfo("America/Toronto"))
    tick = local.replace(hour=3, minute=0, second=0, microsecond=0)
    if tick > local:
        tick = (local - dt.timedelta(days=1)).replace(hour=3, minute=0, second=0, microsecond=0)
    return tick.replace(tzinfo=ZoneInfo("America/Toronto"))


def schedule_started_before_last_tick(home: Path, code_port: int, started_at: float) -> tuple[str, str]:
    """Record nightly_backup as started at ``started_at`` (as `dagster schedule start` would have, then), so the
    daemon's scheduler finds last night's tick due. Returns the schedule's (origin id, selector id)."""
    import dagster as dg
    from dagster._core.remote_origin import GrpcServerCodeLocationOrigin
    from dagster._core.scheduler.instigation import (
        InstigatorState,
        InstigatorStatus,
        InstigatorType,
        ScheduleInstigatorData,
    )

    instance = dg.DagsterInstance.from_config(str(home))
    origin = GrpcServerCodeLocationOrigin(host="127.0.0.1", port=code_port, location_name=LOCATION)
    location = wait_for(lambda: _try_location(origin, instance), 90, "the code server to load rusing_ops")
    schedule = location.get_repository("__repository__").get_schedule("nightly_backup")
    instance.add_instigator_state(InstigatorState(
        schedule.get_remote_origin(), InstigatorType.SCHEDULE, InstigatorStatus.RUNNING,
        ScheduleInstigatorData(schedule.cron_schedule, started_at)))
    ids = (schedule.get_remote_origin_id(), schedule.selector_id)
    location.cleanup()
    instance.dispose()
    return ids


def _try_location(origin, instance):
    try:
        return origin.create_location(instance)
    except Exception:  # still loading (the proxy answers before its gRPC child has imported the code)
        return None


def log_time(line: str) -> dt.datetime:
    """The UTC time at the start of a Dagster log line (colour codes stripped)."""
    stamp = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \+0000", line)
    return dt.datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC) if stamp else \
        dt.datetime.min.replace(tzinfo=dt.UTC)


def in_order(items: list, expected: list) -> bool:
    """``expected`` appears in ``items`` in this order (other items in between allowed)."""
    rest = iter(items)
    return all(any(item == e for item in rest) for e in expected)


def overlapping(runs: list[dict]) -> list[tuple[str, str]]:
    spans = sorted((r["start"], r["end"], r["run_id"]) for r in runs if r["start"])
    return [(a[2], b[2]) for a, b in itertools.pairwise(spans) if b[0] < (a[1] or float("inf"))]


def test_production_topology(tmp_path, pg_database, fresh_db, db_conn, database_url_str, monkeypatch):
    started = time.monotonic()
    # -------------------------------------------------------------------------------- the application database
    engine = create_engine(fresh_db)
    apply_migrations(engine, fresh_db, drizzle_upto(tmp_path / "drizzle-0000", 0), no_backup=True, force=True)
    engine.dispose()
    drizzle = drizzle_upto(tmp_path / "drizzle", 1)  # 0001 is pending: what the writers apply
    with db_conn.cursor() as cur:
        cur.execute("INSERT INTO webhook_events_log (stripeEventId, eventType, status, attempts, lastError, createdAt, "
                    "updatedAt) VALUES (%s, 'invoice.paid', 'failed', 1, 'handler timeout', NOW() - INTERVAL 90 SECOND,"
                    " NOW() - INTERVAL 90 SECOND)", (EVENT_ID,))
    backups = tmp_path / "backups"

    # -------------------------------------------------------------------------------- the instance folder
    home = tmp_path / "dagster_home"
    folder = init_instance(home, postgres=True)
    assert folder.backend == "postgres" and not folder.config.is_symlink()
    config = yaml.safe_load(folder.config.read_text())
    # Faster than production so the test is short: monitoring every second, slots of ended runs freed after 3 s.
    config["run_monitoring"].update(poll_interval_seconds=1, free_slots_after_run_end_seconds=SLOT_GRACE_S)
    config["run_coordinator"]["config"]["dequeue_interval_seconds"] = 1
    folder.config.write_text(yaml.safe_dump(config, sort_keys=False))
    code_port, web_port, dead_port = free_port(), free_port(), free_port()
    pause_file = tmp_path / "paused-worker.pid"
    pg_env = {"DAGSTER_PG_HOST": PG["host"], "DAGSTER_PG_PORT": PG["port"], "DAGSTER_PG_USER": PG["user"],
              "DAGSTER_PG_PASSWORD": PG_PASSWORD, "DAGSTER_PG_DB": pg_database}
    env = {**os.environ, **pg_env, "DAGSTER_HOME": str(home), "PYTHONUNBUFFERED": "1",
           "RUSING_CODE_SERVER_HOST": "127.0.0.1", "RUSING_CODE_SERVER_PORT": str(code_port),
           "DATABASE_URL": database_url_str, "RUSING_BACKUP_URL": str(backups), "DRIZZLE_DIR": str(drizzle),
           # Re-delivery configured (the sensor reads the log only then); Stripe and the app are unreachable, so
           # the requested run fails quickly, which is not what this test is about.
           "STRIPE_SECRET_KEY": STRIPE_KEY, "STRIPE_WEBHOOK_SECRET": "whsec_topology",
           "STRIPE_API_BASE": f"http://127.0.0.1:{dead_port}", "APP_BASE_URL": f"http://127.0.0.1:{dead_port}",
           # Test-only hook: a pre-migration backup stops after its first bytes and waits to be killed.
           "RUSING_OPS_TEST_PAUSE_AT": "backup-pre-migration", "RUSING_OPS_TEST_PAUSE_FILE": str(pause_file)}
    for name, value in pg_env.items():
        monkeypatch.setenv(name, value)
    stack = Stack(tmp_path, env, code_port, web_port)
    pg = None
    try:
        stack.start("code-server")
        wait_for_port(code_port, 60, stack.procs["code-server"])
        tick = last_nightly_tick(dt.datetime.now(dt.UTC))
        _, selector_id = schedule_started_before_last_tick(home, code_port, tick.timestamp() - 60)
        stack.start("daemon")
        stack.start("webserver")
        pg = Postgres(f"host={PG['host']} port={PG['port']} user={PG['user']} dbname={pg_database}")
        wait_for(stack.location_loaded, 90, "the webserver to load the rusing_ops location from the code server",
                 interval=0.5, logs=stack)
        print(f"topology up in {time.monotonic() - started:.1f}s")

        # ---------------------------------------------------------------- the schedule tick -> a queued backup run
        def nightly_runs():
            return [r for r in pg.runs() if r["tags"].get("dagster/schedule_name") == "nightly_backup"]

        backup_run = wait_for(lambda: [r for r in nightly_runs() if r["status"] in FINISHED], 90,
                              "the nightly_backup tick's run to finish", logs=stack)[0]
        assert backup_run["status"] == "SUCCESS", stack.tails()
        assert backup_run["job"] == "backup_database", backup_run
        events = pg.event_types(backup_run["run_id"])
        # (stored under their legacy PIPELINE_* names) queued, dequeued and launched by the daemon, run, materialized
        expected = ["PIPELINE_ENQUEUED", "PIPELINE_STARTING", "PIPELINE_START", "ASSET_MATERIALIZATION",
                    "PIPELINE_SUCCESS"]
        assert in_order(events, expected), events
        worker = pg.worker_pid(backup_run["run_id"])
        assert worker and worker not in stack.pids() and worker != os.getpid(), "the run ran in its own process"
        ticks = pg.ticks(selector_id)
        assert [t.status.value for t in ticks] == ["SUCCESS"], ticks
        assert ticks[0].run_ids == [backup_run["run_id"]], (ticks, nightly_runs())
        assert ticks[0].timestamp == tick.timestamp(), "last night's 03:00 Toronto tick"
        manifests = [json.loads(p.read_text()) for p in backups.rglob("*.manifest.json")]
        nightly = [m for m in manifests if m.get("run_id") == backup_run["run_id"]]
        assert len(nightly) == 1 and nightly[0]["reason"] == "nightly", manifests
        nightly_key = nightly[0]["key"]

        # ---------------------------------------------------------------- the webhook sensor -> a requested run
        reconcile = wait_for(lambda: [r for r in pg.runs()
                                      if r["tags"].get("dagster/sensor_name") == "failed_webhook_events"], 60,
                             "failed_webhook_events to request a run", logs=stack)
        assert len(reconcile) == 1, reconcile
        assert reconcile[0]["run_config"]["ops"]["reconcile_events"]["config"]["event_ids"] == [EVENT_ID], reconcile
        cursor = pg.state("failed_webhook_events").instigator_data.cursor
        assert cursor, "the sensor's cursor moved past the failed row"

        # ---------------------------------------------------------------- two writers, the first killed mid-backup
        first = stack.launch("migrate_database")
        second = stack.launch("restore_database", {"ops": {"restore_database_op": {"config": {
            "backup": nightly_key, "confirm": fresh_db.database}}}})
        wait_for(pause_file.exists, 120, "the first writer to reach its pre-migration backup", logs=stack)
        paused_pid = int(pause_file.read_text())
        assert pg.worker_pid(first) == paused_pid, "the paused process is the first writer's run worker"
        assert stack.procs["code-server"].pid in ancestors(paused_pid), "run workers are the code server's children"
        assert pg.run(first)["status"] == "STARTED", pg.run(first)
        assert pg.run(second)["status"] == "QUEUED", "the second writer waits while the first holds the tag"
        held = pg.rows("SELECT concurrency_key, run_id FROM concurrency_slots WHERE run_id IS NOT NULL")
        assert held == [{"concurrency_key": "app_db_write", "run_id": first}], held
        os.kill(paused_pid, signal.SIGKILL)
        pause_file.unlink()

        wait_for(lambda: pg.run(first)["status"] == "FAILURE", 30, "the killed run to be marked FAILURE", logs=stack)
        assert any("exit code -9" in m or "SIGKILL" in m for m in pg.messages(first)), pg.messages(first)[-5:]
        wait_for(lambda: pg.run(second)["status"] in FINISHED, 120, "the second writer to finish", logs=stack)
        # The dead worker never released its app_db_write slot: the queue kept the second writer back for it after
        # the first had ended, until run monitoring freed it (free_slots_after_run_end_seconds). Dagster 1.13.27
        # logs no "Freed N slots" line (free_concurrency_slots_for_run returns None), so the queue's log says it.
        ended = dt.datetime.fromtimestamp(int(pg.run(first)["end"]), dt.UTC)
        blocked_after_end = [line for line in stack.log_text("daemon").splitlines()
                             if f"Run {second} is blocked by global concurrency limits" in line and first in line
                             and log_time(line) >= ended]
        assert blocked_after_end, "the killed run's slot should have held the second writer back after it ended"
        assert pg.run(second)["status"] == "SUCCESS", pg.messages(second)[-8:]
        assert not pg.rows("SELECT 1 FROM concurrency_slots WHERE run_id IN (%s, %s)", first, second), "slots held"
        assert pg.run(second)["start"] > pg.run(first)["end"], (pg.run(first), pg.run(second))
        writers = [r for r in pg.runs() if r["tags"].get(WRITER_TAG)]
        assert {first, second} <= {r["run_id"] for r in writers}
        # dagster.yaml's run_retries retries a crashed worker once: the retry is one more writer, queued behind the
        # second, and it stops at the same pause point; killed too, it is not retried again (max_retries 1).
        retry = wait_for(lambda: [r for r in pg.runs() if r["tags"].get("dagster/parent_run_id") == first], 60,
                         "run_retries to retry the crashed writer", logs=stack)[0]
        wait_for(pause_file.exists, 120, "the retried writer to reach its pre-migration backup", logs=stack)
        assert int(pause_file.read_text()) == pg.worker_pid(retry["run_id"])
        assert pg.run(retry["run_id"])["start"] > pg.run(second)["end"], (pg.run(second), retry)
        os.kill(int(pause_file.read_text()), signal.SIGKILL)
        pause_file.unlink()
        wait_for(lambda: pg.run(retry["run_id"])["status"] == "FAILURE", 30, "the killed retry to fail", logs=stack)
        wait_for(lambda: not pg.rows("SELECT 1 FROM concurrency_slots WHERE run_id IS NOT NULL"), 30,
                 "run monitoring to free the killed retry's slot", logs=stack)
        writers = [r for r in pg.runs() if r["tags"].get(WRITER_TAG)]
        assert not overlapping(writers), overlapping(writers)
        with db_conn.cursor() as cur:  # the kills applied nothing; the restore put last night's backup back
            cur.execute("SELECT COUNT(*) FROM __drizzle_migrations")
            assert cur.fetchone()[0] == 1
            cur.execute("SELECT status FROM webhook_events_log WHERE stripeEventId = %s", (EVENT_ID,))
            assert cur.fetchone() is not None

        # ---------------------------------------------------------------- crash of the code server, restart
        # Everything before is finished; then a writer is left mid-backup and the code server's whole process group
        # (server, gRPC child, that run's worker) is killed -9, the daemon stopped, both started again.
        wait_for(lambda: all(r["status"] in FINISHED for r in pg.runs()), 90, "every run to finish", logs=stack)
        before = {r["run_id"]: r["status"] for r in pg.runs()}
        schedule_before = pg.state("nightly_backup")
        stranded = stack.launch("migrate_database")
        wait_for(pause_file.exists, 120, "a third writer to reach its pre-migration backup", logs=stack)
        stack.kill("code-server")
        stack.stop("daemon")
        restarted = time.time()
        stack.start("code-server")
        wait_for_port(code_port, 60, stack.procs["code-server"])
        stack.start("daemon")
        wait_for(lambda: pg.rows("SELECT 1 FROM daemon_heartbeats WHERE daemon_type = 'SCHEDULER' AND "
                                 "timestamp > to_timestamp(%s) AT TIME ZONE 'UTC'", restarted),
                 60, "the restarted daemon's scheduler to beat", logs=stack)
        wait_for(stack.location_loaded, 60, "the webserver to reload the restarted code server", logs=stack)
        # Nothing notices a worker that died with its code server (the default launcher has no health check): the
        # run stays STARTED with its slot until max_runtime. If this fails, it now is noticed: update README
        # "Who notices a dead run worker". The operator's way out, the UI's force termination, frees it.
        assert pg.run(stranded)["status"] == "STARTED", pg.run(stranded)
        assert pg.rows("SELECT run_id FROM concurrency_slots WHERE run_id IS NOT NULL") == [{"run_id": stranded}]
        terminated = stack.graphql("mutation($id: String!) { terminateRun(runId: $id, terminatePolicy: "
                                   "MARK_AS_CANCELED_IMMEDIATELY) { __typename } }", {"id": stranded})
        assert terminated["terminateRun"]["__typename"] == "TerminateRunSuccess", terminated
        wait_for(lambda: not pg.rows("SELECT 1 FROM concurrency_slots WHERE run_id IS NOT NULL"), 30,
                 "run monitoring to free the terminated run's slot", logs=stack)
        assert pg.run(stranded)["status"] == "CANCELED"
        after_run = stack.launch("prune_backups")
        wait_for(lambda: stack.run_status(after_run) in FINISHED, 90, "a run through the restarted processes",
                 logs=stack)
        assert stack.run_status(after_run) == "SUCCESS", pg.messages(after_run)[-8:]
        after = {r["run_id"]: r["status"] for r in pg.runs()}
        assert {k: after[k] for k in before} == before, "runs and their statuses survive the restart"
        assert len(nightly_runs()) == 1, "the restarted scheduler did not fire last night's tick again"
        retries = [r["run_id"] for r in pg.runs() if r["tags"].get("dagster/root_run_id") == first]
        assert retries == [retry["run_id"]], "max_retries 1: the killed retry was not retried again"
        schedule_after = pg.state("nightly_backup")
        assert schedule_after.status.value == schedule_before.status.value == "RUNNING"
        assert schedule_after.instigator_data.start_timestamp == schedule_before.instigator_data.start_timestamp
        assert pg.state("failed_webhook_events").instigator_data.cursor == cursor
        # No secret in the instance config, the processes' logs, the compute logs or anything Dagster stored.
        stored = json.dumps([pg.rows(f"SELECT * FROM {table}") for table in
                             ("runs", "event_logs", "instigators", "job_ticks")], default=str)
        written = [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file() and p.suffix in
                   (".log", ".out", ".err", ".yaml", ".json")]
        for secret in (PG_PASSWORD, STRIPE_KEY):
            assert secret not in stored and not any(secret in text for text in written), secret
        print(f"topology test body {time.monotonic() - started:.1f}s")
    finally:
        stack.stop_all()
        if pg is not None:
            pg.close()
