"""``trine train`` and ``trine eval``: from a data set to a program, and its measured accuracy.

``host.cli.build_parser`` calls :func:`add_parsers`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["add_parsers"]


def _cli_error(message: str) -> Exception:
    from host.cli import CLIError

    return CLIError(message)


def _load_labelled(args: argparse.Namespace):
    """(x, y, description) from --data/--split or --input/--labels."""
    import numpy as np

    if args.input or args.labels:
        if not (args.input and args.labels):
            raise _cli_error("--input and --labels go together")
        try:
            x = np.load(args.input, allow_pickle=False)
            y = np.load(args.labels, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise _cli_error(f"cannot read {args.input} / {args.labels}: {e}") from None
        if x.dtype.kind not in "iuf":
            raise _cli_error(f"{args.input} must hold numbers, not dtype {x.dtype}")
        return x, y, f"{args.input} ({len(x)} samples)"
    from host.data import load_dataset

    x_tr, y_tr, x_te, y_te = load_dataset(args.data)
    x, y = (x_te, y_te) if args.split == "test" else (x_tr, y_tr)
    return x, y, f"{args.data} {args.split} split ({len(x)} samples)"


def _cmd_eval(args: argparse.Namespace) -> int:
    from host.cli import _progress_bar
    from host.evaluate import evaluate
    from host.program import Program
    from host.transport import LinkError

    program = Program.load(args.program)
    x, y, what = _load_labelled(args)
    if x.dtype.kind == "f" and program.input_scale is None:
        raise _cli_error(f"{args.program} has no input_scale to quantise float inputs with")
    if args.backend == "device" and not args.port:
        raise _cli_error("--port is required with --backend device")
    try:
        ev = evaluate(program, x, y, backend=args.backend, url=args.port, baud=args.baud,
                      timeout=args.timeout, load_progress=_progress_bar("loading"))
    except LinkError as e:
        raise _cli_error(str(e)) from None
    print(f"{args.program} on {what}")
    if ev.backend == "reference":
        print(f"accuracy (bit-exact reference): {ev.accuracy:.2%}")
    else:
        d = ev.device
        print(f"device {args.port}: {d['lanes']} lanes x {d['rows']} rows at "
              f"{d['clock_hz'] / 1e6:g} MHz")
        print(f"loaded {d['weights']:,} weights: {d['wire_bytes_sent']:,} bytes in {d['frames']} "
              f"frames, {d['bits_per_weight']:.3f} bits per weight on the wire")
        print(f"accuracy on the device: {ev.accuracy:.2%} (reference {ev.reference_accuracy:.2%})")
        print(f"device == reference on {ev.samples - ev.mismatches} of {ev.samples} samples")
        print(f"cycles per inference: {d['latency_cycles']} alone, "
              f"{d['cycles_per_inference']:.1f} in batches of up to {d['max_batch']}")
    if args.json:
        from host.fileio import write_atomic

        write_atomic(args.json, json.dumps(ev.to_json(), indent=2) + "\n")
    if not ev.bit_exact:
        print(f"trine: error: the device differs from the reference on {ev.mismatches} samples",
              file=sys.stderr)
        return 3
    return 0


def add_parsers(sub: Any) -> None:
    """Add ``train`` and ``eval`` to the ``trine`` parser."""
    from host.data import DATASETS

    ev = sub.add_parser(
        "eval",
        help="accuracy of a program on labelled data, in software or on a device",
        description="Run PROGRAM on a labelled data set and print its accuracy. With --backend "
        "reference the bit-exact integer model computes the outputs; with --backend device the "
        "program is streamed to the device at --port and every output is also checked against "
        "the reference (exit status 3 if any differs). Data: a bundled set (--data, --split) or "
        "your own .npy files (--input X.npy --labels Y.npy: X floats (N, K) in the units the "
        "program was trained on, or int8; Y class indices (N,)).",
    )
    ev.add_argument("--program", required=True, help="the .trine program")
    ev.add_argument("--data", choices=DATASETS, default="digits",
                    help="bundled data set (default digits)")
    ev.add_argument("--split", choices=["test", "train"], default="test")
    ev.add_argument("--input", help="inputs .npy (instead of --data)")
    ev.add_argument("--labels", help="labels .npy, with --input")
    ev.add_argument("--backend", choices=["reference", "device"], default="reference")
    ev.add_argument("--port", help="device URL: /dev/ttyUSBx or socket://HOST:PORT")
    ev.add_argument("--baud", type=int, default=3_000_000, help="UART baud (default 3M)")
    ev.add_argument("--timeout", type=float, default=2.0,
                    help="seconds to wait for each answer before retrying (default 2)")
    ev.add_argument("--json", help="also write the figures to this JSON file")
    ev.set_defaults(func=_cmd_eval)
