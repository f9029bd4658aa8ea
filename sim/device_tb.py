"""cocotb test that serves the simulated device on a TCP socket (started by :mod:`trine.sim.serve`).

The configuration arrives as a :class:`trine.sim.bridge.BridgeConfig` in an environment variable.
The test passes when the bridge stops: after the first client with ``once``, or when the
process that started the simulator is gone.
"""

from __future__ import annotations

import os
import signal

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge

from trine.sim.bridge import BridgeConfig, SocketBridge

RESET_CYCLES = 4


@cocotb.test()
async def serve_device(dut):
    """Reset the device, then bridge TCP clients to it until told to stop."""
    cfg = BridgeConfig.from_env(os.environ)
    # Ctrl-C reaches the whole process group: Icarus would stop at an interactive prompt.
    # The serving process exits instead, and the bridge notices that its parent is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    bridge = SocketBridge(dut, cfg)  # sets the idle levels of the inputs
    # impl="gpi": the clock toggles in C. cocotb's default here is a Python coroutine, which
    # costs two Python wake-ups per cycle and halves the simulation speed.
    Clock(dut.clk, cfg.period_ps, unit="ps", impl="gpi").start()
    dut.rst.value = 1
    await ClockCycles(dut.clk, RESET_CYCLES)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    await bridge.run()
