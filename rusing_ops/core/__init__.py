"""Plumbing shared by every capability: database access, the backup store, errors. No Dagster here."""
