"""rusing_ops: the RusingAcademy operations runbook as Dagster jobs."""

__version__ = "0.1.0"
