"""The simulated device on both engines, side by side: simulated cycles per second and the wall
time of real workloads through the host client.

Each engine serves the same device (:data:`trine.contract.params.SIMULATED` at 12 MHz, 3 Mbaud)
in byte mode, and in uart mode with ``--uart``: ``native`` (:mod:`trine.sim.native`, Verilator
and a C++ bridge) and ``cocotb`` (:mod:`trine.sim.serve` on Verilator, the faster of its two
simulators). The workloads, the same bytes on every engine:

* ``compute``: a 64-192-192-10 MLP loaded once, then RUNs of the largest batch; nearly all
  simulated cycles are the core's, so the rate is the simulator's.
* ``digits``: ``evaluate(..., backend="device")`` of a digits MLP (QAT, hidden 64, a short
  training: the weights do not change the cycles) on the test split: connect, load, every
  sample, and the latency probe, as ``trine eval --backend device`` does.
* ``mnist1d-cnn`` (``--cnn``): the same for the MNIST-1D CNN of QAT's default architecture on
  its 1000 test samples, when the device can hold it.

Simulated cycles per second are the servers' own figures (``--stats``: cycles simulated while
work was pending over the wall time that took; the native engine also reports its CPU time,
which the machine's other load does not change). Every output is checked against the
reference; the run records the load average, since the machine is shared.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._common import save
from trine.contract.reference import Layer
from trine.host.client import Client
from trine.host.evaluate import evaluate
from trine.host.program import Program

ENGINES = ("native", "cocotb")
#: The cocotb engine's simulator: Verilator, the faster of the two under cocotb.
COCOTB_SIM = "verilator"
COMPUTE_WIDTHS = [64, 192, 192, 10]
COMPUTE_RUNS = 6


@contextlib.contextmanager
def _server(engine: str, mode: str, stats: Path):
    if engine == "native":
        from trine.sim import native

        with native.serve(mode, once=False, stats_file=stats) as url:
            yield url
    else:
        from trine.sim.serve import serve

        with serve(COCOTB_SIM, mode, once=False, stats_file=stats) as url:
            yield url


def _sessions(stats: Path) -> list[dict]:
    return [json.loads(line) for line in stats.read_text().splitlines()] if stats.exists() else []


def _rate(sessions: list[dict], key: str) -> float | None:
    cycles = sum(s["busy_cycles"] for s in sessions)
    seconds = sum(s.get(key) or 0.0 for s in sessions)
    return cycles / seconds if seconds > 0 else None


def _compute(url: str, rng) -> dict:
    program = Program([Layer(rng.integers(-1, 2, (m, k)), rng.integers(-500, 500, m), 4, True)
                       for k, m in zip(COMPUTE_WIDTHS, COMPUTE_WIDTHS[1:], strict=False)])
    with Client(url, timeout=120) as client:
        batch = client.info().max_batch
        client.load(program)
        x = rng.integers(-128, 128, (batch, program.input_width)).astype(np.int8)
        t0, cycles = time.perf_counter(), 0
        for _ in range(COMPUTE_RUNS):
            y, c = client.infer_batch(x)
            assert np.array_equal(y, program.run_reference(x)), "compute: wrong outputs"
            cycles += sum(c)
        seconds = time.perf_counter() - t0
    return {"what": f"MLP {'-'.join(map(str, COMPUTE_WIDTHS))}, {COMPUTE_RUNS} RUNs of batch "
            f"{batch}", "run_cycles": cycles, "wall_s": seconds}


def _trained(name: str):
    """(program, x_test, y_test, description) for a workload data set."""
    from trine.host.data import load_dataset
    from trine.host.qat import DEFAULTS, train_qat

    x_tr, y_tr, x_te, y_te = load_dataset(name.split("-")[0])
    if name == "digits":
        settings = dict(DEFAULTS["digits"]["qat"], epochs=20)
        what = "digits MLP (QAT, hidden 64, 20 epochs)"
    else:
        settings = dict(DEFAULTS["mnist1d"]["cnn"], epochs=2)
        what = f"MNIST-1D CNN ({settings['arch']}, QAT, 2 epochs)"
    program = train_qat(x_tr, y_tr, seed=0, **settings).program
    return program, x_te, y_te, what


def _evaluate(url: str, workload) -> dict:
    program, x, y, what = workload
    t0 = time.perf_counter()
    ev = evaluate(program, x, y, backend="device", url=url, timeout=120)
    wall = time.perf_counter() - t0
    assert ev.mismatches == 0, f"{what}: {ev.mismatches} outputs differ from the reference"
    return {"what": f"{what}, test split ({ev.samples} samples)", "wall_s": wall,
            "infer_s": ev.seconds, "accuracy": ev.accuracy,
            "cycles_per_inference": ev.device["cycles_per_inference"],
            "run_cycles": ev.device["cycles"]}


def run_engine(engine: str, mode: str, workloads: dict, seed: int = 0) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "stats.jsonl"
        t0 = time.perf_counter()
        with _server(engine, mode, stats) as url:
            startup = time.perf_counter() - t0
            results = {"compute": _compute(url, np.random.default_rng(seed))}
            for name, workload in workloads.items():
                results[name] = _evaluate(url, workload)
            # the server writes a session's line when its client has gone
            deadline = time.monotonic() + 30
            while len(_sessions(stats)) < 1 + len(workloads) and time.monotonic() < deadline:
                time.sleep(0.1)
        sessions = _sessions(stats)
    # the sessions in order: compute, then evaluate's client for each workload
    rates = {"compute": _rate(sessions[:1], "busy_wall_s"),
             "all": _rate(sessions, "busy_wall_s"),
             "compute_cpu": _rate(sessions[:1], "busy_cpu_s")}
    return {"engine": engine, "mode": mode, "startup_s": startup,
            "cycles_per_s": rates["compute"], "cycles_per_s_all": rates["all"],
            "cycles_per_cpu_s": rates["compute_cpu"], "workloads": results}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uart", action="store_true", help="uart mode too")
    parser.add_argument("--cnn", action="store_true", help="the MNIST-1D CNN workload too")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    args = parser.parse_args(argv)
    workloads = {"digits": _trained("digits")}
    if args.cnn:
        workloads["mnist1d-cnn"] = _trained("mnist1d-cnn")
    runs = []
    for mode in ("byte", "uart") if args.uart else ("byte",):
        for engine in args.engines:
            print(f"{engine}, {mode} mode ...", flush=True)
            r = run_engine(engine, mode, workloads if mode == "byte" else {})
            runs.append(r)
            print(f"  {r['cycles_per_s'] or 0:,.0f} simulated cycles/s (compute), startup "
                  f"{r['startup_s']:.1f} s; "
                  + "; ".join(f"{k} {w['wall_s']:.1f} s" for k, w in r["workloads"].items()),
                  flush=True)
    by = {(r["engine"], r["mode"]): r for r in runs}
    speedup = {}
    for mode in {r["mode"] for r in runs}:
        n, c = by.get(("native", mode)), by.get(("cocotb", mode))
        if n and c and n["cycles_per_s"] and c["cycles_per_s"]:
            speedup[mode] = {
                "cycles": n["cycles_per_s"] / c["cycles_per_s"],
                **{k: c["workloads"][k]["wall_s"] / n["workloads"][k]["wall_s"]
                   for k in n["workloads"]}}
    native_byte = by.get(("native", "byte"), {}).get("cycles_per_s")
    figures = {
        "device": "SIMULATED at 12 MHz, 3 Mbaud",
        "cocotb_simulator": COCOTB_SIM,
        "load_average": list(os.getloadavg()),
        "runs": runs,
        "speedup": speedup,
        "targets": {"native_byte_cycles_per_s": {
            "value": native_byte, "target": 1.5e6,
            "pass": None if native_byte is None else native_byte >= 1.5e6},
            "speedup_byte": {
                "value": speedup.get("byte", {}).get("cycles"), "target": 15,
                "pass": None if "byte" not in speedup else speedup["byte"]["cycles"] >= 15}},
    }
    print(f"saved {save('sim_engines', figures)}")
    return figures


if __name__ == "__main__":
    main()
