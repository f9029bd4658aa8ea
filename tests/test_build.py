"""Board builds: PLL parameter searches, clock plans, board tops, report.json, the multiplier
check, and openFPGALoader's errors.

Fast tests (default run): the PLL searches against icepll / ecppll outputs recorded from the
YoWASP tools, clock and baud checks, board tops elaborated for their platform (pins and PLL
parameters in the RTLIL), multiplier-cell counting, openFPGALoader failure messages.
``synth`` tests run the real builds: one small device per board family, the report checked
against the tool logs, and the baseline int8 array on a board, which the multiplier check
must refuse. They share the YoWASP cache of the user (``YOWASP_CACHE_DIR`` or
``~/.cache/YoWASP``) so that they do not recompile the tools.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

from trine.contract.params import SMALL
from trine.flow import boards
from trine.flow.boards import BOARDS, BoardError, get_board, plan_clock
from trine.flow.build import BuildError, multiplier_cells, suggest_clock_hz
from trine.flow.pll import PLLError, ecp5_pll, ice40_pll

MHZ = 1_000_000

# (requested MHz) -> (DIVR, DIVF, DIVQ, FILTER_RANGE, achieved MHz), from
# `yowasp-icepll -i 12 -o F` (icestorm, YoWASP 0.70 era).
ICEPLL_12MHZ = {
    16: (0, 84, 6, 1, 15.9375),
    20: (0, 52, 5, 1, 19.875),
    24: (0, 63, 5, 1, 24.0),
    25: (0, 66, 5, 1, 25.125),
    30: (0, 79, 5, 1, 30.0),
    33: (0, 87, 5, 1, 33.0),
    36: (0, 47, 4, 1, 36.0),
    40: (0, 52, 4, 1, 39.75),
    42: (0, 55, 4, 1, 42.0),
    45: (0, 59, 4, 1, 45.0),
    48: (0, 63, 4, 1, 48.0),
    50: (0, 66, 4, 1, 50.25),
    54: (0, 71, 4, 1, 54.0),
    60: (0, 79, 4, 1, 60.0),
    66: (0, 87, 4, 1, 66.0),
    72: (0, 47, 3, 1, 72.0),
    80: (0, 52, 3, 1, 79.5),
    100: (0, 66, 3, 1, 100.5),
    120: (0, 79, 3, 1, 120.0),
    17.3: (0, 45, 5, 1, 17.25),
}

# (requested MHz) -> (CLKI_DIV, CLKFB_DIV, CLKOP_DIV, achieved MHz, VCO MHz), from
# `yowasp-ecppll -i 25 -o F` (prjtrellis 1.4).
ECPPLL_25MHZ = {
    25: (1, 1, 24, 25.0, 600),
    30: (5, 6, 20, 30.0, 600),
    36: (7, 10, 17, Fraction(250, 7), Fraction(4250, 7)),
    40: (5, 8, 15, 40.0, 600),
    48: (8, 15, 13, 46.875, 609.375),
    50: (1, 2, 12, 50.0, 600),
    60: (5, 12, 10, 60.0, 600),
    62.5: (2, 5, 10, 62.5, 625),
    75: (1, 3, 8, 75.0, 600),
    80: (5, 16, 7, 80.0, 560),
    100: (1, 4, 6, 100.0, 600),
    120: (5, 24, 5, 120.0, 600),
    125: (1, 5, 5, 125.0, 625),
    150: (1, 6, 4, 150.0, 600),
    175: (1, 7, 3, 175.0, 525),
    200: (1, 8, 3, 200.0, 600),
    33.3: (3, 4, 18, Fraction(100, 3), 600),
    # An exact tie (VCO 571.4 or 628.6 MHz, both 28.6 from 600) that float32 decides.
    57: (7, 16, 11, Fraction(400, 7), Fraction(4400, 7)),
}
# CLKOP_CPHASE ecppll writes for the same requests (`-f pll.v`).
ECPPLL_CPHASE = {25: 11, 30: 9, 36: 8, 40: 7, 48: 6, 50: 5, 60: 4, 62.5: 4, 75: 4, 80: 3,
                 100: 2, 120: 2, 125: 2, 150: 2, 175: 1, 200: 1, 33.3: 9, 57: 5}


def _yowasp_cache() -> str:
    return os.environ.get("YOWASP_CACHE_DIR") or str(Path.home() / ".cache" / "YoWASP")


# --------------------------------------------------------------------------------------------
# PLL searches
# --------------------------------------------------------------------------------------------


def test_ice40_pll_12_to_48_mhz_is_the_icepll_classic():
    pll = ice40_pll(12 * MHZ, 48 * MHZ)
    assert (pll.divr, pll.divf, pll.divq, pll.filter_range) == (0, 63, 4, 1)
    assert pll.f_out == 48 * MHZ and pll.f_pfd == 12 * MHZ and pll.f_vco == 768 * MHZ


@pytest.mark.parametrize("mhz", sorted(ICEPLL_12MHZ))
def test_ice40_pll_matches_icepll(mhz):
    divr, divf, divq, filter_range, achieved = ICEPLL_12MHZ[mhz]
    pll = ice40_pll(12 * MHZ, mhz * MHZ)
    assert (pll.divr, pll.divf, pll.divq, pll.filter_range) == (divr, divf, divq, filter_range)
    assert pll.f_out == Fraction(achieved) * MHZ
    assert 533 * MHZ <= pll.f_vco <= 1066 * MHZ and 10 * MHZ <= pll.f_pfd <= 133 * MHZ


def test_ice40_pll_filter_range_follows_the_pfd():
    # 100 MHz in, DIVR=0 is above the PFD limit; the search must divide first.
    pll = ice40_pll(100 * MHZ, 50 * MHZ)
    assert 10 * MHZ <= pll.f_pfd <= 133 * MHZ
    pfd = pll.f_pfd / MHZ
    expected = (1 if pfd < 17 else 2 if pfd < 26 else 3 if pfd < 44 else 4 if pfd < 66
                else 5 if pfd < 101 else 6)
    assert pll.filter_range == expected
    assert pll.f_out == 50 * MHZ


@pytest.mark.parametrize("mhz", sorted(ECPPLL_25MHZ))
def test_ecp5_pll_matches_ecppll(mhz):
    clki, clkfb, clkop, achieved, vco = ECPPLL_25MHZ[mhz]
    pll = ecp5_pll(25 * MHZ, mhz * MHZ)
    assert (pll.clki_div, pll.clkfb_div, pll.clkop_div) == (clki, clkfb, clkop)
    assert pll.f_out == Fraction(achieved) * MHZ
    assert pll.f_vco == Fraction(vco) * MHZ
    assert pll.clkop_cphase == ECPPLL_CPHASE[mhz]


@pytest.mark.parametrize(("search", "f_in", "f_out", "message"), [
    (ice40_pll, 12 * MHZ, 12 * MHZ, r"iCE40 PLL output frequency must be in \[16, 275\] MHz, "
                                    r"not 12 MHz"),
    (ice40_pll, 12 * MHZ, 300 * MHZ, r"not 300 MHz"),
    (ice40_pll, 5 * MHZ, 48 * MHZ, r"iCE40 PLL input frequency must be in \[10, 133\] MHz"),
    (ecp5_pll, 25 * MHZ, 5 * MHZ, r"ECP5 PLL output frequency must be in \[10, 400\] MHz, "
                                  r"not 5 MHz"),
    (ecp5_pll, 25 * MHZ, 0, r"clock frequency must be positive, not 0"),
    (ecp5_pll, 25 * MHZ, float("nan"), r"clock frequency must be positive, not nan"),
    (ice40_pll, 12 * MHZ, "48e6", r"clock frequency must be a number of Hz, not '48e6'"),
    (ice40_pll, 12 * MHZ, True, r"clock frequency must be a number of Hz, not True"),
])
def test_pll_rejects_bad_frequencies(search, f_in, f_out, message):
    with pytest.raises(PLLError, match=message):
        search(f_in, f_out)


# --------------------------------------------------------------------------------------------
# Boards and clock plans
# --------------------------------------------------------------------------------------------


def test_every_board_default_clock_suits_its_default_baud():
    for board in BOARDS.values():
        plan = plan_clock(board, board.default_clock_hz, board.default_baud)
        assert plan.achieved_hz == board.default_clock_hz, board.name
        assert plan.baud_error <= 0.02
        assert board.default_baud <= board.max_baud


def test_oscillator_frequency_needs_no_pll():
    plan = plan_clock(get_board("icebreaker"), 12 * MHZ, 3_000_000)
    assert plan.pll is None and plan.achieved_hz == 12 * MHZ and plan.divisor == 4


def test_plan_uses_the_achieved_clock():
    # 36 MHz from 25 MHz is 35.714 MHz: the UART divisor comes from what the PLL makes.
    plan = plan_clock(get_board("ulx3s-85f"), 36 * MHZ, 1_000_000)
    assert plan.achieved_hz == 35_714_286 and plan.requested_hz == 36 * MHZ
    assert plan.divisor == 36


@pytest.mark.parametrize(("board", "clock", "baud", "message"), [
    ("icebreaker", 24 * MHZ, 7_000_000,
     r"baud 7000000 is above what the icebreaker's FT2232H channel B handles reliably"),
    ("ulx3s-85f", 50 * MHZ, 6_000_000, r"baud 6000000 is above .* FT231X"),
    ("icebreaker", 20 * MHZ, 3_000_000,
     r"clock 19\.875 MHz \(the PLL's closest to 20 MHz\) does not suit 3000000 baud: "
     r"divisor 7 gives 2\.83929e\+06 baud at 1\.9875e\+07 Hz, 5\.4% off"),
    ("icebreaker", 25 * MHZ, 3_000_000, r"25\.125 MHz .* 4\.7% off"),
    ("icebreaker", 16 * MHZ, 6_000_000, r"15\.9375 MHz .* too low for 6e\+06 baud: 2\.66 "
                                        r"cycles per bit, need at least 4"),
    ("icebreaker", 48 * MHZ, 0, r"baud must be a positive integer, not 0"),
    ("icebreaker", 48 * MHZ, 3e6, r"baud must be a positive integer, not 3000000\.0"),
])
def test_plan_rejects_incompatible_requests(board, clock, baud, message):
    with pytest.raises(BoardError, match=message):
        plan_clock(get_board(board), clock, baud)


def test_unknown_board_lists_the_known_ones():
    with pytest.raises(BoardError, match=r"board must be one of icebreaker, ulx3s-12f, .*not "
                                         r"'icestick'"):
        get_board("icestick")


def test_board_errors_are_value_errors():
    assert issubclass(BoardError, ValueError)


@pytest.mark.parametrize(("board", "fmax_mhz", "expected_hz"), [
    # 27.375 MHz = 12 * 73 / 32: 9 clocks per bit make 3.042 Mbaud, 1.4% fast, within 2%.
    ("icebreaker", 28.73, 27_375_000),
    # 25 * 8 / 3 = 66.667 MHz: 22 clocks per bit, 1% fast, within the UART's 2%.
    ("ulx3s-85f", 67.64, 66_666_667),
    ("icebreaker", 12.5, 12 * MHZ),
    ("icebreaker", 11.0, None),
])
def test_suggested_clock_is_reachable_and_suits_the_baud(board, fmax_mhz, expected_hz):
    plan = plan_clock(get_board(board), get_board(board).default_clock_hz, 3_000_000)
    suggested = suggest_clock_hz(plan, fmax_mhz * MHZ)
    assert suggested == expected_hz
    if suggested is not None:
        again = plan_clock(get_board(board), suggested, 3_000_000)
        assert again.achieved_hz == suggested


# --------------------------------------------------------------------------------------------
# Board tops, elaborated for their platforms
# --------------------------------------------------------------------------------------------


def _prepare(board_name: str, clock_hz: int, baud: int = 3_000_000):
    from trine.flow.board_top import BoardTop

    board = get_board(board_name)
    plan = plan_clock(board, clock_hz, baud)
    platform = board.platform_class()()
    return plan, platform.prepare(BoardTop(plan, SMALL), "top", emit_src=False).files


def _cell(rtlil: str, cell_type: str) -> str:
    match = re.search(rf"cell \\{cell_type} .*?\n  end\n", rtlil, re.DOTALL)
    assert match, f"no {cell_type} cell"
    return match.group(0)


def test_icebreaker_top_has_the_pll_and_the_ft2232h_uart_pins():
    _, files = _prepare("icebreaker", 48 * MHZ)
    pll = _cell(files["top.il"], "SB_PLL40_PAD")
    for line in ["parameter \\DIVR 4'0000", "parameter \\DIVF 7'0111111",
                 "parameter \\DIVQ 3'100", "parameter \\FILTER_RANGE 3'001",
                 'parameter \\FEEDBACK_PATH "SIMPLE"']:
        assert line in pll
    pcf = files["top.pcf"]
    # Pin 35: the 12 MHz oscillator; 6 / 9: FT2232H channel B TXD -> FPGA rx, FPGA tx -> RXD.
    for line in ["set_io clk12_0__io 35", "set_io uart_0__rx__io 6", "set_io uart_0__tx__io 9"]:
        assert line in pcf


def test_ulx3s_top_has_the_pll_and_the_ft231x_uart_pins():
    plan, files = _prepare("ulx3s-85f", 50 * MHZ)
    pll = _cell(files["top.il"], "EHXPLLL")
    assert "parameter \\CLKI_DIV 1\n" in pll and "parameter \\CLKFB_DIV 2\n" in pll
    assert "parameter \\CLKOP_DIV 12\n" in pll and 'parameter \\FEEDBK_PATH "CLKOP"' in pll
    lpf = files["top.lpf"]
    for line in ['LOCATE COMP "clk25_0__io" SITE "G2"', 'LOCATE COMP "uart_0__rx__io" SITE "M1"',
                 'LOCATE COMP "uart_0__tx__io" SITE "L4"']:
        assert line in lpf
    assert plan.divisor == 17


def test_oscillator_clock_top_has_no_pll():
    _, files = _prepare("icebreaker", 12 * MHZ)
    assert "SB_PLL40" not in files["top.il"]


def test_board_top_passes_device_parameter_errors_through():
    from trine.flow.board_top import BoardTop

    plan = plan_clock(get_board("icebreaker"), 24 * MHZ, 3_000_000)
    with pytest.raises(ValueError, match="Lane count must be >= 1, not 0"):
        BoardTop(plan, SMALL.replace(lanes=0))
    with pytest.raises(TypeError, match="plan must be a trine.flow.boards.ClockPlan"):
        BoardTop("icebreaker", SMALL)


# --------------------------------------------------------------------------------------------
# Multiplier cells and the synthesis overrides
# --------------------------------------------------------------------------------------------


def test_multiplier_cells_counts_generic_and_dsp_multipliers():
    cells = {"$mul": 2, "$add": 5, "SB_LUT4": 100, "SB_MAC16": 1, "MULT18X18D": 0,
             "$div": 1, "SB_DFF": 3}
    assert multiplier_cells(cells) == {"$mul": 2, "SB_MAC16": 1, "$div": 1}
    assert multiplier_cells({"$add": 4, "SB_CARRY": 9}) == {}


def test_platform_overrides_drop_the_bypass_and_keep_the_abc9_workaround():
    from trine.flow.synth import BASELINE_FLOW, TERNARY_FLOW

    ecp5 = TERNARY_FLOW.platform_overrides("ecp5", "top")
    assert ecp5["synth_opts"] == "-run :map_ram"
    # no_rw_check memories lose their collision bypass before block RAM mapping; abc9 runs
    # after splitnets
    assert ecp5["script_after_synth"].startswith(
        "setparam -set RD_COLLISION_X_MASK 1 t:$mem_v2 a:no_rw_check %i ")
    assert ("synth_ecp5 -top top -run map_ram:map_luts; splitnets; "
            "synth_ecp5 -top top -run map_luts:;") in ecp5["script_after_synth"]
    ice40 = TERNARY_FLOW.platform_overrides("ice40", "top", ("-spram",))
    assert ice40["synth_opts"] == "-dsp -spram -run :map_ram"
    assert ice40["script_after_synth"].startswith(
        "setparam -set RD_COLLISION_X_MASK 1 t:$mem_v2 a:no_rw_check %i ")
    assert "synth_ice40 -dsp -spram -top top -run map_ram:;" in ice40["script_after_synth"]
    assert "top_generic_stat.json" in ice40["script_after_read"]
    with pytest.raises(ValueError, match="only the default LUT mapping"):
        BASELINE_FLOW.platform_overrides("ice40", "top")


# --------------------------------------------------------------------------------------------
# openFPGALoader
# --------------------------------------------------------------------------------------------


# openFPGALoader 1.1.1's output, recorded on this project's machines.
LIBUSB_MISSING = ("/venv/lib/python3.11/site-packages/openfpgaloader/bin/openFPGALoader: error "
                  "while loading shared libraries: libusb-1.0.so.0: cannot open shared object "
                  "file: No such file or directory\n")
NO_DEVICE = ("empty\nunable to open ftdi device: -3 (device not found)\n"
             "Error: Failed to claim cable\n")


@pytest.mark.parametrize(("output", "message"), [
    (LIBUSB_MISSING, r"openFPGALoader cannot start: a USB library is missing .*libusb-1\.0\.so"
                     r"\.0.*sudo apt-get install libusb-1\.0-0 libftdi1-2"),
    (NO_DEVICE, r"no icebreaker found: openFPGALoader could not open its FT2232H channel B "
                r"\(unable to open ftdi device: -3 \(device not found\)\)\. Is the board "
                r"plugged in"),
    ("something odd\n", r"openFPGALoader failed on the icebreaker \(exit code 1\): "
                        r"something odd"),
])
def test_loader_failures_are_explained(output, message):
    from trine.flow.loader import explain_failure

    assert re.search(message, explain_failure(get_board("icebreaker"), output, 1))


def test_loader_command_lines():
    from trine.flow.loader import loader_command

    ice = loader_command(get_board("icebreaker"), "a.bin", loader="ofl")
    assert ice == ["ofl", "-b", "ice40_generic", "--write-sram", "a.bin"]
    ulx = loader_command(get_board("ulx3s-85f"), "a.bit", flash=True, loader="ofl")
    assert ulx == ["ofl", "-b", "ulx3s", "--write-flash", "a.bit"]


# --------------------------------------------------------------------------------------------
# Real builds (YoWASP)
# --------------------------------------------------------------------------------------------

BITSTREAM_SYNC = {"ice40": b"\x7e\xaa\x99\x7e", "ecp5": b"\xff\xff\xbd\xb3"}
LOGIC_CELL = {"ice40": "ICESTORM_LC", "ecp5": "TRELLIS_COMB"}


@pytest.fixture(scope="module")
def small_builds(tmp_path_factory):
    """One small device per board family, built once for the tests below."""
    from trine.flow.build import build

    reports = {}
    for name, clock_mhz in [("icebreaker", 24), ("ulx3s-85f", 50)]:
        out = tmp_path_factory.mktemp(name)
        reports[name] = build(name, out_dir=out, params=SMALL.size(), clock_mhz=clock_mhz,
                              yowasp_cache=_yowasp_cache())
    return reports


@pytest.mark.synth
@pytest.mark.parametrize("name", ["icebreaker", "ulx3s-85f"])
def test_small_build_report_matches_the_logs(small_builds, name):
    from trine.flow.synth import parse_fmax

    report = small_builds[name]
    out = Path(report.out_dir)
    saved = json.loads((out / "report.json").read_text())
    assert saved == json.loads(json.dumps(report.to_dict()))
    board = get_board(name)
    assert saved["board"] == name and saved["family"] == board.family
    # The board's other defaults stay (the iCEBreaker keeps its weights in SPRAM).
    assert saved["parameters"] == board.params.replace(**SMALL.size()).as_dict()

    # Fmax: nextpnr's *last* (post-route) figure in its log.
    log = (out / saved["logs"]["nextpnr"]).read_text()
    assert saved["fmax_mhz"] == pytest.approx(min(parse_fmax(log).values()), abs=0.01)
    post_place = re.findall(r"Max frequency for clock\s+'[^']+':\s+([0-9.]+) MHz", log)
    assert len(post_place) >= 2
    assert saved["timing_met"] == (saved["fmax_mhz"] >= saved["achieved_clock_mhz"])
    # The clock nextpnr timed is the one the PLL makes.
    constraint = json.loads((out / saved["logs"]["nextpnr_report"]).read_text())["fmax"]
    assert any(abs(c["constraint"] - saved["achieved_clock_mhz"]) < 0.01
               for c in constraint.values())

    # Logic cells: nextpnr's utilisation lines in its log.
    lc = LOGIC_CELL[board.family]
    used, available = re.findall(rf"{lc}:\s+(\d+)/\s*(\d+)", log)[-1]
    assert saved["logic_cells"] == [int(used), int(available)]
    assert 0 < saved["lut4"] <= saved["logic_cells"][0] and saved["ff"] > 0

    # No DSP, no multiplier, one PLL.
    assert saved["dsp"][0] == 0 and saved["multipliers"] == {}
    pll_cell = "ICESTORM_PLL" if board.family == "ice40" else "EHXPLLL"
    assert saved["utilization"][pll_cell][0] == 1

    bitstream = (out / saved["bitstream"]).read_bytes()
    assert len(bitstream) > 10_000 and BITSTREAM_SYNC[board.family] in bitstream[:1024]
    assert "module top" in (out / saved["verilog"]).read_text()
    assert saved["tool_versions"]["yosys"].startswith("Yosys 0.")


def _harness_on_board(plan, component):
    """``component`` (a stream component) in a timing harness, on a board's UART tx pin."""
    from amaranth.hdl import Elaboratable, Module
    from amaranth.lib import io

    from trine.flow.board_top import add_board_clock
    from trine.flow.synth import TimingHarness

    class Design(Elaboratable):
        def elaborate(self, platform):
            m = Module()
            add_board_clock(m, platform, plan)
            m.submodules.harness = harness = TimingHarness(component)
            uart = platform.request(plan.board.uart, 0, dir="-")
            m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
            m.d.comb += tx_buf.o.eq(harness.o)
            return m

    return Design()


