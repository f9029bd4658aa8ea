"""What the command executor answers: each answer's op and length, and its payload bytes.

The executor (:class:`trine.hw.executor.CommandExecutor`) decides *which* answer a request
gets (an :class:`AnswerKind`) and walks its bytes; :class:`AnswerSource` says what they are.
"""

from __future__ import annotations

import enum

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from trine.contract.protocol import ACK, MAX_PAYLOAD, NAK, RUN_ACK, STATUS_ACK, DeviceInfo, Op

__all__ = ["AnswerKind", "AnswerSource"]


class AnswerKind(enum.IntEnum):
    """The answers a request can get."""

    #: A WRITE's ACK, without payload.
    NONE = 0
    #: INFO's ACK: the :class:`~trine.contract.protocol.DeviceInfo`.
    INFO = 1
    #: STATUS's ACK (:data:`~trine.contract.protocol.STATUS_ACK`).
    STATUS = 2
    #: RUN's ACK: the run's cycles (:data:`~trine.contract.protocol.RUN_ACK`).
    CYCLES = 3
    #: A NAK: the request's op and the error code.
    NAK = 4
    #: READ's ACK: the bytes read.
    READ = 5


#: The answers whose op and length follow from the kind alone.
_FIXED = {AnswerKind.NONE: (Op.WRITE | ACK, 0), AnswerKind.INFO: (Op.INFO | ACK, DeviceInfo.SIZE),
          AnswerKind.STATUS: (Op.STATUS | ACK, STATUS_ACK.size),
          AnswerKind.CYCLES: (Op.RUN | ACK, RUN_ACK.size), AnswerKind.NAK: (NAK, 2)}


class AnswerSource(wiring.Component):
    """The op, length and payload bytes of an answer of ``kind``.

    ``op``, ``length`` and ``length_zero`` follow ``kind`` in the same cycle (a READ's length
    is ``read_count``). ``byte`` is payload byte ``index`` from the cycle after ``index`` and
    the sources last changed: INFO's bytes come from a ROM, STATUS's from the low byte of the
    executor's ``status`` shift register, a RUN's from ``cycles`` (little-endian), a NAK's are
    ``request_op`` and ``code``, a READ's are ``read_data`` (the core's read port). Every
    source but the NAK's two registers is registered here, so that no multiplexer of the
    executor's state reaches the byte.

    Parameters
    ----------
    info : trine.contract.protocol.DeviceInfo
        What INFO answers.

    Members
    -------
    kind : In(3)  :class:`AnswerKind`
    index : In(range(MAX_PAYLOAD + 1))
    request_op, code : In(8)
    read_count : In(16)
    read_count_zero : In(1)
        ``read_count == 0``, registered by the executor.
    read_data, status : In(8)
    cycles : In(32)
    op : Out(8)
    length : Out(16)
    length_zero : Out(1)
    byte : Out(8)

    Raises
    ------
    TypeError
        Unless ``info`` is a :class:`DeviceInfo`.
    """

    def __init__(self, info: DeviceInfo):
        if not isinstance(info, DeviceInfo):
            raise TypeError(f"info must be a trine.contract.protocol.DeviceInfo, not {info!r}")
        self.info = info
        super().__init__({
            "kind": In(3),
            "index": In(range(MAX_PAYLOAD + 1)),
            "request_op": In(8),
            "code": In(8),
            "read_count": In(16),
            "read_count_zero": In(1),
            "read_data": In(8),
            "status": In(8),
            "cycles": In(32),
            "op": Out(8),
            "length": Out(16),
            "length_zero": Out(1),
            "byte": Out(8),
        })

    def elaborate(self, platform):
        m = Module()
        index = self.index
        with m.Switch(self.kind):
            for kind, (op_value, n_bytes) in _FIXED.items():
                with m.Case(kind):
                    m.d.comb += [self.op.eq(op_value), self.length.eq(n_bytes),
                                 self.length_zero.eq(n_bytes == 0)]
            with m.Case(AnswerKind.READ):
                m.d.comb += [self.op.eq(Op.READ | ACK), self.length.eq(self.read_count),
                             self.length_zero.eq(self.read_count_zero)]

        # INFO's bytes: a ROM (a block RAM where there is one) read at the low bits of
        # `index`; as logic, the constant table would be several LUTs deep.
        info_bytes = self.info.to_bytes()
        info_bits = max(1, (len(info_bytes) - 1).bit_length())
        m.submodules.info_rom = info_rom = Memory(shape=8, depth=1 << info_bits,
                                                  init=info_bytes)
        info_read = info_rom.read_port()
        m.d.comb += info_read.addr.eq(index[:info_bits])
        status_byte = Signal(8)
        cycles_byte = Signal(8)
        m.d.sync += [
            status_byte.eq(self.status),
            cycles_byte.eq(self.cycles.word_select(index[:2], 8)),
        ]
        with m.Switch(self.kind):
            with m.Case(AnswerKind.INFO):
                m.d.comb += self.byte.eq(info_read.data)
            with m.Case(AnswerKind.STATUS):
                m.d.comb += self.byte.eq(status_byte)
            with m.Case(AnswerKind.CYCLES):
                m.d.comb += self.byte.eq(cycles_byte)
            with m.Case(AnswerKind.NAK):
                m.d.comb += self.byte.eq(Mux(index[0], self.code, self.request_op))
            with m.Case(AnswerKind.READ):
                m.d.comb += self.byte.eq(self.read_data)
        return m
