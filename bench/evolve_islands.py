"""Evolution at scale: the island search in-process and on 1 and 2 Ray workers, side by side.

``python -m bench evolve_islands`` trains the digits MLP of ``bench evolve`` (64-128-10) by the
island search with a generation limit, so every engine must give the same program, and times
each: in this process, on one Ray worker, on two. The speed-up is the wall time on one Ray
worker over that on two (Ray's start included, and separately without it), measured in one
run on the same machine. The load average at the start is recorded: on a machine shared
with other jobs the two workers cannot get two cores.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from bench._common import save

DATA = "digits"
HIDDEN = (128,)
ISLANDS = 4


def _same(a, b) -> bool:
    return all(np.array_equal(p.weights, q.weights) and np.array_equal(p.bias, q.bias)
               and p.shift == q.shift for p, q in zip(a.layers, b.layers, strict=True))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.evolve_islands", description=__doc__)
    p.add_argument("--generations", type=int, default=4000, help="per island (default 4000)")
    p.add_argument("--migrate-every", type=int, default=500)
    args = p.parse_args(argv)
    import ray

    from trine.host.data import load_digits_split
    from trine.host.evolve import train_evolve

    x, y, xt, yt = load_digits_split()
    common = dict(hidden=HIDDEN, budget_s=None, max_generations=args.generations,
                  islands=ISLANDS, migrate_every=args.migrate_every, x_test=xt, y_test=yt)
    load = os.getloadavg()[0]
    runs, programs = [], {}
    for name, workers in (("in-process", None), ("ray, 1 worker", 1), ("ray, 2 workers", 2)):
        t0 = time.perf_counter()
        start = 0.0
        if workers is not None:
            os.environ.setdefault("RAY_worker_niceness", "0")
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                     object_store_memory=256 << 20, logging_level="ERROR")
            start = time.perf_counter() - t0
        try:
            r = train_evolve(x, y, **common, **({} if workers is None else {"workers": workers}))
        finally:
            if workers is not None:
                ray.shutdown()
        wall = time.perf_counter() - t0
        programs[name] = r.program
        runs.append({"engine": name, "workers": workers or 1, "wall_s": round(wall, 2),
                     "ray_start_s": round(start, 2), "search_s": round(wall - start, 2),
                     "test_acc": r.metrics["test_acc"], "train_acc": r.metrics["train_acc"],
                     "epochs": r.metrics["epochs"]})
        print(f"{name:15s} {wall:7.1f} s (Ray start {start:4.1f} s)  "
              f"test {r.metrics['test_acc']:.2%}", flush=True)
    same = all(_same(programs["in-process"], prog) for prog in programs.values())
    one, two = runs[1], runs[2]
    ratios = {"speedup_2_vs_1_workers": round(one["wall_s"] / two["wall_s"], 2),
              "speedup_2_vs_1_workers_search": round(one["search_s"] / two["search_s"], 2),
              "speedup_2_workers_vs_in_process": round(runs[0]["wall_s"] / two["wall_s"], 2)}
    print(f"same program on every engine: {same}; 2 workers vs 1: "
          f"{ratios['speedup_2_vs_1_workers']}x ({ratios['speedup_2_vs_1_workers_search']}x "
          f"without Ray's start)")
    figures = {"settings": {"data": DATA, "hidden": list(HIDDEN), "islands": ISLANDS,
                            "generations_per_island": args.generations,
                            "migrate_every": args.migrate_every, "seed": 0,
                            "load_average_at_start": round(load, 2), "ray": ray.__version__},
               "runs": runs, "same_program": same, "ratios": ratios}
    save("evolve_islands", figures)
    return figures


if __name__ == "__main__":
    main()
