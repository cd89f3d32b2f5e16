"""Dagster face of the composed procedures (runbook §2 rollback, §6 recovery and payouts), merged explicitly."""

import dagster as dg

from .payouts_defs import defs as payouts_defs
from .recovery_defs import defs as recovery_defs
from .rollback_defs import defs as rollback_defs

defs = dg.Definitions.merge(rollback_defs, recovery_defs, payouts_defs)
