"""The trine command line: the package, Verilog generation, `trine infer`, and what becomes of
an error (a TrineError is one line and exit status 2, anything else keeps its traceback)."""

import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from trine.cli import common
from trine.cli.main import COMMANDS, build_parser, main
from trine.contract.errors import ParameterError, TrineError


def _trine(*args, module="trine.cli"):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)],
                          capture_output=True, text=True, timeout=120)


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


@pytest.mark.parametrize("module", ["trine.cli", "trine.cli.main"])
def test_bad_parameters_are_one_line_errors(tmp_path, module):
    out = tmp_path / "x.v"
    proc = _trine("verilog", "mac-array", "--lanes", "0", "--rows", "2", "-o", out,
                  module=module)
    assert proc.returncode == 2
    assert proc.stderr == "trine: error: Lane count must be >= 1, not 0\n"
    assert not out.exists()


def test_missing_arguments_show_usage(capsys):
    with pytest.raises(SystemExit) as e:
        main(["verilog", "mac-array", "--lanes", "4"])
    assert e.value.code == 2
    assert "--rows" in capsys.readouterr().err


# ---- errors: one line for what the user can fix, a traceback for a bug --------------------


def _verilog_raising(monkeypatch, exc):
    import trine.hw.verilog

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(trine.hw.verilog, "mac_array_verilog", fail)
    return ["verilog", "mac-array", "--lanes", "2", "--rows", "1", "-o", "-"]


@pytest.mark.parametrize("exc", [TrineError("the user can fix this"),
                                 ParameterError("the user can fix this"),
                                 common.UsageError("the user can fix this")])
def test_a_trine_error_is_one_line_and_status_2(monkeypatch, capsys, exc):
    assert main(_verilog_raising(monkeypatch, exc)) == 2
    captured = capsys.readouterr()
    assert captured.err == "trine: error: the user can fix this\n"
    assert captured.out == ""


@pytest.mark.parametrize("exc", [ValueError("a bug"), TypeError("a bug"), OSError("a bug"),
                                 KeyError("a bug")])
def test_any_other_exception_is_a_bug_and_propagates(monkeypatch, capsys, exc):
    with pytest.raises(type(exc)) as info:
        main(_verilog_raising(monkeypatch, exc))
    assert info.value is exc
    assert "trine: error" not in capsys.readouterr().err


def test_a_bug_keeps_its_traceback_on_the_command_line():
    code = ("import sys, trine.hw.verilog as v\n"
            "def fail(*a, **k):\n    raise ValueError('an internal bug')\n"
            "v.mac_array_verilog = fail\n"
            "from trine.cli.main import main\n"
            "sys.exit(main(['verilog', 'mac-array', '--lanes', '2', '--rows', '1', '-o', '-']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Traceback (most recent call last):")
    assert proc.stderr.rstrip().endswith("ValueError: an internal bug")
    assert "trine: error" not in proc.stderr


def test_ctrl_c_is_status_130(monkeypatch):
    assert main(_verilog_raising(monkeypatch, KeyboardInterrupt())) == 130


# ---- the parser ------------------------------------------------------------------------------


def test_help_says_what_trine_and_every_command_do():
    proc = _trine("--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: trine [-h] [-v] [--version] COMMAND")
    assert "Ternary neural networks" in proc.stdout and "-vv" in proc.stdout
    (commands,) = build_parser()._subparsers._group_actions
    assert set(commands.choices) == {"train", "eval", "import", "infer", "run", "selftest", "sim",
                                     "build", "program", "verilog", "regions"}
    for command in commands._choices_actions:  # the aliases share their command's line
        assert command.help
        assert re.search(rf"^    {re.escape(command.metavar)} ", proc.stdout, re.MULTILINE), \
            command.metavar


@pytest.mark.parametrize("argv", [["train"], ["eval"], ["import"], ["infer"], ["selftest"], ["sim"],
                                  ["sim", "serve"], ["build"], ["program"], ["verilog"],
                                  ["verilog", "mac-array"]])
