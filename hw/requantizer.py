"""The requantiser: blocks of the MAC array's accumulators to int8 activations, one per cycle.

For each block of ``rows`` accumulators the array offers, it takes the rows one per cycle and
computes ``clip((acc + bias) >> shift)`` (zero for a negative value when the layer has ReLU;
:func:`trine.contract.reference.requantize`). Where each row goes, which bias it gets and
whether it is written at all is not its business: it asks a destination port
(:class:`RowSignature`) per row, which the address generator answers.

Max-pooling is fused into the write-back: the requantiser keeps the running maximum of each
row over the positions of a pooling window (``dest.first`` starts a window afresh) and the
address generator lets only the window's last position write (requantisation is monotonic,
so the maximum of requantised values is the requantised maximum, as the reference has it).
The running maxima are a shift register of ``rows`` bytes that moves one row per row taken:
every position sends all ``rows`` rows in order, so the byte leaving it is the same row's
maximum so far. Pooling costs no cycle.

Ternary outputs (a layer with ``ternary_threshold`` ``t > 0``, on a device with
``params.ternary_act``): the byte written is -1, 0 or +1, ``+1 if y >= t, -1 if y <= -t``
for the clipped ``y`` (:func:`trine.contract.reference.ternarize`), one byte per activation
like an int8 one, so the next layer reads them unchanged. The trit is decided beside the
clipping, from the same bits (``y >= t`` and ``y <= -t`` are 7-bit compares with ``t`` and
``128 - t``: ``1 <= t <= 127``), so it adds no stage; pooling then takes the maximum of trits,
which is the trit of the maximum (ternarisation is monotonic), as the reference pools the
trits.

Pipeline, one row per stage and cycle: p1 (accumulator taken; bias read) -> p1b (bias
registered) -> p2 (sum) -> p3 (shifted) -> p4 (clipped) -> p5 (pooled, written). p1b keeps
the bias memory's output (and, when the memory is several block RAMs deep, their output
multiplexer) off the sum's carry chain.
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out

from trine.contract.device_image import BIAS_STORE_WIDTH, FLAG_FIELDS
from trine.contract.params import AcceleratorParams
from trine.contract.spec import ACT_MAX, ACT_MIN
from trine.hw.mac_array import mac_output_layout
from trine.hw.memories import PoolWriteSignature, address_width, byte_enable, pool_address_width
from trine.hw.params import ParamsSignature, check_params

__all__ = ["REQUANTIZER_CONFIG", "RowSignature", "Requantizer"]

#: A layer's requantisation: the right shift after the bias, ReLU, and the threshold of
#: ternary outputs (0: int8 outputs).
REQUANTIZER_CONFIG = data.StructLayout({
    "shift": unsigned(FLAG_FIELDS["shift"][1]), "relu": 1,
    "ternary_threshold": unsigned(FLAG_FIELDS["ternary_threshold"][1])})


class RowSignature(ParamsSignature):
    """Where a row goes, seen from the requantiser that asks.

    In a cycle with ``take`` high a row enters the requantiser; the other side answers in the
    same cycle with its destination, and steps to the next row's.

    Members
    -------
    take : Out(1)
        A row is taken in this cycle.
    last : Out(1)
        The row being taken is the last of its block (meaningful with ``take``).
    bias : In(range(params.bias_depth + 1))
        Bias-memory address of the row; the requantiser reads it there.
    word : In(pool_address_width(params))
    lane : In(range(params.lanes))
        Byte of the activation pool that gets the row's output.
    first : In(1)
        The row's position starts a pooling window (always, without pooling): its value
        replaces the row's running maximum instead of joining it.
    write : In(1)
        Whether to write the running maximum (rows past the layer's fan-out are computed and
        dropped, and so are positions before the last of a pooling window).
    """

    def __init__(self, params: AcceleratorParams):
        params = check_params(params)
        super().__init__(params, {
            "take": Out(1),
            "last": Out(1),
            "bias": In(range(params.bias_depth + 1)),
            "word": In(pool_address_width(params)),
            "lane": In(range(params.lanes)),
            "first": In(1),
            "write": In(1),
        })


class Requantizer(wiring.Component):
    """Turns blocks of accumulators into bytes of the destination buffer.

    A block is taken from ``i_stream`` when the previous block's last row is taken (or when
    none is held): ``i_stream.ready`` is high while no block is held and in the cycle the last
    row goes, so that blocks offered back to back take ``rows`` cycles each. A row's byte is on
    ``o_write`` six cycles after the cycle it is taken (unless ``dest.write`` was low). In a
    cycle with ``flush`` high the rows held or in the pipeline are dropped (``dest.take`` may
    still be high: the row it names is not written, and the destination side is set up again);
    a block offered in that cycle is not taken although ``i_stream.ready`` may be high, so its
    source must be flushed with it. The sum is exact: ``max(acc_width, BIAS_STORE_WIDTH) + 1``
    bits.

    Parameters
    ----------
    params : trine.contract.params.AcceleratorParams
    acc_width : int
        Width of the array's accumulators (:attr:`trine.hw.mac_array.MACArray.acc_width`).

    Members
    -------
    flush : In(1)
    config : In(REQUANTIZER_CONFIG)
        The layer's shift, ReLU and ternary threshold; held while the layer runs (the
        threshold from at least a cycle before the layer's first row is taken; it is ignored
        without ``params.ternary_act``).
    i_stream : In(stream.Signature(mac_output_layout(rows, acc_width)))
    dest : Out(RowSignature(params))
    biases : In(ReadPort.Signature(addr_width=address_width(bias_depth),
                                   shape=signed(BIAS_STORE_WIDTH)))
        A synchronous read port of the bias memory; read at ``dest.bias``.
    o_write : Out(PoolWriteSignature(params))
    busy : Out(1)
        A row is held or in the pipeline (a register).
    """

    def __init__(self, params: AcceleratorParams, acc_width: int):
        self.params = p = check_params(params)
        self.acc_width = acc_width
        super().__init__({
            "flush": In(1),
            "config": In(REQUANTIZER_CONFIG),
            "i_stream": In(stream.Signature(mac_output_layout(p.rows, acc_width))),
            "dest": Out(RowSignature(p)),
            "biases": In(ReadPort.Signature(addr_width=address_width(p.bias_depth),
                                            shape=signed(BIAS_STORE_WIDTH))),
            "o_write": Out(PoolWriteSignature(p)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        rows, lanes, acc_w = self.params.rows, self.params.lanes, self.acc_width
        flush, dest, a_out = self.flush, self.dest, self.i_stream

        # Data registers need no reset: the valid bits say what they hold.
        hold = Array(Signal(signed(acc_w), name=f"hold{r}", reset_less=True) for r in range(rows))
        holding = Signal()
        r = Signal(range(rows + 1))
        # r == rows - 1, kept as a register beside r: `last` starts the address generator's
        # end-of-position decisions, which should begin at a flip-flop, not at a comparator.
        last_row = Signal(init=rows == 1)
        m.d.comb += [
            a_out.ready.eq(~holding | last_row),
            # a row "taken" in a flush cycle is dropped; the address generator is set up
            # again before the next layer (flush does not reach its enables)
            dest.take.eq(holding),
            dest.last.eq(last_row),
            self.biases.addr.eq(dest.bias),
        ]

        p1_valid, p1b_valid, p2_valid, p3_valid, p4_valid = (
            Signal(name=n) for n in ("p1_valid", "p1b_valid", "p2_valid", "p3_valid",
                                     "p4_valid"))
        p1_acc = Signal(signed(acc_w), reset_less=True)
        p1b_acc = Signal(signed(acc_w), reset_less=True)
        p1b_bias = Signal(signed(BIAS_STORE_WIDTH), reset_less=True)
        p1b_we = Signal(reset_less=True)
        p1b_word = Signal.like(dest.word, reset_less=True)
        p1b_lane = Signal(range(lanes), reset_less=True)
        p1_we, p2_we, p3_we = (Signal(reset_less=True) for _ in range(3))
        p1_first, p1b_first, p2_first, p3_first, p4_first = (
            Signal(reset_less=True, name=f"p{n}_first") for n in ("1", "1b", "2", "3", "4"))
        p4_en = Signal(lanes)  # the destination byte's write enable
        p1_word, p2_word, p3_word, p4_word = (Signal.like(dest.word, reset_less=True)
                                              for _ in range(4))
        p1_lane, p2_lane, p3_lane = (Signal(range(lanes), reset_less=True) for _ in range(3))
        sum_w = max(acc_w, BIAS_STORE_WIDTH) + 1
        p2_sum = Signal(signed(sum_w), reset_less=True)
        p3_val = Signal(signed(sum_w), reset_less=True)
        p4_out = Signal(8, reset_less=True)

        p5_en = Signal(lanes)
        with m.If(flush):
            m.d.sync += [holding.eq(0), p1_valid.eq(0), p1b_valid.eq(0), p2_valid.eq(0),
                         p3_valid.eq(0), p4_valid.eq(0), p4_en.eq(0), p5_en.eq(0)]
        with m.Else():
            m.d.sync += p1_valid.eq(0)
            with m.If(holding):
                m.d.sync += [
                    p1_valid.eq(1),
                    p1_acc.eq(hold[r]),
                    p1_we.eq(dest.write),
                    p1_first.eq(dest.first),
                    p1_word.eq(dest.word),
                    p1_lane.eq(dest.lane),
                ]
                with m.If(last_row):
                    m.d.sync += holding.eq(0)
                with m.Else():
                    m.d.sync += [r.eq(r + 1), last_row.eq(r == rows - 2)]
            # after the last row of a block, the next block is taken in the same cycle
            with m.If(a_out.valid & a_out.ready):
                m.d.sync += [holding.eq(1), r.eq(0), last_row.eq(rows == 1)]
                m.d.sync += [hold[i].eq(a_out.payload[i]) for i in range(rows)]
            m.d.sync += [
                p1b_valid.eq(p1_valid), p2_valid.eq(p1b_valid), p3_valid.eq(p2_valid),
                p4_valid.eq(p3_valid),
                p4_en.eq(byte_enable(p3_valid & p3_we, p3_lane, lanes)),
                p5_en.eq(p4_en),
            ]

        # Clipping to int8 by bit tests (an AND / OR tree), not by comparators (carry chains):
        # v < -128 when negative and not all of bits 7.. set, v > 127 when non-negative and
        # any of them set.
        assert ACT_MIN == -(1 << 7) and ACT_MAX == (1 << 7) - 1
        clipped = Signal(8)
        negative = p3_val[-1]
        high = p3_val[7:]
        with m.If(self.config.relu & negative):
            m.d.comb += clipped.eq(0)
        with m.Elif(negative & ~high.all()):
            m.d.comb += clipped.eq(ACT_MIN & 0xFF)
        with m.Elif(~negative & high.any()):
            m.d.comb += clipped.eq(ACT_MAX)
        with m.Else():
            m.d.comb += clipped.eq(p3_val[:8])
        out = clipped
        if self.params.ternary_act:
            out = self._ternarize(m, p3_val, clipped)
        m.d.sync += [
            p1b_we.eq(p1_we), p1b_word.eq(p1_word), p1b_lane.eq(p1_lane), p1b_acc.eq(p1_acc),
            p1b_bias.eq(self.biases.data),
            p2_we.eq(p1b_we), p2_word.eq(p1b_word), p2_lane.eq(p1b_lane),
            p2_sum.eq(p1b_acc + p1b_bias),
            p3_we.eq(p2_we), p3_word.eq(p2_word), p3_lane.eq(p2_lane),
            p3_val.eq(p2_sum >> self.config.shift),
            p4_word.eq(p3_word), p4_out.eq(out),
            p1b_first.eq(p1_first), p2_first.eq(p1b_first), p3_first.eq(p2_first),
            p4_first.eq(p3_first),
        ]

        # p5: the running maximum of each row over its pooling window
        held = [Signal(signed(8), name=f"held{i}", reset_less=True) for i in range(rows)]
        value = p4_out.as_signed()
        pooled = Signal(signed(8))
        m.d.comb += pooled.eq(Mux(p4_first | (value > held[0]), value, held[0]))
        p5_word = Signal.like(p4_word, reset_less=True)
        p5_out = Signal(8, reset_less=True)
        m.d.sync += [p5_word.eq(p4_word), p5_out.eq(pooled)]
        with m.If(p4_valid):
            m.d.sync += [held[i].eq(held[i + 1]) for i in range(rows - 1)]
            m.d.sync += held[-1].eq(pooled)
        # busy: a row held or in the pipeline, or a byte still to be written. A register,
        # set from the next values of what it covers (the sequencer's decisions start at
        # it): a block taken, a row held or in p1 .. p3 (they move on), a byte enabled in p4.
        busy = Signal()
        with m.If(flush):
            m.d.sync += busy.eq(0)
        with m.Else():
            m.d.sync += busy.eq((a_out.valid & a_out.ready) | holding | p1_valid | p1b_valid |
                                p2_valid | p3_valid | p4_en.any())
        m.d.comb += [
            self.busy.eq(busy),
            self.o_write.word.eq(p5_word),
            self.o_write.value.eq(p5_out),
            self.o_write.lanes.eq(p5_en),
        ]
        return m

    def _ternarize(self, m: Module, v, clipped):
        """The byte of p4: the trit of ``v`` (p3's shifted sum) when the layer has a threshold,
        else ``clipped``. Bit tests and 7-bit compares, as the clipping: for ``v >= 0``,
        ``v >= t`` when a bit from 7 up is set or ``v[:7] >= t``; for ``v < 0``, ``v <= -t``
        when not every bit from 7 up is set (``v < -128``) or ``v[:7] <= 128 - t``
        (``v = v[:7] - 128``). With ReLU a negative ``v`` is 0, which is no trit but 0."""
        t = self.config.ternary_threshold
        # registered from the held config: no subtractor before the compare
        ternary = Signal()
        limit = Signal(len(t))  # 128 - t, in 1 .. 127 when t is
        m.d.sync += [ternary.eq(t != 0), limit.eq((1 << len(t)) - t)]
        negative, high, low = v[-1], v[7:], v[:7]
        plus = ~negative & (high.any() | (low >= t))
        minus = negative & ~self.config.relu & (~high.all() | (low <= limit))
        trit = Signal(8)
        with m.If(plus):
            m.d.comb += trit.eq(1)
        with m.Elif(minus):
            m.d.comb += trit.eq(0xFF)
        return Mux(ternary, trit, clipped)
