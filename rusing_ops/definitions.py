"""The code location: every capability's Definitions, merged explicitly (nothing is silently dropped), plus resources."""

import importlib

import dagster as dg

from .resources import default_resources

# One line per capability: its package's defs.py exposes `defs`.
CAPABILITIES = ["health", "alerting", "backups", "migrations", "webhooks", "runbooks"]


def build_definitions() -> dg.Definitions:
    parts = [importlib.import_module(f"rusing_ops.{name}.defs").defs for name in CAPABILITIES]
    return dg.Definitions.merge(*parts, dg.Definitions(resources=default_resources(), executor=dg.in_process_executor))


defs = build_definitions()
