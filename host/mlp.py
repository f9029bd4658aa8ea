"""A float MLP in plain NumPy: the baseline every ternary figure is compared with.

:func:`train_float_mlp` trains ``y = W_L relu(... relu(W_1 x + b_1) ...) + b_L`` with softmax
cross-entropy, He initialisation, mini-batch AdamW (decoupled weight decay) and a cosine
learning-rate schedule, reproducibly from ``seed``. It is also the starting point that
:func:`trine.host.qat.train_qat` can fine-tune into a ternary program.

Input preprocessing: the float model sees ``x / input_range``, one global scale for every
feature (``input_range`` is the ``input_percentile`` of ``|x_train|``, the same rule the
ternary model's int8 input quantisation uses, see :func:`input_range`). The scale is folded
into the first layer before returning, so the returned layers take *raw* inputs, in the format
:func:`trine.host.ternarize.fold_to_program` takes: a list of ``(W (M, K) float64, b (M,), relu)``.

This module also holds what both trainers share: :class:`TrainError`, the checks of data and
hyper-parameters, and the Adam optimiser.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trine.contract.errors import TrineError
from trine.host.results import Stopwatch

__all__ = [
    "TrainError",
    "FloatMLP",
    "train_float_mlp",
    "float_forward",
    "float_accuracy",
    "input_range",
]

FloatLayers = list[tuple[np.ndarray, np.ndarray, bool]]
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

    The matrices here are small (a batch of 64 by a few hundred): BLAS threads cost more in
    synchronisation than they gain, and on a shared 2-core machine measured 4-6x slower than
    one thread. Results do not depend on it (threads split rows and columns, never the sum).
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


# ---------------------------------------------------------------------------------------------
# The float MLP
# ---------------------------------------------------------------------------------------------


def float_forward(layers: Sequence[tuple[Any, Any, bool]], x: Any) -> np.ndarray:
    """Logits of a float MLP given as ``(W, b, relu)`` layers on raw inputs ``(N, K)``."""
    h = np.asarray(x, dtype=np.float64)
    for w, b, relu in layers:
        h = h @ np.asarray(w, dtype=np.float64).T + b
        if relu:
            h = np.maximum(h, 0.0)
    return h


def float_accuracy(layers: Sequence[tuple[Any, Any, bool]], x: Any, y: Any) -> float:
    """Accuracy of :func:`float_forward`'s argmax (lowest index on ties) against ``y``."""
    return float(np.mean(np.argmax(float_forward(layers, x), axis=1) == np.asarray(y)))


@dataclass
class FloatMLP:
    """A trained float MLP on raw inputs and its figures.

    Attributes
    ----------
    layers : list of (W (M, K) float64, b (M,) float64, relu)
        Takes raw inputs (the input scaling is folded into layer 0).
    settings : dict
        Every argument that determines the run.
    metrics : dict
        ``train_acc``, ``test_acc`` (if test data was given), ``seconds``.
    history : list of dict
        Per epoch: ``elapsed_s``, ``epoch``, ``train_acc``, ``test_acc``, ``loss``.
    """

    layers: FloatLayers
    settings: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)

    def predict(self, x: Any) -> np.ndarray:
        """Class indices for raw inputs ``(N, K)``."""
        return np.argmax(float_forward(self.layers, x), axis=1)


