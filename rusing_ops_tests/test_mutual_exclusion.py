"""Jobs that write the application database never overlap: the run queue's tag limit keeps a second writer
QUEUED (runs launched like the UI does, dequeued by a real dagster-daemon), the pool blocks the step of an
in-process run on the same instance, and GET_LOCK stops anything that bypasses Dagster."""

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._cli.job import execute_launch_command
from dagster_shared.cli import WorkspaceOpts

from rusing_ops_tests.exclusive_location import defs as exclusive_defs

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def writes(db_conn):
    with db_conn.cursor() as cur:
        cur.execute("SELECT label, phase FROM writes ORDER BY id")
        return [f"{l}:{p}" for l, p in cur.fetchall()]


@pytest.fixture
def writes_table(db_conn):
    with db_conn.cursor() as cur:
        cur.execute("CREATE TABLE writes (id INT AUTO_INCREMENT PRIMARY KEY, label VARCHAR(16), phase VARCHAR(8), "
                    "at DATETIME(6) DEFAULT CURRENT_TIMESTAMP(6))")
    return db_conn


def wait_until(predicate, timeout=60, interval=0.2, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def test_pool_blocks_a_second_in_process_writer_on_the_same_instance(dagster_instance, writes_table, database_url_str,
                                                                     tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url_str)
    release_a = tmp_path / "release-a"
    results = {}
    exclusive_writer = exclusive_defs.resolve_job_def("exclusive_writer")

    def run(label, release):
        results[label] = exclusive_writer.execute_in_process(
            instance=dagster_instance,
            run_config={"ops": {"hold_write": {"config": {"label": label, "release_file": str(release)}}}})

    a = threading.Thread(target=run, args=("a", release_a))
    a.start()
    wait_until(lambda: writes(writes_table) == ["a:start"] or not a.is_alive(), what="writer a to start")
    assert a.is_alive(), results
    b = threading.Thread(target=run, args=("b", ""))
    b.start()

    def b_blocked() -> bool:  # b's step was claimed against the pool and told to wait (its own event log says so)
        return any("blocked by limit for pool" in (e.message or "") for r in dagster_instance.get_runs()
                   if r.run_config["ops"]["hold_write"]["config"]["label"] == "b"
                   for e in dagster_instance.all_logs(r.run_id))

    wait_until(lambda: b_blocked() or not b.is_alive(), what="writer b's step to be blocked by the pool")
    assert writes(writes_table) == ["a:start"]  # ... and it wrote nothing meanwhile
    release_a.touch()
    a.join(60)
    b.join(60)
    assert results["a"].success and results["b"].success
    assert writes(writes_table) == ["a:start", "a:end", "b:start", "b:end"]
    blocked = [e for e in dagster_instance.all_logs(results["b"].run_id) if "blocked by limit for pool" in (e.message or "")]
    assert blocked, "the second run's step should have logged that the app_db_write pool blocked it"


@pytest.mark.slow
def test_queue_keeps_a_second_writer_queued_until_the_first_ends(writes_table, database_url_str, tmp_path,
                                                                monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    # The project's own instance config, but for the coordinator's pause between dequeue passes (2 s there; an
    # integer), as the test waits for three passes: the queue and its tag limit are the project's.
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    config["run_coordinator"]["config"]["dequeue_interval_seconds"] = 1
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text("load_from:\n  - python_module:\n      module_name: rusing_ops_tests.exclusive_location\n"
                         "      location_name: exclusive\n")
    env = {"DAGSTER_HOME": str(home), "DATABASE_URL": database_url_str, "PYTHONPATH": str(ROOT)}
    for name, value in env.items():  # for the daemon and for the code server each launch starts
        monkeypatch.setenv(name, value)
    # Create the SQLite storage before two processes (daemon, launcher) race to create it.
    instance = dg.DagsterInstance.from_config(str(home))
    daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], cwd=tmp_path,
                              stdout=open(tmp_path / "daemon.log", "wb"),  # noqa: SIM115 - the daemon keeps it
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        release = {label: tmp_path / f"release-{label}" for label in ("a", "b")}

        def launch(label):  # what `dagster job launch -w workspace.yaml -j exclusive_writer` does, in this process
            config = f'{{"ops": {{"hold_write": {{"config": {{"label": "{label}", "release_file": "{release[label]}"}}}}}}}}'
            execute_launch_command(instance=instance, workspace_opts=WorkspaceOpts(workspace=[str(workspace)]),
                                   config_json=config, job_name="exclusive_writer")

        launch("a")
        launch("b")
        runs = instance.get_runs()
        assert len(runs) == 2 and all(r.tags.get("rusing/db-write") == "app-db" for r in runs)
        wait_until(lambda: writes(writes_table) == ["a:start"], timeout=90, what="run a to start writing")

        def dequeue_passes() -> int:  # the daemon logs this line on every pass that finds a queued run (b)
            return (tmp_path / "daemon.log").read_text(errors="replace").count(
                "checking tag concurrency limits for queued runs")

        seen = dequeue_passes()  # three more passes: each must leave b queued while a holds the tag
        wait_until(lambda: dequeue_passes() >= seen + 3, timeout=60, what="three dequeue passes of the daemon")
        statuses = {r.run_config["ops"]["hold_write"]["config"]["label"]: instance.get_run_by_id(r.run_id).status
                    for r in instance.get_runs()}
        assert statuses["b"] == dg.DagsterRunStatus.QUEUED, statuses
        assert writes(writes_table) == ["a:start"]
        release["a"].touch()
        release["b"].touch()
        wait_until(lambda: all(instance.get_run_by_id(r.run_id).status == dg.DagsterRunStatus.SUCCESS
                               for r in instance.get_runs()), timeout=90, what="both runs to succeed")
        assert writes(writes_table) == ["a:start", "a:end", "b:start", "b:end"]
    finally:
        os.killpg(daemon.pid, 15)
        try:
            daemon.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, 9)


