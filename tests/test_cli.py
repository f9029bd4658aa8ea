"""The trine command line: Verilog generation and one-line errors."""

import re
import subprocess
import sys

import pytest

from trine.cli.main import main


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
        [sys.executable, "-m", "trine.cli.main", "verilog", "mac-array", "--lanes", "0",
         "--rows", "2",
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


def _program(tmp_path, input_scale=None):
    import numpy as np

    from trine.contract.reference import Layer
    from trine.host.program import Program

    rng = np.random.default_rng(4)
    p = Program([Layer(rng.integers(-1, 2, (6, 5)), rng.integers(-9, 9, 6), 1, True),
                 Layer(rng.integers(-1, 2, (3, 6)), rng.integers(-9, 9, 3), 0, False)],
                input_scale=input_scale)
    path = tmp_path / "p.trine"
    p.save(path)
    return p, path


def _trine(*args):
    return subprocess.run([sys.executable, "-m", "trine.cli.main", *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def test_infer_reference_backend(tmp_path):
    import numpy as np

    program, path = _program(tmp_path, input_scale=0.5)
    x = np.random.default_rng(5).integers(-128, 128, (7, 5)).astype(np.int8)
    np.save(tmp_path / "x.npy", x)
    proc = _trine("infer", "--backend", "reference", "--program", path,
                  "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.load(tmp_path / "y.npy"), program.run_reference(x))
    xf = np.random.default_rng(6).normal(0, 10, 5).astype(np.float32)  # one float input
    np.save(tmp_path / "xf.npy", xf)
    proc = _trine("infer", "--backend", "reference", "--program", path,
                  "--input", tmp_path / "xf.npy", "--output", tmp_path / "yf.npy")
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.load(tmp_path / "yf.npy"), program.run_reference(xf))


@pytest.mark.parametrize(
    "case, message",
    [
        ("float-no-scale", "is float but .* has no input_scale"),
        ("bad-program", "not a trine program"),
        ("no-port", "--port is required"),
        ("unreachable", "cannot open socket://127.0.0.1:9"),
        ("wrong-width", "4 inputs per sample, the weights expect 5|input"),
    ],
)
def test_infer_errors_are_one_line(tmp_path, case, message):
    import numpy as np

    _, path = _program(tmp_path)
    x = np.zeros((2, 5), np.float32 if case == "float-no-scale" else np.int8)
    if case == "wrong-width":
        x = np.zeros((2, 4), np.int8)
    np.save(tmp_path / "x.npy", x)
    if case == "bad-program":
        path = tmp_path / "bad.trine"
        path.write_bytes(b"hello")
    backend = "device" if case in ("no-port", "unreachable") else "reference"
    extra = ["--port", "socket://127.0.0.1:9"] if case == "unreachable" else []
    proc = _trine("infer", "--backend", backend, "--program", path, "--input",
                  tmp_path / "x.npy", "--output", tmp_path / "y.npy", *extra)
    assert proc.returncode != 0
    assert proc.stderr.startswith("trine: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert re.search(message, proc.stderr), proc.stderr
    assert not (tmp_path / "y.npy").exists()
