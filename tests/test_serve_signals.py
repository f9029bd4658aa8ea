"""``trine sim serve`` stopped by a signal leaves no simulator behind."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.test_cli_sim import EXIT_TIMEOUT, _server
from trine.cli.main import INTERRUPTED_STATUS

pytestmark = [pytest.mark.cocotb, pytest.mark.skipif(os.name != "posix", reason="POSIX signals")]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(c) for c in f.read().split()]
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_server_alone_stops_its_simulator(sig):
    with _server("sim", "serve", "--sim", "icarus", "--mode", "byte", "--port", "0") as (
            port, proc):
        assert _children(proc.pid), "the server runs its simulator as a child process"
        os.kill(proc.pid, sig)  # the server only, not its process group
        # stopped on request: the status of an interrupted command (Ctrl-C or SIGTERM alike)
        assert proc.wait(timeout=EXIT_TIMEOUT) == INTERRUPTED_STATUS
        deadline = time.monotonic() + EXIT_TIMEOUT
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _group_alive(proc.pid), "a simulator of the stopped server is still running"
