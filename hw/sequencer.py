"""The layer sequencer: runs a layer table entry by entry, and decides how a run ends.

For each layer of a run it reads the layer's table entry (one 16-bit word per cycle, entries
back to back from table word 0: :data:`~trine.contract.device_image.DENSE_ENTRY_WORDS` words
for a dense layer, :data:`~trine.contract.device_image.CONV_ENTRY_WORDS` for a convolution,
whose flags word says which), checks it, sets the address generator up
(:class:`trine.hw.address_generator.AddressGenerator`) and waits until the requantiser has
written the layer's last output; the layer's outputs are then in the pool where the next
entry reads them. A run ends after its last layer, or at once with an
:class:`trine.contract.protocol.ErrorCode`:

* ``BAD_ARGUMENT``: a layer count or batch out of range, or a table entry with a zero count
  (blocks, window sizes, position counts) or a weight base past the weight memory;
* ``BAD_ADDRESS``: an entry past the end of the table, a bias base past the bias memory, or
  a layer whose weights or biases run past their memory, or that writes past the pool;
* ``ILLEGAL_WEIGHT``: a weight byte that holds no five trits;
* ``TIMEOUT``: the run has been busy for ``params.max_run_cycles`` cycles (the watchdog: a
  table's loops are bounded by its 16-bit counts, but their product may be astronomically
  long, and a corrupted or hostile table must not hang the device).

The next entry is read as soon as every row of a layer has been taken, while the requantiser
still drains the last ones (its shift and ReLU are latched at setup; the reading takes longer
than the drain, and the setup waits for it in any case), so a layer boundary costs the
entry's words and two cycles, the array's latency aside.

For timing, the sequencer is a one-hot state machine (:class:`trine.hw.onehot.OneHotFSM`) and
takes every decision on flags registered a cycle earlier: the table checks are made on each
word as it arrives and registered, an address past its memory is flagged a cycle late (while
the beat or row that needs it is still in flight, so the layer cannot end first), the
watchdog is one bit of the run's cycle counter, registered, and the flush of the datapath at
the start of a run is a register.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out

from trine.contract.device_image import CONV_ENTRY_WORDS, DENSE_ENTRY_WORDS, POSITION_LEVELS
from trine.contract.params import AcceleratorParams
from trine.contract.protocol import ErrorCode
from trine.hw.address_generator import (
    DENSE_DEFAULTS,
    ENTRY_FIELDS,
    LoopControlSignature,
    entry_flags,
    entry_layout,
)
from trine.hw.counters import CycleCounter
from trine.hw.host_port import CYCLE_COUNTER_WIDTH, RunSignature
from trine.hw.memories import address_width
from trine.hw.onehot import OneHotFSM
from trine.hw.params import check_params
from trine.hw.requantizer import REQUANTIZER_CONFIG

__all__ = ["LayerSequencer"]

#: The table words checked as they arrive: the weight base, the bias base, then the counts
#: that must not be zero (blocks, cw, kw, kh, the four position counts).
COUNT_WORDS = tuple(ENTRY_FIELDS.index(name) for name in (
    "weight_base", "bias_base", "blocks", "cw", "kw", "kh",
    *(f"p_count{i}" for i in range(POSITION_LEVELS))))


class LayerSequencer(wiring.Component):
    """Runs ``run.n_layers`` table entries on a batch, then idles (see the module notes).

    Parameters
    ----------
    params : trine.contract.params.AcceleratorParams

    Members
    -------
    run : In(trine.hw.host_port.RunSignature(params))
        Start a run, see how it went.
    table : In(ReadPort.Signature(addr_width=address_width(table_words), shape=16))
        The layer table, read synchronously.
    loops : Out(trine.hw.address_generator.LoopControlSignature(params))
        ``setup`` is high for one cycle per layer, once its table entry has been read and
        checked (the entry's words + 1 cycles, counted from the cycle every row of the layer
        before was taken); ``stop`` in the cycle after a start and in the cycle after a run
        aborts.
    requantizer : Out(trine.hw.requantizer.REQUANTIZER_CONFIG)
        The current layer's shift, ReLU and ternary threshold (0 without
        ``params.ternary_act``), from its setup on.
    busy : Out(1)
        A run is going (``run.busy``): the datapath has the memories.
    flush : Out(1)
        Clears the datapath, in the cycle after a start.
    illegal : In(1)
        A weight byte in the array's feed was illegal (registered there).
    draining : In(1)
        The requantiser holds or computes outputs.
    idle_addr : In(address_width(table_words))
        With ``params.ram_output == "registered"`` only: while idle, the table's read address
        follows this one (the host's) a cycle later, from the sequencer's own address
        register, so that no multiplexer sits between that register and the table (built
        from LUTs on such devices, its read multiplexer deep).
    """

    def __init__(self, params: AcceleratorParams):
        self.params = p = check_params(params)
        super().__init__({
            "run": In(RunSignature(p)),
            "table": In(ReadPort.Signature(addr_width=address_width(p.table_words), shape=16)),
            "loops": Out(LoopControlSignature(p)),
            "requantizer": Out(REQUANTIZER_CONFIG),
            "busy": Out(1),
            "flush": Out(1),
            "illegal": In(1),
            "draining": In(1),
            **({"idle_addr": In(address_width(p.table_words))}
               if p.ram_output == "registered" else {}),
        })

    def elaborate(self, platform):
        m = Module()
        p, run, loops = self.params, self.run, self.loops

        busy = Signal()
        flush = Signal()
        last_index = Signal.like(run.n_layers)  # n_layers - 1: no adder before the comparator
        batch = Signal.like(run.batch)
        error = Signal(8)
        m.submodules.cycle_counter = cycle_counter = CycleCounter(CYCLE_COUNTER_WIDTH)
        expired = Signal()  # the watchdog
        m.d.sync += expired.eq(busy & cycle_counter.value[p.watchdog_bits])
        m.d.comb += [
            run.busy.eq(busy), self.busy.eq(busy), self.flush.eq(flush),
            run.error.eq(error), cycle_counter.count.eq(busy), run.cycles.eq(cycle_counter.value),
        ]

        # The entry, read a word per cycle, each word into its field (kept at the width the
        # loops need); a dense entry leaves the convolution's counts and coordinates at their
        # defaults.
        layer = Signal(8)
        taddr = Signal(range(p.table_words + CONV_ENTRY_WORDS + 1))
        k = Signal(range(CONV_ENTRY_WORDS + 2))  # words asked for in this entry
        entry = Signal(entry_layout(p), reset_less=True)
        conv = Signal()
        # the entry's last word arrives in this cycle (a register, set a cycle ahead)
        entry_ends = Signal()
        at_weight_base = Signal()  # the weight base arrives in this cycle
        at_bias_base = Signal()
        at_count = Signal()  # a count that must not be zero arrives
        m.d.comb += [self.table.addr.eq(taddr), loops.config.entry.eq(entry),
                     loops.config.batch.eq(batch)]
        # The requantiser's config is latched at setup: the next entry is read while the
        # requantiser still drains the layer before (see LOAD).
        flags = entry_flags(entry.flags)
        rq_shift = Signal.like(self.requantizer.shift)
        rq_relu = Signal()
        m.d.comb += [self.requantizer.shift.eq(rq_shift), self.requantizer.relu.eq(rq_relu)]
        # Without ternary_act the threshold is not held (compile_image refuses such tables
        # for this device) and the requantiser's stays 0: int8 outputs.
        rq_threshold = Signal.like(self.requantizer.ternary_threshold)
        if p.ternary_act:
            m.d.comb += self.requantizer.ternary_threshold.eq(rq_threshold)

        # The entry's checks, made on each word as it arrives and registered (a zero count,
        # a base past its memory), and on where the entry ended (past the table).
        bad_count = Signal()
        bad_weight = Signal()
        bad_bias = Signal()
        bad_table = Signal()
        bad_args = Signal()
        past_end = Signal()
        last_layer = Signal()
        fsm_running = Signal()
        # The entry's verdict, registered in every cycle: its checks are all made by the
        # cycle before its setup (the last word's is not a check, and where the entry ends
        # is known a cycle ahead), so the setup's abort is one flip-flop. An entry past the
        # table is garbage: that is said first.
        setup_bad = Signal()
        setup_code = Signal(8)
        m.d.sync += [
            setup_bad.eq(bad_table | bad_count | bad_weight | bad_bias),
            setup_code.eq(Mux(bad_table | ~(bad_count | bad_weight), ErrorCode.BAD_ADDRESS,
                              ErrorCode.BAD_ARGUMENT)),
        ]
        m.d.sync += [
            past_end.eq(fsm_running & loops.overrun),
            last_layer.eq(layer == last_index),
        ]
        # `flush` is a register: it clears the datapath in the cycle after a start (nothing
        # is issued before the layer table is read), so that no decision fans out to it.
        m.d.sync += flush.eq(0)
        # The cycle counter starts again in the cycle after a start, its first counted, from
        # a flip-flop of its own (a start's decision reaching its 32 enables was the slowest
        # path).
        restart = Signal()
        m.d.sync += restart.eq(0)
        m.d.comb += cycle_counter.clear.eq(restart)
        # `stop` is a register too (the abort decisions are several LUTs deep and the
        # address generator's next `issue` depends on it): the generator stops a cycle after
        # an abort, and may issue one more beat, into a datapath that with busy low writes
        # nowhere and that the next start flushes.
        stop = Signal()
        m.d.sync += stop.eq(0)
        m.d.comb += loops.stop.eq(stop)

        # One flip-flop per state: the state tests feeding the wide enables of the run's
        # registers (and the address generator's `setup`) are single wires.
        fsm = OneHotFSM(m, ("IDLE", "START", "LOAD", "DRAIN", "SETUP", "RUN"))
        m.d.comb += [fsm_running.eq(fsm.ongoing("RUN")), loops.setup.eq(fsm.ongoing("SETUP"))]

        def abort(code):
            # The datapath is not flushed here: with busy low it writes nowhere, and the next
            # start flushes it.
            m.d.sync += [error.eq(code), busy.eq(0)]
            m.d.sync += stop.eq(1)
            fsm.go("IDLE")

        def begin_entry():
            m.d.sync += [k.eq(0), entry_ends.eq(0), at_weight_base.eq(0), at_bias_base.eq(0),
                         at_count.eq(0), bad_count.eq(0), bad_weight.eq(0), bad_bias.eq(0)]
            m.d.sync += [entry[name].eq(value) for name, value in DENSE_DEFAULTS.items()]

        with fsm.state("IDLE"):
            if p.ram_output == "registered":
                m.d.sync += taddr.eq(self.idle_addr)
            with m.If(run.start):
                m.d.sync += restart.eq(1)
                m.d.sync += stop.eq(1)
                m.d.sync += [flush.eq(1), busy.eq(1), last_index.eq(run.n_layers - 1),
                             bad_args.eq((run.n_layers == 0) | (run.batch == 0) |
                                         (run.batch > p.max_batch)),
                             batch.eq(run.batch), error.eq(0), layer.eq(0), taddr.eq(0)]
                begin_entry()
                fsm.go("START")
        with fsm.state("START"):
            with m.If(bad_args):
                abort(ErrorCode.BAD_ARGUMENT)
            with m.Else():
                fsm.go("LOAD")
        with fsm.state("LOAD"):
            # The table's read port is synchronous: word `k - 1` of the entry is on its data.
            # The address of the last word's cycle is not stepped past: it is the next
            # entry's first word. The layer before may still be draining (its last rows in
            # the requantiser's pipeline, writing where this entry does not read before its
            # setup, which waits for them): the entry is read meanwhile.
            # Word `index` arrives when k == index + 1 (compared with constants: no
            # subtractor in the path to the fields' enables).
            # The words checked are flagged a cycle ahead, so a check is one comparator on
            # the data and a flip-flop.
            m.d.sync += [k.eq(k + 1),
                         entry_ends.eq(((k == DENSE_ENTRY_WORDS - 1) & ~conv) |
                                       (k == CONV_ENTRY_WORDS - 1)),
                         at_weight_base.eq(k == COUNT_WORDS[0]),
                         at_bias_base.eq(k == COUNT_WORDS[1]),
                         at_count.eq(Cat(*(k == w for w in COUNT_WORDS[2:])).any())]
            data = self.table.data
            for index, name in enumerate(ENTRY_FIELDS):
                with m.If(k == index + 1):
                    m.d.sync += entry[name].eq(data)
            with m.If(k == 1):
                m.d.sync += conv.eq(entry_flags(data)["conv"])
            with m.If(at_weight_base):
                m.d.sync += bad_weight.eq(data >= p.weight_words)
            with m.If(at_bias_base):
                m.d.sync += bad_bias.eq(data >= p.bias_depth)
            with m.If(at_count & (data == 0)):
                m.d.sync += bad_count.eq(1)
            with m.If(entry_ends):
                with m.If(self.draining):
                    fsm.go("DRAIN")
                with m.Else():
                    fsm.go("SETUP")
            with m.Else():
                m.d.sync += taddr.eq(taddr + 1)
                # where the entry ends, a cycle ahead: the address after this one
                m.d.sync += bad_table.eq(taddr >= p.table_words)
        with fsm.state("DRAIN"):
            # the layer before still writes its last outputs, which the entry may read
            with m.If(~self.draining):
                fsm.go("SETUP")
        with fsm.state("SETUP"):
            # the address generator loads its counters in this state (loops.setup)
            m.d.sync += [rq_shift.eq(flags["shift"]), rq_relu.eq(flags["relu"])]
            if p.ternary_act:
                m.d.sync += rq_threshold.eq(flags["ternary_threshold"])
            with m.If(setup_bad):
                abort(setup_code)
            with m.Else():
                fsm.go("RUN")
        with fsm.state("RUN"):
            # The counters' last steps do not matter after an abort.
            with m.If(expired):
                abort(ErrorCode.TIMEOUT)
            with m.Elif(self.illegal):
                abort(ErrorCode.ILLEGAL_WEIGHT)
            with m.Elif(past_end):
                abort(ErrorCode.BAD_ADDRESS)
            with m.Elif(loops.done & ~last_layer):
                # every row is taken: read the next entry while the last ones drain
                m.d.sync += layer.eq(layer + 1)
                begin_entry()
                fsm.go("LOAD")
            with m.Elif(loops.done & ~self.draining):
                # the last layer's outputs are all written
                m.d.sync += [layer.eq(layer + 1), busy.eq(0)]
                fsm.go("IDLE")
        return m
