"""The int8 area baseline, and proofs that the ternary MAC array synthesises without multipliers.

Fast tests (no marker): the baseline's dot products in amaranth.sim, and the generic Yosys
netlist (before ``alumacc``) of the ternary array has no ``$mul`` while the baseline's has.
``synth`` tests run full Yosys synthesis and nextpnr through YoWASP.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from trine.contract.spec import ACT_MAX, ACT_MIN
from trine.flow import synth
from trine.hw.baseline import WEIGHT_WIDTH, Int8MACArray
from trine.hw.mac_array import MACArray
from trine.hw.verilog import mac_array_verilog, to_verilog

W_MIN, W_MAX = -(1 << (WEIGHT_WIDTH - 1)), (1 << (WEIGHT_WIDTH - 1)) - 1
DSP_CELLS = {"ice40": "SB_MAC16", "ecp5": "MULT18X18D"}


def _generic_cells_or_skip(verilog: str, top: str) -> dict[str, int]:
    try:
        return synth.generic_cells(verilog, top)
    except synth.ToolNotFoundError as exc:
        pytest.skip(str(exc))


# --------------------------------------------------------------------------------------------
# Int8MACArray in simulation
# --------------------------------------------------------------------------------------------


def _simulate_int8(dut: Int8MACArray, vectors, seed: int) -> list[list[int]]:
    """Stream ``vectors`` (list of (acts (K,), weights (rows, K))) through ``dut``, with random
    idle gaps and backpressure; return one list of ``rows`` accumulators per vector."""
    lanes = dut.lanes
    beats = []
    for acts, weights in vectors:
        nbeats = acts.shape[0] // lanes
        for b in range(nbeats):
            sl = slice(b * lanes, (b + 1) * lanes)
            beats.append(
                {
                    "acts": [int(v) for v in acts[sl]],
                    "weights": [[int(v) for v in row[sl]] for row in weights],
                    "last": int(b == nbeats - 1),
                }
            )
    results = []

    async def producer(ctx):
        rng = np.random.default_rng(seed)
        for beat in beats:
            while rng.random() < 0.3:
                await ctx.tick()
            ctx.set(dut.i_stream.valid, 1)
            ctx.set(dut.i_stream.payload, beat)
            await ctx.tick().until(dut.i_stream.ready)
            ctx.set(dut.i_stream.valid, 0)

    async def consumer(ctx):
        rng = np.random.default_rng(seed + 1)
        for _ in range(20 * len(beats) + 100):
            if len(results) == len(vectors):
                return
            ready = bool(rng.random() < 0.6)
            ctx.set(dut.o_stream.ready, ready)
            *_, valid, payload = await ctx.tick().sample(dut.o_stream.valid, dut.o_stream.payload)
            if ready and valid:
                results.append([int(payload[r]) for r in range(dut.rows)])
        raise AssertionError(f"only {len(results)} of {len(vectors)} results came out")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return results


@pytest.mark.parametrize("register_every", [1, 0, 2])
def test_int8_baseline_dot_products(register_every):
    lanes, rows = 3, 2
    rng = np.random.default_rng(register_every)
    dut = Int8MACArray(lanes, rows, max_fan_in=32, register_every=register_every)
    vectors = []
    # Extremes first: -128 * -128 over the longest vector, and -128 * 127.
    k = 10 * lanes
    vectors.append((np.full(k, ACT_MIN), np.full((rows, k), W_MIN)))
    vectors.append((np.full(k, ACT_MIN), np.full((rows, k), W_MAX)))
    for _ in range(12):
        k = lanes * int(rng.integers(1, 6))
        vectors.append(
            (rng.integers(ACT_MIN, ACT_MAX + 1, k), rng.integers(W_MIN, W_MAX + 1, (rows, k)))
        )
    got = _simulate_int8(dut, vectors, seed=register_every)
    want = [[int(v) for v in w.astype(np.int64) @ x.astype(np.int64)] for x, w in vectors]
    assert got == want


def _measured_latency(dut, beat) -> int:
    """Cycles from accepting a one-beat vector to its result being valid (no backpressure)."""
    cycles = []

    async def testbench(ctx):
        ctx.set(dut.o_stream.ready, 1)
        ctx.set(dut.i_stream.payload, beat)
        ctx.set(dut.i_stream.valid, 1)
        await ctx.tick()
        ctx.set(dut.i_stream.valid, 0)
        n = 1
        while not ctx.get(dut.o_stream.valid) and n < 50:
            await ctx.tick()
            n += 1
        cycles.append(n)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return cycles[0]


@pytest.mark.parametrize("lanes", [1, 5, 16])
@pytest.mark.parametrize("register_every", [0, 1, 2, 3])
def test_int8_baseline_latency_matches_mac_array(lanes, register_every):
    base = Int8MACArray(lanes, 2, register_every=register_every)
    ternary = MACArray(lanes, 2, register_every=register_every)
    assert base.latency == ternary.latency
    beat = {"acts": [1] * lanes, "weights": [[1] * lanes] * 2, "last": 1}
    assert _measured_latency(base, beat) == base.latency


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"lanes": 0, "rows": 1}, ValueError, "Lane count must be >= 1, not 0"),
        ({"lanes": 4, "rows": 0}, ValueError, "Row count must be >= 1, not 0"),
        ({"lanes": 4, "rows": 1, "act_width": 1}, ValueError, "Activation width must be in"),
        ({"lanes": 4.0, "rows": 1}, TypeError, "Lane count must be an integer"),
    ],
)
def test_int8_baseline_rejects_bad_parameters(kwargs, error, message):
    with pytest.raises(error, match=message):
        Int8MACArray(**kwargs)


# --------------------------------------------------------------------------------------------
# Generic netlist: no $mul in the ternary array (and the check does find one in the baseline)
# --------------------------------------------------------------------------------------------


def test_ternary_generic_netlist_has_no_multiplier():
    cells = _generic_cells_or_skip(mac_array_verilog(5, 3), "mac_array")
    assert cells.get("$add", 0) > 0  # the adder tree is there...
    assert "$mul" not in cells  # ...and no multiplier
    assert "$macc" not in cells


def test_whole_device_has_no_multiplier():
    """The whole accelerator, UART to requantiser, is multiply-free (addresses count up)."""
    from trine.contract.params import SIMULATED
    from trine.hw.device import Top

    top = Top(SIMULATED, 12_000_000, 3_000_000)
    cells = _generic_cells_or_skip(to_verilog(top, "top"), "top")
    assert cells.get("$add", 0) > 0
    assert "$mul" not in cells and "$macc" not in cells
    assert "$div" not in cells and "$mod" not in cells


def test_multiplier_check_finds_baseline_multipliers():
    cells = _generic_cells_or_skip(to_verilog(Int8MACArray(5, 3), "int8_array"), "int8_array")
    assert cells.get("$mul", 0) == 5 * 3


def test_parse_fmax_takes_the_post_route_figure():
    log = (
        "Info: Max frequency for clock 'clk': 80.00 MHz (PASS at 60.00 MHz)\n"
        "Info: Max frequency for clock 'clk': 71.25 MHz (PASS at 60.00 MHz)\n"
    )
    assert synth.parse_fmax(log) == {"clk": 71.25}


def test_harness_rejects_component_without_streams():
    with pytest.raises(ValueError, match="component to wrap has no i_stream member"):
        synth.TimingHarness(synth.TimingHarness(MACArray(2, 1)))


def test_unknown_family_is_rejected():
    with pytest.raises(ValueError, match="family must be one of"):
        synth.cell_stats("module m; endmodule", "m", "gowin")


# --------------------------------------------------------------------------------------------
# Full synthesis (YoWASP)
# --------------------------------------------------------------------------------------------


@pytest.mark.synth
@pytest.mark.parametrize("family", ["ice40", "ecp5"])
@pytest.mark.parametrize(("lanes", "rows"), [(5, 3), (32, 4)])
def test_ternary_array_infers_no_dsp(family, lanes, rows):
    # TERNARY_FLOW lets Yosys use DSP blocks: finding none proves no multiplier was inferred.
    cells = synth.cell_stats(mac_array_verilog(lanes, rows), "mac_array", family)
    assert DSP_CELLS[family] not in cells
    assert cells.get("SB_LUT4" if family == "ice40" else "LUT4", 0) > 0


@pytest.mark.synth
@pytest.mark.parametrize("family", ["ice40", "ecp5"])
def test_dsp_check_finds_baseline_multipliers(family):
    cells = synth.cell_stats(to_verilog(Int8MACArray(2, 1), "int8_array"), "int8_array", family)
    assert cells.get(DSP_CELLS[family], 0) >= 1


@pytest.mark.synth
@pytest.mark.parametrize("family", ["ice40", "ecp5"])
def test_baseline_flow_keeps_multipliers_in_luts(family):
    verilog = to_verilog(Int8MACArray(2, 1), "int8_array")
    cells = synth.cell_stats(verilog, "int8_array", family, flow=synth.BASELINE_FLOW)
    assert DSP_CELLS[family] not in cells


@pytest.mark.synth
@pytest.mark.parametrize("family", ["ice40", "ecp5"])
def test_pack_and_harness_place_and_route(family):
    dut = MACArray(4, 2)
    packed = synth.pack(to_verilog(MACArray(4, 2), "mac_array"), "mac_array", family)
    assert packed.fits and packed.logic_cells > 0
    result = synth.place_and_route(
        to_verilog(synth.TimingHarness(dut), "harness"), "harness", family, freq_mhz=50
    )
    (fmax,) = result.fmax_mhz.values()
    assert fmax > 10
    # The harness adds its registers, so it is bigger than the bare array.
    assert result.logic_cells > packed.logic_cells
