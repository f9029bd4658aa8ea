"""The accelerator core: memories, trit decoder, layer sequencer, MAC array and requantiser.

It runs a :class:`trine.contract.device_image.DeviceImage` for a batch of inputs, one layer after
the other,
ping-ponging between two activation buffers. The link (UART, frames, commands) sits outside
and talks to it through a byte-wide write port, a byte-wide read port and start/busy/error.

Dataflow per layer, sample, block of ``rows`` outputs, chunk of ``lanes`` inputs::

    issue (weight word, activation word) -> memories (1 cycle) -> trit decoder ROM (1 cycle)
      -> MACArray(correction=False) -> requantiser (bias read, add, shift, clip, write;
         1 row per cycle)  -> destination buffer

One weight word is one beat, so the array takes one beat per clock while the requantiser keeps
up (``rows <= ceil(K / lanes)``); otherwise the issuer starts a block only every ``rows``
cycles. The feed has no backpressure (every stage advances every cycle, so no stall signal fans
out from the array to the memories), and every decision of the sequencer is taken on flags
registered a cycle earlier. The only bubbles are at layer boundaries (the next layer needs
this layer's outputs, and the table entry takes 10 cycles to read and check) and the array's
latency. Everything is multiply-free: addresses advance by increments, the host supplies loop
counts in the layer table.

Memories
--------
The weights sit in a single-port memory (:class:`trine.hw.ice40.SinglePortMemory`): the link writes
them while the core is idle, the issuer reads them while it runs. With
``weight_memory="spram"`` that is the iCE40UP5K's four SPRAM blocks (64 bits x 16K words: 8
bytes = 40 trits per word, so ``beat_bytes(lanes, rows) <= 8``). The layer table is kept in
16-bit words (one block RAM for up to 32 layers), both activation buffers share one memory
(its read port feeds the issuer, its write port the requantiser), and each weight byte has its
own decoder ROM (a block RAM has one read port).

Measured, the whole device (:class:`trine.hw.device.Top`, UART included) with ``lanes=8, rows=5,
weight_words=16384, bias_depth=1024, max_layers=32, max_width=256`` (Yosys 0.70
``synth_ice40`` / ``synth_ecp5``, nextpnr 0.11, no DSP inferred anywhere):

==========================  =====  =====  =====  =========  =====  =======================
target                      LUT4   FF     carry  EBR        SPRAM  Fmax after routing (MHz)
==========================  =====  =====  =====  =========  =====  =======================
iCE40UP5K, batch 4          2619   1854   733    24 / 30    4 / 4  48.7, 50.7, 50.9 (seeds)
ECP5-85F, batch 16          2152   1887   438    81 / 208   -      87.3
ECP5-85F 32 x 8, 1K words   4415   4366   1578   91 / 208   -      72.8
ECP5-85F 64 x 8, 1K words   6754   7284   2939   176 / 208  -      61.9
==========================  =====  =====  =====  =========  =====  =======================

(3473 of the UP5K's 5280 logic cells, in this harness without PLL and I/O. As a board build,
``trine build --board icebreaker`` at 48 MHz after the later control-path registers: 3641 logic
cells, 52.4, 50.8, 50.9 MHz for seeds 1-3. The starting point, all generic memories, was 4292
LUT4 and 66 EBR at 2048 weight words, 26 MHz.) On the UP5K no wider array fits with the rest: an
SPRAM word holds 40 trits (the array's weight bandwidth at one beat per clock), and a wider word
in block RAM needs a decoder ROM per byte besides (or 111 LUT4 per byte): 16 x 5 with 512 weight
words in block RAM synthesises to 3435 LUT4 and 52 EBR, or with ``decoder="logic"`` to 5249 LUT4
(and 1077 carries) and 36 EBR, both past the UP5K. The requantiser writes one output per cycle,
so a layer takes at least ``M x batch`` cycles whatever the array: for a 40-256-256-10 MLP at
batch 1 (78,336 MACs, Amaranth simulation) 8 x 5 takes 2073 cycles (1988 beats; 37.8 MACs per
cycle), 32 x 8 622 cycles (336 beats; 125.9) and 64 x 8 616 (168 beats; 127.2; each one cycle
per layer more since the bias stage): beyond 32 x 8 a wider array buys nothing there.
"""
from __future__ import annotations

