"""The device on a board: PLL, reset until lock, and :class:`trine.hw.device.Top` on the UART pins.

:class:`BoardTop` raises the board oscillator to the clock chosen by
:func:`trine.flow.boards.plan_clock`
with the FPGA's PLL (``SB_PLL40_PAD`` on iCE40, ``EHXPLLL`` on ECP5; no PLL when the oscillator
already has the requested frequency), holds the ``sync`` domain in reset until the PLL has
locked and :data:`POWER_ON_DELAY_S` has passed, and connects :class:`trine.hw.device.Top`'s two pins
to the UART resource wired to the board's USB-serial bridge.
"""

from __future__ import annotations

import math

from amaranth.hdl import ClockDomain, ClockSignal, Const, Elaboratable, Instance, Module, Signal
from amaranth.lib import io

from trine.contract.params import AcceleratorParams
from trine.flow.boards import ClockPlan
from trine.hw.reset import PowerOnReset

__all__ = ["POWER_ON_DELAY_S", "add_board_clock", "BoardTop"]

_MHZ = 1_000_000

#: Reset is held this long after the PLL locks: iCE40 block RAMs read as zero for about 3 us
#: after configuration (Amaranth's own iCE40 clock domain waits 15 us for the same reason).
POWER_ON_DELAY_S = 15e-6


def add_board_clock(m: Module, platform, plan: ClockPlan) -> None:
    """Add the ``sync`` domain to ``m``: the board oscillator through the PLL of ``plan``,
    in reset until the PLL has locked and :data:`POWER_ON_DELAY_S` has passed."""
    board = plan.board
    m.domains.sync = cd_sync = ClockDomain("sync")
    # Clocked by the PLL output but never reset: it is what makes the reset.
    m.domains.por = ClockDomain("por", reset_less=True, local=True)
    m.d.comb += ClockSignal("por").eq(cd_sync.clk)

    clk_in = platform.request(board.clock, 0, dir="-")
    locked = Signal()
    pll = plan.pll
    if pll is None:
        m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_in)
        m.d.comb += [cd_sync.clk.eq(clk_buf.i), locked.eq(1)]
    elif board.family == "ice40":
        # SB_PLL40_PAD takes the oscillator straight from its pad (the iCEBreaker's 12 MHz
        # pin 35 is a PLL input pad) and drives a global buffer.
        m.submodules.pll = Instance(
            "SB_PLL40_PAD",
            p_FEEDBACK_PATH="SIMPLE",
            p_DIVR=Const(pll.divr, 4), p_DIVF=Const(pll.divf, 7),
            p_DIVQ=Const(pll.divq, 3), p_FILTER_RANGE=Const(pll.filter_range, 3),
            io_PACKAGEPIN=clk_in.io,
            i_RESETB=Const(1), i_BYPASS=Const(0),
            o_PLLOUTGLOBAL=cd_sync.clk, o_LOCK=locked,
        )
    else:
        m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_in)
        m.submodules.pll = Instance(
            "EHXPLLL",
            # The loop-filter settings ecppll writes.
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            a_FREQUENCY_PIN_CLKI=f"{float(pll.f_in) / _MHZ:g}",
            a_FREQUENCY_PIN_CLKOP=f"{float(pll.f_out) / _MHZ:g}",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
            p_OUTDIVIDER_MUXB="DIVB", p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=pll.clki_div, p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=pll.clkop_div,
            p_CLKOP_CPHASE=pll.clkop_cphase, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            p_CLKFB_DIV=pll.clkfb_div,
            i_RST=Const(0), i_STDBY=Const(0), i_CLKI=clk_buf.i, i_CLKFB=cd_sync.clk,
            i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(1),
            i_PHASESTEP=Const(1), i_PHASELOADREG=Const(1), i_PLLWAKESYNC=Const(0),
            i_ENCLKOP=Const(0),
            o_CLKOP=cd_sync.clk, o_LOCK=locked,
        )
    # No clock constraint here: nextpnr derives the PLL output's from the oscillator's
    # (the platform constrains that pin), and Amaranth would name the net after one of
    # its aliases, which nextpnr may not find.

    m.submodules.power_on_reset = por = PowerOnReset(
        max(1, math.ceil(POWER_ON_DELAY_S * plan.achieved_hz)), domain="por")
    m.d.comb += [por.locked.eq(locked), cd_sync.rst.eq(por.rst)]


class BoardTop(Elaboratable):
    """The device on a board.

    Parameters
    ----------
    plan : ClockPlan
        From :func:`trine.flow.boards.plan_clock`: board, PLL settings, achieved clock and baud.
    params : trine.contract.params.AcceleratorParams
        The accelerator (:class:`trine.hw.device.Top`).

    Attributes
    ----------
    top : trine.hw.device.Top
        The device, built for the achieved clock.
    """

    def __init__(self, plan: ClockPlan, params: AcceleratorParams):
        from trine.hw.device import Top

        if not isinstance(plan, ClockPlan):
            raise TypeError(f"plan must be a trine.flow.boards.ClockPlan, not {plan!r}")
        self.plan = plan
        self.params = params
        self.top = Top(params, plan.achieved_hz, plan.baud)

    def elaborate(self, platform):
        m = Module()
        add_board_clock(m, platform, self.plan)
        uart = platform.request(self.plan.board.uart, 0, dir="-")
        m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.submodules.device = self.top
        m.d.comb += [self.top.rx.eq(rx_buf.i), tx_buf.o.eq(self.top.tx)]
        return m
