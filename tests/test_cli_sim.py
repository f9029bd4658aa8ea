"""``trine sim serve``: the device it simulates (``--board`` gives the board's own), and a
served device answering INFO as the board would. Every wait is bounded."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from trine.cli import sim
from trine.cli.main import build_parser, main
from trine.contract.params import SIMULATED, SMALL
from trine.flow.boards import BOARDS, get_board

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"^listening on 127\.0\.0\.1:(\d+) ")
#: Seconds allowed for the first build of a board's device (Verilog and Icarus), and for the
#: server to exit after its client has left.
READY_TIMEOUT = 600
EXIT_TIMEOUT = 30


def _config(*argv: str):
    return sim.device_config(build_parser().parse_args(["sim", "serve", "--port", "0", *argv]))


def test_the_default_device_is_the_simulated_one():
    from trine.sim.serve import SIM_CLOCK_HZ, DeviceConfig

    assert sim.SIM_CLOCK_HZ == SIM_CLOCK_HZ  # the help text's figure
    assert _config() == DeviceConfig("uart", SIM_CLOCK_HZ, 3_000_000, SIMULATED)
    assert _config("--mode", "byte", "--lanes", "4", "--max-batch", "2", "--clock-mhz", "24") \
        == DeviceConfig("byte", 24_000_000, 3_000_000, SIMULATED.replace(lanes=4, max_batch=2))
    assert _config("--small", "--clock-hz", "6000000", "--baud", "1500000").params == \
        SIMULATED.replace(**SMALL.size())


@pytest.mark.parametrize("name", list(BOARDS))
def test_a_board_gives_the_device_its_build_makes(name):
    board = get_board(name)
    config = _config("--board", name)
    assert config.params == board.params
    assert (config.clock_hz, config.baud) == (board.default_clock_hz, board.default_baud)
    assert config.info() == board.params.device_info(board.default_clock_hz, board.default_baud)


def test_board_options_change_it_as_they_do_for_a_build():
    config = _config("--board", "ulx3s-85f", "--rows", "4", "--weight-words", "512",
                     "--clock-mhz", "36")
    assert config.params == get_board("ulx3s-85f").params.replace(rows=4, weight_words=512)
    assert config.clock_hz == 35_714_286  # the closest the ECP5 PLL makes, as a build takes


@pytest.mark.parametrize(("argv", "message"), [
    (["--board", "icebreaker", "--clock-mhz", "13"],
     "iCE40 PLL output frequency must be in [16, 275] MHz, not 13 MHz"),
    (["--board", "icebreaker", "--baud", "7000000"],
     "baud 7000000 is above what the icebreaker's FT2232H channel B handles reliably"),
    (["--lanes", "0"], "Lane count must be >= 1, not 0"),
    (["--board", "icebreaker", "--table-words", "9"],
     "Layer table depth must be in [10, 65536], not 9"),
    (["--clock-hz", "4000000"], "clock frequency 4e+06 Hz is too low for 3e+06 baud"),
])
def test_a_device_that_cannot_be_is_one_line_before_anything_starts(argv, message, capsys):
    assert main(["sim", "serve", "--sim", "icarus", "--port", "0", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"trine: error: {message}") and err.count("\n") == 1, err


def test_clock_options_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as e:
        main(["sim", "serve", "--port", "0", "--clock-mhz", "12", "--clock-hz", "12000000"])
    assert e.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


@contextlib.contextmanager
def _server(*argv: str):
    """``python -m trine.cli sim serve ARGV`` in its own process group: (port, process)."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "trine.cli", *argv], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=err, text=True,
                                start_new_session=True)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout],
                         daemon=True).start()
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            while True:
                try:
                    line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    err.seek(0)
                    raise AssertionError(
                        f"not listening after {READY_TIMEOUT} s:\n{err.read()}") from None
                if m := READY.match(line):
                    break
            yield int(m.group(1)), proc
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=EXIT_TIMEOUT)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def test_serve_board_answers_info_as_the_board():
    from trine.host.client import Client

    with _server("sim", "serve", "--sim", "icarus", "--board", "icebreaker", "--mode", "byte",
                 "--port", "0", "--once") as (port, proc):
        with Client(f"socket://127.0.0.1:{port}", timeout=30, retries=1) as client:
            info = client.info()
        board = get_board("icebreaker")
        assert info == board.params.device_info(board.default_clock_hz, board.default_baud)
        # --once: the server ends when its client has left
        assert proc.wait(timeout=EXIT_TIMEOUT) == 0
