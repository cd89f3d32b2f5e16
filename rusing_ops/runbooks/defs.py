"""Dagster face of the composed procedures (runbook §2 rollback, §6 recovery), merged explicitly."""

import dagster as dg

from .recovery_defs import defs as recovery_defs
from .rollback_defs import defs as rollback_defs

defs = dg.Definitions.merge(rollback_defs, recovery_defs)
