"""A ternary-activation MAC array: ``rows`` dot products of ``lanes`` trits x trits per beat.

With ternary weights *and* ternary activations (FATNN) a product is itself a trit, and a
dot product is a difference of two counts. Both operands arrive as the 2-bit
:class:`trine.contract.spec.TritCode` of the contract, which *is* a mask plane (bit 0,
nonzero) and a sign plane (bit 1, negative). Per lane, ``m = m_x & m_w`` says the product is
nonzero and ``n = m & (s_x ^ s_w)`` that it is -1, so over the lanes::

    x . w = popcount(m) - 2 * popcount(n)                    (form="fatnn")

Two popcount trees of 1-bit leaves per row, then one subtraction before the accumulator. An
equivalent with one tree (``form="offset"``) lets each lane's two LUT inputs pairs produce
the product plus one, ``q = 1 + x w`` in ``{0, 1, 2}`` (bit 0 = ``~m``, bit 1 =
``m & ~(s_x ^ s_w)``), sums the 2-bit ``q`` of all lanes and subtracts the constant ``lanes``
once per beat::

    x . w = sum_l q_l - lanes                                (form="offset")

Both are exact for every code, including the illegal ``0b10`` (its mask bit is clear, so it
counts as 0, as in :class:`trine.hw.mac_array.MACArray`), and for padding lanes whose codes
are zero (they add 0). No ``*`` is used anywhere. Which form is smaller on which fabric is
measured by ``bench/fatnn.py``, not assumed here.
"""

from __future__ import annotations

import math

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from trine.contract.errors import check_int
from trine.contract.spec import MAX_FAN_IN, ternary_accumulator_width

__all__ = ["FORMS", "PopcountArray", "popcount_input_layout", "popcount_output_layout"]

#: The two ways of computing the dot product (see the module docstring).
FORMS = ("fatnn", "offset")


def popcount_input_layout(lanes: int, rows: int) -> data.StructLayout:
    """Payload of one input beat: ``acts[lane]`` and ``codes[row][lane]`` (2-bit trit codes:
    bit 0 the mask plane, bit 1 the sign plane), ``last``."""
    return data.StructLayout(
        {
            "acts": data.ArrayLayout(unsigned(2), lanes),
            "codes": data.ArrayLayout(data.ArrayLayout(unsigned(2), lanes), rows),
            "last": 1,
        }
    )


def popcount_output_layout(rows: int, acc_width: int) -> data.ArrayLayout:
    """Payload of one output beat: ``rows`` signed accumulators."""
    return data.ArrayLayout(signed(acc_width), rows)


