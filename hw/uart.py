"""8N1 UART gateware: a receiver and a transmitter with byte streams, for the host link.

Both run from one clock and take ``divisor``, the number of clock cycles per bit
(use :func:`baud_divisor` to derive it from a clock frequency and a baud rate). A byte is
``BITS_PER_BYTE`` = 10 bit times on the wire: start (0), 8 data bits LSB first, stop (1).

The receiver samples the synchronised pin at mid-bit: it sees a start edge with a jitter of at
most one clock cycle, re-checks the start bit half a bit later (a shorter low pulse is a glitch
and is ignored), then samples every ``divisor`` cycles. The last sample (the stop bit) is
9.5 bit times after the edge, so the receiver tolerates a baud-rate mismatch of at least
``(0.5 - 1 / divisor) / 9.5``: 2.6% at ``divisor`` = 4, 3.9% at 8, 4.9% at 32.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from trine.contract.errors import check_int
from trine.contract.protocol import BITS_PER_BYTE, MIN_DIVISOR
from trine.hw.counters import count_saturating

__all__ = ["UARTRx", "UARTTx"]

class UARTRx(wiring.Component):
    """8N1 UART receiver with a byte stream output that never blocks reception.

    A received byte is held on ``o_stream`` until it is taken. If the next byte completes while
    the previous one is still waiting, the new byte is dropped and ``overrun`` pulses: reception
    never waits for the consumer (take each byte within one byte time, ``10 * divisor`` cycles).
    A byte whose stop bit is low is dropped and ``framing_error`` pulses; the receiver then waits
    for the line to go high before it looks for the next start bit, so a *break* (the line held
    low) counts as one framing error and reception resumes when the line is released.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, >= :data:`MIN_DIVISOR`.
    counter_width : int
        Width of the saturating error counters, >= 1.

    Members
    -------
    rx : In(1, init=1)
        The serial pin (asynchronous; synchronised inside by two flip-flops).
    o_stream : Out(stream.Signature(8))
        Received bytes.
    framing_error : Out(1)
        One-cycle strobe: a stop bit was low (the byte was dropped).
    overrun : Out(1)
        One-cycle strobe: a byte was dropped because ``o_stream`` still held the previous one.
    framing_errors, overruns : Out(counter_width)
        Saturating counts of the two strobes since reset.

    Raises
    ------
    TypeError, ValueError
        For parameters of the wrong type or outside their range.
    """

    def __init__(self, divisor: int, *, counter_width: int = 8):
        self.divisor = check_int("UART divisor (clock cycles per bit)", divisor, MIN_DIVISOR)
        self.counter_width = check_int("Counter width", counter_width, 1)
        super().__init__(
            {
                "rx": In(1, init=1),
                "o_stream": Out(stream.Signature(8)),
                "framing_error": Out(1),
                "overrun": Out(1),
                "framing_errors": Out(counter_width),
                "overruns": Out(counter_width),
            }
        )

    def elaborate(self, platform):
        m = Module()
        divisor = self.divisor

        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1)

        # The first low sample lies 0..1 cycle after the (synchronised) edge, and the START
        # state samples `first_wait + 1` cycles after it: aim that at half a bit after the edge.
        first_wait = (divisor - 3) // 2
        timer = Signal(range(divisor), reset_less=True)
        bits = Signal(range(8), reset_less=True)
        shift = Signal(8, reset_less=True)
        o_valid = Signal()
        o_byte = Signal(8, reset_less=True)
        m.d.comb += [self.o_stream.valid.eq(o_valid), self.o_stream.payload.eq(o_byte)]
        with m.If(self.o_stream.ready):
            m.d.sync += o_valid.eq(0)

        # Registered conditions (tick = (timer == 0), last_bit = (bits == 7)), so that the
        # state logic starts at flip-flops.
        tick = Signal(init=1)
        last_bit = Signal(reset_less=True)

        def wait(cycles):
            m.d.sync += [timer.eq(cycles), tick.eq(cycles == 0)]

        with m.If(~tick):
            m.d.sync += [timer.eq(timer - 1), tick.eq(timer == 1)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    wait(first_wait)
                    m.next = "START"
            with m.State("START"):
                with m.If(tick):
                    with m.If(rx):
                        m.next = "IDLE"  # high again at mid-bit: a glitch, not a start bit
                    with m.Else():
                        wait(divisor - 1)
                        m.d.sync += [bits.eq(0), last_bit.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                with m.If(tick):
                    wait(divisor - 1)
                    m.d.sync += [
                        shift.eq(Cat(shift[1:], rx)),  # LSB first
                        bits.eq(bits + 1),
                        last_bit.eq(bits == 6),
                    ]
                    with m.If(last_bit):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(tick):
                    with m.If(rx):
                        with m.If(o_valid & ~self.o_stream.ready):
                            m.d.comb += self.overrun.eq(1)
                        with m.Else():
                            m.d.sync += [o_valid.eq(1), o_byte.eq(shift)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.comb += self.framing_error.eq(1)
                        m.next = "BREAK"
            with m.State("BREAK"):
                # Do not mistake the rest of a low stop bit, or a break, for a start bit.
                with m.If(rx):
                    m.next = "IDLE"

        count_saturating(m, self.framing_error, self.framing_errors)
        count_saturating(m, self.overrun, self.overruns)
        return m


class UARTTx(wiring.Component):
    """8N1 UART transmitter: a byte stream in, the serial pin out (idle high).

    Each byte accepted from ``i_stream`` takes exactly ``10 * divisor`` cycles on the wire;
    ``i_stream.ready`` rises in the last cycle of the stop bit, so back-to-back bytes follow
    without an idle gap.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, >= :data:`MIN_DIVISOR`.

    Members
    -------
    i_stream : In(stream.Signature(8))
        Bytes to send.
    tx : Out(1, init=1)
        The serial pin (driven by a register, glitch-free).
    busy : Out(1)
        A byte is on the wire.

    Raises
    ------
    TypeError, ValueError
        For parameters of the wrong type or outside their range.
    """

    def __init__(self, divisor: int):
        self.divisor = check_int("UART divisor (clock cycles per bit)", divisor, MIN_DIVISOR)
        super().__init__(
            {
                "i_stream": In(stream.Signature(8)),
                "tx": Out(1, init=1),
                "busy": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        divisor = self.divisor

        # Bit 0 of `frame` is on the wire; shifting in ones leaves the line idle high.
        frame = Signal(BITS_PER_BYTE, init=(1 << BITS_PER_BYTE) - 1)
        bits_left = Signal(range(BITS_PER_BYTE + 1))
        timer = Signal(range(divisor), reset_less=True)
        # Registered conditions, so that `ready` is one gate from flip-flops:
        # tick = (timer == 0), idle = (bits_left == 0), last = (bits_left == 1).
        tick = Signal(init=1)
        idle = Signal(init=1)
        last = Signal()
        m.d.comb += [
            self.tx.eq(frame[0]),
            self.busy.eq(~idle),
            self.i_stream.ready.eq(idle | (last & tick)),
        ]
        with m.If(~tick):
            m.d.sync += [timer.eq(timer - 1), tick.eq(timer == 1)]
        with m.Elif(~idle):
            m.d.sync += [
                timer.eq(divisor - 1),
                tick.eq(0),
                frame.eq(Cat(frame[1:], Const(1, 1))),
                bits_left.eq(bits_left - 1),
                idle.eq(last),
                last.eq(bits_left == 2),
            ]
        with m.If(self.i_stream.valid & self.i_stream.ready):
            m.d.sync += [
                frame.eq(Cat(Const(0, 1), self.i_stream.payload, Const(1, 1))),
                bits_left.eq(BITS_PER_BYTE),
                timer.eq(divisor - 1),
                tick.eq(0),
                idle.eq(0),
                last.eq(0),
            ]
        return m
