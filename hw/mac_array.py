"""A multiply-free ternary MAC array: ``rows`` dot products of ``lanes`` trits x int8 per beat.

Each lane sees one activation ``x`` and one 2-bit trit code (see
:class:`trine.contract.spec.TritCode`).
Instead of negating ``x`` for a -1 weight (an incrementer per lane), the lane feeds ``~x``
(``= -x - 1``) and zero for 0; the missing ``+1`` per -1 weight is a 1-bit *correction*. Every
adder of the tree, and the accumulator, absorbs exactly one correction bit as a carry-in
(a ``lanes``-leaf tree has ``lanes - 1`` adders, plus the accumulator: exactly ``lanes``
carry-ins). A carry-in is an extra least significant bit on the adder:
``({a, 1} + {b, c}) >> 1 = a + b + c``. No ``*`` is used anywhere.

With ``correction=False`` the carry-ins are left out and the array outputs
``sum_k w_k x_k - count(w_k == -1)``; that is for a user (the accelerator) that folds the
count into a per-row bias known in advance. The default outputs the exact dot product.
"""

from __future__ import annotations

import math

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from trine.contract.errors import check_int
from trine.contract.spec import ACT_WIDTH, MAX_FAN_IN, accumulator_width

__all__ = ["MACArray", "mac_input_layout", "mac_output_layout"]


def mac_input_layout(lanes: int, rows: int, act_width: int = ACT_WIDTH) -> data.StructLayout:
    """Payload of one input beat: ``acts[lane]``, ``codes[row][lane]``, ``last``."""
    return data.StructLayout(
        {
            "acts": data.ArrayLayout(signed(act_width), lanes),
            "codes": data.ArrayLayout(data.ArrayLayout(unsigned(2), lanes), rows),
            "last": 1,
        }
    )


def mac_output_layout(rows: int, acc_width: int) -> data.ArrayLayout:
    """Payload of one output beat: ``rows`` signed accumulators."""
    return data.ArrayLayout(signed(acc_width), rows)



