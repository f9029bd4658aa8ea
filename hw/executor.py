"""The command executor: one request frame in, one answer frame out.

It handles one frame at a time (the host is stop-and-wait, :mod:`trine.contract.protocol`):
it parses the request from the receiver's payload memory, checks every address *before* it
writes anything (a WRITE or READ that would leave its memory is refused whole with
``BAD_ADDRESS``), executes it on the accelerator core's host port
(:class:`trine.hw.host_port.HostPortSignature`), answers with an ACK or a NAK, and only then
releases the receiver. Checking and copying take two cycles per byte each, sending four, far
fewer than a UART byte. A RUN repeated with the same sequence number (a retry) is answered
from the last run's result without running again; an INFO or a WRITE forgets that result.
Addresses advance by counting, never by multiplying.

For timing, the executor is a one-hot state machine (:class:`trine.hw.onehot.OneHotFSM`) that
decides only on registered flags: a frame's opcode and length are decoded when it is taken,
its fate is registered before it is acted upon, counters step from registered sums, the
address check compares registers, and the byte to send is registered before it reaches the
transmitter.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out

from trine.contract.device_image import BIAS_STORE_BYTES, TABLE_WORD_BYTES
from trine.contract.params import AcceleratorParams
from trine.contract.protocol import (
    MAX_PAYLOAD,
    STATUS_ACK,
    WRITE_HEADER,
    DeviceInfo,
    ErrorCode,
    Op,
    Target,
)
from trine.hw.answers import AnswerKind, AnswerSource
from trine.hw.host_port import TARGET_WIDTH, HostPortSignature
from trine.hw.link import FRAME_EVENT_LAYOUT, FRAME_HEADER_LAYOUT
from trine.hw.memories import address_width, host_read_latency
from trine.hw.onehot import OneHotFSM
from trine.hw.params import check_params

__all__ = ["STATUS_SIZE", "CommandExecutor"]

STATUS_SIZE = STATUS_ACK.size
_RUN_ARGS, _READ_ARGS = 3, 7
#: The states, the first one initial: take a frame, parse its arguments, check its addresses,
#: write, run, answer.
_STATES = ("IDLE", "DISPATCH", "ROUTE",
           "PARSE", "PARSE_TAKE", "DECODE", "VALIDATE",
           "CHECK", "CHECK_STEP", "CHECK_END", "CHECK_DONE",
           "WRITE", "WRITE_TAKE",
           "RUN_START", "RUN_WAIT", "RUN_END", "RUN_DONE",
           "ANSWER_PREP", "ANSWER", "ANSWERED", "SEND_FETCH", "SEND_LATCH", "SEND", "SENT")


class CommandExecutor(wiring.Component):
    """Executes request frames on the core and answers each.

    A frame is taken from ``i_frame`` (a :class:`trine.hw.link.FrameReceiver` event, its
    payload readable at ``payload``); the answer's header goes out on ``o_frame`` and its
    payload bytes on ``o_stream``, for a :class:`trine.hw.link.FrameTransmitter`;
    ``i_frame.ready`` is raised for one cycle after the last byte of the answer has been taken.

    Parameters
    ----------
    params : trine.contract.params.AcceleratorParams
        The core's memories (depths and word sizes, for the address checks).
    info : trine.contract.protocol.DeviceInfo
        What INFO answers.

    Members
    -------
    i_frame : In(stream.Signature(trine.hw.link.FRAME_EVENT_LAYOUT))
    payload : In(ReadPort.Signature(addr_width=address_width(MAX_PAYLOAD), shape=8))
    o_frame : Out(stream.Signature(trine.hw.link.FRAME_HEADER_LAYOUT))
    o_stream : Out(stream.Signature(8))
    core : Out(trine.hw.host_port.HostPortSignature(params))

    Raises
    ------
    ParameterTypeError
        Unless ``params`` is an :class:`AcceleratorParams`.
    TypeError
        Unless ``info`` is a :class:`DeviceInfo`.
    """

    def __init__(self, params: AcceleratorParams, info: DeviceInfo):
        self.params = p = check_params(params)
        self.answers = AnswerSource(info)
        self.info = info
        super().__init__({
            "i_frame": In(stream.Signature(FRAME_EVENT_LAYOUT)),
            "payload": In(ReadPort.Signature(addr_width=address_width(MAX_PAYLOAD), shape=8)),
            "o_frame": Out(stream.Signature(FRAME_HEADER_LAYOUT)),
            "o_stream": Out(stream.Signature(8)),
            "core": Out(HostPortSignature(p)),
        })

    def elaborate(self, platform):
        m = Module()
        p, core = self.params, self.core

        # Timing: every decision below is taken on flags registered a cycle or more before
        # (comparators and opcode decoders never feed the state machine directly), and the
        # byte being sent is registered before it reaches the transmitter's CRC.
        frame = self.i_frame.payload
        op = Signal(8)
        seq = Signal(8)
        data_len = Signal(16)
        args = Array(Signal(8, name=f"arg{i}") for i in range(_READ_ARGS))
        index = Signal(range(MAX_PAYLOAD + 1))  # payload byte being parsed, copied or sent
        remaining = Signal(range(MAX_PAYLOAD + 1))
        rem_zero = Signal()  # remaining == 0, kept up to date with it
        n_args = Signal(range(_READ_ARGS + 1))
        parse_last = Signal()

        # Flags of the frame, registered when it is taken.
        f_error = Signal(8)
        f_bad = Signal()
        is_info, is_status, is_write, is_run, is_read = (
            Signal(name=n) for n in ("is_info", "is_status", "is_write", "is_run", "is_read"))
        len_zero, len_header, len_write_ok, len_run_ok, len_read_ok = (
            Signal(name=n) for n in ("len_zero", "len_header", "len_write_ok", "len_run_ok",
                                     "len_read_ok"))
        seq_hit = Signal()  # a RUN retry: answered from the cache

        # The memory a WRITE or READ addresses, and its geometry.
        target = Signal(TARGET_WIDTH)
        word = Signal(33)  # a u32 argument plus up to MAX_PAYLOAD words: never wraps
        last_word = Signal.like(word)
        touched = Signal()
        over = Signal()
        lane = Signal(8)
        lane_last = Signal()  # lane is the last byte of its word
        sizes = {Target.WEIGHTS: (p.beat_bytes, p.weight_words),
                 Target.BIAS: (BIAS_STORE_BYTES, p.bias_depth),
                 Target.LAYER: (TABLE_WORD_BYTES, p.table_words),
                 Target.INPUT: (p.lanes, p.act_words)}
        one_byte_words = Array(Const(sizes[t][0] == 1, 1) for t in Target)[target]
        lane_before_last = Array(Const(max(sizes[t][0] - 2, 0), 8) for t in Target)[target]
        depth_bits = max(sizes[t][1] for t in Target).bit_length()
        depth = Signal(depth_bits)  # of the target memory, registered (set in VALIDATE)
        bad_target = Signal()
        read_bad = Signal()
        count_zero = Signal()
        count = Cat(args[5], args[6])

        # The answer: its kind (what it says comes from an AnswerSource), op and length.
        r_code = Signal(8)
        send_byte = Signal(8, reset_less=True)
        r_kind = Signal(3)
        m.submodules.answers = source = self.answers
        r_op = Signal(8)
        r_len = Signal(16)
        r_len_zero = Signal()

        runs = Signal(32)
        cache_valid = Signal()
        cache_seq = Signal(8)
        cache_error = Signal(8)
        cache_failed = Signal()
        cache_cycles = Signal(32)
        status = Signal(8 * STATUS_SIZE)

        m.d.comb += [
            self.o_frame.payload.op.eq(r_op),
            self.o_frame.payload.seq.eq(seq),
            self.o_frame.payload.length.eq(r_len),
            self.o_stream.payload.eq(send_byte),
            core.write.target.eq(target),
            core.write.addr.eq(word),
            core.write.lane.eq(lane),
            core.write.data.eq(self.payload.data),
            core.read.target.eq(target),
            core.read.addr.eq(word),
            core.read.lane.eq(lane),
            core.run.n_layers.eq(args[0]),
            core.run.batch.eq(Cat(args[1], args[2])),
            self.payload.addr.eq(index),
        ]

        # The transmitter's valid bits come from registers, not from the state decoder.
        frame_valid = Signal()
        byte_valid = Signal()
        m.d.comb += [self.o_frame.valid.eq(frame_valid), self.o_stream.valid.eq(byte_valid)]

        # With registered RAM output a READ's byte comes a cycle or two later.
        waits = tuple(f"SEND_WAIT{i}" for i in range(host_read_latency(p) - 1))
        fsm = OneHotFSM(m, _STATES + waits)

        def answer(kind):
            m.d.sync += r_kind.eq(kind)
            fsm.go("ANSWER_PREP")

        def nak(code):
            m.d.sync += r_code.eq(code)
            answer(AnswerKind.NAK)

        def load_remaining(value, zero):
            m.d.sync += [remaining.eq(value), rem_zero.eq(zero)]

        # Counters step from registered sums (x + 1 computed in the cycle before, from x alone),
        # so that no carry chain follows the state logic that decides to step. Every state
        # that steps one is entered at least a cycle after the counter last changed.
        remaining_dec = Signal.like(remaining)
        word_inc = Signal.like(word)
        lane_inc = Signal.like(lane)
        index_inc = Signal.like(index)
        m.d.sync += [remaining_dec.eq(remaining - 1), word_inc.eq(word + 1),
                     lane_inc.eq(lane + 1), index_inc.eq(index + 1)]

        def count_down():
            m.d.sync += [remaining.eq(remaining_dec), rem_zero.eq(remaining == 1)]

        def first_lane():
            m.d.sync += [lane.eq(0), lane_last.eq(one_byte_words)]

        def step_word():
            with m.If(lane_last):
                m.d.sync += [lane.eq(0), word.eq(word_inc), lane_last.eq(one_byte_words)]
            with m.Else():
                m.d.sync += [lane.eq(lane_inc), lane_last.eq(lane == lane_before_last)]

        m.d.comb += [
            source.kind.eq(r_kind), source.index.eq(index), source.request_op.eq(op),
            source.code.eq(r_code), source.read_count.eq(count),
            source.read_count_zero.eq(count_zero), source.read_data.eq(core.read.data),
            source.status.eq(status[:8]), source.cycles.eq(cache_cycles),
        ]

        with fsm.state("IDLE"):
            m.d.sync += index.eq(0)
            with m.If(self.i_frame.valid):
                m.d.sync += [
                    op.eq(frame.op), seq.eq(frame.seq),
                    data_len.eq(frame.length - WRITE_HEADER),  # a WRITE's data bytes
                    f_error.eq(frame.error), f_bad.eq(frame.error != 0),
                    is_info.eq(frame.op == Op.INFO), is_status.eq(frame.op == Op.STATUS),
                    is_write.eq(frame.op == Op.WRITE), is_run.eq(frame.op == Op.RUN),
                    is_read.eq(frame.op == Op.READ),
                    len_zero.eq(frame.length == 0),
                    len_header.eq(frame.length == WRITE_HEADER),
                    len_write_ok.eq(frame.length >= WRITE_HEADER),
                    len_run_ok.eq(frame.length == _RUN_ARGS),
                    len_read_ok.eq(frame.length == _READ_ARGS),
                    seq_hit.eq(cache_valid & (frame.seq == cache_seq)),
                ]
                fsm.go("DISPATCH")

        # The frame's fate is decided from its flags, registered, then acted upon.
        bad_length = Signal()
        known = Signal()
        m.d.comb += [
            bad_length.eq(((is_info | is_status) & ~len_zero) | (is_write & ~len_write_ok) |
                          (is_run & ~len_run_ok) | (is_read & ~len_read_ok)),
            known.eq(is_info | is_status | is_write | is_run | is_read),
        ]
        refuse = Signal()
        refusal = Signal(8)
        with fsm.state("DISPATCH"):
            m.d.sync += [
                refuse.eq(f_bad | bad_length | ~known),
                refusal.eq(Mux(f_bad, f_error, Mux(bad_length, ErrorCode.BAD_LENGTH,
                                                   ErrorCode.UNKNOWN_OPCODE))),
                n_args.eq(Mux(is_write, WRITE_HEADER, Mux(is_run, _RUN_ARGS, _READ_ARGS))),
                parse_last.eq(0),
            ]
            fsm.go("ROUTE")
        with fsm.state("ROUTE"):
            with m.If(refuse):
                nak(refusal)
            with m.Elif(is_info):
                m.d.sync += cache_valid.eq(0)
                answer(AnswerKind.INFO)
            with m.Elif(is_status):
                m.d.sync += status.eq(Cat(core.run.busy, Const(0, 7), core.run.error,
                                          core.run.cycles, runs))
                answer(AnswerKind.STATUS)
            with m.Else():
                with m.If(is_write):
                    m.d.sync += cache_valid.eq(0)
                fsm.go("PARSE")

        # Copy the fixed arguments out of the payload memory (read latency: one cycle).
        with fsm.state("PARSE"):
            m.d.sync += parse_last.eq(index_inc == n_args)
            fsm.go("PARSE_TAKE")
        with fsm.state("PARSE_TAKE"):
            m.d.sync += [args[index[:3]].eq(self.payload.data), index.eq(index_inc)]
            with m.If(parse_last):
                fsm.go("DECODE")
            with m.Else():
                fsm.go("PARSE")

        with fsm.state("DECODE"):
            m.d.sync += [
                target.eq(args[0][:TARGET_WIDTH]),
                word.eq(Cat(args[1], args[2], args[3], args[4])),
                touched.eq(0),
                bad_target.eq(args[0] > max(Target)),
                read_bad.eq(~Const(self.info.readable, 16).bit_select(args[0][:4], 1) |
                            (args[0][4:] != 0) | (count > MAX_PAYLOAD)),
                count_zero.eq(count == 0),
            ]
            with m.If(is_run):
                with m.If(seq_hit):
                    fsm.go("RUN_DONE")  # a retry: answer from memory, do not rerun
                with m.Else():
                    fsm.go("RUN_START")
            with m.Else():
                fsm.go("VALIDATE")
        with fsm.state("VALIDATE"):
            m.d.sync += depth.eq(Array(Const(sizes[t][1], depth_bits) for t in Target)[target])
            first_lane()
            with m.If(is_write):
                load_remaining(data_len, len_header)
                with m.If(bad_target):
                    nak(ErrorCode.BAD_ARGUMENT)
                with m.Else():
                    fsm.go("CHECK")
            with m.Else():
                load_remaining(count, count_zero)
                with m.If(read_bad):
                    nak(ErrorCode.BAD_ARGUMENT)
                with m.Else():
                    fsm.go("CHECK")

        # Walk the addresses a WRITE or READ will touch before touching any. They only
        # increase (and `word` is wide enough not to wrap), so the last one is the one to
        # check, with a wide comparator in a state of its own.
        with fsm.state("CHECK"):
            with m.If(rem_zero):
                fsm.go("CHECK_END")
            with m.Else():
                fsm.go("CHECK_STEP")
        with fsm.state("CHECK_STEP"):
            count_down()
            m.d.sync += [last_word.eq(word), touched.eq(1)]
            step_word()
            fsm.go("CHECK")
        with fsm.state("CHECK_END"):
            # a short comparator on the low bits, an OR on the high ones
            m.d.sync += over.eq(touched & (last_word[depth_bits:].any() |
                                           (last_word[:depth_bits] >= depth)))
            fsm.go("CHECK_DONE")
        with fsm.state("CHECK_DONE"):
            # the loads do not depend on `over`: on a NAK they are simply not used
            m.d.sync += [word.eq(Cat(args[1], args[2], args[3], args[4])),
                         index.eq(WRITE_HEADER)]
            first_lane()
            load_remaining(Mux(is_write, data_len, count), Mux(is_write, len_header, count_zero))
            with m.If(over):
                nak(ErrorCode.BAD_ADDRESS)
            with m.Elif(is_write):
                fsm.go("WRITE")
            with m.Else():
                answer(AnswerKind.READ)

        with fsm.state("WRITE"):
            with m.If(rem_zero):
                answer(AnswerKind.NONE)
            with m.Else():
                fsm.go("WRITE_TAKE")  # payload_data is valid in the next cycle
        with fsm.state("WRITE_TAKE"):
            m.d.comb += core.write.en.eq(1)
            m.d.sync += index.eq(index_inc)
            count_down()
            step_word()
            fsm.go("WRITE")

        with fsm.state("RUN_START"):
            # the core raises busy in the cycle after its start strobe
            m.d.comb += core.run.start.eq(1)
            fsm.go("RUN_WAIT")
        # Handshakes (the core's busy, the transmitter's ready) only choose the next state:
        # the registers move in a state of their own.
        with fsm.state("RUN_WAIT"):
            with m.If(~core.run.busy):
                fsm.go("RUN_END")
        with fsm.state("RUN_END"):
            m.d.sync += [cache_valid.eq(1), cache_seq.eq(seq), cache_error.eq(core.run.error),
                         cache_failed.eq(core.run.error != 0), cache_cycles.eq(core.run.cycles),
                         runs.eq(runs + 1)]
            fsm.go("RUN_DONE")
        with fsm.state("RUN_DONE"):
            with m.If(cache_failed):
                nak(cache_error)
            with m.Else():
                answer(AnswerKind.CYCLES)

        # Hand the header to the transmitter, then the payload bytes, then release the
        # receiver for the next frame.
        with fsm.state("ANSWER_PREP"):
            m.d.sync += [r_op.eq(source.op), r_len.eq(source.length),
                         r_len_zero.eq(source.length_zero), frame_valid.eq(1)]
            fsm.go("ANSWER")
        with fsm.state("ANSWER"):
            with m.If(self.o_frame.ready):
                m.d.sync += frame_valid.eq(0)
                fsm.go("ANSWERED")
        with fsm.state("ANSWERED"):
            m.d.sync += index.eq(0)
            load_remaining(r_len, r_len_zero)
            fsm.go("SEND_FETCH")
        with fsm.state("SEND_FETCH"):
            # one cycle for core.read.data and the registered bytes to follow index / word / lane
            with m.If(rem_zero):
                m.d.comb += self.i_frame.ready.eq(1)
                fsm.go("IDLE")
            with m.Else():
                fsm.go((*waits, "SEND_LATCH")[0])
        for state, after in zip(waits, (*waits, "SEND_LATCH")[1:], strict=True):
            with fsm.state(state):
                fsm.go(after)
        with fsm.state("SEND_LATCH"):
            m.d.sync += [send_byte.eq(source.byte), byte_valid.eq(1)]
            fsm.go("SEND")
        with fsm.state("SEND"):
            with m.If(self.o_stream.ready):
                m.d.sync += byte_valid.eq(0)
                fsm.go("SENT")
        with fsm.state("SENT"):
            # STATUS leaves from a shift register: a byte multiplexer over all of it is several
            # LUTs deep. Other answers shift it too; it is loaded again by the next STATUS.
            m.d.sync += [index.eq(index_inc), status.eq(status >> 8)]
            count_down()
            step_word()  # a READ's next byte; for other answers word and lane do not matter
            fsm.go("SEND_FETCH")
        return m


