"""A byte FIFO in block RAM: the device's receive buffer.

:class:`ByteFIFO` sits between the UART receiver and the
:class:`trine.hw.link.FrameReceiver`. The receiver takes no bytes while a frame waits for its
answer, so without a buffer every byte that arrives meanwhile is lost and the host must wait
for each answer before it sends the next request (stop-and-wait). With ``depth`` bytes of
buffer the host may keep that many bytes of requests in flight (INFO reports ``rx_buffer``;
:meth:`trine.host.transport.Link.exchange` keeps its window within it), which hides the
latency of USB-serial bridges (issue 13 §4).
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from trine.contract.errors import ParameterError, check_int
from trine.hw.memories import NO_RW_CHECK

__all__ = ["ByteFIFO"]


class ByteFIFO(wiring.Component):
    """First in, first out: ``depth`` bytes in one memory, then two registers.

    ``i_stream.ready`` is low only while the memory is full. The memory's synchronous read
    port is the first register; ``o_stream`` comes from a second one in logic, so that no path
    starts at a block RAM's output (on the ECP5 its clock-to-output alone is 5.8 ns) and ends
    in the receiver's logic. A byte written into an empty FIFO appears three cycles later; a
    full one passes a byte per cycle. The memory's read and write addresses never meet while
    both are used (the read needs an entry, the write a free one), so its read port needs no
    collision logic (``no_rw_check``), and both pointers wrap by overflowing (``depth`` is a
    power of two). The ``empty``/``full`` decisions are registered flags, so no counter compare
    sits in front of a handshake.

    Parameters
    ----------
    depth : int
        Bytes of memory, a power of two >= 2 (the FIFO holds two more in its registers).

    Members
    -------
    i_stream : In(stream.Signature(8))
    o_stream : Out(stream.Signature(8))
    level : Out(range(depth + 1))
        Bytes in the memory (not counting the two registers).
    """

    def __init__(self, depth: int):
        self.depth = check_int("FIFO depth", depth, 2)
        if depth & (depth - 1):
            raise ParameterError(f"FIFO depth must be a power of two, not {depth}")
        super().__init__({
            "i_stream": In(stream.Signature(8)),
            "o_stream": Out(stream.Signature(8)),
            "level": Out(range(depth + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        depth = self.depth
        m.submodules.storage = storage = Memory(shape=8, depth=depth, init=[],
                                                attrs=NO_RW_CHECK)
        write = storage.write_port()
        read = storage.read_port(domain="sync")
        produce = Signal(range(depth))
        consume = Signal(range(depth))
        nonempty = Signal()  # level != 0, registered
        full = Signal()  # level == depth, registered
        fetched = Signal()  # the read port holds the oldest byte not yet in the output register

        o = self.o_stream
        do_write = Signal()
        take = Signal()  # the read port's byte moves into the output register
        fetch = Signal()  # the oldest entry of the memory moves into the read port
        m.d.comb += [
            self.i_stream.ready.eq(~full),
            do_write.eq(self.i_stream.valid & ~full),
            take.eq(fetched & (~o.valid | o.ready)),
            fetch.eq(nonempty & (~fetched | take)),
            write.addr.eq(produce), write.data.eq(self.i_stream.payload),
            write.en.eq(do_write),
            read.addr.eq(consume), read.en.eq(fetch),
        ]
        with m.If(do_write):
            m.d.sync += produce.eq(produce + 1)
        with m.If(fetch):
            m.d.sync += [consume.eq(consume + 1), fetched.eq(1)]
        with m.Elif(take):
            m.d.sync += fetched.eq(0)
        with m.If(take):
            m.d.sync += [o.valid.eq(1), o.payload.eq(read.data)]
        with m.Elif(o.ready):
            m.d.sync += o.valid.eq(0)

        level = self.level
        with m.If(do_write & ~fetch):
            m.d.sync += [level.eq(level + 1), nonempty.eq(1), full.eq(level == depth - 1)]
        with m.Elif(fetch & ~do_write):
            m.d.sync += [level.eq(level - 1), nonempty.eq(level != 1), full.eq(0)]
        return m
