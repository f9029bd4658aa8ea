"""Linear regions of ternary and float ReLU networks against width and depth, and trained ones.

Every count is exact (:mod:`trine.host.regions`), never sampled. What is measured:

* **lines**: networks with one input, counted on the segment ``[-100, 100]`` (for these
  networks' biases nearly every breakpoint lies inside it, so this is, up to the far tails, the
  whole input space); width sweep at 3 hidden layers, depth sweep at width 8;
* **slices**: networks with two inputs, counted in the square ``[-10, 10]^2``; width sweep at
  2 hidden layers, depth sweep at width 8;
* random ternary networks (trits with half zeros times the He-scaled per-layer scale) and
  random Gaussian float networks of the same shapes and biases (:func:`random_network`),
  several seeds each (mean and standard deviation), and a sparsity sweep of the ternary ones;
* the paper's own architecture: 2L ternary layers, linear and ReLU alternating
  (``random_network(alternate=True)``), at width 8 and 16, against float networks of L ReLU
  layers at width 8;
* the ternary sawtooth of width ``2n - 1`` (:func:`trine.host.regions.sawtooth_program`, a
  ``.trine`` program): ``n**L`` pieces at depth ``L``, against the general bound at width ``n``;
* trained networks: QAT's ternary MLPs (digits 64-64-10, MNIST-1D 40-128-128-10,
  :func:`trine.host.qat.train_qat`) and float MLPs of the same shape
  (:func:`trine.host.mlp.train_float_mlp`), on segments between pairs of test inputs of
  different classes and in the parallelograms spanned by three test inputs (the same in input
  space for both; a program's in its int8 units), beside random networks of the same shape on
  the same segments and slices with the inputs standardised; and QAT's digits CNN (its default
  architecture, 30 epochs) on the first 20 of the digits MLP's segments;
* beside them the lower bound on the maximal number of regions of a general ReLU network
  (Montufar et al. 2014), the bound the lower-bound paper for ternary networks compares with:
  it says a ternary network reaches a comparable bound with its width squared or its depth
  doubled (after doubling the width). The bench asks whether random or trained counts show
  that equivalence: ternary width ``n**2`` against float width ``n``, ternary depth ``2L``
  against float depth ``L``.

``python -m bench.regions`` saves ``bench/results/regions.json`` and the plots
``regions_lines.png``, ``regions_slices.png`` and ``regions_trained.png``; ``--quick`` fewer
seeds and no training (figures to ``regions_quick.json``).
"""

from __future__ import annotations

import argparse
import io
import json
import time
from typing import Any

import numpy as np

from bench._common import RESULTS, context
from trine.contract.fileio import write_atomic
from trine.host import regions as R

LINE = 100.0
SQUARE = 10.0
LINE_WIDTHS = [2, 4, 8, 16, 32, 64, 128]
LINE_DEPTHS = [1, 2, 3, 4, 5, 6, 8, 10]
SLICE_WIDTHS = [2, 4, 8, 16, 32]
SLICE_DEPTHS = [1, 2, 3, 4, 5]
SPARSITIES = [0.0, 0.25, 0.5, 0.75, 0.9]


def _stats(values: list[int]) -> dict[str, Any]:
    a = np.asarray(values, float)
    return {"mean": float(a.mean()), "std": float(a.std()), "min": int(a.min()),
            "max": int(a.max()), "values": [int(v) for v in values]}


def _count(shape: list[int], ternary: bool, seed: int, sparsity: float = 0.5,
           alternate: bool = False) -> tuple[int, int]:
    net = R.random_network(shape, ternary=ternary, sparsity=sparsity, alternate=alternate,
                           seed=seed)
    if shape[0] == 1:
        r = R.count_line(net, [-LINE], [LINE])
    else:
        r = R.count_slice(net, [0.0, 0.0], [1.0, 0.0], [0.0, 1.0], SQUARE)
    return r.regions, r.activation_regions