class PopcountArray(wiring.Component):
    """``rows`` x ``lanes`` trit-by-trit multiply-accumulate array with stream interfaces.

    The stream protocol is :class:`trine.hw.mac_array.MACArray`'s: each accepted beat brings
    ``lanes`` activation codes, shared by all rows, and ``rows x lanes`` weight codes; row
    ``r`` accumulates ``sum_l w[r, l] * x[l]`` over the beats of a vector, the beat flagged
    ``last`` ends it, and the ``rows`` accumulators are then offered on ``o_stream``. While
    an output waits for ``o_stream.ready`` the pipeline holds and ``i_stream.ready`` is low;
    otherwise one beat per cycle is accepted. The payload is not registered inside the array:
    drive it from registers. ``i_stream.ready`` depends combinationally on ``o_stream.ready``.

    Parameters
    ----------
    lanes : int
        Activations per beat, >= 1 (any value).
    rows : int
        Dot products computed in parallel, >= 1.
    max_fan_in : int
        Largest K the accumulator holds exactly, 1..MAX_FAN_IN: it is
        :func:`trine.contract.spec.ternary_accumulator_width` bits wide; longer vectors wrap.
    register_every : int
        Pipeline register after every this many adder levels of the trees (0: combinational
        trees). Latency is ``tree_stages + 1`` cycles.
    form : {"fatnn", "offset"}
        Two popcounts (FATNN's formula) or one tree of ``1 + x w`` (see the module).

    Members
    -------
    i_stream : In(stream.Signature(popcount_input_layout(lanes, rows)))
    o_stream : Out(stream.Signature(popcount_output_layout(rows, acc_width)))

    Raises
    ------
    TypeError, ValueError
        For parameters of the wrong type or outside their range.
    """

    def __init__(self, lanes: int, rows: int, *, max_fan_in: int = 4096,
                 register_every: int = 1, form: str = "fatnn"):
        self.lanes = check_int("Lane count", lanes, 1)
        self.rows = check_int("Row count", rows, 1)
        self.max_fan_in = check_int("Maximum fan-in", max_fan_in, 1, MAX_FAN_IN)
        self.register_every = check_int("register_every", register_every, 0)
        if form not in FORMS:
            raise ValueError(f"form must be one of {', '.join(FORMS)}, not {form!r}")
        self.form = form
        self.acc_width = ternary_accumulator_width(max_fan_in)
        self.tree_levels = math.ceil(math.log2(lanes)) if lanes > 1 else 0
        self.tree_stages = 0 if register_every == 0 else self.tree_levels // register_every
        self.latency = self.tree_stages + 1
        super().__init__(
            {
                "i_stream": In(stream.Signature(popcount_input_layout(lanes, rows))),
                "o_stream": Out(stream.Signature(popcount_output_layout(rows, self.acc_width))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        beat = self.i_stream.payload

        done = Signal()  # o_stream holds a finished vector
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

        # Per row, one or two trees of (value, largest value it can hold).
        trees = []  # trees[r] = list of trees, each a list of (signal, max)
        for r in range(self.rows):
            ones, negs, offs = [], [], []
            for lane in range(self.lanes):
                a, w = beat.acts[lane], beat.codes[r][lane]
                nonzero = Signal(name=f"m_r{r}_l{lane}")
                opposite = Signal(name=f"s_r{r}_l{lane}")
                m.d.comb += [nonzero.eq(a[0] & w[0]), opposite.eq(a[1] ^ w[1])]
                if self.form == "fatnn":
                    neg = Signal(name=f"n_r{r}_l{lane}")
                    m.d.comb += neg.eq(nonzero & opposite)
                    ones.append((nonzero, 1))
                    negs.append((neg, 1))
                else:
                    q = Signal(2, name=f"q_r{r}_l{lane}")  # 1 + x w
                    m.d.comb += q.eq(Mux(nonzero, Mux(opposite, 0, 2), 1))
                    offs.append((q, 2))
            trees.append([ones, negs] if self.form == "fatnn" else [offs])

        for level in range(1, self.tree_levels + 1):
            for r in range(self.rows):
                for t, items in enumerate(trees[r]):
                    nxt = []
                    for j in range(0, len(items) - 1, 2):
                        (a, ma), (b, mb) = items[j], items[j + 1]
                        s = Signal(unsigned((ma + mb).bit_length()),
                                   name=f"sum_r{r}_t{t}_v{level}_{j // 2}")
                        m.d.comb += s.eq(a + b)
                        nxt.append((s, ma + mb))
                    if len(items) % 2:
                        nxt.append(items[-1])
                    trees[r][t] = nxt
            if self.register_every and level % self.register_every == 0:
                for r in range(self.rows):
                    trees[r] = [[(register(v, f"{v.name}_q"), mx) for v, mx in items]
                                for items in trees[r]]
                ctl_valid = register(ctl_valid, f"valid_s{level}", reset_less=False)
                ctl_first = register(ctl_first, f"first_s{level}")
                ctl_last = register(ctl_last, f"last_s{level}")

        w = self.acc_width
        for r in range(self.rows):
            # Counts widened to signed first: everything after is exact modulo 2**w, which
            # is all the accumulator needs (its true value always fits, see acc_width).
            beat_value = Signal(signed(w + 1), name=f"beat_r{r}")
            if self.form == "fatnn":
                ((ones, _),), ((negs, _),) = trees[r]
                p = Signal(signed(w + 1), name=f"p_r{r}")
                n = Signal(signed(w + 1), name=f"n_r{r}")
                m.d.comb += [p.eq(ones), n.eq(negs), beat_value.eq(p - (n << 1))]
            else:
                (((total, _),),) = trees[r]
                q = Signal(signed(w + 1), name=f"q_r{r}")
                m.d.comb += [q.eq(total), beat_value.eq(q - Const(self.lanes))]
            acc = Signal(signed(w), name=f"acc_r{r}", reset_less=True)
            with m.If(~stall & ctl_valid):
                m.d.sync += acc.eq(Mux(ctl_first, 0, acc) + beat_value)
            m.d.comb += self.o_stream.payload[r].eq(acc)

        with m.If(~stall):
            m.d.sync += done.eq(ctl_valid & ctl_last)
        return m
