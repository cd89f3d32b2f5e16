"""Stopping, starting and restarting the app through configured commands; no command = nothing done, said so."""

import sys

from rusing_ops.core.app import AppControl


def test_unconfigured_command_does_nothing_and_says_so():
    result = AppControl(None).run("stop")
    assert (result.ran, result.ok) == (False, True)
    assert result.describe() == "app stop: no command configured (RUSING_APP_STOP_COMMAND); did nothing."


def test_configured_commands_run_without_a_shell(tmp_path):
    log = tmp_path / "events"
    script = tmp_path / "pm2"
    script.write_text(f"#!{sys.executable}\nimport sys\nopen({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n")
    script.chmod(0o755)
    control = AppControl(None, stop_command=f"{script} stop all", restart_command=f"{script} restart all")
    assert control.run("stop").ok and control.run("restart").ok
    assert log.read_text() == "stop all\nrestart all\n"
    assert control.run("stop").describe().startswith(f"app stop: `{script} stop all` ok in ")


def test_failing_and_missing_commands_are_reported(tmp_path):
    failing = AppControl(None, start_command=f"{sys.executable} -c 'import sys; sys.exit(3)'").run("start")
    assert (failing.ran, failing.ok, failing.returncode) == (True, False, 3)
    assert "FAILED with exit code 3" in failing.describe()
    missing = AppControl(None, stop_command="/nonexistent/railway down").run("stop")
    assert (missing.returncode, missing.output) == (127, "command not found: /nonexistent/railway")
