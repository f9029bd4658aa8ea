"""``trine infer`` (alias ``run``): a program's outputs on a device or from the reference."""

from __future__ import annotations

import argparse
import sys

from trine.cli.common import (
    HelpFormatter,
    ProgressBar,
    UsageError,
    add_device_options,
    load_npy,
    read_program,
    write_npy,
)

__all__ = ["add_parsers"]


def _infer(args: argparse.Namespace) -> int:
    import numpy as np

    program = read_program(args.program)
    x = load_npy(args.input, "--input", kinds="iuf", what="numbers")
    if x.dtype.kind == "f" and program.input_scale is None:
        raise UsageError(f"input {args.input} is float but {args.program} has no input_scale "
                         "to quantise it with; give int8 inputs")
    if args.backend == "reference":
        y = program.run_reference(x)
        note = "reference model"
    else:
        if not args.port:
            raise UsageError("--port is required with --backend device")
        from trine.host.client import Client

        with Client(args.port, baud=args.baud, timeout=args.timeout) as client:
            client.load(program, progress=ProgressBar("loading", trace=False).transfer)
            y, cycles = client.infer_batch(x) if x.ndim == 2 else client.infer(x)
        note = f"device {args.port}, {sum(cycles)} cycles in {len(cycles)} run(s)"
    write_npy(args.output, np.asarray(y, np.int8))
    n = 1 if np.ndim(y) == 1 else len(y)
    print(f"wrote {args.output}: {n} output(s) of width {np.shape(y)[-1]} ({note})",
          file=sys.stderr)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``trine infer`` (and its alias ``trine run``) to the ``trine`` parser."""
    infer = sub.add_parser(
        "infer",
        aliases=["run"],
        help="run a program on inputs, on a device or the reference model",
        description="Load PROGRAM into the device at --port (a serial port such as "
        "/dev/ttyUSB1, or socket://127.0.0.1:PORT for the simulated device) and run it on "
        "every input of INPUT, or compute the same outputs in software with --backend "
        "reference. INPUT is a .npy array of shape (K,) or (N, K): int8 values are used as "
        "they are, floats are quantised with the program's input_scale. OUTPUT gets the "
        "int8 outputs, (M,) or (N, M).",
        epilog="examples:\n"
        "  trine infer --port socket://127.0.0.1:5555 --program net.trine --input x.npy "
        "--output y.npy\n"
        "  trine infer --backend reference --program net.trine --input x.npy --output y.npy",
        formatter_class=HelpFormatter,
    )
    infer.add_argument("--program", required=True, metavar="FILE", help="the .trine program")
    infer.add_argument("--input", required=True, metavar="X.npy", help="inputs, .npy")
    infer.add_argument("--output", required=True, metavar="Y.npy",
                       help="where to write the outputs, .npy")
    infer.add_argument("--backend", choices=["device", "reference"], default="device",
                       help="device (the default; needs --port) or reference (the bit-exact "
                       "integer model in software)")
    add_device_options(infer)
    infer.set_defaults(func=_infer)
