"""A small Stripe-compatible API server for what localstripe 1.15.10 lacks (../shared/research/stripe.md §3):
`GET /v1/events` with `types[]`, `delivery_success`, `created[...]`, `ending_before`, newest first and the
30-day window; `POST /v1/events/{id}/retry` delivering signed to a registered endpoint; Connect accounts,
their external accounts and payouts (`Stripe-Account` header). State is set by tests through `/_test/*`.

Run as its own process: ``python -m rusing_ops_tests.webhooks.stripe_server PORT`` (binds 127.0.0.1 only).
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

RETENTION_S = 30 * 24 * 3600


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.events: dict[str, dict] = {}       # id -> event (incl. private "_delivered")
        self.endpoints: dict[str, dict] = {}    # we_ -> {url, secret}
        self.accounts: dict[str, dict] = {}
        self.external: dict[str, list] = {}     # acct -> bank accounts
        self.payouts: dict[str, list] = {}      # acct -> payouts
        self.requests: list[dict] = []
        self.deliveries: list[dict] = []


STATE = State()


def public(event: dict) -> dict:
    return {k: v for k, v in event.items() if not k.startswith("_")}


def parse_params(text: str) -> dict:
    """Stripe's form encoding: a[b]=1, a[0]=x -> nested dicts; lists come back as dicts of indexes."""
    out: dict = {}
    for key, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
        parts = re.findall(r"[^\[\]]+|\[\]", key)
        node = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "[]":
                part = str(len(node))
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return out


def as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, dict):
        return [value[k] for k in sorted(value, key=int)]
    return [value]


def error(status: int, message: str, code: str | None = None, etype: str = "invalid_request_error"):
    return status, {"error": {"type": etype, "message": message, **({"code": code} if code else {})}}


def page(items: list[dict], params: dict, url: str):
    limit = int(params.get("limit", 10))
    if not 1 <= limit <= 100:
        return error(400, "Invalid integer: limit must be between 1 and 100")
    if "starting_after" in params:
        ids = [i["id"] for i in items]
        if params["starting_after"] in ids:
            items = items[ids.index(params["starting_after"]) + 1:]
    if "ending_before" in params:
        ids = [i["id"] for i in items]
        if params["ending_before"] in ids:
            items = items[:ids.index(params["ending_before"])][-limit:]
    return 200, {"object": "list", "url": url, "has_more": len(items) > limit, "data": items[:limit]}


def list_events(params: dict):  # platform events only (Stripe-Account listing not modelled)
    if "type" in params and "types" in params:
        return error(400, "You may only specify one of these parameters: type, types.")
    now = time.time()
    events = [e for e in STATE.events.values() if e["created"] > now - RETENTION_S and not e.get("account")]
    types = as_list(params.get("types"))
    if len(types) > 20:
        return error(400, "types: at most 20 event types")
    if types:
        events = [e for e in events if e["type"] in types]
    if "type" in params:
        pattern = re.compile(re.escape(params["type"]).replace(r"\*", ".*") + "$")
        events = [e for e in events if pattern.match(e["type"])]
    if "delivery_success" in params:
        want = params["delivery_success"] == "true"
        events = [e for e in events if e["_delivered"] == want]
    created = params.get("created")
    if isinstance(created, dict):
        ops = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b}
        for op, value in created.items():
            events = [e for e in events if ops[op](e["created"], int(value))]
    elif created is not None:
        events = [e for e in events if e["created"] == int(created)]
    events.sort(key=lambda e: (e["created"], e["id"]), reverse=True)
    return page([public(e) for e in events], params, "/v1/events")


