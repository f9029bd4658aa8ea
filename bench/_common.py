"""Shared bits of the benchmarks: timing and saving figures as JSON with their context."""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def best_time(fn, repeat: int = 5, min_time: float = 0.2) -> float:
    """Best wall time of ``fn()`` over ``repeat`` rounds (each round at least ``min_time``)."""
    fn()  # warm up caches and lazy imports
    best = float("inf")
    for _ in range(repeat):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_time:
                break
        best = min(best, elapsed / n)
    return best


def context() -> dict:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
    }


def save(name: str, figures: dict) -> Path:
    from trine.contract.fileio import write_atomic

    path = RESULTS / f"{name}.json"
    write_atomic(path, json.dumps({"context": context(), **figures}, indent=2) + "\n")
    return path
