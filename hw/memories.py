"""The accelerator core's memories: weights, biases, layer table and activation pool.

The host writes all four through one byte-wide port while the core is idle
(:class:`trine.hw.host_port.HostWriteSignature`) and reads the activation pool through
another (:class:`trine.hw.host_port.HostReadSignature`); while the core runs, the same memories
serve the datapath through read ports (``lib.memory`` port signatures) and the requantiser's
write port (:class:`PoolWriteSignature`). Where a memory has one port for both, ``busy``
chooses.

* Weights: a single-port memory (:class:`trine.hw.ice40.SinglePortMemory`, the iCE40UP5K's
  SPRAM or a generic memory), one ``rows x lanes`` tile per word.
* Biases: :data:`~trine.contract.device_image.BIAS_STORE_BYTES` bytes per entry.
* Layer table: ``table_words`` 16-bit words; entries of different lengths back to back
  (:class:`trine.contract.device_image.LayerEntry`), read by the sequencer a word per cycle.
* Activation pool: ``act_words`` words of ``lanes`` bytes, every layer's input and output
  (:mod:`trine.contract.device_image`). Its write port serves the requantiser (busy) and host
  inputs (idle), its read port the feed (busy) and host reads (idle).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory, ReadPort
from amaranth.lib.wiring import In, Out

from trine.contract.device_image import BIAS_STORE_BYTES, BIAS_STORE_WIDTH, TABLE_WORD_BYTES
from trine.contract.params import AcceleratorParams
from trine.contract.protocol import Target
from trine.hw.host_port import HostReadSignature, HostWriteSignature
from trine.hw.ice40 import SinglePortMemory
from trine.hw.params import ParamsSignature, check_params

__all__ = [
    "PoolWriteSignature",
    "CoreMemories",
    "byte_enable",
    "host_read_latency",
    "address_width",
    "pool_address_width",
]

#: Memory attribute: the design never reads a word in the cycle it writes it, so Yosys need
#: not add bypass logic to give block RAM the simulator's read-before-write behaviour.
NO_RW_CHECK = {"no_rw_check": 1}


def address_width(depth: int) -> int:
    """Bits of an address into ``depth`` words."""
    return Shape.cast(range(depth)).width


def pool_address_width(params: AcceleratorParams) -> int:
    """Bits of a pool address. The layer table's 16-bit address arithmetic is done modulo
    ``2**pool_address_width``: every word a valid table reads or writes is below
    ``act_words``, so its address is the same either way."""
    return address_width(params.act_words)


def host_read_latency(params: AcceleratorParams) -> int:
    """Cycles from a host read's address to its byte at the core's host port
    (:class:`trine.hw.core.AcceleratorCore`): 1; with ``ram_output == "registered"`` 2 for a
    pool-only read-back, 4 when every memory is readable (the word read is registered, then
    the byte is chosen in two registered steps: within a group of bytes, then the group)."""
    if params.ram_output != "registered":
        return 1
    return 4 if params.readback == "all" else 2


def byte_enable(enable, lane, n_lanes):
    """Byte-enable vector: bit ``lane`` set when ``enable``."""
    return Cat(*(enable & (lane == i) for i in range(n_lanes)))


class PoolWriteSignature(ParamsSignature):
    """A write of one byte into the activation pool, seen from the writer.

    Members
    -------
    word : Out(pool_address_width(params))
    value : Out(8)
    lanes : Out(params.lanes)
        Byte enables: at most one set, the byte of ``word`` to write; none, no write.
    """

    def __init__(self, params: AcceleratorParams):
        params = check_params(params)
        super().__init__(params, {
            "word": Out(pool_address_width(params)),
            "value": Out(8),
            "lanes": Out(params.lanes),
        })


class CoreMemories(wiring.Component):
    """The four memories of the core, with the host's ports and the datapath's ports.

    A host write (``write``) is taken while ``busy`` is low and lands a cycle later, from
    registers (address, data and each memory's byte enables), so that the executor's logic and
    the range checks do not form one path into the memories; ``busy`` must still be low then.
    A write outside its memory's depth or word is dropped. A host read (``read``) gives its
    byte a cycle later, while ``busy`` is low (:attr:`read_latency`).

    While ``busy`` is high the datapath has the ports: a read port gives the word at the address
    of the previous cycle (``lib.memory`` timing; ``en`` is ignored, a word is read every cycle),
    ``result`` writes a byte of the pool and ``acts`` reads a word of it. With
    ``params.ram_output == "registered"`` the pool's reads (``acts`` and host reads) and the
    weights' take a cycle more: their data is registered before anything uses it.

    Parameters
    ----------
    params : trine.contract.params.AcceleratorParams

    Members
    -------
    write : In(HostWriteSignature(params))
    read : In(HostReadSignature(params))
    busy : In(1)
        The core is running: the datapath has the ports.
    table : Out(ReadPort.Signature(addr_width=address_width(table_words), shape=16))
    weights : Out(ReadPort.Signature(addr_width=address_width(weight_words), shape=8 * beat_bytes))
    biases : Out(ReadPort.Signature(addr_width=address_width(bias_depth),
                                    shape=signed(BIAS_STORE_WIDTH)))
    acts : Out(ReadPort.Signature(addr_width=pool_address_width(params), shape=8 * lanes))
    result : In(PoolWriteSignature(params))

    Attributes
    ----------
    read_latency : int
        Cycles from a pool or weight address (``acts.addr``, ``read.addr``,
        ``weights.addr``) to its data: 1, or 2 with ``params.ram_output == "registered"``.
    """

    def __init__(self, params: AcceleratorParams):
        self.params = p = check_params(params)
        self.read_latency = 2 if p.ram_output == "registered" else 1
        self.weight_memory = SinglePortMemory(p.beat_bytes, p.weight_words,
                                              kind=p.weight_memory)
        super().__init__({
            "write": In(HostWriteSignature(p)),
            "read": In(HostReadSignature(p)),
            "busy": In(1),
            "table": Out(ReadPort.Signature(addr_width=address_width(p.table_words),
                                            shape=16)),
            "weights": Out(ReadPort.Signature(addr_width=address_width(p.weight_words),
                                              shape=8 * p.beat_bytes)),
            "biases": Out(ReadPort.Signature(addr_width=address_width(p.bias_depth),
                                             shape=signed(BIAS_STORE_WIDTH))),
            "acts": Out(ReadPort.Signature(addr_width=pool_address_width(p),
                                           shape=8 * p.lanes)),
            "result": In(PoolWriteSignature(p)),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        host, busy = self.write, self.busy

        wr_addr = Signal.like(host.addr, reset_less=True)
        wr_lane = Signal.like(host.lane, reset_less=True)
        wr_data = Signal.like(host.data, reset_less=True)
        m.d.sync += [wr_addr.eq(host.addr), wr_lane.eq(host.lane), wr_data.eq(host.data)]

        def host_selects(target, n_bytes, depth):
            return (host.en & ~busy & (host.target == target) &
                    (host.lane < n_bytes) & (host.addr < depth))

        def host_enables(target, n_bytes, depth, name=""):
            enables = Signal(n_bytes, name=f"{name}_we")
            m.d.sync += enables.eq(byte_enable(host_selects(target, n_bytes, depth),
                                               host.lane, n_bytes))
            return enables

        # ---- layer table ----------------------------------------------------------------
        # The sequencer decides on the table's word in the cycle it is read, so with
        # registered RAM output the table is built from LUTs (its read register a flip-flop),
        # not from a block RAM whose read data would start that decision late.
        tmem = Memory(shape=16, depth=p.table_words, init=[],
                      attrs={**NO_RW_CHECK, **({"ram_style": "distributed"}
                                               if p.ram_output == "registered" else {})})
        m.submodules.table = tmem
        t_wr = tmem.write_port(granularity=8)
        m.d.comb += [
            t_wr.addr.eq(wr_addr),
            t_wr.data.eq(wr_data.replicate(TABLE_WORD_BYTES)),
            t_wr.en.eq(host_enables(Target.LAYER, TABLE_WORD_BYTES, p.table_words,
                                    name="table")),
        ]
        wiring.connect(m, wiring.flipped(self.table), tmem.read_port())

        # ---- biases ---------------------------------------------------------------------
        bmem = Memory(shape=unsigned(8 * BIAS_STORE_BYTES), depth=p.bias_depth, init=[],
                      attrs=NO_RW_CHECK)
        m.submodules.biases = bmem
        b_wr = bmem.write_port(granularity=8)
        m.d.comb += [
            b_wr.addr.eq(wr_addr),
            b_wr.data.eq(wr_data.replicate(BIAS_STORE_BYTES)),
            b_wr.en.eq(host_enables(Target.BIAS, BIAS_STORE_BYTES, p.bias_depth,
                                    name="biases")),
        ]
        b_rd = bmem.read_port()
        m.d.comb += [
            b_rd.addr.eq(self.biases.addr),
            b_rd.en.eq(self.biases.en),
            self.biases.data.eq(b_rd.data[:BIAS_STORE_WIDTH]),
        ]

        # ---- weights: single-ported (the host writes while idle, the feed reads) ---------
        m.submodules.weights = wmem = self.weight_memory
        bb = p.beat_bytes
        w_we = host_enables(Target.WEIGHTS, bb, p.weight_words, name="weights")
        # Whether a weight write lands in this cycle, registered beside the byte enables: an
        # OR over them (a byte per 5 trits: 52 on the ULX3S) in front of the address
        # multiplexer of every weight block RAM was the ULX3S's worst path.
        w_write = Signal()
        m.d.sync += w_write.eq(host_selects(Target.WEIGHTS, bb, p.weight_words))
        m.d.comb += [
            # a host write lands from its registers; otherwise the port's address is read
            # (the feed's while busy, whatever the core puts there while idle)
            wmem.addr.eq(Mux(w_write, wr_addr, self.weights.addr)),
            wmem.wr_data.eq(wr_data.replicate(bb)),
            wmem.wr_en.eq(w_we),
            wmem.rd_en.eq(self.weights.en),
        ]
        if p.ram_output == "registered":
            # Nothing but a register after the weight RAMs (their output registers on ECP5):
            # their data goes to the decoder ROMs' addresses, block RAMs spread over the chip.
            weights_q = Signal.like(wmem.rd_data, name="weights_data_q", reset_less=True)
            m.d.sync += weights_q.eq(wmem.rd_data)
            m.d.comb += self.weights.data.eq(weights_q)
        else:
            m.d.comb += self.weights.data.eq(wmem.rd_data)

        # ---- activation pool ------------------------------------------------------------
        lanes = p.lanes
        amem = Memory(shape=unsigned(8 * lanes), depth=p.act_words, init=[], attrs=NO_RW_CHECK)
        m.submodules.pool = amem
        a_wr = amem.write_port(granularity=8)
        a_rd = amem.read_port()
        host_in = host_enables(Target.INPUT, lanes, p.act_words, name="inputs")
        result = self.result
        with m.If(busy):
            m.d.comb += [
                a_wr.addr.eq(result.word),
                a_wr.data.eq(result.value.replicate(lanes)),
                a_wr.en.eq(result.lanes),
                a_rd.addr.eq(self.acts.addr),
                a_rd.en.eq(self.acts.en),
            ]
        with m.Else():
            m.d.comb += [
                a_wr.addr.eq(wr_addr),
                a_wr.data.eq(wr_data.replicate(lanes)),
                a_wr.en.eq(host_in),
                a_rd.addr.eq(self.read.addr),
                a_rd.en.eq(1),
            ]
        rd_lane = Signal.like(self.read.lane)
        m.d.sync += rd_lane.eq(self.read.lane)
        pool_data = a_rd.data
        if p.ram_output == "registered":
            # Nothing but a register after the pool (on ECP5, the block RAM's output
            # register), before the feed's zero mask and the host read's byte multiplexer.
            pool_data = Signal.like(a_rd.data, name="pool_data_q", reset_less=True)
            lane_q = Signal.like(rd_lane)
            m.d.sync += [pool_data.eq(a_rd.data), lane_q.eq(rd_lane)]
            rd_lane = lane_q
        m.d.comb += [
            self.acts.data.eq(pool_data),
            self.read.data.eq(pool_data.word_select(rd_lane, 8)),
        ]
        return m
