"""The answer tag in gateware: what binds each answer to its request and to the device's state.

Every answer's header carries the tag of :mod:`trine.contract.protocol` (``TAG_SIZE`` bytes
after ``seq``): the request's ``session``, the ``program`` and ``owner`` of the device (the
``program`` and ``session`` fields of the last request that changed its memories) and
``check`` (the request's CRC-16 field). :class:`TagStore` keeps them in one small block RAM
rather than in flip-flops, so that the whole tag costs a few LUTs of addressing:

* two *slots* of 8 bytes, a request's session and program fields. The receiver writes each
  request's into the slot that is not the owner's, as they arrive; when a request that
  changes the memories (WRITE or RUN) with a good CRC has been answered, that slot becomes
  the owner's (one flip-flop, ``owner_slot``, toggles). So the fields of a frame that turns
  out to be damaged never become the device's.
* the request's two CRC-16 bytes, written by the receiver as they arrive.

The memory is never read in a cycle that writes it (the receiver writes while no answer goes
out), so Yosys adds no bypass logic (``NO_RW_CHECK``).

Tag byte ``index`` (bits ``i3 i2 i1 i0``) -> memory address (``s`` = ``owner_slot``)::

    0..3   session   {0, ~s, 0, i1, i0}   the request being answered
    4..7   program   {0,  s, 1, i1, i0}   of the owner's request
    8..11  owner     {0,  s, 0, i1, i0}   the owner's session
    12..13 check     {1,  0, 0, 0, i0}
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from trine.contract.protocol import TAG_SIZE
from trine.hw.memories import NO_RW_CHECK

__all__ = ["TagWriteSignature", "TagReadSignature", "TagStore"]

_INDEX_BITS = (TAG_SIZE - 1).bit_length()
assert TAG_SIZE == 14, "the address map below assumes this tag"


class TagWriteSignature(wiring.Signature):
    """The receiver's writes into the tag, seen from the receiver.

    Members
    -------
    field : Out(1)
        ``data`` is byte ``index`` (0..7) of a request's session and program fields.
    check : Out(1)
        ``data`` is byte ``index`` (0, 1) of a request's CRC-16 field.
    index : Out(3)
    data : Out(8)
    """

    def __init__(self):
        super().__init__({"field": Out(1), "check": Out(1), "index": Out(3), "data": Out(8)})


class TagReadSignature(wiring.Signature):
    """The transmitter's reads of the tag, seen from the transmitter.

    Members
    -------
    index : Out(range(TAG_SIZE))
        The tag byte to read.
    data : In(8)
        Tag byte ``index`` of the previous cycle (a memory read port's timing).
    """

    def __init__(self):
        super().__init__({"index": Out(_INDEX_BITS), "data": In(8)})


class TagStore(wiring.Component):
    """The answer tag: the request's session and check, the owner's session and program.

    Members
    -------
    rx : In(TagWriteSignature())
        From the frame receiver.
    tx : In(TagReadSignature())
        From the frame transmitter.
    commit : In(1)
        Strobe: the request whose fields were last written changed the memories, and its
        answer has been sent; its session and program become the owner's.
    """

    def __init__(self):
        super().__init__({
            "rx": In(TagWriteSignature()),
            "tx": In(TagReadSignature()),
            "commit": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        slot = Signal()  # the owner's slot
        with m.If(self.commit):
            m.d.sync += slot.eq(~slot)

        rx, tx = self.rx, self.tx
        m.submodules.memory = memory = Memory(shape=8, depth=32, init=[], attrs=NO_RW_CHECK)
        write = memory.write_port()
        m.d.comb += [
            write.addr.eq(Cat(rx.index, ~slot & rx.field, rx.check)),
            write.data.eq(rx.data),
            write.en.eq(rx.field | rx.check),
        ]
        read = memory.read_port()
        i = tx.index
        check = i[3] & i[2]
        own = i[2] | i[3]  # program, owner, check: the owner's slot (check: either)
        m.d.comb += [
            read.addr.eq(Cat(i[:2], i[2] & ~i[3], ~check & (slot ^ ~own), check)),
            tx.data.eq(read.data),
        ]
        return m
