"""`rusing-ops`: the runbook's commands. Each runs the same Dagster job as the UI, in process, on the configured
instance (so the run shows up in the UI). Argument parsing lives here; each capability registers its own verbs."""

from __future__ import annotations

import argparse
import importlib
import sys

# (group, module): each module has `register(subparsers)` adding its verbs to that group (None = top level).
COMMAND_MODULES = [
    (None, "rusing_ops.health.cli"),
    ("db", "rusing_ops.backups.cli"),
    ("db", "rusing_ops.migrations.cli"),
    ("db", "rusing_ops.runbooks.cli"),
    ("db", "rusing_ops.pitr.cli"),
    ("webhooks", "rusing_ops.webhooks.cli"),
    ("instance", "rusing_ops.instance_cli"),
]
# Verbs DESIGN.md §6 promises; any not registered by a module answers "not yet available".
PROMISED = {
    None: ["health"],
    "db": ["migrate", "generate", "validate", "backup", "backups", "restore", "verify", "prune", "rollback", "recover"],
    "webhooks": ["status", "reconcile", "retry"],
}
GROUP_HELP = {"db": "database: migrations, backups, restores, validation, rollback",
              "webhooks": "Stripe webhook events: status, reconciliation, manual retry",
              "instance": "the Dagster instance folder: SQLite or Postgres storage"}


def _not_yet(name: str):
    def run(args) -> int:
        print(f"`rusing-ops {name}` is not yet available in this version.", file=sys.stderr)
        return 2

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rusing-ops", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="show the Dagster run's log lines on the terminal")
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    top.required = True
    groups = {None: top}
    for group in GROUP_HELP:
        gp = top.add_parser(group, help=GROUP_HELP[group], description=GROUP_HELP[group])
        groups[group] = gp.add_subparsers(dest="verb", metavar="VERB")
        groups[group].required = True
    for group, module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(groups[group])
    for group, verbs in PROMISED.items():
        have = groups[group].choices
        for verb in verbs:
            if verb not in have:
                name = f"{group} {verb}" if group else verb
                groups[group].add_parser(verb, help="(not yet available)").set_defaults(func=_not_yet(name))
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
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
