"""`rusing-ops instance init [--postgres]`: the one way to choose SQLite or Postgres storage. The files it writes,
that the Postgres one carries exactly the SQLite one's queue/limits/monitoring, that no connection value (the
password above all) is ever written, and that the checked-in deploy/postgres/dagster.yaml is its output."""

import os

import pytest
import yaml

from rusing_ops.cli import main
from rusing_ops.core.errors import OpsError
from rusing_ops.instance import (
    BASE_CONFIG,
    POSTGRES_VARIABLES,
    init_instance,
    postgres_config_text,
)
from rusing_ops.settings import PROJECT_ROOT

SECRET = "pg-secret-Zq81!"
REGENERATE = "run `.venv/bin/rusing-ops instance init --postgres --home deploy/postgres --force`"


def without_storage(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "storage"}


def test_sqlite_is_a_link_to_the_repository_config(tmp_path, capsys):
    assert main(["instance", "init", "--home", str(tmp_path / "home")]) == 0
    config = tmp_path / "home" / "dagster.yaml"
    assert config.is_symlink() and config.resolve() == BASE_CONFIG.resolve()
    assert "storage" not in yaml.safe_load(config.read_text())  # no storage key: SQLite under DAGSTER_HOME
    assert "SQLite storage" in capsys.readouterr().out
    assert main(["instance", "init", "--home", str(tmp_path / "home")]) == 0  # idempotent


def test_postgres_has_the_same_limits_and_no_connection_value(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", SECRET)
    monkeypatch.setenv("DAGSTER_PG_HOST", "pg.internal.example")
    assert main(["instance", "init", "--postgres", "--home", str(tmp_path / "home")]) == 0
    out = capsys.readouterr().out
    path = tmp_path / "home" / "dagster.yaml"
    text = path.read_text()
    assert not path.is_symlink()
    assert SECRET not in text and "pg.internal.example" not in text and SECRET not in out
    config = yaml.safe_load(text)
    assert config["storage"]["postgres"]["postgres_db"] == {
        "hostname": {"env": "DAGSTER_PG_HOST"}, "port": {"env": "DAGSTER_PG_PORT"},
        "username": {"env": "DAGSTER_PG_USER"}, "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"}, "scheme": "postgresql+psycopg2"}
    assert without_storage(config) == yaml.safe_load(BASE_CONFIG.read_text())
    assert config["concurrency"]["runs"]["tag_concurrency_limits"] == [{"key": "rusing/db-write", "limit": 1}]
    assert "Not set in this shell: DAGSTER_PG_PORT, DAGSTER_PG_USER, DAGSTER_PG_DB" in out


def test_checked_in_postgres_config_is_the_generated_one():
    checked_in = PROJECT_ROOT / "deploy" / "postgres" / "dagster.yaml"
    assert yaml.safe_load(checked_in.read_text()) == yaml.safe_load(postgres_config_text()), \
        f"deploy/postgres/dagster.yaml no longer matches dagster.yaml's settings: {REGENERATE}"


def test_an_existing_different_config_is_left_alone_unless_forced(tmp_path, capsys):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: true\n")
    with pytest.raises(OpsError) as refused:
        init_instance(home, postgres=True)
    assert str(refused.value) == (
        f"{home}/dagster.yaml already exists with other settings. Nothing was changed. Next: compare it with "
        f"{BASE_CONFIG}, then run `rusing-ops instance init --postgres --home {home} --force` to replace it.")
    assert (home / "dagster.yaml").read_text() == "telemetry:\n  enabled: true\n"
    assert main(["instance", "init", "--home", str(home)]) == 1
    assert "already exists with other settings" in capsys.readouterr().err
    folder = init_instance(home, postgres=True, force=True)
    assert yaml.safe_load(folder.config.read_text())["storage"]["postgres"]
    assert init_instance(home, force=True).config.is_symlink()


def test_postgres_variables_are_documented_in_deploy_readme():
    readme = (PROJECT_ROOT / "deploy" / "README.md").read_text()
    missing = [name for name in POSTGRES_VARIABLES if name not in readme]
    assert not missing, missing
    assert os.path.basename(BASE_CONFIG) == "dagster.yaml"
