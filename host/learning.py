"""What every trainer shares: the error, the checks of data and settings, Adam, the cosine
schedule, the softmax cross-entropy, the input range rule and one BLAS thread.

Used by :mod:`trine.host.mlp` (the float baseline), :mod:`trine.host.qat` and
:mod:`trine.host.evolve`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from trine.contract.errors import TrineError

__all__ = [
    "TrainError",
    "Progress",
    "check_features",
    "check_labels",
    "check_data",
    "check_int",
    "check_float",
    "check_hidden",
    "check_progress",
    "input_range",
    "single_threaded_blas",
    "Adam",
    "cosine",
    "softmax_xent",
]

Progress = Callable[[float, str], None]


class TrainError(TrineError, ValueError):
    """Training data or hyper-parameters that a trainer cannot accept."""


# ---------------------------------------------------------------------------------------------
# Checks shared by the trainers
# ---------------------------------------------------------------------------------------------


def check_features(x: Any, name: str, width: int | None = None) -> np.ndarray:
    """``x`` as a finite float64 ``(N, K)`` array with ``N >= 1``, else :class:`TrainError`."""
    try:
        a = np.asarray(x)
    except ValueError as e:
        raise TrainError(f"{name} must be a rectangular numeric array: {e}") from None
    if a.dtype.kind not in "fiu" or a.dtype == np.bool_:
        raise TrainError(f"{name} must be a real numeric array, not dtype {a.dtype}")
    if a.ndim != 2:
        raise TrainError(f"{name} must have shape (N, K), not {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise TrainError(f"{name} is empty: shape {a.shape}")
    if width is not None and a.shape[1] != width:
        raise TrainError(f"{name} has {a.shape[1]} features per sample, expected {width}")
    a = a.astype(np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise TrainError(f"{name} must be finite (no NaN or inf): {a[i, j]} at ({i}, {j})")
    return a


def check_labels(y: Any, name: str, n: int, n_classes: int | None = None) -> np.ndarray:
    """``y`` as int64 ``(n,)`` in ``[0, n_classes)``, else :class:`TrainError`."""
    a = np.asarray(y)
    if a.dtype.kind not in "iu":
        raise TrainError(f"{name} must be integer class indices, not dtype {a.dtype}")
    if a.shape != (n,):
        raise TrainError(f"{name} must have shape ({n},) to match the features, not {a.shape}")
    a = a.astype(np.int64)
    if a.min() < 0:
        i = int(np.argmin(a))
        raise TrainError(f"{name} must be >= 0: value {int(a[i])} at {i}")
    if n_classes is not None and a.max() >= n_classes:
        i = int(np.argmax(a))
        raise TrainError(
            f"{name} must be < {n_classes} (the number of classes): value {int(a[i])} at {i}"
        )
    return a


def check_data(
    x_train: Any, y_train: Any, x_test: Any, y_test: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, int]:
    """Validate a train (and optional test) split; returns them and the number of classes.

    The classes are ``0 .. max(y_train)``; at least two; test labels must lie among them.
    """
    x = check_features(x_train, "x_train")
    y = check_labels(y_train, "y_train", x.shape[0])
    n_classes = int(y.max()) + 1
    if n_classes < 2:
        raise TrainError(f"y_train must hold at least 2 classes, max label is {n_classes - 1}")
    if (x_test is None) != (y_test is None):
        raise TrainError("give both x_test and y_test, or neither")
    xt = yt = None
    if x_test is not None:
        xt = check_features(x_test, "x_test", x.shape[1])
        yt = check_labels(y_test, "y_test", xt.shape[0], n_classes)
    return x, y, xt, yt, n_classes


def check_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise TrainError(f"{name} must be an integer >= {minimum}, not {value!r}")
    return int(value)


def check_float(value: Any, name: str, *, minimum: float = 0.0, strict: bool = True,
                maximum: float = math.inf) -> float:
    ok = (not isinstance(value, bool) and isinstance(value, int | float | np.integer | np.floating)
          and math.isfinite(float(value)))
    if ok:
        v = float(value)
        ok = (v > minimum if strict else v >= minimum) and v <= maximum
    if not ok:
        low = f"> {minimum}" if strict else f">= {minimum}"
        high = f" and <= {maximum}" if math.isfinite(maximum) else ""
        raise TrainError(f"{name} must be a finite number {low}{high}, not {value!r}")
    return float(value)


def check_hidden(hidden: Any) -> tuple[int, ...]:
    if isinstance(hidden, int | np.integer) and not isinstance(hidden, bool):
        hidden = (hidden,)
    if isinstance(hidden, str | bytes) or not isinstance(hidden, Sequence):
        raise TrainError(f"hidden must be a sequence of layer widths, not {hidden!r}")
    return tuple(check_int(h, f"hidden[{i}]") for i, h in enumerate(hidden))


def check_progress(progress: Any) -> Progress | None:
    if progress is not None and not callable(progress):
        raise TrainError(f"progress must be callable(fraction, message) or None, not {progress!r}")
    return progress


def input_range(x: np.ndarray, percentile: float) -> float:
    """The ``percentile`` of ``|x|`` (the largest value if that is 0); 1.0 for all zeros."""
    mag = np.abs(x)
    q = float(np.percentile(mag, percentile))
    if q <= 0:
        q = float(mag.max())
    return q if q > 0 else 1.0


def single_threaded_blas() -> contextlib.AbstractContextManager:
    """Limit BLAS to one thread while training, if ``threadpoolctl`` is available.

    The matrices of a training step are small (a minibatch by a few hundred): BLAS threads cost
    more in waking and synchronising than they gain, by far on a shared 2-core machine.
    Results do not depend on it (threads split rows and columns, never a sum).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn brings it; without it, BLAS keeps its own setting
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


# ---------------------------------------------------------------------------------------------
# Optimiser and schedule
# ---------------------------------------------------------------------------------------------


class Adam:
    """Adam (Kingma and Ba) on a list of arrays, updated in place; AdamW-style weight decay."""

    def __init__(self, params: list[np.ndarray], beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8) -> None:
        self.params = params
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.t = 0

    def step(self, grads: list[np.ndarray], lrs: Sequence[float],
             decays: Sequence[float]) -> None:
        self.t += 1
        c1 = 1 - self.beta1**self.t
        c2 = 1 - self.beta2**self.t
        for p, g, m, v, lr, wd in zip(self.params, grads, self.m, self.v, lrs, decays,
                                      strict=True):
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * g * g
            if wd:
                p *= 1 - lr * wd
            p -= lr * (m / c1) / (np.sqrt(v / c2) + self.eps)

    def rescale(self, index: int, factor: float) -> None:
        """Parameter ``index`` was multiplied by ``factor``: keep its moments consistent."""
        self.m[index] *= factor
        self.v[index] *= factor * factor


def cosine(progress: float) -> float:
    """Cosine learning-rate factor: 1 at the start, 0 at ``progress = 1``."""
    return 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def softmax_xent(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy and its gradient with respect to ``logits``."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    n = len(y)
    loss = float(np.mean(np.log(s[:, 0]) - z[np.arange(n), y]))
    g = e / s
    g[np.arange(n), y] -= 1
    return loss, g / n
