"""What every capability's defs.py shares: library errors as `dg.Failure`, result dicts as metadata."""

from __future__ import annotations

import dagster as dg

from .core.errors import OpsError


def metadata_of(data: dict) -> dict:
    """A library result or error data as Dagster metadata (nested values as JSON, None left out)."""
    return {key: dg.MetadataValue.json(value) if isinstance(value, (dict, list)) else value
            for key, value in data.items() if value is not None}


def failure(exc: OpsError, **metadata) -> dg.Failure:
    """The boundary translation (STYLE.md §5): the error's full text (what failed, what changed, next step) plus its
    data, so the UI shows the same paragraph the CLI prints."""
    return dg.Failure(description=str(exc), metadata=metadata_of({**exc.data, **metadata}))
