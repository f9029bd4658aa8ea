"""Testbench parts for Amaranth's simulator: a source, a sink and a monitor of valid/ready streams.

The cocotb counterparts are in :mod:`trine.sim.bfm`; both follow the rules of
``amaranth.lib.stream``: a source raises ``valid`` with a payload and holds both until the
sink takes the beat (``valid`` and ``ready`` high at a clock edge); a sink decides ``ready``
without looking at ``valid``. The knobs are the same everywhere: ``idle``, the probability that
a source leaves ``valid`` low for a cycle before a beat, and ``backpressure``, the probability
that a sink holds ``ready`` low in a cycle.

::

    source = StreamSource(dut.i_stream, rng=rng, idle=0.3)
    sink = StreamSink(dut.o_stream, rng=rng, backpressure=0.3)
    monitor = StreamMonitor(dut.o_stream)

    async def feed(ctx):
        await source.send(ctx, payloads)

    async def drain(ctx):
        await sink.take(ctx, len(payloads))

    simulate(dut, feed, drain, background=[monitor.watch])
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from amaranth.sim import Simulator

__all__ = ["StreamProtocolError", "StreamSource", "StreamSink", "StreamMonitor", "simulate",
           "CLOCK_PERIOD"]

#: The clock period every Amaranth testbench of the project uses, in seconds.
CLOCK_PERIOD = 1e-8


class StreamProtocolError(AssertionError):
    """A stream broke the rules: ``valid`` dropped, or the payload changed, while a beat waited."""


def _random(rng) -> random.Random:
    if rng is None:
        return random.Random(0)
    if isinstance(rng, random.Random):
        return rng
    # a numpy Generator: draw the seed from it, so the stream is reproducible from it
    return random.Random(int(rng.integers(2**63)))


class StreamSource:
    """Sends payloads into a stream input, with random idle cycles between beats.

    Parameters
    ----------
    stream : an ``amaranth.lib.stream`` interface the testbench drives (``valid``,
        ``payload``) and whose ``ready`` it reads
    rng : random.Random, numpy Generator or None (a fixed seed)
    idle : float
        Probability, before each beat, of one more cycle with ``valid`` low (geometric gaps).

    Members
    -------
    sent, idle_cycles : int
    """

    def __init__(self, stream, *, rng=None, idle: float = 0.0):
        self.stream, self.rng, self.idle = stream, _random(rng), idle
        self.sent = 0
        self.idle_cycles = 0

    async def send(self, ctx, payloads: Iterable[Any]) -> None:
        """Send every payload (anything ``ctx.set`` accepts for the payload); return once the
        last one has been taken, with ``valid`` low again."""
        s = self.stream
        for payload in payloads:
            while self.rng.random() < self.idle:
                ctx.set(s.valid, 0)
                await ctx.tick()
                self.idle_cycles += 1
            ctx.set(s.payload, payload)
            ctx.set(s.valid, 1)
            await ctx.tick().until(s.ready)
            self.sent += 1
        ctx.set(s.valid, 0)


class StreamSink:
    """Takes beats from a stream output, with random backpressure.

    Parameters
    ----------
    stream : an ``amaranth.lib.stream`` interface whose ``ready`` the testbench drives
    rng : random.Random, numpy Generator or None (a fixed seed)
    backpressure : float
        Probability that ``ready`` is low in a cycle (chosen without looking at ``valid``).
    convert : callable, optional
        Applied to each payload taken (as ``ctx.get`` returns it), e.g. ``int``.

    Members
    -------
    received : list
        The payloads taken, converted.
    stall_cycles : int
        Cycles in which a beat waited because ``ready`` was low.
    """

    def __init__(self, stream, *, rng=None, backpressure: float = 0.0,
                 convert: Callable[[Any], Any] | None = None):
        self.stream, self.rng, self.backpressure = stream, _random(rng), backpressure
        self.convert = convert or (lambda v: v)
        self.received: list[Any] = []
        self.stall_cycles = 0

    async def take(self, ctx, count: int, *, timeout: int | None = None) -> list[Any]:
        """Take beats until ``count`` have arrived in all; ``ready`` is left low.

        Raises
        ------
        AssertionError
            If ``timeout`` cycles pass first.
        """
        s = self.stream
        cycles = 0
        while len(self.received) < count:
            if timeout is not None and cycles >= timeout:
                raise AssertionError(f"only {len(self.received)} of {count} beats arrived "
                                     f"within {timeout} cycles")
            ready = self.rng.random() >= self.backpressure
            ctx.set(s.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(s.valid, s.payload)
            cycles += 1
            if valid and ready:
                self.received.append(self.convert(payload))
            elif valid:
                self.stall_cycles += 1
        ctx.set(s.ready, 0)
        return self.received


class StreamMonitor:
    """Watches a stream without driving it: records every beat taken and checks the rules.

    Run :meth:`watch` as a background testbench. A beat whose ``valid`` drops, or whose
    payload changes, before it is taken raises :class:`StreamProtocolError`.

    Members
    -------
    beats : list
        Payloads of the beats taken, converted.
    waits : int
        Cycles in which a beat waited for ``ready``.
    """

    def __init__(self, stream, *, convert: Callable[[Any], Any] | None = None):
        self.stream = stream
        self.convert = convert or (lambda v: v)
        self.beats: list[Any] = []
        self.waits = 0

    async def watch(self, ctx) -> None:
        s = self.stream
        waiting = None
        async for _, _, valid, ready, payload in ctx.tick().sample(s.valid, s.ready, s.payload):
            value = self.convert(payload)
            if waiting is not None and (not valid or value != waiting):
                raise StreamProtocolError(
                    "valid dropped before the beat was taken" if not valid else
                    f"payload changed from {waiting!r} to {value!r} while waiting for ready")
            if valid and ready:
                self.beats.append(value)
                waiting = None
            elif valid:
                self.waits += 1
                waiting = value


def simulate(dut, *testbenches: Callable, background: Sequence[Callable] = (),
             vcd: str | None = None) -> None:
    """Run ``testbenches`` (async functions of ``ctx``) on ``dut`` with one clock until they
    all return; ``background`` ones (monitors) run alongside and do not keep it going."""
    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    for bench in testbenches:
        sim.add_testbench(bench)
    for bench in background:
        sim.add_testbench(bench, background=True)
    if vcd is None:
        sim.run()
    else:
        with sim.write_vcd(vcd):
            sim.run()
