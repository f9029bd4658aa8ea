"""trine.hw.popcount_array under Amaranth's simulator: trit x trit dot products against the
reference, with idle gaps and backpressure; and the generic netlist has no multiplier."""

import numpy as np
import pytest

from trine.contract.reference import ternary_matmul
from trine.contract.spec import TritCode, trits_to_codes
from trine.flow import synth
from trine.hw.popcount_array import FORMS, PopcountArray
from trine.hw.verilog import to_verilog
from trine.sim.testbench import StreamMonitor, StreamSink, StreamSource, simulate


def make_vectors(rng, rows, count, max_fan_in, lanes):
    """Corner cases (every product +1, every product -1, K = 1, alternating) and random ones."""
    k = max_fan_in
    vectors = [(np.ones(k), np.ones((rows, k))), (-np.ones(k), np.ones((rows, k))),
               (np.ones(k), -np.ones((rows, k))), (-np.ones(k), -np.ones((rows, k))),
               (rng.integers(-1, 2, 1), rng.integers(-1, 2, (rows, 1))),
               (np.tile([1, -1], k)[:k], np.ones((rows, k))),
               (np.zeros(k), rng.integers(-1, 2, (rows, k)))]
    for _ in range(count):
        k = int(rng.integers(1, max_fan_in + 1))
        sparse = rng.random() < 0.3
        x = rng.integers(-1, 2, k) * (rng.random(k) < 0.3 if sparse else 1)
        vectors.append((x, rng.integers(-1, 2, (rows, k))))
    return [(x.astype(np.int8), w.astype(np.int8)) for x, w in vectors]


def to_beats(x, w, lanes, illegal_padding=False):
    """Split a vector into beats; the tail's activation and weight codes are zero (or the
    illegal code, which must count as zero too)."""
    k = len(x)
    n = -(-k // lanes)
    pad = TritCode.ILLEGAL if illegal_padding else TritCode.ZERO
    acts = np.full(n * lanes, pad, np.uint8)
    acts[:k] = trits_to_codes(x)
    codes = np.full((w.shape[0], n * lanes), pad, np.uint8)
    codes[:, :k] = trits_to_codes(w)
    for b in range(n):
        s = slice(b * lanes, (b + 1) * lanes)
        yield acts[s], codes[:, s], b == n - 1


def run_array(dut, vectors, rng, idle=0.3, backpressure=0.3, illegal_padding=False):
    beats = [{"acts": [int(v) for v in acts], "codes": [[int(c) for c in row] for row in codes],
              "last": last}
             for x, w in vectors for acts, codes, last in to_beats(x, w, dut.lanes,
                                                                   illegal_padding)]
    source = StreamSource(dut.i_stream, rng=rng, idle=idle)
    sink = StreamSink(dut.o_stream, rng=rng, backpressure=backpressure,
                      convert=lambda v: [int(a) for a in v])
    monitor = StreamMonitor(dut.o_stream)

    async def feed(ctx):
        await source.send(ctx, beats)

    async def drain(ctx):
        await sink.take(ctx, len(vectors))

    simulate(dut, feed, drain, background=[monitor.watch])
    assert source.idle_cycles > 0 and sink.stall_cycles > 0 and monitor.waits > 0
    return np.array(sink.received, dtype=np.int64)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("lanes, rows, register_every",
                         [(1, 1, 1), (3, 2, 1), (4, 2, 0), (5, 3, 2), (8, 2, 1), (7, 1, 3)])
def test_matches_reference(form, lanes, rows, register_every):
    rng = np.random.default_rng(lanes * 100 + rows * 10 + register_every)
    dut = PopcountArray(lanes, rows, max_fan_in=4 * lanes + 3, register_every=register_every,
                        form=form)
    vectors = make_vectors(rng, rows, 25, dut.max_fan_in, lanes)
    got = run_array(dut, vectors, rng)
    assert np.array_equal(got, np.array([ternary_matmul(x, w) for x, w in vectors]))


@pytest.mark.parametrize("form", FORMS)
def test_illegal_codes_act_as_zero(form):
    rng = np.random.default_rng(9)
    dut = PopcountArray(4, 2, max_fan_in=16, form=form)
    vectors = make_vectors(rng, 2, 15, 16, 4)
    got = run_array(dut, vectors, rng, illegal_padding=True)
    assert np.array_equal(got, np.array([ternary_matmul(x, w) for x, w in vectors]))


@pytest.mark.parametrize("form", FORMS)
def test_the_accumulator_holds_the_extremes_exactly(form):
    # K = max_fan_in = 5: +5 and -5 need 4 bits, the width ternary_accumulator_width gives
    rng = np.random.default_rng(2)
    dut = PopcountArray(2, 1, max_fan_in=5, form=form)
    assert dut.acc_width == 4
    vectors = [(np.ones(5, np.int8), np.ones((1, 5), np.int8)),
               (np.ones(5, np.int8), -np.ones((1, 5), np.int8))] * 4
    got = run_array(dut, vectors, rng)
    assert got[:, 0].tolist() == [5, -5] * 4


def test_full_throughput_without_backpressure():
    dut = PopcountArray(4, 2, max_fan_in=4)
    n = 20
    accepted_at, out_at = [], []

    async def bench(ctx):
        ctx.set(dut.o_stream.ready, 1)
        ctx.set(dut.i_stream.payload.last, 1)
        ctx.set(dut.i_stream.valid, 1)
        for cycle in range(n + 10):
            if len(accepted_at) == n:
                ctx.set(dut.i_stream.valid, 0)
            _, _, ready, valid = await ctx.tick().sample(dut.i_stream.ready, dut.o_stream.valid)
            if ready and len(accepted_at) < n:
                accepted_at.append(cycle)
            if valid:
                out_at.append(cycle)

    simulate(dut, bench)
    assert accepted_at == list(range(n))
    assert out_at == [c + dut.latency for c in range(n)]


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        (dict(lanes=0, rows=1), ValueError, r"Lane count must be >= 1, not 0"),
        (dict(lanes=4, rows=0), ValueError, r"Row count must be >= 1, not 0"),
        (dict(lanes=2.5, rows=1), TypeError, r"Lane count must be an integer, not 2.5"),
        (dict(lanes=4, rows=1, max_fan_in=0), ValueError, r"Maximum fan-in must be in"),
        (dict(lanes=4, rows=1, max_fan_in=70000), ValueError, r"Maximum fan-in must be in"),
        (dict(lanes=4, rows=1, register_every=-1), ValueError, r"register_every must be >= 0"),
        (dict(lanes=4, rows=1, form="xnor"), ValueError,
         r"form must be one of fatnn, offset, not 'xnor'"),
    ],
)
def test_parameter_validation(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        PopcountArray(**kwargs)


def test_derived_figures():
    dut = PopcountArray(32, 4, max_fan_in=4096, register_every=2)
    assert dut.acc_width == 14  # [-4096, 4096]
    assert (dut.tree_levels, dut.tree_stages, dut.latency) == (5, 2, 3)


@pytest.mark.parametrize("form", FORMS)
def test_generic_netlist_has_no_multiplier(form):
    try:
        cells = synth.generic_cells(to_verilog(PopcountArray(5, 3, form=form), "array"),
                                    "array")
    except synth.ToolNotFoundError as exc:
        pytest.skip(str(exc))
    assert cells.get("$add", 0) > 0
    assert "$mul" not in cells and "$macc" not in cells
