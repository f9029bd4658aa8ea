"""The reset a board's clock needs: held until the PLL has locked and a delay has passed."""

from __future__ import annotations

from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib.cdc import FFSynchronizer

__all__ = ["PowerOnReset"]


class PowerOnReset(Elaboratable):
    """Reset until the PLL has locked and ``delay`` more clocks have passed.

    ``locked`` (asynchronous to the clock) goes through a two-flip-flop synchroniser; ``rst``
    is high from configuration on, falls ``delay + 3`` clocks after ``locked`` rises (two to
    synchronise, ``delay`` to count, one for the output register), and rises again two to
    three clocks after ``locked`` falls. ``rst`` comes straight from a flip-flop: it reaches
    every flip-flop of the device, and a comparator in front of that net would put its LUTs
    on the device's slowest paths.

    ``domain`` must be a domain that is never reset (it makes the reset).
    """

    def __init__(self, delay: int, *, domain: str = "sync"):
        if isinstance(delay, bool) or not isinstance(delay, int) or delay < 1:
            raise ValueError(f"delay must be a positive number of clocks, not {delay!r}")
        self.delay = delay
        self.domain = domain
        self.locked = Signal()
        self.rst = Signal(init=1)

    def elaborate(self, platform):
        m = Module()
        locked_sync = Signal()
        m.submodules.lock_sync = FFSynchronizer(self.locked, locked_sync, o_domain=self.domain)
        timer = Signal(range(self.delay + 1))
        sync = m.d[self.domain]
        with m.If(~locked_sync):
            sync += timer.eq(0)
        with m.Elif(timer != self.delay):
            sync += timer.eq(timer + 1)
        sync += self.rst.eq(timer != self.delay)
        return m