# ----------------------------------------------------------------- the CLI's claim of the write slot (in process)


def _holder_run(instance, process_tag: str | None, status=dg.DagsterRunStatus.STARTED) -> str:
    """A run record like a CLI run leaves, holding the app_db_write slot."""
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster._core.utils import make_new_run_id

    from rusing_ops.cli_support import PROCESS_TAG, claim_write_slot

    run = DagsterRun(job_name="migrate_database", run_id=make_new_run_id(), status=status,
                     tags={PROCESS_TAG: process_tag} if process_tag else {})
    assert claim_write_slot(instance, run.run_id, "apply_migrations", wait_s=0, say=lambda _l: None)
    instance.add_run(run)  # as the CLI does: claim, then the run starts
    return run.run_id


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_dead_holder_is_marked_failed_and_its_slot_freed(dagster_instance):
    from dagster._core.utils import make_new_run_id

    from rusing_ops.cli_support import claim_write_slot

    storage = dagster_instance.event_log_storage
    for status, tag, why in [(dg.DagsterRunStatus.STARTED, f"{socket.gethostname()}:{_dead_pid()}:",
                              "its process is gone (killed or crashed)"),
                             (dg.DagsterRunStatus.SUCCESS, None, "the run already ended (SUCCESS)")]:
        holder = _holder_run(dagster_instance, tag, status)
        said, mine = [], make_new_run_id()
        assert claim_write_slot(dagster_instance, mine, "apply_migrations", wait_s=30, say=said.append, poll_s=0.05)
        assert len(said) == 1 and said[0].startswith(f"freed the app_db_write slot of run {holder} (migrate_database, ")
        assert said[0].endswith(f": {why}" + ("; marked the run failed" if status == dg.DagsterRunStatus.STARTED else ""))
        assert [s.run_id for s in storage.get_concurrency_info("app_db_write").claimed_slots] == [mine]
        expected = dg.DagsterRunStatus.FAILURE if status == dg.DagsterRunStatus.STARTED else status
        assert dagster_instance.get_run_by_id(holder).status == expected
        storage.free_concurrency_slots_for_run(mine)


