"""Ternary activations (FATNN): what they cost in accuracy, and what they save in logic.

``--part accuracy``: QAT with int8 activations against QAT with ternary activations
(``train_qat(act="ternary")``, and ``"ternary-inner"``: the first hidden layer's outputs int8
too) on digits and MNIST-1D, MLP and CNN (runs of earlier calls that are not repeated are
kept), at the settings of
:data:`trine.host.qat.DEFAULTS` (the same settings for both; ``--cnn-epochs`` and
``--mlp-epochs`` override the epochs of both alike, and are recorded), seeds ``--seeds``.
Training is single-threaded and one run at a time. Accuracies are the bit-exact reference's
on the test split.

``--part area``: the int8-activation MAC array (:class:`trine.hw.mac_array.MACArray`, today's
lane) and the trit-by-trit :class:`trine.hw.popcount_array.PopcountArray` (both forms, with
and without pipeline registers) at the same ``rows x lanes``, packed for the iCE40 UP5K and
the ECP5-85F in one run (logic cells of the bare array, nextpnr ``--pack-only``, divided by
``rows x lanes``), and post-route Fmax inside :class:`trine.flow.synth.TimingHarness` for the
default forms. "UP5K lanes" is how many such MACs the device's 5,280 logic cells hold at the
measured cells per MAC (the array alone, nothing else on the chip).

Both parts write ``bench/results/fatnn.json`` (a part not run keeps its previous figures).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bench._common import RESULTS, context
from trine.contract.fileio import write_atomic
from trine.host.data import DATASETS, load_dataset
from trine.host.learning import single_threaded_blas
from trine.host.qat import DEFAULTS, train_qat

PATH = RESULTS / "fatnn.json"
#: The rows x lanes the MAC arrays are compared at (bench/area.py's target size).
SIZE = (4, 32)
LC_PER_LANE_TARGET = 6.0
FMAX_TARGET = {"ice40": 60.0, "ecp5": 150.0}


def train_one(name: str, model: str, act: str, seed: int, epochs: int | None) -> dict[str, Any]:
    x_train, y_train, x_test, y_test = load_dataset(name)
    opts = dict(DEFAULTS[name]["cnn" if model == "cnn" else "qat"])
    if epochs is not None:
        opts["epochs"] = epochs
    r = train_qat(x_train, y_train, x_test=x_test, y_test=y_test, seed=seed, act=act, **opts)
    return {"data": name, "model": model, "act": act, "seed": seed, "epochs": opts["epochs"],
            "test_acc": r.metrics["test_acc"], "train_acc": r.metrics["train_acc"],
            "seconds": r.metrics["seconds"], "shifts": r.metrics["shifts"],
            "act_thresholds": r.metrics.get("act_thresholds"),
            "program_bytes": len(r.program.to_bytes()), "settings": r.settings}


ACTS = ("int8", "ternary", "ternary-inner")


def accuracy(args, previous: list[dict]) -> dict[str, Any]:
    """Train what ``args`` asks for; runs of ``previous`` that were not re-run are kept."""
    runs = []
    with single_threaded_blas():
        for name in args.data:
            for model in args.models:
                epochs = args.cnn_epochs if model == "cnn" else args.mlp_epochs
                for seed in args.seeds:
                    for act in args.acts:
                        if act == "ternary-inner" and name == "digits" and model == "mlp":
                            continue  # one hidden layer: nothing inner to ternarise
                        print(f"{name} {model} {act} seed {seed} ...", end=" ", flush=True)
                        r = train_one(name, model, act, seed, epochs)
                        print(f"test {r['test_acc']:.2%} train {r['train_acc']:.2%} "
                              f"{r['seconds']:.0f} s", flush=True)
                        runs.append(r)
    done = {(r["data"], r["model"], r["act"], r["seed"]) for r in runs}
    runs = [r for r in previous
            if (r["data"], r["model"], r["act"], r["seed"]) not in done] + runs
    summary = []
    for name, model in dict.fromkeys((r["data"], r["model"]) for r in runs):
        row = {"data": name, "model": model}
        for act in ACTS:
            mine = [r for r in runs if (r["data"], r["model"], r["act"]) == (name, model, act)]
            row[act] = sum(r["test_acc"] for r in mine) / len(mine) if mine else None
            if mine:
                row[f"{act}_epochs"] = mine[0]["epochs"]
                row[f"{act}_seeds"] = sorted(r["seed"] for r in mine)
        row["epochs"] = row.get("int8_epochs")
        row["seeds"] = row.get("int8_seeds", [])
        for act in ACTS[1:]:
            if row["int8"] is not None and row[act] is not None:
                row[f"{act}_cost_points"] = 100 * (row["int8"] - row[act])
        row["cost_points"] = row.get("ternary_cost_points")
        summary.append(row)
    return {"runs": runs, "summary": summary}


def designs():
    from trine.hw.mac_array import MACArray
    from trine.hw.popcount_array import PopcountArray

    rows, lanes = SIZE
    return [
        ("int8-act MACArray", dict(register_every=1), MACArray(lanes, rows), True),
        ("popcount fatnn", dict(register_every=1),
         PopcountArray(lanes, rows, form="fatnn"), True),
        ("popcount offset", dict(register_every=1),
         PopcountArray(lanes, rows, form="offset"), True),
        ("popcount fatnn", dict(register_every=0),
         PopcountArray(lanes, rows, form="fatnn", register_every=0), True),
        ("popcount offset", dict(register_every=0),
         PopcountArray(lanes, rows, form="offset", register_every=0), False),
        ("popcount fatnn", dict(register_every=3),
         PopcountArray(lanes, rows, form="fatnn", register_every=3), False),
    ]


def area(args) -> dict[str, Any]:
    from trine.flow import synth
    from trine.hw.verilog import to_verilog

    rows, lanes = SIZE
    out = []
    for family in ("ice40", "ecp5"):
        for label, extra, dut, with_fmax in designs():
            t0 = time.perf_counter()
            row = {"design": label, **extra, "rows": rows, "lanes": lanes, "family": family,
                   "device": synth.DEVICES[family].name, "fmax_mhz": None}
            print(f"{label} re={extra['register_every']} {family} ...", end=" ", flush=True)
            packed = synth.pack(to_verilog(dut, "array"), "array", family)
            used, available = packed.utilization[packed.device.logic_cell]
            row.update(logic_cells=used, available=available, flip_flops=packed.flip_flops,
                       lc_per_lane=used / (rows * lanes),
                       dsp_cells=sum(n for c, n in packed.cells.items()
                                     if c in ("SB_MAC16", "MULT18X18D")))
            if with_fmax and not args.no_fmax:
                harness = to_verilog(synth.TimingHarness(dut), "harness")
                try:
                    pnr = synth.place_and_route(harness, "harness", family,
                                                freq_mhz=FMAX_TARGET[family], seed=1)
                    row["fmax_mhz"] = min(pnr.fmax_mhz.values())
                except synth.SynthError as exc:
                    row["pnr"] = f"failed: {str(exc).splitlines()[-1]}"
            row["seconds"] = round(time.perf_counter() - t0, 1)
            if family == "ice40":
                row["up5k_lanes"] = int(available // row["lc_per_lane"])
            print(f"{used} cells, {row['lc_per_lane']:.2f}/lane, Fmax {row['fmax_mhz']}, "
                  f"{row['seconds']} s", flush=True)
            out.append(row)
    return {"size": f"{rows}x{lanes}", "lc_per_lane_target": LC_PER_LANE_TARGET, "rows": out}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["accuracy", "area", "all"], default="all")
    parser.add_argument("--data", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--models", nargs="+", choices=["mlp", "cnn"], default=["mlp", "cnn"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--acts", nargs="+", choices=ACTS, default=list(ACTS))
    parser.add_argument("--mlp-epochs", type=int, help="epochs of both MLPs (default: DEFAULTS)")
    parser.add_argument("--cnn-epochs", type=int, help="epochs of both CNNs (default: DEFAULTS)")
    parser.add_argument("--no-fmax", action="store_true", help="pack only, no place and route")
    args = parser.parse_args(argv)
    figures = json.loads(PATH.read_text()) if PATH.is_file() else {}
    figures["context"] = context()
    if args.part in ("accuracy", "all"):
        previous = figures.get("accuracy", {}).get("runs", [])
        figures["accuracy"] = accuracy(args, previous) | {"argv": argv}
    if args.part in ("area", "all"):
        figures["area"] = area(args) | {"argv": argv}
    write_atomic(PATH, json.dumps(figures, indent=2, default=list) + "\n")
    print(f"saved {PATH}")
    return figures


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
