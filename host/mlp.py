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

What the trainers share (the error, the checks, Adam, the schedule) is in
:mod:`trine.host.learning`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trine.host.learning import (
    Adam,
    Progress,
    check_data,
    check_float,
    check_hidden,
    check_int,
    check_progress,
    cosine,
    input_range,
    single_threaded_blas,
    softmax_xent,
)
from trine.host.results import Stopwatch

__all__ = ["FloatMLP", "train_float_mlp", "float_forward", "float_accuracy"]

FloatLayers = list[tuple[np.ndarray, np.ndarray, bool]]


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
        Called after every epoch, e.g. :class:`trine.cli.common.ProgressBar`.

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
