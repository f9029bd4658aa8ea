"""What importing a float model keeps: float, post-training and distilled accuracy side by side.

The targets of the import issue, each from a committed fixture (``tests/fixtures``, with the
scripts that made them):

* ``digits``: scikit-learn's ``MLPClassifier(hidden_layer_sizes=(96,))`` on digits, exported
  by skl2onnx, calibrated on the first 256 training images;
* ``mnist1d``: a PyTorch CNN for MNIST-1D exported by torch.onnx, calibrated on the first 256
  and the first 1024 training inputs (no labels are used);
* ``brevitas``: ternary Brevitas models exported as QONNX, imported exactly: their integers
  against Brevitas' own (``<fixture>.npz``).

For each float target: the float model's test accuracy (its ONNX graph in float64); every
post-training method (``gptq``, ``twn`` per layer and per channel, ``absmean``); an ablation
of ``gptq`` (each part of :class:`trine.host.ptq.OutputFit` switched off, and all of them);
distillation (:func:`trine.host.distill.distill` from the ``gptq`` program, several seeds,
with the held-out selection of the epoch and without it); and the per-row-shift simulation of
:mod:`bench._per_row` (what a shift per output row would gain). Every ternary accuracy is the
bit-exact reference's (:meth:`Program.run_reference`), i.e. the device's, except the per-row
rows, which are the software model of a device that does not exist. Seconds are wall-clock,
one BLAS thread, on whatever else the machine is doing.

Last, the same question for quantisation-aware training: the digits and MNIST-1D MLPs of
:data:`trine.host.qat.DEFAULTS` trained with a shift per layer, with a shift per row
(:class:`bench._per_row.RowShiftQATNet`) and with per-row offsets frozen after the first
calibration (:class:`bench._per_row.FrozenRowShiftQATNet`), the same loop and seeds.

And the gptq fit on mixtures of the calibration inputs too (``fold_to_program(mixtures=K)``),
over mixture seeds (``--only-mixtures`` reruns that part alone).

``python -m bench.import_accuracy`` writes ``bench/results/import_accuracy.json``;
``--quick`` (two distillation epochs, a tenth of the QAT epochs, one seed) writes
``import_accuracy_quick.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import _per_row
from bench._common import RESULTS, context
from trine.contract.fileio import write_atomic
from trine.host.arch import LayerSpec
from trine.host.data import load_dataset, load_digits_split, load_mnist1d_split
from trine.host.distill import DISTILL_DEFAULTS, distill
from trine.host.import_check import check_program
from trine.host.learning import single_threaded_blas
from trine.host.onnx_import import read_onnx_network
from trine.host.ptq import OutputFit
from trine.host.qat import DEFAULTS, train_qat
from trine.host.qat_net import QATNet
from trine.host.qonnx_import import run_half_even
from trine.host.results import accuracy, program_accuracy
from trine.host.ternarize import fold_to_program

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"

#: name -> (fixture, data loader, calibrations, points of float the post-training and
#: distilled programs should stay within: the issue's targets, None where it sets none).
#: Each calibration is (inputs, distillation seeds, whether to distil without the held-out
#: selection too): fewer seeds where a distillation takes minutes.
FLOAT_TARGETS: dict[str, tuple[str, Any, tuple[tuple[int, int, bool], ...], float | None,
                               float]] = {
    "digits": ("digits_mlp_skl.onnx", load_digits_split, ((256, 3, True), (1347, 1, False)),
               6.0, 1.0),
    "mnist1d": ("mnist1d_cnn.onnx", load_mnist1d_split, ((256, 2, True), (1024, 1, False)),
                None, 2.0),
}
#: QAT with a shift per row against QAT as the device has it: (data set, seeds).
QAT_RUNS = (("digits", 3), ("mnist1d", 2))
BREVITAS = ("brevitas_mlp", "brevitas_cnn", "brevitas_mlp_float")
POST_METHODS = (("gptq", False), ("twn", False), ("twn", True), ("absmean", False))
ABLATION = {
    "all parts": OutputFit(),
    "without float targets (each layer fitted on its own)": OutputFit(float_targets=False),
    "without error feedback (nearest trit)": OutputFit(error_feedback=False),
    "without the scale search (TWN threshold and scale)": OutputFit(search_scale=False),
    "without bias correction": OutputFit(bias_correction=False),
    "none of them (TWN on the weights alone)": OutputFit(False, False, False, False),
}


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def _float_target(name: str, quick: bool, log) -> dict[str, Any]:
    fixture, load, calibrations, post_points, distill_points = FLOAT_TARGETS[name]
    epochs = 2 if quick else DISTILL_DEFAULTS["epochs"]
    net = read_onnx_network(FIXTURES / fixture)
    x_train, _, x_test, y_test = load()
    x_test = net.check_inputs(x_test)
    float_out, t_float = _timed(net.forward, x_test)
    float_acc = accuracy(float_out.reshape(len(x_test), -1), y_test)
    log(f"{name}: float {float_acc:.4f}")
    record: dict[str, Any] = {"fixture": fixture, "n_test": len(x_test),
                              "float": {"test_acc": float_acc, "seconds": t_float},
                              "calibrations": []}
    for n, seeds, compare_select in calibrations:
        calib = x_train[:n].astype(np.float64)
        entry: dict[str, Any] = {"n_calib": n, "post_training": [], "ablation": [],
                                 "per_row_shift": [], "distilled": []}
        programs = {}
        for method, per_channel in POST_METHODS:
            program, seconds = _timed(net.to_program, calib, method=method,
                                      per_channel=per_channel)
            programs[(method, per_channel)] = program
            check = check_program(net.layers, program, calib)
            acc = program_accuracy(program, x_test, y_test)
            entry["post_training"].append({
                "method": method, "per_channel": per_channel, "test_acc": acc,
                "calib_agreement": check.agreement, "calib_correlation": check.correlation,
                "seconds": seconds})
            log(f"  {n} calib, {method}{' per channel' if per_channel else ''}: {acc:.4f} "
                f"({seconds:.1f} s)")
        for label, fit in ABLATION.items():
            program, seconds = _timed(fold_to_program, list(net.layers), calib, method="gptq",
                                      fit=fit, input_shape=net.input_shape)
            acc = program_accuracy(program, x_test, y_test)
            entry["ablation"].append({"parts": label, "fit": vars(fit), "test_acc": acc,
                                      "seconds": seconds})
            log(f"  {n} calib, gptq {label}: {acc:.4f}")
        for mode in _per_row.MODES:
            (layers, scale), seconds = _timed(_per_row.fold_per_row, list(net.layers), calib,
                                              net.input_shape, mode)
            out = _per_row.run_per_row(layers, scale, x_test)
            shifts = [sorted(set(x.shifts.tolist())) for x in layers
                      if isinstance(x, _per_row.RowShiftLayer)]
            if mode == "gptq-layer":  # equal shifts: the model must be the reference itself
                ref = _per_row.as_program(layers, scale, net.input_shape).run_reference(x_test)
                if not np.array_equal(ref.reshape(len(x_test), -1), out):
                    raise AssertionError("the per-row model differs from the reference")
            acc = accuracy(out, y_test)
            entry["per_row_shift"].append({"mode": mode, "test_acc": acc, "shifts": shifts,
                                           "seconds": seconds})
            log(f"  {n} calib, per-row model {mode}: {acc:.4f} shifts {shifts}")
        start = programs[("gptq", False)]
        for seed in range(1 if quick else seeds):
            for select in (DISTILL_DEFAULTS["select"], 0)[:2 if compare_select else 1]:
                result, seconds = _timed(distill, start, net.forward, calib, epochs=epochs,
                                         seed=seed, select=select)
                acc = program_accuracy(result.program, x_test, y_test)
                entry["distilled"].append({
                    "seed": seed, "select": select, "epochs": epochs, "test_acc": acc,
                    "selected_epoch": result.settings.get("selected_epoch"),
                    "calib_agreement": result.history[-1]["agreement"], "seconds": seconds})
                log(f"  {n} calib, distilled seed {seed} select {select}: {acc:.4f} "
                    f"({seconds:.0f} s)")
        gptq = entry["post_training"][0]["test_acc"]
        chosen = [d["test_acc"] for d in entry["distilled"]
                  if d["select"] == DISTILL_DEFAULTS["select"]]
        entry["targets"] = {
            "post_training": _target(float_acc, gptq, post_points),
            "distilled_mean": _target(float_acc, float(np.mean(chosen)), distill_points),
            "distilled_worst": _target(float_acc, float(np.min(chosen)), distill_points),
        }
        record["calibrations"].append(entry)
    return record


#: The gptq fit on mixtures of the calibration inputs too: (target, inputs, mixtures per
#: input, mixture seeds).
MIXTURE_RUNS = (("digits", 256, (0, 3, 7, 15), 3), ("mnist1d", 256, (0, 3, 7), 3))


def _mixtures(log) -> list[dict[str, Any]]:
    """gptq with ``fold_to_program(mixtures=K)`` over mixture seeds (0 mixtures: one run)."""
    out = []
    for name, n, counts, seeds in MIXTURE_RUNS:
        fixture, load = FLOAT_TARGETS[name][:2]
        net = read_onnx_network(FIXTURES / fixture)
        x_train, _, x_test, y_test = load()
        calib = x_train[:n].astype(np.float64)
        for k in counts:
            for seed in range(seeds if k else 1):
                program, seconds = _timed(fold_to_program, list(net.layers),
                                          net.check_inputs(calib), method="gptq", mixtures=k,
                                          mixture_seed=seed, input_shape=net.input_shape)
                acc = program_accuracy(program, x_test, y_test)
                out.append({"target": name, "n_calib": n, "mixtures": k, "seed": seed,
                            "test_acc": acc, "seconds": seconds})
                log(f"{name} {n} calib, gptq with {k} mixtures per input, seed {seed}: "
                    f"{acc:.4f} ({seconds:.1f} s)")
    return out


def _target(float_acc: float, acc: float, points: float | None) -> dict[str, Any]:
    gap = 100 * (float_acc - acc)
    return {"points_below_float": gap, "within": points,
            "pass": None if points is None else bool(gap <= points)}


def _brevitas(name: str, log) -> dict[str, Any]:
    net = read_onnx_network(FIXTURES / f"{name}.onnx")
    saved = np.load(FIXTURES / f"{name}.npz")
    x, y_int = saved["x"], saved["y_int"].astype(np.int64)
    program, seconds = _timed(net.to_program, x)
    device = program.run_reference(x).reshape(len(x), -1).astype(np.int64)
    half_even = run_half_even(program, x).reshape(len(x), -1).astype(np.int64)
    load = load_digits_split if "cnn" not in name else load_mnist1d_split
    _, _, x_test, y_test = load()
    record = {
        "n": len(x),
        "half_even_equal": bool(np.array_equal(half_even, y_int)),
        "device_outputs_equal": float(np.mean(device == y_int)),
        "device_inputs_all_equal": float(np.mean(np.all(device == y_int, axis=1))),
        "device_max_abs_diff": int(np.abs(device - y_int).max()),
        "device_class_agreement": float(np.mean(device.argmax(1) == y_int.argmax(1))),
        "brevitas_test_acc": accuracy(net.forward(x_test).reshape(len(x_test), -1), y_test),
        "program_test_acc": program_accuracy(program, x_test, y_test),
        "n_test": len(x_test),
        "seconds": seconds,
        "notes": list(net.notes),
    }
    log(f"{name}: half-even equal {record['half_even_equal']}, device equal "
        f"{record['device_outputs_equal']:.4f} (max diff {record['device_max_abs_diff']}), "
        f"test {record['brevitas_test_acc']:.4f} / {record['program_test_acc']:.4f}")
    return record


def _qat(name: str, seeds: int, quick: bool, log) -> dict[str, Any]:
    """QAT (MLP, :data:`trine.host.qat.DEFAULTS`) with one shift per layer and per row, the
    same loop, seeds and data; accuracies on the test split."""
    x, y, xt, yt = load_dataset(name)
    opts = dict(DEFAULTS[name]["qat"])
    hidden = opts.pop("hidden")
    # train_qat's own defaults for what DEFAULTS leaves out
    settings = dict(epochs=200, batch_size=64, lr=0.03, bias_lr=0.1, weight_decay=0.0,
                    logit_scale=0.1, act_percentile=99.9, input_percentile=99.9,
                    threshold="layer", seed=0)
    settings.update(opts)
    if quick:
        settings["epochs"] = max(1, settings["epochs"] // 10)
    dims = [x.shape[1], *hidden, int(y.max()) + 1]
    specs = [LayerSpec("dense", m, relu=i < len(dims) - 2) for i, m in enumerate(dims[1:])]
    runs = []
    for seed in range(1 if quick else seeds):
        settings["seed"] = seed
        for per_row, cls in (("per layer", QATNet), ("per row", _per_row.RowShiftQATNet),
                             ("per row, offsets frozen", _per_row.FrozenRowShiftQATNet)):
            net, seconds = _timed(_per_row.train, cls, x, y, specs, (x.shape[1],), settings)
            acc = accuracy(net.forward(xt), yt)
            runs.append({"seed": seed, "shift": per_row, "test_acc": acc,
                         "seconds": seconds,
                         "shifts": [sorted(set(np.atleast_1d(s).tolist())) for s in net.shifts]})
            log(f"QAT {name} seed {seed} shift {per_row}: {acc:.4f}")
    return {"shape": "-".join(map(str, dims)), "settings": settings, "runs": runs}


def _check_training_loop(log) -> None:
    """:func:`bench._per_row.train` with QATNet is train_qat itself (digits, byte for byte)."""
    x, y, _, _ = load_dataset("digits")
    opts = dict(DEFAULTS["digits"]["qat"], epochs=5)
    program = train_qat(x, y, **opts).program
    hidden = opts.pop("hidden")
    settings = dict(batch_size=64, lr=0.03, bias_lr=0.1, weight_decay=0.0, logit_scale=0.1,
                    act_percentile=99.9, input_percentile=99.9, threshold="layer", seed=0)
    settings.update(opts)
    dims = [x.shape[1], *hidden, 10]
    specs = [LayerSpec("dense", m, relu=i < len(dims) - 2) for i, m in enumerate(dims[1:])]
    net = _per_row.train(QATNet, x, y, specs, (x.shape[1],), settings)
    if net.to_program().to_bytes() != program.to_bytes():
        raise AssertionError("bench._per_row.train is not train_qat's loop")
    log("the per-row QAT loop with one shift per layer is train_qat's (digits, 5 epochs)")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="two distillation epochs and one seed (a smoke test)")
    parser.add_argument("--only-mixtures", action="store_true",
                        help="run only the gptq fit with mixtures and replace that entry of "
                        "the saved figures (the rest kept, with their own context)")
    args = parser.parse_args(argv)

    def log(text: str) -> None:
        print(text, flush=True)

    if args.only_mixtures:
        path = RESULTS / "import_accuracy.json"
        figures = json.loads(path.read_text())
        with single_threaded_blas():
            figures["mixtures"] = {"context": context(), "runs": _mixtures(log)}
        write_atomic(path, json.dumps(figures, indent=2) + "\n")
        return figures

    figures: dict[str, Any] = {"context": context(), "quick": args.quick,
                               "distill_defaults": DISTILL_DEFAULTS, "targets": {},
                               "brevitas": {}, "qat_per_row_shift": {}}
    with single_threaded_blas():
        for name in BREVITAS:
            figures["brevitas"][name] = _brevitas(name, log)
        for name in FLOAT_TARGETS:
            figures["targets"][name] = _float_target(name, args.quick, log)
        _check_training_loop(log)
        for name, seeds in QAT_RUNS:
            figures["qat_per_row_shift"][name] = _qat(name, seeds, args.quick, log)
        figures["mixtures"] = {"context": context(), "runs": [] if args.quick else _mixtures(log)}
    stem = "import_accuracy_quick" if args.quick else "import_accuracy"
    write_atomic(RESULTS / f"{stem}.json", json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
