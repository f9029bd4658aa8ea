"""The array's feed: a beat's weight word and activation word read, the weights decoded.

Between the address generator and the MAC array, two pipeline stages: stage 1, the memories
read the beat's words (their read ports are synchronous); stage 2, the trit decoder turns the
weight word into trit codes. The beat's ``valid``, ``zero`` and ``last`` and the activation
word travel alongside in registers (a ``zero`` beat, a window word in a convolution's zero
padding, gets zero activations instead of the word read), so the beat reaches the array two
cycles after it was issued, with every lane's inputs from registers (the array does not
register its input).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out

from trine.contract.params import AcceleratorParams
from trine.hw.address_generator import beat_layout
from trine.hw.decoder import TritDecoder
from trine.hw.mac_array import mac_input_layout
from trine.hw.memories import address_width, pool_address_width
from trine.hw.params import check_params

__all__ = ["ArrayFeed"]


class ArrayFeed(wiring.Component):
    """Fetches and decodes each beat for the MAC array, two cycles after it comes.

    There is no backpressure: a beat is offered on ``o_stream`` exactly two cycles after it
    arrived on ``i_beat`` and ``o_stream.ready`` is not looked at (the address generator's
    pacing keeps the array ready). ``flush`` drops the beats in flight. ``illegal`` is set in
    the cycle after a beat with an illegal weight byte was offered (its codes are zero).

    Parameters
    ----------
    params : trine.contract.params.AcceleratorParams
        The array's shape and the decoder (``params.decoder``, see
        :class:`trine.hw.decoder.TritDecoder`).

    Members
    -------
    flush : In(1)
    i_beat : In(stream.Signature(beat_layout(params), always_ready=True))
    weights : In(ReadPort.Signature(addr_width=address_width(weight_words),
                                    shape=8 * beat_bytes))
    acts : In(ReadPort.Signature(addr_width=pool_address_width(params), shape=8 * lanes))
        Read ports, read at every cycle's beat address whether a beat is valid or not.
    o_stream : Out(stream.Signature(mac_input_layout(lanes, rows)))
    illegal : Out(1)
    """

    def __init__(self, params: AcceleratorParams):
        self.params = p = check_params(params)
        self.decoder = TritDecoder(p.beat_bytes, p.decoder)
        super().__init__({
            "flush": In(1),
            "i_beat": In(stream.Signature(beat_layout(p), always_ready=True)),
            "weights": In(ReadPort.Signature(addr_width=address_width(p.weight_words),
                                             shape=8 * p.beat_bytes)),
            "acts": In(ReadPort.Signature(addr_width=pool_address_width(p),
                                          shape=8 * p.lanes)),
            "o_stream": Out(stream.Signature(mac_input_layout(p.lanes, p.rows))),
            "illegal": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        m.submodules.decoder = decoder = self.decoder
        beat = self.i_beat
        m.d.comb += [
            self.weights.addr.eq(beat.payload.weight_addr),
            self.acts.addr.eq(beat.payload.act_addr),
            decoder.word.eq(self.weights.data),
        ]

        # stage 1: memory data; stage 2: decoded codes. Data registers need no reset: the
        # valid bits say what they hold.
        valid1 = Signal()
        last1 = Signal(reset_less=True)
        zero1 = Signal(reset_less=True)
        valid2 = Signal()
        last2 = Signal(reset_less=True)
        acts2 = Signal(8 * p.lanes, reset_less=True)
        # An illegal byte aborts the run a cycle later; the beat (decoded as zeros) may enter
        # the array meanwhile, as the abort discards everything.
        illegal_seen = Signal()
        with m.If(self.flush):
            m.d.sync += [valid1.eq(0), valid2.eq(0), illegal_seen.eq(0)]
        with m.Else():
            m.d.sync += [valid1.eq(beat.valid), valid2.eq(valid1),
                         illegal_seen.eq(valid2 & decoder.illegal)]
        m.d.sync += [last1.eq(beat.payload.last), last2.eq(last1), zero1.eq(beat.payload.zero),
                     acts2.eq(Mux(zero1, 0, self.acts.data))]

        out = self.o_stream
        m.d.comb += [
            out.valid.eq(valid2),
            out.payload.acts.as_value().eq(acts2),
            out.payload.codes.as_value().eq(decoder.codes.as_value()[: 2 * p.lanes * p.rows]),
            out.payload.last.eq(last2),
            self.illegal.eq(illegal_seen),
        ]
        return m
