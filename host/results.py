"""What every trainer shares: the accuracy rule, the result record and its JSON file.

A trainer (``trine.host.qat``, ``trine.host.evolve``) returns a :class:`TrainResult` whose
``program`` is
the integer :class:`~trine.host.program.Program` the device runs. Every accuracy in it is computed
from that program's *reference* outputs with :func:`accuracy`, so it is exactly what the device
returns: the predicted class is the index of the largest int8 output, the lowest index on a tie
(``numpy.argmax``), which is also what a user of the device's outputs does.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trine.contract.fileio import write_atomic
from trine.host.program import Program

__all__ = [
    "TrainResult",
    "accuracy",
    "predict",
    "program_accuracy",
    "Stopwatch",
]


def predict(outputs: Any) -> np.ndarray:
    """Class indices from int8 outputs ``(N, M)``: argmax, the lowest index on a tie."""
    y = np.asarray(outputs)
    if y.ndim != 2 or y.shape[1] < 1:
        raise ValueError(f"outputs must have shape (N, M) with M >= 1, not {y.shape}")
    return np.argmax(y, axis=1)


def accuracy(outputs: Any, labels: Any) -> float:
    """Fraction of rows of ``outputs`` whose :func:`predict` equals ``labels``."""
    pred = predict(outputs)
    lab = np.asarray(labels)
    if lab.shape != pred.shape:
        raise ValueError(f"labels have shape {lab.shape}, outputs give {pred.shape}")
    return float(np.mean(pred == lab)) if len(lab) else 0.0


def program_accuracy(program: Program, x: Any, labels: Any) -> float:
    """Accuracy of ``program`` on raw inputs ``x`` through the bit-exact reference."""
    return accuracy(program.run_reference(x), labels)


@dataclass
class TrainResult:
    """A trained integer program and how it got there.

    Attributes
    ----------
    program : Program
        What the device runs (input_scale set, so raw float inputs can be given).
    method : str
        "qat", "evolve", ...
    settings : dict
        Every argument that determines the run (seed included): rerunning with them gives the
        same program.
    history : list of dict
        One entry per evaluation point, at least ``elapsed_s`` and ``train_acc`` (reference
        accuracy of the integer program at that point), ``test_acc`` when test data was given.
    metrics : dict
        Final figures, e.g. ``train_acc``, ``test_acc``, ``float_test_acc``, ``seconds``.
    """

    program: Program
    method: str
    settings: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Everything but the program itself (save that with ``program.save``)."""
        return {
            "method": self.method,
            "settings": _plain(self.settings),
            "metrics": _plain(self.metrics),
            "history": _plain(self.history),
            "program": self.program.stats(),
            "machine": {
                "python": sys.version.split()[0],
                "numpy": np.__version__,
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
            },
        }

    def save_json(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_json` atomically (indent 2)."""
        write_atomic(path, json.dumps(self.to_json(), indent=2) + "\n")


def _plain(v: Any) -> Any:
    """NumPy scalars and arrays to JSON-able Python values; non-finite floats to None."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return _plain(v.tolist())
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class Stopwatch:
    """Elapsed wall-clock seconds since construction (``time.perf_counter``)."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self._t0
