"""Small helpers shared by the gateware modules: parameter checks and counters."""

from __future__ import annotations

from amaranth.hdl import Module, Signal

__all__ = ["check_int", "count_saturating"]


def check_int(name: str, value, minimum: int, maximum: int | None = None) -> int:
    """Return ``value`` if it is an integer in range, else raise with a message naming it.

    Raises
    ------
    TypeError
        If ``value`` is not an ``int`` (``bool`` is refused too).
    ValueError
        If it is below ``minimum`` or above ``maximum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be {bound}, not {value}")
    return value


def count_saturating(m: Module, strobe, counter: Signal) -> None:
    """Add one to ``counter`` in every cycle where ``strobe`` is high; stop at all ones."""
    with m.If(strobe & (counter != (1 << len(counter)) - 1)):
        m.d.sync += counter.eq(counter + 1)
