"""A stand-in for the app's Stripe webhook endpoint, run as its own process.

It does what runbook §4 says the app does, on the real `webhook_events_log` in MariaDB: verify the signature
with the Stripe SDK (``stripe.Webhook.construct_event``, 300 s tolerance), create the table on first use, claim
the first delivery (INSERT, unique stripeEventId), skip duplicates, re-claim a `failed` row while attempts < 3
(attempts + 1 per claim), then run a "handler" that records its side effect in `app_effects` (one row per
successful processing, so a double processing is visible in the data). Tests make chosen events fail.

``python -m rusing_ops_tests.webhooks.app_server`` prints its port; configure with POST /_test/config.
"""

from __future__ import annotations

import http.server
import json
import threading
import time

import pymysql
import stripe

from rusing_ops.webhooks.events_log import APP_TABLE_DDL, MAX_ATTEMPTS

CONFIG = {"db": None, "secret": None, "fail": {}, "delay_s": 0.0}
LOCK = threading.Lock()
SEEN: list[dict] = []
ENSURED: set[str] = set()

EFFECTS_DDL = ("CREATE TABLE IF NOT EXISTS app_effects (id int AUTO_INCREMENT PRIMARY KEY, "
               "stripeEventId varchar(255) NOT NULL, eventType varchar(128) NOT NULL)")


def claim(cur, event) -> str:
    """'claimed' or why not: the app's idempotency rules."""
    try:
        cur.execute("INSERT INTO webhook_events_log (stripeEventId, eventType, status, attempts, payload) "
                    "VALUES (%s, %s, 'processing', 1, %s)", (event["id"], event["type"], json.dumps(event)))
        return "claimed"
    except pymysql.err.IntegrityError as exc:
        if exc.args[0] != 1062:
            raise
    cur.execute("UPDATE webhook_events_log SET status = 'processing', attempts = attempts + 1, lastError = NULL "
                "WHERE stripeEventId = %s AND status = 'failed' AND attempts < %s", (event["id"], MAX_ATTEMPTS))
    if cur.rowcount == 1:
        return "claimed"
    cur.execute("SELECT status, attempts FROM webhook_events_log WHERE stripeEventId = %s", (event["id"],))
    status, _attempts = cur.fetchone()
    return "dead-lettered" if status == "failed" else f"duplicate ({status})"


def process(raw: bytes, signature: str | None) -> tuple[int, dict]:
    try:
        event = stripe.Webhook.construct_event(raw, signature or "", CONFIG["secret"])
    except (ValueError, stripe.SignatureVerificationError) as exc:
        return 400, {"error": f"signature verification failed: {type(exc).__name__}"}
    event = json.loads(raw)
    conn = pymysql.connect(**CONFIG["db"], autocommit=True)
    try:
        with conn.cursor() as cur:
            if CONFIG["db"]["database"] not in ENSURED:  # ensureWebhookEventsTable(): once, on first use
                cur.execute(APP_TABLE_DDL)
                cur.execute(EFFECTS_DDL)
                ENSURED.add(CONFIG["db"]["database"])
            outcome = claim(cur, event)
            with LOCK:
                SEEN.append({"event": event["id"], "claim": outcome})
            if outcome != "claimed":
                return 200, {"received": True, "skipped": outcome}
            time.sleep(CONFIG["delay_s"])
            with LOCK:  # fail: {event id or "*": times (-1 = always)}
                key = event["id"] if event["id"] in CONFIG["fail"] else "*"
                remaining = CONFIG["fail"].get(key, 0)
                if remaining > 0:
                    CONFIG["fail"][key] = remaining - 1
            if remaining:
                cur.execute("UPDATE webhook_events_log SET status = 'failed', lastError = %s WHERE stripeEventId = %s",
                            (f"handler error: simulated failure for {event['id']}", event["id"]))
                return 500, {"error": "handler failed"}
            cur.execute("INSERT INTO app_effects (stripeEventId, eventType) VALUES (%s, %s)", (event["id"], event["type"]))
            cur.execute("UPDATE webhook_events_log SET status = 'processed', processedAt = NOW(), lastError = NULL "
                        "WHERE stripeEventId = %s", (event["id"],))
            return 200, {"received": True}
    finally:
        conn.close()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = -1  # headers and body leave in one write: no Nagle / delayed-ACK 40 ms stall on keep-alive

    def log_message(self, *args):
        pass

    def _answer(self, status: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/api/health":
            self._answer(200, {"status": "ok", "db": "connected", "stripe": "configured"})
        elif self.path == "/_test/seen":
            with LOCK:
                self._answer(200, {"seen": list(SEEN)})
        else:
            self._answer(404, {"error": "not found"})

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/_test/config":
            body = json.loads(raw)
            with LOCK:
                CONFIG.update(body)
                SEEN.clear()
            self._answer(200, {"ok": True})
        elif self.path == "/api/stripe/webhook":
            self._answer(*process(raw, self.headers.get("Stripe-Signature")))
        else:
            self._answer(404, {"error": "not found"})


def main() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
