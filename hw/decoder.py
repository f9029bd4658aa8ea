"""The trit decoder: weight bytes (5 trits each) to the MAC array's 2-bit trit codes.

A weight byte holds five trits in base 3 (:mod:`trine.contract.spec`); bytes 243..255 hold
none and are illegal. The decoder looks each byte up in a 256-entry table, one table per byte
of the word, so that a whole weight word is decoded in one pipeline stage.

With ``registered=True`` the tables' outputs are registered once more before anything uses
them: each byte's codes and its illegal flag leave the decoder from a register, and only then
are the flags of the word's bytes ORed together. On ECP5 that register is the block RAM's own
output register (:mod:`trine.flow.ecp5`), whose clock-to-output is a fraction of the RAM's
read latch's, which otherwise starts both the paths into the MAC array and the OR over every
byte's flag.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from trine.contract.errors import check_int
from trine.contract.params import DECODERS
from trine.contract.spec import TRITS_PER_BYTE, trits_to_codes

__all__ = ["TritDecoder", "decoder_table"]

#: A decoder table entry: ``illegal << 10 | codes`` (code ``i`` in bits ``2i+1:2i``).
_ENTRY_SHAPE = unsigned(2 * TRITS_PER_BYTE + 1)


def decoder_table() -> list[int]:
    """Contents of the decoder table: byte -> ``illegal << 10 | codes`` (code ``i`` in bits
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


class TritDecoder(wiring.Component):
    """Decodes a word of ``n_bytes`` weight bytes, with one cycle of latency (two when
    ``registered``).

    In every cycle, ``codes`` and ``illegal`` become those of the ``word`` of the cycle before
    (of two cycles before when ``registered``):
    trit ``i`` of byte ``k`` is ``codes[5 k + i]`` (a :class:`trine.contract.spec.TritCode`),
    and ``illegal`` is set if any byte was 243 or more (its codes are then zero).

    Parameters
    ----------
    n_bytes : int
        Bytes per word.
    kind : str
        One of :data:`trine.contract.params.DECODERS`, all with the same timing and results:
        ``"rom"``, an Amaranth ROM per byte with a synchronous read port (a block RAM each: a
        block RAM has one read port); ``"table"``, an array of constants followed by a
        register, which Yosys (``proc_rom``) turns into the same ROMs; ``"logic"``, ROMs that
        Yosys builds from LUTs (``ram_style = "logic"``), no block RAM.
    registered : bool
        Register each byte's table output (codes and illegal flag) before it is used: one
        more cycle of latency (:data:`trine.contract.params.RAM_OUTPUTS`).

    Members
    -------
    word : In(8 * n_bytes)
    codes : Out(data.ArrayLayout(unsigned(2), 5 * n_bytes))
    illegal : Out(1)

    Attributes
    ----------
    latency : int
        Cycles from ``word`` to ``codes`` and ``illegal``.

    Raises
    ------
    TypeError, ValueError
        For a byte count that is not a positive integer, an unknown kind, or a
        ``registered`` that is not a bool.
    """

    def __init__(self, n_bytes: int, kind: str = "rom", *, registered: bool = False):
        self.n_bytes = check_int("Bytes per word", n_bytes, 1)
        if kind not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, not {kind!r}")
        if not isinstance(registered, bool):
            raise TypeError(f"registered must be a bool, not {registered!r}")
        self.kind = kind
        self.registered = registered
        self.latency = 2 if registered else 1
        super().__init__({
            "word": In(8 * n_bytes),
            "codes": Out(data.ArrayLayout(unsigned(2), TRITS_PER_BYTE * n_bytes)),
            "illegal": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        decoded = []
        if self.kind in ("rom", "logic"):
            style = {"ram_style": "logic"} if self.kind == "logic" else {}
            for i in range(self.n_bytes):
                rom = Memory(shape=_ENTRY_SHAPE, depth=256, init=decoder_table(), attrs=style)
                m.submodules[f"rom{i}"] = rom
                port = rom.read_port()
                m.d.comb += port.addr.eq(self.word[8 * i : 8 * i + 8])
                decoded.append(port.data)
        else:
            table = Array(Const(v, _ENTRY_SHAPE) for v in decoder_table())
            for i in range(self.n_bytes):
                reg = Signal(_ENTRY_SHAPE, name=f"decoded{i}")
                m.d.sync += reg.eq(table[self.word[8 * i : 8 * i + 8]])
                decoded.append(reg)
        if self.registered:
            # Nothing but a register after each table: on ECP5 it becomes the block RAM's
            # output register. The flags are reduced only after it.
            staged = []
            for i, d in enumerate(decoded):
                reg = Signal(_ENTRY_SHAPE, name=f"decoded{i}_q", reset_less=True)
                m.d.sync += reg.eq(d)
                staged.append(reg)
            decoded = staged
        m.d.comb += [
            self.codes.as_value().eq(Cat(*(d[: 2 * TRITS_PER_BYTE] for d in decoded))),
            self.illegal.eq(Cat(*(d[2 * TRITS_PER_BYTE] for d in decoded)).any()),
        ]
        return m
