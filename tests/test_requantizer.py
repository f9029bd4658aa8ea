"""trine.hw.requantizer.Requantizer under Amaranth's simulator, against the contract's
requantiser: random blocks with idle gaps, its own backpressure, destinations, the running
maximum of fused pooling, and a flush."""

import numpy as np
import pytest
from amaranth.hdl import Module, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory

from trine.contract.device_image import BIAS_STORE_WIDTH
from trine.contract.params import AcceleratorParams
from trine.contract.reference import requantize_inplace, ternarize
from trine.hw.requantizer import Requantizer
from trine.sim.testbench import StreamMonitor, StreamSource, simulate

PARAMS = AcceleratorParams(lanes=3, rows=4, weight_words=8, bias_depth=24, act_words=20,
                           table_words=10, max_batch=2)
ACC_WIDTH = 12
#: Cycles from the cycle a row is taken to the cycle its byte is on ``o_write``.
LATENCY = 6


class Harness(wiring.Component):
    """The requantiser with a bias memory behind its read port."""

    def __init__(self, params, biases):
        self.rq = Requantizer(params, ACC_WIDTH)
        self.memory = Memory(shape=signed(BIAS_STORE_WIDTH), depth=params.bias_depth,
                             init=biases)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.rq, m.submodules.memory = self.rq, self.memory
        wiring.connect(m, self.rq.biases, self.memory.read_port())
        return m


def expected_byte(acc, bias, shift, relu, threshold=0):
    """The requantiser's output: the stored bias has the rounding constant folded in; with a
    threshold, the contract's trit of it."""
    v = np.array([int(acc) + int(bias)], np.int64)
    y = requantize_inplace(v, shift, relu).astype(np.int8)
    return int(ternarize(y, threshold)[0]) if threshold else int(y[0])


