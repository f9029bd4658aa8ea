"""The array's feed: a beat's weight word and activation word read, the weights decoded.

Between the address generator and the MAC array, two pipeline stages: stage 1, the memories
read the beat's words (their read ports are synchronous); stage 2, the trit decoder turns the
weight word into trit codes. The beat's ``valid``, ``zero`` and ``last`` and the activation
word travel alongside in registers (a ``zero`` beat, a window word in a convolution's zero
padding, gets zero activations instead of the word read), so the beat reaches the array two
cycles after it was issued, with every lane's inputs from registers (the array does not
register its input). With ``params.ram_output == "registered"`` the memories' words and the
decoder each take a cycle more (:class:`trine.hw.decoder.TritDecoder`), and so does
everything beside them: four cycles.
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
    """Fetches and decodes each beat for the MAC array, :attr:`latency` cycles after it comes.

    There is no backpressure: a beat is offered on ``o_stream`` exactly :attr:`latency` cycles
    after it arrived on ``i_beat`` and ``o_stream.ready`` is not looked at (the address generator's
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
        Read ports, read at every cycle's beat address whether a beat is valid or not. With
        ``params.ram_output == "registered"`` the pool's word comes two cycles after its
        address (:class:`trine.hw.memories.CoreMemories`), and so does the weight word.
    o_stream : Out(stream.Signature(mac_input_layout(lanes, rows)))
    illegal : Out(1)

    Attributes
    ----------
    latency : int
        2, or 4 with ``params.ram_output == "registered"``.
    """

    def __init__(self, params: AcceleratorParams):
        self.params = p = check_params(params)
        self.decoder = TritDecoder(p.beat_bytes, p.decoder,
                                   registered=p.ram_output == "registered")
        # a registered weight memory gives its word a cycle later
        self.weight_latency = 2 if p.ram_output == "registered" else 1
        self.latency = self.weight_latency + self.decoder.latency
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

        # stage 1: memory data; stage 2: decoded codes (stage 3 with a registered decoder).
        # Data registers need no reset: the valid bits say what they hold.
        stages = self.latency
        valid = [Signal(name=f"valid{i}") for i in range(1, stages + 1)]
        last = [Signal(name=f"last{i}", reset_less=True) for i in range(1, stages + 1)]
        # A registered pool gives its word a cycle later: the word is masked in the stage
        # before the array's then.
        pool_stages = 2 if p.ram_output == "registered" else 1
        zero = [Signal(name=f"zero{i}", reset_less=True) for i in range(1, pool_stages + 1)]
        acts = [Signal(8 * p.lanes, name=f"acts{i}", reset_less=True)
                for i in range(pool_stages + 1, stages + 1)]
        # An illegal byte aborts the run a cycle later; the beat (decoded as zeros) may enter
        # the array meanwhile, as the abort discards everything.
        illegal_seen = Signal()
        with m.If(self.flush):
            m.d.sync += [*(v.eq(0) for v in valid), illegal_seen.eq(0)]
        with m.Else():
            m.d.sync += [valid[0].eq(beat.valid),
                         *(valid[i].eq(valid[i - 1]) for i in range(1, stages)),
                         illegal_seen.eq(valid[-1] & decoder.illegal)]
        m.d.sync += [last[0].eq(beat.payload.last),
                     *(last[i].eq(last[i - 1]) for i in range(1, stages)),
                     zero[0].eq(beat.payload.zero),
                     *(zero[i].eq(zero[i - 1]) for i in range(1, pool_stages)),
                     acts[0].eq(Mux(zero[-1], 0, self.acts.data)),
                     *(acts[i].eq(acts[i - 1]) for i in range(1, len(acts)))]

        out = self.o_stream
        m.d.comb += [
            out.valid.eq(valid[-1]),
            out.payload.acts.as_value().eq(acts[-1]),
            out.payload.codes.as_value().eq(decoder.codes.as_value()[: 2 * p.lanes * p.rows]),
            out.payload.last.eq(last[-1]),
            self.illegal.eq(illegal_seen),
        ]
        return m
