"""How much of `rusing-ops health` is Dagster: the CLI (job in process on a SQLite instance) against the same
checks called straight from the library, each as a fresh process, alternated A B A B.

    .venv/bin/python bench/cli_overhead.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIBRARY_ONLY = """
from rusing_ops.core.app import AppControl
from rusing_ops.core import database as d
from rusing_ops.core.dburl import parse_database_url
from rusing_ops.health import checks
url = parse_database_url(None)
groups = [checks.check_app(AppControl(None)), checks.check_database(lambda: d.ping(d.create_engine(url), url)),
          checks.check_stripe(None, "not configured", None)]
raise SystemExit(1 if any(g.failed for g in groups) else 0)
"""


def timed(cmd, env) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", "mysql://root@127.0.0.1:3306/test"))
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="bench-dagster-home-")
    env = {**os.environ, "DATABASE_URL": args.database_url, "DAGSTER_HOME": home}
    cli = [str(Path(sys.executable).parent / "rusing-ops"), "health"]
    lib = [sys.executable, "-c", LIBRARY_ONLY]
    timed(cli, env)  # first run creates the SQLite instance; not counted
    a, b = [], []
    for _ in range(args.runs):
        a.append(timed(cli, env))
        b.append(timed(lib, env))
    ca, cb = statistics.median(a), statistics.median(b)
    print(f"rusing-ops health (Dagster job, in process): median {ca:.2f}s over {args.runs} runs")
    print(f"library only (same checks, no Dagster):      median {cb:.2f}s")
    print(f"Dagster overhead: {ca - cb:.2f}s per health check (ratio {ca / cb:.2f}x)")


if __name__ == "__main__":
    main()
