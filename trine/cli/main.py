"""The ``trine`` command: the parser, logging, and what becomes of an error.

Each command lives in a module of its own (:mod:`trine.cli.verilog`, :mod:`~trine.cli.infer`,
:mod:`~trine.cli.sim`, :mod:`~trine.cli.train`, :mod:`~trine.cli.eval`,
:mod:`~trine.cli.import_model`, :mod:`~trine.cli.board`) with an ``add_parsers(sub)`` that adds
its subcommands, each with a ``func(args) -> int`` default. The modules import what a command
needs when it runs, so host-side commands never load Amaranth or cocotb.

Exit status: 0 on success; 2 with one line ``trine: error: ...`` on stderr for a
:class:`trine.TrineError` (what the user can cause and fix) or a usage error; 3 from ``trine
eval`` when the device differs from the reference, and from ``trine selftest`` when a check
fails; 130 on Ctrl-C. Any other exception is a bug
and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator

import trine
from trine.cli import board, import_model, infer, regions, selftest, sim, train, verilog
from trine.cli import eval as eval_command
from trine.cli.common import HelpFormatter
from trine.contract.errors import TrineError

__all__ = ["COMMANDS", "build_parser", "main"]

#: The command modules, in the order ``trine --help`` lists them.
COMMANDS = (train, eval_command, import_model, infer, selftest, sim, board, verilog, regions)
#: Exit status for a TrineError: the same as argparse's for a usage error.
ERROR_STATUS = 2
#: Exit status on Ctrl-C (128 + SIGINT, as a shell reports it).
INTERRUPTED_STATUS = 130

_LOG_FORMAT = "%(levelname).1s: %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    """The ``trine`` parser, every command's subparser included."""
    parser = argparse.ArgumentParser(
        prog="trine",
        formatter_class=HelpFormatter,
        description="Ternary neural networks from training to an open-toolchain FPGA "
        "accelerator: train or import a ternary MLP, run it on the bit-exact reference, the "
        "simulated device or a board, and build and program the board's bitstream.",
        epilog="a first run, without a board:\n"
        "  trine train --data digits -o digits.trine\n"
        "  trine sim serve --sim verilator --port 5555 --mode byte &\n"
        "  trine eval --program digits.trine --backend device --port socket://127.0.0.1:5555\n"
        "\n"
        "Each command's --help says more. Errors are one line `trine: error: ...` and exit "
        "status 2; `trine eval` exits with 3 when the device differs from the reference.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, dest="verbosity",
                        help="log what happens (-v), and every frame on the device link as "
                        "hex (-vv)")
    parser.add_argument("--version", action="version", version=f"trine {trine.__version__}")
    sub = parser.add_subparsers(title="commands", dest="command", required=True,
                                metavar="COMMAND")
    for module in COMMANDS:
        module.add_parsers(sub)
    return parser


@contextlib.contextmanager
def logging_to_stderr(verbosity: int) -> Iterator[None]:
    """Log the ``trine`` loggers to stderr for the time of one command: warnings only, INFO
    with ``verbosity`` 1, DEBUG (frames on the link) from 2; then restore them."""
    logger = logging.getLogger("trine")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else \
        logging.DEBUG
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def main(argv: list[str] | None = None) -> int:
    """Run ``trine`` with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    Raises
    ------
    SystemExit
        For ``--help``, ``--version`` and usage errors (status 2), from argparse.
    """
    args = build_parser().parse_args(argv)
    with logging_to_stderr(args.verbosity):
        try:
            return args.func(args)
        except TrineError as e:
            print(f"trine: error: {e}", file=sys.stderr)
            return ERROR_STATUS
        except KeyboardInterrupt:
            return INTERRUPTED_STATUS


if __name__ == "__main__":
    sys.exit(main())
