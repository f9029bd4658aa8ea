"""The address generator: every loop of a layer, as counters that step by increments.

A dense layer of ``blocks x rows`` outputs over ``chunks x lanes`` inputs, for ``batch``
samples, is two loop nests that run at once:

* the *issue* side, one beat per weight word::

      for sample in range(batch):             # b, counting down
          for block in range(blocks):         # j
              for chunk in range(chunks):     # c
                  beat(weight = weight_base + block * chunks + chunk,
                       act = sample * stride + chunk, last = chunk == chunks - 1)

* the *output* side, one destination per row the requantiser takes::

      for sample in range(batch):
          for block in range(blocks):
              for row in range(rows):         # counted by the requantiser
                  m = block * rows + row
                  dest(bias = bias_base + m, word = sample * stride + m // lanes,
                       lane = m % lanes, write = m < fan_out)

Nothing is multiplied: addresses advance by one or jump back to a base, the loop counters
count down from bounds the sequencer has prepared (:func:`loop_config_layout`), and each
counter's end flag is a register beside it (a comparator in the issue path would reach every
counter's enable).

The feed never stalls: every stage advances every cycle, and a block starts no sooner than
``rows`` cycles after the previous one, the time the requantiser takes per block, so that the
array's output is always taken when it is ready (a stall signal would fan out from the array
to every feed register and memory enable).
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from trine.contract.params import AcceleratorParams
from trine.hw.memories import buffer_word_shape
from trine.hw.params import ParamsSignature, check_params
from trine.hw.requantizer import RowSignature

__all__ = ["loop_config_layout", "beat_layout", "LoopControlSignature", "AddressGenerator"]


def loop_config_layout(params: AcceleratorParams) -> data.StructLayout:
    """A layer's loops, as the address generator takes them: bases, ``count - 1`` and
    ``count == 1`` of each loop, and the fan-out."""
    p = params
    return data.StructLayout({
        "weight_base": range(p.weight_words + 1),
        "bias_base": range(p.bias_depth + 1),
        "chunks_last": range(p.stride),
        "chunks_one": 1,
        "blocks_last": range(p.max_blocks),
        "blocks_one": 1,
        "batch_last": range(p.max_batch),
        "batch_one": 1,
        "fan_out": range(p.max_width + 1),
    })


def beat_layout(params: AcceleratorParams) -> data.StructLayout:
    """A beat: the weight word and the activation word it needs, and whether it ends a block."""
    return data.StructLayout({
        "weight_addr": range(params.weight_words + 1),
        "act_addr": buffer_word_shape(params),
        "last": 1,
    })


class LoopControlSignature(ParamsSignature):
    """The sequencer's hold on the address generator, seen from the sequencer.

    Members
    -------
    config : Out(loop_config_layout(params))
        The layer's loops; held from ``setup`` until the layer ends.
    setup : Out(1)
        Load every counter from ``config`` and start issuing.
    stop : Out(1)
        Stop issuing (wins over ``setup``).
    overrun : In(1)
        An address has run past its memory: the weight address while issuing, or the bias
        address.
    done : In(1)
        Every row of the layer has been taken (until the next ``setup``).
    """

    def __init__(self, params: AcceleratorParams):
        params = check_params(params)
        super().__init__(params, {
            "config": Out(loop_config_layout(params)),
            "setup": Out(1),
            "stop": Out(1),
            "overrun": In(1),
            "done": In(1),
        })


class AddressGenerator(wiring.Component):
    """Both loop nests of a layer (see the module notes).

    After ``setup``, the issue side offers a beat on ``o_beat`` in a cycle when it has one and
    the block it starts (if it starts one) is at least ``rows`` cycles after the previous block's
    start; it stops after the last beat of the last sample or on ``stop``. The output side
    answers ``dest`` with the next row's destination and steps when the row is taken; ``done``
    is set after the last row of the last sample.

    Parameters
    ----------
    params : trine.contract.params.AcceleratorParams

    Members
    -------
    control : In(LoopControlSignature(params))
    o_beat : Out(stream.Signature(beat_layout(params), always_ready=True))
        The consumer takes every beat: there is no backpressure.
    dest : In(RowSignature(params))
    """

    def __init__(self, params: AcceleratorParams):
        self.params = p = check_params(params)
        super().__init__({
            "control": In(LoopControlSignature(p)),
            "o_beat": Out(stream.Signature(beat_layout(p), always_ready=True)),
            "dest": In(RowSignature(p)),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        rows, stride = p.rows, p.stride
        cfg, setup, dest = self.control.config, self.control.setup, self.dest

        # ---- issue side -----------------------------------------------------------------
        c = Signal(range(stride))  # chunks left in this block after this one
        j = Signal(range(p.max_blocks))  # blocks left in this sample
        b = Signal(range(p.max_batch))  # samples left in this layer
        c_end = Signal()
        j_end = Signal()
        b_end = Signal()
        c_first = Signal()  # the beat at the issuer starts a block
        aptr = Signal(buffer_word_shape(p))
        abase = Signal.like(aptr)
        wptr = Signal(range(p.weight_words + 1))
        gap = Signal(range(rows + 1))  # cycles since the last block started, saturating
        gap_ok = Signal()  # gap == rows
        issuing = Signal()
        issue = Signal()  # a beat leaves this cycle
        m.d.comb += [
            issue.eq(issuing & (~c_first | gap_ok)),
            self.o_beat.valid.eq(issue),
            self.o_beat.payload.weight_addr.eq(wptr),
            self.o_beat.payload.act_addr.eq(aptr),
            self.o_beat.payload.last.eq(c_end),
        ]
        with m.If(issue & c_first):
            m.d.sync += [gap.eq(1), gap_ok.eq(rows == 1)]
        with m.Elif(~gap_ok):
            m.d.sync += [gap.eq(gap + 1), gap_ok.eq(gap == rows - 1)]

        # ---- output side ----------------------------------------------------------------
        rq_j = Signal(range(p.max_blocks))  # blocks left, counting down like the issuer's
        rq_b = Signal(range(p.max_batch))
        rq_j_end = Signal()
        rq_b_end = Signal()
        rq_done = Signal()
        bptr = Signal(range(p.bias_depth + 1))
        m_idx = Signal(range(p.max_blocks * rows + 1))  # output index within the sample
        o_word = Signal.like(aptr)
        o_base = Signal.like(aptr)
        o_lane = Signal(range(p.lanes))
        m.d.comb += [
            dest.bias.eq(bptr),
            dest.word.eq(o_word),
            dest.lane.eq(o_lane),
            dest.write.eq(m_idx < cfg.fan_out),
            self.control.done.eq(rq_done),
            self.control.overrun.eq((issuing & (wptr == p.weight_words)) |
                                    (bptr == p.bias_depth)),
        ]
        with m.If(dest.take):
            m.d.sync += [bptr.eq(bptr + 1), m_idx.eq(m_idx + 1)]
            with m.If(o_lane == p.lanes - 1):
                m.d.sync += [o_lane.eq(0), o_word.eq(o_word + 1)]
            with m.Else():
                m.d.sync += o_lane.eq(o_lane + 1)
            with m.If(dest.last):
                with m.If(rq_j_end):
                    # end of a sample: outputs of the next sample start a buffer row later
                    m.d.sync += [rq_j.eq(cfg.blocks_last), rq_j_end.eq(cfg.blocks_one),
                                 rq_b.eq(rq_b - 1), rq_b_end.eq(rq_b == 1),
                                 bptr.eq(cfg.bias_base),
                                 m_idx.eq(0), o_lane.eq(0), o_word.eq(o_base + stride),
                                 o_base.eq(o_base + stride)]
                    with m.If(rq_b_end):
                        m.d.sync += rq_done.eq(1)
                with m.Else():
                    m.d.sync += [rq_j.eq(rq_j - 1), rq_j_end.eq(rq_j == 1)]

        # ---- setup and stop (after the steps above: they win) ---------------------------
        with m.If(setup):
            m.d.sync += [
                c.eq(cfg.chunks_last), c_end.eq(cfg.chunks_one), c_first.eq(1),
                j.eq(cfg.blocks_last), j_end.eq(cfg.blocks_one),
                b.eq(cfg.batch_last), b_end.eq(cfg.batch_one),
                wptr.eq(cfg.weight_base), aptr.eq(0),
                abase.eq(0), issuing.eq(1), gap.eq(rows), gap_ok.eq(1),
                rq_j.eq(cfg.blocks_last), rq_j_end.eq(cfg.blocks_one),
                rq_b.eq(cfg.batch_last), rq_b_end.eq(cfg.batch_one),
                rq_done.eq(0), bptr.eq(cfg.bias_base),
                m_idx.eq(0), o_word.eq(0), o_base.eq(0), o_lane.eq(0),
            ]
        with m.If(self.control.stop):
            m.d.sync += issuing.eq(0)

        # ---- the issue side's steps -----------------------------------------------------
        with m.If(issue):
            m.d.sync += wptr.eq(wptr + 1)
            with m.If(c_end):
                m.d.sync += [c.eq(cfg.chunks_last), c_end.eq(cfg.chunks_one), c_first.eq(1)]
                with m.If(j_end):
                    m.d.sync += [j.eq(cfg.blocks_last), j_end.eq(cfg.blocks_one), b.eq(b - 1),
                                 b_end.eq(b == 1), wptr.eq(cfg.weight_base),
                                 abase.eq(abase + stride), aptr.eq(abase + stride)]
                    with m.If(b_end):
                        m.d.sync += issuing.eq(0)
                with m.Else():
                    m.d.sync += [j.eq(j - 1), j_end.eq(j == 1), aptr.eq(abase)]
            with m.Else():
                m.d.sync += [c.eq(c - 1), c_end.eq(c == 1), c_first.eq(0), aptr.eq(aptr + 1)]
        return m
