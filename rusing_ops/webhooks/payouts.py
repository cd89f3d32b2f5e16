"""Runbook §6 "Coach Payout Failure", steps 2-4 as a read-only report: every Stripe Connect (coach) account, with
restricted ones flagged (requirements, disabled_reason), failed payouts and errored bank accounts.

Nothing here moves money: no payout is created, retried, cancelled or reversed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from ..core.stripe_api import StripeAPI

BAD_BANK_STATUSES = {"errored", "verification_failed"}


@dataclass
class CoachAccount:
    id: str
    name: str
    charges_enabled: bool
    payouts_enabled: bool
    disabled_reason: str | None
    currently_due: list[str] = field(default_factory=list)
    past_due: list[str] = field(default_factory=list)
    requirement_errors: list[str] = field(default_factory=list)
    current_deadline: int | None = None
    failed_payouts: list[dict] = field(default_factory=list)
    errored_bank_accounts: list[dict] = field(default_factory=list)

    @property
    def restricted(self) -> bool:
        return (not self.charges_enabled or not self.payouts_enabled or bool(self.disabled_reason)
                or bool(self.past_due))

    @property
    def problems(self) -> list[str]:
        out = []
        if self.restricted:
            out.append("restricted" + (f" ({self.disabled_reason})" if self.disabled_reason else ""))
        if self.past_due:
            out.append("past due: " + ", ".join(self.past_due))
        elif self.currently_due:
            out.append("currently due: " + ", ".join(self.currently_due))
        out += [f"requirement error: {e}" for e in self.requirement_errors]
        out += [f"payout {p['id']} failed ({p['failure_code']}: {p['failure_message']})" for p in self.failed_payouts]
        out += [f"bank account {b['id']} ****{b['last4']} {b['status']}" for b in self.errored_bank_accounts]
        return out

    @property
    def next_step(self) -> str:
        if self.restricted or self.currently_due:
            return "coach completes onboarding (Stripe Connect account link), then retry the payout from the admin dashboard"
        if self.errored_bank_accounts:
            return "coach updates the bank account in Stripe, then retry the payout from the admin dashboard"
        if self.failed_payouts:
            return "retry the payout from the admin dashboard once the cause shown is resolved"
        return ""

    def as_dict(self) -> dict:
        return {**asdict(self), "restricted": self.restricted, "problems": self.problems, "next_step": self.next_step}


@dataclass
class CoachAccountsReport:
    accounts: list[CoachAccount]

    @property
    def flagged(self) -> list[CoachAccount]:
        return [a for a in self.accounts if a.problems]

    def summary(self) -> str:
        restricted = sum(a.restricted for a in self.accounts)
        payouts = sum(len(a.failed_payouts) for a in self.accounts)
        banks = sum(len(a.errored_bank_accounts) for a in self.accounts)
        return (f"{len(self.accounts)} connected account(s): {restricted} restricted, {payouts} failed payout(s), "
                f"{banks} errored bank account(s)")


def _get(obj, key, default=None):
    value = obj.get(key) if isinstance(obj, dict) else None
    return default if value is None else value


def _account(data: dict) -> CoachAccount:
    req = _get(data, "requirements", {})
    profile = _get(data, "business_profile", {})
    name = _get(profile, "name") or _get(data, "email") or ""
    return CoachAccount(
        id=data["id"], name=name, charges_enabled=bool(data.get("charges_enabled")),
        payouts_enabled=bool(data.get("payouts_enabled")), disabled_reason=_get(req, "disabled_reason"),
        currently_due=list(_get(req, "currently_due", [])), past_due=list(_get(req, "past_due", [])),
        requirement_errors=[f"{e.get('requirement')}: {e.get('reason')}" for e in _get(req, "errors", [])],
        current_deadline=_get(req, "current_deadline"))


def check_coach_accounts(api: StripeAPI, *, payouts_since_days: int = 30, max_accounts: int = 5000) -> CoachAccountsReport:
    """List every connected account and, per account, its failed payouts (``Stripe-Account`` header) of the last
    ``payouts_since_days`` and its bank accounts whose status is errored or verification_failed. Read-only."""
    since = int(time.time()) - payouts_since_days * 86400
    accounts: list[CoachAccount] = []
    import stripe  # loaded by connect_stripe already

    try:
        _read_accounts(api.client, since, max_accounts, accounts)
    except stripe.StripeError as exc:
        what = f"listing Stripe Connect accounts ({len(accounts)} read so far; Connect must be enabled)"
        raise api.explain(exc, what) from None
    return CoachAccountsReport(accounts)


def _read_accounts(client, since: int, max_accounts: int, accounts: list[CoachAccount]) -> None:
    for acct in client.v1.accounts.list({"limit": 100}).auto_paging_iter():
        coach = _account(acct.to_dict())
        banks = client.v1.accounts.external_accounts.list(coach.id, {"object": "bank_account", "limit": 100})
        coach.errored_bank_accounts = [
            {"id": b["id"], "bank_name": b.get("bank_name"), "last4": b.get("last4"), "status": b.get("status")}
            for b in (x.to_dict() for x in banks.auto_paging_iter()) if b.get("status") in BAD_BANK_STATUSES]
        payouts = client.v1.payouts.list({"status": "failed", "created": {"gte": since}, "limit": 100},
                                         {"stripe_account": coach.id})
        coach.failed_payouts = [
            {"id": p["id"], "amount": p.get("amount"), "currency": p.get("currency"),
             "failure_code": p.get("failure_code"), "failure_message": p.get("failure_message"),
             "arrival_date": p.get("arrival_date")}
            for p in (x.to_dict() for x in payouts.auto_paging_iter())]
        accounts.append(coach)
        if len(accounts) >= max_accounts:
            break
