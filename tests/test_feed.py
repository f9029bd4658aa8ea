"""trine.hw.feed.ArrayFeed under Amaranth's simulator: beats with idle gaps, read from memories
and decoded, reach the array two cycles later (four with registered RAM output); illegal bytes
are flagged; a flush drops the beats in flight. The feed has no backpressure by design (the
address generator paces it)."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory

from trine.contract.params import AcceleratorParams
from trine.contract.spec import TRITS_PER_BYTE, trits_to_codes, unpack_trits
from trine.hw.feed import ArrayFeed
from trine.sim.testbench import StreamMonitor, StreamSource, simulate

#: Cycles from a beat on ``i_beat`` to the same beat on ``o_stream``, by ``ram_output``.
LATENCY = {"direct": 2, "registered": 4}


class Harness(wiring.Component):
    """The feed with a weight memory and an activation memory behind its read ports (both
    registered once more with a registered RAM output, as
    :class:`trine.hw.memories.CoreMemories` does)."""

    def __init__(self, params, weights, acts):
        self.params = params
        self.feed = ArrayFeed(params)
        self.weights = Memory(shape=8 * params.beat_bytes, depth=len(weights), init=weights)
        self.acts = Memory(shape=8 * params.lanes, depth=len(acts), init=acts)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.feed, m.submodules.weights, m.submodules.acts = (self.feed, self.weights,
                                                                      self.acts)
        for feed_port, memory in ((self.feed.weights, self.weights), (self.feed.acts, self.acts)):
            port = memory.read_port()
            m.d.comb += [port.addr.eq(feed_port.addr), port.en.eq(feed_port.en)]
            if self.params.ram_output == "registered":
                m.d.sync += feed_port.data.eq(port.data)
            else:
                m.d.comb += feed_port.data.eq(port.data)
        return m


def decode(word, n_bytes):
    """The trit codes of a weight word (zeros for an illegal byte) and whether it had one."""
    codes, illegal = [], False
    for b in word.to_bytes(n_bytes, "little"):
        if b >= 3**TRITS_PER_BYTE:
            codes += [0] * TRITS_PER_BYTE
            illegal = True
        else:
            codes += [int(c) for c in trits_to_codes(unpack_trits(bytes([b]), TRITS_PER_BYTE))]
    return codes, illegal


def run(p, beats, weights, acts, *, rng, idle, flush_at=None):
    top = Harness(p, weights, acts)
    dut = top.feed
    source = StreamSource(dut.i_beat, rng=rng, idle=idle)
    monitor = StreamMonitor(dut.o_stream)
    seen = {"in": [], "out": [], "illegal": []}

    async def feed(ctx):
        ctx.set(dut.o_stream.ready, 1)
        await source.send(ctx, beats)
        await ctx.tick().repeat(LATENCY[p.ram_output] + 3)

    async def watch(ctx):
        cycle = 0
        async for _, _, valid, beat, out_valid, acts_, codes, last, illegal in ctx.tick().sample(
                dut.i_beat.valid, dut.i_beat.payload, dut.o_stream.valid,
                dut.o_stream.payload.acts, dut.o_stream.payload.codes, dut.o_stream.payload.last,
                dut.illegal):
            if cycle == flush_at:
                ctx.set(dut.flush, 0)
            if valid:
                seen["in"].append((cycle, beat.weight_addr, beat.act_addr, beat.last, beat.zero))
            if out_valid:
                seen["out"].append((cycle, [int(a) & 0xFF for a in acts_],
                                    [int(c) for row in codes for c in row], last))
            if illegal:
                seen["illegal"].append(cycle)
            cycle += 1
            if cycle == flush_at:
                ctx.set(dut.flush, 1)

    simulate(top, feed, background=[watch, monitor.watch])
    return seen, source, monitor


def random_case(rng, p, n_beats):
    legal = rng.random(16) < 0.8
    weights = []
    for ok in legal:
        b = rng.integers(0, 243 if ok else 256, p.beat_bytes)
        if not ok:
            b[int(rng.integers(p.beat_bytes))] = int(rng.integers(243, 256))
        weights.append(int.from_bytes(bytes(b.astype(np.uint8)), "little"))
    acts = [int.from_bytes(rng.bytes(p.lanes), "little") for _ in range(p.act_words)]
    beats = [{"weight_addr": int(rng.integers(len(weights))),
              "act_addr": int(rng.integers(len(acts))), "last": int(rng.integers(2)),
              "zero": int(rng.random() < 0.2)}
             for _ in range(n_beats)]
    return beats, weights, acts


def expected_out(p, beat, weights, acts):
    codes, illegal = decode(weights[beat[1]], p.beat_bytes)
    # a zero-padding beat brings zero activations, whatever the word read
    lanes = [0] * p.lanes if beat[4] else list(acts[beat[2]].to_bytes(p.lanes, "little"))
    return lanes, codes[: p.lanes * p.rows], beat[3], illegal


@pytest.mark.parametrize("lanes, rows, decoder, ram_output", [
    (3, 2, "rom", "direct"), (8, 5, "table", "direct"), (4, 3, "logic", "direct"),
    (1, 1, "rom", "direct"), (3, 2, "rom", "registered"), (8, 5, "table", "registered"),
    (1, 1, "logic", "registered")])
def test_beats_are_fetched_and_decoded_two_cycles_later(lanes, rows, decoder, ram_output):
    p = AcceleratorParams(lanes=lanes, rows=rows, weight_words=16, bias_depth=4, act_words=12,
                          table_words=10, max_batch=2, decoder=decoder, ram_output=ram_output)
    rng = np.random.default_rng(lanes * 10 + rows)
    beats, weights, acts = random_case(rng, p, 80)
    seen, source, monitor = run(p, beats, weights, acts, rng=rng, idle=0.4)
    latency = LATENCY[ram_output]
    assert ArrayFeed(p).latency == latency
    assert len(seen["in"]) == len(beats) and source.idle_cycles > 0
    assert [c for c, *_ in seen["out"]] == [c + latency for c, *_ in seen["in"]]
    illegal = []
    for beat, (_, out_acts, codes, last) in zip(seen["in"], seen["out"], strict=True):
        e_acts, e_codes, e_last, e_illegal = expected_out(p, beat, weights, acts)
        assert (out_acts, codes, last) == (e_acts, e_codes, e_last)
        if e_illegal:
            illegal.append(beat[0] + latency + 1)  # flagged in the cycle after it was offered
    assert seen["illegal"] == illegal and illegal
    assert len(monitor.beats) == len(beats)


@pytest.mark.parametrize("ram_output", ["direct", "registered"])
def test_a_flush_drops_the_beats_in_flight(ram_output):
    p = AcceleratorParams(lanes=2, rows=2, weight_words=16, bias_depth=4, act_words=8,
                          table_words=10, max_batch=1, ram_output=ram_output)
    rng = np.random.default_rng(3)
    beats, weights, acts = random_case(rng, p, 30)
    flush_at = 12
    seen, _, _ = run(p, beats, weights, acts, rng=rng, idle=0.0, flush_at=flush_at)
    # beats issued in the flush cycle and the ones before it still in the feed never reach
    # the array
    latency = LATENCY[ram_output]
    dropped = range(flush_at - latency + 1, flush_at + 1)
    kept = [c + latency for c, *_ in seen["in"] if c not in dropped]
    assert [c for c, *_ in seen["out"]] == kept
    assert len(kept) == len(beats) - latency
