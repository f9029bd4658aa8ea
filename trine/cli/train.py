"""``trine train``: from a bundled data set to a ternary program, with its accuracy."""

from __future__ import annotations

import argparse
from typing import Any

from trine.cli.common import (
    HelpFormatter,
    ProgressBar,
    UsageError,
    file_access,
    optional_dependency,
)

__all__ = ["add_parsers"]


def _parse_hidden(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(v) for v in text.split(",") if v.strip() != "")
    except ValueError:
        raise UsageError(f"--hidden must be comma-separated widths such as 64 or 256,256, "
                         f"not {text!r}") from None
    if any(w < 1 for w in widths):
        raise UsageError(f"--hidden widths must be >= 1, not {text!r}")
    return widths


def _train(args: argparse.Namespace) -> int:
    from trine.host.data import load_dataset

    with optional_dependency(f"trine train --data {args.data}", "train"):
        x_tr, y_tr, x_te, y_te = load_dataset(args.data)
    progress = None if args.quiet else ProgressBar
    settings: dict[str, Any] = {"seed": args.seed}
    if args.hidden is not None:
        settings["hidden"] = _parse_hidden(args.hidden)

    from trine.host.qat import DEFAULTS, train_float_mlp

    cnn = args.model == "cnn" or args.arch is not None
    if cnn and args.hidden is not None:
        raise UsageError("--hidden is for an MLP; give a convolutional network with --arch")
    island = [o for o in ("islands", "workers", "ray", "migrate_every")
              if getattr(args, o) is not None]
    if island and args.method != "evolve":
        raise UsageError(f"--{island[0].replace('_', '-')} is for --method evolve")
    if args.ternary_act and args.method != "qat":
        raise UsageError("--ternary-act is for --method qat")
    if args.method == "qat":
        from trine.host.qat import train_qat

        kw = {**DEFAULTS.get(args.data, {}).get("cnn" if cnn else "qat", {}), **settings}
        if cnn:
            kw.pop("hidden", None)
            if args.arch is not None:
                from trine.host.data import INPUT_SHAPES

                kw["arch"] = args.arch
                kw["input_shape"] = INPUT_SHAPES[args.data]
        if args.epochs is not None:
            kw["epochs"] = args.epochs
        if args.budget is not None:
            kw["time_budget_s"] = args.budget
        if args.ternary_act:
            kw["act"] = "ternary" if args.ternary_act == "all" else "ternary-inner"
        train = train_qat
    else:
        from trine.host.evolve import HIDDEN, train_evolve

        # evolution's measured shape per data set (the float MLP is trained at the same one)
        kw = {"hidden": HIDDEN.get(args.data, (64,)), "budget_s": 60.0, **settings}
        if cnn:
            from trine.host.data import INPUT_SHAPES

            del kw["hidden"]
            kw["arch"] = args.arch or DEFAULTS[args.data]["cnn"]["arch"]
            kw["input_shape"] = INPUT_SHAPES[args.data]
        if args.budget is not None:
            kw["budget_s"] = args.budget
        if args.generations is not None:
            kw["max_generations"] = args.generations
            if args.budget is None:
                kw["budget_s"] = None
        for option, name in (("islands", "islands"), ("workers", "workers"),
                             ("ray", "ray_address"), ("migrate_every", "migrate_every")):
            if getattr(args, option) is not None:
                kw[name] = getattr(args, option)
        train = train_evolve
    hidden = kw.get("hidden", (64,))

    float_mlp = None
    with optional_dependency(f"trine train --method {args.method}", "train"):
        if not args.no_float and not cnn:
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
    with file_access(f"write {args.output}"):
        program.save(args.output)
    if cnn:
        shape = f"CNN {kw['arch']} on {tuple(kw['input_shape'])}"
    else:
        shape = "MLP " + "-".join(str(w) for w in [program.input_width, *hidden,
                                                    program.output_width])
    m = result.metrics
    print(f"{args.data}: {len(y_tr)} training / {len(y_te)} test samples; {shape}")
    if float_mlp is not None:
        print(f"float MLP (same shape):            test accuracy {m['float_test_acc']:.2%}")
    print(f"ternary {args.method} program (reference): test accuracy {m['test_acc']:.2%}, "
          f"train {m['train_acc']:.2%}, {m.get('seconds', 0):.1f} s")
    stats = program.stats()
    sp = ", ".join(f"{s:.0%}" for s in stats.get("sparsity", []))
    print(f"wrote {args.output}: {stats.get('weights', 0):,} weights, sparsity per layer {sp}")
    if args.json:
        with file_access(f"write {args.json}"):
            result.save_json(args.json)
        print(f"wrote {args.json}")
    if args.curve:
        with optional_dependency("trine train --curve", "train"):
            from trine.host.curves import plot_curves

        baselines = {"float MLP": m["float_test_acc"]} if float_mlp is not None else None
        curves = {args.method: result.history}
        if float_mlp is not None:
            curves["float MLP"] = float_mlp.history
        with optional_dependency("trine train --curve", "train"), \
                file_access(f"write {args.curve}"):
            plot_curves(args.curve, curves, title=f"{args.data}, {shape}",
                        baselines=baselines)
        print(f"wrote {args.curve}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``trine train`` to the ``trine`` parser."""
    from trine.host.data import DATASETS

    tr = sub.add_parser(
        "train",
        help="train a ternary MLP or CNN on a bundled data set and write a .trine program",
        formatter_class=HelpFormatter,
        description="Train a ternary MLP or CNN and write the integer program the device runs. "
        "--method qat: quantisation-aware training with straight-through gradients, the "
        "device's integer arithmetic in the loop; --method evolve: gradient-free evolution of "
        "the ternary weights themselves. Unless --no-float, a float MLP of the same shape is "
        "trained too, for comparison. Every accuracy printed for the ternary program is the "
        "bit-exact reference's, i.e. what the device returns. Each data set has measured "
        "default settings (host/qat.py, host/evolve.py DEFAULTS); the options override them.",
        epilog="examples:\n"
        "  trine train --data digits -o digits.trine --curve digits.png\n"
        "  trine train --data mnist1d --method evolve --generations 200 -o m.trine\n"
        "  trine train --data mnist1d --model cnn -o cnn.trine\n"
        "  trine train --data digits --arch c8k3p1,m2,d32 --epochs 20 -o small.trine\n"
        "then: trine eval --program digits.trine",
    )
    tr.add_argument("--data", choices=DATASETS, default="digits",
                    help="digits (scikit-learn, 8x8) or mnist1d (generated locally); "
                    "default digits")
    tr.add_argument("--method", choices=["qat", "evolve"], default="qat",
                    help="qat (the default) or evolve")
    tr.add_argument("--model", choices=["mlp", "cnn"], default="mlp",
                    help="mlp (the default) or cnn: a convolutional network of the "
                    "data set's measured default shape, or the one --arch gives")
    tr.add_argument("--arch", metavar="LAYERS",
                    help="a convolutional network, comma-separated layers applied in order to "
                    "the data set's samples (digits 1 x 8 x 8, mnist1d 1 x 40), a classifier "
                    "appended: c<C>k<k>[s<s>][p<p>] convolution of C channels, kernel k, "
                    "stride s, zero padding p (2-D: k3 is 3x3, k3x2 is 3 x 2); m<k> max-pool "
                    "(kernel = stride); d<M> dense of M outputs; f flatten (added by itself "
                    "before a dense layer). E.g. c64k5s2p1,c64k3s2p1,c64k3s2p1 or "
                    "c16k3p1,m2,c32k3p1,m2,d64. Implies --model cnn")
    tr.add_argument("--hidden", help="hidden widths, e.g. 64 or 256,256 (default per data set)")
    tr.add_argument("--epochs", type=int, help="QAT epochs (default per data set)")
    tr.add_argument("--budget", type=float,
                    help="wall-clock budget in seconds (evolve; also caps QAT)")
    tr.add_argument("--generations", type=int,
                    help="evolve: stop after this many generations (reproducible on any machine)")
    isl = tr.add_argument_group(
        "evolution at scale (--method evolve, MLPs)",
        "the island search: ISLANDS searches that all continue from the fittest every "
        "--migrate-every generations, on Ray workers (pip install 'trine[ray]'); the result "
        "depends on --seed and --islands, never on the number of workers")
    isl.add_argument("--islands", type=int, metavar="N",
                     help="searches run side by side (default 4 with --workers or --ray)")
    where = isl.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, metavar="N",
                       help="evaluate the islands on N local Ray worker processes")
    where.add_argument("--ray", metavar="ADDRESS",
                       help="... or on the Ray cluster at ADDRESS (auto, HOST:PORT, "
                            "ray://HOST:PORT)")
    isl.add_argument("--migrate-every", type=int, metavar="G",
                     help="generations between migrations (default 500)")
    tr.add_argument("--ternary-act", nargs="?", const="all", choices=["all", "inner"],
                    help="QAT with ternary activations: every layer but the last outputs trits "
                         "(a threshold per layer), so all but the first multiply trits by trits; "
                         "'inner': the first hidden layer's outputs stay int8 too; written as "
                         ".trine version 3")
    tr.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    tr.add_argument("--no-float", action="store_true", help="skip the float MLP baseline")
    tr.add_argument("-o", "--output", required=True, help="the .trine program to write")
    tr.add_argument("--json", help="write settings, metrics and history to this JSON file")
    tr.add_argument("--curve", help="write accuracy vs time to this PNG")
    tr.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    tr.set_defaults(func=_train)
