"""Gradient-free evolution of any ternary network, convolutions included, on exact outputs.

:func:`trine.host.evolve.train_evolve` evolves MLPs with exact incremental caches
(:mod:`trine.host.evolve_net`); this module is the same search for a network given as an
architecture string (:mod:`trine.host.arch`): the integer program itself is mutated (one
output channel's trits and bias at a time, now and then a layer's shift), and each mutant is
scored by cross-entropy of ``softmax(outputs / temperature)`` on the int8 outputs of
:func:`trine.contract.network.run_network` over a minibatch that grows during the run.

Each generation computes the parent's activations up to the mutated layer once, then the
mutated layer and everything after it for every mutant together (the mutants differ in one
output channel only, so the layer's other channels are shared): the cost is a forward pass
of the network's tail per mutant and minibatch sample. There are no caches over the whole
training set to keep up to date, so an accepted mutant costs nothing more; the price is that
a generation is far dearer than in the MLP search, which is what the benchmark measures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from trine.contract.network import run_network
from trine.contract.reference import Conv, Layer, im2col
from trine.contract.spec import ACT_MAX
from trine.host.arch import LayerSpec, parse_arch, spec_layers
from trine.host.program import Program
from trine.host.qat_net import quantize
from trine.host.results import Stopwatch, TrainResult, accuracy

__all__ = ["evolve_network"]

SHIFT_LIMIT = 20
_SPREAD = 32.0  # target std of a pre-activation after the shift, in int8 units


def _rebuild(layer, weights=None, bias=None, shift=None):
    """``layer`` with some of its weights, bias or shift replaced."""
    w = layer.weights if weights is None else weights
    b = layer.bias if bias is None else bias
    s = layer.shift if shift is None else shift
    if isinstance(layer, Layer):
        return Layer(w, b, s, layer.relu)
    return Conv(w, b, layer.stride, layer.padding, s, layer.relu)


def _initial_layers(specs: Sequence[LayerSpec], shape, a0: np.ndarray, density: float,
                    rng: np.random.Generator) -> list:
    """Random sparse trits; each layer's shift and biases from the statistics of its
    accumulators on the data, layer by layer (half of every ReLU unit's inputs switch it on)."""
    geometry = spec_layers(list(specs), shape)
    layers = []
    a = a0
    for spec, g in zip(specs, geometry, strict=True):
        if not spec.weighted:
            layers.append(g)
            a = run_network(a, [g], a.shape[1:])
            continue
        w = np.where(rng.random(g.weights.shape) < density,
                     rng.choice(np.array([-1, 1], np.int8), g.weights.shape), 0).astype(np.int8)
        probe = _rebuild(g, weights=w, bias=np.zeros(len(g.bias), np.int64), shift=0)
        # the accumulators (exact: integers in float32), one row per output position
        dense = probe if isinstance(probe, Layer) else probe.dense
        if isinstance(probe, Layer):
            rows = a.reshape(len(a), -1).astype(np.float32)
        else:
            rows = im2col(a, probe.kernel, probe.stride, probe.padding, np.float32)
        acc = (rows @ dense.weights.T.astype(np.float32)).astype(np.int64)
        centre = np.median(acc, axis=0) if spec.relu else acc.mean(axis=0)
        spread = float(np.std(acc - centre)) if acc.size else 0.0
        shift = 0 if spread <= _SPREAD else min(SHIFT_LIMIT, round(math.log2(spread / _SPREAD)))
        layer = _rebuild(probe, bias=-np.rint(centre).astype(np.int64), shift=shift)
        layers.append(layer)
        a = run_network(a, [layer], a.shape[1:])
    return layers


def _xent(out: np.ndarray, y: np.ndarray, temperature: float) -> np.ndarray:
    """Cross-entropy of every sample (the last axis holds the outputs)."""
    z = (out.astype(np.float64) - ACT_MAX) / temperature
    lse = np.log(np.exp(z).sum(axis=-1))
    zy = np.take_along_axis(z, y[..., None], axis=-1)[..., 0]
    return lse - zy


def evolve_network(
    x_train: Any, y_train: Any, *, arch: str, input_shape: Sequence[int], n_classes: int,
    budget_s: float | None, max_generations: int | None, seed: int, x_test: Any, y_test: Any,
    progress: Callable[[float, str], None] | None, labels: Sequence[str] | None,
    offspring: int = 8, batch_size: tuple[int, int | None] = (200, 2000),
    temperature: float = 16.0, density: float = 0.5, flip_p: float = 0.5,
    flip_width: int = 64, bias_rate: float = 0.25, bias_step: float = 2.0,
    shift_rate: float = 0.01, input_quantile: float = 0.999, history_points: int = 50,
) -> TrainResult:
    """Evolve the network ``arch`` on inputs of ``input_shape`` (see the module notes); the
    arguments are those of :func:`trine.host.evolve.train_evolve`, already checked by it."""
    clock = Stopwatch()
    rng = np.random.default_rng(seed)
    shape = tuple(input_shape)
    specs = parse_arch(arch, shape, n_classes)
    x = np.asarray(x_train, np.float64).reshape(len(x_train), *shape)
    y = np.asarray(y_train, np.int64)
    top = float(np.quantile(np.abs(x), input_quantile)) or float(np.abs(x).max()) or 1.0
    scale = top / ACT_MAX
    a0 = quantize(x, scale)
    xt_q = None if x_test is None else quantize(np.asarray(x_test, np.float64).reshape(
        len(x_test), *shape), scale)
    layers = _initial_layers(specs, shape, a0, density, rng)
    weighted = [i for i, layer in enumerate(layers) if isinstance(layer, Layer | Conv)]
    sizes = np.array([layers[i].weights.size for i in weighted], np.float64)
    layer_p = sizes / sizes.sum()
    n = len(y)
    start, end = min(batch_size[0], n), min(batch_size[1] or n, n)

    def fraction(gen):
        f = 0.0
        if max_generations is not None:
            f = gen / max_generations
        if budget_s is not None:
            f = max(f, clock() / budget_s)
        return f

    def batch(f):
        size = min(n, max(1, round(start * (end / start) ** min(f, 1.0))))
        return None if size >= n else np.sort(rng.choice(n, size, replace=False))

    history: list[dict[str, Any]] = []

    def record(gen):
        out = run_network(a0, layers, shape)
        point = {"elapsed_s": clock(), "generation": gen,
                 "train_fitness": -float(_xent(out, y, temperature).mean()),
                 "train_acc": accuracy(out, y),
                 "test_acc": (accuracy(run_network(xt_q, layers, shape), y_test)
                              if xt_q is not None else None)}
        history.append(point)
        return point

    evaluations = accepted = sample_evaluations = 0
    record(0)
    gen, next_mark = 0, 1
    while fraction(gen) < 1.0:
        f = fraction(gen)
        if f * history_points >= next_mark:
            p = record(gen)
            next_mark = math.floor(f * history_points) + 1
            if progress is not None:
                test = "" if p["test_acc"] is None else f" test {p['test_acc']:.3f}"
                progress(f, f"gen {gen} train {p['train_acc']:.3f}{test}")
        idx = batch(f)
        a_batch, y_batch = (a0, y) if idx is None else (a0[idx], y[idx])
        li = int(weighted[rng.choice(len(weighted), p=layer_p)])
        layer = layers[li]
        head = run_network(a_batch, layers[:li], shape) if li else a_batch
        tail = layers[li + 1:]
        if shift_rate and rng.random() < shift_rate:
            variants = []
            for d in (-1, 1):
                s = layer.shift + d
                if 0 <= s <= SHIFT_LIMIT:
                    b = layer.bias * 2 if d > 0 else np.floor_divide(layer.bias, 2)
                    variants.append(_rebuild(layer, bias=b, shift=s))
        else:
            m = layer.weights.shape[0]
            row = int(rng.integers(m))
            k = layer.weights[row].size
            p_flip = flip_p * min(1.0, flip_width / k)
            variants = []
            for _ in range(offspring):
                w = layer.weights.copy()
                b = layer.bias.copy()
                moves_bias = rng.random() < bias_rate
                flips = int(rng.geometric(p_flip)) - int(moves_bias)
                flat = w[row].reshape(-1)
                where = rng.integers(0, k, flips)
                flat[where] = (flat[where] + 1 + rng.integers(1, 3, flips)) % 3 - 1
                w[row] = flat.reshape(w[row].shape)
                if moves_bias:
                    b[row] += int(np.rint(rng.standard_normal() * bias_step
                                          * (1 << layer.shift)))
                variants.append(_rebuild(layer, weights=w, bias=b))
        head_shape = head.shape[1:]
        scores = []
        for cand in [layer, *variants]:
            out = run_network(head, [cand, *tail], head_shape)
            scores.append(float(_xent(out, y_batch, temperature).sum()))
        evaluations += len(variants)
        sample_evaluations += len(variants) * len(y_batch)
        best = int(np.argmin(scores[1:])) + 1 if variants else 0
        if variants and scores[best] <= scores[0]:
            layers[li] = variants[best - 1]
            accepted += 1
        gen += 1
    if history[-1]["generation"] != gen:
        record(gen)
    program = Program(layers, input_scale=scale, labels=labels, input_shape=shape)
    weights = sum(layers[i].weights.size for i in weighted)
    metrics = {
        "train_acc": accuracy(program.run_reference(np.asarray(x_train)), y),
        "test_acc": (accuracy(program.run_reference(np.asarray(x_test)), y_test)
                     if x_test is not None else None),
        "train_fitness": history[-1]["train_fitness"], "seconds": clock(), "generations": gen,
        "evaluations": evaluations, "sample_evaluations": sample_evaluations,
        "accepted": accepted, "weights": weights,
        "sparsity": float(sum(int(np.sum(layers[i].weights == 0)) for i in weighted) / weights),
        "shifts": [layers[i].shift for i in weighted],
    }
    if progress is not None:
        progress(1.0, f"gen {gen} train {metrics['train_acc']:.3f}")
    settings = {"arch": arch, "input_shape": list(shape), "budget_s": budget_s,
                "max_generations": max_generations, "seed": seed, "n_classes": n_classes,
                "offspring": offspring, "batch_size": [start, end],
                "temperature": temperature, "density": density, "flip_p": flip_p,
                "flip_width": flip_width, "bias_rate": bias_rate, "bias_step": bias_step,
                "shift_rate": shift_rate, "input_quantile": input_quantile,
                "history_points": history_points}
    return TrainResult(program=program, method="evolve", settings=settings, history=history,
                       metrics=metrics)
