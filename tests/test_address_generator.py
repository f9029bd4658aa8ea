"""trine.hw.address_generator.AddressGenerator under Amaranth's simulator, against the loop nests
it implements (:class:`trine.contract.device_image.LayerEntry`): every beat's addresses, zero
flag and cycle, every row's destination, stop and overruns, for dense layers and for the
entries the compiler makes of convolutions (strides, padding, 1-D and 2-D, pooling).

The beat stream has no backpressure by design (``always_ready``): the generator paces itself.
The destination port gets rows taken with random gaps, as a requantiser that is not always
busy would take them."""

import itertools

import numpy as np
import pytest
from conftest import CNN_KINDS, random_cnn

from trine.contract.device_image import LayerEntry, compile_image
from trine.contract.params import AcceleratorParams
from trine.hw.address_generator import AddressGenerator, held_entry
from trine.sim.testbench import simulate


def params(**changes):
    base = dict(lanes=3, rows=4, weight_words=2000, bias_depth=100, act_words=256,
                table_words=40, max_batch=4)
    base.update(changes)
    return AcceleratorParams(**base)


def dense(p, *, weight_base=0, bias_base=0, chunks=1, blocks=1, fan_out=None, in_base=0,
          out_base=100):
    fan_out = blocks * p.rows if fan_out is None else fan_out
    return LayerEntry(weight_base, bias_base, blocks, fan_out, chunks, in_base, chunks,
                      out_base, -(-fan_out // p.lanes), 0, False)


def positions(e):
    """Per output position in loop order: the level that advances after it (None after the
    last), and whether it starts and ends its pooling window."""
    counts = e.p_counts
    order = list(itertools.product(*[range(n) for n in reversed(counts)]))
    for k, idx in enumerate(order):
        inner = list(reversed(idx))
        first = all(inner[i] == 0 for i in range(e.pool_levels))
        last = all(inner[i] == counts[i] - 1 for i in range(e.pool_levels))
        level = None if k + 1 == len(order) else next(
            i for i in range(4) if inner[i] != counts[i] - 1)
        yield level, first, last


def model(p, e, batch):
    """``(weight_addr, act_addr, zero, last)`` of every beat, per window, and
    ``(bias, word, lane, first, write)`` of every row, in order."""
    mask = (1 << (p.act_words - 1).bit_length()) - 1
    windows, dests = [], []
    for b in range(batch):
        in_s, out_s = e.in_base + b * e.in_sample_words, e.out_base + b * e.out_sample_words
        for j in range(e.blocks):
            start, pos, x, y = in_s, out_s, e.x0, e.y0
            for level, first, last in positions(e):
                beats = []
                for n, (ty, tx, g) in enumerate(itertools.product(
                        range(e.kh), range(e.kw), range(e.cw))):
                    act = start + ty * (e.kw * e.cw - 1 + e.row_step) + tx * e.cw + g
                    inside = 0 <= x + tx < e.in_width and 0 <= y + ty < e.in_height
                    beats.append((e.weight_base + j * e.window_words + n, act & mask,
                                  int(not inside), int(n == e.window_words - 1)))
                windows.append(beats)
                for r in range(p.rows):
                    m = j * p.rows + r
                    dests.append((e.bias_base + m, (pos + m // p.lanes) & mask, m % p.lanes,
                                  int(first), int(m < e.fan_out and last)))
                if level is not None:
                    start += e.act_steps[level]
                    pos += e.out_steps[level]
                    x += e.x_steps[level]
                    y += e.y_steps[level]
    return windows, dests


def timed(p, windows, first_cycle):
    """The beats with their cycles: a window starts no sooner than ``rows`` cycles after the
    previous one, its beats follow one per cycle; a window's last beat waits for the window
    walker, which has the next window ready three cycles after the first beat and three
    cycles after each window's last beat, and the cycles a last beat waits for it delay the
    next window's start as well."""
    beats, start, held, ready = [], first_cycle - p.rows, 0, first_cycle + 3
    for window in windows:
        start = max(start + p.rows + held, beats[-1][0] + 1 if beats else first_cycle)
        if len(window) == 1:
            start = max(start, ready)
        cycles = [start + i for i in range(len(window))]
        held = max(0, ready - cycles[-1])
        cycles[-1] += held
        ready = cycles[-1] + 3
        beats += [(c, *beat) for c, beat in zip(cycles, window, strict=True)]
    return beats


def config(p, e, batch):
    return {"entry": held_entry(p, e), "batch": batch}


def run(p, e, batch, *, rng, take=0.6, stop_at=None, cycles=None):
    """Set the generator up with entry ``e`` in cycle 2 and take rows with probability
    ``take`` per cycle. Returns the beats, the destinations of the rows taken, and per cycle
    ``(done, overrun)``."""
    dut = AddressGenerator(p)
    windows, _ = model(p, e, batch)
    n_rows = len(windows) * p.rows
    cycles = cycles or 40 + 2 * n_rows * max(e.window_words, p.rows)
    seen = {"beats": [], "dests": [], "flags": [], "gaps": 0}

    async def bench(ctx):
        ctx.set(dut.control.config, config(p, e, batch))
        taken = 0
        for cycle in range(cycles):
            ctx.set(dut.control.setup, cycle == 2)
            ctx.set(dut.control.stop, cycle == stop_at)
            # the output side is ready two cycles after the setup (the array's latency is
            # longer)
            rows_left = cycle > 4 and taken < n_rows
            take_now = rows_left and rng.random() < take
            ctx.set(dut.dest.take, take_now)
            ctx.set(dut.dest.last, take_now and taken % p.rows == p.rows - 1)
            seen["gaps"] += rows_left and not take_now
            if take_now:
                seen["dests"].append(tuple(ctx.get(getattr(dut.dest, f)) for f in
                                           ("bias", "word", "lane", "first", "write")))
                taken += 1
            beat = dut.o_beat
            if ctx.get(beat.valid):
                seen["beats"].append((cycle, *(ctx.get(getattr(beat.payload, f)) for f in
                                               ("weight_addr", "act_addr", "zero", "last"))))
            seen["flags"].append((ctx.get(dut.control.done), ctx.get(dut.control.overrun)))
            await ctx.tick()

    simulate(dut, bench)
    return seen


def check(p, e, batch, seen):
    windows, dests = model(p, e, batch)
    # the first beat leaves in the cycle after setup
    assert seen["beats"] == timed(p, windows, 3)
    assert seen["dests"] == dests
    # done after the last row, not before
    done = [d for d, _ in seen["flags"]]
    assert not any(done[:4]) and done[-1]
    assert done.index(1) > 3 + len(dests) - 1
    assert not any(o for _, o in seen["flags"])
    assert seen["gaps"] > 0  # rows were taken with gaps


@pytest.mark.parametrize(
    "lanes, rows, layer, batch",
    [
        (3, 4, dict(weight_base=5, bias_base=7, chunks=6, blocks=3, fan_out=10), 2),
        (3, 4, dict(weight_base=0, bias_base=0, chunks=2, blocks=4), 3),  # K < rows
        (2, 1, dict(weight_base=9, bias_base=3, chunks=1, blocks=5, fan_out=4), 2),
        (5, 3, dict(weight_base=1, bias_base=2, chunks=3, blocks=1, fan_out=2), 4),
        (1, 2, dict(weight_base=0, bias_base=0, chunks=7, blocks=2, fan_out=3), 1),
    ],
)
def test_dense_loop_nests_match_the_model(lanes, rows, layer, batch):
    p = params(lanes=lanes, rows=rows)
    rng = np.random.default_rng(lanes * 10 + rows)
    e = dense(p, **layer)
    check(p, e, batch, run(p, e, batch, rng=rng))


@pytest.mark.parametrize("lanes, rows", [(3, 4), (2, 2), (4, 1)])
@pytest.mark.parametrize("kind", list(CNN_KINDS))
def test_convolution_entries_match_the_model(kind, lanes, rows):
    """Every entry the compiler makes of the small CNNs: windows, padding, pooling."""
    p = params(lanes=lanes, rows=rows)
    rng = np.random.default_rng(len(kind) + lanes)
    layers, shape = random_cnn(rng, kind)
    image = compile_image(layers, shape, lanes, rows, p.act_words, max_batch=2)
    for e in image.entries:
        if e.conv:
            check(p, e, image.batch, run(p, e, image.batch, rng=rng))


def test_setup_restarts_both_nests_and_clears_done():
    p = params()
    e = dense(p, weight_base=3, bias_base=4, chunks=2, blocks=2)
    rng = np.random.default_rng(3)
    dut = AddressGenerator(p)
    firsts = []

    async def bench(ctx):
        ctx.set(dut.control.config, config(p, e, 1))
        await ctx.tick()  # the window's counts are held a cycle before the setup
        for _ in range(2):
            ctx.set(dut.control.setup, 1)
            await ctx.tick()
            ctx.set(dut.control.setup, 0)
            assert not ctx.get(dut.control.done)
            weight = ctx.get(dut.o_beat.payload.weight_addr)
            await ctx.tick().repeat(2)  # the output side loads two cycles after the setup
            firsts.append((weight, ctx.get(dut.dest.bias)))
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
    e = dense(p, chunks=5, blocks=3)
    seen = run(p, e, 2, rng=np.random.default_rng(4), stop_at=10)
    beats = timed(p, model(p, e, 2)[0], 3)
    assert seen["beats"] == [b for b in beats if b[0] <= 10]


def test_overrun_flags_the_weight_word_past_the_memory():
    p = params(weight_words=10)
    # words 5 .. 10 (one past the end), then 5 .. 10 again
    seen = run(p, dense(p, weight_base=5, chunks=3, blocks=2), 2, rng=np.random.default_rng(5),
               take=0.0, cycles=60)
    overrun = [o for _, o in seen["flags"]]
    (first_past,) = [c for c, w, *_ in seen["beats"] if w == p.weight_words][:1]
    assert overrun.index(1) == first_past  # flagged with the beat that reads past the end
    fits = run(p, dense(p, weight_base=4, chunks=3, blocks=2), 2,
               rng=np.random.default_rng(5), take=0.0, cycles=60)
    assert not any(o for _, o in fits["flags"])


def test_overrun_flags_the_bias_past_the_memory():
    p = params(bias_depth=10)
    e = dense(p, bias_base=3, chunks=1, blocks=2)  # rows 3 .. 10: one past the end
    seen = run(p, e, 1, rng=np.random.default_rng(6), take=1.0, cycles=40)
    assert [d[0] for d in seen["dests"]] == list(range(3, 11))
    assert any(o for _, o in seen["flags"])  # while the row past the end is at the port
    fits = run(p, dense(p, bias_base=2, chunks=1, blocks=2), 1, rng=np.random.default_rng(6),
               take=1.0, cycles=40)
    assert not any(o for _, o in fits["flags"])


def test_a_write_past_the_pool_is_flagged():
    p = params(act_words=100)  # not a power of two: addresses 100 .. 127 exist in 7 bits
    seen = run(p, dense(p, chunks=1, blocks=2, out_base=99), 1, rng=np.random.default_rng(7),
               take=1.0, cycles=40)
    assert any(o for _, o in seen["flags"])
    fits = run(p, dense(p, chunks=1, blocks=2, out_base=97), 1, rng=np.random.default_rng(7),
               take=1.0, cycles=40)
    assert not any(o for _, o in fits["flags"])
