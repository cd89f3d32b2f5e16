"""Dagster face of the backups capability (placeholder until built)."""

import dagster as dg

defs = dg.Definitions()
