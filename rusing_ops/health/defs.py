"""Dagster face of the health capability (placeholder until built)."""

import dagster as dg

defs = dg.Definitions()
