"""The layer sequencer: runs a device image layer by layer, and decides how a run ends.

For each layer of a run it reads the layer's table entry (one halfword per cycle), checks
every field against the memories' limits, prepares the loop bounds, sets the address
generator up (:class:`trine.hw.address_generator.AddressGenerator`) and waits until the
requantiser has written the layer's last output; then the layer's outputs become the next
layer's inputs (the activation buffers swap). A run ends after its last layer, or at once
with an :class:`trine.contract.protocol.ErrorCode`:

* ``BAD_ARGUMENT``: a layer count or batch out of range, or a table entry whose chunks,
  blocks, fan-out, shift or weight base is out of range;
* ``BAD_ADDRESS``: a bias base past the bias memory, or a layer whose weights or biases run
  past their memory;
* ``ILLEGAL_WEIGHT``: a weight byte that holds no five trits.

For timing, the sequencer is a one-hot state machine (:class:`trine.hw.onehot.OneHotFSM`) and
takes every decision on flags registered a cycle earlier: the table checks are registered in
one state and combined in the next, an address past its memory is flagged a cycle late (while
the beat or row that needs it is still in flight, so the layer cannot end first), and the
flush of the datapath at the start of a run is a register.
"""

from __future__ import annotations

import dataclasses

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out

from trine.contract.device_image import LayerEntry
from trine.contract.params import AcceleratorParams
from trine.contract.protocol import ErrorCode
from trine.hw.address_generator import LoopControlSignature
from trine.hw.counters import CycleCounter
from trine.hw.host_port import CYCLE_COUNTER_WIDTH, RunSignature
from trine.hw.memories import TABLE_HALFWORDS, TABLE_SLOT_BITS, TABLE_SLOTS, address_width
from trine.hw.onehot import OneHotFSM
from trine.hw.params import check_params
from trine.hw.requantizer import REQUANTIZER_CONFIG

__all__ = ["LAYER_ENTRY_LAYOUT", "LayerSequencer"]

#: A layer-table entry (:class:`trine.contract.device_image.LayerEntry`, little-endian) as
#: the sequencer holds it.
LAYER_ENTRY_LAYOUT = data.StructLayout({
    "weight_base": 32, "bias_base": 16, "chunks": 16, "blocks": 16, "fan_out": 16,
    "shift": 8, "relu": 8,
})
assert list(LAYER_ENTRY_LAYOUT.members) == [f.name for f in dataclasses.fields(LayerEntry)]
assert LAYER_ENTRY_LAYOUT.size == 16 * TABLE_HALFWORDS


def _low(value, limit):
    """The low bits of ``value`` that hold any number ``0 .. limit``."""
    return value[: max(1, limit.bit_length())]


