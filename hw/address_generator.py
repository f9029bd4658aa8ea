"""The address generator: every loop of a layer-table entry, as counters that step by increments.

A layer (:class:`trine.contract.device_image.LayerEntry`, the normative statement of the
loops; :func:`trine.contract.device_model.run_image` runs the same loops in NumPy) is two loop
nests that run at once:

* the *issue* side, one beat per weight word::

      for sample b:                            # in_s = in_base + b * in_sample_words
          for block j:                         # rows outputs
              start, x, y = in_s, x0, y0
              for each output position (levels p0..p3, p0 fastest):
                  for ty, tx, g in the window (kh, kw, cw):
                      beat(weight = weight_base + j * window + (ty * kw + tx) * cw + g,
                           act = start + ty * (kw * cw - 1 + row_step) + tx * cw + g,
                           zero = not (0 <= x + tx < in_width and 0 <= y + ty < in_height),
                           last = the window's last word)
                  start, x, y += the steps of the level that advances

* the *output* side, one destination per row the requantiser takes::

      for sample b:                            # out_s = out_base + b * out_sample_words
          for block j:
              pos = out_s
              for each output position (the same levels):
                  for row r:                   # counted by the requantiser
                      m = j * rows + r
                      dest(bias = bias_base + m, word = pos + m // lanes, lane = m % lanes,
                           first = the position starts its pooling window,
                           write = m < fan_out and the position ends its pooling window)
                  pos += the out step of the level that advances

Nothing is multiplied: addresses advance by one, by a step from the table, or jump back to a
base; every counter counts down from a count of the table to one, and its end flag is a
register beside it (a comparator in the issue path would reach every counter's enable).
Every field is kept at the width of :func:`trine.contract.device_image.field_bits`: pool
addresses are computed modulo ``2**pool_address_width`` (see
:func:`trine.hw.memories.pool_address_width`), counts and window coordinates exactly (the
compiler refuses a table whose values do not fit).

The feed never stalls: every stage advances every cycle, and a window starts no sooner than
``rows`` cycles after the previous one, the time the requantiser takes per block of
accumulators, so that the array's output is always taken when it is ready (a stall signal
would fan out from the array to every feed register and memory enable).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from trine.contract.device_image import (
    CONV_ENTRY_WORDS,
    DENSE_ENTRY_WORDS,
    FIELD_NAMES,
    FLAG_FIELDS,
    POSITION_LEVELS,
    LayerEntry,
    field_bits,
)
from trine.contract.params import AcceleratorParams
from trine.hw.memories import pool_address_width
from trine.hw.params import ParamsSignature, check_params
from trine.hw.requantizer import RowSignature

__all__ = ["ENTRY_FIELDS", "DENSE_TAIL", "DENSE_DEFAULTS", "entry_layout", "held_entry",
           "entry_flags",
           "loop_config_layout", "beat_layout", "LoopControlSignature", "AddressGenerator"]

#: The table words of an entry, in order (:meth:`LayerEntry.to_words`).
ENTRY_FIELDS = FIELD_NAMES
assert len(ENTRY_FIELDS) == CONV_ENTRY_WORDS
#: The tail a dense entry (which stops after ``out_sample_words``) leaves at its defaults.
DENSE_TAIL = LayerEntry(0, 0, 1, 1, 1, 0, 0, 0, 0, 0, False, conv=True).to_words()[10:]
#: The tail's fields whose defaults matter (the steps do not: with every count 1 no loop
#: steps).
DENSE_DEFAULTS = {"kw": 1, "kh": 1, **{f"p_count{i}": 1 for i in range(POSITION_LEVELS)},
                  "in_width": 1, "in_height": 1, "x0": 0, "y0": 0}
#: The counts of a window (words per row, kernel width and height). The generator compares
#: them a cycle before its setup: none is an entry's last word (the sequencer writes each
#: word's field as it arrives and sets up after the last), and a dense entry leaves the
#: kernel's at their defaults.
WINDOW_COUNTS = ("cw", "kw", "kh")
assert all(ENTRY_FIELDS.index(name) < CONV_ENTRY_WORDS - 1 for name in WINDOW_COUNTS)
assert all(ENTRY_FIELDS.index(name) < DENSE_ENTRY_WORDS - 1 or name in DENSE_DEFAULTS
           for name in WINDOW_COUNTS)


def entry_layout(params: AcceleratorParams) -> data.StructLayout:
    """A table entry as the device holds it: every field at the width of
    :func:`trine.contract.device_image.field_bits` (the weight and bias bases at their
    memories' address widths; the flags without the ternary threshold on a device without
    ``ternary_act``)."""
    p = check_params(params)
    fields = {}
    for name, spec in field_bits(p.act_words, p.lanes, p.rows).items():
        if name == "weight_base":
            fields[name] = range(p.weight_words + 1)
        elif name == "bias_base":
            fields[name] = range(p.bias_depth + 1)
        elif name == "flags" and not p.ternary_act:
            fields[name] = unsigned(FLAG_FIELDS["ternary_threshold"][0])
        else:
            width, is_signed, _ = spec
            fields[name] = signed(width) if is_signed else unsigned(width)
    return data.StructLayout(fields)


def held_entry(params: AcceleratorParams, entry: LayerEntry) -> dict[str, int]:
    """The values of :func:`entry_layout` that ``entry`` leaves in the device: every field cut
    to its width (a dense entry's tail at :data:`DENSE_DEFAULTS`, its steps whatever they
    were: they are not used). For testbenches."""
    layout = entry_layout(params)
    values = dict(zip(ENTRY_FIELDS, entry.field_values(), strict=True))
    out = {}
    for name, member in layout:
        shape = Shape.cast(member.shape)
        if not entry.conv and name not in ENTRY_FIELDS[:10] and name not in DENSE_DEFAULTS:
            continue
        value = values[name] & ((1 << shape.width) - 1)
        if shape.signed and value >> (shape.width - 1):
            value -= 1 << shape.width
        out[name] = value
    return out


def entry_flags(flags) -> dict:
    """The fields of an entry's flags word (a value), by name
    (:data:`trine.contract.device_image.FLAG_FIELDS`); those past its width are absent."""
    return {name: flags[first:first + bits] for name, (first, bits) in FLAG_FIELDS.items()
            if first + bits <= len(flags)}


def loop_config_layout(params: AcceleratorParams) -> data.StructLayout:
    """A layer's loops, as the address generator takes them: the table entry and the batch."""
    return data.StructLayout({"entry": entry_layout(params),
                              "batch": range(params.max_batch + 1)})


