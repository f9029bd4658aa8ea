"""Bus-functional models of a valid/ready stream (Amaranth ``lib.stream``), for cocotb.

Timing discipline, the same on every simulator: the testbench writes only on the falling
edge, then waits for ``ReadOnly`` of that same time step to read ``valid``/``ready``. Those
are the settled values the DUT sees at the next rising edge, so a transfer is known without
relying on how a simulator orders the rising-edge callbacks against its flip-flops.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly

__all__ = ["StreamProtocolError", "StreamDriver", "StreamMonitor"]


class StreamProtocolError(AssertionError):
    """The DUT broke the stream rules (``valid`` dropped or ``payload`` changed while waiting)."""


class StreamDriver:
    """Drives payloads (ints) into a DUT's stream input.

    Between beats ``valid`` stays low for a random number of cycles (each cycle with
    probability ``idle``). Once ``valid`` is high it stays high, with the same payload, until
    the DUT takes the beat; whether to raise ``valid`` is decided before ``ready`` is read.
    """

    def __init__(self, clk, valid, ready, payload, rng, idle: float = 0.0):
        self.clk, self.valid, self.ready, self.payload = clk, valid, ready, payload
        self.rng, self.idle = rng, idle
        self._queue: deque[int] = deque()
        self.sent = 0
        self.idle_cycles = 0
        self.wait_cycles = 0  # valid high, ready low
        self.valid.value = 0
        self._task = None

    def send(self, payloads: Iterable[int]) -> None:
        self._queue.extend(payloads)
        if self._task is None:
            self._task = cocotb.start_soon(self._run())

    async def _run(self) -> None:
        falling, read_only = FallingEdge(self.clk), ReadOnly()
        busy = False
        while True:
            await falling
            if not busy:
                if self._queue and self.rng.random() >= self.idle:
                    self.payload.value = self._queue.popleft()
                    self.valid.value = 1
                    busy = True
                else:
                    self.valid.value = 0
                    if self._queue:
                        self.idle_cycles += 1
            await read_only
            if busy:
                if self.ready.value:
                    busy = False
                    self.sent += 1
                else:
                    self.wait_cycles += 1


class StreamMonitor:
    """Takes payloads (ints) from a DUT's stream output and hands each to ``callback``.

    ``ready`` is held low in a cycle with probability ``backpressure``; it is chosen without
    looking at ``valid``. Checks that the DUT keeps ``valid`` and ``payload`` steady while a
    beat waits for ``ready``.
    """

    def __init__(
        self,
        clk,
        valid,
        ready,
        payload,
        rng,
        callback: Callable[[int], None],
        backpressure: float = 0.0,
    ):
        self.clk, self.valid, self.ready, self.payload = clk, valid, ready, payload
        self.rng, self.backpressure, self.callback = rng, backpressure, callback
        self.received = 0
        self.stall_cycles = 0  # valid high, ready low
        self.ready.value = 0

    def start(self) -> None:
        cocotb.start_soon(self._run())

    async def _run(self) -> None:
        falling, read_only = FallingEdge(self.clk), ReadOnly()
        waiting: int | None = None  # payload of a beat offered but not yet taken
        while True:
            await falling
            ready = self.rng.random() >= self.backpressure
            self.ready.value = int(ready)
            await read_only
            if not self.valid.value:
                if waiting is not None:
                    raise StreamProtocolError("valid dropped before the beat was taken")
                continue
            payload = self.payload.value.to_unsigned()
            if waiting is not None and payload != waiting:
                raise StreamProtocolError(
                    f"payload changed from {waiting:#x} to {payload:#x} while waiting for ready"
                )
            if ready:
                waiting = None
                self.received += 1
                self.callback(payload)
            else:
                waiting = payload
                self.stall_cycles += 1
