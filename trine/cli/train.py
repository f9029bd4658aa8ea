"""``trine train`` and ``trine eval``: from a data set to a program, and its measured accuracy.

``trine.cli.main.build_parser`` calls :func:`add_parsers`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["add_parsers"]


def _cli_error(message: str) -> Exception:
    from trine.cli.main import CLIError

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
    from trine.host.data import load_dataset

    x_tr, y_tr, x_te, y_te = load_dataset(args.data)
    x, y = (x_te, y_te) if args.split == "test" else (x_tr, y_tr)
    return x, y, f"{args.data} {args.split} split ({len(x)} samples)"


def _parse_hidden(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(v) for v in text.split(",") if v.strip() != "")
    except ValueError:
        raise _cli_error(f"--hidden must be comma-separated widths such as 64 or 256,256, "
                         f"not {text!r}") from None
    if any(w < 1 for w in widths):
        raise _cli_error(f"--hidden widths must be >= 1, not {text!r}")
    return widths


def _cmd_train(args: argparse.Namespace) -> int:
    from trine.host.data import load_dataset
    from trine.host.results import progress_printer

    x_tr, y_tr, x_te, y_te = load_dataset(args.data)
    progress = None if args.quiet else progress_printer
    settings: dict[str, Any] = {"seed": args.seed}
    if args.hidden is not None:
        settings["hidden"] = _parse_hidden(args.hidden)

    if args.method == "qat":
        from trine.host.qat import DEFAULTS, train_float_mlp, train_qat

        qat_kw = {**DEFAULTS.get(args.data, {}).get("qat", {}), **settings}
        if args.epochs is not None:
            qat_kw["epochs"] = args.epochs
        if args.budget is not None:
            qat_kw["time_budget_s"] = args.budget
        train = train_qat
        kw = qat_kw
    else:
        from trine.host.evolve import HIDDEN, train_evolve
        from trine.host.qat import DEFAULTS, train_float_mlp

        # evolution's measured shape per data set (the float MLP is trained at the same one)
        kw = {"hidden": HIDDEN.get(args.data, (64,)), "budget_s": 60.0, **settings}
        if args.budget is not None:
            kw["budget_s"] = args.budget
        if args.generations is not None:
            kw["max_generations"] = args.generations
            if args.budget is None:
                kw["budget_s"] = None
        train = train_evolve
    hidden = kw.get("hidden", (64,))

    float_mlp = None
    if not args.no_float:
        float_kw = {**DEFAULTS.get(args.data, {}).get("float", {}), "hidden": hidden,
                    "seed": args.seed}
        float_mlp = train_float_mlp(x_tr, y_tr, x_test=x_te, y_test=y_te,
                                    progress=progress and progress("float MLP"), **float_kw)
    result = train(x_tr, y_tr, x_test=x_te, y_test=y_te,
                   progress=progress and progress(args.method), **kw)
    if float_mlp is not None:
        result.metrics["float_test_acc"] = float_mlp.metrics.get("test_acc")
        result.metrics["float_train_acc"] = float_mlp.metrics.get("train_acc")
        result.settings["float"] = float_mlp.settings

    program = result.program
    program.save(args.output)
    shape = "-".join(str(w) for w in [program.input_width, *hidden, program.output_width])
    m = result.metrics
    print(f"{args.data}: {len(y_tr)} training / {len(y_te)} test samples; MLP {shape}")
    if float_mlp is not None:
        print(f"float MLP (same shape):            test accuracy {m['float_test_acc']:.2%}")
    print(f"ternary {args.method} program (reference): test accuracy {m['test_acc']:.2%}, "
          f"train {m['train_acc']:.2%}, {m.get('seconds', 0):.1f} s")
    stats = program.stats()
    sp = ", ".join(f"{s:.0%}" for s in stats.get("sparsity", []))
    print(f"wrote {args.output}: {stats.get('weights', 0):,} weights, sparsity per layer {sp}")
    if args.json:
        result.save_json(args.json)
        print(f"wrote {args.json}")
    if args.curve:
        from trine.host.curves import plot_curves

        baselines = {"float MLP": m["float_test_acc"]} if float_mlp is not None else None
        curves = {args.method: result.history}
        if float_mlp is not None:
            curves["float MLP"] = float_mlp.history
        plot_curves(args.curve, curves, title=f"{args.data}, MLP {shape}", baselines=baselines)
        print(f"wrote {args.curve}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from trine.cli.main import _progress_bar
    from trine.host.evaluate import evaluate
    from trine.host.program import Program
    from trine.host.transport import LinkError

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
        from trine.contract.fileio import write_atomic

        write_atomic(args.json, json.dumps(ev.to_json(), indent=2) + "\n")
    if not ev.bit_exact:
        print(f"trine: error: the device differs from the reference on {ev.mismatches} samples",
              file=sys.stderr)
        return 3
    return 0


def add_parsers(sub: Any) -> None:
    """Add ``train`` and ``eval`` to the ``trine`` parser."""
    from trine.host.data import DATASETS

    tr = sub.add_parser(
        "train",
        help="train a ternary MLP on a bundled data set and write a .trine program",
        description="Train a ternary MLP and write the integer program the device runs. "
        "--method qat: quantisation-aware training with straight-through gradients, the "
        "device's integer arithmetic in the loop; --method evolve: gradient-free evolution of "
        "the ternary weights themselves. Unless --no-float, a float MLP of the same shape is "
        "trained too, for comparison. Every accuracy printed for the ternary program is the "
        "bit-exact reference's, i.e. what the device returns. Each data set has measured "
        "default settings (host/qat.py, host/evolve.py DEFAULTS); the options override them. "
        "Example: trine train --data digits -o digits.trine --curve digits.png",
    )
    tr.add_argument("--data", choices=DATASETS, default="digits",
                    help="digits (scikit-learn, 8x8) or mnist1d (generated locally); "
                    "default digits")
    tr.add_argument("--method", choices=["qat", "evolve"], default="qat")
    tr.add_argument("--hidden", help="hidden widths, e.g. 64 or 256,256 (default per data set)")
    tr.add_argument("--epochs", type=int, help="QAT epochs (default per data set)")
    tr.add_argument("--budget", type=float,
                    help="wall-clock budget in seconds (evolve; also caps QAT)")
    tr.add_argument("--generations", type=int,
                    help="evolve: stop after this many generations (reproducible on any machine)")
    tr.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    tr.add_argument("--no-float", action="store_true", help="skip the float MLP baseline")
    tr.add_argument("-o", "--output", required=True, help="the .trine program to write")
    tr.add_argument("--json", help="write settings, metrics and history to this JSON file")
    tr.add_argument("--curve", help="write accuracy vs time to this PNG")
    tr.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    tr.set_defaults(func=_cmd_train)

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
