"""``trine regions``: count exactly the linear regions of a network along a line or in a plane."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from trine.cli.common import (
    HelpFormatter,
    UsageError,
    file_access,
    positive_float,
    positive_int,
    write_file,
)

__all__ = ["add_parsers"]


def _shape(text: str) -> list[int]:
    try:
        widths = [int(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated layer widths such as 2,16,16,1, not {text!r}") from None
    if len(widths) < 2 or min(widths) < 1:
        raise argparse.ArgumentTypeError(
            f"needs at least two widths >= 1 (input, ..., output), not {text!r}")
    return widths


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), not {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), not {text}")
    return value


def _vector(text: str, k: int, name: str) -> Any:
    """A point or direction: comma-separated numbers, one number for every coordinate, or
    a .npy file."""
    import numpy as np

    from trine.cli.common import load_npy

    if text.endswith(".npy"):
        v = np.asarray(load_npy(text, name, kinds="iuf", what="numbers"), np.float64).ravel()
    else:
        try:
            v = np.array([float(x) for x in text.split(",")])
        except ValueError:
            raise UsageError(f"{name}: {text!r} is not a comma-separated list of numbers or a "
                             ".npy file") from None
        if v.size == 1 and k > 1:
            v = np.full(k, v[0])
    if v.size != k:
        raise UsageError(f"{name} has {v.size} values; the network has {k} inputs")
    if not np.all(np.isfinite(v)):
        raise UsageError(f"{name} must be finite")
    return v


def _network(args: argparse.Namespace):
    from trine.host import regions

    if (args.source is None) == (args.random is None):
        raise UsageError("give a PROGRAM.trine or MODEL.onnx, or --random SHAPE (one of them)")
    if args.calib is not None and not (args.source or "").endswith(".onnx"):
        raise UsageError("--calib applies to an .onnx model only")
    if args.source is None:
        return regions.random_network(args.random, ternary=not args.float,
                                      sparsity=args.sparsity, scale=args.scale,
                                      bias_std=args.bias_std, alternate=args.alternate,
                                      seed=args.seed)
    if args.float or args.alternate:
        raise UsageError(f"{'--float' if args.float else '--alternate'} applies to --random "
                         "networks only")
    if not os.path.exists(args.source):
        raise UsageError(f"no such file: {args.source}")
    if args.source.endswith(".onnx"):
        calib = None
        if args.calib is not None:
            from trine.cli.common import load_npy

            calib = load_npy(args.calib, "--calib", kinds="iuf", what="numbers")
        with file_access(f"read {args.source}"):
            return regions.from_onnx(args.source, calib)
    from trine.cli.common import read_program

    return regions.from_program(read_program(args.source), source=args.source)


def _regions(args: argparse.Namespace) -> int:
    import dataclasses

    import numpy as np

    from trine.host import regions

    net = _network(args)
    if args.range is not None:
        lo, hi = args.range
        if not lo < hi:
            raise UsageError(f"--range needs LO < HI, not {lo:g} {hi:g}")
        net = dataclasses.replace(net, box=(lo, hi))
    if args.extent is not None and args.slice is None:
        raise UsageError("--extent goes with --slice")
    rng = np.random.default_rng(args.seed)
    k = net.input_width
    record: dict[str, Any] = {"source": net.source, "input_shape": list(net.input_shape),
                              "relu_units": net.neurons, "seed": args.seed,
                              "limit": args.limit}
    if args.random is not None:
        record["network"] = {"shape": args.random, "ternary": not args.float,
                             "sparsity": args.sparsity if not args.float else None,
                             "scale": args.scale, "bias_std": args.bias_std,
                             "alternate": args.alternate}
    if args.slice is not None or args.plane:
        if args.slice is not None:
            if args.extent is None:
                raise UsageError("--slice needs --extent R (the square |u|, |v| <= R)")
            a, d1, d2 = (_vector(t, k, n) for t, n in zip(args.slice, ("A", "D1", "D2"),
                                                          strict=True))
            extent = args.extent
            how = "given"
        else:
            a, d1, d2, extent = regions.random_plane(net, rng)
            how = f"random (seed {args.seed}) through the centre of the box {net.box}"
        result = regions.count_slice(net, a, d1, d2, extent, limit=args.limit)
        record.update(mode="slice", slice=how, a=a.tolist(), d1=d1.tolist(), d2=d2.tolist(),
                      extent=float(extent))
        where = f"in the {2 * extent:g} x {2 * extent:g} slice"
    else:
        if args.line is not None:
            a, b = (_vector(t, k, n) for t, n in zip(args.line, ("A", "B"), strict=True))
            how = "given"
        else:
            a, b = regions.random_chord(net, rng)
            how = f"random chord (seed {args.seed}) of the box {net.box}"
        result = regions.count_line(net, a, b, limit=args.limit)
        record.update(mode="line", line=how, a=a.tolist(), b=b.tolist(),
                      breaks=result.region_breaks.tolist())
        where = "along the segment"
    record = {"regions": result.regions, "activation_regions": result.activation_regions,
              **record}
    print(f"{result.regions} linear regions ({result.activation_regions} activation regions) "
          f"{where} ({record.get('line', record.get('slice'))}) of {net.source}",
          file=sys.stdout)
    if args.json:
        write_file(args.json, json.dumps(record, indent=2) + "\n")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``trine regions`` to the ``trine`` parser."""
    from trine.host.regions import DEFAULT_LIMIT

    p = sub.add_parser(
        "regions",
        help="count exactly the linear regions of a network along a line or in a 2-D slice",
        description="Count exactly (no sampling) the linear regions of a network's "
        "real-valued function along a segment a + t (b - a), t in [0, 1], or in a 2-D slice "
        "a + u d1 + v d2, |u|, |v| <= R. For a .trine program the function is the integer "
        "path's real-valued counterpart: (trits @ y + bias) / 2**shift, ReLU, on the int8 "
        "input values taken as reals, without the rounding and the int8 clip. An .onnx model "
        "is counted as the float network it computes, or with --calib as the program "
        "trine's importer makes of it. --random builds a network of the given widths: ternary "
        "(trits with --sparsity zeros times a per-layer scale) or, with --float, Gaussian.\n"
        "\n"
        "By default the segment is a random chord of the input box: the line through two "
        "uniform random points of the box (from --seed), extended to the box's boundary; the "
        "box is every coordinate in the int8 input range [-128, 127] for a program and "
        "[-1, 1] for an ONNX model or a random network (--range changes it).\n"
        "\n"
        "Two counts are printed: linear regions (adjacent pieces with one affine map of the "
        "whole input space merged: the regions the segment or slice meets) and activation "
        "regions (pieces of constant ReLU on/off and max-pool pattern).",
        epilog="examples:\n"
        "  trine regions digits.trine\n"
        "  trine regions --random 2,16,16,1 --seed 3 --json r.json\n"
        "  trine regions --random 2,16,16,1 --float --plane\n"
        "  trine regions net.trine --line 0 127 (every coordinate 0, then 127)\n"
        "  trine regions model.onnx --slice 0 a.npy b.npy --extent 2\n"
        "\n"
        "A vector is comma-separated numbers, one number for every coordinate, or a .npy "
        "file.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("source", nargs="?", metavar="PROGRAM.trine|MODEL.onnx",
                   help="the network to count (or --random)")
    p.add_argument("--calib", metavar="X.npy",
                   help="with an .onnx model: import it as trine import does (its defaults) "
                   "on these calibration inputs and count the ternary program instead of the "
                   "float network")
    net = p.add_argument_group("random network")
    net.add_argument("--random", type=_shape, metavar="SHAPE",
                     help="a random dense network of these widths, e.g. 2,16,16,1 (ReLU on "
                     "the hidden layers)")
    net.add_argument("--float", action="store_true",
                     help="Gaussian float weights N(0, 2/fan_in) instead of trits")
    net.add_argument("--alternate", action="store_true",
                     help="ReLU on the even-numbered hidden layers only, the odd-numbered "
                     "linear (the lower-bound paper's architecture)")
    net.add_argument("--sparsity", type=_fraction, default=0.5, metavar="P",
                     help="fraction of zero trits (default 0.5)")
    net.add_argument("--scale", type=positive_float, metavar="S",
                     help="the trits' per-layer scale (default sqrt(2 / (fan_in (1 - P))), "
                     "He initialisation's variance)")
    net.add_argument("--bias-std", type=float, default=1.0, metavar="S",
                     help="biases N(0, S^2) (default 1)")
    net.add_argument("--seed", type=int, default=0, metavar="S",
                     help="seed of the random network and of the random segment or slice "
                     "(default 0)")
    where = p.add_argument_group("where to count").add_mutually_exclusive_group()
    where.add_argument("--line", nargs=2, metavar=("A", "B"),
                       help="the segment from A to B")
    where.add_argument("--slice", nargs=3, metavar=("A", "D1", "D2"),
                       help="the slice A + u D1 + v D2 (with --extent)")
    where.add_argument("--plane", action="store_true",
                       help="a random slice through the box's centre along two random "
                       "orthonormal directions, extent half the box's side")
    p.add_argument("--extent", type=positive_float, metavar="R",
                   help="the slice's half side: |u|, |v| <= R")
    p.add_argument("--range", nargs=2, type=float, metavar=("LO", "HI"),
                   help="the input box for the random segment or slice")
    p.add_argument("--limit", type=positive_int, default=DEFAULT_LIMIT, metavar="N",
                   help=f"most pieces held at once; more is an error (default {DEFAULT_LIMIT:,})")
    p.add_argument("--json", metavar="FILE",
                   help='write {"regions": N, "activation_regions": M, ...settings...}')
    p.set_defaults(func=_regions)
