"""Re-drive one Stripe event into the app and read back what the app did with it.

Two ways in: a signed re-POST of the authoritative event (fetched from Stripe by id) to the app's webhook
endpoint, exactly as Stripe delivers (raw JSON body, ``Stripe-Signature`` from the SDK's
``stripe.WebhookSignature.generate_signature_header``: ``t=<now>,v1=HMAC_SHA256(secret, "t.body")``), or Stripe's own retry (``POST /v1/events/{id}/retry`` to a named endpoint). Either way the
outcome comes from the app's `webhook_events_log` row, never from the HTTP status alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import requests
from sqlalchemy.engine import Engine

from ..core.database import connect
from ..core.dburl import DatabaseURL, mask_url, scrub_secret
from ..core.errors import ConfigError, NotFound
from ..core.progress import Progress
from ..core.stripe_api import (
    CONNECT_TIMEOUT_S,
    StripeAPI,
    StripeRefused,
    StripeUnavailable,
)
from . import events_log as log
from .stripe_events import RETENTION_S, ask_stripe_to_retry, fetch_event

OK_OUTCOMES = {"processed", "already_processed", "would_redrive"}
USER_AGENT = "rusing-ops webhook re-delivery"
MAX_CONCURRENCY = 8


@dataclass
class Outcome:
    """What happened to one event. ``outcome`` is one of OK_OUTCOMES or failed / dead_lettered / not_claimed /
    needs_object_repair / not_in_stripe / stripe_unavailable (transient: worth a retry) / stripe_refused (bad key
    or request: a retry cannot help) / app_unreachable."""

    event_id: str
    outcome: str
    event_type: str | None = None
    attempts: int | None = None
    http_status: int | None = None
    error: str | None = None
    actions: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome in OK_OUTCOMES

    def as_dict(self) -> dict:
        return asdict(self)


class RateLimiter:
    """At most ``per_second`` starts per second across threads (evenly spaced)."""

    def __init__(self, per_second: float):
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


@dataclass
class Redriver:
    """Everything a re-drive needs. ``mode`` is "redeliver" (signed re-POST) or "stripe_retry" (needs ``webhook_endpoint``)."""

    engine: Engine
    url: DatabaseURL
    client: StripeAPI | None
    webhook_url: str | None
    webhook_secret: str | None
    actor: str = "rusing-ops"
    run_id: str | None = None
    mode: str = "redeliver"
    webhook_endpoint: str | None = None
    stuck_after_s: int = log.STUCK_AFTER_S
    timeout_s: float = 30.0  # read timeout of the POST to the app (connect: CONNECT_TIMEOUT_S)
    wait_s: float = 30.0  # stripe_retry: how long to wait for Stripe's delivery to show in the log

    def __post_init__(self):
        if self.mode not in ("redeliver", "stripe_retry"):
            raise ConfigError(f"mode {self.mode!r} is not one of redeliver, stripe_retry.")
        if self.client is None:
            raise ConfigError("STRIPE_SECRET_KEY is not set: the authoritative event cannot be fetched.",
                              next_step="set STRIPE_SECRET_KEY (and STRIPE_API_BASE for a local server)")
        if self.mode == "redeliver" and not (self.webhook_url and self.webhook_secret):
            raise ConfigError("re-delivery needs APP_BASE_URL (the app's webhook endpoint) and STRIPE_WEBHOOK_SECRET.",
                              next_step="set both, or use mode stripe_retry with a webhook_endpoint we_...")
        if self.mode == "stripe_retry" and not self.webhook_endpoint:
            raise ConfigError("mode stripe_retry needs webhook_endpoint (we_..., the app's endpoint in Stripe).")

    def _audit(self, conn, action: str, outcome: str, event_id: str, detail=None) -> None:
        log.audit(conn, actor=self.actor, run_id=self.run_id, action=action, outcome=outcome, event_id=event_id,
                  detail=detail)

    def redrive(self, event_id: str, *, reset: bool = False, dry_run: bool = False) -> Outcome:
        """Fetch ``event_id`` from Stripe, deliver it to the app, and classify the log row that results.

        ``reset`` makes the runbook's manual-retry reset first (attempts=0, guarded). ``dry_run`` stops after the
        fetch and reports ``would_redrive``. Changes are audited; an unreachable app undoes the reset.
        """
        log.validate_event_id(event_id)
        with connect(self.engine, self.url) as conn:
            before = log.get_row(conn, event_id)
            if before is not None and before.status == "processed":
                return Outcome(event_id, "already_processed", before.event_type, before.attempts)
            if before is not None and before.dead_lettered and not reset:
                return Outcome(event_id, "dead_lettered", before.event_type, before.attempts,
                               error=f"failed {before.attempts} times, the app will not claim it again: fix the cause "
                                     f"({(before.last_error or 'no error recorded')[:200]}), then run "
                                     f"`rusing-ops webhooks retry {event_id}`")
            result = self._fetch(conn, event_id, before)
            if isinstance(result, Outcome):
                if not dry_run:
                    self._audit(conn, "fetch", result.outcome, event_id, result.error)
                return result
            event = result
            out = Outcome(event_id, "would_redrive", event.type, before.attempts if before else None)
            if dry_run:
                out.actions.append(f"log: {before.status if before else 'absent'}; would {self.mode}")
                return out
            baseline_attempts = before.attempts if before else None
            restored_to = None
            if reset and before is not None:
                if log.reset_for_retry(conn, event_id, stuck_after_s=self.stuck_after_s):
                    out.actions.append(f"reset attempts {before.attempts}->0")
                    self._audit(conn, "reset_attempts", "done", event_id, {"attempts_before": before.attempts})
                    baseline_attempts, restored_to = 0, before.attempts
            elif (before is not None and before.status == "processing" and before.idle_s > self.stuck_after_s
                  and log.release_stuck(conn, event_id, stuck_after_s=self.stuck_after_s)):
                out.actions.append(f"released stuck row (processing {before.idle_s}s)")
                self._audit(conn, "release_stuck", "done", event_id, {"idle_s": before.idle_s})
        delivered = self._deliver(event, out)
        with connect(self.engine, self.url) as conn:
            if not delivered:
                if restored_to is not None and log.restore_attempts(conn, event_id, restored_to):
                    out.actions.append(f"undid reset: attempts back to {restored_to}")
                self._audit(conn, self.mode, out.outcome, event_id, {"error": out.error, "actions": out.actions})
                return out
            after = self._read_back(conn, event_id, baseline_attempts)
            self._classify(out, before, after, baseline_attempts)
            self._audit(conn, self.mode, out.outcome, event_id,
                        {"http_status": out.http_status, "attempts": out.attempts, "error": out.error,
                         "actions": out.actions})
        return out

    def _fetch(self, conn, event_id: str, before: log.LogRow | None):
        try:
            try:
                event = fetch_event(self.client, event_id)
            except NotFound:
                if before is None or before.account is None:
                    raise
                # A Connect event lives on the coach's account; the stored payload only says which one to ask.
                event = fetch_event(self.client, event_id, account=before.account)
        except NotFound as exc:
            if before is not None and before.age_s > RETENTION_S:
                return Outcome(event_id, "needs_object_repair", before.event_type, before.attempts,
                               error=f"first seen {before.age_s // 86400} days ago; Stripe keeps events 30 days: "
                                     "repair the object (subscription, invoice, charge, account) from the API")
            return Outcome(event_id, "not_in_stripe", before.event_type if before else None,
                           before.attempts if before else None, error=exc.message)
        except StripeUnavailable as exc:
            return Outcome(event_id, "stripe_unavailable", error=exc.message)
        except StripeRefused as exc:
            return Outcome(event_id, "stripe_refused", error=exc.message)
        if event.past_retention:
            return Outcome(event_id, "needs_object_repair", event.type, before.attempts if before else None,
                           error=f"created {event.age_s // 86400} days ago, past Stripe's 30-day event window: "
                                 "repair the object from the API instead of replaying the event")
        return event

    def _deliver(self, event, out: Outcome) -> bool:
        """Send the event; False (with ``out`` filled in) when it never reached the app / Stripe refused."""
        if self.mode == "stripe_retry":
            try:
                ask_stripe_to_retry(self.client, event.id, self.webhook_endpoint, account=event.account)
            except StripeUnavailable as exc:
                out.outcome, out.error = "stripe_unavailable", exc.message
                return False
            except (StripeRefused, NotFound) as exc:
                out.outcome, out.error = "stripe_refused", exc.message
                return False
            out.actions.append(f"asked Stripe to retry to {self.webhook_endpoint}")
            return True
        import stripe  # the SDK's signing (loaded with the client, or here for a configured-but-unused one)

        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT,
                   "Stripe-Signature": stripe.WebhookSignature.generate_signature_header(event.body, self.webhook_secret)}
        try:
            resp = requests.post(self.webhook_url, data=event.body.encode("utf-8"), headers=headers,
                                 timeout=(CONNECT_TIMEOUT_S, self.timeout_s), allow_redirects=False)
        except requests.RequestException as exc:
            out.outcome = "app_unreachable"
            out.error = f"{mask_url(self.webhook_url)} did not answer: {type(exc).__name__}: " + \
                scrub_secret(str(exc), self.webhook_secret)[:300]
            return False
        out.http_status = resp.status_code
        out.actions.append(f"POST {mask_url(self.webhook_url)} -> HTTP {resp.status_code}")
        if resp.status_code in (400, 401, 403):
            out.error = f"app rejected the delivery (HTTP {resp.status_code}): {resp.text[:200]}"
        return True

    def _read_back(self, conn, event_id: str, baseline_attempts: int | None) -> log.LogRow | None:
        """The row after delivery; for Stripe's asynchronous retry, poll until the app has finished with it."""
        deadline = time.monotonic() + (self.wait_s if self.mode == "stripe_retry" else 0)
        while True:
            conn.rollback()  # a fresh snapshot on each read
            row = log.get_row(conn, event_id)
            settled = row is not None and row.status != "processing" and row.attempts != baseline_attempts
            if settled or time.monotonic() >= deadline:
                return row
            time.sleep(0.2)

    @staticmethod
    def _classify(out: Outcome, before, after, baseline_attempts) -> None:
        if after is None:
            out.outcome = "not_claimed"
            out.error = out.error or f"the app answered HTTP {out.http_status} but wrote no log row"
            return
        out.attempts = after.attempts
        out.event_type = after.event_type
        if after.status == "processed":
            out.outcome = "already_processed" if before is not None and before.status == "processed" else "processed"
            out.error = None
        elif after.status == "processing":
            out.outcome, out.error = "not_claimed", "another delivery holds the claim (status processing)"
        elif after.attempts != baseline_attempts:
            out.outcome = "dead_lettered" if after.dead_lettered else "failed"
            out.error = after.last_error
        else:
            out.outcome = "not_claimed"
            out.error = out.error or ("dead-lettered: the app no longer claims it; run `rusing-ops webhooks retry "
                                      f"{out.event_id}`" if after.dead_lettered else
                                      f"the app did not claim it (HTTP {out.http_status}); last error: {after.last_error}")


def redrive_many(redriver: Redriver, event_ids: list[str], *, reset: bool = False, dry_run: bool = False,
                 concurrency: int = 4, rate_per_s: float = 10.0,
                 log_fn: Callable[[str], None] | None = None) -> list[Outcome]:
    """Re-drive each id with at most ``concurrency`` in flight and ``rate_per_s`` starts per second.

    Ids are validated up front (a bad one refuses the whole batch before any query). Order of results = input.
    """
    ids = [log.validate_event_id(e) for e in event_ids]
    # Each in-flight re-drive holds a pooled connection across its Stripe fetch; core.database pools 4 + 4 overflow.
    concurrency = max(1, min(concurrency, MAX_CONCURRENCY))
    limiter = RateLimiter(rate_per_s)
    progress = Progress("re-drive", unit="events", total=len(ids), log=log_fn)

    def one(event_id: str) -> Outcome:
        limiter.wait()
        result = redriver.redrive(event_id, reset=reset, dry_run=dry_run)
        progress.advance(1, detail=f"{event_id}: {result.outcome}")
        return result

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="redrive") as pool:
        results = list(pool.map(one, ids))
    progress.finish()
    return results
