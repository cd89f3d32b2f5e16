"""The code location: every capability's Definitions, merged explicitly (nothing is silently dropped), plus the
resources and the one executor every job uses (in process: each job is one database procedure, run as one step)."""

import dagster as dg

from .alerting.defs import defs as alerting
from .backups.defs import defs as backups
from .health.defs import defs as health
from .migrations.defs import defs as migrations
from .resources import default_resources
from .runbooks.defs import defs as runbooks
from .webhooks.defs import defs as webhooks


def build_definitions() -> dg.Definitions:
    capabilities = [health, alerting, backups, migrations, webhooks, runbooks]
    return dg.Definitions.merge(*capabilities, dg.Definitions(resources=default_resources(),
                                                              executor=dg.in_process_executor))


defs = build_definitions()
