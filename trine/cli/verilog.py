"""``trine verilog``: the Verilog of a hardware block, for use outside trine."""

from __future__ import annotations

import argparse
import re
import sys

from trine.cli.common import UsageError, write_file

__all__ = ["add_parsers"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _mac_array(args: argparse.Namespace) -> int:
    from trine.hw.verilog import mac_array_verilog

    if not _IDENTIFIER.match(args.name):
        raise UsageError(f"--name must be a Verilog identifier (letters, digits, _), "
                         f"not {args.name!r}")
    text = mac_array_verilog(
        args.lanes,
        args.rows,
        args.act_width,
        name=args.name,
        max_fan_in=args.max_fan_in,
        register_every=args.register_every,
        correction=not args.no_correction,
    )
    if args.output == "-":
        sys.stdout.write(text)
    else:
        write_file(args.output, text)
        print(f"wrote {args.output}: MACArray lanes={args.lanes} rows={args.rows}", file=sys.stderr)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``trine verilog`` and its blocks to the ``trine`` parser."""
    verilog = sub.add_parser(
        "verilog",
        help="generate the Verilog of a hardware block",
        description="Write the Verilog of one of trine's hardware blocks, to use it in a "
        "design of your own (the whole device is built with `trine build`).",
    )
    blocks = verilog.add_subparsers(dest="block", required=True, metavar="BLOCK")
    mac = blocks.add_parser(
        "mac-array",
        help="the multiply-free ternary MAC array",
        description="Write the Verilog of MACArray: ROWS dot products of LANES trits x int8 "
        "per clock, with valid/ready streams (see hw/mac_array.py).",
        epilog="example: trine verilog mac-array --lanes 32 --rows 4 -o mac_array.v",
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
    mac.add_argument("--name", default="mac_array", help="top module name (default mac_array)")
    mac.add_argument("-o", "--output", required=True, help="output file, or - for stdout")
    mac.set_defaults(func=_mac_array)
