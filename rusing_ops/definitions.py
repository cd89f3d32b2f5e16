"""The code location: every capability's Definitions, merged explicitly (nothing is silently dropped), plus resources."""

import dagster as dg

from .alerting.defs import defs as alerting_defs
from .backups.defs import defs as backups_defs
from .health.defs import defs as health_defs
from .migrations.defs import defs as migrations_defs
from .resources import default_resources
from .runbooks.defs import defs as runbooks_defs
from .webhooks.defs import defs as webhooks_defs

defs = dg.Definitions.merge(
    health_defs,
    alerting_defs,
    backups_defs,
    migrations_defs,
    webhooks_defs,
    runbooks_defs,
    dg.Definitions(resources=default_resources(), executor=dg.in_process_executor),
)
