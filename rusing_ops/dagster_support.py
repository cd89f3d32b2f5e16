"""What every capability's defs.py shares: library errors as `dg.Failure`, result dicts as metadata, and the
target database named in the UI before an operator confirms anything."""

from __future__ import annotations

import dagster as dg

from .core.errors import ConfirmMismatch, OpsError


def metadata_of(data: dict) -> dict:
    """A library result or error data as Dagster metadata (nested values as JSON, None left out)."""
    return {key: dg.MetadataValue.json(value) if isinstance(value, (dict, list)) else value
            for key, value in data.items() if value is not None}


# An operator's refusal (a mistyped confirm, a partition that is not a backup) is not an incident: its step failure
# is an error of this class name, which the alerting sensor leaves out and Dagster never retries.
REFUSAL_CLASS = "OperatorRefusal"


def refusal(text: str) -> Exception:
    """A step failure the run page shows as ``text`` alone: no "Stack Trace", no Dagster frames (issue 11).

    Dagster 1.13 serializes every exception an op raises with its traceback (execute_plan.py, ``except Failure`` ->
    ``step_failure_event_from_exc_info``) and the UI prints ``Stack Trace:`` under any error with a stack
    (ui-core LogsRowStructuredContent.tsx, FailureContent). A launch-time refusal is not possible either: the
    Launchpad validates run config against the schema snapshot only, and a ConfigMapping that raises comes back as a
    PythonError dialog with the code server's stack. The one stack-free step failure is an error carried from
    another process: ``serializable_error_info_from_exc_info`` (_utils/error.py) returns the carried error info as
    is, so a ``DagsterUserCodeProcessError`` holding one stack-less info is the failure the UI and the run failure
    sensor see, and a framework error is never retried (op_execution_error_boundary re-raises DagsterError).
    rusing_ops_tests/ui/test_browser.py proves it in the real UI; a Dagster upgrade that changes it fails there."""
    from dagster._core.errors import DagsterUserCodeProcessError
    from dagster_shared.error import SerializableErrorInfo

    info = SerializableErrorInfo(message=text, stack=[], cls_name=REFUSAL_CLASS)
    return DagsterUserCodeProcessError(text, user_code_process_error_infos=[info])


def failure(exc: OpsError, **metadata) -> Exception:
    """The boundary translation (STYLE.md §5): the error's full text (what failed, what changed, next step) plus its
    data, so the UI shows the same paragraph the CLI prints. Raise it ``from None``: the paragraph says it all.

    A refused confirm is an operator's refusal (:func:`refusal`: the paragraph only, no retry, no alert)."""
    if isinstance(exc, ConfirmMismatch):
        return refusal(str(exc))
    # A RetryPolicy retries only errors marked transient (e.g. StripeUnavailable); any other error fails.
    return dg.Failure(description=str(exc), metadata=metadata_of({**exc.data, **metadata}),
                      allow_retries=bool(getattr(exc, "transient", False)))


def is_refusal(step_failure_data) -> bool:
    """Whether a step failure (``StepFailureData``) is an operator's refusal (for the alerting sensor)."""
    error = getattr(step_failure_data, "error", None)
    return error is not None and error.cls_name == REFUSAL_CLASS


def failure_text(step_failure_data) -> str:
    """A failed step's own text: a ``dg.Failure``'s description, else the innermost cause of Dagster's wrappers
    ("Error occurred while executing op ...", "Exceeded max_retries") -- the library's or Python's message."""
    if step_failure_data.user_failure_data is not None and step_failure_data.user_failure_data.description:
        return step_failure_data.user_failure_data.description.strip()
    error = step_failure_data.error
    if error is None:
        return "unknown error"
    while error.cause is not None and error.cls_name in _WRAPPERS:
        error = error.cause
    return error.message.strip()


# Dagster's errors around an op's own: a user-code error boundary's, a retry policy's last attempt.
_WRAPPERS = ("DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError", "RetryRequestedFromPolicy",
             "DagsterMaxRetriesExceededError", "RetryRequested")


def _load_time_url():
    """DATABASE_URL as the database resource resolves it (the documented default when unset), or None if malformed."""
    from .settings import database_url

    try:
        return database_url()
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
