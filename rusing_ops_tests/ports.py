"""Ports for the servers the tests start (and for "nothing listens here" addresses), safe between test processes.

Binding port 0 and closing the socket, then handing the number to a server, races: the kernel may give the same
port to another xdist worker or another test session before the server binds it. Here a port is picked below the
kernel's ephemeral range (32768-60999 by default: the kernel hands out nothing there on its own) and reserved with
a marker file created exclusively in a shared directory, naming this process; no other test process takes a port
whose marker names a live process. The markers go when this process exits.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import socket
import tempfile
from pathlib import Path

PORT_RANGE = (15000, 25000)  # below the ephemeral range; SeaweedFS's grpc (port + 10000) stays below it too
_MARKERS = Path(tempfile.gettempdir()) / "rusing-ops-test-ports"
_MINE: list[Path] = []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reserve(port: int) -> bool:
    marker = _MARKERS / str(port)
    for _ in range(2):
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = int(marker.read_text())
            except (OSError, ValueError):
                return False  # empty: its owner is writing its pid right now
            if _alive(holder):
                return False
            with contextlib.suppress(FileNotFoundError):
                marker.unlink()  # its process is gone: free again
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        _MINE.append(marker)
        return True
    return False


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nothing is bound to, reserved for this process until it exits."""
    _MARKERS.mkdir(exist_ok=True)
    rng = random.Random()
    for _ in range(5000):
        port = rng.randrange(*PORT_RANGE)
        if _reserve(port) and _bindable(port):  # not bindable: something else has it; stays reserved, unused
            return port
    raise RuntimeError(f"no free port in {PORT_RANGE[0]}-{PORT_RANGE[1]} after 5000 tries")


@atexit.register
def _release() -> None:
    for marker in _MINE:
        with contextlib.suppress(OSError):
            if marker.read_text() == str(os.getpid()):
                marker.unlink()
