"""``trine selftest``: what to run first on a new board (:mod:`trine.host.selftest`)."""

from __future__ import annotations

import argparse
import sys

from trine.cli.common import HelpFormatter, UsageError, add_device_options, positive_int

__all__ = ["add_parsers", "FAILED_STATUS"]

#: Exit status when a check fails (as ``trine eval`` when the device differs).
FAILED_STATUS = 3


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1], not {text}")
    return value


def _selftest(args: argparse.Namespace) -> int:
    if not args.port:
        raise UsageError("--port is required: the device to test (a serial port, or "
                         "socket://127.0.0.1:PORT for the simulated device)")
    from trine.host.client import Client
    from trine.host.selftest import run_selftest

    def progress(name: str) -> None:
        if not args.json:
            print(f"  ... {name}", file=sys.stderr)

    with Client(args.port, baud=args.baud, timeout=args.timeout, retries=args.retries) as c:
        report = run_selftest(c, args.port, frames=args.frames, quick=args.quick,
                              max_error_rate=args.max_error_rate, seed=args.seed,
                              progress=progress)
    print(report.to_json() if args.json else report.render())
    return 0 if report.passed else FAILED_STATUS


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``trine selftest`` to the ``trine`` parser."""
    p = sub.add_parser(
        "selftest",
        help="check a device: the link, every memory, known answers, the link's error rate",
        description="Check the device at --port the way to start with a new board: INFO; "
        "frames carrying every byte value; a march test of every memory the device reads "
        "back, through WRITE and READ (an address pattern and a checkerboard, each bit "
        "written both ways); a built-in program run on built-in inputs against the "
        "reference; and --frames frames whose retries must stay within --max-error-rate. "
        "Overwrites the device's memories. Prints one line per check and a verdict; exit "
        f"status 0 if every check passed, {FAILED_STATUS} if one failed, 2 if the device "
        "cannot be reached at all.",
        epilog="examples:\n"
        "  trine selftest --port /dev/ttyUSB1\n"
        "  trine selftest --port socket://127.0.0.1:5555 --quick --frames 200 --json",
        formatter_class=HelpFormatter,
    )
    add_device_options(p)
    p.add_argument("--retries", type=int, default=3, metavar="N",
                   help="tries after the first for each request (default 3)")
    p.add_argument("--frames", type=positive_int, default=2000, metavar="N",
                   help="frames of the link's error-rate check (default 2000)")
    p.add_argument("--max-error-rate", type=_rate, default=0.001, metavar="F",
                   help="share of those frames that may need a retry (default 0.001)")
    p.add_argument("--quick", action="store_true",
                   help="march only the first 64 words of each memory")
    p.add_argument("--seed", type=int, default=0, help="of the link check's random bytes")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_selftest)
