"""What every capability's defs.py shares: library errors as `dg.Failure`, result dicts as metadata, and the
target database named in the UI before an operator confirms anything."""

from __future__ import annotations

import dagster as dg

from .core.errors import ConfirmMismatch, OpsError

# A failure carrying this metadata key (True) is an operator's refusal (e.g. a mistyped confirm), not an incident:
# the alerting sensor leaves it out, and Dagster does not retry it.
REFUSAL_KEY = "operator_refusal"


def metadata_of(data: dict) -> dict:
    """A library result or error data as Dagster metadata (nested values as JSON, None left out)."""
    return {key: dg.MetadataValue.json(value) if isinstance(value, (dict, list)) else value
            for key, value in data.items() if value is not None}


def failure(exc: OpsError, **metadata) -> dg.Failure:
    """The boundary translation (STYLE.md §5): the error's full text (what failed, what changed, next step) plus its
    data, so the UI shows the same paragraph the CLI prints. Raise it ``from None``: the paragraph says it all.

    A refused confirm is marked as an operator refusal (no retry, no alert)."""
    if isinstance(exc, ConfirmMismatch):
        metadata[REFUSAL_KEY] = True
    # A RetryPolicy retries only errors marked transient (e.g. StripeUnavailable); a refusal or any other error fails.
    return dg.Failure(description=str(exc), metadata=metadata_of({**exc.data, **metadata}),
                      allow_retries=bool(getattr(exc, "transient", False)) and not isinstance(exc, ConfirmMismatch))


def is_refusal(failure_metadata: dict | None) -> bool:
    """Whether a step failure's metadata marks an operator refusal (for the alerting sensor)."""
    value = (failure_metadata or {}).get(REFUSAL_KEY)
    return bool(getattr(value, "value", value))


def _load_time_url():
    """DATABASE_URL as the database resource resolves it (the documented default when unset), or None if malformed."""
    from .core.dburl import parse_database_url
    from .settings import env

    raw = env("DATABASE_URL")
    try:
        return parse_database_url(raw) if raw else None
    except OpsError:
        return None


def configured_target() -> str:
    """The application database as the UI names it before `confirm`: ``name on host:port`` from DATABASE_URL
    when the code location loaded (never the user or password), or a note that it is malformed."""
    url = _load_time_url()
    if url is None:
        return "(DATABASE_URL is malformed: no target database)"
    return f"{url.database} on {url.host}:{url.port}"


def configured_database() -> str | None:
    """DATABASE_URL's database name when the code location loaded, or None."""
    url = _load_time_url()
    return url.database if url else None


def table_of(rows: list[dict]) -> dg.TableMetadataValue:
    """Rows (dicts of str/int/float/bool) as a table the UI shows with columns, instead of a JSON blob."""
    columns = list(rows[0]) if rows else []

    def kind(column: str) -> str:
        values = {type(r.get(column)) for r in rows} - {type(None)}
        return {frozenset({int}): "int", frozenset({float}): "float", frozenset({int, float}): "float",
                frozenset({bool}): "bool"}.get(frozenset(values), "string")

    return dg.MetadataValue.table(records=[dg.TableRecord(dict(r)) for r in rows],
                                  schema=dg.TableSchema(columns=[dg.TableColumn(c, kind(c)) for c in columns]))


def max_runtime(hours: float) -> dict:
    """The run tag that makes run monitoring fail a run still going after ``hours`` (a hung dump or restore)."""
    return {"dagster/max_runtime": str(int(hours * 3600))}


TARGET_TAG = "rusing/target-database"


def target_tags() -> dict:
    """A run tag naming the target database: the Launchpad shows it above the config, the Runs list beside the run."""
    return {TARGET_TAG: configured_target()}
