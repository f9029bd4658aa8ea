"""trine.hw.mac_array under Amaranth's simulator: small configurations, idle gaps, backpressure."""

import numpy as np
import pytest

from trine.contract.reference import ternary_matmul
from trine.contract.spec import TritCode, trits_to_codes
from trine.hw.mac_array import MACArray
from trine.sim.testbench import StreamMonitor, StreamSink, StreamSource, simulate


def make_vectors(rng, lanes, rows, count, max_fan_in):
    """Random vectors plus the corner cases; K is any value in [1, max_fan_in]."""
    vectors = []
    k_max = max_fan_in
    vectors.append((np.full(k_max, -128), -np.ones((rows, k_max))))  # +128 per term
    vectors.append((np.full(k_max, -128), np.ones((rows, k_max))))  # -128 per term
    vectors.append((np.full(k_max, 127), -np.ones((rows, k_max))))
    vectors.append((rng.integers(-128, 128, 1), rng.integers(-1, 2, (rows, 1))))  # K = 1
    k = lanes * 2 + 1
    alternating = np.tile([1, -1], k)[:k]
    vectors.append((rng.integers(-128, 128, k), np.tile(alternating, (rows, 1))))
    vectors.append((rng.integers(-128, 128, k), np.zeros((rows, k))))
    for _ in range(count):
        k = int(rng.integers(1, k_max + 1))
        vectors.append((rng.integers(-128, 128, k), rng.integers(-1, 2, (rows, k))))
    return [(x.astype(np.int8), w.astype(np.int8)) for x, w in vectors]


def to_beats(x, w, lanes, rng, illegal_padding=False):
    """Split a vector into beats; the tail is padded with zero codes and random activations."""
    k = len(x)
    beats = -(-k // lanes)
    xs = rng.integers(-128, 128, beats * lanes)  # padding activations must not matter
    xs[:k] = x
    codes = np.zeros((w.shape[0], beats * lanes), np.uint8)
    codes[:, k:] = TritCode.ILLEGAL if illegal_padding else TritCode.ZERO
    codes[:, :k] = trits_to_codes(w)
    for b in range(beats):
        s = slice(b * lanes, (b + 1) * lanes)
        yield xs[s], codes[:, s], b == beats - 1


def run_array(dut, vectors, rng, idle=0.3, backpressure=0.3, illegal_padding=False):
    """Stream ``vectors`` through ``dut`` with idle gaps and backpressure; its outputs."""
    beats = [{"acts": [int(v) for v in acts], "codes": [[int(c) for c in row] for row in codes],
              "last": last}
             for x, w in vectors for acts, codes, last in to_beats(x, w, dut.lanes, rng,
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
    # gaps and backpressure happened (and the array held its outputs meanwhile)
    assert source.idle_cycles > 0 and sink.stall_cycles > 0 and monitor.waits > 0
    return np.array(sink.received, dtype=np.int64)


@pytest.mark.parametrize(
    "lanes, rows, register_every",
    [(1, 1, 1), (3, 2, 1), (4, 2, 0), (5, 3, 2), (8, 2, 1), (7, 1, 3)],
)
def test_matches_reference(lanes, rows, register_every):
    rng = np.random.default_rng(lanes * 100 + rows * 10 + register_every)
    dut = MACArray(lanes, rows, max_fan_in=4 * lanes + 3, register_every=register_every)
    vectors = make_vectors(rng, lanes, rows, 25, dut.max_fan_in)
    got = run_array(dut, vectors, rng)
    expected = np.array([ternary_matmul(x, w) for x, w in vectors])
    assert np.array_equal(got, expected)


def test_without_correction_outputs_minus_the_negative_count():
    rng = np.random.default_rng(5)
    dut = MACArray(4, 3, max_fan_in=20, correction=False)
    vectors = make_vectors(rng, 4, 3, 20, 20)
    got = run_array(dut, vectors, rng)
    expected = np.array([ternary_matmul(x, w) - (w == -1).sum(axis=1) for x, w in vectors])
    assert np.array_equal(got, expected)


def test_illegal_code_acts_as_zero():
    rng = np.random.default_rng(9)
    dut = MACArray(4, 2, max_fan_in=16)
    vectors = make_vectors(rng, 4, 2, 15, 16)
    got = run_array(dut, vectors, rng, illegal_padding=True)
    assert np.array_equal(got, np.array([ternary_matmul(x, w) for x, w in vectors]))


def test_full_throughput_without_backpressure():
    """One beat per cycle: N single-beat vectors take N + latency cycles."""
    dut = MACArray(4, 2, max_fan_in=4)
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
        (dict(lanes=4, rows=1, act_width=1), ValueError, r"Activation width must be in \[2, 16\]"),
        (dict(lanes=4, rows=1, max_fan_in=0), ValueError, r"Maximum fan-in must be in"),
        (dict(lanes=4, rows=1, max_fan_in=70000), ValueError, r"Maximum fan-in must be in"),
        (dict(lanes=4, rows=1, register_every=-1), ValueError, r"register_every must be >= 0"),
        (dict(lanes=4, rows=1, correction=1), TypeError, r"correction must be a bool"),
    ],
)
def test_parameter_validation(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        MACArray(**kwargs)


def test_derived_figures():
    dut = MACArray(32, 4, max_fan_in=4096, register_every=2)
    assert dut.acc_width == 21
    assert dut.tree_levels == 5
    assert dut.tree_stages == 2  # after levels 2 and 4; level 5 feeds the accumulator
    assert dut.latency == 3
