"""The accelerator core: memories, layer sequencer, address generator, feed, MAC array and
requantiser.

It runs a :class:`trine.contract.device_image.DeviceImage` for a batch of inputs, one
layer-table entry after the other, every layer reading and writing the one activation pool
where the table says. The link (UART, frames, commands) sits outside and talks to it through
its host port (:class:`trine.hw.host_port.HostPortSignature`): a byte-wide write port, a
byte-wide read port and run control.

Dataflow per layer, sample, block of ``rows`` outputs, output position and window word::

    AddressGenerator --beat--> ArrayFeed (memories: 1 cycle, TritDecoder: 1 cycle)
      --> MACArray(correction=False) --block--> Requantizer (bias read, add, shift, clip,
          pooling max; one row per cycle) --byte--> CoreMemories (the pool)

with the :class:`~trine.hw.sequencer.LayerSequencer` reading the layer table, checking it,
setting the address generator up for each layer and ending the run. One weight word is one
beat, so the array takes a beat per clock while the requantiser keeps up (``rows`` no more
than the window's words, ``kh * kw * cw``); otherwise the address generator starts a window
only every ``rows`` cycles. Zero padding costs the beats of its window words (they are fed as
zeros, never stored), and a fused max-pooling costs nothing (see
:mod:`trine.hw.requantizer`). The feed has no backpressure (every stage advances every cycle,
so no stall signal fans out from the array to the memories), and every decision of the
sequencer is taken on flags registered a cycle earlier. The only bubbles are at layer
boundaries (the next layer needs this layer's outputs, and reading and checking the table
entry takes its words + 4 cycles) and the array's latency. Everything is multiply-free:
addresses advance by increments and steps, the host supplies loop counts in the layer table.

The memories (:class:`~trine.hw.memories.CoreMemories`): the weights sit in a single-port
memory (:class:`trine.hw.ice40.SinglePortMemory`) that the host writes while the core is idle
and the feed reads while it runs; with ``weight_memory="spram"`` that is the iCE40UP5K's four
SPRAM blocks (64 bits x 16K words: 8 bytes = 40 trits per word, so
``beat_bytes(lanes, rows) <= 8``). The layer table is kept in 16-bit words, the pool in words
of ``lanes`` bytes, and each weight byte has its own decoder table
(:class:`~trine.hw.decoder.TritDecoder`; a block RAM has one read port).
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from trine.contract.device_image import BIAS_STORE_BYTES, TABLE_WORD_BYTES, max_fan_in
from trine.contract.params import AcceleratorParams
from trine.contract.protocol import Target
from trine.contract.spec import MAX_FAN_IN
from trine.hw.address_generator import AddressGenerator
from trine.hw.feed import ArrayFeed
from trine.hw.host_port import HostPortSignature
from trine.hw.mac_array import MACArray
from trine.hw.memories import CoreMemories
from trine.hw.params import check_params
from trine.hw.requantizer import Requantizer
from trine.hw.sequencer import LayerSequencer

__all__ = ["AcceleratorCore"]


class AcceleratorCore(wiring.Component):
    """Runs a device image on a batch of inputs.

    The host writes the image and the inputs (``host.write``), starts a run (``host.run``),
    waits until ``host.run.busy`` falls and reads the outputs (``host.read``), the inputs and
    outputs where the image's layouts put them in the pool. Cycle for cycle, the result does
    not depend on ``params.decoder`` or ``params.weight_memory``. The accumulators hold the
    sum of any window the compiler accepts
    (:func:`trine.contract.device_image.max_fan_in`: a window's padding lanes have zero
    weights and add nothing).

    Parameters
    ----------
    params : trine.contract.params.AcceleratorParams
        The array's shape, the memories' depths, the decoder
        (:class:`trine.hw.decoder.TritDecoder`) and the weight memory
        (:class:`trine.hw.ice40.SinglePortMemory`: ``"spram"`` for synthesis on an iCE40UP5K
        only). With ``readback="all"``, ``host.read`` reads every memory
        (``host.read.target``): while idle, the datapath's read ports serve the host; with
        ``"pool"``, only the activation pool, without the address and byte multiplexers.

    Members
    -------
    host : In(trine.hw.host_port.HostPortSignature(params))

    Raises
    ------
    ParameterTypeError
        Unless ``params`` is an :class:`AcceleratorParams`.
    """

    def __init__(self, params: AcceleratorParams):
        self.params = p = check_params(params)
        self.lanes, self.rows = p.lanes, p.rows
        self.beat_bytes = p.beat_bytes
        self.array = MACArray(p.lanes, p.rows, correction=False,
                              max_fan_in=min(MAX_FAN_IN, max_fan_in(p.act_words, p.lanes)))
        self.sequencer = LayerSequencer(p)
        self.addresses = AddressGenerator(p)
        self.memories = CoreMemories(p)
        self.feed = ArrayFeed(p)
        self.requantizer = Requantizer(p, self.array.acc_width)
        super().__init__({"host": In(HostPortSignature(p))})

    def elaborate(self, platform):
        m = Module()
        seq, gen, mem = self.sequencer, self.addresses, self.memories
        feed, rq = self.feed, self.requantizer
        # In the order of the dataflow. The order changes nothing but the order of the
        # netlist, to which the iCE40 mapping (Yosys's abc9) is sensitive: the same logic in
        # another order may map to deeper paths.
        m.submodules.memories = mem
        m.submodules.addresses = gen
        m.submodules.feed = feed
        m.submodules.array = ResetInserter(seq.flush)(self.array)
        m.submodules.requantizer = rq
        m.submodules.sequencer = seq

        wiring.connect(m, wiring.flipped(self.host.write), mem.write)
        wiring.connect(m, wiring.flipped(self.host.run), seq.run)
        if self.params.readback == "all":
            self._read_any(m, seq.busy)
        else:
            wiring.connect(m, wiring.flipped(self.host.read), mem.read)
            wiring.connect(m, seq.table, mem.table)
            wiring.connect(m, feed.weights, mem.weights)
            wiring.connect(m, rq.biases, mem.biases)
        wiring.connect(m, seq.loops, gen.control)
        wiring.connect(m, gen.o_beat, feed.i_beat)
        wiring.connect(m, feed.acts, mem.acts)
        wiring.connect(m, feed.o_stream, self.array.i_stream)
        wiring.connect(m, self.array.o_stream, rq.i_stream)
        wiring.connect(m, rq.dest, gen.dest)
        wiring.connect(m, rq.o_write, mem.result)
        m.d.comb += [
            mem.busy.eq(seq.busy),
            feed.flush.eq(seq.flush),
            rq.flush.eq(seq.flush),
            rq.config.eq(seq.requantizer),
            seq.illegal.eq(feed.illegal),
            seq.draining.eq(rq.busy),
        ]
        return m

    def _read_any(self, m: Module, busy) -> None:
        """Host reads of every memory: while idle, the table's, the biases' and the weights'
        read ports take the host's address, and the byte ``lane`` of the word read is chosen
        by the target and lane of the cycle before (the memories' read latency)."""
        mem, host = self.memories, self.host.read
        users = {"table": self.sequencer.table, "biases": self.requantizer.biases,
                 "weights": self.feed.weights}
        registered = self.params.ram_output == "registered"
        for name, user in users.items():
            port = getattr(mem, name)
            if registered and name == "table":
                # the sequencer's address register takes the host's while idle
                m.d.comb += [port.addr.eq(user.addr), self.sequencer.idle_addr.eq(host.addr)]
            else:
                m.d.comb += port.addr.eq(Mux(busy, user.addr, host.addr))
            m.d.comb += [port.en.eq(user.en | ~busy), user.data.eq(port.data)]
        m.d.comb += [mem.read.addr.eq(host.addr), mem.read.lane.eq(host.lane)]
        target = Signal.like(host.target)
        lane = Signal.like(host.lane)
        m.d.sync += [target.eq(host.target), lane.eq(host.lane)]
        words = {"weights": mem.weights.data, "biases": mem.biases.data, "table": mem.table.data}
        if registered:
            self._read_any_registered(m, words, target, lane)
            return

        def byte(word, n_bytes):
            word = Cat(word, Const(0, 8 * n_bytes - len(word)))
            return word.word_select(lane[:max(1, (n_bytes - 1).bit_length())], 8)

        with m.Switch(target):
            with m.Case(Target.WEIGHTS):
                m.d.comb += host.data.eq(byte(words["weights"], self.beat_bytes))
            with m.Case(Target.BIAS):
                m.d.comb += host.data.eq(byte(words["biases"], BIAS_STORE_BYTES))
            with m.Case(Target.LAYER):
                m.d.comb += host.data.eq(byte(words["table"], TABLE_WORD_BYTES))
            with m.Default():
                m.d.comb += host.data.eq(mem.read.data)

    #: Bytes per group in the first step of a registered device's host read byte select.
    GROUP_BYTES = 8

    def _read_any_registered(self, m: Module, words, target, lane) -> None:
        """The host read of every memory with registered RAM output
        (``host_read_latency`` 4): the word read is registered (the weights' and the pool's in
        :class:`~trine.hw.memories.CoreMemories`, on ECP5 in the block RAMs' output
        registers), then the byte is chosen in two registered steps: within each group of
        :attr:`GROUP_BYTES` bytes of every word (a multiplexer that can sit near the group's
        RAMs), then among the groups of the target's word. A single 52-way multiplexer over
        the ULX3S's weight RAMs, spread over the chip, was 10 ns of mostly routing."""
        mem, host = self.memories, self.host.read
        gb = self.GROUP_BYTES
        gbits = (gb - 1).bit_length()
        # The biases' word registered; the table's comes a cycle later already (the host's
        # address goes through the sequencer's address register, LayerSequencer.idle_addr)
        # and from a flip-flop (the table is built from LUTs on such devices).
        word = Signal.like(words["biases"], name="host_biases_q", reset_less=True)
        m.d.sync += word.eq(words["biases"])
        words["biases"] = word
        # the pool's word as the feed sees it (registered in CoreMemories, like the weights')
        words["pool"] = mem.acts.data
        target_q, lane_q = Signal.like(target), Signal.like(lane)
        target_q2, lane_q2 = Signal.like(target), Signal.like(lane)
        m.d.sync += [target_q.eq(target), lane_q.eq(lane),
                     target_q2.eq(target_q), lane_q2.eq(lane_q)]
        chosen = {}
        for name, word in words.items():
            n_bytes = -(-len(word) // 8)
            groups = []
            for g in range(-(-n_bytes // gb)):
                part = word[8 * gb * g:8 * gb * (g + 1)]
                k = -(-len(part) // 8)  # bytes in this group
                part = Cat(part, Const(0, 8 * k - len(part)))
                group = Signal(8, name=f"host_{name}_g{g}", reset_less=True)
                sel = lane_q[:max(1, (k - 1).bit_length())]
                m.d.sync += group.eq(part.word_select(sel, 8) if k > 1 else part)
                groups.append(group)
            if len(groups) == 1:
                chosen[name] = groups[0]
            else:
                hi = lane_q2[gbits:gbits + (len(groups) - 1).bit_length()]
                chosen[name] = Cat(*groups).word_select(hi, 8)
        data = Signal.like(host.data, reset_less=True)
        with m.Switch(target_q2):
            with m.Case(Target.WEIGHTS):
                m.d.sync += data.eq(chosen["weights"])
            with m.Case(Target.BIAS):
                m.d.sync += data.eq(chosen["biases"])
            with m.Case(Target.LAYER):
                m.d.sync += data.eq(chosen["table"])
            with m.Default():
                m.d.sync += data.eq(chosen["pool"])
        m.d.comb += host.data.eq(data)
