"""Stripe's side: the authoritative event by id (raw JSON, never the app's stored payload), event listings with
filters, and Stripe's own retry endpoint. Everything goes through core.stripe_api (the SDK's StripeClient, bounded
calls, one error translation)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

from ..core.errors import ConfigError
from ..core.stripe_api import StripeAPI, StripeUnavailable
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


def fetch_event(api: StripeAPI, event_id: str, *, account: str | None = None) -> StripeEvent:
    """``GET /v1/events/{id}`` (with ``Stripe-Account: account`` for an event of a connected account); raises
    :class:`NotFound` (unknown, other account, or older than 30 days) or :class:`StripeUnavailable`."""
    validate_event_id(event_id)
    options = {"stripe_account": account} if account else {}
    resp = api.call(f"fetching {event_id}" + (f" on {account}" if account else ""),
                    lambda: api.client.raw_request("get", f"/v1/events/{event_id}", **options))
    data = json.loads(resp.body)
    if data.get("id") != event_id or data.get("object") != "event" or (account and data.get("account") != account):
        raise StripeUnavailable(f"Stripe answered {event_id} with a body that is not that event.")
    return StripeEvent(event_id, data["type"], int(data["created"]), resp.body, data.get("account"))


def list_events(api: StripeAPI, *, types: tuple[str, ...] = HANDLED_TYPES, created_gte: int | None = None,
                delivery_success: bool | None = None, page_size: int = 100) -> Iterator[dict]:
    """``GET /v1/events`` (newest first, auto-paginated) filtered by ``types`` (<= 20 exact names), creation time and
    ``delivery_success`` (False = still pending or failed for some endpoint). Yields plain dicts."""
    if not 1 <= len(types) <= 20:
        raise ValueError("Stripe accepts 1 to 20 exact event types per listing")
    params: dict = {"types": list(types), "limit": page_size}
    if created_gte is not None:
        params["created"] = {"gte": int(created_gte)}
    if delivery_success is not None:
        params["delivery_success"] = delivery_success
    with api.translate("listing events"):
        for event in api.client.v1.events.list(params).auto_paging_iter():
            yield event.to_dict()


def ask_stripe_to_retry(api: StripeAPI, event_id: str, webhook_endpoint: str, *, account: str | None = None) -> None:
    """``POST /v1/events/{id}/retry`` to ``webhook_endpoint`` (we_...): what `stripe events resend` calls.

    Not in the SDKs, hence ``raw_request``; Stripe answers 404 for events older than 30 days.
    """
    validate_event_id(event_id)
    if not webhook_endpoint.startswith("we_") or not webhook_endpoint[3:].replace("_", "").isalnum():
        raise ConfigError(f"{webhook_endpoint!r} is not a webhook endpoint id (we_...).",
                          next_step="copy it from Stripe Dashboard -> Developers -> Webhooks")
    params = {"webhook_endpoint": webhook_endpoint, **({"account": account} if account else {})}
    api.call(f"asking Stripe to retry {event_id}",
             lambda: api.client.raw_request("post", f"/v1/events/{event_id}/retry", **params))
