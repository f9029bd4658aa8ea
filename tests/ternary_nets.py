"""Mixed networks for the device tests: random networks given ternary outputs (issue 15 §1).

Each weighted layer but the last (or every one) gets a ``ternary_threshold`` chosen from its
own int8 outputs on the inputs the test will run, so that every trit occurs and many outputs
sit at the threshold's edges; most lose their ReLU (with ReLU the trits are only 0 and +1).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from trine.contract.network import run_network
from trine.contract.reference import Conv, Layer


def with_thresholds(rng: np.random.Generator, layers, x, input_shape=None, *,
                    last: bool = False, relu: float = 0.3) -> list:
    """``layers`` with ternary outputs, thresholds calibrated on ``x`` (``(N, *shape)``): the
    33rd percentile of each layer's ``|y|`` (clipped to 1..127), ReLU kept with probability
    ``relu`` (never on the first); the last weighted layer keeps int8 outputs unless
    ``last``."""
    layers = list(layers)
    weighted = [i for i, layer in enumerate(layers) if isinstance(layer, Layer | Conv)]
    chosen = weighted if last else weighted[:-1]
    for n, i in enumerate(chosen):
        keep = n > 0 and bool(rng.random() < relu)  # the first without: every trit occurs
        layer = dataclasses.replace(layers[i], relu=keep and layers[i].relu)
        layers[i] = layer
        y = run_network(x, layers[:i + 1], input_shape)
        t = int(np.clip(np.percentile(np.abs(y.astype(np.int64)), 33), 1, 127))
        layers[i] = dataclasses.replace(layer, ternary_threshold=t)
    return layers


def trit_counts(layers, x, input_shape=None) -> list[np.ndarray]:
    """For each layer with ternary outputs, how many of its outputs on ``x`` are -1, 0, +1."""
    counts = []
    for i, layer in enumerate(layers):
        if getattr(layer, "ternary_threshold", None) is not None:
            y = run_network(x, layers[:i + 1], input_shape)
            counts.append(np.array([(y == v).sum() for v in (-1, 0, 1)]))
    return counts
