"""The link's two checksums in gateware: one CRC engine taking a byte per cycle (or serially).

The algorithms are the ones of :mod:`trine.contract.protocol` (header CRC-8 and frame CRC-16),
named as :class:`amaranth.lib.crc.Algorithm` entries of Amaranth's catalogue (whose software
``compute`` the tests hold against :func:`trine.contract.protocol.crc8` /
:func:`trine.contract.protocol.crc16`).
:func:`crc_step` is the one place where the register update is written.

Byte-parallel by default, because it is no larger in practice: a bit-serial engine would be
fast enough (a UART byte takes ``10 * divisor`` >= 40 cycles, the CRC 8) and its register needs
almost no logic, but each engine then needs a 7-bit shift register and a bit counter, and its
user must stall for 7 cycles per byte, while the CCITT byte update shares most of its XOR
terms. ``bits_per_cycle`` = 1, 2 or 4 remain available.
"""

from __future__ import annotations

import functools
import operator

from amaranth.hdl import Cat, Const, Module, Signal, Value
from amaranth.lib import crc, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["HEADER_CRC", "FRAME_CRC", "ByteCRC", "check_bits_per_cycle"]

#: The header check of :mod:`trine.contract.protocol` (:func:`trine.contract.protocol.crc8`): poly
# 0x07, init 0.
HEADER_CRC = crc.catalog.CRC8_SMBUS
#: The frame check of :mod:`trine.contract.protocol` (:func:`trine.contract.protocol.crc16`):
# CRC-16/CCITT-FALSE.
FRAME_CRC = crc.catalog.CRC16_CCITT_FALSE


def crc_step(algorithm: crc.Algorithm, register: Value, bits: Value) -> Value:
    """The CRC register of an unreflected ``algorithm`` after absorbing ``bits``, most
    significant bit first: each new register bit is the XOR of the old register and data bits
    that a Galois shift register stepped ``len(bits)`` times would combine."""
    width, n = algorithm.crc_width, len(bits)
    # Track each register bit as a set of inputs (bit masks: register bits 0..width-1, then
    # data bits) whose XOR it equals.
    state = [1 << i for i in range(width)]
    for i in reversed(range(n)):
        feedback = state[width - 1] ^ (1 << (width + i))
        state = [0] + state[:-1]
        state = [s ^ feedback if algorithm.polynomial >> b & 1 else s for b, s in enumerate(state)]
    inputs = Cat(register, bits)
    out = []
    for mask in state:
        terms = [inputs[k] for k in range(width + n) if mask >> k & 1]
        out.append(functools.reduce(operator.xor, terms, Const(0, 1)))
    return Cat(*out)


def check_bits_per_cycle(bits_per_cycle) -> int:
    """Validate the ``bits_per_cycle`` of a :class:`ByteCRC` (and of the blocks that pass it on).

    Raises
    ------
    TypeError, ValueError
        Unless it is 1, 2, 4 or 8.
    """
    if isinstance(bits_per_cycle, bool) or not isinstance(bits_per_cycle, int):
        raise TypeError(f"bits_per_cycle must be an integer, not {bits_per_cycle!r}")
    if bits_per_cycle not in (1, 2, 4, 8):
        raise ValueError(f"bits_per_cycle must be 1, 2, 4 or 8, not {bits_per_cycle}")
    return bits_per_cycle


class ByteCRC(wiring.Component):
    """A CRC over bytes, absorbing each byte most significant bit first in ``8 / bits_per_cycle``
    cycles.

    Assert ``start`` with a byte on ``data`` while ``busy`` is low. ``busy`` is then high for
    ``8 / bits_per_cycle - 1`` cycles (never, for 8). Whenever ``busy`` is low, ``crc`` is the CRC
    of every byte absorbed since the last ``clear``, except in a cycle where ``start`` is
    asserted, which still shows the value before that byte. ``clear`` (re)starts the CRC at the
    algorithm's initial value; assert it only while ``busy`` is low and not with ``start``. The
    domain reset does not reach the CRC register (``clear`` is its reset): clear before use.

    Parameters
    ----------
    algorithm : amaranth.lib.crc.Algorithm
        Non-reflected, as the MSB-first serialisation assumes (e.g. :data:`HEADER_CRC`).
    bits_per_cycle : int
        1, 2, 4 or 8 (the default: a byte per cycle, ``busy`` is never high).

    Members
    -------
    clear : In(1)
    start : In(1)
    data : In(8)
    busy : Out(1)
    crc : Out(algorithm.crc_width)
        The CRC register (no output XOR or reflection is applied by the supported algorithms).

    Raises
    ------
    TypeError, ValueError
        For an algorithm that is not an unreflected Algorithm, or an unsupported
        ``bits_per_cycle``.
    """

    def __init__(self, algorithm: crc.Algorithm, *, bits_per_cycle: int = 8):
        if not isinstance(algorithm, crc.Algorithm):
            raise TypeError(f"algorithm must be an amaranth.lib.crc.Algorithm, not {algorithm!r}")
        if algorithm.reflect_input or algorithm.reflect_output or algorithm.xor_output:
            raise ValueError(
                f"algorithm must be unreflected without an output XOR, not {algorithm!r}"
            )
        check_bits_per_cycle(bits_per_cycle)
        self.algorithm = algorithm
        self.bits_per_cycle = bits_per_cycle
        self.cycles_per_byte = 8 // bits_per_cycle
        super().__init__(
            {
                "clear": In(1),
                "start": In(1),
                "data": In(8),
                "busy": Out(1),
                "crc": Out(algorithm.crc_width),
            }
        )

    def elaborate(self, platform):
        m = Module()
        step = self.bits_per_cycle
        algorithm = self.algorithm
        # No reset: `clear` is its only (synchronous) reset, which the iCE40 flip-flops absorb.
        register = Signal(algorithm.crc_width, reset_less=True)
        m.d.comb += self.crc.eq(register)

        chunk = Signal(step)
        valid = Signal()
        if step == 8:
            m.d.comb += [chunk.eq(self.data), valid.eq(self.start)]
        else:
            # The first `step` bits go in at once; the rest wait in `pending`, top bits first.
            pending = Signal(8 - step, reset_less=True)
            left = Signal(range(self.cycles_per_byte))
            m.d.comb += self.busy.eq(left != 0)
            with m.If(self.busy):
                m.d.comb += [chunk.eq(pending[-step:]), valid.eq(1)]
                m.d.sync += [pending.eq(pending << step), left.eq(left - 1)]
            with m.Elif(self.start):
                m.d.comb += [chunk.eq(self.data[-step:]), valid.eq(1)]
                m.d.sync += [pending.eq(self.data), left.eq(self.cycles_per_byte - 1)]

        with m.If(self.clear):
            m.d.sync += register.eq(algorithm.initial_crc)
        with m.Elif(valid):
            m.d.sync += register.eq(crc_step(algorithm, register, chunk))
        return m