def test_a_live_holder_is_waited_for_named_and_given_up_on(dagster_instance):
    from dagster._core.utils import make_new_run_id

    from rusing_ops.cli_support import CommandFailed, claim_write_slot

    alive = _holder_run(dagster_instance, f"{socket.gethostname()}:{os.getpid()}:")
    elsewhere = make_new_run_id()
    said = []
    with pytest.raises(CommandFailed):
        claim_write_slot(dagster_instance, elsewhere, "apply_migrations", wait_s=0.3, say=said.append, poll_s=0.05)
    assert said and said[0].startswith(f"waiting for the database write slot (app_db_write): held by run {alive} "
                                       f"(migrate_database, STARTED, pid {os.getpid()} on {socket.gethostname()}")
    info = dagster_instance.event_log_storage.get_concurrency_info("app_db_write")
    assert [s.run_id for s in info.claimed_slots] == [alive]
    assert [p.run_id for p in info.pending_steps] == [alive]  # the waiter that gave up withdrew its claim
    assert dagster_instance.get_run_by_id(alive).status == dg.DagsterRunStatus.STARTED  # a live run is left alone


def test_a_claim_whose_run_never_started_is_freed_after_a_while(dagster_instance, monkeypatch):
    from dagster._core.utils import make_new_run_id

    from rusing_ops import cli_support

    orphan = make_new_run_id()  # killed between its claim and the creation of its run
    assert cli_support.claim_write_slot(dagster_instance, orphan, "apply_migrations", wait_s=0, say=lambda _l: None)
    with pytest.raises(cli_support.CommandFailed):  # young: it may be a run that is just starting
        cli_support.claim_write_slot(dagster_instance, make_new_run_id(), "apply_migrations", wait_s=0.2,
                                     say=lambda _l: None, poll_s=0.05)
    monkeypatch.setattr(cli_support, "ORPHAN_AFTER_S", -1)
    said = []
    assert cli_support.claim_write_slot(dagster_instance, make_new_run_id(), "apply_migrations", wait_s=5,
                                        say=said.append, poll_s=0.05)
    assert any(f"no run {orphan} exists" in line for line in said)


def test_the_sensor_fails_a_dead_cli_run_that_holds_no_slot(dagster_instance):
    """A CLI run killed outside its pooled step holds no slot but counts against the queue's db-write tag limit
    forever; the daemon's sensor marks it failed (and alert_on_run_failure reports it)."""
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster._core.utils import make_new_run_id

    from rusing_ops.alerting.defs import free_slots_of_dead_cli_runs
    from rusing_ops.cli_support import PROCESS_TAG

    here = socket.gethostname()
    dead, alive, elsewhere = (DagsterRun(job_name="restore_database", run_id=make_new_run_id(),
                                         status=dg.DagsterRunStatus.STARTED, tags={PROCESS_TAG: tag})
                              for tag in (f"{here}:{_dead_pid()}:", f"{here}:{os.getpid()}:", f"other-host:{os.getpid()}:"))
    for run in (dead, alive, elsewhere):
        dagster_instance.add_run(run)
    result = free_slots_of_dead_cli_runs(dg.build_sensor_context(instance=dagster_instance))
    assert f"run {dead.run_id} (restore_database, STARTED, pid " in result.skip_message
    assert [dagster_instance.get_run_by_id(r.run_id).status for r in (dead, alive, elsewhere)] == [
        dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTED]
    again = free_slots_of_dead_cli_runs(dg.build_sensor_context(instance=dagster_instance))
    assert again.skip_message == "no CLI run died unfinished"


def test_a_zombie_or_a_reused_pid_is_not_taken_for_the_run():
    from rusing_ops.cli_support import _start_ticks, process_alive, process_tags

    here = socket.gethostname()
    assert process_alive(process_tags()["rusing/process"]) is True
    assert process_alive(f"{here}:{os.getpid()}:{int(_start_ticks(os.getpid())) + 1}") is False  # same pid, other process
    assert process_alive(f"{here}:{_dead_pid()}:") is False
    assert process_alive(f"another-host:{os.getpid()}:") is None  # cannot tell from here
    zombie = subprocess.Popen(["true"])
    try:
        wait_until(lambda: Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z",
                   what="the child to exit unreaped")
        assert process_alive(f"{here}:{zombie.pid}:") is False
    finally:
        zombie.wait()
