"""trine.hw.fifo.ByteFIFO under Amaranth's simulator: order, no loss, backpressure exactly at
full, the stream rules on its output, its parameters."""

import random

import pytest

from trine.contract.errors import ParameterError
from trine.hw.fifo import ByteFIFO
from trine.sim.testbench import StreamMonitor, StreamSink, StreamSource, simulate


@pytest.mark.parametrize("depth, idle, backpressure, seed", [
    (2, 0.0, 0.0, 1),
    (8, 0.3, 0.6, 2),  # the sink slower than the source: full often
    (16, 0.7, 0.1, 3),  # the source slower: empty often
    (64, 0.0, 0.9, 4),
])
def test_fifo_passes_every_byte_in_order(depth, idle, backpressure, seed):
    rng = random.Random(seed)
    dut = ByteFIFO(depth)
    data = [rng.randrange(256) for _ in range(40 * depth)]
    source = StreamSource(dut.i_stream, rng=rng, idle=idle)
    sink = StreamSink(dut.o_stream, rng=rng, backpressure=backpressure)
    monitor = StreamMonitor(dut.o_stream)
    levels = []

    async def produce(ctx):
        await source.send(ctx, data)

    async def consume(ctx):
        await sink.take(ctx, len(data), timeout=200 * len(data))

    async def watch(ctx):
        async for _, _, level, ready in ctx.tick().sample(dut.level, dut.i_stream.ready):
            levels.append((level, ready))

    simulate(dut, produce, consume, background=[monitor.watch, watch])
    assert sink.received == data
    assert monitor.beats == data
    # ready is low exactly while the memory is full, and the level never passes the depth
    assert all(0 <= level <= depth and ready == (level < depth) for level, ready in levels)
    if backpressure >= 0.6:
        assert any(level == depth for level, _ in levels)


def test_fifo_holds_depth_plus_two_bytes_with_the_output_stalled():
    """With ``o_stream.ready`` low the FIFO takes ``depth`` bytes into memory and one into each
    of its two registers, then refuses; nothing is lost when the sink starts."""
    depth = 16
    dut = ByteFIFO(depth)
    data = list(range(100, 100 + depth + 2))
    taken = []

    async def bench(ctx):
        ctx.set(dut.o_stream.ready, 0)
        for byte in data:
            ctx.set(dut.i_stream.payload, byte)
            ctx.set(dut.i_stream.valid, 1)
            await ctx.tick().until(dut.i_stream.ready)
        ctx.set(dut.i_stream.payload, 0xEE)
        for _ in range(10):  # one more byte is refused for as long as nobody reads
            await ctx.tick()
            assert not ctx.get(dut.i_stream.ready)
        assert ctx.get(dut.level) == depth
        ctx.set(dut.i_stream.valid, 0)
        ctx.set(dut.o_stream.ready, 1)
        while len(taken) < len(data):
            _, _, valid, payload = await ctx.tick().sample(dut.o_stream.valid,
                                                          dut.o_stream.payload)
            if valid:
                taken.append(payload)
        await ctx.tick().repeat(3)
        assert not ctx.get(dut.o_stream.valid) and ctx.get(dut.level) == 0

    simulate(dut, bench)
    assert taken == data


@pytest.mark.parametrize("depth", [0, 1, 3, 1000, "16"])
def test_fifo_refuses_bad_depths(depth):
    with pytest.raises(ParameterError, match="FIFO depth"):
        ByteFIFO(depth)


def test_fifo_passes_a_byte_per_cycle():
    """Back to back in, always ready out: N bytes take N cycles plus the three of latency."""
    dut = ByteFIFO(8)
    data = list(range(200))
    taken, cycles = [], [0]

    async def bench(ctx):
        ctx.set(dut.o_stream.ready, 1)
        ctx.set(dut.i_stream.valid, 1)
        sent = 0
        while len(taken) < len(data):
            ctx.set(dut.i_stream.payload, data[min(sent, len(data) - 1)])
            ctx.set(dut.i_stream.valid, sent < len(data))
            _, _, ready, valid, payload = await ctx.tick().sample(
                dut.i_stream.ready, dut.o_stream.valid, dut.o_stream.payload)
            sent += bool(ready and sent < len(data))
            if valid:
                taken.append(payload)
            cycles[0] += 1

    simulate(dut, bench)
    assert taken == data
    assert cycles[0] <= len(data) + 4
