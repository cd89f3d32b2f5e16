"""Run-failure alerts: Slack, else a generic webhook, else the log."""
