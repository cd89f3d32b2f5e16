"""Dagster face of the coach-payout check (runbook §6): job `check_coach_accounts`, read-only, moves no money."""

import dagster as dg
from pydantic import Field

from ..core.errors import OpsError
from ..dagster_support import failure, max_runtime
from ..resources import StripeResource
from . import payouts
from .defs import STRIPE_RETRY


class CheckAccountsConfig(dg.Config):
    payouts_since_days: int = Field(default=30, description="Report failed payouts created in the last N days.")
    fail_on_problems: bool = Field(default=False, description="Fail the run when any account is flagged (for alerting).")


@dg.op(retry_policy=STRIPE_RETRY,
       description="List Connect accounts; flag restricted ones, failed payouts and errored bank accounts.")
def check_accounts(context: dg.OpExecutionContext, config: CheckAccountsConfig, stripe: StripeResource) -> dict:
    if not stripe.configured:
        raise dg.Failure(description="STRIPE_SECRET_KEY is not set: Stripe Connect cannot be checked. Nothing was changed.",
                         allow_retries=False)
    try:
        report = payouts.check_coach_accounts(stripe.get_client(), payouts_since_days=config.payouts_since_days)
    except OpsError as exc:
        raise failure(exc) from None  # retried only when Stripe was unavailable (transient), never for a refusal
    metadata = {"accounts": len(report.accounts), "flagged": len(report.flagged),
                "restricted": sum(a.restricted for a in report.accounts),
                "failed_payouts": sum(len(a.failed_payouts) for a in report.accounts),
                "errored_bank_accounts": sum(len(a.errored_bank_accounts) for a in report.accounts),
                "flagged_accounts": dg.MetadataValue.table(
                    [dg.TableRecord({"account": a.id, "coach": a.name, "charges": a.charges_enabled,
                                     "payouts": a.payouts_enabled, "problems": "; ".join(a.problems),
                                     "next_step": a.next_step}) for a in report.flagged],
                    schema=dg.TableSchema(columns=[
                        dg.TableColumn("account"), dg.TableColumn("coach"), dg.TableColumn("charges", "bool"),
                        dg.TableColumn("payouts", "bool"), dg.TableColumn("problems"), dg.TableColumn("next_step")])),
                "dagster/row_count": len(report.accounts)}
    context.add_output_metadata(metadata)
    context.log.info(report.summary())
    for account in report.flagged:
        context.log.warning(f"{account.id} ({account.name}): {'; '.join(account.problems)}. Next: {account.next_step}")
    if config.fail_on_problems and report.flagged:
        raise dg.Failure(description=f"{report.summary()}; flagged: " + ", ".join(a.id for a in report.flagged),
                         metadata=metadata, allow_retries=False)
    return {"summary": report.summary(), "accounts": [a.as_dict() for a in report.accounts]}


@dg.job(tags=max_runtime(0.5), description="Runbook §6 Coach Payout Failure: list Stripe Connect accounts and report restricted ones (requirements, "
        "disabled_reason), failed payouts and errored bank accounts as a table. Read-only: no money moves.",
        executor_def=dg.in_process_executor)
def check_coach_accounts():
    check_accounts()


defs = dg.Definitions(jobs=[check_coach_accounts])
