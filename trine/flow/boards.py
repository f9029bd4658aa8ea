"""Boards the accelerator is built for, their PLLs, and the board top around
:class:`trine.hw.device.Top`.

A :class:`Board` names an ``amaranth-boards`` platform, its oscillator, the UART resource wired
to the USB-serial bridge, what that bridge can do, and the default accelerator parameters.
Adding a board is one entry in :data:`BOARDS`.

:func:`plan_clock` picks the PLL settings for a requested clock and checks the baud rate
against the clock actually achieved; :class:`trine.flow.board_top.BoardTop` turns the plan into
gateware. This module imports neither Amaranth nor amaranth-boards, so the command line can
list the boards cheaply.

The PLL parameter searches are :mod:`trine.flow.pll`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from types import MappingProxyType

from trine.contract.errors import TrineError
from trine.contract.params import ECP5_85F, SMALL, UP5K, AcceleratorParams
from trine.contract.protocol import baud_divisor
from trine.flow.pll import ECP5PLL, ICE40PLL, PLLError, as_hz, ecp5_pll, ice40_pll

_MHZ = 1_000_000

__all__ = [
    "BoardError",
    "Board",
    "BOARDS",
    "get_board",
    "ClockPlan",
    "plan_clock",
]


class BoardError(TrineError, ValueError):
    """A board, clock or baud request that cannot be met."""


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
    params : trine.contract.params.AcceleratorParams
        The board's default accelerator.
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
    params: AcceleratorParams = field(repr=False)
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
        # The 85F's device routes at 94-100 MHz over nextpnr seeds 1-3 (notes_ecp5_clock.md):
        # 87.5 MHz (3 Mbaud = clock / 29, 0.6% off) leaves at least 7% on each. The smaller
        # parts' small device was not rebuilt since and keeps 50 MHz.
        default_clock_hz=87_500_000 if size == "85F" else 50_000_000,
        params=ECP5_85F if size == "85F" else SMALL,
        bitstream_suffix=".bit", loader_board="ulx3s",
    )


#: Every supported board by name.
BOARDS: Mapping[str, Board] = MappingProxyType({b.name: b for b in [
    Board(
        name="icebreaker", platform="amaranth_boards.icebreaker:ICEBreakerPlatform",
        family="ice40", device="iCE40UP5K-SG48", osc_hz=12_000_000, clock="clk12",
        uart="uart", bridge="FT2232H channel B", max_baud=6_000_000, default_baud=3_000_000,
        default_clock_hz=39_000_000, params=UP5K,
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
        (``trine.contract.protocol.baud_divisor``: at least 4 clocks per bit, within 2% of an
        integer).
    """
    try:
        requested = as_hz("clock frequency", clock_hz)
    except PLLError as exc:
        raise BoardError(str(exc)) from None
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
        except PLLError as exc:
            raise BoardError(f"{exc} (or exactly {board.osc_hz / _MHZ:g} MHz, the "
                             f"{board.name}'s oscillator without the PLL)") from None
        achieved = pll.f_out
    achieved_hz = round(achieved)
    try:
        divisor = baud_divisor(achieved_hz, baud)
    except ValueError as exc:
        raise BoardError(f"clock {achieved_hz / _MHZ:g} MHz (the PLL's closest to "
                         f"{float(requested) / _MHZ:g} MHz) does not suit {baud} baud: {exc}; "
                         f"pick a clock that is a multiple of the baud rate") from None
    return ClockPlan(board, round(requested), achieved_hz, baud, divisor, pll)
