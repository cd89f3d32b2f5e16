"""check_coach_accounts against the Stripe-compatible server's Connect surface (accounts, external accounts, payouts)."""

from __future__ import annotations

import time

from rusing_ops.resources import StripeResource
from rusing_ops.webhooks.payouts_defs import check_coach_accounts
from rusing_ops_tests.conftest import free_port

from .conftest import API_KEY, WEBHOOK_SECRET, failure_text, fast_retry, retries

NOW = int(time.time())
ACCOUNTS = [
    {"id": "acct_ok1", "email": "ok@coach.test", "charges_enabled": True, "payouts_enabled": True,
     "requirements": {"currently_due": [], "past_due": [], "errors": [], "disabled_reason": None},
     "_external_accounts": [{"id": "ba_ok1", "object": "bank_account", "last4": "6789", "status": "verified"}],
     "_payouts": [{"id": "po_ok1", "object": "payout", "status": "paid", "amount": 1000, "currency": "cad"}]},
    {"id": "acct_restricted1", "business_profile": {"name": "Marie Tremblay"}, "charges_enabled": True,
     "payouts_enabled": False,
     "requirements": {"currently_due": ["individual.verification.document"], "past_due": ["individual.verification.document"],
                      "errors": [{"requirement": "individual.verification.document", "reason": "document blurry"}],
                      "disabled_reason": "requirements.past_due", "current_deadline": NOW + 86400}},
    {"id": "acct_bank1", "email": "bank@coach.test", "charges_enabled": True, "payouts_enabled": True, "requirements": {},
     "_external_accounts": [{"id": "ba_bad1", "object": "bank_account", "bank_name": "RBC", "last4": "0001",
                             "status": "errored"}],
     "_payouts": [{"id": "po_fail1", "object": "payout", "status": "failed", "amount": 25000, "currency": "cad",
                   "failure_code": "account_closed", "failure_message": "The bank account has been closed",
                   "created": NOW - 3600}]},
]


def test_flags_restricted_accounts_failed_payouts_and_errored_banks(stripe_server, dagster_instance):
    stripe_server.control("/_test/accounts", {"accounts": ACCOUNTS})
    stripe = StripeResource(api_key=API_KEY, webhook_secret=WEBHOOK_SECRET, api_base=stripe_server.base)
    result = check_coach_accounts.execute_in_process(resources={"stripe": stripe}, instance=dagster_instance)
    out = result.output_for_node("check_accounts")
    assert out["summary"] == "3 connected account(s): 1 restricted, 1 failed payout(s), 1 errored bank account(s)"
    by_id = {a["id"]: a for a in out["accounts"]}
    assert by_id["acct_ok1"]["problems"] == []
    assert by_id["acct_restricted1"]["problems"] == [
        "restricted (requirements.past_due)", "past due: individual.verification.document",
        "requirement error: individual.verification.document: document blurry"]
    assert by_id["acct_bank1"]["problems"] == ["payout po_fail1 failed (account_closed: The bank account has been closed)",
                                               "bank account ba_bad1 ****0001 errored"]
    payout_calls = [r for r in stripe_server.requests() if r["path"] == "/v1/payouts"]
    assert [r["stripe_account"] for r in payout_calls] == ["acct_ok1", "acct_restricted1", "acct_bank1"]
    assert all(r["method"] == "GET" for r in stripe_server.requests())  # nothing was created, cancelled or reversed
    meta = next(e for e in result.all_events if e.event_type_value == "STEP_OUTPUT").event_specific_data.metadata
    flagged = {r.data["account"]: r.data for r in meta["flagged_accounts"].records}
    assert set(flagged) == {"acct_restricted1", "acct_bank1"} and meta["dagster/row_count"].value == 3
    assert (flagged["acct_restricted1"]["coach"], flagged["acct_restricted1"]["charges"],
            flagged["acct_restricted1"]["payouts"]) == ("Marie Tremblay", True, False)


def test_unreachable_stripe_is_a_clear_failure_retried_as_transient(dagster_instance):
    port = free_port()
    stripe = StripeResource(api_key=API_KEY, api_base=f"http://127.0.0.1:{port}")
    result = fast_retry(check_coach_accounts).execute_in_process(resources={"stripe": stripe}, instance=dagster_instance,
                                                                 raise_on_error=False)
    assert retries(result) == 1
    message = failure_text(result)
    assert message.startswith(f"Stripe API at 127.0.0.1:{port} could not be reached while listing Stripe Connect "
                              "accounts (0 read so far; Connect must be enabled) (2 attempt(s); ConnectionError: ")
    assert API_KEY not in message


def test_refused_key_is_not_retried(stripe_server, dagster_instance):
    stripe = StripeResource(api_key="rk_not_a_valid_key", api_base=stripe_server.base)
    result = check_coach_accounts.execute_in_process(resources={"stripe": stripe}, instance=dagster_instance,
                                                     raise_on_error=False)
    assert not result.success and retries(result) == 0
    assert "refused the API key while listing Stripe Connect accounts (0 read so far" in failure_text(result)
    assert len(stripe_server.requests()) == 1
