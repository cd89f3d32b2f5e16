"""Dagster face of the runbooks capability (placeholder until built)."""

import dagster as dg

defs = dg.Definitions()
