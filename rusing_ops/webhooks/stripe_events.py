"""Stripe's side: the authoritative event by id (raw JSON, never the app's stored payload), event listings with
filters, and Stripe's own retry endpoint. Everything goes through the official SDK's StripeClient."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Iterator

import stripe

from ..core.dburl import scrub_secret
from ..core.errors import ConfigError, NotFound, OpsError
from .events_log import validate_event_id

# Runbook §4, "Webhook Event Types Handled".
HANDLED_TYPES = (
    "checkout.session.completed",
    "payment_intent.succeeded",
    "charge.refunded",
    "account.updated",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
)
# "Retrieves the details of an event if it was created in the last 30 days" (Stripe API reference).
RETENTION_S = 30 * 24 * 3600


class StripeUnavailable(OpsError):
    """Stripe's API could not be reached or refused the request (transient or configuration)."""


@dataclass(frozen=True)
class StripeEvent:
    id: str
    type: str
    created: int
    body: str  # the raw JSON as Stripe returned it: what gets re-signed and re-delivered
    account: str | None = None

    @property
    def age_s(self) -> int:
        return int(time.time()) - self.created

    @property
    def past_retention(self) -> bool:
        return self.age_s > RETENTION_S


def _explain(exc: stripe.StripeError, what: str, secrets: tuple) -> OpsError:
    message = scrub_secret(getattr(exc, "user_message", None) or str(exc) or type(exc).__name__, *secrets)
    if isinstance(exc, (stripe.APIConnectionError,)):
        return StripeUnavailable(f"Stripe API did not answer while {what}: {message}",
                                 next_step="check STRIPE_API_BASE / network and run the same command again")
    if isinstance(exc, stripe.AuthenticationError):
        return StripeUnavailable(f"Stripe refused the API key while {what} (HTTP {exc.http_status}).",
                                 next_step="check STRIPE_SECRET_KEY (live vs test mode)")
    if isinstance(exc, stripe.InvalidRequestError) and exc.http_status == 404:
        return NotFound(f"Stripe has no such object while {what}: {message}", code=exc.code)
    return StripeUnavailable(f"Stripe answered HTTP {exc.http_status} while {what}: {message}",
                             next_step="retry later; if it persists check Stripe's status page")


def fetch_event(client: stripe.StripeClient, event_id: str, *, account: str | None = None,
                secrets: tuple = ()) -> StripeEvent:
    """``GET /v1/events/{id}`` (with ``Stripe-Account: account`` for an event of a connected account); raises
    :class:`NotFound` (unknown, other account, or older than 30 days) or :class:`StripeUnavailable`."""
    validate_event_id(event_id)
    options = {"stripe_account": account} if account else {}
    try:
        resp = client.raw_request("get", f"/v1/events/{event_id}", **options)
    except stripe.StripeError as exc:
        raise _explain(exc, f"fetching {event_id}" + (f" on {account}" if account else ""), secrets) from None
    data = json.loads(resp.body)
    if data.get("id") != event_id or data.get("object") != "event" or (account and data.get("account") != account):
        raise StripeUnavailable(f"Stripe answered {event_id} with a body that is not that event.")
    return StripeEvent(event_id, data["type"], int(data["created"]), resp.body, data.get("account"))


def list_events(client: stripe.StripeClient, *, types: tuple[str, ...] = HANDLED_TYPES, created_gte: int | None = None,
                delivery_success: bool | None = None, page_size: int = 100, secrets: tuple = ()) -> Iterator[dict]:
    """``GET /v1/events`` (newest first, auto-paginated) filtered by ``types`` (<= 20 exact names), creation time and
    ``delivery_success`` (False = still pending or failed for some endpoint). Yields plain dicts."""
    if not 1 <= len(types) <= 20:
        raise ValueError("Stripe accepts 1 to 20 exact event types per listing")
    params: dict = {"types": list(types), "limit": page_size}
    if created_gte is not None:
        params["created"] = {"gte": int(created_gte)}
    if delivery_success is not None:
        params["delivery_success"] = delivery_success
    try:
        for event in client.v1.events.list(params).auto_paging_iter():
            yield event.to_dict()
    except stripe.StripeError as exc:
        raise _explain(exc, "listing events", secrets) from None


def ask_stripe_to_retry(client: stripe.StripeClient, event_id: str, webhook_endpoint: str, *, account: str | None = None,
                        secrets: tuple = ()) -> None:
    """``POST /v1/events/{id}/retry`` to ``webhook_endpoint`` (we_...): what `stripe events resend` calls.

    Not in the SDKs, hence ``raw_request``; Stripe answers 404 for events older than 30 days.
    """
    validate_event_id(event_id)
    if not webhook_endpoint.startswith("we_") or not webhook_endpoint[3:].replace("_", "").isalnum():
        raise ConfigError(f"{webhook_endpoint!r} is not a webhook endpoint id (we_...).",
                          next_step="copy it from Stripe Dashboard -> Developers -> Webhooks")
    try:
        params = {"webhook_endpoint": webhook_endpoint, **({"account": account} if account else {})}
        client.raw_request("post", f"/v1/events/{event_id}/retry", **params)
    except stripe.StripeError as exc:
        raise _explain(exc, f"asking Stripe to retry {event_id}", secrets) from None
