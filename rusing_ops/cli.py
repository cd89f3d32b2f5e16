"""`rusing-ops`: the runbook's commands. Each runs the same Dagster job as the UI, in process, on the configured
instance (so the run shows up in the UI). Argument parsing lives here; each capability registers its own verbs."""

from __future__ import annotations

import argparse
import sys

from . import instance_cli
from .backups import cli as backups_cli
from .health import cli as health_cli
from .migrations import cli as migrations_cli
from .pitr import cli as pitr_cli
from .runbooks import cli as runbooks_cli
from .webhooks import cli as webhooks_cli

# (group, module): each module has `register(subparsers)` adding its verbs to that group (None = top level).
COMMAND_MODULES = [(None, health_cli), ("db", backups_cli), ("db", migrations_cli), ("db", runbooks_cli),
                   ("db", pitr_cli), ("webhooks", webhooks_cli), ("instance", instance_cli)]
GROUP_HELP = {"db": "database: migrations, backups, restores, validation, rollback",
              "webhooks": "Stripe webhook events: status, reconciliation, manual retry",
              "instance": "the Dagster instance folder: SQLite or Postgres storage"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rusing-ops", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="show the Dagster run's log lines on the terminal")
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    top.required = True
    groups = {None: top}
    for group, help_text in GROUP_HELP.items():
        gp = top.add_parser(group, help=help_text, description=help_text)
        groups[group] = gp.add_subparsers(dest="verb", metavar="VERB")
        groups[group].required = True
    for group, module in COMMAND_MODULES:
        module.register(groups[group])
    return parser


def _quiet_dagster_warnings() -> None:
    """Beta/preview notices about Dagster's own APIs are for developers, not for an operator's terminal."""
    import warnings

    import dagster

    for category in (dagster.BetaWarning, dagster.PreviewWarning, dagster.SupersessionWarning):
        warnings.filterwarnings("ignore", category=category)


def main(argv: list[str] | None = None) -> int:
    _quiet_dagster_warnings()
    args = build_parser().parse_args(argv)
    if args.verbose:
        from . import cli_support

        cli_support.CONSOLE_LOG_LEVEL = "DEBUG"
    from .cli_support import CommandFailed
    from .core.errors import OpsError

    try:
        code = args.func(args)
    except CommandFailed as exc:  # the one way a command fails: one paragraph on stderr (and JSON with --json)
        return exc.print(as_json=getattr(args, "json", False))
    except OpsError as exc:  # a library refusal raised outside a Dagster run (reading the store, a bad setting)
        return CommandFailed(str(exc)).print(as_json=getattr(args, "json", False))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