from amaranth.hdl import (
    Array,
    Cat,
    Const,
    Module,
    Mux,
    ResetInserter,
    Signal,
    signed,
    unsigned,
)
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from trine.contract.device_image import (
    BIAS_STORE_BYTES,
    BIAS_STORE_WIDTH,
    LAYER_ENTRY_SIZE,
)
from trine.contract.errors import ParameterTypeError
from trine.contract.params import AcceleratorParams
from trine.contract.protocol import ErrorCode, Target
from trine.contract.spec import ACT_MAX, ACT_MIN, TRITS_PER_BYTE, trits_to_codes
from trine.hw.counters import CycleCounter
from trine.hw.ice40 import SinglePortMemory
from trine.hw.mac_array import MACArray
from trine.hw.onehot import OneHotFSM

__all__ = ["AcceleratorCore", "decoder_table"]

CYCLE_COUNTER_WIDTH = 32
#: Memory attribute: the design never reads a word in the cycle it writes it, so Yosys need
#: not add bypass logic to give block RAM the simulator's read-before-write behaviour.
NO_RW_CHECK = {"no_rw_check": 1}
#: Halfwords of a layer-table entry, and the table-memory slots (a power of two) it occupies.
TABLE_HALFWORDS = -(-LAYER_ENTRY_SIZE // 2)
TABLE_SLOT_BITS = (TABLE_HALFWORDS - 1).bit_length()
TABLE_SLOTS = 1 << TABLE_SLOT_BITS


def decoder_table() -> list[int]:
    """ROM contents of the trit decoder: byte -> ``illegal << 10 | codes`` (code ``i`` in bits
    ``2i+1:2i``). Bytes 243..255 decode to zero codes with the illegal bit set."""
    table = []
    for b in range(256):
        if b >= 3**TRITS_PER_BYTE:
            table.append(1 << (2 * TRITS_PER_BYTE))
            continue
        trits = [(b // 3**i) % 3 - 1 for i in range(TRITS_PER_BYTE)]
        codes = trits_to_codes(trits)
        table.append(sum(int(c) << (2 * i) for i, c in enumerate(codes)))
    return table



class AcceleratorCore(wiring.Component):
    """Runs a device image on a batch of inputs.

    Parameters
    ----------
    params : trine.contract.params.AcceleratorParams
        The array's shape, the memories' depths, the decoder and the weight memory. The
        decoder is built one 256-entry table per weight byte, with the same timing and results
        whichever way: ``"rom"``, an Amaranth ROM with a synchronous read port (a block RAM
        each); ``"table"``, an array of constants followed by a register, which Yosys
        (``proc_rom``) turns into the same ROMs; ``"logic"``, ROMs that Yosys builds from
        LUTs (``ram_style = "logic"``), no block RAM. The weight memory is ``"generic"`` (an
        Amaranth memory: simulation, block RAM elsewhere) or ``"spram"`` (iCE40UP5K
        ``SB_SPRAM256KA`` instances, synthesis only); see
        :class:`trine.hw.ice40.SinglePortMemory`. Both behave the same, cycle for cycle.

    Members
    -------
    wr_target : In(2)  :class:`trine.contract.protocol.Target`
    wr_addr, wr_lane, wr_data, wr_en : In
        Host write of byte ``wr_lane`` of word ``wr_addr`` (ignored while busy; it takes
        effect one cycle later, from registers).
    rd_buffer, rd_addr, rd_lane : In
        Host read of an activation buffer byte (valid while idle); ``rd_data`` one cycle later.
    rd_data : Out(8)
    start : In(1)
        Strobe: run ``n_layers`` layers on inputs ``0 .. batch - 1`` of buffer 0.
    n_layers, batch : In
    busy : Out(1)
        High from the cycle after ``start`` until the run ends.
    error : Out(8)
        :class:`trine.contract.protocol.ErrorCode` of the last run, 0 if it succeeded.
    cycles : Out(32)
        Clock cycles of the last run (saturating).
    out_buffer : Out(1)
        Buffer that holds the last run's outputs.
    """

    def __init__(self, params: AcceleratorParams):
        if not isinstance(params, AcceleratorParams):
            raise ParameterTypeError(f"params must be a trine.contract.params.AcceleratorParams, "
                                     f"not {params!r}")
        self.params = params
        lanes, rows = self.lanes, self.rows = params.lanes, params.rows
        weight_words, bias_depth = self.weight_words, self.bias_depth = (params.weight_words,
                                                                         params.bias_depth)
        max_layers, max_batch = self.max_layers, self.max_batch = (params.max_layers,
                                                                   params.max_batch)
        self.max_width = params.max_width
        self.decoder, self.weight_memory = params.decoder, params.weight_memory
        self.beat_bytes = params.beat_bytes
        self.stride = params.stride  # buffer words per sample
        self.buffer_words = params.buffer_words
        self.max_blocks = params.max_blocks
        self.array = MACArray(lanes, rows, max_fan_in=self.stride * lanes, correction=False)
        self.weights = SinglePortMemory(self.beat_bytes, weight_words, kind=self.weight_memory)

        depth = max(weight_words, bias_depth, max_layers, self.buffer_words)
        width = max(self.beat_bytes, BIAS_STORE_BYTES, LAYER_ENTRY_SIZE, lanes)
        super().__init__({
            "wr_target": In(2),
            "wr_addr": In(range(depth)),
            "wr_lane": In(range(width)),
            "wr_data": In(8),
            "wr_en": In(1),
            "rd_buffer": In(1),
            "rd_addr": In(range(self.buffer_words)),
            "rd_lane": In(range(lanes)),
            "rd_data": Out(8),
            "start": In(1),
            "n_layers": In(range(max_layers + 1)),
            "batch": In(range(max_batch + 1)),
            "busy": Out(1),
            "error": Out(8),
            "cycles": Out(CYCLE_COUNTER_WIDTH),
            "out_buffer": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        lanes, rows, bb = self.lanes, self.rows, self.beat_bytes

        busy = Signal()
        flush = Signal()  # clears the datapath at the start of a run
        m.d.comb += self.busy.eq(busy)

        # Host writes take effect a cycle late, from registers (address, data and each
        # memory's byte enables), so that the link's logic and the range checks do not form
        # one path into the memories.
        wr_addr = Signal.like(self.wr_addr, reset_less=True)
        wr_lane = Signal.like(self.wr_lane, reset_less=True)
        wr_data = Signal.like(self.wr_data, reset_less=True)
        m.d.sync += [wr_addr.eq(self.wr_addr), wr_lane.eq(self.wr_lane),
                     wr_data.eq(self.wr_data)]

        def host_enables(target, n_bytes, depth, lane=None, name=""):
            lane = self.wr_lane if lane is None else lane
            sel = (self.wr_en & ~busy & (self.wr_target == target) &
                   (self.wr_lane < n_bytes) & (self.wr_addr < depth))
            enables = Signal(n_bytes if lane is self.wr_lane else 2, name=f"{name}_we")
            m.d.sync += enables.eq(_byte_enable(sel, lane, len(enables)))
            return enables

        # ---- layer table ----------------------------------------------------------------
        # 16-bit words, TABLE_SLOTS per entry: one block RAM for up to 32 layers, where an
        # entry-wide memory would take seven (or hundreds of flip-flops). The sequencer reads
        # the TABLE_HALFWORDS halfwords of an entry into a shift register, one per cycle.
        tmem = Memory(shape=16, depth=self.max_layers * TABLE_SLOTS, init=[], attrs=NO_RW_CHECK)
        m.submodules.table = tmem
        t_wr = tmem.write_port(granularity=8)
        m.d.comb += [
            t_wr.addr.eq(Cat(wr_lane[1:TABLE_SLOT_BITS + 1], wr_addr)),
            t_wr.data.eq(wr_data.replicate(2)),
            t_wr.en.eq(host_enables(Target.LAYER, LAYER_ENTRY_SIZE, self.max_layers,
                                    lane=self.wr_lane[0], name="table")),
        ]
        t_rd = tmem.read_port()
        layer = Signal(range(self.max_layers + 1))
        half = Signal(TABLE_SLOT_BITS)
        m.d.comb += t_rd.addr.eq(Cat(half, layer))
        entry = Signal(16 * TABLE_HALFWORDS, reset_less=True)
        # trine.contract.device_image.LayerEntry, little-endian: u32 weight base, u16 bias base,
        # chunks, blocks,
        # fan-out, u8 shift, relu
        weight_base, bias_base = entry[0:32], entry[32:48]
        chunks, blocks, fan_out = entry[48:64], entry[64:80], entry[80:96]
        shift_field, relu = entry[96:104], entry[104]
        shift = shift_field[:5]
        # After CHECK every field is within its limit, so its low bits hold it exactly.
        weight_base_n = _low(weight_base, self.weight_words)
        bias_base_n = _low(bias_base, self.bias_depth)
        chunks_n = _low(chunks, self.stride)
        blocks_n = _low(blocks, self.max_blocks)
        fan_out_n = _low(fan_out, self.max_width)

        n_layers = Signal.like(self.n_layers)
        batch = Signal.like(self.batch)
        src = Signal()  # buffer the current layer reads
        error = Signal(8)
        m.d.comb += [self.error.eq(error), self.out_buffer.eq(n_layers[0])]

        # ---- weights: single-ported (the link writes while idle, the issuer reads) -------
        m.submodules.weights = wmem = self.weights
        issuing = Signal()
        issue = Signal()  # a beat leaves the issuer this cycle
        wptr = Signal(range(self.weight_words + 1))
        m.d.comb += [
            wmem.addr.eq(Mux(busy, wptr, wr_addr)),
            wmem.wr_data.eq(wr_data.replicate(bb)),
            wmem.wr_en.eq(host_enables(Target.WEIGHTS, bb, self.weight_words, name="weights")),
            wmem.rd_en.eq(1),
        ]

        # ---- biases ---------------------------------------------------------------------
        bmem = Memory(shape=unsigned(8 * BIAS_STORE_BYTES), depth=self.bias_depth, init=[],
                      attrs=NO_RW_CHECK)
        m.submodules.biases = bmem
        b_wr = bmem.write_port(granularity=8)
        m.d.comb += [
            b_wr.addr.eq(wr_addr),
            b_wr.data.eq(wr_data.replicate(BIAS_STORE_BYTES)),
            b_wr.en.eq(host_enables(Target.BIAS, BIAS_STORE_BYTES, self.bias_depth,
                                    name="biases")),
        ]

        # ---- activation buffers ---------------------------------------------------------
        # Both halves of the ping-pong in one memory (the top address bit selects the
        # buffer): its write port serves the requantiser (busy) and host inputs (idle), its
        # read port the issuer (busy) and host reads (idle).
        abits = (self.buffer_words - 1).bit_length()
        amem = Memory(shape=unsigned(8 * lanes), depth=2 << abits, init=[], attrs=NO_RW_CHECK)
        m.submodules.buffers = amem
        a_wr = amem.write_port(granularity=8)
        a_rd = amem.read_port()

        # ---- issuer (stage 0) -----------------------------------------------------------
        # The feed never stalls: every stage advances every cycle, and the issuer starts a
        # block no sooner than `rows` cycles after the previous one, the time the requantiser
        # takes per block, so the array's output is always taken when it is ready. (A stall
        # signal would fan out from the array to every feed register and memory enable.)
        # Loop counters count down, with their end flags registered beside them (a
        # comparator in the issue path would reach every counter's enable).
        c = Signal(range(self.stride))  # chunks left in this block after this one
        j = Signal(range(self.max_blocks))  # blocks left in this sample
        b = Signal(range(self.max_batch))  # samples left in this layer
        c_end = Signal()
        j_end = Signal()
        b_end = Signal()
        c_first = Signal()  # the beat at the issuer starts a block
        aptr = Signal(range(self.buffer_words + self.stride + 1))
        abase = Signal.like(aptr)
        chunks_last = Signal.like(c)
        chunks_one = Signal()
        blocks_last = Signal.like(j)
        blocks_one = Signal()
        batch_last = Signal.like(b)
        batch_one = Signal()
        gap = Signal(range(rows + 1))  # cycles since the last block started, saturating
        gap_ok = Signal()  # gap == rows
        last0 = Signal()
        m.d.comb += [
            last0.eq(c_end),
            issue.eq(issuing & (~c_first | gap_ok)),
        ]
        with m.If(issue & c_first):
            m.d.sync += [gap.eq(1), gap_ok.eq(rows == 1)]
        with m.Elif(~gap_ok):
            m.d.sync += [gap.eq(gap + 1), gap_ok.eq(gap == rows - 1)]

        # ---- stage 1: memory data; stage 2: decoded codes -------------------------------
        # Data registers need no reset: the valid bits say what they hold.
        valid1 = Signal()
        last1 = Signal(reset_less=True)
        valid2 = Signal()
        last2 = Signal(reset_less=True)
        acts1 = Signal(8 * lanes)
        acts2 = Signal(8 * lanes, reset_less=True)
        # The decoder: a 256-entry table per byte, read synchronously (one pipeline stage).
        entry_shape = unsigned(2 * TRITS_PER_BYTE + 1)
        decoded = []
        if self.decoder in ("rom", "logic"):
            # One ROM per byte: a block RAM has a single read port.
            style = {"ram_style": "logic"} if self.decoder == "logic" else {}
            for i in range(bb):
                rom = Memory(shape=entry_shape, depth=256, init=decoder_table(), attrs=style)
                m.submodules[f"decoder{i}"] = rom
                port = rom.read_port()
                m.d.comb += port.addr.eq(wmem.rd_data[8 * i : 8 * i + 8])
                decoded.append(port.data)
        else:
            table = Array(Const(v, entry_shape) for v in decoder_table())
            for i in range(bb):
                reg = Signal(entry_shape, name=f"decoded{i}")
                m.d.sync += reg.eq(table[wmem.rd_data[8 * i : 8 * i + 8]])
                decoded.append(reg)
        codes = Cat(*(d[: 2 * TRITS_PER_BYTE] for d in decoded))
        illegal = Cat(*(d[2 * TRITS_PER_BYTE] for d in decoded)).any()
        # An illegal byte aborts the run a cycle later; the beat (decoded as zeros) may enter
        # the array meanwhile, as the abort discards everything.
        illegal_seen = Signal()

        with m.If(flush):
            m.d.sync += [valid1.eq(0), valid2.eq(0), illegal_seen.eq(0)]
        with m.Else():
            m.d.sync += [valid1.eq(issue), valid2.eq(valid1), illegal_seen.eq(valid2 & illegal)]
        m.d.sync += [last1.eq(last0), last2.eq(last1), acts2.eq(acts1)]
        m.d.comb += acts1.eq(a_rd.data)

        array = ResetInserter(flush)(self.array)
        m.submodules.array = array
        a_in = self.array.i_stream
        m.d.comb += [
            a_in.valid.eq(valid2),
            a_in.payload.acts.as_value().eq(acts2),
            a_in.payload.codes.as_value().eq(codes[: 2 * lanes * rows]),
            a_in.payload.last.eq(last2),
        ]

        # ---- requantiser ----------------------------------------------------------------
        acc_w = self.array.acc_width
        hold = Array(Signal(signed(acc_w), name=f"hold{r}", reset_less=True) for r in range(rows))
        holding = Signal()
        r = Signal(range(rows + 1))
        rq_j = Signal(range(self.max_blocks))  # blocks left, counting down like the issuer's
        rq_b = Signal(range(self.max_batch))
        rq_j_end = Signal()
        rq_b_end = Signal()
        rq_done = Signal()  # all blocks of all samples of this layer have been issued
        bptr = Signal(range(self.bias_depth + 1))
        m_idx = Signal(range(self.max_blocks * rows + 1))
        o_word = Signal.like(aptr)
        o_base = Signal.like(aptr)
        o_lane = Signal(range(lanes))
        a_out = self.array.o_stream
        last_row = Signal()
        m.d.comb += [last_row.eq(r == rows - 1), a_out.ready.eq(~holding | last_row)]

        b_rd = bmem.read_port()
        m.d.comb += b_rd.addr.eq(bptr)
        # pipeline: p1 (accumulator; bias read) -> p1b (bias registered) -> p2 (sum) ->
        # p3 (shifted) -> p4 (clipped, written). p1b keeps the bias memory's output (and, when
        # the memory is several block RAMs deep, their output multiplexer) off the sum's carry
        # chain: measured on the iCEBreaker, that path alone limited the device to 48-49 MHz.
        p1_valid = Signal()
        p1b_valid = Signal()
        p2_valid = Signal()
        p3_valid = Signal()
        p4_valid = Signal()
        p1_acc = Signal(signed(acc_w), reset_less=True)
        p1b_acc = Signal(signed(acc_w), reset_less=True)
        p1b_bias = Signal(signed(BIAS_STORE_WIDTH), reset_less=True)
        p1b_we = Signal(reset_less=True)
        p1b_word = Signal.like(aptr, reset_less=True)
        p1b_lane = Signal(range(lanes), reset_less=True)
        p1_we, p2_we, p3_we = (Signal(reset_less=True) for _ in range(3))
        p4_en = Signal(lanes)  # the destination byte's write enable
        p1_word, p2_word, p3_word, p4_word = (Signal.like(aptr, reset_less=True)
                                              for _ in range(4))
        p1_lane, p2_lane, p3_lane = (Signal(range(lanes), reset_less=True) for _ in range(3))
        sum_w = max(acc_w, BIAS_STORE_WIDTH) + 1
        p2_sum = Signal(signed(sum_w), reset_less=True)
        p3_val = Signal(signed(sum_w), reset_less=True)
        p4_out = Signal(8, reset_less=True)

        bias = Signal(signed(BIAS_STORE_WIDTH))
        m.d.comb += bias.eq(b_rd.data[:BIAS_STORE_WIDTH])
        with m.If(flush):
            m.d.sync += [holding.eq(0), p1_valid.eq(0), p1b_valid.eq(0), p2_valid.eq(0),
                         p3_valid.eq(0), p4_valid.eq(0), p4_en.eq(0)]
        with m.Else():
            m.d.sync += p1_valid.eq(0)
            with m.If(holding):
                m.d.sync += [
                    p1_valid.eq(1),
                    p1_acc.eq(hold[r]),
                    p1_we.eq(m_idx < fan_out_n),
                    p1_word.eq(o_word),
                    p1_lane.eq(o_lane),
                    bptr.eq(bptr + 1),
                    m_idx.eq(m_idx + 1),
                ]
                with m.If(o_lane == lanes - 1):
                    m.d.sync += [o_lane.eq(0), o_word.eq(o_word + 1)]
                with m.Else():
                    m.d.sync += o_lane.eq(o_lane + 1)
                with m.If(last_row):
                    m.d.sync += holding.eq(0)
                    with m.If(rq_j_end):
                        # end of a sample: outputs of the next sample start a buffer row later
                        m.d.sync += [rq_j.eq(blocks_last), rq_j_end.eq(blocks_one),
                                     rq_b.eq(rq_b - 1), rq_b_end.eq(rq_b == 1),
                                     bptr.eq(bias_base_n),
                                     m_idx.eq(0), o_lane.eq(0), o_word.eq(o_base + self.stride),
                                     o_base.eq(o_base + self.stride)]
                        with m.If(rq_b_end):
                            m.d.sync += rq_done.eq(1)
                    with m.Else():
                        m.d.sync += [rq_j.eq(rq_j - 1), rq_j_end.eq(rq_j == 1)]
                with m.Else():
                    m.d.sync += r.eq(r + 1)
            # after the last row of a block, the next block is taken in the same cycle
            with m.If(a_out.valid & a_out.ready):
                m.d.sync += [holding.eq(1), r.eq(0)]
                m.d.sync += [hold[i].eq(a_out.payload[i]) for i in range(rows)]
            m.d.sync += [
                p1b_valid.eq(p1_valid), p2_valid.eq(p1b_valid), p3_valid.eq(p2_valid),
                p4_valid.eq(p3_valid),
                p4_en.eq(_byte_enable(p3_valid & p3_we, p3_lane, lanes)),
            ]
        # Clipping to int8 by bit tests (an AND / OR tree), not by comparators (carry chains):
        # v < -128 when negative and not all of bits 7.. set, v > 127 when non-negative and
        # any of them set.
        assert ACT_MIN == -(1 << 7) and ACT_MAX == (1 << 7) - 1
        clipped = Signal(8)
        negative = p3_val[-1]
        high = p3_val[7:]
        with m.If(relu & negative):
            m.d.comb += clipped.eq(0)
        with m.Elif(negative & ~high.all()):
            m.d.comb += clipped.eq(ACT_MIN & 0xFF)
        with m.Elif(~negative & high.any()):
            m.d.comb += clipped.eq(ACT_MAX)
        with m.Else():
            m.d.comb += clipped.eq(p3_val[:8])
        m.d.sync += [
            p1b_we.eq(p1_we), p1b_word.eq(p1_word), p1b_lane.eq(p1_lane), p1b_acc.eq(p1_acc),
            p1b_bias.eq(bias),
            p2_we.eq(p1b_we), p2_word.eq(p1b_word), p2_lane.eq(p1b_lane),
            p2_sum.eq(p1b_acc + p1b_bias),
            p3_we.eq(p2_we), p3_word.eq(p2_word), p3_lane.eq(p2_lane), p3_val.eq(p2_sum >> shift),
            p4_word.eq(p3_word), p4_out.eq(clipped),
        ]
        rq_busy = Signal()
        m.d.comb += rq_busy.eq(holding | p1_valid | p1b_valid | p2_valid | p3_valid |
                               p4_valid)

        # buffer ports: requantiser writes the destination, issuer reads the source
        host_in = host_enables(Target.INPUT, lanes, self.buffer_words, name="inputs")
        with m.If(busy):
            m.d.comb += [
                a_wr.addr.eq(Cat(p4_word[:abits], ~src)),
                a_wr.data.eq(p4_out.replicate(lanes)),
                a_wr.en.eq(p4_en),
                a_rd.addr.eq(Cat(aptr[:abits], src)),
                a_rd.en.eq(1),
            ]
        with m.Else():
            m.d.comb += [
                a_wr.addr.eq(Cat(wr_addr[:abits], 0)),
                a_wr.data.eq(wr_data.replicate(lanes)),
                a_wr.en.eq(host_in),
                a_rd.addr.eq(Cat(self.rd_addr[:abits], self.rd_buffer)),
                a_rd.en.eq(1),
            ]
        rd_lane = Signal.like(self.rd_lane)
        m.d.sync += rd_lane.eq(self.rd_lane)
        m.d.comb += self.rd_data.eq(a_rd.data.word_select(rd_lane, 8))

        # ---- cycle counter --------------------------------------------------------------
        m.submodules.cycle_counter = cycle_counter = CycleCounter(CYCLE_COUNTER_WIDTH)
        m.d.comb += [cycle_counter.count.eq(busy), self.cycles.eq(cycle_counter.value)]

        # ---- sequencer ------------------------------------------------------------------
        bad_fields = [Signal(name=f"bad_field{i}") for i in range(4)]
        bad_entry = Signal()
        bad_bias = Signal()
        bad_args = Signal()
        past_end = Signal()
        last_layer = Signal()
        fsm_running = Signal()
        m.d.sync += [
            past_end.eq(fsm_running & ((issuing & (wptr == self.weight_words)) |
                                   (bptr == self.bias_depth))),
            last_layer.eq(layer + 1 == n_layers),
        ]
        # `flush` is a register: it clears the datapath in the cycle after a start (nothing
        # is issued before the layer table is read), so that no decision fans out to it.
        m.d.sync += flush.eq(0)

        # One flip-flop per state (trine.hw.onehot): the state tests feeding the wide enables of
        # the run's registers are single wires.
        fsm = OneHotFSM(m, ("IDLE", "START", "LOAD", "CHECK", "VERDICT", "SETUP", "RUN"))
        m.d.comb += fsm_running.eq(fsm.ongoing("RUN"))

        def abort(code):
            # The datapath is not flushed here: with busy low it writes nowhere, and the next
            # start flushes it.
            m.d.sync += [error.eq(code), busy.eq(0), issuing.eq(0)]
            fsm.go("IDLE")

        with fsm.state("IDLE"):
            with m.If(self.start):
                m.d.comb += cycle_counter.clear.eq(1)
                m.d.sync += [flush.eq(1), busy.eq(1), n_layers.eq(self.n_layers),
                             bad_args.eq((self.n_layers == 0) |
                                         (self.n_layers > self.max_layers) |
                                         (self.batch == 0) | (self.batch > self.max_batch)),
                             batch.eq(self.batch), error.eq(0), layer.eq(0),
                             src.eq(0), issuing.eq(0), half.eq(0)]
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
                m.d.sync += entry.eq(Cat(entry[16:], t_rd.data))
            with m.If(half == TABLE_HALFWORDS):
                m.d.sync += half.eq(0)
                fsm.go("CHECK")
        with fsm.state("CHECK"):
            # the checks are registered: their comparators do not reach the counters
            m.d.sync += [
                bad_fields[0].eq((chunks == 0) | (chunks > self.stride)),
                bad_fields[1].eq((blocks == 0) | (blocks > self.max_blocks)),
                bad_fields[2].eq((fan_out == 0) | (fan_out > self.max_width)),
                bad_fields[3].eq((shift_field > 31) | (weight_base >= self.weight_words)),
                bad_bias.eq(bias_base >= self.bias_depth),
                chunks_last.eq(chunks_n - 1), chunks_one.eq(chunks_n == 1),
                blocks_last.eq(blocks_n - 1), blocks_one.eq(blocks_n == 1),
            ]
            fsm.go("VERDICT")
        with fsm.state("VERDICT"):
            m.d.sync += bad_entry.eq(Cat(*bad_fields).any())
            fsm.go("SETUP")
        with fsm.state("SETUP"):
            m.d.sync += [
                c.eq(chunks_last), c_end.eq(chunks_one), c_first.eq(1),
                j.eq(blocks_last), j_end.eq(blocks_one),
                b.eq(batch_last), b_end.eq(batch_one),
                wptr.eq(weight_base_n), aptr.eq(0),
                abase.eq(0), issuing.eq(1), gap.eq(rows), gap_ok.eq(1),
                rq_j.eq(blocks_last), rq_j_end.eq(blocks_one),
                rq_b.eq(batch_last), rq_b_end.eq(batch_one),
                rq_done.eq(0), bptr.eq(bias_base_n),
                m_idx.eq(0), o_word.eq(0), o_base.eq(0), o_lane.eq(0),
            ]
            with m.If(bad_entry):
                abort(ErrorCode.BAD_ARGUMENT)
            with m.Elif(bad_bias):
                abort(ErrorCode.BAD_ADDRESS)
            with m.Else():
                fsm.go("RUN")
        with fsm.state("RUN"):
            # An abort's conditions are registered (a cycle late): an address past the
            # end is flagged while the beat or row that needs it is still in flight, so
            # the layer cannot end first. The counters' last steps do not matter then.
            with m.If(illegal_seen):
                abort(ErrorCode.ILLEGAL_WEIGHT)
            with m.Elif(past_end):
                abort(ErrorCode.BAD_ADDRESS)
            with m.Elif(rq_done & ~rq_busy):
                m.d.sync += [layer.eq(layer + 1), src.eq(~src)]
                with m.If(last_layer):
                    m.d.sync += busy.eq(0)
                    fsm.go("IDLE")
                with m.Else():
                    fsm.go("LOAD")

        # The issuer's counters (`issuing` is set only in RUN).
        with m.If(issue):
            m.d.sync += wptr.eq(wptr + 1)
            with m.If(c_end):
                m.d.sync += [c.eq(chunks_last), c_end.eq(chunks_one), c_first.eq(1)]
                with m.If(j_end):
                    m.d.sync += [j.eq(blocks_last), j_end.eq(blocks_one), b.eq(b - 1),
                                 b_end.eq(b == 1), wptr.eq(weight_base_n),
                                 abase.eq(abase + self.stride), aptr.eq(abase + self.stride)]
                    with m.If(b_end):
                        m.d.sync += issuing.eq(0)
                with m.Else():
                    m.d.sync += [j.eq(j - 1), j_end.eq(j == 1), aptr.eq(abase)]
            with m.Else():
                m.d.sync += [c.eq(c - 1), c_end.eq(c == 1), c_first.eq(0), aptr.eq(aptr + 1)]
        return m


def _low(value, limit):
    """The low bits of ``value`` that hold any number ``0 .. limit``."""
    return value[: max(1, limit.bit_length())]


def _byte_enable(enable, lane, n_lanes):
    """Byte-enable vector: bit ``lane`` set when ``enable``."""
    return Cat(*(enable & (lane == i) for i in range(n_lanes)))
