"""``trine import``: an ONNX network (an MLP or a CNN) as a ternary program (``.trine``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from trine.cli.common import (
    ProgressBar,
    UsageError,
    file_access,
    load_npy,
    optional_dependency,
    positive_int,
)
from trine.contract.network import layer_kind

__all__ = ["add_parsers"]

_DESCRIPTION = """\
Read a network from an ONNX file (scikit-learn's MLPClassifier through skl2onnx, or a PyTorch
model through torch.onnx.export: Linear, Conv1d/Conv2d, BatchNorm, ReLU, MaxPool with kernel =
stride, Flatten), ternarise its weights and fold the scales into the integer program the device
runs (trine.host.onnx_import, trine.host.ternarize, trine.host.ptq). A BatchNormalization is
folded into the layer before it. A Brevitas model exported as QONNX (ternary weight Quant
nodes, activation Quant nodes of 8 bits or fewer) is read as it is: its trits are its own
(trine.host.qonnx_import).

The program outputs the last layer's logits: a classifier output after it (Softmax, ArgMax,
skl2onnx's ZipMap and labels) is stripped, its argmax is the same class. The layers' scales,
shifts and (with --method gptq, the default) trits are chosen from calibration inputs, so
--calib is required: a few hundred training inputs as a float .npy, flat (N, K) or shaped like
the model's input (N, C, L) or (N, C, H, W), in the units the device will get (not rescaled).
No labels are needed. A QONNX model (Brevitas) whose quantisers give every scale needs none:
its trits and scales are read, not chosen.

--distill then fine-tunes the program with the project's QAT (the device's integer path in the
loop) to reproduce the float model's predictions on the calibration inputs and on mixtures of
them, which the float model labels (trine.host.distill); reproducible with --seed.

The import checks itself: the program's top-1 agreement with the float model on the
calibration inputs and the correlation of their outputs (overall and after every layer) are
printed, and below 50% agreement nothing is written (unless --force) and the layer that loses
the most is named. With --eval, the agreement is measured on those inputs too (the fit never
saw them), and the accuracies of the float model and of the post-training and distilled
programs (the bit-exact reference of the device) are printed side by side.

