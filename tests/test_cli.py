"""The trine command line: Verilog generation and one-line errors."""

import subprocess
import sys

import pytest

from host.cli import main


def test_verilog_mac_array_writes_a_module(tmp_path, capsys):
    out = tmp_path / "sub" / "mac.v"
    assert main(["verilog", "mac-array", "--lanes", "3", "--rows", "2", "-o", str(out)]) == 0
    text = out.read_text()
    assert "module mac_array(" in text
    assert "input [36:0] i_stream__payload;" in text  # 3 x 8 acts + 2 x 3 x 2 codes + last
    assert "output [41:0] o_stream__payload;" in text  # 2 rows x 21 bits (fan-in 4096)
    assert not list(out.parent.glob("*.tmp"))


def test_verilog_is_reproducible(tmp_path):
    a, b = tmp_path / "a.v", tmp_path / "b.v"
    for path in (a, b):
        main(["verilog", "mac-array", "--lanes", "4", "--rows", "2", "--max-fan-in", "64",
              "-o", str(path)])
    assert a.read_text() == b.read_text()


def test_bad_parameters_are_one_line_errors(tmp_path):
    out = tmp_path / "x.v"
    proc = subprocess.run(
        [sys.executable, "-m", "host.cli", "verilog", "mac-array", "--lanes", "0", "--rows", "2",
         "-o", str(out)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr == "trine: error: Lane count must be >= 1, not 0\n"
    assert not out.exists()


def test_missing_arguments_show_usage(capsys):
    with pytest.raises(SystemExit) as e:
        main(["verilog", "mac-array", "--lanes", "4"])
    assert e.value.code == 2
    assert "--rows" in capsys.readouterr().err