def sweep(shapes: list[list[int]], seeds: int, sparsity: float = 0.5,
          kinds=(True, False)) -> list[dict[str, Any]]:
    out = []
    for shape in shapes:
        hidden = shape[1:-1]
        row: dict[str, Any] = {"shape": shape, "neurons": sum(hidden),
                               "general_bound": R.general_lower_bound(shape[0], hidden)}
        for ternary in kinds:
            t0 = time.perf_counter()
            counts = [_count(shape, ternary, s, sparsity) for s in range(seeds)]
            key = "ternary" if ternary else "float"
            row[key] = _stats([c[0] for c in counts])
            row[key + "_activation"] = _stats([c[1] for c in counts])
            row[key + "_seconds"] = time.perf_counter() - t0
        out.append(row)
        print(f"  {'-'.join(map(str, shape)):>22s}  ternary {row['ternary']['mean']:9.1f}"
              + (f"  float {row['float']['mean']:9.1f}" if "float" in row else "")
              + f"  bound {row['general_bound']:,}", flush=True)
    return out


def paper_architecture(seeds: int) -> list[dict[str, Any]]:
    """The paper's ternary architecture (linear and ReLU layers alternating, 2L layers for L
    ReLU layers) at width n and 2n, against float networks of L ReLU layers at width n."""
    rows = []
    for label, n0, depths in (("lines", 1, LINE_DEPTHS[:5]), ("slices", 2, SLICE_DEPTHS[:3])):
        n = 8
        for depth in depths:
            row: dict[str, Any] = {"data": label, "relu_layers": depth, "width": n}
            fl = [_count([n0, *[n] * depth, 1], False, s)[0] for s in range(seeds)]
            row["float"] = _stats(fl)
            for key, w in (("ternary_alternating", n), ("ternary_alternating_2n", 2 * n)):
                row[key] = _stats([_count([n0, *[w] * (2 * depth), 1], True, s,
                                          alternate=True)[0] for s in range(seeds)])
            rows.append(row)
            print(f"  {label} {depth} ReLU layers: float width {n} {row['float']['mean']:.1f}, "
                  f"ternary alternating 2L at width {n} "
                  f"{row['ternary_alternating']['mean']:.1f}, at {2 * n} "
                  f"{row['ternary_alternating_2n']['mean']:.1f}", flush=True)
    return rows


def sawtooth() -> list[dict[str, Any]]:
    """The ternary sawtooth's exact counts against the general bound at width n."""
    out = []
    for n in (2, 3, 4, 5):
        for depth in (1, 2, 3):
            if n ** depth > 127:
                continue
            net = R.from_program(R.sawtooth_program(n, depth))
            r = R.count_line(net, [0], [n ** depth])
            whole = R.count_line(net, [-1e4], [1e4])  # every breakpoint is in [0, n**depth]
            out.append({"n": n, "depth": depth, "ternary_width": 2 * n - 1,
                        "regions": r.regions, "regions_whole_line": whole.regions,
                        "general_bound_width_n": R.general_lower_bound(1, [n] * depth)})
    return out


