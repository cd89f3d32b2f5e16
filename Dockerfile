# The rusing_ops code-location image: the project installed in its own virtualenv, run as a non-root user, serving
# the rusing_ops code location over gRPC (`dagster code-server start`). The webserver and the daemon run Dagster's
# own images and reach this one by its port (deploy/workspace-grpc.yaml, or the Helm chart's user deployment);
# on Kubernetes each run is a pod of this same image (K8sRunLauncher). Build: `docker build -t rusing-ops:TAG .`
# Validated without Docker by rusing_ops_tests/topology/test_deploy.py (see deploy/README.md for what was not run).
# Stages: `base` (the environment), `build` on it with a C compiler (setup.py compiles the backups' hot loops,
# rusing_ops/backups/_speedups.c), and the image itself on `base` again: the built virtualenv and tree, no compiler.
FROM python:3.11-slim-bookworm AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    DAGSTER_HOME=/opt/dagster/dagster_home

WORKDIR /opt/rusing_ops

FROM base AS build

RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml setup.py README.md dagster.yaml workspace.yaml ./
COPY rusing_ops ./rusing_ops
COPY deploy ./deploy
COPY examples ./examples

# Editable install: relative defaults (DRIZZLE_DIR, ./backups, dagster.yaml) resolve inside /opt/rusing_ops, as in a
# checkout. The Dagster packages are pinned as one matched set in pyproject.toml. The C extension is optional to
# setup.py (a machine without a compiler runs the pure-Python code); here it must have been built: the import fails
# the build otherwise.
RUN python -m venv "$VIRTUAL_ENV" \
 && "$VIRTUAL_ENV/bin/pip" install --no-cache-dir -e . \
 && "$VIRTUAL_ENV/bin/python" -c "import rusing_ops.backups._speedups"

FROM base

# The same paths as in the build stage: the editable install's path entries and the venv's python stay valid.
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/rusing_ops /opt/rusing_ops

RUN useradd --system --uid 10001 --create-home --home-dir /home/rusing rusing \
 && mkdir -p "$DAGSTER_HOME" \
 && chown rusing "$DAGSTER_HOME"

USER rusing
# Postgres instance for `docker run` / compose (connection from DAGSTER_PG_* at start; no value in the file). The Helm
# chart mounts its own instance config over this folder.
RUN rusing-ops instance init --postgres --home "$DAGSTER_HOME"

EXPOSE 3030
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["dagster", "api", "grpc-health-check", "-p", "3030"]
# CMD, not ENTRYPOINT: the Helm chart starts the container with its own `args` (`dagster code-server start ...` for
# the code server, `dagster api execute_run ...` for run pods), which replace CMD but would be appended to an
# ENTRYPOINT.
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "3030", "-m", "rusing_ops.definitions", "-a", "defs", \
     "--location-name", "rusing_ops"]
