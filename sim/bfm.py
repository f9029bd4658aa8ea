"""cocotb parts for valid/ready streams (Amaranth ``lib.stream``): a source, a sink, a monitor.

The Amaranth-simulator counterparts are in :mod:`trine.sim.testbench`, with the same knobs:
``idle``, the probability that the source leaves ``valid`` low for a cycle before a beat, and
``backpressure``, the probability that the sink holds ``ready`` low in a cycle.

Timing discipline, the same on every simulator: a part writes only on the falling edge, then
waits for ``ReadOnly`` of that same time step to read ``valid``/``ready``. Those are the
settled values the DUT sees at the next rising edge, so a transfer is known without relying on
how a simulator orders the rising-edge callbacks against its flip-flops. Where nothing can
happen until a signal rises (a source waiting for ``ready``, an always-ready sink waiting for
``valid``), the part waits for that edge instead of waking every cycle: Python per cycle is
what bounds a cocotb simulation's speed.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable

import cocotb
from cocotb.triggers import Event, FallingEdge, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from trine.sim.testbench import StreamProtocolError

__all__ = ["StreamProtocolError", "StreamSource", "StreamSink", "StreamMonitor"]


def _random(rng) -> random.Random:
    if rng is None:
        return random.Random(0)
    if isinstance(rng, random.Random):
        return rng
    return random.Random(int(rng.integers(2**63)))  # a numpy Generator


class StreamSource:
    """Drives payloads (ints) into a DUT's stream input, from a queue.

    Between beats ``valid`` stays low for a random number of cycles (each with probability
    ``idle``). Once ``valid`` is high it stays high, with the same payload, until the DUT takes
    the beat; whether to raise ``valid`` is decided before ``ready`` is read.

    Parameters
    ----------
    clk, valid, ready, payload : the DUT's handles
    rng : random.Random, numpy Generator or None (a fixed seed)
    idle : float
    period_ps : int, optional
        The clock period; with it, a wait for ``ready`` sleeps until ``ready`` rises and
        :attr:`wait_cycles` is computed from the time that passed. Without it, the source
        checks ``ready`` every cycle.
    on_drained : callable, optional
        Called whenever the queue has run empty and the last beat has been taken.

    Members
    -------
    sent, idle_cycles, wait_cycles : int
        Beats taken; cycles left idle on purpose; cycles a beat waited for ``ready``.
    busy : bool
        A beat is offered or queued.
    """

    def __init__(self, clk, valid, ready, payload, rng=None, idle: float = 0.0, *,
                 period_ps: int | None = None, on_drained: Callable[[], None] | None = None):
        self.clk, self.valid, self.ready, self.payload = clk, valid, ready, payload
        self.rng, self.idle = _random(rng), idle
        self.period_ps = period_ps
        self.on_drained = on_drained
        self._queue: deque[int] = deque()
        self._wake = Event()
        self.sent = 0
        self.idle_cycles = 0
        self.wait_cycles = 0
        self.offering = False
        self.valid.value = 0
        self._task = None

    @property
    def busy(self) -> bool:
        return bool(self._queue) or self.offering

    def send(self, payloads: Iterable[int]) -> None:
        """Queue payloads; the source starts driving at the next falling edge."""
        self._queue.extend(payloads)
        self._wake.set()
        if self._task is None:
            self._task = cocotb.start_soon(self._run())

    def clear(self) -> None:
        """Forget the payloads not yet offered."""
        self._queue.clear()

    async def _run(self) -> None:
        falling, read_only = FallingEdge(self.clk), ReadOnly()
        await falling
        while True:
            if not self._queue:
                self.valid.value = 0
                self.offering = False
                if self.on_drained is not None:
                    self.on_drained()
                while not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                await falling  # writes happen on falling edges only
            if self.idle and self.rng.random() < self.idle:
                self.valid.value = 0
                self.idle_cycles += 1
                await falling
                continue
            self.payload.value = self._queue.popleft()
            self.valid.value = 1
            self.offering = True
            await read_only
            while not self.ready.value:
                if self.period_ps is None:
                    await falling
                    self.wait_cycles += 1
                else:
                    t0 = get_sim_time("ps")
                    await RisingEdge(self.ready)
                    await falling
                    self.wait_cycles += round((get_sim_time("ps") - t0) / self.period_ps)
                await read_only
            await falling  # taken at the rising edge just passed
            self.sent += 1


class StreamSink:
    """Takes payloads (ints) from a DUT's stream output and hands each to ``callback``.

    ``ready`` is held low in a cycle with probability ``backpressure``, chosen without looking
    at ``valid``. With backpressure, it checks that the DUT keeps ``valid`` and ``payload``
    steady while a beat waits; without, ``ready`` stays high and the sink sleeps until
    ``valid`` rises.

    Members
    -------
    received, stall_cycles : int
        Beats taken; cycles a beat waited because ``ready`` was low.
    """

    def __init__(self, clk, valid, ready, payload, rng=None,
                 callback: Callable[[int], None] = lambda payload: None,
                 backpressure: float = 0.0):
        self.clk, self.valid, self.ready, self.payload = clk, valid, ready, payload
        self.rng, self.backpressure, self.callback = _random(rng), backpressure, callback
        self.received = 0
        self.stall_cycles = 0
        self.ready.value = int(backpressure == 0)

    def start(self) -> None:
        cocotb.start_soon(self._run() if self.backpressure else self._run_always_ready())

    def _take(self, payload: int) -> None:
        self.received += 1
        self.callback(payload)

    async def _run_always_ready(self) -> None:
        falling, read_only = FallingEdge(self.clk), ReadOnly()
        await falling
        while True:
            await read_only
            if self.valid.value:
                payload = self.payload.value.to_unsigned()
                await falling  # taken at the rising edge just passed
                self._take(payload)
            else:
                await RisingEdge(self.valid)
                await falling

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
                self._take(payload)
            else:
                waiting = payload
                self.stall_cycles += 1


class StreamMonitor:
    """Watches a stream without driving anything: every beat taken goes to ``callback``.

    Checks the source's side of the rules (``valid`` held and ``payload`` steady until the
    beat is taken) every cycle.

    Members
    -------
    beats, waits : int
        Beats taken; cycles a beat waited for ``ready``.
    """

    def __init__(self, clk, valid, ready, payload,
                 callback: Callable[[int], None] = lambda payload: None):
        self.clk, self.valid, self.ready, self.payload = clk, valid, ready, payload
        self.callback = callback
        self.beats = 0
        self.waits = 0

    def start(self) -> None:
        cocotb.start_soon(self._run())

    async def _run(self) -> None:
        falling, read_only = FallingEdge(self.clk), ReadOnly()
        waiting: int | None = None
        while True:
            await falling
            await read_only
            valid = bool(self.valid.value)
            payload = self.payload.value.to_unsigned() if valid else None
            if waiting is not None and (not valid or payload != waiting):
                raise StreamProtocolError(
                    "valid dropped before the beat was taken" if not valid else
                    f"payload changed from {waiting:#x} to {payload:#x} while waiting for ready")
            if valid and self.ready.value:
                waiting = None
                self.beats += 1
                self.callback(payload)
            elif valid:
                waiting = payload
                self.waits += 1
