"""Ternary CNNs by quantisation-aware training, per data set, over several seeds.

For digits (8x8 images, 2-D convolutions) and MNIST-1D (40 samples, 1-D convolutions), with
:data:`trine.host.qat.DEFAULTS` ``[name]["cnn"]`` and seeds 0-2 (``--seeds``): the test
accuracy of the integer reference (what the device returns), the train accuracy, the seconds
and the program's size. Saves ``bench/results/qat_cnn.json``. Seconds are wall-clock on
whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from bench._common import RESULTS, context
from trine.contract.fileio import write_atomic
from trine.host.data import DATASETS, load_dataset
from trine.host.qat import DEFAULTS, train_qat


def run(name: str, seed: int) -> dict[str, Any]:
    x_train, y_train, x_test, y_test = load_dataset(name)
    opts = dict(DEFAULTS[name]["cnn"])
    r = train_qat(x_train, y_train, x_test=x_test, y_test=y_test, seed=seed,
                  labels=[str(c) for c in range(10)], **opts)
    stats = r.program.stats()
    return {"data": name, "seed": seed, "arch": opts["arch"],
            "input_shape": list(opts["input_shape"]), "n_train": len(x_train),
            "n_test": len(x_test), "test_acc": r.metrics["test_acc"],
            "train_acc": r.metrics["train_acc"], "seconds": r.metrics["seconds"],
            "weights": stats.get("weights"), "settings": r.settings}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args(argv)
    path = RESULTS / "qat_cnn.json"
    # runs of other data sets or seeds already measured are kept (each run takes minutes)
    kept = json.loads(path.read_text())["runs"] if path.exists() else []
    runs = [r for r in kept if (r["data"], r["seed"]) not in
            {(n, s) for n in args.data for s in args.seeds}]
    figures: dict = {}
    for name in args.data:
        for seed in args.seeds:
            print(f"training the {name} CNN, seed {seed} ...", flush=True)
            r = run(name, seed)
            print(f"  test {r['test_acc']:.2%} train {r['train_acc']:.2%} "
                  f"{r['seconds']:.0f} s", flush=True)
            runs.append(r)
            figures = _save(path, runs)  # after every run: a stopped bench keeps what it did
    return figures


def _save(path, runs: list[dict[str, Any]]) -> dict:
    summary = {}
    for name in sorted({r["data"] for r in runs}):
        mine = sorted((r for r in runs if r["data"] == name), key=lambda r: r["seed"])
        acc = [r["test_acc"] for r in mine]
        summary[name] = {"arch": mine[0]["arch"], "seeds": [r["seed"] for r in mine],
                         "test_acc": acc, "mean": sum(acc) / len(acc), "min": min(acc),
                         "max": max(acc)}
    figures = {"context": context(), "defaults": {n: DEFAULTS[n]["cnn"] for n in summary},
               "summary": summary, "runs": runs}
    write_atomic(path, json.dumps(figures, indent=2, default=list) + "\n")
    return figures

if __name__ == "__main__":
    main()
