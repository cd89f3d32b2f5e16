"""The Stripe client this tool uses: the real `stripe` SDK, a base-URL override for local servers, retries on."""

from __future__ import annotations

from urllib.parse import urlsplit

import stripe

from .errors import ConfigError


def make_stripe_client(api_key: str | None, api_base: str | None = None, *, max_network_retries: int = 2,
                       timeout_s: float = 30.0) -> stripe.StripeClient:
    if not api_key:
        raise ConfigError("STRIPE_SECRET_KEY is not set, so Stripe cannot be reached.",
                          next_step="set STRIPE_SECRET_KEY (sk_live_... or sk_test_...)")
    kwargs = {}
    if api_base:
        parts = urlsplit(api_base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"STRIPE_API_BASE {api_base!r} is not an http(s) URL.")
        kwargs["base_addresses"] = {"api": api_base.rstrip("/")}
    return stripe.StripeClient(
        api_key,
        max_network_retries=max_network_retries,
        http_client=stripe.RequestsClient(timeout=timeout_s),
        **kwargs,
    )


def key_mode(api_key: str | None) -> str:
    """'live', 'test' or 'unknown' from the key's prefix; never the key itself."""
    if not api_key:
        return "not configured"
    if api_key.startswith(("sk_live_", "rk_live_")):
        return "live"
    if api_key.startswith(("sk_test_", "rk_test_")):
        return "test"
    return "unknown"
