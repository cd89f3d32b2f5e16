"""`rusing-ops instance init [--postgres] [--home DIR]`: write the Dagster instance folder (rusing_ops/instance.py)."""

from __future__ import annotations

from dataclasses import asdict

from .cli_support import report
from .instance import init_instance


def init(args) -> int:
    folder = init_instance(args.home, postgres=args.postgres, force=args.force)  # an OpsError: main prints it
    return report(args, asdict(folder), folder.lines())


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "init", help="write DAGSTER_HOME/dagster.yaml: SQLite (default) or Postgres storage",
        description="Writes the instance folder's dagster.yaml. Default: a symlink to the repository's dagster.yaml "
        "(SQLite storage under the folder). --postgres: the same queue, limits and run monitoring plus Postgres "
        "storage whose host, port, user, password and database are read from DAGSTER_PG_HOST/PORT/USER/PASSWORD/DB "
        "when Dagster starts (never written to the file).")
    p.add_argument("--postgres", action="store_true", help="Postgres run/event/schedule storage (production)")
    p.add_argument("--home", help="the instance folder (default: $DAGSTER_HOME, else .dagster_home in the working directory)")
    p.add_argument("--force", action="store_true", help="replace an existing dagster.yaml with other settings")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=init)
