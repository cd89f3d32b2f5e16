"""free_port() between test processes: two processes (two xdist workers, or two sessions) asking at once are never
handed the same port, and a port stays reserved while its process lives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TAKE = """
import sys
from rusing_ops_tests.conftest import free_port
ports = [free_port() for _ in range(int(sys.argv[1]))]
print(" ".join(map(str, ports)), flush=True)
sys.stdin.read()  # hold the reservations until the test lets go
"""


def test_two_processes_asking_at_once_never_get_the_same_port():
    procs = [subprocess.Popen([sys.executable, "-c", TAKE, "300"], cwd=ROOT, text=True, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE) for _ in range(2)]
    try:
        taken = [[int(p) for p in proc.stdout.readline().split()] for proc in procs]
        assert [len(t) for t in taken] == [300, 300]
        assert [len(set(t)) for t in taken] == [300, 300]  # nor one process twice
        assert not set(taken[0]) & set(taken[1])
        assert all(p < 32768 for t in taken for p in t)  # below the kernel's ephemeral range
        late = subprocess.run([sys.executable, "-c", TAKE, "300"], cwd=ROOT, text=True, input="",
                              capture_output=True, check=True)  # while both still hold theirs
        assert not {int(p) for p in late.stdout.split()} & (set(taken[0]) | set(taken[1]))
    finally:
        for proc in procs:
            proc.communicate("", timeout=30)
