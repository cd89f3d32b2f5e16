"""A test-only pause hook: the fault tests kill a real process at a named point of a restore or a migration.

Production code calls :func:`pause_point` at the instants where a crash matters (before the swap's ``RENAME``,
between statements). It does nothing unless ``RUSING_OPS_TEST_PAUSE_AT`` names that point; then it writes the
process id to ``RUSING_OPS_TEST_PAUSE_FILE`` and sleeps until the test kills the process.
"""

from __future__ import annotations

import os
import time

PAUSE_AT = "RUSING_OPS_TEST_PAUSE_AT"
PAUSE_FILE = "RUSING_OPS_TEST_PAUSE_FILE"


def pause_point(name: str) -> None:
    if os.environ.get(PAUSE_AT) != name:
        return
    marker = os.environ.get(PAUSE_FILE)
    if marker:
        tmp = marker + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(os.getpid()))
        os.replace(tmp, marker)
    while True:  # until SIGKILL; a test that forgets to kill us is the test's bug
        time.sleep(60)
