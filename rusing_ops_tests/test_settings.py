"""The configuration contract: every variable the code reads is declared once in settings.VARIABLES, README's table
is generated from that declaration, and relative defaults resolve against the working directory (not against
wherever the package is installed)."""

from __future__ import annotations

import re
from pathlib import Path

from rusing_ops import settings
from rusing_ops.settings import PROJECT_ROOT, VARIABLES

PACKAGE = PROJECT_ROOT / "rusing_ops"
# Read by name but not configuration of this tool: Dagster's Postgres storage (instance.POSTGRES_VARIABLES,
# documented in deploy/README.md), the CA bundle override of Python's ssl, the fault-injection hooks of the tests,
# and the secrets the alert scrubber looks for (their values are removed from alerts, never used).
NOT_SETTINGS = {"SSL_CERT_FILE", "RUSING_OPS_TEST_PAUSE_AT", "RUSING_OPS_TEST_PAUSE_FILE"}


def _names_read() -> dict[str, set[str]]:
    """Variable name -> the modules reading it through env(), from_env(), os.environ or os.getenv."""
    pattern = re.compile(r"""(?:\benv|from_env|os\.environ\.get|os\.getenv|os\.environ)\s*[(\[]\s*["']([A-Z][A-Z0-9_]+)["']""")
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for name in pattern.findall(path.read_text()):
            found.setdefault(name, set()).add(str(path.relative_to(PROJECT_ROOT)))
    return found


def test_every_variable_read_is_declared():
    read = _names_read()
    assert {"DATABASE_URL", "DRIZZLE_DIR", "RUSING_OPS_LOG_LEVEL"} <= set(read)  # the scan sees real reads
    undeclared = {name: sorted(where) for name, where in read.items() if name not in VARIABLES and name not in NOT_SETTINGS}
    assert undeclared == {}


def test_os_environ_is_read_only_where_it_must_be():
    """Configuration is read through settings.env / resources.from_env; only these modules touch os.environ."""
    allowed = {"rusing_ops/settings.py", "rusing_ops/resources.py", "rusing_ops/cli_support.py",
               "rusing_ops/instance.py", "rusing_ops/core/dburl.py", "rusing_ops/core/faults.py",
               "rusing_ops/alerting/notify.py", "rusing_ops/pitr/client.py"}
    readers = {str(p.relative_to(PROJECT_ROOT)) for p in PACKAGE.rglob("*.py") if "os.environ" in p.read_text()}
    assert readers - allowed == set()


def test_readme_table_is_generated_from_the_declaration():
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert settings.readme_table() in readme
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \| (.*) \| (.*) \|$", readme, re.MULTILINE)
    table = {name: (meaning, default) for name, meaning, default in rows if name in VARIABLES}
    assert list(table) == list(VARIABLES)
    for name, (meaning, default) in VARIABLES.items():
        assert table[name] == (meaning, f"`{default}`" if default is not None else "unset"), name


def test_relative_defaults_resolve_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("DRIZZLE_DIR", raising=False)
    assert settings.resolve_path(settings.env("DRIZZLE_DIR")) == tmp_path / settings.DEFAULT_DRIZZLE_DIR
    assert settings.dagster_home() == (tmp_path / ".dagster_home").resolve()
    assert settings.resolve_path("/abs/dir") == Path("/abs/dir")
    monkeypatch.setenv("DAGSTER_HOME", "relative_home")
    assert settings.dagster_home() == (tmp_path / "relative_home").resolve()

    from rusing_ops.resources import BackupStoreResource

    store = BackupStoreResource(url="./backups").get_store()
    assert store.url == (tmp_path / "backups").as_uri()
