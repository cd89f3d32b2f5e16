"""Webhook reconciliation benchmark: sensor tick time with no new failures on a 10k and a 1M row log, and re-drive
throughput for 1,000 failed events over real HTTP (Stripe API server + app stand-in processes, real MariaDB).

    /work/venv/bin/python bench/reconcile.py [--rows-small 10000] [--rows-large 1000000] [--events 1000]

Targets (issue 5): the 1M tick within 2x of the 10k tick and under 100 ms. Prints medians and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pymysql
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dagster as dg

from rusing_ops.core.database import create_engine
from rusing_ops.core.dburl import parse_database_url
from rusing_ops.core.stripe_api import make_stripe_client
from rusing_ops.resources import AppResource, DatabaseResource, StripeResource
from rusing_ops.webhooks import events_log, watch
from rusing_ops.webhooks.defs import failed_webhook_events
from rusing_ops.webhooks.reconcile import reconcile
from rusing_ops.webhooks.redeliver import Redriver, signature_header

SERVER = os.environ.get("RUSING_TEST_DATABASE_URL", "mysql://root@127.0.0.1:3306/test")
TYPES = ["payment_intent.succeeded", "invoice.payment_succeeded", "customer.subscription.updated", "charge.refunded"]


def grow(conn, target: int) -> None:
    """Fill the log to ``target`` rows spread over 60 days: 99.5% processed, 0.4% failed, 0.1% dead-lettered."""
    with conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM webhook_events_log")
        have = cur.fetchone()[0]
        step = 200_000
        for start in range(have + 1, target + 1, step):
            end = min(start + step - 1, target)
            cur.execute(
                "INSERT INTO webhook_events_log (stripeEventId, eventType, status, attempts, lastError, createdAt, updatedAt, "
                "processedAt) SELECT CONCAT('evt_bench', seq), ELT(1 + seq %% 4, %s, %s, %s, %s), "
                "IF(seq %% 1000 < 5, 'failed', 'processed'), IF(seq %% 1000 = 0, 3, 1), IF(seq %% 1000 < 5, 'boom', NULL), "
                "NOW() - INTERVAL (5184010 - seq * 5184000 DIV %s) SECOND, "
                "NOW() - INTERVAL (5184010 - seq * 5184000 DIV %s) SECOND, NULL "
                f"FROM seq_{start}_to_{end}", (*TYPES, target, target))
        cur.execute("ANALYZE TABLE webhook_events_log")
        cur.fetchall()


def time_ticks(engine, url, n: int = 30) -> tuple[float, float, str]:
    """Median ms of the library tick and of the real sensor (build_sensor_context) at a cursor past every row."""
    cursor = None
    while True:  # catch up: consume what exists, as the running sensor would have
        plan = watch.plan_tick(engine, url, cursor, max_rows=10_000, batch_size=10_000)
        cursor = plan.cursor.encode()
        if not plan.batches and not plan.dead_lettered:
            break
    lib = []
    for _ in range(n):
        t = time.perf_counter()
        plan = watch.plan_tick(engine, url, cursor)
        lib.append((time.perf_counter() - t) * 1000)
        assert not plan.batches
    resources = {"database": DatabaseResource(url=url_string(url)),  # stripe/app: configured, never contacted by a tick
                 "stripe": StripeResource(api_key="sk_test_bench", webhook_secret="whsec_bench"),
                 "app": AppResource(base_url="http://127.0.0.1:9")}
    sensor = []
    reason = ""
    with dg.instance_for_test() as instance:
        for _ in range(n):
            with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as ctx:
                t = time.perf_counter()
                result = failed_webhook_events(ctx)
                sensor.append((time.perf_counter() - t) * 1000)
            reason = result.skip_message
    return statistics.median(lib), statistics.median(sensor), reason


def url_string(url) -> str:
    return f"mysql://{url.user}{':' + url.password if url.password else ''}@{url.host}:{url.port}/{url.database}"


def spawn(module: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", module], stdout=subprocess.PIPE, cwd=ROOT, start_new_session=True)
    port = int(proc.stdout.readline().decode().strip())
    return proc, f"http://127.0.0.1:{port}"


def bare_deliveries(app_base: str, secret: str, ids: list[str], concurrency: int) -> float:
    """The peer: the same events POSTed signed straight to the app (what Stripe's own delivery costs the app)."""
    from concurrent.futures import ThreadPoolExecutor

    local = threading.local()

    def post(event_id: str) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        session = local.session
        body = json.dumps({"id": event_id, "object": "event", "type": "payment_intent.succeeded",
                           "created": int(time.time()), "data": {"object": {"id": "pi_x"}}})
        resp = session.post(app_base + "/api/stripe/webhook", data=body, timeout=30,
                            headers={"Stripe-Signature": signature_header(body, secret)})
        assert resp.status_code == 200, resp.text

    t = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(post, ids))
    return len(ids) / (time.perf_counter() - t)


