"""trine.hw.address_generator.AddressGenerator under Amaranth's simulator, against the loop nests
it implements: every beat's addresses and cycle, every row's destination, stop and overruns.

The beat stream has no backpressure by design (``always_ready``): the generator paces itself.
The destination port gets rows taken with random gaps, as a requantiser that is not always
busy would take them."""

import numpy as np
import pytest

from trine.contract.params import AcceleratorParams
from trine.hw.address_generator import AddressGenerator
from trine.sim.testbench import simulate


def params(**changes):
    base = dict(lanes=3, rows=4, weight_words=200, bias_depth=100, max_layers=1, max_width=20,
                max_batch=4)
    base.update(changes)
    return AcceleratorParams(**base)


def config(p, *, weight_base=0, bias_base=0, chunks=1, blocks=1, batch=1, fan_out=None):
    fan_out = blocks * p.rows if fan_out is None else fan_out
    return {"weight_base": weight_base, "bias_base": bias_base,
            "chunks_last": chunks - 1, "chunks_one": chunks == 1,
            "blocks_last": blocks - 1, "blocks_one": blocks == 1,
            "batch_last": batch - 1, "batch_one": batch == 1, "fan_out": fan_out}


def model_beats(p, *, weight_base, chunks, blocks, batch, first_cycle, **_):
    """``(cycle, weight_addr, act_addr, last)`` of every beat: a block starts no sooner than
    ``rows`` cycles after the previous one, its beats follow one per cycle."""
    beats = []
    for k in range(batch * blocks):
        sample, block = divmod(k, blocks)
        start = first_cycle + k * max(chunks, p.rows)
        for c in range(chunks):
            beats.append((start + c, weight_base + block * chunks + c, sample * p.stride + c,
                          int(c == chunks - 1)))
    return beats


def model_dests(p, *, bias_base, blocks, batch, fan_out=None, **_):
    """``(bias, word, lane, write)`` of every row, in the order they are taken."""
    fan_out = blocks * p.rows if fan_out is None else fan_out
    dests = []
    for sample in range(batch):
        for n in range(blocks * p.rows):
            dests.append((bias_base + n, sample * p.stride + n // p.lanes, n % p.lanes,
                          int(n < fan_out)))
    return dests


def run(p, layer, *, rng, take=0.6, stop_at=None, cycles=None):
    """Set the generator up with ``layer`` (keyword arguments of :func:`config`) in cycle 2 and
    take rows with probability ``take`` per cycle. Returns the beats, the destinations of the
    rows taken, and per cycle ``(done, overrun)``."""
    dut = AddressGenerator(p)
    n_rows = layer.get("batch", 1) * layer.get("blocks", 1) * p.rows
    cycles = cycles or 40 + 2 * n_rows * max(layer.get("chunks", 1), p.rows)
    seen = {"beats": [], "dests": [], "flags": [], "gaps": 0}

    async def bench(ctx):
        ctx.set(dut.control.config, config(p, **layer))
        taken = 0
        for cycle in range(cycles):
            ctx.set(dut.control.setup, cycle == 2)
            ctx.set(dut.control.stop, cycle == stop_at)
            rows_left = cycle > 2 and taken < n_rows
            take_now = rows_left and rng.random() < take
            ctx.set(dut.dest.take, take_now)
            ctx.set(dut.dest.last, take_now and taken % p.rows == p.rows - 1)
            seen["gaps"] += rows_left and not take_now
            if take_now:
                seen["dests"].append((ctx.get(dut.dest.bias), ctx.get(dut.dest.word),
                                      ctx.get(dut.dest.lane), ctx.get(dut.dest.write)))
                taken += 1
            beat = dut.o_beat
            if ctx.get(beat.valid):
                seen["beats"].append((cycle, ctx.get(beat.payload.weight_addr),
                                      ctx.get(beat.payload.act_addr), ctx.get(beat.payload.last)))
            seen["flags"].append((ctx.get(dut.control.done), ctx.get(dut.control.overrun)))
            await ctx.tick()

    simulate(dut, bench)
    return seen


