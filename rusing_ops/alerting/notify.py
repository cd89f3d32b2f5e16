"""Compose a run-failure alert and send it: Slack when a token and channel are set, else a generic webhook URL,
else nowhere (the caller logs it). The text never carries a secret: every known secret value is scrubbed."""

from __future__ import annotations

import os
from dataclasses import dataclass

import requests

from ..core.dburl import parse_database_url, scrub_secret
from ..core.errors import ConfigError

SECRET_VARIABLES = ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "SLACK_BOT_TOKEN", "AWS_SECRET_ACCESS_KEY",
                    "AWS_SESSION_TOKEN", "RUSING_ALERT_WEBHOOK_URL", "DAGSTER_PG_PASSWORD",
                    "RUSING_BACKUP_IDENTITY")


def known_secrets() -> list[str]:
    """Secret values present in this process's environment (the database password included)."""
    values = [os.environ.get(name) for name in SECRET_VARIABLES]
    try:
        values.append(parse_database_url(os.environ.get("DATABASE_URL")).password)
    except ConfigError:
        pass
    return [v for v in values if v]


@dataclass(frozen=True)
class FailureAlert:
    job_name: str  # the job, or for a run started from an asset page the assets it ran (see ``assets``)
    run_id: str
    step_key: str | None
    error: str
    ui_url: str | None = None
    assets: tuple[str, ...] = ()  # set when the run is Dagster's anonymous asset job (``__ASSET_JOB``)

    def text(self) -> str:
        where = f"step `{self.step_key}`" if self.step_key else "the run"
        what = (f"run of {', '.join(f'`{a}`' for a in self.assets)}" if self.assets else f"job `{self.job_name}`")
        lines = [f":rotating_light: rusing_ops {what} failed in {where}.",
                 f"Error: {self.error}", f"Run: {self.run_id}"]
        if self.ui_url:
            lines.append(f"Details: {self.ui_url.rstrip('/')}/runs/{self.run_id}")
        return scrub_secret("\n".join(lines), *known_secrets())


def first_error_line(text: str, limit: int = 600) -> str:
    text = (text or "").strip()
    return text.splitlines()[0][:limit] if text else "unknown error"


def send_alert(alert: FailureAlert, *, slack_client=None, slack_channel: str | None = None,
               webhook_url: str | None = None, timeout_s: float = 10.0) -> str:
    """Deliver ``alert``; return where it went ("slack:#chan", "webhook", or "log only")."""
    text = alert.text()
    if slack_client is not None and slack_channel:
        slack_client.chat_postMessage(channel=slack_channel, text=text)
        return f"slack:{slack_channel}"
    if webhook_url:
        resp = requests.post(webhook_url, json={"text": text, "job": alert.job_name, "run_id": alert.run_id,
                                                "step": alert.step_key}, timeout=timeout_s)
        resp.raise_for_status()
        return "webhook"
    return "log only"