def redrive_throughput(url, events: int, concurrency: int) -> tuple[float, float]:
    api_key, secret = "sk_test_" + secrets.token_hex(8), "whsec_" + secrets.token_hex(12)
    stripe_proc, stripe_base = spawn("rusing_ops_tests.webhooks.stripe_server")
    app_proc, app_base = spawn("rusing_ops_tests.webhooks.app_server")
    try:
        time.sleep(0.5)
        now = int(time.time())
        ids = [f"evt_tp{concurrency}x{i}" for i in range(events)]
        requests.post(stripe_base + "/_test/events", timeout=30, json={"events": [
            {"id": e, "type": "payment_intent.succeeded", "created": now - 600, "data": {"object": {"id": "pi_x"}}}
            for e in ids]}).raise_for_status()
        requests.post(app_base + "/_test/config", timeout=10,
                      json={"db": url.pymysql_kwargs(), "secret": secret, "fail": {}, "delay_s": 0}).raise_for_status()
        conn = pymysql.connect(**url.pymysql_kwargs(), autocommit=True)
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO webhook_events_log (stripeEventId, eventType, status, attempts, lastError, "
                            "updatedAt) VALUES (%s, 'payment_intent.succeeded', 'failed', 1, 'boom', NOW() - INTERVAL 60 SECOND)",
                            ids)
        engine = create_engine(url)
        redriver = Redriver(engine, url, make_stripe_client(api_key, stripe_base), app_base + "/api/stripe/webhook", secret,
                            api_key=api_key, actor="bench")
        t = time.perf_counter()
        report = reconcile(redriver, event_ids=ids, max_events=events, concurrency=concurrency, rate_per_s=0)
        elapsed = time.perf_counter() - t
        assert report.counts == {"processed": events}, report.counts
        engine.dispose()
        conn.close()
        bare = bare_deliveries(app_base, secret, [f"evt_bare{concurrency}x{i}" for i in range(events)], concurrency)
        return events / elapsed, bare
    finally:
        for p in (stripe_proc, app_proc):
            p.terminate()
            p.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows-small", type=int, default=10_000)
    ap.add_argument("--rows-large", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, default=1000, help="0 skips the re-drive measurement")
    args = ap.parse_args()
    server = parse_database_url(SERVER)
    name = f"rot_bench_{uuid.uuid4().hex[:8]}"
    admin = pymysql.connect(**server.pymysql_kwargs(database=""), autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    url = server.with_database(name)
    try:
        engine = create_engine(url)
        events_log.ensure(engine, url)
        conn = pymysql.connect(**url.pymysql_kwargs(), autocommit=True)
        results = {}
        for rows in (args.rows_small, args.rows_large):
            t = time.perf_counter()
            grow(conn, rows)
            print(f"log filled to {rows:,} rows in {time.perf_counter() - t:.1f}s", flush=True)
            results[rows] = time_ticks(engine, url)
            lib, sensor, reason = results[rows]
            print(f"  tick with 0 new failures at {rows:>9,} rows: library {lib:6.2f} ms, sensor {sensor:6.2f} ms "
                  f"(median of 30)\n  skip reason: {reason}", flush=True)
        small, large = results[args.rows_small], results[args.rows_large]
        print(f"ratio {args.rows_large:,} / {args.rows_small:,}: library {large[0] / small[0]:.2f}x, "
              f"sensor {large[1] / small[1]:.2f}x (target <= 2x, and < 100 ms at {args.rows_large:,}: "
              f"{'MET' if large[1] / small[1] <= 2 and large[1] < 100 else 'NOT MET'})")
        with conn.cursor() as cur:
            cur.execute("TRUNCATE webhook_events_log")
        for concurrency in (1, 4, 8) if args.events else ():
            rate, bare = redrive_throughput(url, args.events, concurrency)
            print(f"re-drive {args.events} failed events, concurrency {concurrency}: {rate:,.0f} events/s "
                  f"({args.events / rate:.1f}s; Stripe fetch + signed POST + app claim/process + read-back + audit); "
                  f"bare signed POSTs to the app: {bare:,.0f} events/s; tool time / bare time = {bare / rate:.2f}x",
                  flush=True)
            with conn.cursor() as cur:
                cur.execute("TRUNCATE webhook_events_log")
        conn.close()
        engine.dispose()
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


if __name__ == "__main__":
    main()
