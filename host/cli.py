"""The ``trine`` command line.

Each subcommand imports what it needs when it runs, so the host-side commands never pull in
Amaranth or cocotb. Errors are reported as one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import sys

from host.fileio import write_atomic

__all__ = ["main"]


class CLIError(Exception):
    """An error the user can fix; printed as one line, without a traceback."""


def _cmd_verilog_mac_array(args: argparse.Namespace) -> int:
    from hw.generate import mac_array_verilog

    try:
        text = mac_array_verilog(
            args.lanes,
            args.rows,
            args.act_width,
            name=args.name,
            max_fan_in=args.max_fan_in,
            register_every=args.register_every,
            correction=not args.no_correction,
        )
    except (TypeError, ValueError) as e:
        raise CLIError(str(e)) from None
    if args.output == "-":
        sys.stdout.write(text)
    else:
        write_atomic(args.output, text)
        print(f"wrote {args.output}: MACArray lanes={args.lanes} rows={args.rows}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trine",
        description="Ternary neural networks on open FPGA toolchains.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    verilog = sub.add_parser("verilog", help="generate Verilog for a hardware block")
    vsub = verilog.add_subparsers(dest="block", required=True, metavar="BLOCK")
    mac = vsub.add_parser(
        "mac-array",
        help="the multiply-free ternary MAC array",
        description="Write the Verilog of MACArray: ROWS dot products of LANES trits x int8 "
        "per clock, with valid/ready streams (see hw/mac_array.py).",
    )
    mac.add_argument("--lanes", type=int, required=True, help="activations per beat (SIMD)")
    mac.add_argument("--rows", type=int, required=True, help="parallel dot products (PE)")
    mac.add_argument("--act-width", type=int, default=8, help="activation bits (default 8)")
    mac.add_argument(
        "--max-fan-in", type=int, default=4096, help="largest K held exactly (default 4096)"
    )
    mac.add_argument(
        "--register-every", type=int, default=1,
        help="pipeline register every N adder levels; 0 = combinational tree (default 1)",
    )
    mac.add_argument(
        "--no-correction", action="store_true",
        help="leave out the +1 per -1 weight (the user folds it into a bias)",
    )
    mac.add_argument("--name", default="mac_array", help="top module name")
    mac.add_argument("-o", "--output", required=True, help="output file, or - for stdout")
    mac.set_defaults(func=_cmd_verilog_mac_array)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CLIError as e:
        print(f"trine: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"trine: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