def random_case(rng, n_blocks, params=PARAMS, pooling=True, bias_bits=33):
    top = 1 << (ACC_WIDTH - 1)
    blocks = rng.integers(-top, top, (n_blocks, params.rows))
    blocks[0, :2] = [-top, top - 1]
    biases = [int(b) for b in rng.integers(-(1 << bias_bits), 1 << bias_bits,
                                           params.bias_depth)]
    biases[:3] = [-(1 << 33), (1 << 33) - 1, 0]
    # a pooling window starts at a block (all its rows) with probability 1/2
    firsts = rng.random(n_blocks) < 0.5 if pooling else np.ones(n_blocks, bool)
    firsts[0] = True
    dests = [dict(bias=int(rng.integers(params.bias_depth)),
                  word=int(rng.integers(params.act_words)),
                  lane=int(rng.integers(params.lanes)), first=int(firsts[k // params.rows]),
                  write=int(rng.random() < 0.8))
             for k in range(n_blocks * params.rows)]
    return blocks, biases, dests


def run(blocks, biases, dests, *, shift, relu, rng, idle, flush_after=None, late_blocks=(),
        threshold=0, params=PARAMS):
    """Feed ``blocks`` (and, when ``flush_after`` is given, flush that many cycles after the
    last is taken, then feed ``late_blocks``). Returns what was seen per cycle: the cycles of
    takes and flushes, the writes ``(cycle, word, lane, value)``, ``busy``, the monitor of the
    input stream and the source."""
    top = Harness(params, biases)
    dut = top.rq
    seen = {"takes": [], "flushes": [], "writes": [], "busy": []}
    source = StreamSource(dut.i_stream, rng=rng, idle=idle)
    monitor = StreamMonitor(dut.i_stream, convert=lambda v: [int(x) for x in v])
    total = len(blocks) + len(late_blocks)

    async def feed(ctx):
        ctx.set(dut.config, {"shift": shift, "relu": relu, "ternary_threshold": threshold})
        await source.send(ctx, [[int(a) for a in block] for block in blocks])
        if flush_after is not None:
            await ctx.tick().repeat(flush_after)
            ctx.set(dut.flush, 1)
            await ctx.tick()
            ctx.set(dut.flush, 0)
            await source.send(ctx, [[int(a) for a in block] for block in late_blocks])

    async def answer(ctx):
        """The destination port: the next destination until the row is taken."""
        k = 0
        while True:
            for name, value in dests[min(k, len(dests) - 1)].items():
                ctx.set(getattr(dut.dest, name), value)
            _, _, take = await ctx.tick().sample(dut.dest.take)
            k += take

    async def watch(ctx):
        cycle = 0
        async for _, _, take, flush, lanes, word, value, busy in ctx.tick().sample(
                dut.dest.take, dut.flush, dut.o_write.lanes, dut.o_write.word,
                dut.o_write.value, dut.busy):
            if take:
                seen["takes"].append(cycle)
            if flush:
                seen["flushes"].append(cycle)
            if lanes:
                assert lanes & (lanes - 1) == 0, "at most one byte enable"
                seen["writes"].append((cycle, word, lanes.bit_length() - 1, value))
            seen["busy"].append(busy)
            cycle += 1

    async def drain(ctx):
        busy = seen["busy"]
        while len(monitor.beats) < total or len(busy) < 3 or any(busy[-3:]):
            await ctx.tick()

    simulate(top, feed, drain, background=[answer, watch, monitor.watch])
    return seen, monitor, source


def expected_writes(takes, blocks, biases, dests, shift, relu, keep=lambda t: True,
                    threshold=0):
    """The writes of the rows taken at ``takes`` (row k of the blocks gets ``dests[k]``): the
    running maximum of the row since its window's first position (of its trits, with a
    threshold, as the reference pools a ternary layer's outputs)."""
    rows = [int(a) for block in blocks for a in block]
    held = [0] * PARAMS.rows
    writes = []
    for k, (t, acc, d) in enumerate(zip(takes, rows, dests, strict=False)):
        v = expected_byte(acc, biases[d["bias"]], shift, relu, threshold)
        r = k % PARAMS.rows
        held[r] = v if d["first"] else max(held[r], v)
        if d["write"] and keep(t):
            writes.append((t + LATENCY, d["word"], d["lane"], held[r] & 0xFF))
    return writes


@pytest.mark.parametrize("shift, relu", [(0, False), (3, True), (17, False), (31, True)])
def test_rows_are_requantised_and_written_to_their_destinations(shift, relu):
    rng = np.random.default_rng(shift)
    blocks, biases, dests = random_case(rng, 12)
    seen, monitor, source = run(blocks, biases, dests, shift=shift, relu=relu, rng=rng,
                                idle=0.4)
    assert len(seen["takes"]) == len(dests)
    assert seen["writes"] == expected_writes(seen["takes"], blocks, biases, dests, shift, relu)
    assert len(seen["writes"]) > len(dests) // 2
    assert monitor.beats == [[int(a) for a in block] for block in blocks]
    # idle gaps happened, and the requantiser held the array back while it worked
    assert source.idle_cycles > 0 and monitor.waits > 0
    # busy exactly while a row is held or in the pipeline: from its take to its write (or
    # to the cycle before, for a row that writes nothing)
    expected = [0] * len(seen["busy"])
    for t, d in zip(seen["takes"], dests, strict=True):
        for c in range(t, t + LATENCY + int(d["write"])):
            expected[c] = 1
    assert seen["busy"] == expected


def test_back_to_back_blocks_take_rows_cycles_each():
    rng = np.random.default_rng(7)
    blocks, biases, dests = random_case(rng, 6)
    seen, monitor, source = run(blocks, biases, dests, shift=2, relu=False, rng=rng, idle=0.0)
    takes = seen["takes"]
    assert source.idle_cycles == 0
    assert takes == list(range(takes[0], takes[0] + len(dests)))  # a row every cycle
    assert monitor.waits == (len(blocks) - 1) * (PARAMS.rows - 1)


def test_a_flush_drops_the_rows_in_flight_and_nothing_else():
    rng = np.random.default_rng(11)
    # destinations for the late block too
    blocks, biases, dests = random_case(rng, 5, pooling=False)
    blocks, late = blocks[:4], blocks[:1] + 5
    seen, _, _ = run(blocks, biases, dests, shift=1, relu=False, rng=rng, idle=0.0,
                     flush_after=2, late_blocks=late)
    (flush,) = seen["flushes"]
    takes = seen["takes"]
    before = [t for t in takes if t < flush]
    after = [t for t in takes if t > flush]
    # a row named in the flush cycle is dropped, not written (the destination side is set up
    # again before the next layer in the device)
    during = [t for t in takes if t == flush]
    assert len(before) < len(blocks) * PARAMS.rows  # the last block was cut short
    assert not seen["busy"][flush + 1]  # and the pipeline emptied
    kept = expected_writes(before, blocks, biases, dests, 1, False,
                           keep=lambda t: t + LATENCY <= flush)
    assert len(kept) < len([d for d in dests[:len(before)] if d["write"]])  # rows were dropped
    # the block after the flush starts from its first row, with the next destinations
    assert len(after) == PARAMS.rows
    late_writes = expected_writes(after, late, biases, dests[len(before) + len(during):], 1,
                                  False)
    assert seen["writes"] == kept + late_writes


TERNARY = PARAMS.replace(ternary_act=True)


@pytest.mark.parametrize("threshold, shift, relu", [(1, 4, False), (5, 3, False), (64, 1, False),
                                                    (127, 0, False), (9, 3, True),
                                                    (0, 2, False)])
def test_ternary_outputs_are_the_trits_of_the_clipped_values(threshold, shift, relu):
    """Sums around +-t (small biases, a few huge ones for the clipping), pooled: the byte
    written is the contract's trit; threshold 0 is int8 on the same device."""
    rng = np.random.default_rng(100 + threshold)
    blocks, biases, dests = random_case(rng, 16, params=TERNARY, bias_bits=3)
    spread = 2 * max(threshold, 2) << shift
    blocks[1:] = rng.integers(-spread, spread + 1, blocks[1:].shape)  # block 0: the extremes
    seen, _, _ = run(blocks, biases, dests, shift=shift, relu=relu, rng=rng, idle=0.3,
                     threshold=threshold, params=TERNARY)
    expected = expected_writes(seen["takes"], blocks, biases, dests, shift, relu,
                               threshold=threshold)
    assert seen["writes"] == expected
    rows = [int(a) for block in blocks for a in block]
    values = {expected_byte(acc, biases[d["bias"]], shift, relu, threshold)
              for acc, d in zip(rows, dests, strict=True)}
    if threshold:
        # every trit (+1 at the threshold itself and -1 at minus it are tested below)
        assert values == ({0, 1} if relu else {-1, 0, 1})
    else:
        assert len(values) > 3


@pytest.mark.parametrize("threshold", [1, 2, 77, 126, 127])
def test_the_trit_changes_exactly_at_plus_and_minus_the_threshold(threshold):
    """Shift 0 and bias 0: each row's value is its accumulator, around every edge of the
    trit (+-t, +-t -+ 1, the int8 limits and beyond)."""
    t = threshold
    edges = [t - 1, t, t + 1, -t + 1, -t, -t - 1, 127, 128, -128, -129, 0, 2047, -2048]
    blocks = np.array(edges + [0] * (-len(edges) % TERNARY.rows)).reshape(-1, TERNARY.rows)
    biases = [0] * TERNARY.bias_depth
    dests = [dict(bias=0, word=k % TERNARY.act_words, lane=0, first=1, write=1)
             for k in range(blocks.size)]
    rng = np.random.default_rng(t)
    seen, _, _ = run(blocks, biases, dests, shift=0, relu=False, rng=rng, idle=0.2,
                     threshold=t, params=TERNARY)
    got = [np.int8(np.uint8(w[3])) for w in seen["writes"]][:len(edges)]
    assert got == [0, 1, 1, 0, -1, -1, 1, 1, -1, -1, 0, 1, -1]


def test_a_device_without_ternary_act_ignores_the_threshold():
    rng = np.random.default_rng(5)
    blocks, biases, dests = random_case(rng, 6, bias_bits=9)
    seen, _, _ = run(blocks, biases, dests, shift=2, relu=False, rng=rng, idle=0.2,
                     threshold=7)
    assert seen["writes"] == expected_writes(seen["takes"], blocks, biases, dests, 2, False)
