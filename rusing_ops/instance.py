"""The Dagster instance folder (``DAGSTER_HOME``): SQLite storage by default, Postgres for production.

A ``dagster.yaml`` cannot choose its storage backend from an environment variable, so the backend is chosen by
what this module writes into the instance folder:

- SQLite: ``DAGSTER_HOME/dagster.yaml`` is a symlink to the repository's ``dagster.yaml`` (queue, run/tag/pool
  limits, run monitoring, retention); runs, events and schedules live in SQLite files beside it.
- Postgres: ``DAGSTER_HOME/dagster.yaml`` is the same settings plus a ``storage: postgres:`` block whose every
  field, the password included, is read from a ``DAGSTER_PG_*`` environment variable when Dagster starts.
  No value is ever written to the file.

``deploy/postgres/dagster.yaml`` is this module's Postgres output, checked in for deployments that copy a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .core.errors import OpsError
from .settings import dagster_home, shipped_file

BASE_CONFIG = shipped_file("dagster.yaml")

# The Postgres storage's variables: name -> (meaning, example). The password has no example: it is a secret.
POSTGRES_VARIABLES: dict[str, tuple[str, str | None]] = {
    "DAGSTER_PG_HOST": ("Postgres host of the Dagster instance", "127.0.0.1"),
    "DAGSTER_PG_PORT": ("its port", "5432"),
    "DAGSTER_PG_USER": ("its user", "dagster"),
    "DAGSTER_PG_PASSWORD": ("its password (secret; may be empty with trust auth)", None),
    "DAGSTER_PG_DB": ("the database holding runs, events, schedules and sensors", "dagster"),
}

POSTGRES_HEADER = """\
# Production instance: Postgres run/event/schedule storage. Written by `rusing-ops instance init --postgres`
# (rusing_ops/instance.py) from the repository's dagster.yaml: the settings below the storage block are that
# file's, so both backends queue and limit runs the same way. Every connection value, the password included, is read from a
# DAGSTER_PG_* environment variable when Dagster starts; none is written here.
"""

POSTGRES_STORAGE = """\
storage:
  postgres:
    postgres_db:
      hostname: {env: DAGSTER_PG_HOST}
      port: {env: DAGSTER_PG_PORT}
      username: {env: DAGSTER_PG_USER}
      password: {env: DAGSTER_PG_PASSWORD}
      db_name: {env: DAGSTER_PG_DB}
      scheme: postgresql+psycopg2   # required with SQLAlchemy 2.1, which defaults to psycopg 3 (not installed)
"""


@dataclass(frozen=True)
class InstanceFolder:
    home: Path
    config: Path
    backend: str  # "sqlite" or "postgres"
    missing_variables: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        if self.backend == "sqlite":
            out = [f"Wrote {self.config} -> {BASE_CONFIG} (SQLite storage under {self.home})."]
        else:
            out = [(f"Wrote {self.config} (Postgres storage; connection values read from DAGSTER_PG_* at start, "
                    "the password never written to the file).")]
            if self.missing_variables:
                out.append("Not set in this shell: " + ", ".join(self.missing_variables) +
                           " (Dagster refuses to start without them; DAGSTER_PG_PASSWORD may be set empty).")
        out.append(f"Next: export DAGSTER_HOME={self.home}, then `dagster-daemon run -w workspace.yaml` and "
                   "`dagster-webserver -w workspace.yaml` (README \"Running it for real\").")
        return out


def _body_of(text: str) -> str:
    """``dagster.yaml`` without its leading comment block (the Postgres file has its own header)."""
    lines = text.splitlines(keepends=True)
    while lines and (lines[0].startswith("#") or not lines[0].strip()):
        lines.pop(0)
    return "".join(lines)


def postgres_config_text(base: Path = BASE_CONFIG) -> str:
    """The Postgres instance's ``dagster.yaml``: header, storage block, then ``base``'s settings unchanged."""
    return f"{POSTGRES_HEADER}{POSTGRES_STORAGE}\n{_body_of(base.read_text())}"


def default_home() -> Path:
    return dagster_home()


def init_instance(home: Path | str | None = None, *, postgres: bool = False, force: bool = False,
                  base: Path = BASE_CONFIG) -> InstanceFolder:
    """Write ``home/dagster.yaml`` for SQLite (a symlink to ``base``) or Postgres (generated from ``base``).

    :param home: the instance folder; default ``DAGSTER_HOME``, else ``.dagster_home`` in the working directory.
    :param postgres: Postgres storage (connection from ``DAGSTER_PG_*`` variables) instead of SQLite.
    :param force: replace an existing ``dagster.yaml`` that differs from what would be written.
    """
    home = Path(home).expanduser().resolve() if home else default_home()
    config = home / "dagster.yaml"
    backend = "postgres" if postgres else "sqlite"
    if home.exists() and not home.is_dir():
        raise OpsError(f"{home} exists and is not a folder.",
                       next_step="pass another folder with --home.")
    home.mkdir(parents=True, exist_ok=True)
    wanted = postgres_config_text(base) if postgres else None
    if config.exists() or config.is_symlink():
        same = (config.read_text() == wanted) if postgres else \
            (config.is_symlink() and config.resolve() == base.resolve())
        if not same and not force:
            raise OpsError(f"{config} already exists with other settings.",
                           next_step=f"compare it with {base}, then run `rusing-ops instance init"
                                     f"{' --postgres' if postgres else ''} --home {home} --force` to replace it.")
        if not same:
            config.unlink()
    if postgres:
        if not config.exists():
            tmp = config.with_name(".dagster.yaml.tmp")
            tmp.write_text(wanted)
            os.replace(tmp, config)
    elif not config.is_symlink():
        config.symlink_to(base.resolve())
    missing = tuple(n for n in POSTGRES_VARIABLES if postgres and n not in os.environ)
    return InstanceFolder(home, config, backend, missing)
