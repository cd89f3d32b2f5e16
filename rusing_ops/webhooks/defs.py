"""Dagster face of the webhooks capability (placeholder until built)."""

import dagster as dg

defs = dg.Definitions()