def train_float_mlp(
    x_train: Any,
    y_train: Any,
    *,
    hidden: Sequence[int] | int = (64,),
    epochs: int = 300,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.1,
    input_percentile: float = 99.9,
    seed: int = 0,
    x_test: Any = None,
    y_test: Any = None,
    progress: Progress | None = None,
) -> FloatMLP:
    """Train a float MLP with softmax cross-entropy and AdamW, reproducibly from ``seed``.

    Parameters
    ----------
    x_train : float array (N, K)
        Raw features (any units).
    y_train : int array (N,)
        Class indices ``0 .. C-1``; ``C = max(y_train) + 1``.
    hidden : sequence of int
        Widths of the hidden ReLU layers (may be empty: a linear classifier).
    epochs, batch_size : int
        Passes over the shuffled training set and samples per Adam step.
    lr : float
        Peak learning rate, decayed to 0 on a cosine over the run.
    weight_decay : float
        Decoupled (AdamW) decay of the weight matrices, not the biases.
    input_percentile : float
        Inputs are divided by this percentile of ``|x_train|`` (in ``(0, 100]``).
    seed : int
        Initialisation and batch order.
    x_test, y_test : arrays, optional
        Evaluated after every epoch (never used for training).
    progress : callable(fraction, message), optional
        Called after every epoch, e.g. :func:`trine.host.results.progress_printer`.

    Returns
    -------
    FloatMLP

    Raises
    ------
    TrainError
        For malformed or non-finite data, labels that are not integers in range, and
        hyper-parameters out of range, naming the argument and the value.
    """
    x, y, xt, yt, n_classes = check_data(x_train, y_train, x_test, y_test)
    widths = check_hidden(hidden)
    epochs = check_int(epochs, "epochs")
    batch_size = check_int(batch_size, "batch_size")
    lr = check_float(lr, "lr")
    weight_decay = check_float(weight_decay, "weight_decay", strict=False)
    input_percentile = check_float(input_percentile, "input_percentile", maximum=100.0)
    seed = check_int(seed, "seed", minimum=0)
    progress = check_progress(progress)
    settings = dict(hidden=list(widths), epochs=epochs, batch_size=batch_size, lr=lr,
                    weight_decay=weight_decay, input_percentile=input_percentile, seed=seed)

    with single_threaded_blas():
        return _train_float(x, y, xt, yt, n_classes, widths, settings, progress)


def _train_float(x, y, xt, yt, n_classes, widths, settings, progress) -> FloatMLP:
    epochs, batch_size, lr = settings["epochs"], settings["batch_size"], settings["lr"]
    weight_decay = settings["weight_decay"]
    clock = Stopwatch()
    rng = np.random.default_rng(settings["seed"])
    scale = input_range(x, settings["input_percentile"])
    xs = (x / scale).astype(np.float32)
    dims = [x.shape[1], *widths, n_classes]
    ws = [rng.normal(0.0, math.sqrt(2.0 / k), (m, k)).astype(np.float32)
          for k, m in zip(dims, dims[1:], strict=False)]
    bs = [np.zeros(m, np.float32) for m in dims[1:]]
    n_layers = len(ws)
    opt = Adam(ws + bs)
    steps_per_epoch = -(-len(xs) // batch_size)
    total = epochs * steps_per_epoch

    def layers_raw() -> FloatLayers:
        out = [(w.astype(np.float64), b.astype(np.float64), i < n_layers - 1)
               for i, (w, b) in enumerate(zip(ws, bs, strict=True))]
        out[0] = (out[0][0] / scale, out[0][1], out[0][2])
        return out

    history: list[dict[str, float]] = []
    step = 0
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(xs))
        losses = []
        for start in range(0, len(xs), batch_size):
            idx = order[start:start + batch_size]
            hs = [xs[idx]]
            for i in range(n_layers):
                h = hs[-1] @ ws[i].T + bs[i]
                hs.append(np.maximum(h, 0) if i < n_layers - 1 else h)
            loss, g = softmax_xent(hs[-1].astype(np.float64), y[idx])
            g = g.astype(np.float32)
            losses.append(loss)
            gw: list[np.ndarray] = [None] * n_layers  # type: ignore[list-item]
            gb: list[np.ndarray] = [None] * n_layers  # type: ignore[list-item]
            for i in reversed(range(n_layers)):
                gw[i] = g.T @ hs[i]
                gb[i] = g.sum(axis=0)
                if i:
                    g = (g @ ws[i]) * (hs[i] > 0)
            f = lr * cosine(step / total)
            opt.step(gw + gb, [f] * (2 * n_layers), [weight_decay] * n_layers + [0.0] * n_layers)
            step += 1
        layers = layers_raw()
        entry = {"elapsed_s": clock(), "epoch": epoch,
                 "train_acc": float_accuracy(layers, x, y), "loss": float(np.mean(losses))}
        if xt is not None:
            entry["test_acc"] = float_accuracy(layers, xt, yt)
        history.append(entry)
        if progress is not None:
            progress(epoch / epochs, _describe(entry))

    final = history[-1]
    metrics = {"train_acc": final["train_acc"], "seconds": clock(), "input_range": scale}
    if xt is not None:
        metrics["test_acc"] = final["test_acc"]
    return FloatMLP(layers_raw(), settings, metrics, history)


def _describe(entry: dict[str, float]) -> str:
    text = f"epoch {entry['epoch']} loss {entry['loss']:.3f} train {entry['train_acc']:.3f}"
    if "test_acc" in entry:
        text += f" test {entry['test_acc']:.3f}"
    return text
