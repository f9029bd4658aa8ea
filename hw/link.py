"""Frame receiver and transmitter for the host link (the frame format is
:mod:`trine.contract.protocol`).

Both sit between a byte stream (:class:`trine.hw.uart.UARTRx` / :class:`trine.hw.uart.UARTTx`) and
the
accelerator's command logic. The CRCs (:class:`trine.hw.crc.ByteCRC`) take a byte per cycle by
default, so both blocks can also run at nearly a byte per cycle (the transmitter at one every
other cycle), e.g. behind a byte-level test path.

Differences from the host's :class:`trine.contract.protocol.FrameDecoder`
---------------------------------------------------------------
The gateware keeps no byte history. When a ``SYNC`` turns out to start a bad header (wrong
CRC-8, or a length above ``max_payload``), the :class:`FrameReceiver` hunts again from the byte
*after the header check*, whereas the decoder re-scans from the byte after the false ``SYNC``.
Both accept only frames whose CRC-8 and CRC-16 check, and they agree on every frame that starts
while both are hunting: any frame sent after a quiet line (a timeout) or right after another
frame, which is how a stop-and-wait host sends. They can differ only after a false ``SYNC``
(line noise): a real frame whose ``SYNC`` lies within the ``HEADER_SIZE - 1`` bytes after a
false ``SYNC`` is missed by the receiver (the host times out and retries), and the decoder's
re-scan can, on a
chance-valid header check (1 in 256), lock onto a false header that the receiver skipped.
A receiver built with ``max_payload < MAX_PAYLOAD`` also treats longer (valid) frames as bad
headers. While a frame waits for the consumer, the receiver takes no further bytes
(``i_stream.ready`` is low): they wait in front of it, in :class:`trine.hw.fifo.ByteFIFO` on the
device, so a host may send its next requests before the answers come.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory, ReadPort
from amaranth.lib.wiring import In, Out

from trine.contract.errors import check_int
from trine.contract.protocol import (
    MAX_PAYLOAD,
    SYNC,
    TAG_SIZE,
    ErrorCode,
    frame_timeout_cycles,
)
from trine.hw.counters import count_saturating
from trine.hw.crc import FRAME_CRC, HEADER_CRC, ByteCRC, check_bits_per_cycle
from trine.hw.memories import NO_RW_CHECK
from trine.hw.onehot import OneHotFSM
from trine.hw.tags import TagReadSignature, TagWriteSignature

__all__ = [
    "FRAME_HEADER_LAYOUT",
    "FRAME_EVENT_LAYOUT",
    "FrameReceiver",
    "FrameTransmitter",
]

#: What a frame's header says: the transmitter's request.
FRAME_HEADER_LAYOUT = data.StructLayout(
    {"op": unsigned(8), "seq": unsigned(8), "length": unsigned(16)}
)
#: A received frame: its header, and ``error`` = 0 (payload good) or ``ErrorCode.BAD_CRC``.
FRAME_EVENT_LAYOUT = data.StructLayout(
    {"op": unsigned(8), "seq": unsigned(8), "length": unsigned(16), "error": unsigned(8)}
)


#: The receiver's states, the first one initial. VERIFY follows CHECK: the header check
#: byte is in, and its registered verdict is acted upon.
_RX_STATES = ("HUNT", "OP", "SEQ", "TAG", "LEN_LO", "LEN_HI", "CHECK", "PAYLOAD", "CRC_LO",
              "CRC_HI", "PENDING", "VERIFY")


class FrameReceiver(wiring.Component):
    """Hunts for frames in a byte stream, stores the payload, checks both CRCs.

    A frame whose header and CRC-16 are good is presented on ``o_frame`` with ``error`` = 0; a
    frame whose header is good but whose CRC-16 is not is presented with ``error`` =
    ``ErrorCode.BAD_CRC`` and the header's ``op`` and ``seq``, so that it can be NAKed. Either
    is held until the consumer acknowledges it with ``o_frame.ready`` (the *done* strobe); in
    the meantime the consumer reads the payload through the read port ``payload`` (one cycle
    of read latency; addresses ``0 .. length - 1``, meaningful for good frames only), and
    ``i_stream.ready`` is low: the next frame's bytes wait in front of the receiver.

    Of the header's tag (:data:`~trine.contract.protocol.TAG_SIZE` bytes after ``seq``), the
    session and program bytes go out on ``tag`` as they arrive, and so do the frame's two
    CRC-16 bytes (for :class:`trine.hw.tags.TagStore`); the rest of a request's tag is
    ignored.

    A bad header (CRC-8, or ``length > max_payload``) is counted in ``header_errors`` and sends
    the receiver back to hunting (see the module notes on false ``SYNC`` bytes). A partial
    frame is dropped, and counted in ``timeouts``, when no byte arrives for ``timeout_cycles``
    cycles. ``i_stream.ready`` is low for one cycle after the header check byte (its verdict
    is registered) and, unless ``crc_bits_per_cycle`` = 8 (the default), for
    ``8 / crc_bits_per_cycle - 1`` cycles after each byte that enters a CRC (a UART byte takes
    far longer).

    Parameters
    ----------
    max_payload : int
        Largest accepted payload, 1..MAX_PAYLOAD; also the depth of the payload memory (bytes).
    divisor : int
        The UART's clock cycles per bit: sets ``timeout_cycles`` to
        :func:`frame_timeout_cycles(divisor) <frame_timeout_cycles>`. Give this or
        ``timeout_cycles``.
    timeout_cycles : int
        Inter-byte timeout in clock cycles, >= 1 (it must exceed the byte time).
    counter_width : int
        Width of the saturating counters, >= 1.
    crc_bits_per_cycle : int
        Passed to :class:`trine.hw.crc.ByteCRC` (1, 2, 4 or 8).

    Members
    -------
    i_stream : In(stream.Signature(8))
        Received bytes.
    o_frame : Out(stream.Signature(FRAME_EVENT_LAYOUT))
        A received frame; ``ready`` is the consumer's done strobe.
    tag : Out(trine.hw.tags.TagWriteSignature())
        The session, program and CRC-16 bytes of the frame being received.
    payload : Out(lib.memory.ReadPort.Signature(addr_width=max(1, ceil(log2(max_payload))),
                                                shape=8))
        The payload byte at the ``payload.addr`` of the previous cycle, as a memory read port
        gives it (``payload.en`` low holds it).
    header_errors, timeouts : Out(counter_width)
        Saturating counts since reset.

    Raises
    ------
    TypeError, ValueError
        For parameters of the wrong type or outside their range, or unless exactly one of
        ``divisor`` and ``timeout_cycles`` is given.
    """

    def __init__(
        self,
        max_payload: int = MAX_PAYLOAD,
        *,
        divisor: int | None = None,
        timeout_cycles: int | None = None,
        counter_width: int = 8,
        crc_bits_per_cycle: int = 8,
    ):
        self.max_payload = check_int("Maximum payload", max_payload, 1, MAX_PAYLOAD)
        if (divisor is None) == (timeout_cycles is None):
            raise ValueError(
                "FrameReceiver needs exactly one of divisor (the UART's clock cycles per bit) "
                f"and timeout_cycles, not divisor={divisor!r} and timeout_cycles={timeout_cycles!r}"
            )
        if divisor is not None:
            timeout_cycles = frame_timeout_cycles(divisor)
        self.timeout_cycles = check_int("Timeout", timeout_cycles, 1)
        self.counter_width = check_int("Counter width", counter_width, 1)
        self.crc_bits_per_cycle = check_bits_per_cycle(crc_bits_per_cycle)
        addr_width = max(1, (max_payload - 1).bit_length())
        super().__init__(
            {
                "i_stream": In(stream.Signature(8)),
                "o_frame": Out(stream.Signature(FRAME_EVENT_LAYOUT)),
                "tag": Out(TagWriteSignature()),
                "payload": Out(ReadPort.Signature(addr_width=addr_width, shape=8)),
                "header_errors": Out(counter_width),
                "timeouts": Out(counter_width),
            }
        )

    def elaborate(self, platform):
        m = Module()
        bpc = self.crc_bits_per_cycle
        m.submodules.header_crc = header_crc = ByteCRC(HEADER_CRC, bits_per_cycle=bpc)
        m.submodules.frame_crc = frame_crc = ByteCRC(FRAME_CRC, bits_per_cycle=bpc)
        # The consumer reads the payload only while the frame is pending, when nothing is
        # written: no collision bypass logic for block RAM.
        m.submodules.payload = memory = Memory(shape=8, depth=self.max_payload, init=[],
                                               attrs=NO_RW_CHECK)
        write = memory.write_port()
        wiring.connect(m, wiring.flipped(self.payload), memory.read_port())

        # One flip-flop per state: the next-state logic stays shallow.
        fsm = OneHotFSM(m, _RX_STATES)
        at = fsm.ongoing
        # Data registers need no reset: each is written before it is read.
        op, seq = Signal(8, reset_less=True), Signal(8, reset_less=True)
        length = Signal(16, reset_less=True)
        crc_low = Signal(8, reset_less=True)
        error = Signal(8, reset_less=True)
        # the payload byte, and before it the tag byte, being received
        index = Signal(range(max(self.max_payload, TAG_SIZE)), reset_less=True)
        index_next = index + 1
        # Bytes of the payload still to come, and flags registered ahead of their use.
        left = Signal(range(self.max_payload + 1), reset_less=True)
        length_ok = Signal(reset_less=True)
        length_zero = Signal(reset_less=True)
        last = Signal(reset_less=True)  # the next payload byte is the last
        header_good = Signal(reset_less=True)
        byte = self.i_stream.payload

        m.d.comb += [
            self.tag.data.eq(byte),
            self.o_frame.valid.eq(at("PENDING")),
            self.o_frame.payload.op.eq(op),
            self.o_frame.payload.seq.eq(seq),
            self.o_frame.payload.length.eq(length),
            self.o_frame.payload.error.eq(error),
        ]

        # Both CRCs absorb the same bytes (op .. payload); the header check is compared when
        # the check byte arrives, after which the CRC-8 register is simply not looked at.
        expired = Signal()  # the inter-byte timeout (below)
        m.d.comb += self.i_stream.ready.eq(~frame_crc.busy & ~at("VERIFY") & ~at("PENDING") &
                                           ~expired)
        accept = self.i_stream.valid & self.i_stream.ready
        # OP .. PAYLOAD, as the complement of three states (one LUT; VERIFY and PENDING take
        # no byte)
        absorb = accept & ~(at("HUNT") | at("CRC_LO") | at("CRC_HI"))
        # The CRCs are held at their initial value while hunting, so that the first byte after
        # SYNC enters clean ones: `clear` is one flip-flop rather than `accept` and a compare
        # with SYNC in front of every CRC flip-flop's enable.
        clear = at("HUNT")
        for unit in (header_crc, frame_crc):
            m.d.comb += [unit.clear.eq(clear), unit.start.eq(absorb), unit.data.eq(byte)]

        header_error = Signal()
        timeout = Signal()

        with m.If(accept):
            with fsm.state("HUNT"):
                with m.If(byte == SYNC):
                    fsm.go("OP")
            with fsm.state("OP"):
                m.d.sync += op.eq(byte)
                fsm.go("SEQ")
            with fsm.state("SEQ"):
                m.d.sync += [seq.eq(byte), index.eq(0)]
                fsm.go("TAG")
            with fsm.state("TAG"):
                m.d.sync += index.eq(index_next)
                m.d.comb += [self.tag.field.eq(~index[3]), self.tag.index.eq(index[:3])]
                with m.If(index[:4] == TAG_SIZE - 1):
                    fsm.go("LEN_LO")
            with fsm.state("LEN_LO"):
                m.d.sync += length[:8].eq(byte)
                fsm.go("LEN_HI")
            with fsm.state("LEN_HI"):
                # the length's properties are registered here, for the states after
                value = Cat(length[:8], byte)
                m.d.sync += [length[8:].eq(byte), length_ok.eq(value <= self.max_payload),
                             length_zero.eq(value == 0), last.eq(value == 1)]
                fsm.go("CHECK")
            with fsm.state("CHECK"):
                m.d.sync += header_good.eq((byte == header_crc.crc) & length_ok)
                fsm.go("VERIFY")
            with fsm.state("PAYLOAD"):
                m.d.comb += [write.en.eq(1), write.addr.eq(index), write.data.eq(byte)]
                m.d.sync += [index.eq(index_next), left.eq(left - 1), last.eq(left == 2)]
                with m.If(last):
                    fsm.go("CRC_LO")
            with fsm.state("CRC_LO"):
                m.d.sync += crc_low.eq(byte)
                m.d.comb += self.tag.check.eq(1)
                fsm.go("CRC_HI")
            with fsm.state("CRC_HI"):
                m.d.comb += [self.tag.check.eq(1), self.tag.index.eq(1)]
                good = Cat(crc_low, byte) == frame_crc.crc
                m.d.sync += error.eq(Mux(good, 0, ErrorCode.BAD_CRC))
                fsm.go("PENDING")

        with fsm.state("VERIFY"):
            with m.If(header_good):
                m.d.sync += [index.eq(0), left.eq(length)]
                with m.If(length_zero):
                    fsm.go("CRC_LO")
                with m.Else():
                    fsm.go("PAYLOAD")
            with m.Else():
                m.d.comb += header_error.eq(1)
                fsm.go("HUNT")

        with fsm.state("PENDING"):
            with m.If(self.o_frame.ready):
                fsm.go("HUNT")

        # Inter-byte timeout, only inside a frame: `timeout_cycles` cycles without a byte.
        # `expired` is a register, set in the cycle after the last of them, in which the
        # frame is dropped whatever comes: the byte stream waits for the cycle (`ready`
        # low), and the state's decision is one flip-flop, not the stream's `valid` through
        # the counter's condition.
        idle = Signal(range(self.timeout_cycles), reset_less=True)
        in_frame = ~at("HUNT") & ~at("PENDING")
        counting = in_frame & ~accept
        m.d.sync += expired.eq(counting & (idle == self.timeout_cycles - 1))
        with m.If(~counting):
            m.d.sync += idle.eq(0)
        with m.Elif(expired):
            m.d.comb += timeout.eq(1)
            m.d.sync += idle.eq(0)
            fsm.force("HUNT")
        with m.Else():
            m.d.sync += idle.eq(idle + 1)

        count_saturating(m, header_error, self.header_errors)
        count_saturating(m, timeout, self.timeouts)
        return m


#: The transmitter's states, the first one initial.
_TX_STATES = ("IDLE", "SYNC", "OP", "SEQ", "TAG", "LEN_LO", "LEN_HI", "CHECK", "PAYLOAD",
              "CRC_LO", "CRC_HI")


class FrameTransmitter(wiring.Component):
    """Frames a payload: header first, then the payload bytes, then the CRC-16.

    The consumer hands over ``(op, seq, length)`` on ``i_frame`` (accepted only between
    frames), then exactly ``length`` payload bytes on ``i_stream``; ``o_stream`` carries
    ``SYNC``, the header (its tag read byte by byte through ``tag``, from a
    :class:`trine.hw.tags.TagStore`), its CRC-8, the payload and the CRC-16 (little-endian),
    honouring backpressure. ``length`` must not exceed ``MAX_PAYLOAD``: only its low 11 bits
    are used (for the header and the payload count alike, so a frame is always
    self-consistent).
    A byte is loaded only into an empty output register, so at most one leaves every other
    cycle, and after a byte that enters a CRC the next waits ``8 / crc_bits_per_cycle`` cycles
    (one by default): far less than a UART byte, which the UART takes at once.

    Parameters
    ----------
    crc_bits_per_cycle : int
        Passed to :class:`trine.hw.crc.ByteCRC` (1, 2, 4 or 8).

    Members
    -------
    i_frame : In(stream.Signature(FRAME_HEADER_LAYOUT))
    i_stream : In(stream.Signature(8))
        Payload bytes.
    o_stream : Out(stream.Signature(8))
        Frame bytes, to :class:`trine.hw.uart.UARTTx`.
    tag : Out(trine.hw.tags.TagReadSignature())
        The header's tag bytes, read in order while the header goes out.

    Raises
    ------
    TypeError, ValueError
        For an unsupported ``crc_bits_per_cycle``.
    """

    def __init__(self, *, crc_bits_per_cycle: int = 8):
        self.crc_bits_per_cycle = check_bits_per_cycle(crc_bits_per_cycle)
        super().__init__(
            {
                "i_frame": In(stream.Signature(FRAME_HEADER_LAYOUT)),
                "i_stream": In(stream.Signature(8)),
                "o_stream": Out(stream.Signature(8)),
                "tag": Out(TagReadSignature()),
            }
        )

    def elaborate(self, platform):
        m = Module()
        bpc = self.crc_bits_per_cycle
        m.submodules.header_crc = header_crc = ByteCRC(HEADER_CRC, bits_per_cycle=bpc)
        m.submodules.frame_crc = frame_crc = ByteCRC(FRAME_CRC, bits_per_cycle=bpc)

        # One flip-flop per state: the next-state logic stays shallow.
        fsm = OneHotFSM(m, _TX_STATES)
        # The tag byte being read: the next one from the cycle after a tag byte is loaded,
        # so its memory's data is ready by the next load (two cycles apart at the least).
        tag_index = Signal.like(self.tag.index)
        m.d.comb += self.tag.index.eq(tag_index)
        op, seq = Signal(8, reset_less=True), Signal(8, reset_less=True)
        # The length until the payload starts, then the payload bytes still to come.
        remaining = Signal(range(MAX_PAYLOAD + 1), reset_less=True)
        # Registered: no payload (at the header), one payload byte left (in the payload).
        empty = Signal(reset_less=True)
        last = Signal(reset_less=True)
        o_valid, o_byte = Signal(), Signal(8, reset_less=True)
        m.d.comb += [self.o_stream.valid.eq(o_valid), self.o_stream.payload.eq(o_byte)]

        m.d.comb += self.i_frame.ready.eq(fsm.ongoing("IDLE"))
        clear = self.i_frame.valid & self.i_frame.ready
        with m.If(clear):
            m.d.sync += [
                op.eq(self.i_frame.payload.op),
                seq.eq(self.i_frame.payload.seq),
                tag_index.eq(0),
                remaining.eq(self.i_frame.payload.length),
                empty.eq(self.i_frame.payload.length[:11] == 0),
                last.eq(self.i_frame.payload.length[:11] == 1),
            ]

        # A byte enters the CRCs from the output register, in the cycle after it is loaded
        # (so that the multiplexer choosing it does not feed the CRC logic). A byte may be
        # loaded when the output register is empty (not as it empties: the consumer's ready
        # stays out of this logic; a UART takes a byte for many cycles anyway) and both CRCs
        # are settled (the check bytes are read from them, and a CRC takes one byte at a time).
        absorbing = Signal()
        can_emit = ~o_valid & ~absorbing & ~frame_crc.busy
        emit = Signal()
        absorb = Signal()
        out = Signal(8)
        m.d.sync += absorbing.eq(absorb)
        for unit in (header_crc, frame_crc):
            m.d.comb += [unit.clear.eq(clear), unit.start.eq(absorbing), unit.data.eq(o_byte)]
        # (`emit` needs an empty output register, so this is all o_valid can do.)
        m.d.sync += o_valid.eq(Mux(o_valid, ~self.o_stream.ready, emit))
        with m.If(emit):
            m.d.sync += o_byte.eq(out)

        with fsm.state("IDLE"):
            with m.If(self.i_frame.valid):
                fsm.go("SYNC")

        # The byte to load: an AND-OR multiplexer on the state bits (a chain of Ifs would put
        # a priority chain in front of the output register).
        at = fsm.ongoing
        sources = {"SYNC": Const(SYNC, 8), "OP": op, "SEQ": seq, "TAG": self.tag.data,
                   "LEN_LO": remaining[:8],
                   "LEN_HI": remaining[8:], "CHECK": header_crc.crc,
                   "PAYLOAD": self.i_stream.payload, "CRC_LO": frame_crc.crc[:8],
                   "CRC_HI": frame_crc.crc[8:]}
        m.d.comb += out.eq(_or_all([at(n).replicate(8) & v for n, v in sources.items()]))
        framing = ~at("IDLE") & ~at("PAYLOAD")
        checked = Cat(*(at(n) for n in ("OP", "SEQ", "TAG", "LEN_LO", "LEN_HI",
                                        "CHECK"))).any()
        take = at("PAYLOAD") & can_emit & self.i_stream.valid
        m.d.comb += [
            self.i_stream.ready.eq(at("PAYLOAD") & can_emit),
            emit.eq((framing & can_emit) | take),
            absorb.eq((checked & can_emit) | take),
        ]

        def step(name, next_state):
            with fsm.state(name):
                with m.If(can_emit):
                    fsm.go(next_state)

        step("SYNC", "OP")
        step("OP", "SEQ")
        step("SEQ", "TAG")
        with fsm.state("TAG"):
            with m.If(can_emit):
                m.d.sync += tag_index.eq(tag_index + 1)
                with m.If(tag_index == TAG_SIZE - 1):
                    fsm.go("LEN_LO")
        step("LEN_LO", "LEN_HI")
        step("LEN_HI", "CHECK")
        with fsm.state("CHECK"):
            with m.If(can_emit):
                with m.If(empty):
                    fsm.go("CRC_LO")
                with m.Else():
                    fsm.go("PAYLOAD")
        with fsm.state("PAYLOAD"):
            with m.If(take):
                m.d.sync += [remaining.eq(remaining - 1), last.eq(remaining == 2)]
                with m.If(last):
                    fsm.go("CRC_LO")
        step("CRC_LO", "CRC_HI")
        step("CRC_HI", "IDLE")
        return m


def _or_all(values):
    """Bitwise OR of equal-width values."""
    result = values[0]
    for v in values[1:]:
        result = result | v
    return result
