"""PLL settings for the boards' FPGAs, found the way ``icepll`` and ``ecppll`` find them.

The searches (:func:`ice40_pll`, :func:`ecp5_pll`) are pure Python (and NumPy) and choose what
the tools choose: the closest achievable frequency, first found in their search order
(``ecppll`` breaks ties by the VCO nearest 600 MHz). They compare in the tools' own arithmetic
(double, float32), because exact ties are common and rounding decides them; the achieved
frequency is then computed exactly from the dividers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from trine.contract.errors import TrineError

__all__ = [
    "PLLError",
    "ICE40PLL",
    "ice40_pll",
    "ECP5PLL",
    "ecp5_pll",
    "as_hz",
    "achievable_clocks",
]


class PLLError(TrineError, ValueError):
    """A frequency the PLL cannot take or make."""



_MHZ = 1_000_000


def as_hz(name: str, value) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float | Fraction):
        raise PLLError(f"{name} must be a number of Hz, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise PLLError(f"{name} must be positive, not {value!r}")
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
    PLLError
        If either frequency is outside what the PLL accepts.
    """
    f_in, f_req = as_hz("PLL input frequency", f_in_hz), as_hz("clock frequency", f_out_hz)
    for name, f, (lo, hi) in [("input", f_in, ICE40_PLL_IN), ("output", f_req, ICE40_PLL_OUT)]:
        if not lo * _MHZ <= f <= hi * _MHZ:
            raise PLLError(f"iCE40 PLL {name} frequency must be in [{lo}, {hi}] MHz, "
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
        raise PLLError(f"no iCE40 PLL setting reaches {float(f_req) / _MHZ:g} MHz from "
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
    PLLError
        If either frequency is outside what the PLL accepts.
    """
    f_in, f_req = as_hz("PLL input frequency", f_in_hz), as_hz("clock frequency", f_out_hz)
    for name, f, (lo, hi) in [("input", f_in, ECP5_PLL_IN), ("output", f_req, ECP5_PLL_OUT)]:
        if not lo * _MHZ <= f <= hi * _MHZ:
            raise PLLError(f"ECP5 PLL {name} frequency must be in [{lo}, {hi}] MHz, "
                             f"not {float(f) / _MHZ:g} MHz")
    clki_div, clkfb_div, clkop_div = _ecppll_search(float(f_in) / _MHZ, float(f_req) / _MHZ)
    if clki_div is None:
        raise PLLError(f"no ECP5 PLL setting reaches {float(f_req) / _MHZ:g} MHz from "
                         f"{float(f_in) / _MHZ:g} MHz")
    f_out = f_in / clki_div * clkfb_div
    return ECP5PLL(clki_div, clkfb_div, clkop_div, f_in, f_out)




def achievable_clocks(family: str, osc_hz: int) -> set[int]:
    """Every clock (Hz, rounded) a ``family`` PLL can make from an ``osc_hz`` oscillator, and
    the oscillator itself."""
    f_in = Fraction(osc_hz)
    mhz = _MHZ
    found = {osc_hz}
    if family == "ice40":
        lo, hi = ICE40_PLL_OUT
        for divr in range(16):
            pfd = f_in / (divr + 1)
            if not ICE40_PFD[0] * mhz <= pfd <= ICE40_PFD[1] * mhz:
                continue
            for divf in range(128):
                vco = pfd * (divf + 1)
                if not ICE40_VCO[0] * mhz <= vco <= ICE40_VCO[1] * mhz:
                    continue
                for divq in range(1, 7):
                    f = vco / 2**divq
                    if lo * mhz <= f <= hi * mhz:
                        found.add(round(f))
    else:
        lo, hi = ECP5_PLL_OUT
        for clki_div in range(1, 129):
            pfd = f_in / clki_div
            if not ECP5_PFD[0] * mhz <= pfd <= ECP5_PFD[1] * mhz:
                continue
            for clkfb_div in range(1, 81):
                f = pfd * clkfb_div
                if not lo * mhz <= f <= hi * mhz:
                    continue
                d_lo = max(1, math.ceil(ECP5_VCO[0] * mhz / f))
                if d_lo <= min(128, math.floor(ECP5_VCO[1] * mhz / f)):
                    found.add(round(f))
    return found
