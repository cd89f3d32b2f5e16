"""The code location: every capability's Definitions, merged explicitly (nothing is silently dropped), plus the
resources and the one executor every job uses (in process: each job is one database procedure, run as one step).

The capabilities' modules are imported, not their ``defs``: Dagster refuses a module with more than one
module-scope ``Definitions``."""

import dagster as dg

from .alerting import defs as alerting
from .backups import defs as backups
from .backups import drill_defs as backup_protection
from .health import defs as health
from .migrations import defs as migrations
from .pitr import defs as pitr
from .resources import default_resources
from .runbooks import defs as runbooks
from .webhooks import defs as webhooks
from .webhooks import payouts_defs as payouts

CAPABILITIES = [health, alerting, backups, backup_protection, migrations, webhooks, payouts, runbooks, pitr]


def build_definitions() -> dg.Definitions:
    return dg.Definitions.merge(*(module.defs for module in CAPABILITIES),
                                dg.Definitions(resources=default_resources(), executor=dg.in_process_executor))


defs = build_definitions()