@pytest.mark.synth
@pytest.mark.parametrize(("name", "dsp_cell"), [("icebreaker", "SB_MAC16"),
                                                ("ulx3s-85f", "MULT18X18D")])
def test_build_refuses_a_design_with_multipliers(tmp_path, name, dsp_cell):
    """The multiplier check can fail: the int8 baseline goes through the same build."""
    from trine.flow.build import run_build
    from trine.hw.baseline import Int8MACArray

    plan = plan_clock(get_board(name), get_board(name).default_clock_hz, 3_000_000)
    with pytest.raises(BuildError, match="the MAC path must be multiply-free") as info:
        run_build(_harness_on_board(plan, Int8MACArray(2, 1)), plan, out_dir=tmp_path,
                  yowasp_cache=_yowasp_cache(), allow_timing_fail=True)
    found = info.value.report["multipliers"]
    assert found.get("generic $mul", 0) >= 2 and found.get(dsp_cell, 0) >= 2


@pytest.mark.synth
def test_missed_timing_raises_with_the_numbers(tmp_path):
    """A ternary array at 120 MHz on the UP5K (it reaches about 65): the error names the
    post-route Fmax and a clock that would do; report.json says timing was not met."""
    from trine.flow.build import run_build
    from trine.hw.mac_array import MACArray

    plan = plan_clock(get_board("icebreaker"), 120 * MHZ, 3_000_000)
    with pytest.raises(BuildError) as info:
        run_build(_harness_on_board(plan, MACArray(4, 2)), plan, out_dir=tmp_path,
                  yowasp_cache=_yowasp_cache())
    message = str(info.value)
    assert re.search(r"timing not met: Fmax after routing [0-9.]+ MHz < clock 120 MHz", message)
    hint = re.search(r"Rebuild with --clock-mhz ([0-9.]+) \(fits 3000000 baud\)", message)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["timing_met"] is False and saved["fmax_mhz"] < 120
    assert hint and float(hint.group(1)) <= saved["fmax_mhz"]
    assert (tmp_path / "top.bin").is_file()


