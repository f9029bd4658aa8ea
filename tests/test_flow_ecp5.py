"""trine.flow.ecp5: flip-flops after a DP16KD's read data move into its output register, and
only when that keeps the behaviour (one flip-flop per bit, same clock, no reset, one enable)."""

import copy
import json

import pytest

from trine.flow.ecp5 import absorb_output_registers, main

CLK, CE, RST = 2, 3, 4


def ff(d, q, *, clk=CLK, ce=None, lsr="0", regset="RESET "):
    """A TRELLIS_FF as Yosys writes it (string parameters padded with a space)."""
    return {
        "type": "TRELLIS_FF",
        "parameters": {"CEMUX": "1 " if ce is None else "CE", "CLKMUX": "CLK", "GSR": "DISABLED",
                       "LSRMUX": "LSR", "REGSET": regset},
        "port_directions": {"CLK": "input", "CE": "input", "DI": "input", "LSR": "input",
                            "Q": "output"},
        "connections": {"CLK": [clk], "DI": [d], "LSR": [lsr], "Q": [q],
                        **({} if ce is None else {"CE": [ce]})},
    }


def lut(a, z):
    return {"type": "LUT4", "parameters": {"INIT": "0000000000000010"},
            "port_directions": {"A": "input", "Z": "output"},
            "connections": {"A": [a], "Z": [z]}}


def ram(doa, dob=(), width_b=18):
    """A DP16KD reading on port A (bits ``doa``) and, in 36-bit mode, B (``dob``)."""
    conn = {"CLKA": [CLK], "CLKB": [CLK], "RSTA": ["0"], "RSTB": ["0"], "OCEA": ["1"],
            "OCEB": ["1"], "CEA": ["1"], "CEB": ["1"]}
    dirs = {p: "input" for p in conn}
    for i in range(18):
        conn[f"DOA{i}"] = [doa[i]] if i < len(doa) else [1000 + i]
        conn[f"DOB{i}"] = [dob[i]] if i < len(dob) else [2000 + i]
        dirs[f"DOA{i}"] = dirs[f"DOB{i}"] = "output"
    return {"type": "DP16KD",
            "parameters": {"DATA_WIDTH_A": "00000000000000000000000000010010",
                           "DATA_WIDTH_B": format(width_b, "032b"),
                           "REGMODE_A": "NOREG", "REGMODE_B": "NOREG", "CLKAMUX": "CLKA",
                           "CLKBMUX": "CLKB"},
            "port_directions": dirs, "connections": conn}


def netlist(cells, outputs):
    return {"modules": {"top": {
        "attributes": {"top": "00000000000000000000000000000001"},
        "ports": {"o": {"direction": "output", "bits": outputs}},
        "cells": cells, "netnames": {}}}}


def test_flip_flops_after_the_read_data_become_the_output_register():
    design = netlist({"ram": ram([10, 11]), "q0": ff(10, 20), "q1": ff(11, 21)}, [20, 21])
    report = absorb_output_registers(design)
    cells = design["modules"]["top"]["cells"]
    assert report.absorbed == ["ram A"] and report.flip_flops == 2
    assert set(cells) == {"ram"}
    r = cells["ram"]
    assert r["parameters"]["REGMODE_A"] == "OUTREG" and r["parameters"]["REGMODE_B"] == "NOREG"
    assert r["connections"]["DOA0"] == [20] and r["connections"]["DOA1"] == [21]
    assert r["connections"]["OCEA"] == ["1"]


def test_the_flip_flops_enable_becomes_the_output_registers_enable():
    design = netlist({"ram": ram([10, 11]), "q0": ff(10, 20, ce=CE), "q1": ff(11, 21, ce=CE)},
                     [20, 21])
    absorb_output_registers(design)
    assert design["modules"]["top"]["cells"]["ram"]["connections"]["OCEA"] == [CE]


def test_a_36_bit_read_switches_both_halves():
    design = netlist({"ram": ram([10], [11], width_b=36), "q0": ff(10, 20), "q1": ff(11, 21)},
                     [20, 21])
    report = absorb_output_registers(design)
    r = design["modules"]["top"]["cells"]["ram"]
    assert report.absorbed == ["ram AB"]
    assert (r["parameters"]["REGMODE_A"], r["parameters"]["REGMODE_B"]) == ("OUTREG", "OUTREG")
    assert r["connections"]["DOB0"] == [21] and r["connections"]["OCEB"] == ["1"]


@pytest.mark.parametrize("cells, reason", [
    # a data bit that also feeds logic
    ({"q0": ff(10, 20), "q1": ff(11, 21), "l": lut(11, 22)}, "DOA1 drives 2 inputs"),
    # logic between the RAM and the flip-flop
    ({"q0": ff(10, 20), "l": lut(11, 22), "q1": ff(22, 21)}, "DOA1 drives LUT4.A"),
    # a flip-flop with a reset, one that powers up at 1, another clock, another enable
    ({"q0": ff(10, 20), "q1": ff(11, 21, lsr=RST)}, "has a set or reset"),
    ({"q0": ff(10, 20), "q1": ff(11, 21, regset="SET ")}, "powers up at 1"),
    ({"q0": ff(10, 20), "q1": ff(11, 21, clk=9)}, "another clock"),
    ({"q0": ff(10, 20, ce=CE), "q1": ff(11, 21)}, "another enable"),
])
def test_a_port_that_would_change_behaviour_is_kept(cells, reason):
    design = netlist({"ram": ram([10, 11]), **cells}, [20, 21, 22])
    before = copy.deepcopy(design)
    report = absorb_output_registers(design)
    assert report.absorbed == [] and reason in report.kept["ram A"]
    assert design == before


def test_the_command_rewrites_the_netlist_in_place(tmp_path, capsys):
    path = tmp_path / "top.json"
    path.write_text(json.dumps(netlist({"ram": ram([10]), "q0": ff(10, 20)}, [20])))
    assert main([str(path)]) == 0
    cells = json.loads(path.read_text())["modules"]["top"]["cells"]
    assert set(cells) == {"ram"} and cells["ram"]["parameters"]["REGMODE_A"] == "OUTREG"
    assert "1 block RAM read ports now use their output register" in capsys.readouterr().out