def beat_layout(params: AcceleratorParams) -> data.StructLayout:
    """A beat: the weight word and the pool word it needs, whether that word is zero padding,
    and whether the beat ends a window."""
    return data.StructLayout({
        "weight_addr": range(params.weight_words + 1),
        "act_addr": pool_address_width(params),
        "zero": 1,
        "last": 1,
    })


class LoopControlSignature(ParamsSignature):
    """The sequencer's hold on the address generator, seen from the sequencer.

    Members
    -------
    config : Out(loop_config_layout(params))
        The layer's loops; held from ``setup`` until the layer ends, and the window's
        counts (:data:`WINDOW_COUNTS`) from the cycle before ``setup``.
    setup : Out(1)
        Load every counter from ``config`` and start issuing.
    stop : Out(1)
        Stop issuing (wins over ``setup``).
    overrun : In(1)
        An address has run past its memory: the weight address while issuing, or the bias
        address, or the pool word of a row taken to be written.
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


def _choose(width, choices):
    """The value whose flag is set, of ``(flag, value)`` pairs whose flags are one-hot (or
    none set: 0), as an AND-OR rather than a chain of multiplexers by priority."""
    out = 0
    for flag, value in choices:
        out = out | (flag.replicate(width) & value[:width])
    return out


class _Counter:
    """A counter of ``count .. 1`` with its end flag (``value == 1``) as a register, and if
    asked the flag of the step before (``value == 2``), for a lookahead one step deep."""

    def __init__(self, m: Module, name: str, width: int, *, two: bool = False):
        self.m = m
        self.value = Signal(width, name=name)
        self.end = Signal(name=f"{name}_end")
        self.two = Signal(name=f"{name}_two") if two else None

    def load(self, count, one, two=None):
        self.m.d.sync += [self.value.eq(count), self.end.eq(one)]
        if self.two is not None:
            self.m.d.sync += self.two.eq(two)

    def step(self):
        self.m.d.sync += [self.value.eq(self.value - 1), self.end.eq(self.value == 2)]
        if self.two is not None:
            self.m.d.sync += self.two.eq(self.value == 3)


class AddressGenerator(wiring.Component):
    """Both loop nests of a layer (see the module notes).

    After ``setup``, the issue side offers a beat on ``o_beat`` in a cycle when it has one and
    the window it starts (if it starts one) is at least ``rows`` cycles after the previous
    window's start; it stops after the last beat of the last sample or on ``stop``. The output
    side answers ``dest`` with the next row's destination and steps when the row is taken;
    ``done`` is set after the last row of the last sample.

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
        rows, lanes = p.rows, p.lanes
        abits = pool_address_width(p)
        cfg, setup, dest = self.control.config, self.control.setup, self.dest
        e = cfg.entry
        levels = range(POSITION_LEVELS)
        counts = [e[f"p_count{i}"] for i in levels]
        pool_levels = entry_flags(e.flags)["pool_levels"]

        def pool(v):  # pool address arithmetic
            return v[:abits]

        count_bits = len(e.cw)
        block_bits = len(e.blocks)
        coordinate = len(e.x0)

        # Which counts are 1, registered at setup: the reloads below use these flags, not
        # comparators on the table's fields.
        ones = {name: Signal(name=f"{name}_one") for name in
                ("cw", "kw", "kh", "blocks", *(f"p_count{i}" for i in levels))}
        # The window's counts compared with 1 and 2 in every cycle, for the setup cycle
        # itself: the entry holds them a cycle before its setup (see ``config``), so the
        # setup's loads and its first beat's ``last`` come from flip-flops, not from
        # comparators on the table's fields behind the sequencer's ``stop``.
        early = {name: (Signal(name=f"{name}_is1"), Signal(name=f"{name}_is2"))
                 for name in WINDOW_COUNTS}
        early_one_beat = Signal()
        for name, (is1, is2) in early.items():
            m.d.sync += [is1.eq(e[name] == 1), is2.eq(e[name] == 2)]
        m.d.sync += early_one_beat.eq(Cat(*(e[name] == 1 for name in WINDOW_COUNTS)).all())

        twos = {name: Signal(name=f"{name}_two") for name in WINDOW_COUNTS}
        one_beat = Signal()  # a window of one word
        with m.If(setup):
            m.d.sync += [flag.eq(e[name] == 1) for name, flag in ones.items()]
            m.d.sync += [flag.eq(early[name][1]) for name, flag in twos.items()]
            m.d.sync += one_beat.eq(early_one_beat)

        # ---- issue side: the beats of the current window -------------------------------
        g = _Counter(m, "g", count_bits, two=True)
        tx = _Counter(m, "tx", count_bits, two=True)
        ty = _Counter(m, "ty", count_bits, two=True)
        xx = Signal(signed(coordinate))  # x + tx
        yy = Signal(signed(coordinate))  # y + ty
        x = Signal(signed(coordinate))  # the window's x, for xx's reload at each of its rows
        aptr = Signal(abits)
        wptr = Signal(range(p.weight_words + 1))
        wblock = Signal.like(wptr)  # the current block's first weight word
        w_first = Signal()  # the beat at the issuer starts a window
        w_last = Signal()  # the beat at the issuer ends its window
        gap = Signal(range(rows + 1))  # cycles since the last window started, saturating
        gap_ok = Signal()  # gap == rows
        issuing = Signal()
        # A beat leaves in a cycle with ``issue``, which is a register: its next value is
        # worked out from the next values of the flags it depends on (a lookahead one beat
        # deep), so that the decision that fans out to every pointer and counter of the issue
        # side leaves a flip-flop.
        issue = Signal()
        inside = Signal()

        # ---- the window walker: the window after the current one, prepared ahead ----------
        # It holds the next window's start, x and y, how that window relates to the current
        # one (same block, next block, next sample) and whether there is none: the issuer
        # jumps there on its window's last beat. Once the issuer has taken a window the
        # walker decides which loop level advances (``adv``, one-hot, from its counters' end
        # flags) in one cycle and applies it in the next (``apply``, a flip-flop), so that its
        # priority chain over the position levels, the blocks and the samples never meets
        # ``issue``, and its enables are a gate from flip-flops. The next window is there
        # three cycles after the issuer took one; windows start ``rows`` cycles apart, so
        # with three rows or more it is in time, but for a layer's first window of fewer
        # than four beats (or with fewer rows, short windows): the last beat waits for it.
        pc = [_Counter(m, f"pc{i}", count_bits) for i in levels]
        j = _Counter(m, "j", block_bits)
        b = _Counter(m, "b", len(cfg.batch))
        n_start = Signal(abits)
        n_x = Signal(signed(coordinate))
        n_y = Signal(signed(coordinate))
        n_block = Signal()  # the next window starts the next block of the sample
        n_sample = Signal()  # the next window starts the next sample
        n_end = Signal()  # there is no next window: the layer's issue side ends
        n_valid = Signal()
        in_s = Signal(abits)
        adv = Signal(POSITION_LEVELS + 3)  # level 0..3, block, sample, end
        reload = Signal(POSITION_LEVELS)  # the position counters that start again
        apply = Signal()

        m.d.comb += [
            inside.eq(~xx[-1] & (xx.as_unsigned() < e.in_width) &
                      ~yy[-1] & (yy.as_unsigned() < e.in_height)),
            self.o_beat.valid.eq(issue),
            self.o_beat.payload.weight_addr.eq(wptr),
            self.o_beat.payload.act_addr.eq(aptr),
            self.o_beat.payload.zero.eq(~inside),
            self.o_beat.payload.last.eq(w_last),
        ]
        # A window's last beat held for the walker holds the gap too: the array's output
        # needs ``rows`` cycles between the last beats of two windows.
        held = Signal()
        m.d.comb += held.eq(issuing & ~w_first & w_last & ~n_valid)
        with m.If(issue & w_first):
            m.d.sync += gap.eq(1)
        with m.Elif(~gap_ok & ~held):
            m.d.sync += gap.eq(gap + 1)

        all_end = Signal()
        m.d.comb += all_end.eq(Cat(c.end for c in pc).all())
        # the steps of the level that advances, chosen with the decision: one adder each
        act_step = Signal.like(e.act_step0)
        x_step = Signal.like(e.x_step0)
        y_step = Signal.like(e.y_step0)
        with m.If(~n_valid & ~apply):
            m.d.sync += apply.eq(1)
            level = [Cat(c.end for c in pc[:i]).all() & ~pc[i].end for i in levels]
            m.d.sync += [adv[i].eq(level[i]) for i in levels]
            for step, name in ((act_step, "act_step"), (x_step, "x_step"), (y_step, "y_step")):
                m.d.sync += step.eq(_choose(len(step), [
                    (level[i], e[f"{name}{i}"].as_unsigned()) for i in levels]))
            last_window = all_end & j.end & b.end
            m.d.sync += [adv[-3].eq(all_end & ~j.end), adv[-2].eq(all_end & j.end & ~b.end),
                         adv[-1].eq(last_window)]
            m.d.sync += [reload[k].eq(Cat(c.end for c in pc[:k + 1]).all() & ~last_window)
                         for k in levels]
        with m.If(apply):
            # apply ``adv``: one-hot, so every register takes an AND-OR of its choices, not
            # a priority chain over them
            m.d.sync += [apply.eq(0),
                         n_block.eq(adv[-3]), n_sample.eq(adv[-2]), n_end.eq(adv[-1])]
            moved = adv[-3] | adv[-2]  # a new block or sample: the positions start again
            next_in = pool(in_s + e.in_sample_words)

            stepped = adv[:POSITION_LEVELS].any()
            m.d.sync += [
                n_start.eq(_choose(abits, [
                    (stepped, pool(n_start + act_step)), (adv[-3], in_s), (adv[-2], next_in)])),
                n_x.eq(_choose(coordinate, [
                    (stepped, n_x + x_step), (moved, e.x0.as_unsigned())]).as_signed()),
                n_y.eq(_choose(coordinate, [
                    (stepped, n_y + y_step), (moved, e.y0.as_unsigned())]).as_signed()),
            ]
            for k in levels:
                with m.If(reload[k]):
                    pc[k].load(counts[k], ones[f"p_count{k}"])
                with m.Elif(adv[k]):
                    pc[k].step()
            with m.If(adv[-3]):
                j.step()
            with m.Elif(adv[-2]):
                j.load(e.blocks, ones["blocks"])
            with m.If(adv[-2]):
                b.step()
                m.d.sync += in_s.eq(next_in)

        # ---- output side ----------------------------------------------------------------
        opc = [_Counter(m, f"opc{i}", count_bits) for i in levels]
        ofirst = [Signal(name=f"ofirst{i}") for i in levels]  # opc[i] at its count
        oj = _Counter(m, "oj", block_bits)
        ob = _Counter(m, "ob", len(cfg.batch))
        done = Signal()
        pos = Signal(abits)
        out_s = Signal(abits)
        bptr = Signal(range(p.bias_depth + 1))
        bblock = Signal.like(bptr)
        m_idx = Signal(len(e.fan_out) + 1)  # output channel j * rows + r (< fan_out + rows)
        mblock = Signal.like(m_idx)
        o_word = Signal(abits)  # m // lanes
        o_lane = Signal(range(lanes))  # m % lanes
        wblock_word = Signal.like(o_word)
        wblock_lane = Signal.like(o_lane)
        # With a power-of-two number of lanes, word and lane are m's bits; otherwise they are
        # counted beside it (no divider).
        split = lanes & (lanes - 1) == 0
        if split:
            shift_bits = lanes.bit_length() - 1
            m.d.comb += [o_word.eq(m_idx[shift_bits:]), o_lane.eq(m_idx[:shift_bits])]

        def words(*statements):
            return [] if split else list(statements)
        pool_first = Signal()
        pool_last = Signal()
        m.d.comb += [
            pool_first.eq(((pool_levels < 1) | ofirst[0]) & ((pool_levels < 2) | ofirst[1])),
            pool_last.eq(((pool_levels < 1) | opc[0].end) & ((pool_levels < 2) | opc[1].end)),
            dest.bias.eq(bptr),
            dest.word.eq(pool(pos + o_word)),
            dest.lane.eq(o_lane),
            dest.first.eq(pool_first),
            dest.write.eq((m_idx < e.fan_out) & pool_last),
            self.control.done.eq(done),
        ]
        weight_over = Signal()
        bias_over = Signal()
        m.d.comb += [weight_over.eq(issuing & (wptr == p.weight_words)),
                     bias_over.eq(bptr == p.bias_depth)]
        write_over = Signal()
        if p.act_words < 1 << abits:
            m.d.comb += write_over.eq(dest.take & dest.write & (dest.word >= p.act_words))
        m.d.comb += self.control.overrun.eq(weight_over | bias_over | write_over)

        # Which loop level the next position end advances: one-hot (levels 0..3, block,
        # sample), and whether that end is the layer's last. With two rows or more these are
        # registers, worked out every cycle from the counters' end flags: a position lasts at
        # least ``rows`` takes, so they are fresh when a position ends (with one row they are
        # wires).
        o_adv = Signal(POSITION_LEVELS + 2)
        o_reload = Signal(POSITION_LEVELS)  # the position counters that start again
        o_done = Signal()
        o_step = Signal.like(e.out_step0)  # the out step of the level that advances
        o_all_end = Cat(c.end for c in opc).all()
        o_level = [Cat(c.end for c in opc[:i]).all() & ~opc[i].end for i in levels]
        decide = m.d.sync if rows > 1 else m.d.comb
        decide += [
            *(o_adv[i].eq(o_level[i]) for i in levels),
            o_step.eq(_choose(len(o_step), [(o_level[i], e[f"out_step{i}"].as_unsigned())
                                            for i in levels])),
            o_adv[-2].eq(o_all_end & ~oj.end),
            o_adv[-1].eq(o_all_end & oj.end),
            *(o_reload[k].eq(Cat(c.end for c in opc[:k + 1]).all()) for k in levels),
            o_done.eq(o_all_end & oj.end & ob.end),
        ]

        with m.If(dest.take):
            m.d.sync += [bptr.eq(bptr + 1), m_idx.eq(m_idx + 1)]
            if not split:
                with m.If(o_lane == lanes - 1):
                    m.d.sync += [o_lane.eq(0), o_word.eq(o_word + 1)]
                with m.Else():
                    m.d.sync += o_lane.eq(o_lane + 1)
            with m.If(dest.last):
                next_out = pool(out_s + e.out_sample_words)
                m.d.sync += pos.eq(_choose(abits, [
                    (o_adv[:POSITION_LEVELS].any(), pool(pos + o_step)),
                    (o_adv[-2], out_s), (o_adv[-1], next_out)]))
                for k in levels:
                    with m.If(o_reload[k]):
                        opc[k].load(counts[k], ones[f"p_count{k}"])
                        m.d.sync += ofirst[k].eq(1)
                    with m.Elif(o_adv[k]):
                        opc[k].step()
                        m.d.sync += ofirst[k].eq(0)
                with m.If(o_adv[:POSITION_LEVELS].any()):
                    # the position's rows are done: the next position of the block restarts
                    # them
                    m.d.sync += [bptr.eq(bblock), m_idx.eq(mblock),
                                 *words(o_word.eq(wblock_word), o_lane.eq(wblock_lane))]
                with m.If(o_adv[-2]):
                    # the block ends: the next block's rows follow on
                    oj.step()
                    m.d.sync += [bblock.eq(bptr + 1), mblock.eq(m_idx + 1)]
                    if not split:
                        with m.If(o_lane == lanes - 1):
                            m.d.sync += [wblock_lane.eq(0), wblock_word.eq(o_word + 1)]
                        with m.Else():
                            m.d.sync += [wblock_lane.eq(o_lane + 1), wblock_word.eq(o_word)]
                with m.If(o_adv[-1]):
                    # the sample ends: the next one's outputs from its own base
                    oj.load(e.blocks, ones["blocks"])
                    ob.step()
                    m.d.sync += [out_s.eq(next_out),
                                 bptr.eq(e.bias_base), bblock.eq(e.bias_base),
                                 m_idx.eq(0), mblock.eq(0),
                                 *words(o_word.eq(0), o_lane.eq(0), wblock_word.eq(0),
                                        wblock_lane.eq(0))]
                with m.If(o_done):
                    m.d.sync += done.eq(1)

        # ---- the issue side's steps -----------------------------------------------------
        with m.If(issue):
            with m.If(~g.end):
                g.step()
            with m.Elif(~tx.end):
                g.load(e.cw, ones["cw"], twos["cw"])
                tx.step()
                m.d.sync += xx.eq(xx + 1)
            with m.Elif(~ty.end):
                g.load(e.cw, ones["cw"], twos["cw"])
                tx.load(e.kw, ones["kw"], twos["kw"])
                ty.step()
                m.d.sync += [xx.eq(x), yy.eq(yy + 1)]
            with m.Else():
                # the window ends: the issuer jumps to the walker's next window
                g.load(e.cw, ones["cw"], twos["cw"])
                tx.load(e.kw, ones["kw"], twos["kw"])
                ty.load(e.kh, ones["kh"], twos["kh"])
                m.d.sync += [x.eq(n_x), xx.eq(n_x), yy.eq(n_y)]
        # The block's first weight word, at a window's end (said by ``w_last``, a register,
        # rather than by the three counters' end flags: the enable of its 16 flip-flops is
        # then two LUTs deep).
        with m.If(issue & w_last):
            with m.If(n_sample):
                m.d.sync += wblock.eq(e.weight_base)
            with m.Elif(n_block):
                m.d.sync += wblock.eq(wptr + 1)  # and wptr steps on to it
        # The two pointers, each as a sum and one multiplexer after it (a setup never meets
        # a beat: the issue side has ended before the sequencer sets the next layer up).
        # wptr: the next word, or the block's first again, or the layer's first (a window of
        # the same block, of the next sample).
        w_inc = Signal()
        m.d.comb += w_inc.eq(issue & (~w_last | (n_block & ~n_sample)))
        with m.If(w_inc):
            m.d.sync += wptr.eq(wptr + 1)
        with m.Elif(setup | issue):
            m.d.sync += wptr.eq(Mux(setup | n_sample, e.weight_base, wblock))
        # aptr: the next word of the window's row, or the first of its next row (a step from
        # the table), or the next window's start.
        a_sum = Signal.like(aptr)
        m.d.comb += a_sum.eq(pool(aptr + Mux(g.end & tx.end, e.row_step, 1)))
        with m.If(setup | (issue & w_last)):
            m.d.sync += aptr.eq(Mux(setup, pool(e.in_base), n_start))
        with m.Elif(issue):
            m.d.sync += aptr.eq(a_sum)

        # ---- setup (after the steps above: it wins) ------------------------------------
        # The issue side loads in the setup cycle; the walker a cycle later and the output
        # side two cycles later, from flip-flops of their own (a setup reaching every
        # register of the generator from one flip-flop was the slowest net of the device),
        # and from the count flags registered at setup. The first row cannot come sooner:
        # the array's pipeline is longer.
        setup_walk = Signal()
        setup_out = Signal()
        batch_one = Signal()
        m.d.sync += [setup_walk.eq(setup), setup_out.eq(setup_walk)]
        with m.If(setup):
            for c, name in ((g, "cw"), (tx, "kw"), (ty, "kh")):
                c.load(e[name], *early[name])
            m.d.sync += [
                x.eq(e.x0), xx.eq(e.x0), yy.eq(e.y0),
                apply.eq(0), batch_one.eq(cfg.batch == 1),
                wblock.eq(e.weight_base), gap.eq(rows), done.eq(0),
            ]
        with m.If(setup_walk):
            for i in levels:
                pc[i].load(counts[i], ones[f"p_count{i}"])
            j.load(e.blocks, ones["blocks"])
            b.load(cfg.batch, batch_one)
            base = pool(e.in_base)
            m.d.sync += [n_x.eq(e.x0), n_y.eq(e.y0), n_start.eq(base), in_s.eq(base),
                         apply.eq(0)]
        with m.If(setup_out):
            for i in levels:
                opc[i].load(counts[i], ones[f"p_count{i}"])
                m.d.sync += ofirst[i].eq(1)
            oj.load(e.blocks, ones["blocks"])
            ob.load(cfg.batch, batch_one)
            m.d.sync += [
                pos.eq(pool(e.out_base)), out_s.eq(pool(e.out_base)),
                bptr.eq(e.bias_base), bblock.eq(e.bias_base),
                m_idx.eq(0), mblock.eq(0),
                *words(o_word.eq(0), o_lane.eq(0), wblock_word.eq(0), wblock_lane.eq(0)),
            ]
        # ---- the flags ``issue`` depends on, and ``issue`` itself, one cycle ahead ---------
        # (stop wins over setup, setup over a beat: a setup only comes after a layer's end)
        w_last_next = Signal()
        w_first_next = Signal()
        gap_ok_next = Signal()
        n_valid_next = Signal()
        issuing_next = Signal()
        m.d.comb += [
            w_last_next.eq(w_last),
            w_first_next.eq(w_first),
            gap_ok_next.eq(gap_ok),
            n_valid_next.eq(n_valid),
            issuing_next.eq(issuing),
        ]
        with m.If(apply):
            m.d.comb += n_valid_next.eq(1)  # the walker's next window is there
        with m.If(issue & w_first):
            m.d.comb += gap_ok_next.eq(rows == 1)
        with m.Elif(~gap_ok & ~held):
            m.d.comb += gap_ok_next.eq(gap == rows - 1)
        with m.If(issue):
            m.d.comb += w_first_next.eq(w_last)
            # the beat after this one ends its window if the counters' step ends all three
            with m.If(~g.end):
                m.d.comb += w_last_next.eq(g.two & tx.end & ty.end)
            with m.Elif(~tx.end):
                m.d.comb += w_last_next.eq(ones["cw"] & tx.two & ty.end)
            with m.Elif(~ty.end):
                m.d.comb += w_last_next.eq(ones["cw"] & ones["kw"] & ty.two)
            with m.Else():
                m.d.comb += [w_last_next.eq(one_beat), n_valid_next.eq(0)]
                with m.If(n_end):
                    m.d.comb += issuing_next.eq(0)
        with m.If(setup):
            m.d.comb += [w_last_next.eq(early_one_beat),
                         w_first_next.eq(1), gap_ok_next.eq(1), n_valid_next.eq(0),
                         issuing_next.eq(1)]
        with m.If(self.control.stop):
            m.d.comb += issuing_next.eq(0)
        m.d.sync += [
            w_last.eq(w_last_next),
            w_first.eq(w_first_next),
            gap_ok.eq(gap_ok_next),
            n_valid.eq(n_valid_next),
            issuing.eq(issuing_next),
            issue.eq(issuing_next & (~w_first_next | gap_ok_next) &
                     (~w_last_next | n_valid_next)),
        ]
        return m
