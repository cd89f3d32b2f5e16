"""The production topology as real processes, started from the repository's own files: a code server serving
rusing_ops over gRPC, dagster-daemon and dagster-webserver reading deploy/workspace-grpc.yaml, all three on one
Postgres-backed instance folder written by `rusing-ops instance init --postgres`. Each process is its own session
(killed as a group, even when the test fails) and dies with pytest (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import psycopg2.extras
import requests
from dagster._serdes import deserialize_value

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WORKSPACE = ROOT / "deploy" / "workspace-grpc.yaml"
LOCATION = "rusing_ops"


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: no orphan servers if pytest is killed


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25, logs: Stack | None = None):
    """``predicate()``'s first truthy value; on timeout an AssertionError naming what was awaited (and the logs)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = logs.tails() if logs else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")
        time.sleep(interval)


class Stack:
    """Code server, daemon and webserver for one instance folder; ``env`` is what every process sees."""

    def __init__(self, workdir: Path, env: dict, code_port: int, web_port: int):
        self.workdir, self.env, self.code_port, self.web_port = workdir, env, code_port, web_port
        self.procs: dict[str, subprocess.Popen] = {}
        self.url = f"http://127.0.0.1:{web_port}"

    # ------------------------------------------------------------------------------------------- processes
    def start(self, name: str) -> subprocess.Popen:
        commands = {
            "code-server": [str(BIN / "dagster"), "code-server", "start", "-h", "127.0.0.1", "-p", str(self.code_port),
                            "-m", "rusing_ops.definitions", "-a", "defs", "--location-name", LOCATION],
            "daemon": [str(BIN / "dagster-daemon"), "run", "-w", str(WORKSPACE)],
            "webserver": [str(BIN / "dagster-webserver"), "-w", str(WORKSPACE), "-h", "127.0.0.1",
                          "-p", str(self.web_port)],
        }
        with open(self.log_path(name), "ab") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(commands[name], env=self.env, cwd=self.workdir, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=_die_with_parent)  # noqa: PLW1509 - pytest starts no threads here
        self.procs[name] = proc
        return proc

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def log_text(self, name: str) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def tails(self) -> str:
        return "".join(f"\n--- {name}.log (last lines) ---\n" + "\n".join(self.log_text(name).splitlines()[-15:])
                       for name in ("code-server", "daemon", "webserver"))

    def stop(self, name: str, timeout: float = 15) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
        try:  # the group: children (the code server's gRPC process, run workers) may outlive the leader
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)

    def kill(self, name: str) -> None:
        """SIGKILL the process group of ``name`` at once (a crash: no shutdown of any kind)."""
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # the whole group is gone already
            pass
        proc.wait(10)

    def stop_all(self) -> None:
        """The end of a test: every process group killed at once. What a graceful stop would do is not under test
        here (`stop` is for that), and the code server waits up to 60 s for open RPCs on SIGTERM."""
        for name in list(self.procs):
            self.kill(name)

    def pids(self) -> set[int]:
        return {p.pid for p in self.procs.values()}

    # ----------------------------------------------------------------------------------------------- GraphQL
    def graphql(self, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
        resp = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}},
                             timeout=timeout)
        resp.raise_for_status()
        body = resp.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def location_loaded(self) -> bool:
        try:
            data = self.graphql("{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                                "locationOrLoadError { __typename } } } } }", timeout=5)
        except (requests.RequestException, AssertionError):
            return False
        entries = data["workspaceOrError"].get("locationEntries") or []
        return any(e["name"] == LOCATION and e["loadStatus"] == "LOADED"
                   and e["locationOrLoadError"]["__typename"] == "RepositoryLocation" for e in entries)

    def launch(self, job: str, run_config: dict | None = None) -> str:
        """Launch ``job`` as the UI's Launchpad does; return the run id (the run starts QUEUED)."""
        data = self.graphql(
            "mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename "
            "... on LaunchRunSuccess { run { runId status } } ... on PythonError { message } "
            "... on RunConfigValidationInvalid { errors { message } } ... on InvalidSubsetError { message } } }",
            {"p": {"selector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__",
                                "jobName": job}, "runConfigData": run_config or {}}})
        result = data["launchRun"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return result["run"]["runId"]

    def run_status(self, run_id: str) -> str:
        data = self.graphql("query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }",
                            {"id": run_id})
        return data["runOrError"]["status"]


class Postgres:
    """The instance's Postgres database, read directly: what Dagster recorded, not what its API says."""

    def __init__(self, dsn: str):
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True

    def rows(self, sql: str, *params) -> list[dict]:
        with self.conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(sql, params)
            return [dict(r) for r in cur.fetchall()]

    def runs(self) -> list[dict]:
        """Every run with its status, job, tags and start/end times (epoch seconds) from the ``runs`` table."""
        out = []
        for r in self.rows("SELECT run_id, status, pipeline_name, run_body, start_time, end_time FROM runs ORDER BY id"):
            run = deserialize_value(r["run_body"])
            out.append({"run_id": r["run_id"], "status": r["status"], "job": r["pipeline_name"], "tags": run.tags,
                        "start": r["start_time"], "end": r["end_time"], "run_config": run.run_config})
        return out

    def ticks(self, selector_id: str) -> list:
        """The instigator's ticks (``TickData``: status, timestamp, run_ids) from ``job_ticks``, oldest first."""
        return [deserialize_value(r["tick_body"]) for r in self.rows(
            "SELECT tick_body FROM job_ticks WHERE selector_id = %s ORDER BY id", selector_id)]

    def state(self, name: str):
        """The stored ``InstigatorState`` of the schedule or sensor ``name`` (``instigators`` table)."""
        states = [deserialize_value(r["instigator_body"]) for r in self.rows("SELECT instigator_body FROM instigators")]
        found = [s for s in states if s.instigator_name == name]
        assert len(found) == 1, (name, [s.instigator_name for s in states])
        return found[0]

    def run(self, run_id: str) -> dict:
        return next(r for r in self.runs() if r["run_id"] == run_id)

    def event_types(self, run_id: str) -> list[str]:
        return [r["dagster_event_type"] for r in self.rows(
            "SELECT dagster_event_type FROM event_logs WHERE run_id = %s AND dagster_event_type IS NOT NULL "
            "ORDER BY id", run_id)]

    def messages(self, run_id: str) -> list[str]:
        return [deserialize_value(r["event"]).message or "" for r in self.rows(
            "SELECT event FROM event_logs WHERE run_id = %s ORDER BY id", run_id)]

    def worker_pid(self, run_id: str) -> int | None:
        """The run worker's pid, from the "Executing steps in process (pid: N)" event the worker records itself."""
        for message in self.messages(run_id):
            found = re.match(r"(Executing steps in process|Started process for run) \(pid: (\d+)\)", message)
            if found:
                return int(found.group(2))
        return None

    def close(self) -> None:
        self.conn.close()


def ancestors(pid: int) -> list[int]:
    """``pid``'s parent chain from /proc (what `ps -o ppid` shows)."""
    chain = []
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        chain.append(pid)
    return chain