def deliver(event: dict, endpoint: dict) -> None:
    body = json.dumps(public(event), indent=2).encode()
    ts = int(time.time())
    sig = hmac.new(endpoint["secret"].encode(), b"%d.%s" % (ts, body), hashlib.sha256).hexdigest()
    req = urllib.request.Request(endpoint["url"], data=body, method="POST", headers={
        "Content-Type": "application/json; charset=utf-8", "Stripe-Signature": f"t={ts},v1={sig}",
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError:
        status = None
    with STATE.lock:
        STATE.deliveries.append({"event": event["id"], "status": status})
        if status is not None and 200 <= status < 300:
            event["_delivered"] = True
            event["pending_webhooks"] = 0


def route(method: str, path: str, params: dict, headers) -> tuple[int, dict]:
    if path.startswith("/_test/"):
        return control(method, path, params)
    auth = headers.get("Authorization", "")
    if not re.fullmatch(r"Bearer sk_(test|live)_\w+", auth):
        return error(401, "Invalid API Key provided.", etype="invalid_request_error")
    now = time.time()
    if method == "GET" and path == "/v1/events":
        return list_events(params)
    m = re.fullmatch(r"/v1/events/([^/]+)(/retry)?", path)
    if m:
        event = STATE.events.get(m.group(1))
        if event is not None and event.get("account") and event["account"] not in (
                headers.get("Stripe-Account"), params.get("account")):
            event = None  # a connected account's event is only visible with that account named
        if event is None or event["created"] <= now - RETENTION_S:
            return error(404, f"No such event: '{m.group(1)}'" if not m.group(2) else "No such notification",
                         "resource_missing")
        if method == "GET" and not m.group(2):
            return 200, public(event)
        if method == "POST" and m.group(2):
            endpoint = STATE.endpoints.get(params.get("webhook_endpoint", ""))
            if endpoint is None:
                return error(404, f"No such webhook endpoint: '{params.get('webhook_endpoint')}'", "resource_missing")
            threading.Thread(target=deliver, args=(event, endpoint), daemon=True).start()
            return 200, public(event)
    if method == "GET" and path == "/v1/accounts":
        return page(list(STATE.accounts.values()), params, "/v1/accounts")
    m = re.fullmatch(r"/v1/accounts/(acct_\w+)(/external_accounts)?", path)
    if m and method == "GET":
        if m.group(1) not in STATE.accounts:
            return error(404, f"No such account: '{m.group(1)}'", "resource_missing")
        if m.group(2):
            return page(STATE.external.get(m.group(1), []), params, path)
        return 200, STATE.accounts[m.group(1)]
    if method == "GET" and path == "/v1/payouts":
        payouts = STATE.payouts.get(headers.get("Stripe-Account", ""), [])
        if "status" in params:
            payouts = [p for p in payouts if p["status"] == params["status"]]
        return page(payouts, params, "/v1/payouts")
    return error(404, f"Unrecognized request URL ({method}: {path}).")


def control(method: str, path: str, body: dict) -> tuple[int, dict]:
    with STATE.lock:
        if path == "/_test/reset":
            STATE.reset()
        elif path == "/_test/events":
            for event in body["events"]:
                event = {"object": "event", "api_version": "2026-10-28.endive", "livemode": False,
                         "pending_webhooks": 0 if event.get("delivered", True) else 1, "request": None, **event}
                event["_delivered"] = bool(event.pop("delivered", True))
                STATE.events[event["id"]] = event
        elif path == "/_test/webhook_endpoints":
            STATE.endpoints[body["id"]] = {"url": body["url"], "secret": body["secret"]}
        elif path == "/_test/accounts":
            for acct in body["accounts"]:
                STATE.external[acct["id"]] = acct.pop("_external_accounts", [])
                STATE.payouts[acct["id"]] = acct.pop("_payouts", [])
                STATE.accounts[acct["id"]] = {"object": "account", **acct}
        elif path == "/_test/requests":
            return 200, {"requests": STATE.requests, "deliveries": STATE.deliveries}
        else:
            return 404, {"error": {"message": f"unknown control path {path}"}}
    return 200, {"ok": True}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = -1  # headers and body leave in one write: no Nagle / delayed-ACK 40 ms stall on keep-alive

    def log_message(self, *args):
        pass

    def _handle(self, method: str):
        split = urllib.parse.urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        if split.path.startswith("/_test/"):
            params = json.loads(raw) if raw else {}
        else:
            params = parse_params(split.query if method == "GET" else raw)
            with STATE.lock:
                STATE.requests.append({"method": method, "path": split.path, "params": params,
                                       "stripe_account": self.headers.get("Stripe-Account")})
        status, body = route(method, split.path, params, self.headers)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", "req_local")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")


def main() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
