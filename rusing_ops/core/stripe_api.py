"""The one way this tool talks to Stripe: the official SDK's StripeClient with bounded network calls (explicit
connect and read timeouts, a fixed number of SDK retries), and one translation of Stripe's errors.

Transient failures (no answer, timeout, rate limit, HTTP 5xx) become :class:`StripeUnavailable` (``transient``:
the Dagster layer lets its RetryPolicy retry them); refusals that retrying cannot fix (bad key, permission,
invalid request) become :class:`StripeRefused`; an unknown object is :class:`NotFound`. Every message names the
host and, for a timeout, the timeout; the API key is scrubbed from all of them.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from .dburl import scrub_secret
from .errors import ConfigError, NotFound, OpsError

if TYPE_CHECKING:  # the SDK itself is imported where a client is made (0.3 s that every CLI command paid)
    import stripe

DEFAULT_API_BASE = "https://api.stripe.com"
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 10.0
# The SDK retries connection errors, 409, 429 and 5xx itself (with its own backoff, idempotency keys on POST).
# One retry absorbs a blip; longer outages are the job's RetryPolicy's business, so a call is bounded by
# (1 + NETWORK_RETRIES) x (connect + read timeout) plus the SDK's sub-second sleep.
NETWORK_RETRIES = 1

T = TypeVar("T")


class StripeUnavailable(OpsError):
    """Stripe did not answer (refused, timed out), rate-limited us, or failed on its side: worth retrying later."""

    transient = True


class StripeRefused(OpsError):
    """Stripe refused the request for good (bad key, missing permission, invalid request): retrying cannot help."""


@dataclass
class StripeAPI:
    """A configured StripeClient plus what its error messages need (host, timeouts, the key to scrub)."""

    client: stripe.StripeClient
    api_key: str
    host: str
    connect_timeout_s: float
    read_timeout_s: float
    network_retries: int

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()`` with Stripe's errors translated (see the module docstring)."""
        with self.translate(what):
            return fn()

    @contextlib.contextmanager
    def translate(self, what: str) -> Iterator[None]:
        """Translate Stripe errors raised inside the block (also while iterating a paginated listing)."""
        import stripe  # loaded by connect_stripe already

        try:
            yield
        except stripe.StripeError as exc:
            raise self.explain(exc, what) from None

    def explain(self, exc: stripe.StripeError, what: str) -> OpsError:
        import stripe  # loaded by connect_stripe already

        message = scrub_secret(getattr(exc, "user_message", None) or str(exc) or type(exc).__name__, self.api_key)
        status = getattr(exc, "http_status", None)
        if isinstance(exc, stripe.APIConnectionError):
            # The SDK wraps the requests error in a support paragraph; keep only "(Network error: ...)".
            found = re.search(r"\(Network error: (.*)\)\s*$", message, re.DOTALL)
            detail = " ".join((found.group(1) if found else message).split())[:200]
            if "ReadTimeout" in detail or "Read timed out" in detail:
                cause = f"did not answer within the {self.read_timeout_s:g} s read timeout"
            elif "ConnectTimeout" in detail:
                cause = f"did not accept a connection within the {self.connect_timeout_s:g} s connect timeout"
            else:
                cause = "could not be reached"
            return StripeUnavailable(
                f"Stripe API at {self.host} {cause} while {what} ({1 + self.network_retries} attempt(s); {detail}).",
                next_step="check STRIPE_API_BASE / the network (status.stripe.com), then run the same command again")
        message = " ".join(message.split())[:300]
        if isinstance(exc, stripe.AuthenticationError):
            return StripeRefused(f"Stripe at {self.host} refused the API key while {what} (HTTP {status}).",
                                 next_step="check STRIPE_SECRET_KEY (live vs test mode, not revoked)")
        if isinstance(exc, stripe.PermissionError):
            return StripeRefused(f"Stripe at {self.host} refused {what} for this key (HTTP {status}): {message}",
                                 next_step="use a key with that permission (restricted keys list theirs)")
        if isinstance(exc, stripe.InvalidRequestError) and status == 404:
            return NotFound(f"Stripe has no such object while {what}: {message}", code=exc.code)
        if isinstance(exc, stripe.RateLimitError) or status is None or status >= 500 or status == 409:
            answer = f"answered HTTP {status}" if status else "gave no usable answer"
            return StripeUnavailable(f"Stripe at {self.host} {answer} while {what}: {message}",
                                     next_step="retry later; if it persists check status.stripe.com")
        return StripeRefused(f"Stripe at {self.host} refused {what} (HTTP {status}): {message}",
                             next_step="fix the request shown; retrying the same request cannot succeed")


def connect_stripe(api_key: str | None, api_base: str | None = None, *, connect_timeout_s: float = CONNECT_TIMEOUT_S,
                   read_timeout_s: float = READ_TIMEOUT_S, network_retries: int = NETWORK_RETRIES) -> StripeAPI:
    """The Stripe API for ``api_key`` (``api_base`` overrides https://api.stripe.com for local servers)."""
    if not api_key:
        raise ConfigError("STRIPE_SECRET_KEY is not set, so Stripe cannot be reached.",
                          next_step="set STRIPE_SECRET_KEY (sk_live_... or sk_test_...)")
    base = (api_base or DEFAULT_API_BASE).rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"STRIPE_API_BASE {api_base!r} is not an http(s) URL.")
    import stripe

    client = stripe.StripeClient(
        api_key,
        base_addresses={"api": base} if api_base else None,
        max_network_retries=network_retries,
        http_client=stripe.RequestsClient(timeout=(connect_timeout_s, read_timeout_s)),
    )
    return StripeAPI(client, api_key, parts.netloc, connect_timeout_s, read_timeout_s, network_retries)


def key_mode(api_key: str | None) -> str:
    """'live', 'test' or 'unknown' from the key's prefix; never the key itself."""
    if not api_key:
        return "not configured"
    if api_key.startswith(("sk_live_", "rk_live_")):
        return "live"
    if api_key.startswith(("sk_test_", "rk_test_")):
        return "test"
    return "unknown"
