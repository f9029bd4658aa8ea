"""``trine eval``: a program's accuracy on labelled data, from the reference or a device."""

from __future__ import annotations

import argparse
import json
import sys

from trine.cli.common import (
    HelpFormatter,
    ProgressBar,
    UsageError,
    add_device_options,
    load_npy,
    optional_dependency,
    read_program,
    write_file,
)

__all__ = ["add_parsers", "MISMATCH_STATUS"]

#: Exit status when the device answered, but not what the reference computes.
MISMATCH_STATUS = 3


def _load_labelled(args: argparse.Namespace):
    """(x, y, description) from --data/--split or --input/--labels."""
    if args.input or args.labels:
        if not (args.input and args.labels):
            raise UsageError("--input and --labels go together")
        x = load_npy(args.input, "--input", kinds="iuf", what="numbers")
        y = load_npy(args.labels, "--labels")
        return x, y, f"{args.input} ({len(x)} samples)"
    from trine.host.data import load_dataset

    with optional_dependency(f"trine eval --data {args.data}", "train"):
        x_tr, y_tr, x_te, y_te = load_dataset(args.data)
    x, y = (x_te, y_te) if args.split == "test" else (x_tr, y_tr)
    return x, y, f"{args.data} {args.split} split ({len(x)} samples)"


def _eval(args: argparse.Namespace) -> int:
    from trine.host.evaluate import evaluate

    program = read_program(args.program)
    x, y, what = _load_labelled(args)
    if x.dtype.kind == "f" and program.input_scale is None:
        raise UsageError(f"{args.program} has no input_scale to quantise float inputs with")
    if args.backend == "device" and not args.port:
        raise UsageError("--port is required with --backend device")
    ev = evaluate(program, x, y, backend=args.backend, url=args.port, baud=args.baud,
                  timeout=args.timeout,
                  load_progress=ProgressBar("loading", trace=False).transfer)
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
        print(f"MACs per inference: {d['macs_per_inference']:,}; MACs per cycle: "
              f"{d['latency_macs_per_cycle']:.1f} alone, {d['macs_per_cycle']:.1f} over "
              f"{d['runs']} run(s), of {d['peak_macs_per_cycle']} (lanes x rows)")
    if args.json:
        write_file(args.json, json.dumps(ev.to_json(), indent=2) + "\n")
    if not ev.bit_exact:
        print(f"trine: error: the device differs from the reference on {ev.mismatches} samples",
              file=sys.stderr)
        return MISMATCH_STATUS
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``trine eval`` to the ``trine`` parser."""
    from trine.host.data import DATASETS

    ev = sub.add_parser(
        "eval",
        help="accuracy of a program on labelled data, in software or on a device",
        formatter_class=HelpFormatter,
        description="Run PROGRAM on a labelled data set and print its accuracy. With --backend "
        "reference the bit-exact integer model computes the outputs; with --backend device the "
        "program is streamed to the device at --port and every output is also checked against "
        f"the reference (exit status {MISMATCH_STATUS} if any differs). Data: a bundled set "
        "(--data, --split) or your own .npy files (--input X.npy --labels Y.npy: X floats "
        "(N, K) in the units the program was trained on, or int8; Y class indices (N,)).",
        epilog="--json with --backend device: besides accuracy, reference_accuracy, "
        "mismatches, samples and seconds, the object 'device' holds the device's INFO (lanes, "
        "rows, clock_hz, baud, max_batch), the load (weights, payload_bytes, wire_bytes_sent, "
        "frames, retries, bits_per_weight), the inferences' link traffic (infer_wire_bytes, "
        "infer_retries) and what the array did, from the device's own cycle counter: cycles "
        "(all runs), runs, cycles_per_inference, latency_cycles (one sample alone); "
        "macs_per_inference (dense K x M; convolution C_out x C_in x kernel x output positions; "
        "pooling and flatten 0), layer_macs (per layer), macs (all samples), macs_per_cycle, "
        "peak_macs_per_cycle (lanes x rows), run_samples, run_cycles, run_macs_per_cycle (per "
        "run) and latency_macs_per_cycle.\n\n"
        "examples:\n"
        "  trine eval --program digits.trine\n"
        "  trine eval --program digits.trine --backend device --port socket://127.0.0.1:5555\n"
        "  trine eval --program m.trine --input x.npy --labels y.npy --json e.json",
    )
    ev.add_argument("--program", required=True, metavar="FILE", help="the .trine program")
    ev.add_argument("--data", choices=DATASETS, default="digits",
                    help="bundled data set (default digits)")
    ev.add_argument("--split", choices=["test", "train"], default="test",
                    help="which split of --data (default test)")
    ev.add_argument("--input", metavar="X.npy", help="inputs .npy (instead of --data)")
    ev.add_argument("--labels", metavar="Y.npy", help="labels .npy, with --input")
    ev.add_argument("--backend", choices=["reference", "device"], default="reference",
                    help="reference (the default: the bit-exact integer model) or device "
                    "(needs --port)")
    add_device_options(ev)
    ev.add_argument("--json", metavar="FILE", help="also write the figures to this JSON file")
    ev.set_defaults(func=_eval)
