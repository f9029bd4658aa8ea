"""A single-port byte-writable memory: generic, or the iCE40UP5K's SPRAM blocks.

The iCE40UP5K has four ``SB_SPRAM256KA`` blocks of 16K x 16 bits, single-port: one address for
reads and writes, a clock enable (``CHIPSELECT``) and a write mask per nibble. Side by side they
make a 64-bit x 16K memory, the accelerator's weight store (8 bytes = 40 trits per word).

Yosys infers SPRAM only for memories without initial contents, and Amaranth's Verilog gives
every memory one (zeros), so the blocks are instantiated explicitly. The generic memory has the
same port and the same timing, for simulation and for other FPGAs (ECP5: block RAM).
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from trine.contract.errors import check_int
from trine.contract.params import SPRAM_BLOCKS, SPRAM_DEPTH, SPRAM_WIDTH, WEIGHT_MEMORIES

__all__ = ["MEMORY_KINDS", "SinglePortMemory"]

#: ``SinglePortMemory`` kinds: an Amaranth memory, or iCE40UP5K SPRAM primitives.
MEMORY_KINDS = WEIGHT_MEMORIES


class SinglePortMemory(wiring.Component):
    """A memory of ``depth`` words of ``n_bytes`` bytes with one address for reads and writes.

    In a cycle with any ``wr_en`` bit set, the enabled bytes of word ``addr`` are written and
    ``rd_data`` becomes undefined (the SPRAM's behaviour; the generic memory reads the word
    as it was before the write, when ``rd_en`` is set). In a
    cycle with ``rd_en`` and no write, word ``addr`` appears on ``rd_data`` in the next cycle.
    Otherwise ``rd_data`` holds.

    Parameters
    ----------
    n_bytes : int
        Bytes per word.
    depth : int
        Words.
    kind : str
        ``"generic"``: an :class:`amaranth.lib.memory.Memory` (simulation; block RAM where
        the synthesiser can map it). ``"spram"``: ``ceil(n_bytes / 2)`` ``SB_SPRAM256KA`` side
        by side (synthesis for an iCE40UP5K only), at most :data:`SPRAM_BLOCKS` of them and
        ``depth <= SPRAM_DEPTH``.

    Members
    -------
    addr : In(range(depth))
    wr_data : In(8 * n_bytes)
    wr_en : In(n_bytes)
        Byte write enables.
    rd_en : In(1)
    rd_data : Out(8 * n_bytes)

    Raises
    ------
    TypeError, ValueError
        For parameters of the wrong type or out of range, or a memory SPRAM cannot hold.
    """

    def __init__(self, n_bytes: int, depth: int, *, kind: str = "generic"):
        self.n_bytes = check_int("Bytes per word", n_bytes, 1)
        self.depth = check_int("Memory depth", depth, 1)
        if kind not in MEMORY_KINDS:
            raise ValueError(f"memory kind must be one of {', '.join(MEMORY_KINDS)}, "
                             f"not {kind!r}")
        self.kind = kind
        if kind == "spram":
            blocks = -(-8 * n_bytes // SPRAM_WIDTH)
            if blocks > SPRAM_BLOCKS:
                raise ValueError(f"SPRAM words are at most {SPRAM_BLOCKS * SPRAM_WIDTH // 8} "
                                 f"bytes wide, not {n_bytes}")
            if depth > SPRAM_DEPTH:
                raise ValueError(f"SPRAM holds at most {SPRAM_DEPTH} words, not {depth}")
        super().__init__({
            "addr": In(range(depth)),
            "wr_data": In(8 * n_bytes),
            "wr_en": In(n_bytes),
            "rd_en": In(1),
            "rd_data": Out(8 * n_bytes),
        })

    def elaborate(self, platform):
        m = Module()
        if self.kind == "generic":
            # What a read gives in a cycle with a write is undefined (see above), so Yosys may
            # ignore the collision (no bypass logic), and the read enable need not see the
            # write enables: gating it with their OR made Yosys hold the block RAM's address
            # through a multiplexer behind that OR (the ULX3S's worst path in one placement).
            m.submodules.memory = memory = Memory(shape=8 * self.n_bytes, depth=self.depth,
                                                  init=[], attrs={"no_rw_check": 1})
            wr = memory.write_port(granularity=8)
            rd = memory.read_port()
            m.d.comb += [
                wr.addr.eq(self.addr), wr.data.eq(self.wr_data), wr.en.eq(self.wr_en),
                rd.addr.eq(self.addr), rd.en.eq(self.rd_en),
                self.rd_data.eq(rd.data),
            ]
            return m

        write = self.wr_en.any()

        n_blocks = -(-8 * self.n_bytes // SPRAM_WIDTH)
        data = Cat(self.wr_data, Const(0, SPRAM_WIDTH * n_blocks - 8 * self.n_bytes))
        enables = Cat(self.wr_en, Const(0, 2 * n_blocks - self.n_bytes))
        address = Cat(self.addr, Const(0, 14 - len(self.addr)))
        out = []
        for i in range(n_blocks):
            lo, hi = enables[2 * i], enables[2 * i + 1]
            dataout = Signal(SPRAM_WIDTH, name=f"dataout{i}")
            m.submodules[f"spram{i}"] = Instance(
                "SB_SPRAM256KA",
                i_ADDRESS=address,
                i_DATAIN=data[SPRAM_WIDTH * i : SPRAM_WIDTH * (i + 1)],
                i_MASKWREN=Cat(lo, lo, hi, hi),  # one bit per nibble
                i_WREN=write,
                i_CHIPSELECT=write | self.rd_en,  # the clock enable: DATAOUT holds without it
                i_CLOCK=ClockSignal(),
                i_STANDBY=0,
                i_SLEEP=0,
                i_POWEROFF=1,  # active low
                o_DATAOUT=dataout,
            )
            out.append(dataout)
        m.d.comb += self.rd_data.eq(Cat(*out))
        return m