class LayerSequencer(wiring.Component):
    """Runs ``run.n_layers`` layers on a batch, then idles (see the module notes).

    Parameters
    ----------
    params : trine.contract.params.AcceleratorParams

    Members
    -------
    run : In(trine.hw.host_port.RunSignature(params))
        Start a run, see how it went.
    table : In(ReadPort.Signature(addr_width=address_width(max_layers * TABLE_SLOTS),
                                  shape=16))
        The layer table, read synchronously.
    loops : Out(trine.hw.address_generator.LoopControlSignature(params))
        ``setup`` is high for one cycle per layer, once its table entry has been read and
        checked (``TABLE_HALFWORDS + 3`` cycles); ``stop`` in the cycle of a start and in the
        cycle a run aborts.
    requantizer : Out(trine.hw.requantizer.REQUANTIZER_CONFIG)
        The current layer's shift and ReLU.
    busy : Out(1)
        A run is going (``run.busy``): the datapath has the memories.
    src : Out(1)
        The activation buffer the current layer reads; it writes the other one.
    flush : Out(1)
        Clears the datapath, in the cycle after a start.
    illegal : In(1)
        A weight byte in the array's feed was illegal (registered there).
    draining : In(1)
        The requantiser holds or computes outputs.
    """

    def __init__(self, params: AcceleratorParams):
        self.params = p = check_params(params)
        super().__init__({
            "run": In(RunSignature(p)),
            "table": In(ReadPort.Signature(addr_width=address_width(p.max_layers * TABLE_SLOTS),
                                           shape=16)),
            "loops": Out(LoopControlSignature(p)),
            "requantizer": Out(REQUANTIZER_CONFIG),
            "busy": Out(1),
            "src": Out(1),
            "flush": Out(1),
            "illegal": In(1),
            "draining": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        p, run, loops = self.params, self.run, self.loops

        busy = Signal()
        flush = Signal()
        n_layers = Signal.like(run.n_layers)
        batch = Signal.like(run.batch)
        src = Signal()
        error = Signal(8)
        m.submodules.cycle_counter = cycle_counter = CycleCounter(CYCLE_COUNTER_WIDTH)
        m.d.comb += [
            run.busy.eq(busy), self.busy.eq(busy), self.flush.eq(flush), self.src.eq(src),
            run.error.eq(error), run.out_buffer.eq(n_layers[0]),
            cycle_counter.count.eq(busy), run.cycles.eq(cycle_counter.value),
        ]

        # The table entry, read into a shift register a halfword per cycle.
        layer = Signal(range(p.max_layers + 1))
        half = Signal(TABLE_SLOT_BITS)
        m.d.comb += self.table.addr.eq(Cat(half, layer))
        entry = Signal(LAYER_ENTRY_LAYOUT, reset_less=True)
        shift_field = entry.shift
        # After CHECK every field is within its limit, so its low bits hold it exactly.
        chunks_n = _low(entry.chunks, p.stride)
        blocks_n = _low(entry.blocks, p.max_blocks)

        # Loop bounds, registered in START (batch) and CHECK (the entry's loops).
        cfg = loops.config
        chunks_last = Signal.like(cfg.chunks_last)
        chunks_one = Signal()
        blocks_last = Signal.like(cfg.blocks_last)
        blocks_one = Signal()
        batch_last = Signal.like(cfg.batch_last)
        batch_one = Signal()
        m.d.comb += [
            cfg.weight_base.eq(_low(entry.weight_base, p.weight_words)),
            cfg.bias_base.eq(_low(entry.bias_base, p.bias_depth)),
            cfg.fan_out.eq(_low(entry.fan_out, p.max_width)),
            cfg.chunks_last.eq(chunks_last), cfg.chunks_one.eq(chunks_one),
            cfg.blocks_last.eq(blocks_last), cfg.blocks_one.eq(blocks_one),
            cfg.batch_last.eq(batch_last), cfg.batch_one.eq(batch_one),
            self.requantizer.shift.eq(shift_field[:5]),
            self.requantizer.relu.eq(entry.relu[0]),
        ]

        bad_fields = [Signal(name=f"bad_field{i}") for i in range(4)]
        bad_entry = Signal()
        bad_bias = Signal()
        bad_args = Signal()
        past_end = Signal()
        last_layer = Signal()
        fsm_running = Signal()
        m.d.sync += [
            past_end.eq(fsm_running & loops.overrun),
            last_layer.eq(layer + 1 == n_layers),
        ]
        # `flush` is a register: it clears the datapath in the cycle after a start (nothing
        # is issued before the layer table is read), so that no decision fans out to it.
        m.d.sync += flush.eq(0)

        # One flip-flop per state: the state tests feeding the wide enables of the run's
        # registers (and the address generator's `setup`) are single wires.
        fsm = OneHotFSM(m, ("IDLE", "START", "LOAD", "CHECK", "VERDICT", "SETUP", "RUN"))
        m.d.comb += [fsm_running.eq(fsm.ongoing("RUN")), loops.setup.eq(fsm.ongoing("SETUP"))]

        def abort(code):
            # The datapath is not flushed here: with busy low it writes nowhere, and the next
            # start flushes it.
            m.d.sync += [error.eq(code), busy.eq(0)]
            m.d.comb += loops.stop.eq(1)
            fsm.go("IDLE")

        with fsm.state("IDLE"):
            with m.If(run.start):
                m.d.comb += [cycle_counter.clear.eq(1), loops.stop.eq(1)]
                m.d.sync += [flush.eq(1), busy.eq(1), n_layers.eq(run.n_layers),
                             bad_args.eq((run.n_layers == 0) |
                                         (run.n_layers > p.max_layers) |
                                         (run.batch == 0) | (run.batch > p.max_batch)),
                             batch.eq(run.batch), error.eq(0), layer.eq(0),
                             src.eq(0), half.eq(0)]
                fsm.go("START")
        with fsm.state("START"):
            m.d.sync += [batch_last.eq(batch - 1), batch_one.eq(batch == 1)]
            with m.If(bad_args):
                abort(ErrorCode.BAD_ARGUMENT)
            with m.Else():
                fsm.go("LOAD")
        with fsm.state("LOAD"):
            # the table read port is synchronous: halfword `half - 1` is on its data
            m.d.sync += half.eq(half + 1)
            with m.If(half != 0):
                m.d.sync += entry.eq(Cat(entry.as_value()[16:], self.table.data))
            with m.If(half == TABLE_HALFWORDS):
                m.d.sync += half.eq(0)
                fsm.go("CHECK")
        with fsm.state("CHECK"):
            # the checks are registered: their comparators do not reach the counters
            m.d.sync += [
                bad_fields[0].eq((entry.chunks == 0) | (entry.chunks > p.stride)),
                bad_fields[1].eq((entry.blocks == 0) | (entry.blocks > p.max_blocks)),
                bad_fields[2].eq((entry.fan_out == 0) | (entry.fan_out > p.max_width)),
                bad_fields[3].eq((shift_field > 31) | (entry.weight_base >= p.weight_words)),
                bad_bias.eq(entry.bias_base >= p.bias_depth),
                chunks_last.eq(chunks_n - 1), chunks_one.eq(chunks_n == 1),
                blocks_last.eq(blocks_n - 1), blocks_one.eq(blocks_n == 1),
            ]
            fsm.go("VERDICT")
        with fsm.state("VERDICT"):
            m.d.sync += bad_entry.eq(Cat(*bad_fields).any())
            fsm.go("SETUP")
        with fsm.state("SETUP"):
            # the address generator loads its counters in this state (loops.setup)
            with m.If(bad_entry):
                abort(ErrorCode.BAD_ARGUMENT)
            with m.Elif(bad_bias):
                abort(ErrorCode.BAD_ADDRESS)
            with m.Else():
                fsm.go("RUN")
        with fsm.state("RUN"):
            # The counters' last steps do not matter after an abort.
            with m.If(self.illegal):
                abort(ErrorCode.ILLEGAL_WEIGHT)
            with m.Elif(past_end):
                abort(ErrorCode.BAD_ADDRESS)
            with m.Elif(loops.done & ~self.draining):
                m.d.sync += [layer.eq(layer + 1), src.eq(~src)]
                with m.If(last_layer):
                    m.d.sync += busy.eq(0)
                    fsm.go("IDLE")
                with m.Else():
                    fsm.go("LOAD")
        return m
