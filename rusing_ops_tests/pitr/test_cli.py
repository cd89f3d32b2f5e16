"""`rusing-ops db restore --skip / --to --dry-run`, `db binlogs status`, `db undo` as an operator types them."""

from __future__ import annotations

import json

from rusing_ops import cli

from .conftest import rows


def _cli(monkeypatch, tmp_path, history, *argv: str) -> int:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    for name, value in {"DAGSTER_HOME": str(home), "DATABASE_URL": history.server.url(history.url.database),
                        "RUSING_BACKUP_URL": str(history.store.root)}.items():
        monkeypatch.setenv(name, value)
    return cli.main(list(argv))


def test_skip_alone_restores_everything_but_that_transaction(history, tmp_path, monkeypatch, capsys,
                                                            fresh_definitions):
    db = history.url.database
    code = _cli(monkeypatch, tmp_path, history, "db", "restore", "--skip", history.delete_gtid, "--dry-run", "--json")
    plan = json.loads(capsys.readouterr().out)
    assert code == 0 and plan["dry_run"] and plan["skipped"][0].startswith(history.delete_gtid)
    assert rows(history.server, db) == history.final
    code = _cli(monkeypatch, tmp_path, history, "db", "restore", "--skip", history.delete_gtid, "--confirm", db)
    out = capsys.readouterr().out
    assert code == 0 and f"restored `{db}`" in out and f"skipped: {history.delete_gtid}" in out
    assert rows(history.server, db) == history.without_delete
    assert _cli(monkeypatch, tmp_path, history, "db", "binlogs", "status", "--json") == 0
    assert json.loads(capsys.readouterr().out)["gaps"] == []


def test_restore_without_confirm_or_with_a_lone_dry_run_is_refused(history, tmp_path, monkeypatch, capsys,
                                                                  fresh_definitions):
    assert _cli(monkeypatch, tmp_path, history, "db", "restore", "--dry-run") == 2
    assert "--dry-run goes with --to" in capsys.readouterr().err
    assert _cli(monkeypatch, tmp_path, history, "db", "restore") == 2
    assert "--confirm NAME" in capsys.readouterr().err
    assert rows(history.server, history.url.database) == history.final
