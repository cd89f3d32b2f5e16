"""Dagster face of the migrations capability (placeholder until built)."""

import dagster as dg

defs = dg.Definitions()
