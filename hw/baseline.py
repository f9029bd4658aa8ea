"""The obvious int8 x int8 MAC array, used only as the area baseline for :class:`MACArray`.

Same shape, stream interface and pipeline as :class:`trine.hw.mac_array.MACArray`, but every lane
multiplies its activation by a signed 8-bit weight with ``*``: this is what a conventional
(non-ternary) accelerator of the same throughput would synthesise. It is not part of the
trine contract and nothing but the benchmarks and tests uses it.
"""

from __future__ import annotations

import math

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from trine.contract.errors import check_int
from trine.contract.spec import ACT_WIDTH, MAX_FAN_IN
from trine.hw.mac_array import mac_output_layout

__all__ = ["WEIGHT_WIDTH", "Int8MACArray", "int8_input_layout"]

#: Signed weight width of the baseline (int8 weights).
WEIGHT_WIDTH = 8


def int8_input_layout(lanes: int, rows: int, act_width: int = ACT_WIDTH) -> data.StructLayout:
    """Payload of one input beat: ``acts[lane]``, ``weights[row][lane]`` (signed), ``last``."""
    return data.StructLayout(
        {
            "acts": data.ArrayLayout(signed(act_width), lanes),
            "weights": data.ArrayLayout(data.ArrayLayout(signed(WEIGHT_WIDTH), lanes), rows),
            "last": 1,
        }
    )


class Int8MACArray(wiring.Component):
    """``rows`` x ``lanes`` int8 multiply-accumulate array (area baseline).

    Row ``r`` accumulates ``sum_l weights[r][l] * acts[l]`` over the beats of a vector; the
    beat flagged ``last`` ends it and the ``rows`` accumulators are offered on ``o_stream``.
    Handshake, latency (``tree_stages + 1``) and the unregistered input payload are exactly
    those of :class:`trine.hw.mac_array.MACArray`.

    Parameters
    ----------
    lanes : int
        Activations per beat, >= 1.
    rows : int
        Dot products computed in parallel, >= 1.
    act_width : int
        Signed activation width in bits, 2..16.
    max_fan_in : int
        Largest K the accumulator holds exactly, 1..MAX_FAN_IN. The accumulator is
        ``act_width + WEIGHT_WIDTH + ceil(log2 max_fan_in)`` bits wide.
    register_every : int
        Pipeline register after every this many adder levels (0: combinational tree).

    Members
    -------
    i_stream : In(stream.Signature(int8_input_layout(lanes, rows, act_width)))
    o_stream : Out(stream.Signature(mac_output_layout(rows, acc_width)))

    Raises
    ------
    TypeError, ValueError
        For parameters of the wrong type or outside their range.
    """

    def __init__(
        self,
        lanes: int,
        rows: int,
        act_width: int = ACT_WIDTH,
        *,
        max_fan_in: int = 4096,
        register_every: int = 1,
    ):
        self.lanes = check_int("Lane count", lanes, 1)
        self.rows = check_int("Row count", rows, 1)
        self.act_width = check_int("Activation width", act_width, 2, 16)
        self.max_fan_in = check_int("Maximum fan-in", max_fan_in, 1, MAX_FAN_IN)
        self.register_every = check_int("register_every", register_every, 0)
        # |x * w| <= 2**(act_width-1) * 2**(WEIGHT_WIDTH-1) fits act_width + WEIGHT_WIDTH bits
        # signed (the product of two minima is positive but below 2**(a+w-1)).
        self.product_width = act_width + WEIGHT_WIDTH
        self.acc_width = self.product_width + math.ceil(math.log2(max_fan_in))
        self.tree_levels = math.ceil(math.log2(lanes)) if lanes > 1 else 0
        # A register follows adder levels register_every, 2 * register_every, ...
        self.tree_stages = 0 if register_every == 0 else self.tree_levels // register_every
        self.latency = self.tree_stages + 1
        super().__init__(
            {
                "i_stream": In(stream.Signature(int8_input_layout(lanes, rows, act_width))),
                "o_stream": Out(stream.Signature(mac_output_layout(rows, self.acc_width))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        beat = self.i_stream.payload

        done = Signal()
        stall = Signal()
        m.d.comb += [
            stall.eq(done & ~self.o_stream.ready),
            self.i_stream.ready.eq(~stall),
            self.o_stream.valid.eq(done),
        ]
        first_next = Signal(init=1)
        accept = self.i_stream.valid & self.i_stream.ready
        with m.If(accept):
            m.d.sync += first_next.eq(beat.last)
        ctl_valid, ctl_first, ctl_last = accept, first_next, beat.last

        def register(value, name, reset_less=True):
            reg = Signal.like(value, name=name, reset_less=reset_less)
            with m.If(~stall):
                m.d.sync += reg.eq(value)
            return reg

        row_trees = []
        for r in range(self.rows):
            items = []
            for lane in range(self.lanes):
                p = Signal(signed(self.product_width), name=f"prod_r{r}_l{lane}")
                m.d.comb += p.eq(beat.acts[lane] * beat.weights[r][lane])
                items.append((p, 1))
            row_trees.append(items)

        for level in range(1, self.tree_levels + 1):
            for r in range(self.rows):
                items, nxt = row_trees[r], []
                for j in range(0, len(items) - 1, 2):
                    (a, na), (b, nb) = items[j], items[j + 1]
                    n = na + nb
                    s = Signal(
                        signed(self.product_width + math.ceil(math.log2(n))),
                        name=f"sum_r{r}_v{level}_{j // 2}",
                    )
                    m.d.comb += s.eq(a + b)
                    nxt.append((s, n))
                if len(items) % 2:
                    nxt.append(items[-1])
                row_trees[r] = nxt
            if self.register_every and level % self.register_every == 0:
                for r in range(self.rows):
                    row_trees[r] = [(register(v, f"{v.name}_q"), n) for v, n in row_trees[r]]
                ctl_valid = register(ctl_valid, f"valid_s{level}", reset_less=False)
                ctl_first = register(ctl_first, f"first_s{level}")
                ctl_last = register(ctl_last, f"last_s{level}")

        for r in range(self.rows):
            ((tree, _),) = row_trees[r]
            acc = Signal(signed(self.acc_width), name=f"acc_r{r}", reset_less=True)
            with m.If(~stall & ctl_valid):
                m.d.sync += acc.eq(Mux(ctl_first, 0, acc) + tree)
            m.d.comb += self.o_stream.payload[r].eq(acc)

        with m.If(~stall):
            m.d.sync += done.eq(ctl_valid & ctl_last)
        return m
