"""Quantisation-aware training against the float MLP of the same shape, per data set.

For digits and MNIST-1D, with :data:`trine.host.qat.DEFAULTS`: a float MLP
(:func:`trine.host.qat.train_float_mlp`), the same float MLP ternarised after training
(:func:`trine.host.ternarize.fold_to_program`, for reference), and QAT from a random start
(:func:`trine.host.qat.train_qat`). Every ternary accuracy is the integer reference's, i.e. what the
device returns. Prints a table, saves ``bench/results/qat.json`` (settings, metrics, history)
and one curve per data set, ``bench/results/qat_<name>.png`` (test accuracy against seconds,
the float baseline as a horizontal line).

``--quick`` runs a tenth of the epochs (a smoke test; its figures go to ``qat_quick.json``
and ``qat_quick_<name>.png`` so the real ones are kept). Seconds are wall-clock on whatever
else the machine is doing.
"""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

from bench._common import RESULTS, context
from trine.contract.fileio import write_atomic
from trine.contract.params import SIMULATED
from trine.host.data import DATASETS, load_dataset
from trine.host.qat import DEFAULTS, train_float_mlp, train_qat
from trine.host.results import program_accuracy
from trine.host.ternarize import fold_to_program


def _scaled(options: dict[str, Any], quick: bool) -> dict[str, Any]:
    out = dict(options)
    if quick:
        out["epochs"] = max(1, out["epochs"] // 10)
    return out


def run(name: str, quick: bool = False) -> dict[str, Any]:
    """Float, folded and QAT on data set ``name``; returns the JSON-able record."""
    x_train, y_train, x_test, y_test = load_dataset(name)
    float_opts = _scaled(DEFAULTS[name]["float"], quick)
    qat_opts = _scaled(DEFAULTS[name]["qat"], quick)
    fl = train_float_mlp(x_train, y_train, x_test=x_test, y_test=y_test, **float_opts)
    folded = fold_to_program(fl.layers, x_train)
    qat = train_qat(x_train, y_train, x_test=x_test, y_test=y_test,
                    labels=[str(c) for c in range(10)], **qat_opts)
    qat.program.check_fits(SIMULATED.limits())  # raises if the program would not fit the device
    widths = [qat.program.input_width, *(layer.fan_out for layer in qat.program.layers)]
    return {
        "data": name,
        "shape": "-".join(map(str, widths)),
        "n_train": len(x_train),
        "n_test": len(x_test),
        "float": {"settings": fl.settings, "metrics": fl.metrics, "history": fl.history},
        "folded_test_acc": program_accuracy(folded, x_test, y_test),
        "qat": qat.to_json(),
    }


def plot(record: dict[str, Any], path) -> None:
    """Test accuracy against seconds: QAT's curve, the float curve, the float final line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    qh = record["qat"]["history"]
    fh = record["float"]["history"]
    ax.plot([h["elapsed_s"] for h in qh], [h["test_acc"] for h in qh], label="QAT (reference)")
    ax.plot([h["elapsed_s"] for h in fh], [h["test_acc"] for h in fh], color="0.6", lw=0.8,
            label="float MLP, while training")
    ax.axhline(record["float"]["metrics"]["test_acc"], color="k", ls="--",
               label=f"float MLP {record['shape']}: {record['float']['metrics']['test_acc']:.3f}")
    ax.axhline(record["folded_test_acc"], color="tab:red", ls=":",
               label=f"float ternarised after training: {record['folded_test_acc']:.3f}")
    ax.set_xlabel("seconds (wall clock)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"{record['data']} {record['shape']}: QAT test accuracy over time")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tenth of the epochs")
    parser.add_argument("--data", nargs="+", choices=DATASETS, default=list(DATASETS))
    args = parser.parse_args(argv)
    stem = "qat_quick" if args.quick else "qat"
    records = []
    for name in args.data:
        print(f"training {name} ...", flush=True)
        record = run(name, args.quick)
        plot(record, RESULTS / f"{stem}_{name}.png")
        records.append(record)

    print(f"{'data':8s} {'shape':17s} {'float':>7s} {'folded':>7s} {'QAT':>7s} {'QAT-float':>9s} "
          f"{'float s':>8s} {'QAT s':>7s} {'sparsity':>18s}")
    for r in records:
        fm, qm = r["float"]["metrics"], r["qat"]["metrics"]
        sparsity = "/".join(f"{s:.2f}" for s in qm["sparsity"])
        print(f"{r['data']:8s} {r['shape']:17s} {fm['test_acc']:7.3f} {r['folded_test_acc']:7.3f} "
              f"{qm['test_acc']:7.3f} {qm['test_acc'] - fm['test_acc']:+9.3f} "
              f"{fm['seconds']:8.1f} {qm['seconds']:7.1f} {sparsity:>18s}")
    figures = {"context": context(), "quick": args.quick, "defaults": DEFAULTS,
               "results": records}
    write_atomic(RESULTS / f"{stem}.json", json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