@pytest.mark.parametrize(
    "lanes, rows, layer",
    [
        (3, 4, dict(weight_base=5, bias_base=7, chunks=6, blocks=3, batch=2, fan_out=10)),
        (3, 4, dict(weight_base=0, bias_base=0, chunks=2, blocks=4, batch=3)),  # K < rows
        (2, 1, dict(weight_base=9, bias_base=3, chunks=1, blocks=5, batch=2, fan_out=4)),
        (5, 3, dict(weight_base=1, bias_base=2, chunks=3, blocks=1, batch=4, fan_out=2)),
        (1, 2, dict(weight_base=0, bias_base=0, chunks=7, blocks=2, batch=1, fan_out=3)),
    ],
)
def test_both_loop_nests_match_the_model(lanes, rows, layer):
    p = params(lanes=lanes, rows=rows)
    rng = np.random.default_rng(lanes * 10 + rows)
    seen = run(p, layer, rng=rng)
    # the first beat leaves in the cycle after setup
    assert seen["beats"] == model_beats(p, first_cycle=3, **layer)
    expected = model_dests(p, **layer)
    assert seen["dests"] == expected
    # done after the last row, not before
    done = [d for d, _ in seen["flags"]]
    assert not any(done[:4]) and done[-1]
    assert done.index(1) > 3 + len(expected) - 1
    assert not any(o for _, o in seen["flags"])
    assert seen["gaps"] > 0  # rows were taken with gaps


def test_setup_restarts_both_nests_and_clears_done():
    p = params()
    layer = dict(weight_base=3, bias_base=4, chunks=2, blocks=2, batch=1)
    rng = np.random.default_rng(3)
    dut = AddressGenerator(p)
    firsts = []

    async def bench(ctx):
        ctx.set(dut.control.config, config(p, **layer))
        for _ in range(2):
            ctx.set(dut.control.setup, 1)
            await ctx.tick()
            ctx.set(dut.control.setup, 0)
            assert not ctx.get(dut.control.done)
            firsts.append((ctx.get(dut.o_beat.payload.weight_addr), ctx.get(dut.dest.bias)))
            for row in range(2 * p.rows):  # every row of the layer, back to back
                ctx.set(dut.dest.take, 1)
                ctx.set(dut.dest.last, row % p.rows == p.rows - 1)
                await ctx.tick()
            ctx.set(dut.dest.take, 0)
            await ctx.tick().repeat(int(rng.integers(1, 5)))
            assert ctx.get(dut.control.done) and not ctx.get(dut.o_beat.valid)

    simulate(dut, bench)
    assert firsts == [(3, 4), (3, 4)]


def test_stop_ends_issuing_at_once():
    p = params()
    layer = dict(chunks=5, blocks=3, batch=2)
    seen = run(p, layer, rng=np.random.default_rng(4), stop_at=10)
    beats = model_beats(p, first_cycle=3, weight_base=0, **layer)
    assert seen["beats"] == [b for b in beats if b[0] <= 10]


def test_overrun_flags_the_weight_word_past_the_memory():
    p = params(weight_words=10)
    layer = dict(weight_base=4, chunks=3, blocks=2, batch=2)  # words 4 .. 9, then 4 .. 9 again
    seen = run(p, dict(layer, weight_base=5), rng=np.random.default_rng(5), take=0.0,
               cycles=60)
    overrun = [o for _, o in seen["flags"]]
    beats = seen["beats"]
    (first_past,) = [c for c, w, _, _ in beats if w == p.weight_words][:1]
    assert overrun.index(1) == first_past  # flagged with the beat that reads past the end
    fits = run(p, layer, rng=np.random.default_rng(5), take=0.0, cycles=60)
    assert not any(o for _, o in fits["flags"])


def test_overrun_flags_the_bias_past_the_memory():
    p = params(bias_depth=10)
    layer = dict(bias_base=3, chunks=1, blocks=2, batch=1)  # rows 3 .. 10: one past the end
    seen = run(p, layer, rng=np.random.default_rng(6), take=1.0, cycles=40)
    assert [d[0] for d in seen["dests"]] == list(range(3, 11))
    assert any(o for _, o in seen["flags"])  # while the row past the end is at the port
    fits = run(p, dict(layer, bias_base=2), rng=np.random.default_rng(6), take=1.0,
               cycles=40)
    assert not any(o for _, o in fits["flags"])
