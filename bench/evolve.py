"""Evolutionary training (``trine.host.evolve``) on digits and MNIST-1D: accuracy against time.

``python -m bench.evolve [--quick] [--runs digits,mnist1d,mnist1d_deep,mnist1d_cnn]`` evolves a
ternary network for each run of :data:`CONFIGS` (MLPs, and the MNIST-1D CNN of
``trine.host.qat.DEFAULTS["mnist1d"]["cnn"]``) with the default search settings and a
wall-clock budget,
and saves ``bench/results/evolve.json`` (settings, metrics, history) and one PNG per run
(``evolve_<run>.png``: test accuracy by the bit-exact reference against seconds). When
``trine.host.qat`` is available, quantisation-aware training and the float MLP run at the same shape
in the same process, one after the other, and go on the same axes: the comparison is measured
side by side on one machine state (for the CNN: QAT with its defaults, no float model).
``--no-compare`` leaves them out. Runs not selected keep their earlier entries in the JSON.

Every accuracy is the reference's (``Program.run_reference``), except the float MLP's, which is
its own float forward pass. Timings are wall-clock on whatever else the machine is doing: the
JSON records the load average before and after each run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import time
from typing import Any

from bench._common import RESULTS, context
from trine.contract.fileio import write_atomic
from trine.host.data import load_dataset
from trine.host.evolve import train_evolve

# Runs: data set, shape and budget, all within the default simulated device (widths <= 256,
# <= 80k weights): digits 64-128-10 (9,472 weights); MNIST-1D 40-256-10 (12,800 weights) and
# 40-256-256-10 (78,336 weights, the shape of trine.host.qat.DEFAULTS["mnist1d"]). QAT and the float
# MLP run with trine.host.qat.DEFAULTS for the data set, at the same shape.
CONFIGS: dict[str, dict[str, Any]] = {
    "digits": {"data": "digits", "hidden": (128,), "budget_s": 300.0, "quick_budget_s": 30.0},
    "mnist1d": {"data": "mnist1d", "hidden": (256,), "budget_s": 300.0,
                "quick_budget_s": 30.0},
    "mnist1d_deep": {"data": "mnist1d", "hidden": (256, 256), "budget_s": 300.0,
                     "quick_budget_s": 30.0},
    # the MNIST-1D CNN that QAT trains by default (trine train --data mnist1d --model cnn)
    "mnist1d_cnn": {"data": "mnist1d", "cnn": True, "budget_s": 300.0, "quick_budget_s": 30.0},
}


def _cnn_settings(data_name: str) -> dict[str, Any]:
    from trine.host.qat import DEFAULTS

    return dict(DEFAULTS[data_name]["cnn"])


def _shape(cfg: dict[str, Any], n_inputs: int) -> dict[str, Any]:
    """The network of a run as train_evolve / train_qat keywords."""
    if cfg.get("cnn"):
        s = _cnn_settings(cfg["data"])
        return {"arch": s["arch"], "input_shape": tuple(s["input_shape"])}
    return {"hidden": cfg["hidden"]}


def _describe(shape: dict[str, Any], n_inputs: int) -> str:
    if "arch" in shape:
        return shape["arch"]
    return "-".join(map(str, [n_inputs, *shape["hidden"], 10]))


def _load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def _run_evolve(name: str, data, shape: dict[str, Any], budget_s: float,
                seed: int) -> dict[str, Any]:
    x, y, xt, yt = data
    load_before = _load()
    r = train_evolve(x, y, **shape, budget_s=budget_s, seed=seed, x_test=xt, y_test=yt)
    m = r.metrics
    print(f"{name:8s} evolve  {_describe(shape, x.shape[1]):>12s} "
          f"test {m['test_acc']:.4f} train {m['train_acc']:.4f} in {m['seconds']:.0f} s, "
          f"{m['generations']} generations, {m['evaluations']} evaluations, "
          f"sparsity {m['sparsity']:.2f}", flush=True)
    return {"method": "evolve", **r.to_json(), "load_before": load_before, "load_after": _load()}


def _run_qat(name: str, data, shape: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """QAT and the float MLP (MLPs only) at the same shape, if trine.host.qat exists."""
    try:
        from trine.host import qat
    except ImportError:
        return []
    x, y, xt, yt = data
    runs = []
    defaults = getattr(qat, "DEFAULTS", {}).get(name, {})
    if "arch" in shape:
        methods = [("qat", qat.train_qat, {**defaults.get("cnn", {}), **shape})]
    else:
        methods = [(m, fn, {**defaults.get(m, {}), **shape}) for m, fn in
                   (("qat", qat.train_qat), ("float", getattr(qat, "train_float_mlp", None)))
                   if fn is not None]
    for method, fn, settings in methods:
        kwargs = {**settings, "seed": seed}
        load_before = _load()
        t0 = time.perf_counter()
        r = fn(x, y, x_test=xt, y_test=yt, **kwargs)
        seconds = time.perf_counter() - t0
        entry = _as_json(r)
        entry.update(method=method, seconds=seconds, load_before=load_before, load_after=_load())
        entry.setdefault("settings", {k: list(v) if isinstance(v, tuple) else v
                                      for k, v in kwargs.items()})
        test = _final_test_acc(entry)
        print(f"{name:8s} {method:7s} test {test if test is None else f'{test:.4f}'} "
              f"in {seconds:.0f} s", flush=True)
        runs.append(entry)
    return runs


def _as_json(r: Any) -> dict[str, Any]:
    if hasattr(r, "to_json"):
        return r.to_json()
    return {"settings": dict(getattr(r, "settings", {})),
            "history": list(getattr(r, "history", [])),
            "metrics": dict(getattr(r, "metrics", {}))}


def _json_default(v: Any) -> Any:
    """NumPy scalars and arrays (a float MLP's figures) as plain JSON values."""
    if hasattr(v, "tolist"):
        return v.tolist()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def _final_test_acc(entry: dict[str, Any]) -> float | None:
    m = entry.get("metrics", {})
    for key in ("test_acc", "float_test_acc"):
        if m.get(key) is not None:
            return m[key]
    hist = entry.get("history") or [{}]
    return hist[-1].get("test_acc")


def _plot(name: str, runs: list[dict[str, Any]], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for run in runs:
        pts = [(h["elapsed_s"], h["test_acc"]) for h in run.get("history", [])
               if h.get("elapsed_s") is not None and h.get("test_acc") is not None]
        if not pts:
            continue
        t, acc = zip(*pts, strict=True)
        settings = run.get("settings", {})
        shape = (settings["arch"] if settings.get("arch") else
                 "hidden " + "-".join(str(w) for w in settings.get("hidden", [])))
        what = {"evolve": "evolution", "qat": "QAT", "float": "float MLP (not ternary)"}
        ax.plot(t, [100 * a for a in acc],
                label=f"{what.get(run['method'], run['method'])}, {shape}")
    ax.set_xscale("log")
    ax.set_xlabel("seconds (wall clock, log scale; shared 2-core machine)")
    ax.set_ylabel("test accuracy, % (ternary: bit-exact reference)")
    ax.set_title(f"{name}: accuracy against training time")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="short evolution budgets (30 s per data set)")
    parser.add_argument("--no-compare", action="store_true",
                        help="evolution only, without QAT and the float MLP")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of evolution per data set (overrides the defaults)")
    parser.add_argument("--runs", default=",".join(CONFIGS),
                        help="comma-separated subset of " + ",".join(CONFIGS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    names = [n for n in args.runs.split(",") if n]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown run {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    path = RESULTS / "evolve.json"
    earlier: dict[str, Any] = {}
    if path.exists():  # runs not selected keep their entries (each records its own context)
        with contextlib.suppress(OSError, ValueError):
            earlier = json.loads(path.read_text()).get("runs", {})
    figures: dict[str, Any] = {"quick": args.quick, "runs": earlier}
    for name in names:
        cfg = CONFIGS[name]
        budget = args.budget or (cfg["quick_budget_s"] if args.quick else cfg["budget_s"])
        data = load_dataset(cfg["data"])
        shape = _shape(cfg, data[0].shape[1])
        runs = [_run_evolve(name, data, shape, budget, args.seed)]
        if not args.no_compare:
            runs += _run_qat(cfg["data"], data, shape, args.seed)
        png = RESULTS / f"evolve_{name}.png"
        _plot(name, runs, png)
        figures["runs"][name] = {"data": cfg["data"], **{k: list(v) if isinstance(v, tuple)
                                                         else v for k, v in shape.items()},
                                 "budget_s": budget, "figure": png.name, "results": runs,
                                 "context": context(), "quick": args.quick}
    text = json.dumps({"context": context(), **figures}, indent=2, default=_json_default)
    write_atomic(path, text + "\n")
    print(f"saved {path}")
    return figures


if __name__ == "__main__":
    main()
