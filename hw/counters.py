"""Counters for the gateware: a saturating event counter and a wide cycle counter."""

from __future__ import annotations

from amaranth.hdl import Elaboratable, Module, Signal

__all__ = ["count_saturating", "CycleCounter"]


def count_saturating(m: Module, strobe, counter: Signal) -> None:
    """Add one to ``counter`` in every cycle where ``strobe`` is high; stop at all ones."""
    with m.If(strobe & (counter != (1 << len(counter)) - 1)):
        m.d.sync += counter.eq(counter + 1)


class CycleCounter(Elaboratable):
    """A saturating counter of ``width`` bits (even): ``value`` steps in each cycle that
    ``count`` is high and stops at ``2**width - 1``; ``clear`` starts it again from the cycle
    of the clear (``value`` is ``count`` in the cycle after), so that the clear can come
    from a flip-flop in the first cycle counted.

    It counts in two halves: the high half steps when the low one is full. Whether each half
    is full is a register, so the enable is a single LUT and no comparator sits in front of
    the carry chains: ``high_full`` follows the high half a cycle late (it changes only
    ``2**(width/2)`` cycles apart), ``low_full`` is set for the low half's next value.
    """

    def __init__(self, width: int):
        if isinstance(width, bool) or not isinstance(width, int) or width < 2 or width % 2:
            raise ValueError(f"width must be an even number of bits >= 2, not {width!r}")
        self.width = width
        self.count = Signal()
        self.clear = Signal()
        self.value = Signal(width)

    def elaborate(self, platform):
        m = Module()
        half = self.width // 2
        low, high = self.value[:half], self.value[half:]
        high_full = Signal()
        low_full = Signal()
        m.d.sync += high_full.eq(high.all())
        with m.If(self.clear):
            m.d.sync += [self.value.eq(self.count), low_full.eq(self.count & (half == 1)),
                         high_full.eq(0)]
        with m.Elif(self.count & ~(high_full & low_full)):
            m.d.sync += [low.eq(low + 1), low_full.eq(low == (1 << half) - 2)]
            with m.If(low_full):
                m.d.sync += high.eq(high + 1)
        return m