def _segments(x: np.ndarray, y: np.ndarray, count: int, seed: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    pairs = []
    while len(pairs) < count:
        i, j = rng.integers(0, len(x), 2)
        if y[i] != y[j]:
            pairs.append((int(i), int(j)))
    return pairs


def trained(segments: int = 40, slices: int = 2) -> list[dict[str, Any]]:
    from trine.host.data import load_dataset
    from trine.host.mlp import train_float_mlp
    from trine.host.qat import train_qat

    runs = [("digits", (64,), {"epochs": 60, "lr": 0.03, "logit_scale": 0.1}, 100),
            ("mnist1d", (128, 128), {"epochs": 30, "lr": 0.05, "logit_scale": 0.2}, 30)]
    out = []
    for name, hidden, qat_opts, float_epochs in runs:
        x_train, y_train, x_test, y_test = load_dataset(name)
        t0 = time.perf_counter()
        qat = train_qat(x_train, y_train, x_test=x_test, y_test=y_test, hidden=hidden,
                        seed=0, **qat_opts)
        fl = train_float_mlp(x_train, y_train, x_test=x_test, y_test=y_test, hidden=hidden,
                             epochs=float_epochs, seed=0)
        train_s = time.perf_counter() - t0
        widths = [x_train.shape[1], *hidden, 10]
        program_net = R.from_program(qat.program)
        float_net = R.from_float_layers(list(fl.layers))
        mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-9
        counts: dict[str, list[int]] = {"qat": [], "float": [], "random_ternary": [],
                                        "random_float": []}
        t0 = time.perf_counter()
        for k, (i, j) in enumerate(_segments(x_test, y_test, segments, seed=1)):
            a, b = x_test[i], x_test[j]
            s = qat.program.input_scale
            counts["qat"].append(R.count_line(program_net, a / s, b / s).regions)
            counts["float"].append(R.count_line(float_net, a, b).regions)
            za, zb = (a - mean) / std, (b - mean) / std
            for key, ternary in (("random_ternary", True), ("random_float", False)):
                net = R.random_network(widths, ternary=ternary, seed=k)
                counts[key].append(R.count_line(net, za, zb).regions)
        planes: dict[str, list[int]] = {k: [] for k in counts}
        rng = np.random.default_rng(2)
        for k in range(slices):
            # the parallelogram of three test inputs: a + u (b - a) + v (c - a), u, v in [0, 1]
            i, j, m = rng.choice(len(x_test), 3, replace=False)
            a, d1, d2 = x_test[i], x_test[j] - x_test[i], x_test[m] - x_test[i]
            centre = a + (d1 + d2) / 2
            s = qat.program.input_scale
            planes["qat"].append(R.count_slice(program_net, centre / s, d1 / s, d2 / s,
                                               0.5).regions)
            planes["float"].append(R.count_slice(float_net, centre, d1, d2, 0.5).regions)
            for key, ternary in (("random_ternary", True), ("random_float", False)):
                net = R.random_network(widths, ternary=ternary, seed=k)
                planes[key].append(R.count_slice(net, (centre - mean) / std, d1 / std, d2 / std,
                                                 0.5).regions)
        row = {"data": name, "shape": "-".join(map(str, widths)), "segments": segments,
               "slices": slices,
               "slice_regions": {k: _stats(v) for k, v in planes.items()},
               "neurons": sum(hidden), "qat_test_acc": qat.metrics["test_acc"],
               "float_test_acc": fl.metrics["test_acc"],
               "sparsity": [float(np.mean(layer.weights == 0)) for layer in qat.program.layers],
               "train_seconds": train_s, "count_seconds": time.perf_counter() - t0,
               **{k: _stats(v) for k, v in counts.items()}}
        out.append(row)
        print(f"  {name} {row['shape']}: QAT {row['qat']['mean']:.1f}, float "
              f"{row['float']['mean']:.1f}, random ternary {row['random_ternary']['mean']:.1f}, "
              f"random float {row['random_float']['mean']:.1f} regions per segment", flush=True)
    return out


def trained_cnn(segments: int = 20) -> dict[str, Any]:
    """QAT's digits CNN (its default architecture, fewer epochs) on the digits MLP's segments."""
    from trine.host.data import load_dataset
    from trine.host.qat import DEFAULTS, train_qat

    x_train, y_train, x_test, y_test = load_dataset("digits")
    options = {**DEFAULTS["digits"]["cnn"], "epochs": 30}
    t0 = time.perf_counter()
    qat = train_qat(x_train, y_train, x_test=x_test, y_test=y_test, seed=0, **options)
    train_s = time.perf_counter() - t0
    net = R.from_program(qat.program)
    s = qat.program.input_scale
    counts, activation = [], []
    t0 = time.perf_counter()
    for i, j in _segments(x_test, y_test, segments, seed=1):
        r = R.count_line(net, x_test[i] / s, x_test[j] / s)
        counts.append(r.regions)
        activation.append(r.activation_regions)
    row = {"data": "digits", "arch": options["arch"], "epochs": options["epochs"],
           "relu_units": net.neurons, "qat_test_acc": qat.metrics["test_acc"],
           "segments": segments, "qat": _stats(counts), "qat_activation": _stats(activation),
           "train_seconds": train_s, "count_seconds": time.perf_counter() - t0}
    print(f"  digits CNN {options['arch']}: {row['qat']['mean']:.1f} regions per segment "
          f"({net.neurons} ReLUs)", flush=True)
    return row


def equivalence(lines: dict[str, list], slices: dict[str, list]) -> list[dict[str, Any]]:
    """Ternary width 2n and n**2 against float width n, ternary depth 2L against float depth
    L (the other size held)."""
    rows = []
    for label, res in (("lines", lines), ("slices", slices)):
        by_width = {r["shape"][1]: r for r in res["width"]}
        by_depth = {len(r["shape"]) - 2: r for r in res["depth"]}
        for n in sorted(by_width):
            if 2 * n in by_width:
                rows.append({"data": label, "compare": f"ternary width {2 * n} / float width {n}",
                             "ternary": by_width[2 * n]["ternary"]["mean"],
                             "float": by_width[n]["float"]["mean"],
                             "same_shape_ratio": by_width[n]["ternary"]["mean"]
                             / by_width[n]["float"]["mean"]})
        for n in sorted(by_width):
            if n * n in by_width and n * n != 2 * n:
                rows.append({"data": label, "compare": f"ternary width {n * n} / float width {n}",
                             "ternary": by_width[n * n]["ternary"]["mean"],
                             "float": by_width[n]["float"]["mean"],
                             "same_shape_ratio": by_width[n]["ternary"]["mean"]
                             / by_width[n]["float"]["mean"]})
        for depth in sorted(by_depth):
            if 2 * depth in by_depth:
                rows.append({"data": label,
                             "compare": f"ternary depth {2 * depth} / float depth {depth}",
                             "ternary": by_depth[2 * depth]["ternary"]["mean"],
                             "float": by_depth[depth]["float"]["mean"],
                             "same_shape_ratio": by_depth[depth]["ternary"]["mean"]
                             / by_depth[depth]["float"]["mean"]})
    for row in rows:
        row["ratio"] = row["ternary"] / row["float"]
    return rows


def _plot_sweeps(res: dict[str, list], title: str, path, paper: list | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, xlabel in ((axes[0], "width", "width (every hidden layer)"),
                            (axes[1], "depth", "hidden layers")):
        rows = res[key]
        x = [r["shape"][1] if key == "width" else len(r["shape"]) - 2 for r in rows]
        for kind, color in (("ternary", "tab:blue"), ("float", "tab:orange")):
            m = np.array([r[kind]["mean"] for r in rows])
            s = np.array([r[kind]["std"] for r in rows])
            ax.errorbar(x, m, yerr=s, marker="o", capsize=3, color=color,
                        label=f"random {kind} (mean, std over seeds)")
        ax.plot(x, [r["general_bound"] for r in rows], "k--",
                label="lower bound on the maximum, general ReLU net")
        if key == "depth" and paper:
            for k, style, w in (("ternary_alternating", "v:", 8),
                                ("ternary_alternating_2n", "^:", 16)):
                ax.plot([r["relu_layers"] for r in paper], [r[k]["mean"] for r in paper], style,
                        color="tab:green" if w == 16 else "tab:olive",
                        label=f"ternary, 2L layers linear/ReLU alternating, width {w} "
                        "(x = L ReLU layers)")
        ax.set_yscale("log")
        if key == "width":
            ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("linear regions")
        fixed = rows[0]["shape"]
        held = f"depth {len(fixed) - 2}" if key == "width" else f"width {fixed[1]}"
        ax.set_title(f"{title}: {held}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6, loc="lower right" if key == "width" else "upper left")
    _save(fig, path)


def _plot_trained(rows: list[dict[str, Any]], saw: list[dict[str, Any]], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    keys = [("qat", "QAT ternary"), ("float", "float MLP"), ("random_ternary", "random ternary"),
            ("random_float", "random float")]
    width = 0.2
    for k, (key, label) in enumerate(keys):
        ax.bar(np.arange(len(rows)) + (k - 1.5) * width, [r[key]["mean"] for r in rows], width,
               yerr=[r[key]["std"] for r in rows], capsize=3, label=label)
    ax.set_xticks(range(len(rows)), [f"{r['data']} {r['shape']}" for r in rows])
    ax.set_ylabel("linear regions per segment (mean, std)")
    ax.set_title("segments between test inputs of different classes")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    ax = axes[1]
    for n in sorted({r["n"] for r in saw}):
        rs = [r for r in saw if r["n"] == n]
        ax.plot([r["depth"] for r in rs], [r["regions"] for r in rs], "o-",
                label=f"ternary sawtooth, width {2 * n - 1}")
        ax.plot([r["depth"] for r in rs], [r["general_bound_width_n"] for r in rs], "x:",
                color=ax.lines[-1].get_color(), label=f"general bound, width {n}")
    ax.set_yscale("log")
    ax.set_xlabel("hidden layers")
    ax.set_ylabel("linear regions (exact)")
    ax.set_title("a constructed ternary network against the general bound")
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3, which="both")
    _save(fig, path)


def _save(fig, path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def table(d: dict) -> list[str]:
    """The README summary of ``regions.json`` (bench/report.py)."""
    out = [f"Linear regions, counted exactly (`python -m bench regions`, {d['seeds']} seeds; "
           "plots `bench/results/regions_*.png`). Random ternary (half zeros, He-scaled) and "
           "float networks of one shape share their biases; lines: 1 input, "
           f"[-{LINE:g}, {LINE:g}]; slices: 2 inputs, [-{SQUARE:g}, {SQUARE:g}]^2. The bound is "
           "Montufar et al.'s lower bound on the *maximum* for a general ReLU network.", "",
           "| input | shape | ternary | (its activation regions) | float | general bound |",
           "|---|---|---:|---:|---:|---:|"]
    for label in ("lines", "slices"):
        for key in ("width", "depth"):
            for r in d[label][key]:
                out.append(f"| {label} ({key}) | {'-'.join(map(str, r['shape']))} "
                           f"| {r['ternary']['mean']:.1f} ± {r['ternary']['std']:.1f} "
                           f"| {r['ternary_activation']['mean']:.1f} "
                           f"| {r['float']['mean']:.1f} ± {r['float']['std']:.1f} "
                           f"| {r['general_bound']:,} |")
    out += ["", "| the paper's equivalence, measured | ternary | float | ratio | ratio at the "
            "same shape |", "|---|---:|---:|---:|---:|"]
    for r in d["equivalence"]:
        out.append(f"| {r['data']}: {r['compare']} | {r['ternary']:.1f} | {r['float']:.1f} "
                   f"| {r['ratio']:.2f} | {r['same_shape_ratio']:.2f} |")
    if d.get("paper_architecture"):
        out += ["", "The paper's architecture: 2L ternary layers, linear and ReLU alternating "
                "(L ReLU layers), against a float network of L ReLU layers at width 8.", "",
                "| input | L | float, width 8 | ternary alternating, width 8 | ratio "
                "| ternary alternating, width 16 | ratio |", "|---|---:|---:|---:|---:|---:|---:|"]
        for r in d["paper_architecture"]:
            f, t1, t2 = (r[k]["mean"] for k in ("float", "ternary_alternating",
                                                 "ternary_alternating_2n"))
            out.append(f"| {r['data']} | {r['relu_layers']} | {f:.1f} | {t1:.1f} | {t1 / f:.2f} "
                       f"| {t2:.1f} | {t2 / f:.2f} |")
    if d.get("trained"):
        out += ["", "| trained MLP | test acc. QAT / float | regions per segment: QAT | float "
                "| random ternary | random float |", "|---|---:|---:|---:|---:|---:|"]
        for r in d["trained"]:
            out.append(f"| {r['data']} {r['shape']} | {r['qat_test_acc']:.1%} / "
                       f"{r['float_test_acc']:.1%} | {r['qat']['mean']:.1f} "
                       f"| {r['float']['mean']:.1f} | {r['random_ternary']['mean']:.1f} "
                       f"| {r['random_float']['mean']:.1f} |")
    if d.get("trained"):
        out += ["", "| trained MLP, slices through three test inputs | QAT | float "
                "| random ternary | random float |", "|---|---:|---:|---:|---:|"]
        for r in d["trained"]:
            sr = r["slice_regions"]
            out.append(f"| {r['data']} {r['shape']} ({r['slices']} slices) "
                       f"| {sr['qat']['mean']:.0f} | {sr['float']['mean']:.0f} "
                       f"| {sr['random_ternary']['mean']:.0f} | {sr['random_float']['mean']:.0f} |")
    cnn = d.get("trained_cnn")
    if cnn:
        out += ["", f"QAT's digits CNN ({cnn['arch']}, {cnn['epochs']} epochs, "
                f"{cnn['qat_test_acc']:.1%}, {cnn['relu_units']} ReLUs) on the first "
                f"{cnn['segments']} of the digits MLPs' segments: "
                f"{cnn['qat']['mean']:.1f} ± {cnn['qat']['std']:.1f} linear regions "
                f"({cnn['qat_activation']['mean']:.1f} activation regions) per segment."]
    saw = d.get("sawtooth", [])
    if saw:
        out += ["", "Ternary sawtooth (`trine.host.regions.sawtooth_program`: width 2n-1, "
                "integer biases, a runnable `.trine`), linear regions on [0, n^L] / on the whole "
                "line, against the general bound at width n: "
                + ", ".join(f"n={r['n']} L={r['depth']}: {r['regions']} / "
                            f"{r['regions_whole_line']} ({r['general_bound_width_n']})"
                            for r in saw if r["depth"] > 1) + "."]
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 seeds, no training")
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args(argv)
    seeds = 2 if args.quick else args.seeds
    t0 = time.perf_counter()
    print("lines (1 input), width sweep, 3 hidden layers:")
    lines = {"width": sweep([[1, w, w, w, 1] for w in LINE_WIDTHS], seeds)}
    print("lines, depth sweep, width 8:")
    lines["depth"] = sweep([[1, *[8] * d, 1] for d in LINE_DEPTHS], seeds)
    print("lines, ternary sparsity sweep, 1-16-16-16-1:")
    sparsity = []
    for p in SPARSITIES:
        row = sweep([[1, 16, 16, 16, 1]], seeds, sparsity=p, kinds=(True,))[0]
        sparsity.append({"sparsity": p, **row})
    print("slices (2 inputs), width sweep, 2 hidden layers:")
    slices = {"width": sweep([[2, w, w, 1] for w in SLICE_WIDTHS], seeds)}
    print("slices, depth sweep, width 8:")
    slices["depth"] = sweep([[2, *[8] * d, 1] for d in SLICE_DEPTHS], seeds)
    print("the paper's architecture (linear and ReLU layers alternating), width 8 and 16:")
    paper = paper_architecture(seeds)
    saw = sawtooth()
    record: dict[str, Any] = {"context": context(), "quick": args.quick, "seeds": seeds,
                              "line": [-LINE, LINE], "square": [-SQUARE, SQUARE],
                              "lines": lines, "slices": slices, "sparsity": sparsity,
                              "paper_architecture": paper,
                              "sawtooth": saw, "equivalence": equivalence(lines, slices)}
    if not args.quick:
        print("trained MLPs:")
        record["trained"] = trained()
        record["trained_cnn"] = trained_cnn()  # the first 20 of the MLPs' segments
    record["seconds"] = time.perf_counter() - t0
    stem = "regions_quick" if args.quick else "regions"
    _plot_sweeps(lines, "lines, 1 input", RESULTS / f"{stem}_lines.png",
                 [r for r in paper if r["data"] == "lines"])
    _plot_sweeps(slices, "slices, 2 inputs", RESULTS / f"{stem}_slices.png",
                 [r for r in paper if r["data"] == "slices"])
    if record.get("trained"):
        _plot_trained(record["trained"], saw, RESULTS / f"{stem}_trained.png")
    write_atomic(RESULTS / f"{stem}.json", json.dumps(record, indent=2) + "\n")
    for row in record["equivalence"]:
        print(f"  {row['data']}: {row['compare']}: {row['ternary']:.1f} / {row['float']:.1f} "
              f"= {row['ratio']:.2f} (same shape {row['same_shape_ratio']:.2f})")
    print(f"({record['seconds']:.0f} s)")
    return record


if __name__ == "__main__":
    main()
