"""``trine build`` and ``trine program`` on the command line: errors are one clear line and
exit code 2, ``--help`` lists the boards, and ``trine program`` with no board attached says so
with openFPGALoader's real output. No tool run here takes more than a second; the builds
themselves are tested in ``tests/test_build.py``."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import pytest

from trine.cli.main import main
from trine.contract.params import SMALL
from trine.flow.boards import BOARDS

ROOT = Path(__file__).resolve().parent.parent


def _trine(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trine.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


def _main(args: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(args)
    return code, err.getvalue()


def _usb_ftdi_attached() -> bool:
    """Whether an FTDI USB device (vendor 0403) is attached: a board might be there, and a
    test must not load a dummy bitstream into it."""
    for vendor in Path("/sys/bus/usb/devices").glob("*/idVendor"):
        try:
            if vendor.read_text().strip() == "0403":
                return True
        except OSError:
            continue
    return False


@pytest.mark.parametrize(("args", "message"), [
    (["build", "--board", "icebreaker", "--clock-mhz", "13"],
     "iCE40 PLL output frequency must be in [16, 275] MHz, not 13 MHz"),
    (["build", "--board", "icebreaker", "--baud", "7000000"],
     "baud 7000000 is above what the icebreaker's FT2232H channel B handles reliably"),
    (["build", "--board", "ulx3s-85f", "--clock-mhz", "10", "--baud", "3000000"],
     "clock 10 MHz (the PLL's closest to 10 MHz) does not suit 3000000 baud: clock "
     "frequency 1e+07 Hz is too low for 3e+06 baud"),
    (["build", "--board", "icebreaker", "--seed", "-1", "--clock-mhz", "12"],
     "seed must be a non-negative integer, not -1"),
    (["program", "--board", "ulx3s-85f", "--bitstream", "missing/top.bit"],
     "no bitstream 'missing/top.bit': build it first with `trine build --board ulx3s-85f`"),
    (["program", "--board", "icebreaker", "--bitstream", "top.bit"],
     "bitstream for the icebreaker must be a .bin file, not 'top.bit'"),
])
def test_errors_are_one_clear_line(args, message):
    code, err = _main(args)
    assert code == 2
    assert f"trine: error: {message}" in err
    assert "Traceback" not in err


def test_bad_device_parameter_is_refused_before_any_tool_runs(tmp_path):
    code, err = _main(["build", "--board", "icebreaker", "--small", "--lanes", "0",
                       "--clock-mhz", "12", "--out", str(tmp_path / "b")])
    assert code == 2
    assert "trine: error: Lane count must be >= 1, not 0" in err
    assert not (tmp_path / "b" / "build.log").exists()


def test_unknown_board_is_refused():
    proc = _trine("build", "--board", "icestick")
    assert proc.returncode == 2
    assert "invalid choice: 'icestick'" in proc.stderr


@pytest.mark.parametrize("command", ["build", "program"])
def test_help_lists_every_board(command):
    proc = _trine(command, "--help")
    assert proc.returncode == 0
    for name in BOARDS:
        assert name in proc.stdout
    assert "example" in proc.stdout


def test_program_without_a_board_says_so(tmp_path):
    """The real openFPGALoader, no board on USB: one clear line, exit code 2."""
    from trine.flow.loader import LoaderError, find_loader

    try:
        find_loader()
    except LoaderError as exc:
        pytest.skip(str(exc))
    if _usb_ftdi_attached():
        pytest.skip("an FTDI device is attached: not loading a dummy bitstream into it")
    bitstream = tmp_path / "top.bin"
    bitstream.write_bytes(b"\xff\x00not a bitstream")
    proc = _trine("program", "--board", "icebreaker", "--bitstream", str(bitstream))
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    # No board; or, on a machine without libusb, the missing library: said plainly either way.
    assert last.startswith("trine: error: no icebreaker found: openFPGALoader could not open "
                           "its FT2232H channel B") or (
        last.startswith("trine: error: openFPGALoader cannot start: a USB library is missing")
    ), last
    assert "Traceback" not in proc.stderr


def test_program_warns_about_a_bitstream_that_missed_timing(tmp_path):
    """The report beside the bitstream is read first: a build that missed timing is flagged
    (the load itself then fails here, for want of a board)."""
    import json

    if _usb_ftdi_attached():
        pytest.skip("an FTDI device is attached: not loading a dummy bitstream into it")
    (tmp_path / "top.bit").write_bytes(b"\xff\x00dummy")
    (tmp_path / "report.json").write_text(json.dumps(
        {"board": "icebreaker", "timing_met": False, "fmax_mhz": 41.0,
         "achieved_clock_mhz": 50.0}))
    code, err = _main(["program", "--board", "ulx3s-85f", "--bitstream",
                       str(tmp_path / "top.bit")])
    assert code == 2
    assert "says this bitstream is for the icebreaker, not the ulx3s-85f" in err
    assert "says timing was not met (Fmax 41.0 MHz < 50.0 MHz)" in err


def test_program_v_shows_the_loader_and_trine_v_logs():
    from trine.cli.main import build_parser

    parser = build_parser()
    local = parser.parse_args(["program", "--board", "icebreaker", "-v"])
    assert (local.loader_output, local.verbosity) == (True, 0)
    top = parser.parse_args(["-vv", "program", "--board", "icebreaker"])
    assert (top.loader_output, top.verbosity) == (False, 2)


def test_build_and_sim_serve_share_the_device_options():
    from trine.cli.common import params_changes
    from trine.cli.main import build_parser

    parser = build_parser()
    options = ["--board", "icebreaker", "--small", "--rows", "2", "--max-batch", "3"]
    build = parser.parse_args(["build", *options])
    serve = parser.parse_args(["sim", "serve", "--port", "0", *options])
    assert params_changes(build) == params_changes(serve) == {
        **SMALL.size(), "rows": 2, "max_batch": 3}
