"""The deployable recipe, validated as far as this machine can without Docker or Kubernetes: the Dockerfile's RUN
steps run as a shell script into a temporary virtualenv, and its CMD then serves the code location and passes its
own HEALTHCHECK; deploy/helm/values.yaml uses only keys of the official chart's schema, carries dagster.yaml's limits
and takes every variable of the configuration contract from a Kubernetes Secret."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import yaml

from rusing_ops.settings import PROJECT_ROOT, VARIABLES
from rusing_ops_tests.conftest import free_port

DOCKERFILE = PROJECT_ROOT / "Dockerfile"
VALUES = PROJECT_ROOT / "deploy" / "helm" / "values.yaml"
# Field names of the chart's values schema (dagster-io/dagster helm/dagster/schema: DagsterHelmValues and
# UserDeployment, chart 1.13): a key outside these is refused by `helm install` (values.schema.json).
CHART_TOP_LEVEL = {"dagsterWebserver", "dagster-user-deployments", "postgresql", "generatePostgresqlPasswordSecret",
                   "generateCeleryConfigSecret", "rabbitmq", "redis", "flower", "ingress", "imagePullSecrets",
                   "computeLogManager", "scheduler", "runLauncher", "pythonLogs", "dagsterDaemon", "busybox", "migrate",
                   "telemetry", "serviceAccount", "global", "retention", "concurrency", "additionalInstanceConfig"}
USER_DEPLOYMENT = {"name", "image", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns",
                   "deploymentNamespace", "port", "replicaCount", "env", "envConfigMaps", "envSecrets", "annotations",
                   "nodeSelector", "affinity", "tolerations", "podSecurityContext", "securityContext", "resources",
                   "livenessProbe", "readinessProbe", "startupProbe", "labels", "volumeMounts", "volumes",
                   "schedulerName", "initContainers", "sidecarContainers", "deploymentStrategy"}
POSTGRESQL = {"image", "enabled", "postgresqlHost", "postgresqlUsername", "postgresqlPassword", "postgresqlDatabase",
              "postgresqlParams", "postgresqlScheme", "service"}
SECRET_WORDS = ("(secret)", "token", "password", "key")
SET_BY_CHART = {"DAGSTER_HOME"}  # from the chart's `dagsterHome`, where it mounts the instance ConfigMap


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in path.read_text().splitlines():
        if line.strip().startswith("#") and not current:
            continue
        current += line.rstrip("\\").strip() + " " if line.rstrip().endswith("\\") else line.strip()
        if not line.rstrip().endswith("\\"):
            if current.strip():
                word, _, rest = current.strip().partition(" ")
                out.append((word.upper(), rest.strip()))
            current = ""
    return out


def exec_form(text: str) -> list[str]:
    return json.loads(text)


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


@pytest.fixture(scope="module")
def deployment(values) -> dict:
    deployments = values["dagster-user-deployments"]["deployments"]
    assert len(deployments) == 1
    return deployments[0]


def test_values_use_only_keys_of_the_chart_schema(values, deployment):
    assert set(values) <= CHART_TOP_LEVEL, set(values) - CHART_TOP_LEVEL
    assert set(deployment) <= USER_DEPLOYMENT, set(deployment) - USER_DEPLOYMENT
    assert set(values["postgresql"]) <= POSTGRESQL
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False and values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    assert "postgresqlPassword" not in values["postgresql"] and values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]


def test_every_contract_variable_comes_from_a_kubernetes_secret(deployment):
    env = {e["name"]: e for e in deployment["env"]}
    missing = sorted(set(VARIABLES) - set(env) - SET_BY_CHART)
    assert not SET_BY_CHART & set(env), "the chart sets these itself; a Secret key would override it"
    lines = "".join(f"        - name: {n}\n          valueFrom: {{secretKeyRef: {{name: rusing-ops-env, key: {n}, "
                    "optional: true}}\n" for n in missing)
    assert not missing, f"settings.VARIABLES missing from deploy/helm/values.yaml; add to the user deployment's env:\n{lines}"
    for name, entry in env.items():
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        assert ref and ref["key"] == name and ref["name"] == "rusing-ops-env" and "value" not in entry, entry
    secret_like = [n for n, (meaning, _) in VARIABLES.items() if any(w in meaning.lower() for w in SECRET_WORDS)]
    assert {"STRIPE_SECRET_KEY", "SLACK_BOT_TOKEN", "DATABASE_URL"} <= set(secret_like) | {"DATABASE_URL"}
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}, "run pods need the same variables"
    assert not env["DATABASE_URL"]["valueFrom"]["secretKeyRef"].get("optional")


def test_values_carry_the_instance_limits_of_dagster_yaml(values):
    instance = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    runs, pools = instance["concurrency"]["runs"], instance["concurrency"]["pools"]
    chart = values["concurrency"]
    assert chart["enabled"] is True
    assert chart["runs"]["maxConcurrentRuns"] == runs["max_concurrent_runs"]
    assert chart["runs"]["tagConcurrencyLimits"] == runs["tag_concurrency_limits"]
    assert chart["pools"] == {"defaultLimit": pools["default_limit"], "granularity": pools["granularity"]}
    monitoring, chart_monitoring = instance["run_monitoring"], values["dagsterDaemon"]["runMonitoring"]
    assert chart_monitoring["enabled"] is monitoring["enabled"] is True
    for ours, theirs in (("start_timeout_seconds", "startTimeoutSeconds"), ("cancel_timeout_seconds",
                         "cancelTimeoutSeconds"), ("free_slots_after_run_end_seconds", "freeSlotsAfterRunEndSeconds")):
        assert chart_monitoring[theirs] == monitoring[ours], ours
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queued == {"dequeueIntervalSeconds": instance["run_coordinator"]["config"]["dequeue_interval_seconds"]}
    assert values["retention"]["schedule"]["purgeAfterDays"] == instance["retention"]["schedule"]["purge_after_days"]
    assert values["retention"]["sensor"]["purgeAfterDays"] == instance["retention"]["sensor"]["purge_after_days"]
    assert values["telemetry"]["enabled"] is instance["telemetry"]["enabled"] is False
    # Everything else of dagster.yaml is passed through verbatim (the chart renders only the keys above).
    rendered = {"run_coordinator", "concurrency", "run_monitoring", "retention", "telemetry"}
    assert values["additionalInstanceConfig"] == {k: v for k, v in instance.items() if k not in rendered}
    assert values["dagsterDaemon"]["runRetries"] == {"enabled": False}, "run_retries would be rendered twice"


def test_dockerfile_shape(deployment):
    steps = instructions()
    kinds = [k for k, _ in steps]
    assert steps[0][0] == "FROM" and steps[0][1].startswith("python:3.11")
    assert kinds.index("USER") < kinds.index("CMD") and dict(steps)["USER"] not in ("root", "0")
    expose = int(dict(steps)["EXPOSE"])
    health = dict(steps)["HEALTHCHECK"]
    assert exec_form(health[health.index("CMD") + 3:].strip()) == ["dagster", "api", "grpc-health-check", "-p",
                                                                    str(expose)]
    cmd = exec_form(dict(steps)["CMD"])
    assert "ENTRYPOINT" not in kinds, "the Helm chart's args would be appended to an ENTRYPOINT"
    assert cmd[:3] == ["dagster", "code-server", "start"] and cmd[cmd.index("-p") + 1] == str(expose)
    # The chart starts the same server with the deployment's codeServerArgs (its own location name).
    assert cmd[cmd.index("-m"):cmd.index("--location-name")] == \
        deployment["codeServerArgs"][:deployment["codeServerArgs"].index("--location-name")]
    for kind, args in steps:
        if kind == "COPY" and not args.startswith("--from="):
            for source in args.split()[:-1]:
                assert (PROJECT_ROOT / source).exists(), source
    # Stages: base (ENV, WORKDIR), build on it with the compiler, the image on base with the built venv and tree.
    stages = [i for i, (kind, _) in enumerate(steps) if kind == "FROM"]
    assert [steps[i][1] for i in stages] == ["python:3.11-slim-bookworm AS base", "base AS build", "base"]
    build, image = steps[stages[1]:stages[2]], steps[stages[2]:]
    assert any("apt-get install" in args and " gcc" in args for kind, args in build if kind == "RUN")
    assert not any("apt-get" in args or "gcc" in args for kind, args in image)
    assert [args for kind, args in image if kind == "COPY"] == ["--from=build /opt/venv /opt/venv",
                                                                "--from=build /opt/rusing_ops /opt/rusing_ops"]
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored and ".dagster_home" in ignored


def _build_environment(tmp_path: Path, steps) -> tuple[dict, Path]:
    """The Dockerfile's ENV with its absolute paths moved under ``tmp_path``. pip installs only the project (it
    reaches the index for the build backend, setuptools, only); the pinned dependencies come from this test run's
    virtualenv (see _lend_dependencies), so the test neither downloads nor builds Dagster."""
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "python").symlink_to(Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}")
    # The image's venv has Dagster's console script; here Dagster is lent, so `dagster` runs it with the image venv.
    (shims / "dagster").write_text('#!/bin/sh\nexec "$VIRTUAL_ENV/bin/python" -m dagster "$@"\n')
    (shims / "dagster").chmod(0o755)
    moved = {"/opt/venv": str(tmp_path / "venv"), "/opt/dagster/dagster_home": str(tmp_path / "dagster_home"),
             "/opt/rusing_ops": str(tmp_path / "app")}
    env = {"PATH": f"{shims}:{os.environ['PATH']}", "HOME": str(tmp_path)}
    for kind, args in steps:
        if kind == "ENV":
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                for old, new in moved.items():
                    value = value.replace(old, new)
                env[name] = value.replace("$PATH", env["PATH"])
    env["PIP_NO_DEPS"] = "1"
    return env, Path(moved["/opt/rusing_ops"])


def _lend_dependencies(venv: Path) -> None:
    """Let ``venv`` import this test run's installed dependencies, after its own packages (a .pth line)."""
    for site in venv.glob("lib/python*/site-packages"):
        (site / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")


@pytest.mark.slow
def test_dockerfile_build_steps_and_cmd_run(tmp_path):
    steps = instructions()
    env, app = _build_environment(tmp_path, steps)
    app.mkdir()
    ran = []
    for kind, args in steps:
        if kind == "COPY" and args.startswith("--from=build"):
            continue  # the build stage's paths are the image's here: one directory tree serves both stages
        if kind == "COPY":
            *sources, dest = args.split()
            for source in sources:
                target = app / dest / (Path(source).name if dest.endswith("/") and Path(source).is_dir() else "")
                src = PROJECT_ROOT / source
                if src.is_dir():
                    shutil.copytree(src, app / dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(src, target if target.name else app / dest)
        elif kind == "RUN":
            if args.startswith("apt-get update"):  # changes this machine's packages; its compiler is here already
                assert "--no-install-recommends gcc libc6-dev" in args and shutil.which("gcc")
                continue
            if "useradd" in args:  # needs root and changes this machine's users; its effect is checked below
                assert "--uid 10001" in args and 'chown rusing "$DAGSTER_HOME"' in args
                Path(env["DAGSTER_HOME"]).mkdir(parents=True)
                continue
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", args], cwd=app, env=env, capture_output=True,
                                  text=True, timeout=300, check=False)
            assert done.returncode == 0, f"RUN {args}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            ran.append(args)
            _lend_dependencies(Path(env["VIRTUAL_ENV"]))
    assert len(ran) == 2
    venv = Path(env["VIRTUAL_ENV"])
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import rusing_ops.definitions as d; print(d.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert where.returncode == 0 and where.stdout.strip() == str(app / "rusing_ops" / "definitions.py"), where.stderr
    instance = yaml.safe_load((Path(env["DAGSTER_HOME"]) / "dagster.yaml").read_text())
    assert instance["storage"]["postgres"]["postgres_db"]["password"] == {"env": "DAGSTER_PG_PASSWORD"}

    # CMD on a free port, then the HEALTHCHECK command against it.
    port = free_port()
    cmd = exec_form(dict(steps)["CMD"])
    cmd[cmd.index("-h") + 1], cmd[cmd.index("-p") + 1] = "127.0.0.1", str(port)
    with open(tmp_path / "code-server.log", "wb") as log:
        server = subprocess.Popen(cmd, cwd=app, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        health = exec_form(dict(steps)["HEALTHCHECK"].split("CMD", 1)[1].strip())
        health[health.index("-p") + 1] = str(port)
        deadline = time.monotonic() + 90
        while True:
            check = subprocess.run(health, cwd=app, env=env, capture_output=True, text=True, timeout=60, check=False)
            if check.returncode == 0:
                break
            assert server.poll() is None, (tmp_path / "code-server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"HEALTHCHECK never passed: {check.stdout}{check.stderr}"
            time.sleep(1)
        # Healthy is not loaded: ask the server for its repositories, as the webserver and the daemon do.
        from dagster._grpc.client import DagsterGrpcClient
        from dagster._serdes import deserialize_value

        listed = deserialize_value(DagsterGrpcClient(port=port, host="127.0.0.1").list_repositories())
        assert [s.repository_name for s in listed.repository_symbols] == ["__repository__"], listed
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