Nothing is written when anything fails."""

_EPILOG = """\
example:
  trine import mlp.onnx -o mlp.trine --calib x_train.npy --eval x_test.npy y_test.npy
  trine import cnn.onnx -o cnn.trine --calib x_train.npy --distill --eval x_test.npy y_test.npy
  trine infer --backend reference --program mlp.trine --input x_test.npy --output y.npy"""


def _distill_default(name: str) -> Any:
    from trine.host.distill import DISTILL_DEFAULTS

    return DISTILL_DEFAULTS[name]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``trine import`` to the ``trine`` parser."""
    p = sub.add_parser(
        "import",
        help="import an ONNX network (MLP or CNN) as a ternary program (.trine)",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        # pre-wrapped paragraphs, kept as written
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL.onnx", help="the ONNX model to import")
    p.add_argument("-o", "--output", required=True, metavar="OUT.trine",
                   help="where to write the program")
    p.add_argument("--calib", metavar="X.npy",
                   help="calibration inputs, float (N, K) or shaped like the model's input: "
                   "required (except for a QONNX model whose quantisers give every scale), see "
                   "above; a CNN's dense layers see one row per input, so more inputs (a "
                   "thousand or more) fit it better")
    p.add_argument("--method", choices=["gptq", "twn", "absmean"], default="gptq",
                   help="ternariser: gptq (the default: each layer's trits, scale and bias "
                   "fitted to the float model's outputs on the calibration inputs, layer by "
                   "layer, with GPTQ's error feedback), twn (threshold 0.7 mean|W|) or absmean "
                   "(BitNet b1.58), which see the weights only")
    p.add_argument("--per-channel", action="store_true",
                   help="choose the TWN threshold per output row or channel (twn only)")
    p.add_argument("--input-scale", type=float, metavar="S",
                   help="input quantisation step: x becomes round(x / S) as int8 (default: the "
                   "largest calibration input maps to 127)")
    p.add_argument("--percentile", type=float, default=100.0, metavar="P",
                   help="size each layer's output range to this percentile of the calibration "
                   "activations, in (0, 100] (default 100, the maximum)")
    p.add_argument("--mixtures", type=int, default=0, metavar="K",
                   help="fit on K random mixtures of two calibration inputs per input too "
                   "(the float model's activations on them are the targets, no labels; drawn "
                   "with a fixed seed): more points for a few hundred inputs (default 0)")
    p.add_argument("--labels", metavar="A,B,...",
                   help="comma-separated output names (default: the model's class labels, if "
                   "it has them)")
    p.add_argument("--distill", action="store_true",
                   help="then fine-tune the program with QAT to mimic the float model on the "
                   "calibration inputs (no labels needed; see above)")
    p.add_argument("--epochs", type=positive_int, metavar="N",
                   help="distillation epochs (default "
                   f"{_distill_default('epochs')})")
    p.add_argument("--seed", type=int, metavar="S",
                   help="distillation seed: the same seed gives the same program (default 0)")
    p.add_argument("--force", action="store_true",
                   help="write the program even when it agrees with the float model on fewer "
                   "than half of the calibration inputs")
    p.add_argument("--eval", nargs=2, metavar=("X.npy", "Y.npy"),
                   help="labelled data to report accuracies on: float inputs (as --calib) and "
                   "class indices 0..M-1 (N,) as for trine eval, or class names if the program "
                   "has labels")
    p.set_defaults(func=_cmd_import)


def _eval_labels(y: Any, n: int, outputs: int, labels: tuple[str, ...] | None, flag: str):
    """Class indices from ``y``: integers 0..outputs-1, or names looked up in ``labels``."""
    import numpy as np

    if y.ndim != 1 or len(y) != n:
        raise UsageError(
            f"{flag} must have shape ({n},), one label per input, not {y.shape}"
        )
    if y.dtype.kind in "US":
        if labels is None:
            raise UsageError(
                f"{flag} holds class names but the program has no labels (give --labels)"
            )
        index = {name: j for j, name in enumerate(labels)}
        names = [v.decode() if isinstance(v, bytes) else str(v) for v in y.tolist()]
        unknown = sorted({v for v in names if v not in index})
        if unknown:
            raise UsageError(
                f"{flag} holds {unknown[0]!r}, which is not one of the labels "
                f"{', '.join(labels)}"
            )
        return np.array([index[v] for v in names], dtype=np.int64)
    if y.dtype.kind not in "iu":
        raise UsageError(f"{flag} must hold integer class indices, not dtype {y.dtype}")
    if len(y) and (y.min() < 0 or y.max() >= outputs):
        bad = int(y[(y < 0) | (y >= outputs)][0])
        raise UsageError(f"{flag} must hold class indices in 0..{outputs - 1}, not {bad}")
    return y.astype(np.int64)


def _parse_labels(text: str) -> list[str]:
    labels = [v.strip() for v in text.split(",")]
    if any(not v for v in labels):
        raise UsageError(f"--labels must be comma-separated non-empty names, not {text!r}")
    return labels


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _cmd_import(args: argparse.Namespace) -> int:
    with optional_dependency("trine import", "onnx"):
        from trine.host.onnx_import import read_onnx_network

        with file_access(f"read {args.model}"):
            net = read_onnx_network(args.model, read_labels=args.labels is None)
    from trine.host.import_check import check_program

    m = net.output_width
    exact = net.quantization is not None  # a QONNX model: trits and scales are its own
    if args.calib is None and (not exact or args.distill):
        dims = ", ".join(map(str, net.input_shape))
        why = ("--distill learns from them" if exact else "the layers' shifts are chosen from "
               "the activations of representative inputs")
        raise UsageError(
            f"--calib X.npy is required: {why} (a few hundred training inputs, float "
            f"(N, {dims}))"
        )
    calib = (None if args.calib is None else
             net.check_inputs(load_npy(args.calib, "--calib"), f"--calib {args.calib}"))
    labels = _parse_labels(args.labels) if args.labels is not None else None
    if labels is not None and len(labels) != m:
        raise UsageError(
            f"--labels has {len(labels)} names but {args.model} has {m} outputs"
        )
    if args.mixtures < 0:
        raise UsageError(f"--mixtures must be an integer >= 0, not {args.mixtures}")
    if not args.distill and (args.epochs is not None or args.seed is not None):
        raise UsageError("--epochs and --seed set the distillation: give --distill too")
    eval_data = None
    if args.eval:  # read before the work, so a bad file fails at once
        xf, yf = args.eval
        x = net.check_inputs(load_npy(xf, "--eval X"), f"--eval X {xf}")
        eval_data = (x, load_npy(yf, "--eval Y"))
    post = net.to_program(
        calib, method=args.method, per_channel=args.per_channel, input_scale=args.input_scale,
        percentile=args.percentile, labels=labels, calibration_name=f"--calib {args.calib}",
        mixtures=args.mixtures,
    )
    # the check runs on the calibration inputs (an exact QONNX import without them: on the
    # --eval inputs, or not at all)
    check_x = calib if calib is not None else (eval_data[0] if eval_data else None)

    def check(p):
        return None if check_x is None else check_program(net.layers, p, check_x)

    checks = [("post-training", post, check(post))]
    if args.distill:
        from trine.host.distill import DISTILL_DEFAULTS, distill

        epochs = DISTILL_DEFAULTS["epochs"] if args.epochs is None else args.epochs
        result = distill(post, net.forward, calib, epochs=epochs,
                         seed=0 if args.seed is None else args.seed,
                         progress=ProgressBar("distilling"))
        checks.append(("distilled", result.program, check(result.program)))
        args.selected_epoch = result.settings.get("selected_epoch")
    name, program, last = checks[-1]
    reason = None if last is None else last.refusal()
    if reason is not None and not args.force:
        hint = "" if args.distill else "; try --distill (fine-tunes it to the float model)"
        where = "calibration" if calib is not None else "--eval"
        reason = reason.replace("calibration inputs", f"{where} inputs")
        raise UsageError(f"{args.model}: {name} {reason.removeprefix('the ')}{hint}, or "
                         "--force to write it anyway")
    scores = None
    if eval_data is not None:
        x, y_raw = eval_data
        y = _eval_labels(y_raw, len(x), m, program.labels, f"--eval Y {args.eval[1]}")
        held = [(label, check_program(net.layers, p, x) if calib is not None else c)
                for label, p, c in checks]
        scores = (len(x), _accuracy(net.forward(x), y),
                  [(label, _accuracy(p.run_reference(x), y)) for label, p, _ in checks], held)
    with file_access(f"write {args.output}"):
        program.save(args.output)  # atomic; the last step, so a failure above writes nothing
    _print_summary(args, net, program, calib, checks, scores)
    return 0


def _accuracy(outputs, y) -> float:
    """The accuracy of outputs (N, ...) whose argmax over each sample's values is the class."""
    from trine.host.results import accuracy

    return accuracy(outputs.reshape(len(outputs), -1), y)


def _print_summary(args, net, program, calib, checks, scores) -> None:
    from trine.host.onnx_import import escape

    out = sys.stdout
    if net.is_mlp:
        print(f"read {args.model}: input {net.input_name!r} ({net.input_width} features), "
              f"{len(net.layers)} linear layer(s), {net.output_width} outputs", file=out)
    else:
        kinds = ", ".join(layer_kind(x) for x in program.layers)
        print(f"read {args.model}: input {net.input_name!r} {net.input_shape}, "
              f"{len(program.layers)} layers ({kinds}), {net.output_width} outputs", file=out)
    for note in net.notes:
        print(f"  {escape(note)}", file=out)
    if program.labels is not None:
        shown = ", ".join(map(escape, program.labels[:12])) + (
            ", ..." if len(program.labels) > 12 else "")
        print(f"  labels: {shown}", file=out)
    n_calib = 0 if calib is None else len(calib)
    if net.quantization is not None:
        source = ("its input quantiser" if -1 in net.quantization.activations
                  else "largest calibration input -> 127")
        missing = ("" if calib is None else
                   f" (where one is missing, from {n_calib} inputs of {args.calib})")
        print(f"trits read from the model's weight quantisers, scales from its activation "
              f"quantisers{missing}; input_scale {program.input_scale:.6g} ({source})",
              file=out)
    else:
        method = args.method + (" per channel" if args.per_channel else "")
        scale = "given" if args.input_scale is not None else "largest calibration input -> 127"
        mixed = f" and {args.mixtures} mixtures of them per input" if args.mixtures else ""
        print(f"ternarised with {method}, calibrated on {n_calib} inputs of {args.calib}{mixed} "
              f"(percentile {args.percentile:g}); input_scale {program.input_scale:.6g} "
              f"({scale})", file=out)
    if args.distill:
        chosen = getattr(args, "selected_epoch", None)
        epoch = "" if chosen is None else (f"; the program of epoch {chosen}, the one that "
                                           "agrees best with it on held-out mixtures")
        print(f"distilled from the float model on the calibration inputs and mixtures of them "
              f"({n_calib} inputs; seed {0 if args.seed is None else args.seed}{epoch})",
              file=out)
    stats = program.stats()
    check = checks[-1][2]
    if net.is_mlp:
        _dense_table(program, stats, check, out)
    else:
        _network_table(program, stats, check, out)
    where = "calibration inputs" if calib is not None else f"inputs of --eval {args.eval[0]}" \
        if args.eval else None
    for label, _, c in checks:
        if c is None:
            print(f"check, {label}: not made (no --calib or --eval inputs to compare the program "
                  "and the float model on)", file=out)
            continue
        print(f"check, {label}: {_agreement(c, where)}", file=out)
    if scores is not None and calib is not None:  # the fit saw the calibration inputs, not these
        for label, c in scores[3]:
            print(f"check on --eval {args.eval[0]}, {label}: {_agreement(c, 'inputs')}",
                  file=out)
    print(f"wrote {args.output}: {stats['weights']:,} weights, {stats['file_bytes']:,} bytes "
          f"({stats['packed_bytes']:,} of packed weights; {stats['bits_per_weight']:.2f} bits "
          "per weight with biases and header)", file=out)
    if scores is not None:
        n, acc_float, programs, _ = scores
        print(f"accuracy on {n} samples of {args.eval[0]}:", file=out)
        print(f"  {'float model (argmax of its float logits)':<46}  {_pct(acc_float):>6}",
              file=out)
        for label, acc in programs:
            text = f"{label} program (the device's reference)"
            print(f"  {text:<46}  {_pct(acc):>6}", file=out)


def _agreement(c, where: str) -> str:
    flag = "" if c.checkable else (f" (the float model's top-1 is a tie on "
                                   f"{_pct(1 - c.float_decided)} of them: not a check)")
    return (f"agrees with the float model on {_pct(c.agreement)} of the {c.n} {where}, output "
            f"correlation {c.correlation:.3f}{flag}")


def _dense_table(program, stats, check, out) -> None:
    """Every layer: its shape, ReLU, shift, sparsity and its outputs' correlation with the
    float model's."""
    print("  layer  outputs x inputs  relu  shift  zero weights  correlation", file=out)
    corr = {} if check is None else {c.index: c.correlation for c in check.layers}
    for i, (layer, zero) in enumerate(zip(program.layers, stats["sparsity"], strict=True)):
        shape = f"{layer.fan_out} x {layer.fan_in}"
        print(f"  {i:>5}  {shape:>16}  {'yes' if layer.relu else 'no':>4}  {layer.shift:>5}  "
              f"{_pct(zero):>12}  {_corr(corr, i)}", file=out)


def _network_table(program, stats, check, out) -> None:
    """Every layer: its kind and geometry, its output shape and, if it has weights, its ReLU,
    shift, sparsity and its outputs' correlation with the float model's."""
    from trine.contract.reference import Conv, Layer, MaxPool

    corr = {} if check is None else {c.index: c.correlation for c in check.layers}
    print(f"  input {program.input_shape}", file=out)
    print("  layer  kind                  output         relu  shift  zero weights  "
          "correlation", file=out)
    zeros = iter(stats["sparsity"])
    for i, (layer, shape) in enumerate(zip(program.layers, program.shapes[1:], strict=True)):
        kind = layer_kind(layer)
        if isinstance(layer, Conv):
            kind += (f" {'x'.join(map(str, layer.kernel))} s{'x'.join(map(str, layer.stride))}"
                     f" p{'x'.join(map(str, layer.padding))}")
        elif isinstance(layer, MaxPool):
            kind += f" {'x'.join(map(str, layer.kernel))}"
        row = f"  {i:>5}  {kind:<20}  {str(shape):<13}"
        if isinstance(layer, Layer | Conv):
            row += (f"  {'yes' if layer.relu else 'no':>4}  {layer.shift:>5}  "
                    f"{_pct(next(zeros)):>12}  {_corr(corr, i)}")
        print(row.rstrip(), file=out)


def _corr(corr: dict, i: int) -> str:
    return f"{corr[i]:>11.3f}" if i in corr else f"{'-':>11}"
