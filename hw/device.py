"""The whole device: link, command executor and accelerator core.

:class:`LinkedAccelerator` speaks the frame protocol of :mod:`hw.protocol` over byte streams;
:class:`Top` adds the UART and has just two pins, ``rx`` and ``tx``, so it is board-agnostic.
A simulator can drive :class:`LinkedAccelerator`'s byte streams directly (the fast, byte-level
mode) or :class:`Top`'s pins bit by bit (the UART exercised too).

The command executor handles one frame at a time (the host is stop-and-wait): it parses the
request from the receiver's payload memory, checks every address *before* it writes anything
(a WRITE or READ that would leave its memory is refused whole with ``BAD_ADDRESS``), executes,
answers with an ACK or a NAK, and only then releases the receiver. Copying costs two cycles per
byte, against at least 40 for a UART byte. Addresses advance by counting, never by multiplying.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.core import AcceleratorCore
from hw.image import BIAS_STORE_BYTES, LAYER_ENTRY_SIZE
from hw.link import FrameReceiver, FrameTransmitter, frame_timeout_cycles
from hw.protocol import (
    ACK,
    MAX_PAYLOAD,
    NAK,
    PROTOCOL_VERSION,
    RUN_ACK,
    STATUS_ACK,
    WRITE_HEADER,
    DeviceInfo,
    ErrorCode,
    Op,
    Target,
)
from hw.spec import SPEC_VERSION
from hw.uart import UARTRx, UARTTx, baud_divisor

__all__ = ["LinkedAccelerator", "Top"]

STATUS_SIZE = STATUS_ACK.size
_RUN_ARGS, _READ_ARGS = 3, 7


class LinkedAccelerator(wiring.Component):
    """The accelerator core behind the frame protocol, on byte streams.

    Parameters
    ----------
    lanes, rows, weight_words, bias_depth, max_layers, max_width, max_batch, decoder, weight_memory
        Passed to :class:`hw.core.AcceleratorCore`.
    timeout_cycles : int
        Inter-byte timeout of the frame receiver.
    clock_hz, baud : int
        Reported by INFO (the host derives nothing from them but time estimates).

    Members
    -------
    i_stream : In(stream.Signature(8))   bytes from the host
    o_stream : Out(stream.Signature(8))  bytes to the host
    """

    def __init__(self, lanes: int, rows: int, *, weight_words: int, bias_depth: int,
                 max_layers: int, max_width: int, max_batch: int = 1,
                 timeout_cycles: int, clock_hz: int = 0, baud: int = 0, decoder: str = "rom",
                 weight_memory: str = "generic"):
        self.core = AcceleratorCore(lanes, rows, weight_words=weight_words,
                                    bias_depth=bias_depth, max_layers=max_layers,
                                    max_width=max_width, max_batch=max_batch, decoder=decoder,
                                    weight_memory=weight_memory)
        self.receiver = FrameReceiver(MAX_PAYLOAD, timeout_cycles=timeout_cycles)
        self.transmitter = FrameTransmitter()
        self.info = DeviceInfo(
            spec_version=SPEC_VERSION, protocol_version=PROTOCOL_VERSION, lanes=lanes,
            rows=rows, max_layers=max_layers, max_batch=max_batch, stride=self.core.stride,
            max_payload=MAX_PAYLOAD, max_width=max_width, weight_words=weight_words,
            bias_depth=bias_depth, clock_hz=clock_hz, baud=baud,
        )
        super().__init__({
            "i_stream": In(self.receiver.i_stream.signature.flip()),
            "o_stream": Out(self.transmitter.o_stream.signature),
        })

    def elaborate(self, platform):
        m = Module()
        core, rx, tx = self.core, self.receiver, self.transmitter
        m.submodules.core, m.submodules.receiver, m.submodules.transmitter = core, rx, tx
        wiring.connect(m, wiring.flipped(self.i_stream), rx.i_stream)
        wiring.connect(m, tx.o_stream, wiring.flipped(self.o_stream))

        frame = rx.o_frame.payload
        op, seq, length = Signal(8), Signal(8), Signal(16)
        args = Array(Signal(8, name=f"arg{i}") for i in range(_READ_ARGS))
        index = Signal(16)  # payload byte being parsed or copied
        remaining = Signal(16)

        # The memory a WRITE or READ addresses, and its geometry.
        target = Signal(8)
        buffer = Signal()  # a READ's activation buffer
        word = Signal(32)
        lane = Signal(8)
        sizes = {Target.WEIGHTS: (core.beat_bytes, core.weight_words),
                 Target.BIAS: (BIAS_STORE_BYTES, core.bias_depth),
                 Target.LAYER: (LAYER_ENTRY_SIZE, core.max_layers),
                 Target.INPUT: (core.lanes, core.buffer_words)}
        word_size = Array(Const(sizes[t][0], 8) for t in Target)[target[:2]]
        depth = Array(Const(sizes[t][1], 32) for t in Target)[target[:2]]

        # The answer: op, length and where its bytes come from.
        r_op, r_len, r_code = Signal(8), Signal(16), Signal(8)
        r_kind = Signal(3)
        KIND_NONE, KIND_INFO, KIND_STATUS, KIND_CYCLES, KIND_NAK, KIND_READ = range(6)

        runs = Signal(32)
        cache_valid, cache_seq, cache_error = Signal(), Signal(8), Signal(8)
        cache_cycles = Signal(32)
        status = Signal(8 * STATUS_SIZE)

        m.d.comb += [
            core.wr_target.eq(target[:2]),
            core.wr_addr.eq(word),
            core.wr_lane.eq(lane),
            core.wr_data.eq(rx.payload_data),
            core.rd_buffer.eq(buffer),
            core.rd_addr.eq(word),
            core.rd_lane.eq(lane),
            core.n_layers.eq(args[0]),
            core.batch.eq(Cat(args[1], args[2])),
            rx.payload_addr.eq(index),
        ]

        def answer(kind, op_value, n_bytes):
            m.d.sync += [r_kind.eq(kind), r_op.eq(op_value), r_len.eq(n_bytes)]
            m.next = "ANSWER"

        def nak(code):
            m.d.sync += r_code.eq(code)
            answer(KIND_NAK, NAK, 2)

        def step_word():
            with m.If(lane == word_size - 1):
                m.d.sync += [lane.eq(0), word.eq(word + 1)]
            with m.Else():
                m.d.sync += lane.eq(lane + 1)

        info_bytes = self.info.to_bytes()
        out_byte = Signal(8)
        with m.Switch(r_kind):
            with m.Case(KIND_INFO):
                m.d.comb += out_byte.eq(Array(Const(b, 8) for b in info_bytes)[index])
            with m.Case(KIND_STATUS):
                m.d.comb += out_byte.eq(status.word_select(index[:4], 8))
            with m.Case(KIND_CYCLES):
                m.d.comb += out_byte.eq(cache_cycles.word_select(index[:2], 8))
            with m.Case(KIND_NAK):
                m.d.comb += out_byte.eq(Mux(index[0], r_code, op))
            with m.Case(KIND_READ):
                m.d.comb += out_byte.eq(core.rd_data)

        with m.FSM():
            with m.State("IDLE"):
                m.d.sync += index.eq(0)
                with m.If(rx.o_frame.valid):
                    m.d.sync += [op.eq(frame.op), seq.eq(frame.seq), length.eq(frame.length)]
                    with m.If(frame.error != 0):
                        m.d.sync += [op.eq(frame.op), r_code.eq(frame.error)]
                        answer(KIND_NAK, NAK, 2)
                    with m.Else():
                        m.next = "DISPATCH"

            with m.State("DISPATCH"):
                with m.Switch(op):
                    with m.Case(Op.INFO):
                        with m.If(length != 0):
                            nak(ErrorCode.BAD_LENGTH)
                        with m.Else():
                            m.d.sync += cache_valid.eq(0)
                            answer(KIND_INFO, Op.INFO | ACK, len(info_bytes))
                    with m.Case(Op.STATUS):
                        with m.If(length != 0):
                            nak(ErrorCode.BAD_LENGTH)
                        with m.Else():
                            m.d.sync += status.eq(Cat(core.busy, Const(0, 7), core.error,
                                                      core.cycles, runs))
                            answer(KIND_STATUS, Op.STATUS | ACK, STATUS_SIZE)
                    with m.Case(Op.WRITE):
                        with m.If(length < WRITE_HEADER):
                            nak(ErrorCode.BAD_LENGTH)
                        with m.Else():
                            m.d.sync += [remaining.eq(WRITE_HEADER), cache_valid.eq(0)]
                            m.next = "PARSE"
                    with m.Case(Op.RUN):
                        with m.If(length != _RUN_ARGS):
                            nak(ErrorCode.BAD_LENGTH)
                        with m.Else():
                            m.d.sync += remaining.eq(_RUN_ARGS)
                            m.next = "PARSE"
                    with m.Case(Op.READ):
                        with m.If(length != _READ_ARGS):
                            nak(ErrorCode.BAD_LENGTH)
                        with m.Else():
                            m.d.sync += remaining.eq(_READ_ARGS)
                            m.next = "PARSE"
                    with m.Default():
                        nak(ErrorCode.UNKNOWN_OPCODE)

            # Copy the fixed arguments out of the payload memory (read latency: one cycle).
            with m.State("PARSE"):
                m.next = "PARSE_TAKE"
            with m.State("PARSE_TAKE"):
                m.d.sync += [args[index].eq(rx.payload_data), index.eq(index + 1)]
                with m.If(index + 1 == remaining):
                    m.next = "DECODE"
                with m.Else():
                    m.next = "PARSE"

            with m.State("DECODE"):
                m.d.sync += [target.eq(args[0]), word.eq(Cat(args[1], args[2], args[3], args[4])),
                             lane.eq(0)]
                with m.Switch(op):
                    with m.Case(Op.WRITE):
                        m.d.sync += remaining.eq(length - WRITE_HEADER)
                        with m.If(args[0] > max(Target)):
                            nak(ErrorCode.BAD_ARGUMENT)
                        with m.Else():
                            m.next = "CHECK"
                    with m.Case(Op.READ):
                        m.d.sync += [remaining.eq(Cat(args[5], args[6])), target.eq(Target.INPUT)]
                        with m.If((args[0] > 1) | (Cat(args[5], args[6]) > MAX_PAYLOAD)):
                            nak(ErrorCode.BAD_ARGUMENT)
                        with m.Else():
                            m.d.sync += buffer.eq(args[0][0])
                            m.next = "CHECK"
                    with m.Case(Op.RUN):
                        with m.If(cache_valid & (cache_seq == seq)):
                            m.next = "RUN_DONE"  # a retry: answer from memory, do not rerun
                        with m.Else():
                            m.d.comb += core.start.eq(1)
                            m.next = "RUN_WAIT"

            # Walk the addresses a WRITE or READ will touch before touching any.
            with m.State("CHECK"):
                with m.If(remaining == 0):
                    m.d.sync += [word.eq(Cat(args[1], args[2], args[3], args[4])), lane.eq(0),
                                 index.eq(WRITE_HEADER)]
                    with m.If(op == Op.WRITE):
                        m.d.sync += remaining.eq(length - WRITE_HEADER)
                        m.next = "WRITE"
                    with m.Else():
                        m.d.sync += remaining.eq(Cat(args[5], args[6]))
                        answer(KIND_READ, Op.READ | ACK, Cat(args[5], args[6]))
                with m.Elif(word >= depth):
                    nak(ErrorCode.BAD_ADDRESS)
                with m.Else():
                    m.d.sync += remaining.eq(remaining - 1)
                    step_word()

            with m.State("WRITE"):
                with m.If(remaining == 0):
                    answer(KIND_NONE, Op.WRITE | ACK, 0)
                with m.Else():
                    m.next = "WRITE_TAKE"  # payload_data is valid in the next cycle
            with m.State("WRITE_TAKE"):
                m.d.comb += core.wr_en.eq(1)
                m.d.sync += [index.eq(index + 1), remaining.eq(remaining - 1)]
                step_word()
                m.next = "WRITE"

            with m.State("RUN_WAIT"):
                with m.If(~core.busy):
                    m.d.sync += [cache_valid.eq(1), cache_seq.eq(seq), cache_error.eq(core.error),
                                 cache_cycles.eq(core.cycles), runs.eq(runs + 1)]
                    m.next = "RUN_DONE"
            with m.State("RUN_DONE"):
                with m.If(cache_error != 0):
                    m.d.sync += r_code.eq(cache_error)
                    answer(KIND_NAK, NAK, 2)
                with m.Else():
                    answer(KIND_CYCLES, Op.RUN | ACK, RUN_ACK.size)

            # Hand the header to the transmitter, then the payload bytes, then release the
            # receiver for the next frame.
            with m.State("ANSWER"):
                m.d.comb += [
                    tx.i_frame.valid.eq(1),
                    tx.i_frame.payload.op.eq(r_op),
                    tx.i_frame.payload.seq.eq(seq),
                    tx.i_frame.payload.length.eq(r_len),
                ]
                with m.If(tx.i_frame.ready):
                    m.d.sync += [index.eq(0), remaining.eq(r_len)]
                    m.next = "SEND_FETCH"
            with m.State("SEND_FETCH"):
                # one cycle for core.rd_data (READ) to follow word / lane
                with m.If(remaining == 0):
                    m.d.comb += rx.o_frame.ready.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [tx.i_stream.valid.eq(1), tx.i_stream.payload.eq(out_byte)]
                with m.If(tx.i_stream.ready):
                    m.d.sync += [index.eq(index + 1), remaining.eq(remaining - 1)]
                    with m.If(r_kind == KIND_READ):
                        step_word()
                    m.next = "SEND_FETCH"
        return m


class Top(wiring.Component):
    """The device with a UART: two pins, ``rx`` and ``tx``.

    Parameters
    ----------
    clk_freq : int
        Clock frequency in Hz.
    baud : int
        UART baud rate (8N1); ``clk_freq / baud`` must be >= 4 and within 2% of an integer.
    **kwargs
        Accelerator parameters, as for :class:`LinkedAccelerator`.
    """

    def __init__(self, clk_freq: int, baud: int, **kwargs):
        self.divisor = baud_divisor(clk_freq, baud)
        self.device = LinkedAccelerator(timeout_cycles=frame_timeout_cycles(self.divisor),
                                        clock_hz=clk_freq, baud=baud, **kwargs)
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
