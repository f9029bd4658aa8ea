"""A real board on its serial port passes the checks the simulated device passes (``-m board``).

Build and program the board, then point the tests at its serial port::

    .venv/bin/trine build --board icebreaker && .venv/bin/trine program --board icebreaker
    TRINE_PORT=/dev/ttyUSB1 TRINE_BOARD=icebreaker .venv/bin/python -m pytest -m board

``TRINE_PORT`` is the port (any pyserial URL: ``/dev/ttyUSB1``, ``socket://HOST:PORT``);
``TRINE_BOARD`` the board (a ``trine build --board`` name): INFO must then answer the device
``trine build --board B`` makes with its defaults, at the board's baud rate. ``TRINE_BUILD=DIR``
instead names the build folder that was programmed (its ``report.json`` says the device, clock
and baud). Without ``TRINE_PORT`` every test here is skipped, and says why.
"""

from __future__ import annotations

import os
import time

import pytest
import serial
from conftest import check_device

from trine.contract.protocol import ACK, DEFAULT_BAUD, FrameDecoder, Op, encode_frame

pytestmark = pytest.mark.board

ANSWER_TIMEOUT = 5.0  # seconds; a board answers INFO in well under a millisecond
PAUSE_S = 0.3  # far beyond the device's inter-byte timeout (64 byte times) at any baud rate


class BoardUnderTest:
    """The port, and what the board there must answer to INFO (``None``: not known)."""

    def __init__(self, env):
        self.port = env.get("TRINE_PORT", "")
        if not self.port:
            pytest.skip("no board: set TRINE_PORT to its serial port (e.g. /dev/ttyUSB1) and "
                        "TRINE_BOARD to its name (e.g. icebreaker) to run the board tests")
        self.info, self.baud = None, DEFAULT_BAUD
        if env.get("TRINE_BUILD"):
            from trine.sim.netlist import read_build

            config = read_build(env["TRINE_BUILD"]).config
            self.info, self.baud = config.info(), config.baud
        elif env.get("TRINE_BOARD"):
            from trine.flow.boards import get_board, plan_clock

            board = get_board(env["TRINE_BOARD"])
            plan = plan_clock(board, board.default_clock_hz, board.default_baud)
            self.info = board.params.device_info(plan.achieved_hz, plan.baud)
            self.baud = plan.baud


@pytest.fixture(scope="module")
def board() -> BoardUnderTest:
    return BoardUnderTest(os.environ)


def test_info_is_the_programmed_device(board):
    if board.info is None:
        pytest.skip("TRINE_BOARD (or TRINE_BUILD) is not set: nothing to compare INFO with")
    from trine.host.client import Client

    with Client(board.port, board.baud, timeout=ANSWER_TIMEOUT) as client:
        assert client.info() == board.info


def test_a_random_program_answers_as_the_reference(board):
    check_device(board.port, board.info, seed=3, baud=board.baud, timeout=ANSWER_TIMEOUT)


def test_a_partial_frame_is_dropped_after_a_pause(board):
    """Half a header, then the line quiet: the device's inter-byte timeout drops it, and the
    next request is answered (what the simulation bridge imitates with its quiet lines)."""
    port = serial.serial_for_url(board.port, baudrate=board.baud, timeout=ANSWER_TIMEOUT)
    try:
        port.reset_input_buffer()
        port.write(encode_frame(Op.INFO, 0x77)[:4])
        port.flush()
        time.sleep(PAUSE_S)
        port.write(encode_frame(Op.INFO, 0x21))
        decoder, frames = FrameDecoder(), []
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while not frames and time.monotonic() < deadline:
            frames = decoder.feed(port.read(1) + port.read(port.in_waiting))
        assert [(f.op, f.seq) for f in frames] == [(Op.INFO | ACK, 0x21)]
    finally:
        port.close()
