"""The whole device: link, command executor and accelerator core.

:class:`LinkedAccelerator` speaks the frame protocol of :mod:`trine.contract.protocol` over byte
streams: a :class:`trine.hw.link.FrameReceiver`, a :class:`trine.hw.executor.CommandExecutor`,
the :class:`trine.hw.core.AcceleratorCore` and a :class:`trine.hw.link.FrameTransmitter`,
with the answers' tags in a :class:`trine.hw.tags.TagStore`, and in front of the receiver a
:class:`trine.hw.fifo.ByteFIFO` of ``params.rx_buffer`` bytes, where requests wait while the
device handles the one before (the host's window, :meth:`trine.host.transport.Link.exchange`).
:class:`Top` adds the UART and has just two pins, ``rx`` and ``tx``, so it is board-agnostic.
A simulator can drive :class:`LinkedAccelerator`'s byte streams directly (the fast, byte-level
mode) or :class:`Top`'s pins bit by bit (the UART exercised too).
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from trine.contract.params import AcceleratorParams
from trine.contract.protocol import MAX_PAYLOAD, Op, baud_divisor, frame_timeout_cycles
from trine.hw.core import AcceleratorCore
from trine.hw.executor import STATUS_SIZE, CommandExecutor
from trine.hw.fifo import ByteFIFO
from trine.hw.link import FrameReceiver, FrameTransmitter
from trine.hw.tags import TagStore
from trine.hw.uart import UARTRx, UARTTx

__all__ = ["STATUS_SIZE", "LinkedAccelerator", "Top"]


class LinkedAccelerator(wiring.Component):
    """The accelerator core behind the frame protocol, on byte streams.

    Parameters
    ----------
    params : trine.contract.params.AcceleratorParams
        Passed to :class:`trine.hw.core.AcceleratorCore`.
    timeout_cycles : int
        Inter-byte timeout of the frame receiver.
    clock_hz, baud : int
        Reported by INFO (the host derives nothing from them but time estimates).

    Members
    -------
    i_stream : In(stream.Signature(8))   bytes from the host
    o_stream : Out(stream.Signature(8))  bytes to the host
    """

    def __init__(self, params: AcceleratorParams, *, timeout_cycles: int, clock_hz: int = 0,
                 baud: int = 0):
        self.core = AcceleratorCore(params)
        self.receiver = FrameReceiver(MAX_PAYLOAD, timeout_cycles=timeout_cycles)
        self.transmitter = FrameTransmitter()
        self.info = params.device_info(clock_hz, baud)
        self.executor = CommandExecutor(params, self.info)
        self.rx_buffer = ByteFIFO(params.rx_buffer) if params.rx_buffer else None
        super().__init__({
            "i_stream": In(self.receiver.i_stream.signature.flip()),
            "o_stream": Out(self.transmitter.o_stream.signature),
        })

    def elaborate(self, platform):
        m = Module()
        rx, executor, core, tx = self.receiver, self.executor, self.core, self.transmitter
        m.submodules.receiver, m.submodules.executor = rx, executor
        m.submodules.core, m.submodules.transmitter = core, tx
        m.submodules.tags = tags = TagStore()
        if self.rx_buffer is None:
            wiring.connect(m, wiring.flipped(self.i_stream), rx.i_stream)
        else:
            m.submodules.rx_buffer = self.rx_buffer
            wiring.connect(m, wiring.flipped(self.i_stream), self.rx_buffer.i_stream)
            wiring.connect(m, self.rx_buffer.o_stream, rx.i_stream)
        wiring.connect(m, rx.tag, tags.rx)
        wiring.connect(m, tx.tag, tags.tx)
        # The receiver is released (and takes the next frame) only once the answer has left
        # the transmitter, not when the executor is done with the frame: until then the tag
        # memory holds this request's session and check, which the answer's header carries.
        done, pending = Signal(), Signal()
        m.d.comb += [
            executor.i_frame.payload.eq(rx.o_frame.payload),
            executor.i_frame.valid.eq(rx.o_frame.valid & ~pending),
            done.eq(pending & tx.i_frame.ready),
            rx.o_frame.ready.eq(done),
        ]
        with m.If(executor.i_frame.ready):
            m.d.sync += pending.eq(1)
        with m.Elif(done):
            m.d.sync += pending.eq(0)
        # A request that changes the memories makes its session the owner once it has been
        # answered; a damaged frame (error != 0) never does.
        event = rx.o_frame.payload
        m.d.comb += tags.commit.eq(done & (event.error == 0) &
                                   ((event.op == Op.WRITE) | (event.op == Op.RUN)))
        wiring.connect(m, rx.payload, executor.payload)
        wiring.connect(m, executor.core, core.host)
        wiring.connect(m, executor.o_frame, tx.i_frame)
        wiring.connect(m, executor.o_stream, tx.i_stream)
        wiring.connect(m, tx.o_stream, wiring.flipped(self.o_stream))
        return m


class Top(wiring.Component):
    """The device with a UART: two pins, ``rx`` and ``tx``.

    Parameters
    ----------
    params : trine.contract.params.AcceleratorParams
        The accelerator, as for :class:`LinkedAccelerator`.
    clk_freq : int
        Clock frequency in Hz.
    baud : int
        UART baud rate (8N1); ``clk_freq / baud`` must be >= 4 and within 2% of an integer.
    """

    def __init__(self, params: AcceleratorParams, clk_freq: int, baud: int):
        self.divisor = baud_divisor(clk_freq, baud)
        self.device = LinkedAccelerator(params, timeout_cycles=frame_timeout_cycles(self.divisor),
                                        clock_hz=clk_freq, baud=baud)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.device = device = self.device
        m.submodules.uart_rx = uart_rx = UARTRx(self.divisor)
        m.submodules.uart_tx = uart_tx = UARTTx(self.divisor)
        m.d.comb += [uart_rx.rx.eq(self.rx), self.tx.eq(uart_tx.tx)]
        wiring.connect(m, uart_rx.o_stream, device.i_stream)
        wiring.connect(m, device.o_stream, uart_tx.i_stream)
        return m
