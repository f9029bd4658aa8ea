"""Boards the accelerator is built for, their PLLs, and the board top around
:class:`trine.hw.device.Top`.

A :class:`Board` names an ``amaranth-boards`` platform, its oscillator, the UART resource wired
to the USB-serial bridge, what that bridge can do, and the default accelerator parameters.
Adding a board is one entry in :data:`BOARDS`.

:func:`plan_clock` picks the PLL settings for a requested clock and checks the baud rate
against the clock actually achieved; :class:`trine.flow.board_top.BoardTop` turns the plan into
gateware. This module imports neither Amaranth nor amaranth-boards, so the command line can
list the boards cheaply.

The PLL parameter searches (:func:`ice40_pll`, :func:`ecp5_pll`) are pure Python (and NumPy)
and choose what ``icepll`` and ``ecppll`` choose: the closest achievable frequency, first found
in their search order (``ecppll`` breaks ties by the VCO nearest 600 MHz). They compare in the
tools' own arithmetic (double, float32), because exact ties are common and rounding decides
them; the achieved frequency is then computed exactly from the dividers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from types import MappingProxyType

import numpy as np

__all__ = [
    "BoardError",
    "Board",
    "BOARDS",
    "get_board",
    "SMALL_PARAMS",
    "UP5K_PARAMS",
    "ECP5_85F_PARAMS",
    "ICE40PLL",
    "ice40_pll",
    "ECP5PLL",
    "ecp5_pll",
    "ClockPlan",
    "plan_clock",
]


class BoardError(ValueError):
    """A board, clock or baud request that cannot be met."""


#: A device small enough for any supported board, for tests and first builds: 2 lanes x 1 row,
#: 256 weight words, layers up to 32 wide.
SMALL_PARAMS = MappingProxyType({
    "lanes": 2, "rows": 1, "weight_words": 256, "bias_depth": 64, "max_layers": 4,
    "max_width": 32, "max_batch": 1,
})

#: Accelerator parameters for an iCE40UP5K (iCEBreaker), the iCEBreaker's default: 8 lanes x
#: 5 rows, weights in the four SPRAM blocks (16K words of 40 trits; ``weight_memory="spram"``
#: instantiates them, no Yosys flag needed), biases, layer table, activation buffers, decoder
#: ROMs and the link's payload in 24 of the 30 block RAMs. Holds a 40-256-256-10 MLP (1988
#: weight words, 530 biases) at batch 4. Measured as a whole board build (``trine build --board
#: icebreaker``: PLL, UART, Yosys 0.70, nextpnr-ice40 0.11, 48 MHz requested): 3641 of 5280
#: logic cells, 24 of 30 EBR, 4 of 4 SPRAM, 0 DSP, Fmax after routing 52.4 / 50.8 / 50.9 MHz
#: (seeds 1-3). 8 x 5 is the largest array that fits (16 x 5 does not: see trine.hw.core).
UP5K_PARAMS: Mapping = MappingProxyType({
    "lanes": 8, "rows": 5, "weight_words": 16384, "bias_depth": 1024, "max_layers": 32,
    "max_width": 256, "max_batch": 4, "decoder": "rom", "weight_memory": "spram",
})
#: Accelerator parameters for an LFE5U-85F (ULX3S-85F), its default: weights in block RAM,
#: 52 bytes (256 trits) per word, so a 32 x 8 array runs at one beat per clock (peak 256 MACs
#: per cycle at batch 1). Measured as a whole board build (``trine build --board ulx3s-85f``,
#: 50 MHz requested, seed 1): 9035 of 83640 logic cells, 91 of 208 DP16KD, 0 DSP, Fmax after
#: routing 72.2 MHz.
ECP5_85F_PARAMS: Mapping = MappingProxyType({
    "lanes": 32, "rows": 8, "weight_words": 1024, "bias_depth": 1024, "max_layers": 32,
    "max_width": 256, "max_batch": 16, "decoder": "rom", "weight_memory": "generic",
})


@dataclass(frozen=True)
class Board:
    """One supported board.

    Parameters
    ----------
    name : str
        Name on the command line (``trine build --board NAME``).
    platform : str
        ``module:Class`` of the ``amaranth-boards`` platform (imported only when building).
    family : str
        ``"ice40"`` or ``"ecp5"``.
    device : str
        FPGA part, for reports.
    osc_hz : int
        Frequency of the board oscillator that feeds the PLL.
    clock : str
        Platform resource name of that oscillator.
    uart : str
        Platform resource (number 0) wired to the USB-serial bridge.
    bridge : str
        The bridge chip, for messages.
    max_baud : int
        Highest baud rate the bridge (and its driver) handles reliably.
    default_baud, default_clock_hz : int
        What ``trine build`` uses when not told otherwise; compatible with each other.
    params : Mapping
        Default accelerator parameters (``trine.hw.device.Top`` keywords other than clock and baud).
    synth_opts : tuple of str
        Extra ``synth_ice40`` / ``synth_ecp5`` options.
    bitstream_suffix : str
        ``.bin`` (iCE40) or ``.bit`` (ECP5).
    loader_board : str
        ``openFPGALoader -b`` name.
    """

    name: str
    platform: str
    family: str
    device: str
    osc_hz: int
    clock: str
    uart: str
    bridge: str
    max_baud: int
    default_baud: int
    default_clock_hz: int
    params: Mapping = field(repr=False)
    synth_opts: tuple[str, ...] = ()
    bitstream_suffix: str = ".bin"
    loader_board: str = ""

    def platform_class(self):
        """The ``amaranth-boards`` platform class (imports Amaranth and amaranth-boards)."""
        import importlib

        module, _, cls = self.platform.partition(":")
        try:
            return getattr(importlib.import_module(module), cls)
        except ImportError as exc:
            raise BoardError(f"board {self.name} needs amaranth-boards: pip install -e "
                             f"'.[synth]' ({exc})") from exc


def _ulx3s(size: str) -> Board:
    return Board(
        name=f"ulx3s-{size.lower()}", platform=f"amaranth_boards.ulx3s:ULX3S_{size}_Platform",
        family="ecp5", device=f"LFE5U-{size}-6BG381C", osc_hz=25_000_000, clock="clk25",
        uart="uart", bridge="FT231X", max_baud=3_000_000, default_baud=3_000_000,
        default_clock_hz=50_000_000, params=ECP5_85F_PARAMS if size == "85F" else SMALL_PARAMS,
        bitstream_suffix=".bit", loader_board="ulx3s",
    )


#: Every supported board by name.
BOARDS: Mapping[str, Board] = MappingProxyType({b.name: b for b in [
    Board(
        name="icebreaker", platform="amaranth_boards.icebreaker:ICEBreakerPlatform",
        family="ice40", device="iCE40UP5K-SG48", osc_hz=12_000_000, clock="clk12",
        uart="uart", bridge="FT2232H channel B", max_baud=6_000_000, default_baud=3_000_000,
        default_clock_hz=48_000_000, params=UP5K_PARAMS,
        # -spram: memories that suit the UltraPlus's 4 x 32 KiB SPRAM may go there.
        synth_opts=("-spram",), bitstream_suffix=".bin", loader_board="ice40_generic",
    ),
    _ulx3s("12F"),
    _ulx3s("25F"),
    _ulx3s("45F"),
    _ulx3s("85F"),
]})


def get_board(name: str) -> Board:
    """The board called ``name``.

    Raises
    ------
    BoardError
        If there is no such board; the message lists the known ones.
    """
    try:
        return BOARDS[name]
    except (KeyError, TypeError):
        raise BoardError(f"board must be one of {', '.join(BOARDS)}, not {name!r}") from None


# ---------------------------------------------------------------------------------------------
# PLL parameter searches
# ---------------------------------------------------------------------------------------------

_MHZ = 1_000_000


def _as_hz(name: str, value) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float | Fraction):
        raise BoardError(f"{name} must be a number of Hz, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise BoardError(f"{name} must be positive, not {value!r}")
    return Fraction(value)


@dataclass(frozen=True)
class ICE40PLL:
    """iCE40 PLL settings in SIMPLE feedback mode, as ``icepll`` prints them.

    ``f_out = f_in / (DIVR + 1) * (DIVF + 1) / 2**DIVQ``; PFD ``f_in / (DIVR + 1)``; VCO
    ``PFD * (DIVF + 1)``.
    """

    divr: int
    divf: int
    divq: int
    filter_range: int
    f_in: Fraction
    f_out: Fraction

    @property
    def f_pfd(self) -> Fraction:
        return self.f_in / (self.divr + 1)

    @property
    def f_vco(self) -> Fraction:
        return self.f_pfd * (self.divf + 1)


#: iCE40 PLL limits (MHz), as checked by icepll: input, output, PFD, VCO.
ICE40_PLL_IN = (10, 133)
ICE40_PLL_OUT = (16, 275)
ICE40_PFD = (10, 133)
ICE40_VCO = (533, 1066)


def ice40_pll(f_in_hz, f_out_hz) -> ICE40PLL:
    """The iCE40 PLL settings closest to ``f_out_hz`` from ``f_in_hz`` (icepll's search).

    Raises
    ------
    BoardError
        If either frequency is outside what the PLL accepts.
    """
    f_in, f_req = _as_hz("PLL input frequency", f_in_hz), _as_hz("clock frequency", f_out_hz)
    for name, f, (lo, hi) in [("input", f_in, ICE40_PLL_IN), ("output", f_req, ICE40_PLL_OUT)]:
        if not lo * _MHZ <= f <= hi * _MHZ:
            raise BoardError(f"iCE40 PLL {name} frequency must be in [{lo}, {hi}] MHz, "
                             f"not {float(f) / _MHZ:g} MHz")
    # icepll's loop, in its double-precision MHz arithmetic, so that near-ties fall the same
    # way; the achieved frequency is then computed exactly from the dividers.
    f_in_mhz, f_req_mhz = float(f_in) / _MHZ, float(f_req) / _MHZ
    best = None
    for divr in range(16):
        pfd = f_in_mhz / (divr + 1)
        if not ICE40_PFD[0] <= pfd <= ICE40_PFD[1]:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not ICE40_VCO[0] <= vco <= ICE40_VCO[1]:
                continue
            for divq in range(1, 7):
                f_out = vco * 2.0**-divq
                # Strictly better only: the first found wins, as in icepll.
                if best is None or abs(f_out - f_req_mhz) < abs(best[0] - f_req_mhz):
                    best = (f_out, divr, divf, divq)
    if best is None:
        raise BoardError(f"no iCE40 PLL setting reaches {float(f_req) / _MHZ:g} MHz from "
                         f"{float(f_in) / _MHZ:g} MHz")
    _, divr, divf, divq = best
    pfd_mhz = f_in_mhz / (divr + 1)
    filter_range = (1 if pfd_mhz < 17 else 2 if pfd_mhz < 26 else 3 if pfd_mhz < 44 else
                    4 if pfd_mhz < 66 else 5 if pfd_mhz < 101 else 6)
    return ICE40PLL(divr, divf, divq, filter_range, f_in,
                    f_in / (divr + 1) * (divf + 1) / 2**divq)


@dataclass(frozen=True)
class ECP5PLL:
    """ECP5 ``EHXPLLL`` settings with CLKOP fed back, as ``ecppll`` prints them.

    ``f_out = f_in / CLKI_DIV * CLKFB_DIV``; VCO ``f_out * CLKOP_DIV``.
    """

    clki_div: int
    clkfb_div: int
    clkop_div: int
    f_in: Fraction
    f_out: Fraction

    @property
    def f_vco(self) -> Fraction:
        return self.f_out * self.clkop_div

    @property
    def clkop_cphase(self) -> int:
        """Coarse phase of CLKOP, as ecppll sets it: half an output period (180 degrees,
        "Lattice seems to do this") in VCO cycles, computed in its float32 arithmetic and
        truncated (so ``CLKOP_DIV = 12`` gives 5, ``8`` gives 4). With CLKOP fed back, the
        phase only matters relative to other outputs, and there are none here."""
        fout = float(np.float32(self.f_out / _MHZ))
        fvco = float(np.float32(np.float32(self.f_in / _MHZ) / np.float32(self.clki_div)
                                * np.float32(self.clkfb_div) * np.float32(self.clkop_div)))
        ns_phase = float(np.float32(1 / (fout * 1e6) * 0.5))
        return int(ns_phase * (fvco * 1e6))


#: ECP5 PLL limits (MHz), from ecppll: input, output, PFD, VCO.
ECP5_PLL_IN = (8, 400)
ECP5_PLL_OUT = (10, 400)
ECP5_PFD = (Fraction(3125, 1000), 400)
ECP5_VCO = (400, 800)


def _ecppll_search(f_in_mhz: float, f_out_mhz: float) -> tuple:
    """ecppll's search, in its float32 arithmetic: (CLKI_DIV, CLKFB_DIV, CLKOP_DIV).

    ecppll scans CLKI_DIV, CLKFB_DIV and CLKOP_DIV upwards and keeps a setting if its output
    error is smaller, or equal with a VCO nearer 600 MHz. So the winner is, among the settings
    of least error, the first of those whose VCO is nearest 600 MHz. Exact ties are common
    (the same output from different CLKOP_DIV), and float32 rounding decides them: mirroring
    it keeps the choice identical to the tool's.
    """
    f32 = np.float32
    inp, out = f32(f_in_mhz), f32(f_out_mhz)
    clki = np.arange(1, 129, dtype=np.float32)
    pfd = inp / clki
    # Only the CLKI_DIV whose PFD is in range take part (a handful): keeps the grid small.
    clki = clki[(pfd >= f32(ECP5_PFD[0])) & (pfd <= f32(ECP5_PFD[1]))]
    if clki.size == 0:
        return None, None, None
    pfd = inp / clki
    fb = np.arange(1, 81, dtype=np.float32)
    od = np.arange(1, 129, dtype=np.float32)
    vco = (pfd[:, None, None] * fb[None, :, None]) * od[None, None, :]
    fout = vco / od[None, None, :]
    valid = (vco >= f32(ECP5_VCO[0])) & (vco <= f32(ECP5_VCO[1]))
    if not valid.any():
        return None, None, None
    error = np.where(valid, np.abs(fout - out), np.float32(np.inf))
    best = error == error.min()
    distance = np.where(best, np.abs(vco - f32(600)), np.float32(np.inf))
    index = int(np.argmax(distance == distance.min()))  # first in scan order
    i, j, k = np.unravel_index(index, vco.shape)
    return int(clki[i]), int(j) + 1, int(k) + 1


def ecp5_pll(f_in_hz, f_out_hz) -> ECP5PLL:
    """The ECP5 PLL settings closest to ``f_out_hz`` from ``f_in_hz`` (ecppll's search).

    Among equally close settings, the one whose VCO is nearest 600 MHz wins, then the first
    found (CLKI_DIV, then CLKFB_DIV, then CLKOP_DIV ascending), as ecppll decides in float32
    (see ``_ecppll_search``); the achieved frequency is exact.

    Raises
    ------
    BoardError
        If either frequency is outside what the PLL accepts.
    """
    f_in, f_req = _as_hz("PLL input frequency", f_in_hz), _as_hz("clock frequency", f_out_hz)
    for name, f, (lo, hi) in [("input", f_in, ECP5_PLL_IN), ("output", f_req, ECP5_PLL_OUT)]:
        if not lo * _MHZ <= f <= hi * _MHZ:
            raise BoardError(f"ECP5 PLL {name} frequency must be in [{lo}, {hi}] MHz, "
                             f"not {float(f) / _MHZ:g} MHz")
    clki_div, clkfb_div, clkop_div = _ecppll_search(float(f_in) / _MHZ, float(f_req) / _MHZ)
    if clki_div is None:
        raise BoardError(f"no ECP5 PLL setting reaches {float(f_req) / _MHZ:g} MHz from "
                         f"{float(f_in) / _MHZ:g} MHz")
    f_out = f_in / clki_div * clkfb_div
    return ECP5PLL(clki_div, clkfb_div, clkop_div, f_in, f_out)


@dataclass(frozen=True)
class ClockPlan:
    """How a board reaches its clock: the PLL (``None`` when the oscillator is used as is),
    the achieved frequency in Hz (an integer: the device reports it), and the UART divisor."""

    board: Board
    requested_hz: int
    achieved_hz: int
    baud: int
    divisor: int
    pll: ICE40PLL | ECP5PLL | None

    @property
    def baud_error(self) -> float:
        """Relative error of the achieved baud rate (``achieved_hz / divisor``)."""
        return abs(self.achieved_hz / self.divisor - self.baud) / self.baud


def plan_clock(board: Board, clock_hz, baud) -> ClockPlan:
    """Choose the PLL for ``clock_hz`` on ``board`` and check ``baud`` against the result.

    Raises
    ------
    BoardError
        If the PLL cannot reach the frequency, the baud rate exceeds what the board's
        USB-serial bridge handles, or the achieved clock is not compatible with the baud rate
        (``trine.hw.uart.baud_divisor``: at least 4 clocks per bit, within 2% of an integer).
    """
    requested = _as_hz("clock frequency", clock_hz)
    if isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0:
        raise BoardError(f"baud must be a positive integer, not {baud!r}")
    if baud > board.max_baud:
        raise BoardError(f"baud {baud} is above what the {board.name}'s {board.bridge} "
                         f"handles reliably ({board.max_baud})")
    if requested == board.osc_hz:
        pll, achieved = None, Fraction(board.osc_hz)
    else:
        search = ice40_pll if board.family == "ice40" else ecp5_pll
        try:
            pll = search(board.osc_hz, requested)
        except BoardError as exc:
            raise BoardError(f"{exc} (or exactly {board.osc_hz / _MHZ:g} MHz, the "
                             f"{board.name}'s oscillator without the PLL)") from None
        achieved = pll.f_out
    achieved_hz = round(achieved)
    from trine.hw.uart import baud_divisor

    try:
        divisor = baud_divisor(achieved_hz, baud)
    except ValueError as exc:
        raise BoardError(f"clock {achieved_hz / _MHZ:g} MHz (the PLL's closest to "
                         f"{float(requested) / _MHZ:g} MHz) does not suit {baud} baud: {exc}; "
                         f"pick a clock that is a multiple of the baud rate") from None
    return ClockPlan(board, round(requested), achieved_hz, baud, divisor, pll)
