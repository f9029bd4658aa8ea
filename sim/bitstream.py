"""An iCE40 build's bitstream as Verilog: icestorm's ``icebox_vlog``, mended where it is blind.

``icebox_vlog`` reads the placed and routed chip (``top.asc``, the bitstream before packing)
and writes the configured fabric as Verilog: every LUT's contents, flip-flop, carry, routed net,
block RAM (with its initial contents) and the PLL's settings. Two things of an iCE40UP5K design
it leaves out, and :func:`chip_verilog` adds them from icestorm's own databases:

* the clock pad: the PLL's ``PACKAGEPIN`` gets a net of its own, not the pad's port; it is
  joined to the port of the pin that the build's ``top.pcf`` puts the board clock on;
* the SPRAM blocks: none is emitted; each one the bitstream enables (``SPRAM_EN``) is
  instantiated as ``SB_SPRAM256KA`` on the nets that reach its pins, from
  ``icebox.spram_db``'s pin table (pins that no net reaches read 0, as unrouted inputs do).

An output pad whose enable is low reads high instead of floating, as in the netlist level's
pad model.

It runs ``/usr/bin/icebox_vlog`` in this process (``runpy``, with icestorm's Python modules on
``sys.path``) so that its net table can be asked which net each SPRAM pin is on.
"""

from __future__ import annotations

import contextlib
import io
import re
import runpy
import shutil
import sys
from pathlib import Path

__all__ = ["ICEBOX_VLOG", "chip_verilog", "bitstream_sources"]

ICEBOX_VLOG = "icebox_vlog"
#: Where Debian's fpga-icestorm keeps icebox.py.
ICESTORM_PYTHON = Path("/usr/share/fpga-icestorm/python")
MODULE = "chip"


def _error(message: str):
    from trine.sim.netlist import NetlistError

    return NetlistError(message)


def _run_icebox_vlog(asc: Path, pcf: Path) -> tuple[str, dict]:
    exe = shutil.which(ICEBOX_VLOG)
    if exe is None:
        raise _error("the bitstream level needs icestorm's icebox_vlog (Debian: apt-get install "
                     "fpga-icestorm; `make setup` does it)")
    python_dir = ICESTORM_PYTHON if ICESTORM_PYTHON.is_dir() else Path(exe).parent
    argv, path = sys.argv, list(sys.path)
    out = io.StringIO()
    try:
        sys.argv = [exe, "-s", "-p", str(pcf), "-n", MODULE, str(asc)]
        sys.path.insert(0, str(python_dir))
        with contextlib.redirect_stdout(out):
            namespace = runpy.run_path(exe, run_name="__main__")
    except SystemExit as e:
        raise _error(f"icebox_vlog failed on {asc} (status {e.code})") from None
    finally:
        sys.argv, sys.path[:] = argv, path
    return out.getvalue(), namespace


def _spram_instances(namespace: dict) -> list[str]:
    ic, seg2net, icebox = namespace["ic"], namespace["seg2net"], namespace["icebox"]
    if ic.device != "5k":
        return []
    blocks = []
    for loc, pins in sorted(icebox.spram_db["5k"].items()):
        if not _config_bit(ic, *pins["SPRAM_EN"]):
            continue
        name = f"spram_{loc[0]}_{loc[1]}_{loc[2]}"

        def net(pin: str, default: str = "1'b0", pins: dict = pins) -> str:
            return seg2net.get(pins[pin], default)

        def bus(prefix: str, width: int) -> str:
            return "{" + ", ".join(net(f"{prefix}_{i}") for i in reversed(range(width))) + "}"

        # outputs that no net takes still need a wire of their own
        outputs = [net(f"DATAOUT_{i}", f"{name}_open_{i}") for i in reversed(range(16))]
        blocks += [f"wire {o};" for o in outputs if o.startswith(f"{name}_open_")]
        blocks.append("\n".join([
            f"SB_SPRAM256KA {name} (",
            f"  .ADDRESS({bus('ADDRESS', 14)}),",
            f"  .DATAIN({bus('DATAIN', 16)}),",
            f"  .MASKWREN({bus('MASKWREN', 4)}),",
            f"  .WREN({net('WREN')}),",
            f"  .CHIPSELECT({net('CHIPSELECT')}),",
            f"  .CLOCK({net('CLOCK')}),",
            f"  .STANDBY({net('STANDBY')}),",
            f"  .SLEEP({net('SLEEP')}),",
            f"  .POWEROFF({net('POWEROFF')}),",
            f"  .DATAOUT({{{', '.join(outputs)}}})",
            ");"]))
    return blocks


