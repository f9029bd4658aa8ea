"""ECP5 netlist pass: flip-flops right after a block RAM's output go into its output register.

An ECP5 ``DP16KD`` block RAM read without its output register (``REGMODE = "NOREG"``, the only
mode Yosys's memory mapping uses) has a clock-to-output of about 5.6-5.8 ns in nextpnr's timing
model for the -6 speed grade, more than half a 100 MHz period; through the output register
(``"OUTREG"``) it is about 1 ns. A design that registers a block RAM's read data at once (the
accelerator does, with ``AcceleratorParams(ram_output="registered")``) leaves Yosys with a
``DP16KD`` whose data bits each drive one ``TRELLIS_FF``; :func:`absorb_output_registers`
moves those flip-flops into the block RAM: same behaviour cycle for cycle, and the slow
clock-to-output is gone from the path.

A read port is changed only when every data bit it drives goes to exactly one flip-flop, and
every one of those flip-flops is clocked by the port's clock with the same edge, has no set or
reset (``LSR`` constant 0), powers up at 0, and is enabled by one shared signal or always (the
output register's ``OCE``). In the 36-bit mode (Yosys's pseudo dual-port mapping) both halves
of the data are port B's read, and both output registers are switched together.

``python -m trine.flow.ecp5 NETLIST.json`` rewrites a Yosys JSON netlist in place and prints
what it changed; :func:`trine.flow.build.run_build` runs it between Yosys and nextpnr.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from trine.contract.fileio import write_atomic

__all__ = ["OutputRegisterReport", "absorb_output_registers", "rewrite_netlist"]

_BITS = 18
#: Constant bits in a Yosys JSON netlist.
_CONSTANTS = ("0", "1", "x", "z")


@dataclass
class OutputRegisterReport:
    """What :func:`absorb_output_registers` did: read ports switched to ``OUTREG`` (cell name
    and port, ``A``/``B`` or ``AB`` for a 36-bit read), flip-flops removed, and the ports left
    as they were with the reason."""

    absorbed: list[str] = field(default_factory=list)
    flip_flops: int = 0
    kept: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{len(self.absorbed)} block RAM read ports now use their output register "
                f"({self.flip_flops} flip-flops moved into them); {len(self.kept)} left as "
                f"they were")


def _param_int(value) -> int:
    """A Yosys JSON parameter: a binary string, or an integer."""
    if isinstance(value, int):
        return value
    text = str(value).strip()
    return int(text, 2) if text and set(text) <= {"0", "1"} else int(text)


def _text(params: dict, key: str, default: str) -> str:
    """A string parameter; Yosys pads some with a space (``"1 "``) to tell them from bits."""
    return str(params.get(key, default)).strip()


def _top_module(netlist: dict) -> tuple[str, dict]:
    modules = netlist["modules"]
    for name, module in modules.items():
        if _param_int(module.get("attributes", {}).get("top", 0)):
            return name, module
    raise ValueError("the netlist has no top module (no module with the attribute top)")


def _sinks(module: dict) -> dict[int, list[tuple[str, str]]]:
    """Net bit -> the (cell, port) inputs it drives; module outputs count as ("", port)."""
    sinks: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for name, cell in module["cells"].items():
        directions = cell.get("port_directions", {})
        for port, bits in cell["connections"].items():
            if directions.get(port, "input") == "output":
                continue
            for bit in bits:
                if bit not in _CONSTANTS:
                    sinks[bit].append((name, port))
    for port, info in module.get("ports", {}).items():
        if info.get("direction") != "input":
            for bit in info["bits"]:
                if bit not in _CONSTANTS:
                    sinks[bit].append(("", port))
    return sinks


def _single(bits: list) -> object:
    """The one bit of a 1-bit connection."""
    return bits[0] if bits else "x"


def _port_candidates(cell: dict) -> list[tuple[str, list[str], str]]:
    """(label, data output pins, port letter of the clock/enable pins) of each read port."""
    params = cell["parameters"]
    if _param_int(params.get("DATA_WIDTH_B", _BITS)) == 36:
        pins = [f"DOA{i}" for i in range(_BITS)] + [f"DOB{i}" for i in range(_BITS)]
        return [("AB", pins, "B")]
    return [(p, [f"DO{p}{i}" for i in range(_BITS)], p) for p in ("A", "B")]


def absorb_output_registers(netlist: dict) -> OutputRegisterReport:
    """Move the flip-flops that register a ``DP16KD``'s read data into its output register,
    in the top module of the Yosys JSON ``netlist`` (changed in place). See the module notes
    for when a port qualifies."""
    _, module = _top_module(netlist)
    cells = module["cells"]
    sinks = _sinks(module)
    report = OutputRegisterReport()
    removed: set[str] = set()
    for name, cell in list(cells.items()):
        if cell["type"] != "DP16KD":
            continue
        conn, params = cell["connections"], cell["parameters"]
        for label, pins, letter in _port_candidates(cell):
            key = f"{name} {label}"
            regmodes = ["REGMODE_A", "REGMODE_B"] if label == "AB" else [f"REGMODE_{letter}"]
            if any(_text(params, r, "NOREG") != "NOREG" for r in regmodes):
                report.kept[key] = "already registered"
                continue
            if _single(conn.get(f"RST{letter}", ["0"])) != "0":
                report.kept[key] = "its read port has a reset"
                continue
            clock = _single(conn.get(f"CLK{letter}", ["x"]))
            edge = _text(params, f"CLK{letter}MUX", f"CLK{letter}")
            used = [(pin, conn[pin][0]) for pin in pins
                    if pin in conn and conn[pin] and conn[pin][0] not in _CONSTANTS
                    and sinks.get(conn[pin][0])]
            if not used:
                report.kept[key] = "no data bit is used"
                continue
            flops, enable, reason = [], None, None
            for pin, bit in used:
                targets = sinks[bit]
                if len(targets) != 1 or not targets[0][0]:
                    reason = f"{pin} drives {len(targets)} inputs"
                    break
                ff_name, ff_port = targets[0]
                ff = cells[ff_name]
                fp, fc = ff["parameters"], ff["connections"]
                if ff["type"] != "TRELLIS_FF" or ff_port != "DI":
                    reason = f"{pin} drives {ff['type']}.{ff_port}"
                    break
                if _single(fc.get("CLK", ["x"])) != clock or (
                        _text(fp, "CLKMUX", "CLK") == "INV") != (edge == "INV"):
                    reason = f"{pin}'s flip-flop has another clock"
                    break
                if (_text(fp, "LSRMUX", "LSR") != "LSR" or _single(fc.get("LSR", ["0"])) != "0"
                        or _text(fp, "REGSET", "RESET") != "RESET"):
                    reason = f"{pin}'s flip-flop has a set or reset, or powers up at 1"
                    break
                cemux = _text(fp, "CEMUX", "CE")
                ce = "1" if cemux == "1" else _single(fc.get("CE", ["1"]))
                if cemux == "INV" or (enable is not None and ce != enable):
                    reason = f"{pin}'s flip-flop has another enable"
                    break
                enable = ce
                flops.append((pin, ff_name, fc["Q"][0]))
            if reason:
                report.kept[key] = reason
                continue
            for r in regmodes:
                params[r] = "OUTREG"
            for p in (("A", "B") if label == "AB" else (letter,)):
                conn[f"OCE{p}"] = [enable]
            for pin, ff_name, q in flops:
                conn[pin] = [q]
                removed.add(ff_name)
            report.absorbed.append(key)
            report.flip_flops += len(flops)
    for ff_name in removed:
        del cells[ff_name]
    return report


def rewrite_netlist(path: str | os.PathLike) -> OutputRegisterReport:
    """:func:`absorb_output_registers` on the Yosys JSON netlist at ``path``, rewritten in
    place."""
    path = Path(path)
    netlist = json.loads(path.read_text())
    report = absorb_output_registers(netlist)
    write_atomic(path, json.dumps(netlist))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trine.flow.ecp5", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("netlist", help="Yosys JSON netlist, rewritten in place")
    args = parser.parse_args(argv)
    report = rewrite_netlist(args.netlist)
    print(f"trine.flow.ecp5: {report.summary()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