class MACArray(wiring.Component):
    """``rows`` x ``lanes`` ternary multiply-accumulate array with stream interfaces.

    Each accepted input beat brings ``lanes`` activations, shared by all rows, and
    ``rows x lanes`` trit codes. Row ``r`` accumulates ``sum_l w[r, l] * x[l]`` over the
    beats of a vector; the beat flagged ``last`` ends it, and the ``rows`` accumulators are
    then offered on ``o_stream``. While an output waits for ``o_stream.ready`` the whole
    pipeline holds and ``i_stream.ready`` is low; otherwise one beat per cycle is accepted.

    The input payload is not registered inside the array (each lane's logic feeds the first
    adder level directly): drive it from registers. ``i_stream.ready`` depends
    combinationally on ``o_stream.ready``.

    Parameters
    ----------
    lanes : int
        Activations per beat (FINN's SIMD), >= 1, any value (need not be a power of two).
    rows : int
        Dot products computed in parallel (FINN's PE), >= 1.
    act_width : int
        Signed activation width in bits, 2..16.
    max_fan_in : int
        Largest K (inputs per vector) the accumulator must hold exactly, 1..MAX_FAN_IN.
        The accumulator is :func:`trine.contract.spec.accumulator_width(max_fan_in, act_width)`
        wide;
        longer vectors wrap around.
    register_every : int
        Pipeline register after every this many adder levels (0: a combinational tree,
        only the accumulator is a register). Latency is ``tree_stages + 1`` cycles.
    correction : bool
        Add the ``+1`` per -1 weight inside the array (exact dot products). See module doc.

    Members
    -------
    i_stream : In(stream.Signature(mac_input_layout(lanes, rows, act_width)))
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
        correction: bool = True,
    ):
        self.lanes = check_int("Lane count", lanes, 1)
        self.rows = check_int("Row count", rows, 1)
        self.act_width = check_int("Activation width", act_width, 2, 16)
        self.max_fan_in = check_int("Maximum fan-in", max_fan_in, 1, MAX_FAN_IN)
        self.register_every = check_int("register_every", register_every, 0)
        if not isinstance(correction, bool):
            raise TypeError(f"correction must be a bool, not {correction!r}")
        self.correction = correction
        self.acc_width = accumulator_width(max_fan_in, act_width)
        self.tree_levels = math.ceil(math.log2(lanes)) if lanes > 1 else 0
        # A register follows adder levels register_every, 2 * register_every, ...
        self.tree_stages = 0 if register_every == 0 else self.tree_levels // register_every
        self.latency = self.tree_stages + 1
        super().__init__(
            {
                "i_stream": In(stream.Signature(mac_input_layout(lanes, rows, act_width))),
                "o_stream": Out(stream.Signature(mac_output_layout(rows, self.acc_width))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        lanes, rows = self.lanes, self.rows
        beat = self.i_stream.payload

        done = Signal()  # o_stream holds a finished vector
        stall = Signal()
        m.d.comb += [
            stall.eq(done & ~self.o_stream.ready),
            self.i_stream.ready.eq(~stall),
            self.o_stream.valid.eq(done),
        ]

        # A beat is the first of its vector if the previously accepted beat was `last`.
        first_next = Signal(init=1)
        accept = self.i_stream.valid & self.i_stream.ready
        with m.If(accept):
            m.d.sync += first_next.eq(beat.last)

        # Control travels with the data through the tree's registers.
        ctl_valid, ctl_first, ctl_last = accept, first_next, beat.last

        def register(value, name, reset_less=True):
            reg = Signal.like(value, name=name, reset_less=reset_less)
            with m.If(~stall):
                m.d.sync += reg.eq(value)
            return reg

        # Build one tree per row; registers are inserted at the same levels in every row.
        row_trees = []
        for r in range(rows):
            items = []  # (value, leaves, pending correction bits)
            for lane in range(lanes):
                code = beat.codes[r][lane]
                nonzero, negative = code[0], code[1]
                x = beat.acts[lane]
                lane_value = Signal(signed(self.act_width), name=f"lane_r{r}_l{lane}")
                m.d.comb += lane_value.eq(
                    Mux(nonzero, x ^ negative.replicate(self.act_width), 0)
                )
                pending = []
                if self.correction:
                    c = Signal(name=f"corr_r{r}_l{lane}")
                    m.d.comb += c.eq(nonzero & negative)
                    pending.append(c)
                items.append((lane_value, 1, pending))
            row_trees.append(items)

        for level in range(1, self.tree_levels + 1):
            for r in range(rows):
                items, nxt = row_trees[r], []
                for j in range(0, len(items) - 1, 2):
                    (a, na, pa), (b, nb, pb) = items[j], items[j + 1]
                    n = na + nb
                    width = self.act_width + math.ceil(math.log2(n))
                    s = Signal(signed(width), name=f"sum_r{r}_v{level}_{j // 2}")
                    pending = pa + pb
                    if pending:
                        # Carry-in through an extra LSB: ({a, 1} + {b, c}) >> 1 = a + b + c.
                        # A subtree of n leaves absorbs at most n - 1 bits, so `width` holds it.
                        c = pending.pop(0)
                        a_ext = Signal(signed(width), name=f"{s.name}_a")
                        b_ext = Signal(signed(width), name=f"{s.name}_b")
                        m.d.comb += [a_ext.eq(a), b_ext.eq(b)]
                        m.d.comb += s.eq((Cat(Const(1, 1), a_ext) + Cat(c, b_ext))[1 : width + 1])
                    else:
                        m.d.comb += s.eq(a + b)
                    nxt.append((s, n, pending))
                if len(items) % 2:
                    nxt.append(items[-1])
                row_trees[r] = nxt
            if self.register_every and level % self.register_every == 0:
                for r in range(rows):
                    row_trees[r] = [
                        (
                            register(v, f"{v.name}_q"),
                            n,
                            [register(p, f"{p.name}_q{level}") for p in pend],
                        )
                        for v, n, pend in row_trees[r]
                    ]
                ctl_valid = register(ctl_valid, f"valid_s{level}", reset_less=False)
                ctl_first = register(ctl_first, f"first_s{level}")
                ctl_last = register(ctl_last, f"last_s{level}")

        # Accumulate. The accumulator absorbs the last correction bit.
        w = self.acc_width
        for r in range(rows):
            ((tree, _, pending),) = row_trees[r]
            acc = Signal(signed(w), name=f"acc_r{r}", reset_less=True)
            base = Signal(signed(w), name=f"acc_base_r{r}")
            tree_ext = Signal(signed(w), name=f"tree_r{r}")
            m.d.comb += [base.eq(Mux(ctl_first, 0, acc)), tree_ext.eq(tree)]
            if pending:
                assert len(pending) == 1, "each adder absorbs one correction bit"
                total = (Cat(Const(1, 1), base) + Cat(pending[0], tree_ext))[1 : w + 1]
            else:
                total = base + tree_ext
            with m.If(~stall & ctl_valid):
                m.d.sync += acc.eq(total)
            m.d.comb += self.o_stream.payload[r].eq(acc)

        with m.If(~stall):
            m.d.sync += done.eq(ctl_valid & ctl_last)
        return m