def _config_bit(ic, x: int, y: int, name: str) -> bool:
    """Whether configuration bit ``name`` (an ``IpConfig`` entry such as ``CBIT_0``) of tile
    (x, y) is set in the bitstream."""
    for bits, kind, *rest in ic.tile_db(x, y):
        if kind == "IpConfig" and rest and rest[0] == name:
            tile = ic.tile(x, y)
            for bit in bits:
                m = re.fullmatch(r"(!?)B(\d+)\[(\d+)\]", bit)
                if (tile[int(m.group(2))][int(m.group(3))] == "1") == bool(m.group(1)):
                    return False
            return True
    raise _error(f"icestorm's database has no configuration bit {name} at ({x}, {y})")


def chip_verilog(build_dir: Path, clock_port: str) -> str:
    """The placed and routed chip of ``build_dir`` as Verilog (module :data:`MODULE`), with its
    clock pad joined to ``clock_port`` and its SPRAM blocks added."""
    asc, pcf = build_dir / "top.asc", build_dir / "top.pcf"
    for f in (asc, pcf):
        if not f.is_file():
            raise _error(f"{build_dir} has no {f.name}: the build did not get past place and "
                         "route")
    text, namespace = _run_icebox_vlog(asc, pcf)
    # icebox_vlog declares its ports in the module header and again as wires, which Icarus
    # takes and Verilator refuses (an ANSI port has its type with it).
    header = re.search(rf"^module {MODULE} \((.*?)\);", text, re.M)
    ports = {p.split()[-1] for p in header.group(1).split(",")} if header else set()

    def undeclare(m: re.Match) -> str:
        names = [n.strip() for n in m.group(1).split(",") if n.strip() not in ports]
        return f"wire {', '.join(names)};" if names else ""

    text = re.sub(r"^wire ([^;]*);$", undeclare, text, flags=re.M)
    # The clock pad: the PLL's PACKAGEPIN net is its own; the pad's port drives nothing.
    pads = re.findall(r"\.PACKAGEPIN\((\w+)\)", text)
    if len(pads) > 1:
        raise _error(f"the bitstream has {len(pads)} PLLs; the board design has one")
    if pads:
        text = text.replace(f".PACKAGEPIN({pads[0]})", f".PACKAGEPIN({clock_port})", 1)
    # An output pad with its enable low floats; here it reads high, as sim/models/ice40_board.v
    # makes an SB_IO's (the UART line's idle level). No tristate for Verilator to resolve.
    text = re.sub(r"^(assign \w+ = \w+ \? \w+ : )1'bz;$", r"\g<1>1'b1;", text, flags=re.M)
    sprams = _spram_instances(namespace)
    if sprams:
        end = text.rindex("endmodule")
        text = text[:end] + "\n".join(sprams) + "\n" + text[end:]
    return text


def bitstream_sources(build) -> dict[str, str]:
    """The Verilog files that simulate ``build``'s bitstream (a :class:`trine.sim.netlist.
    BoardBuild` of an iCE40 board): ``{name: text}``."""
    from trine.sim.netlist import _BOARD_MODELS, MODELS, cell_models

    if build.family != "ice40":
        raise _error(f"the bitstream level is for iCE40 boards (icestorm); the "
                     f"{build.report['board']} is {build.family}: use --netlist")
    board = build.board
    clock_port = f"{board.clock}_0__io"
    chip = chip_verilog(build.path, clock_port)
    wrapper = (f"// Generated by trine.sim.bitstream: the {board.name}'s pins, driven by the "
               "harness.\n"
               f"module native_top(input wire clk, input wire rx, output wire tx);\n"
               "  wire rx_pad = rx;\n"
               f"  {MODULE} board(.{clock_port}(clk), .{board.uart}_0__rx__io(rx_pad), "
               f".{board.uart}_0__tx__io(tx));\nendmodule\n")
    replaced, *models = _BOARD_MODELS["ice40"]
    return {"chip.v": chip, "cells_sim.v": cell_models("ice40", replaced),
            **{name: (MODELS / name).read_text() for name in models}, "wrapper.v": wrapper}