def test_boards_module_imports_without_amaranth():
    code = ("import sys, trine.flow.boards, trine.flow.loader; "
            "sys.exit(1 if any(m.startswith('amaranth') for m in sys.modules) else 0)")
    import sys

    assert subprocess.run([sys.executable, "-c", code],
                          cwd=Path(__file__).resolve().parent.parent).returncode == 0
    assert boards.get_board("icebreaker").params.lanes == 8


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"clock_mhz": "48"}, r"clock_mhz must be a number, not '48'"),
    ({"seed": -2}, r"seed must be a non-negative integer, not -2"),
    ({"baud": 7_000_000}, r"baud 7000000 is above"),
])
def test_build_checks_its_arguments_before_any_tool_runs(tmp_path, kwargs, message):
    from trine.flow.build import build

    with pytest.raises(BoardError, match=message):
        build("icebreaker", out_dir=tmp_path / "b", **kwargs)
    assert not (tmp_path / "b").exists()



@pytest.mark.synth
@pytest.mark.parametrize("mhz", [16, 23, 31.5, 48, 57, 99.9])
def test_pll_searches_agree_with_the_tools_themselves(tmp_path, mhz):
    """The recorded tables above, re-derived live from yowasp-icepll and yowasp-ecppll."""
    from trine.flow.synth import ToolNotFoundError, find_tool

    try:
        icepll, ecppll = find_tool("yowasp-icepll"), find_tool("yowasp-ecppll")
    except ToolNotFoundError as exc:
        pytest.skip(str(exc))
    env = {**os.environ, "YOWASP_CACHE_DIR": _yowasp_cache()}
    out = subprocess.run([icepll, "-i", "12", "-o", str(mhz)], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=300).stdout
    expected = [int(re.search(rf"{key}:\s+(\d+)", out).group(1))
                for key in ("DIVR", "DIVF", "DIVQ", "FILTER_RANGE")]
    pll = ice40_pll(12 * MHZ, mhz * MHZ)
    assert [pll.divr, pll.divf, pll.divq, pll.filter_range] == expected

    out = subprocess.run([ecppll, "-i", "25", "-o", str(mhz)], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=300).stdout
    expected = [int(re.search(rf"{key}:\s+(\d+)", out).group(1))
                for key in ("Refclk divisor", "Feedback divisor", "clkout0 divisor")]
    pll = ecp5_pll(25 * MHZ, mhz * MHZ)
    assert [pll.clki_div, pll.clkfb_div, pll.clkop_div] == expected