def test_every_command_has_a_description(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    usage, _, rest = text.partition("\n\n")
    assert usage.startswith(f"usage: trine {' '.join(argv)}")
    assert len(rest.split("\n\n")[0]) > 40, rest  # a sentence or more before the options


def test_command_modules_never_import_main():
    import ast
    from pathlib import Path

    import trine.cli

    for path in Path(trine.cli.__file__).parent.glob("*.py"):
        if path.stem in ("main", "__main__"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "trine.cli.main", path
    assert len(COMMANDS) == 9


def test_device_options_are_the_same_everywhere():
    parser = build_parser()
    for argv in (["infer", "--program", "p", "--input", "x", "--output", "y"],
                 ["eval", "--program", "p"]):
        args = parser.parse_args([*argv, "--port", "socket://h:1", "--baud", "115200",
                                  "--timeout", "0.5"])
        assert (args.port, args.baud, args.timeout) == ("socket://h:1", 115200, 0.5)
        defaults = parser.parse_args(argv)
        assert (defaults.port, defaults.baud, defaults.timeout) == (None, 3_000_000, 2.0)


@pytest.mark.parametrize("option", [["--timeout", "0"], ["--timeout", "nan"],
                                    ["--baud", "0"], ["--baud", "x"]])
def test_device_options_refuse_what_the_link_would(option, capsys):
    with pytest.raises(SystemExit) as e:
        main(["infer", "--program", "p", "--input", "x", "--output", "y", *option])
    assert e.value.code == 2
    assert f"argument {option[0]}: must be a positive" in capsys.readouterr().err


# ---- trine infer -----------------------------------------------------------------------------


def _program(tmp_path, input_scale=None):
    from trine.contract.reference import Layer
    from trine.host.program import Program

    rng = np.random.default_rng(4)
    p = Program([Layer(rng.integers(-1, 2, (6, 5)), rng.integers(-9, 9, 6), 1, True),
                 Layer(rng.integers(-1, 2, (3, 6)), rng.integers(-9, 9, 3), 0, False)],
                input_scale=input_scale)
    path = tmp_path / "p.trine"
    p.save(path)
    return p, path


def test_infer_reference_backend(tmp_path):
    program, path = _program(tmp_path, input_scale=0.5)
    x = np.random.default_rng(5).integers(-128, 128, (7, 5)).astype(np.int8)
    np.save(tmp_path / "x.npy", x)
    proc = _trine("infer", "--backend", "reference", "--program", path,
                  "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.load(tmp_path / "y.npy"), program.run_reference(x))
    xf = np.random.default_rng(6).normal(0, 10, 5).astype(np.float32)  # one float input
    np.save(tmp_path / "xf.npy", xf)
    proc = _trine("run", "--backend", "reference", "--program", path,
                  "--input", tmp_path / "xf.npy", "--output", tmp_path / "yf.npy")
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.load(tmp_path / "yf.npy"), program.run_reference(xf))


def _bad_input(tmp_path, case):
    path = tmp_path / "x.npy"
    if case == "missing input":
        return tmp_path / "none.npy"
    if case == "text input":
        path.write_text("1 2 3 4 5\n")
    elif case == "empty input":
        path.write_bytes(b"")
    elif case == "npz input":
        path = tmp_path / "x.npz"
        np.savez(path, a=np.zeros(5, np.int8), b=np.zeros(5, np.int8))
    elif case == "pickled input":
        np.save(path, np.array([{}, 1], dtype=object), allow_pickle=True)
    elif case == "string input":
        np.save(path, np.array(["a"] * 5))
    elif case == "forged shape":  # a header declaring 5 TB of data, followed by 64 bytes
        from numpy.lib import format as npy_format

        with open(path, "wb") as f:
            npy_format.write_array_header_1_0(
                f, {"descr": "<f8", "fortran_order": False, "shape": (10**10, 64)})
            f.write(bytes(64))
    elif case == "fifo input":  # no writer: a plain open() would wait for ever
        path = tmp_path / "fifo.npy"
        os.mkfifo(path)
    elif case == "folder input":
        path = tmp_path / "folder.npy"
        path.mkdir()
    elif case == "float-no-scale":
        np.save(path, np.zeros((2, 5), np.float32))
    elif case == "wrong-width":
        np.save(path, np.zeros((2, 4), np.int8))
    else:
        np.save(path, np.zeros((2, 5), np.int8))
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("float-no-scale", "is float but .* has no input_scale"),
        ("bad-program", "not a trine program"),
        ("missing program", r"cannot read \S*none.trine: No such file or directory"),
        ("no-port", "--port is required"),
        ("unreachable", "cannot open socket://127.0.0.1:9"),
        ("wrong-width", "4 inputs per sample, the weights expect 5|input"),
        ("missing input", r"--input: no such file: \S*none.npy"),
        ("text input", r"--input: cannot read \S*x.npy as a .npy array"),
        ("empty input", r"--input: cannot read \S*x.npy as a .npy array"),
        ("npz input", r"--input: \S*x.npz holds several arrays \(.npz\); give one .npy array"),
        ("pickled input", r"--input: cannot read \S*x.npy as a .npy array: Object arrays"),
        ("string input", r"--input: \S*x.npy must hold numbers, not dtype <U1"),
        ("forged shape", r"--input: \S*x.npy declares 5,120,000,000,000 bytes of data in "
                         r"\(10000000000, 64\) but holds 64: truncated or forged"),
        ("fifo input", r"--input: \S*fifo.npy is not a regular file"),
        ("folder input", r"--input: \S*folder.npy is not a regular file"),
        ("unwritable output", r"cannot write \S*/file/y.npy: "),
    ],
)
def test_infer_errors_are_one_line(tmp_path, case, message):
    _, path = _program(tmp_path)
    x = _bad_input(tmp_path, case)
    if case == "bad-program":
        path = tmp_path / "bad.trine"
        path.write_bytes(b"hello")
    if case == "missing program":
        path = tmp_path / "none.trine"
    out = tmp_path / "y.npy"
    if case == "unwritable output":
        (tmp_path / "file").write_text("a file, not a folder")
        out = tmp_path / "file" / "y.npy"
    backend = "device" if case in ("no-port", "unreachable") else "reference"
    extra = ["--port", "socket://127.0.0.1:9"] if case == "unreachable" else []
    proc = _trine("infer", "--backend", backend, "--program", path, "--input", x,
                  "--output", out, *extra)
    assert proc.returncode == 2
    assert proc.stderr.startswith("trine: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert re.search(message, proc.stderr), proc.stderr
    assert not (tmp_path / "y.npy").exists()


def test_eval_exits_with_3_when_the_device_differs(tmp_path, monkeypatch, capsys):
    import trine.host.evaluate
    from trine.host.evaluate import Evaluation

    _, path = _program(tmp_path)
    np.save(tmp_path / "x.npy", np.zeros((4, 5), np.int8))
    np.save(tmp_path / "y.npy", np.zeros(4, np.int64))
    device = {"lanes": 8, "rows": 5, "clock_hz": 12_000_000, "weights": 48,
              "wire_bytes_sent": 100, "frames": 3, "bits_per_weight": 16.7,
              "latency_cycles": 40, "cycles_per_inference": 30.0, "max_batch": 16,
              "runs": 1, "macs_per_inference": 48, "macs_per_cycle": 1.6,
              "latency_macs_per_cycle": 1.2, "peak_macs_per_cycle": 40}
    monkeypatch.setattr(trine.host.evaluate, "evaluate", lambda *a, **k: Evaluation(
        "device", 4, 0.25, 0.5, 1, 0.1, device))
    assert main(["eval", "--program", str(path), "--input", str(tmp_path / "x.npy"),
                 "--labels", str(tmp_path / "y.npy"), "--backend", "device",
                 "--port", "socket://127.0.0.1:9"]) == 3
    captured = capsys.readouterr()
    assert "device == reference on 3 of 4 samples" in captured.out
    assert captured.err == "trine: error: the device differs from the reference on 1 samples\n"


# ---- the progress bar ----------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_off_a_terminal_is_a_line_per_tenth():
    out = io.StringIO()
    bar = common.ProgressBar("qat", out)
    for i in range(101):
        bar(i / 100, f"epoch {i}")
    lines = out.getvalue().splitlines()
    assert lines[0] == "qat   0% epoch 0" and lines[-1] == "qat 100% epoch 100"
    assert len(lines) == 11
    quiet = io.StringIO()
    common.ProgressBar("loading", quiet, trace=False).transfer(50_000, 50_000)
    assert quiet.getvalue() == ""


def test_progress_on_a_terminal_redraws_one_line_for_fractions_and_bytes():
    out = _Terminal()
    bar = common.ProgressBar("loading", out, trace=False)
    bar.transfer(100, 1000)  # too small to be shown
    assert out.getvalue() == ""
    for done in (0, 20_000, 40_000):
        bar.transfer(done, 40_000)
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "loading [###############...............]  50% 20,000/40,000 bytes" in text
    assert "loading [##############################] 100% 40,000/40,000 bytes" in text
