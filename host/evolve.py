"""Gradient-free training natively in ternary: an evolution strategy on the integer network.

:func:`train_evolve` evolves the very integer program the device runs: ternary weight rows,
int32 biases and per-layer shifts, with no gradients and no float shadow weights. The fitness
of a candidate is computed on the exact integer outputs of
:func:`trine.contract.reference.ternary_layer`
(by the incremental integer forward of :mod:`trine.host.evolve_net`, tested equal to
:meth:`trine.host.program.Program.run_reference` bit for bit).

Usage::

    from trine.host.data import load_digits_split
    from trine.host.evolve import train_evolve

    x_train, y_train, x_test, y_test = load_digits_split()
    result = train_evolve(x_train, y_train, hidden=(128,), budget_s=120,
                          x_test=x_test, y_test=y_test)
    result.program.save("digits.trine")      # input_scale set: give it raw float inputs
    print(result.metrics["test_acc"])

The strategy
------------
* **Initialisation from the data.** Trits are random and sparse (``density``); the input scale
  maps a high quantile of ``|x|`` to 127; each layer's shift and biases are chosen from the
  statistics of its accumulators on the training data, so activations start spread over the
  int8 range and about half of every ReLU unit's inputs switch it on.
* **Structured mutation, evaluated incrementally.** A generation picks one layer (with
  probability proportional to its weight count) and one neuron of it, and makes ``offspring``
  mutants of that neuron's row: a geometric number of trit flips (each trit moves to one of
  its two other values) and, for a fraction ``bias_rate`` of them, a bias step of a few output
  units. Only that neuron's accumulators and what depends on them are recomputed, for all
  offspring at once (one small matrix product): for a row of the last hidden layer, only the
  outputs it feeds through a nonzero trit, and the loss from cached per-output exponentials,
  so a generation costs about ``offspring * batch * (K + outputs)`` operations instead of a
  whole forward pass per mutant. Rows deeper down change a whole hidden layer; they get
  proportionally fewer mutants (at least 2), so every generation costs about the same.
  Rarely (``shift_rate``) a layer's shift moves by one with its biases rescaled.
* **Smooth fitness on minibatches.** Fitness is the negated mean cross-entropy of
  ``softmax(outputs / temperature)`` on the int8 outputs (accuracy alone is flat almost
  everywhere). Parent and offspring are scored on the same random minibatch, whose size grows
  from ``batch_size[0]`` to ``batch_size[1]`` (all the training data by default) over the
  run: noisy, cheap selection early, precise selection late.
* **Selection** is (1 + offspring): the best offspring replaces the parent when it is at least
  as fit on the minibatch (ties accepted, so the search drifts across plateaus).

Accepted changes are applied to cached accumulators and activations of the whole training set,
so the training-set fitness and accuracy of the current program are always at hand.

How it compares with QAT at the same shape and budget is measured by ``python -m bench
evolve`` (figures in the README): the deeper the network, the slower evolution learns, since a
first-layer mutation changes a whole hidden layer.

Reproducibility: the run is a deterministic function of the data, the settings and ``seed``
when it stops on ``max_generations`` (every matrix product is exact integer arithmetic, see
:mod:`trine.contract.reference`); a ``budget_s`` stop depends on the machine's speed. With
``max_generations`` given, the batch schedule follows the generation count, otherwise the
elapsed time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trine.contract.reference import Layer
from trine.contract.spec import ACT_MAX, MAX_FAN_IN
from trine.host.evolve_net import (
    MIN_TEMPERATURE,
    SHIFT_LIMIT,
    EvolvingNet,
    bias_half,
    forward,
    requantize,
)
from trine.host.learning import (
    TrainError,
    check_features,
    check_float,
    check_int,
    check_labels,
    single_threaded_blas,
)
from trine.host.program import Program, ProgramError
from trine.host.results import Stopwatch, TrainResult, accuracy

__all__ = ["EvolveError", "train_evolve", "DEFAULTS", "HIDDEN"]

# The hidden widths evolution is benchmarked with per data set (bench/evolve.py): on MNIST-1D one
# wide layer learns within minutes, two layers need far longer.
HIDDEN: dict[str, tuple[int, ...]] = {"digits": (128,), "mnist1d": (256,)}

# The search's hyper-parameters, with their defaults (all are keyword arguments of
# train_evolve and are recorded in TrainResult.settings).
DEFAULTS: dict[str, Any] = {
    "offspring": 16,  # mutants per generation, all of one neuron
    "batch_size": (1000, None),  # minibatch size at the start and the end (None = all data)
    "temperature": 16.0,  # softmax temperature on the int8 outputs
    "density": 0.5,  # fraction of nonzero trits at initialisation
    "flip_p": 0.5,  # trit flips per mutant ~ geometric(flip_p) (mean 1 / flip_p) ...
    "flip_width": 64,  # ... times fan-in / flip_width for rows wider than flip_width
    "bias_rate": 0.25,  # fraction of mutants that also move their bias
    "bias_step": 2.0,  # std of a bias step, in output units (2**shift accumulator units)
    "shift_rate": 0.01,  # probability per generation of trying a shift change
    "input_quantile": 0.999,  # quantile of |x| mapped to 127 by input_scale
    "history_points": 50,
}

_HIDDEN_SPREAD = 32.0  # target std of a hidden unit's pre-activation, in int8 units
_OUTPUT_SPREAD = 24.0  # the same for the outputs


#: The trainers' one error (:class:`trine.host.learning.TrainError`) under this module's name.
EvolveError = TrainError


# ---------------------------------------------------------------------------------------------
# Validation (the checks every trainer shares, plus evolution's fan-in limit)
# ---------------------------------------------------------------------------------------------


def _check_x(x: Any, name: str, width: int | None = None) -> np.ndarray:
    a = check_features(x, name, width)
    if a.shape[1] > MAX_FAN_IN:
        raise EvolveError(f"{name} has {a.shape[1]} features, more than the fan-in limit "
                          f"{MAX_FAN_IN}")
    return a


def _setting(p: dict, name: str, lo: float, hi: float, *, strict: bool) -> float:
    return check_float(p[name], name, minimum=lo, maximum=hi, strict=strict)


@dataclass(frozen=True)
class _Settings:
    hidden: tuple[int, ...]
    offspring: int
    batch_start: int
    batch_end: int
    temperature: float
    density: float
    flip_p: float
    flip_width: int
    bias_rate: float
    bias_step: float
    shift_rate: float
    input_quantile: float
    history_points: int


def _check_settings(n: int, hidden: Any, hp: dict[str, Any]) -> _Settings:
    if isinstance(hidden, int | np.integer) and not isinstance(hidden, bool):
        hidden = (hidden,)
    if isinstance(hidden, str | bytes) or not isinstance(hidden, Sequence):
        raise EvolveError(f"hidden must be a sequence of layer widths, not {hidden!r}")
    widths = tuple(check_int(h, f"hidden[{i}]") for i, h in enumerate(hidden))
    for i, h in enumerate(widths):
        if h > MAX_FAN_IN:
            raise EvolveError(f"hidden[{i}] = {h} is wider than the fan-in limit {MAX_FAN_IN}")
    unknown = sorted(set(hp) - set(DEFAULTS))
    if unknown:
        raise EvolveError(f"unknown setting {unknown[0]!r}; known: {', '.join(DEFAULTS)}")
    p = {**DEFAULTS, **hp}
    bs = p["batch_size"]
    if isinstance(bs, int | np.integer) and not isinstance(bs, bool):
        bs = (bs, bs)
    if isinstance(bs, str | bytes) or not isinstance(bs, Sequence) or len(bs) != 2:
        raise EvolveError(f"batch_size must be an int or a pair (start, end), not {bs!r}")
    start = n if bs[0] is None else check_int(bs[0], "batch_size[0]")
    end = n if bs[1] is None else check_int(bs[1], "batch_size[1]")
    return _Settings(
        hidden=widths,
        offspring=check_int(p["offspring"], "offspring"),
        batch_start=min(start, n),
        batch_end=min(end, n),
        temperature=_setting(p, "temperature", MIN_TEMPERATURE, 1e6, strict=False),
        density=_setting(p, "density", 0.0, 1.0, strict=True),
        flip_p=_setting(p, "flip_p", 0.0, 1.0, strict=True),
        flip_width=check_int(p["flip_width"], "flip_width"),
        bias_rate=_setting(p, "bias_rate", 0.0, 1.0, strict=False),
        bias_step=_setting(p, "bias_step", 0.0, 1e6, strict=False),
        shift_rate=_setting(p, "shift_rate", 0.0, 1.0, strict=False),
        input_quantile=_setting(p, "input_quantile", 0.0, 1.0, strict=True),
        history_points=check_int(p["history_points"], "history_points"),
    )


# ---------------------------------------------------------------------------------------------
# Initialisation from the data
# ---------------------------------------------------------------------------------------------


def _shift_for(std: float, target: float) -> int:
    if std <= target:
        return 0
    return min(SHIFT_LIMIT, max(0, round(math.log2(std / target))))


def _initial_net(x_q: np.ndarray, y: np.ndarray, widths: list[int], relus: list[bool],
                 s: _Settings, rng: np.random.Generator) -> EvolvingNet:
    """Random sparse trits; shifts and biases from the accumulator statistics, layer by layer."""
    weights, biases, shifts = [], [], []
    a = x_q.astype(np.float32)
    for i, (k, m) in enumerate(zip(widths, widths[1:], strict=False)):
        nz = rng.random((m, k)) < s.density
        w = np.where(nz, rng.choice(np.array([-1, 1], np.int8), (m, k)), 0).astype(np.int8)
        acc = (a @ w.T.astype(np.float32)).astype(np.int32)  # exact: see trine.host.evolve_net
        if relus[i]:
            centre = np.median(acc, axis=0)  # half of the samples switch each unit on
        else:
            centre = acc.mean(axis=0)
        spread = float(np.std(acc - centre)) if acc.size else 0.0
        shift = _shift_for(spread, _HIDDEN_SPREAD if relus[i] else _OUTPUT_SPREAD)
        bias = -np.rint(centre).astype(np.int64)
        weights.append(w)
        biases.append(bias)
        shifts.append(shift)
        a = requantize(acc, bias_half(bias, shift), shift, relus[i]).astype(np.float32)
    return EvolvingNet(x_q, y, weights, biases, shifts, relus, s.temperature)


def _input_scale(x: np.ndarray, quantile: float) -> float:
    top = float(np.quantile(np.abs(x), quantile))
    if top <= 0:
        top = float(np.abs(x).max())
    return top / ACT_MAX if top > 0 else 1.0


# ---------------------------------------------------------------------------------------------
# The search
# ---------------------------------------------------------------------------------------------


def _offspring(offspring: int, net: EvolvingNet, layer: int) -> int:
    """Mutants per generation for ``layer``: fewer where each one costs a whole hidden layer.

    A row of the last layer or of the last hidden layer is scored on the outputs alone (a few
    numbers per sample); a row deeper down changes the whole next hidden layer, ``M_next``
    values per sample, and then its matrix product with the layers above. Scaling the mutants
    by ``M_out / M_next`` (at least 2) keeps every generation about equally expensive, so time
    is not spent in proportion to depth.
    """
    if layer + 2 >= net.n_layers:
        return offspring
    m_next, m_out = net.w[layer + 1].shape[0], net.w[-1].shape[0]
    return max(2, min(offspring, round(offspring * m_out / m_next)))


class _Search:
    """One (1 + offspring) generation at a time on an :class:`EvolvingNet`."""

    def __init__(self, net: EvolvingNet, s: _Settings, rng: np.random.Generator):
        self.net, self.s, self.rng = net, s, rng
        self.n = len(net.y)
        sizes = np.array([w.size for w in net.w], np.float64)
        self.layer_p = sizes / sizes.sum()
        self.offspring = [_offspring(s.offspring, net, i) for i in range(net.n_layers)]
        # wide rows get proportionally more flips: one trit moves a sum of K terms less
        self.flip_p = [s.flip_p * min(1.0, s.flip_width / w.shape[1]) for w in net.w]
        self.evaluations = 0
        self.sample_evaluations = 0
        self.accepted = 0

    def batch(self, fraction: float) -> np.ndarray | None:
        """Random sample indices (sorted), None for all; the size follows the schedule."""
        s, n = self.s, self.n
        # geometric interpolation: the batch grows by a constant factor per unit of progress
        size = round(s.batch_start * (s.batch_end / s.batch_start) ** min(fraction, 1.0))
        size = min(max(size, 1), n)
        if size >= n:
            return None
        return np.sort(self.rng.choice(n, size, replace=False))

    def step(self, fraction: float) -> None:
        idx = self.batch(fraction)
        if self.s.shift_rate and self.rng.random() < self.s.shift_rate:
            self._shift_step(idx)
        else:
            self._row_step(idx)

    def _count(self, variants: int, idx: np.ndarray | None) -> None:
        self.evaluations += variants
        self.sample_evaluations += variants * (self.n if idx is None else len(idx))

    def _row_step(self, idx: np.ndarray | None) -> None:
        net, s, rng = self.net, self.s, self.rng
        layer = int(rng.choice(net.n_layers, p=self.layer_p))
        m, k = net.w[layer].shape
        row = int(rng.integers(m))
        lam = self.offspring[layer]
        # mutants: bias steps for some, a geometric number of trit flips (>= 1 without a bias
        # step, >= 0 with one); a flip moves a trit to one of its two other values
        moves_bias = rng.random(lam) < s.bias_rate
        flips = rng.geometric(self.flip_p[layer], lam) - moves_bias
        cand = np.repeat(net.w[layer][row][None], lam, axis=0)
        who = np.repeat(np.arange(lam), flips)
        where = rng.integers(0, k, who.size)
        cand[who, where] = (cand[who, where] + 1 + rng.integers(1, 3, who.size)) % 3 - 1
        step = np.rint(rng.standard_normal(lam) * s.bias_step * (1 << net.shift[layer]))
        limit = net.bias_limit(layer)
        biases = np.clip(net.bias[layer][row] + np.where(moves_bias, step, 0).astype(np.int64),
                         -limit, limit)
        rows, new = net.row_variants(layer, row, cand, biases, idx)
        gain = net.gain(rows, new, idx)
        self._count(lam, idx)
        best = int(np.argmax(gain))
        if gain[best] >= 0:  # ties too: neutral moves let the search drift across plateaus
            net.apply_row(layer, row, cand[best], int(biases[best]))
            self.accepted += 1

    def _shift_step(self, idx: np.ndarray | None) -> None:
        """Try one layer's shift one step up or down, its biases rescaled to match."""
        net, rng = self.net, self.rng
        layer = int(rng.integers(net.n_layers))
        old_shift, old_bias = net.shift[layer], net.bias[layer]
        best = None
        for d in (-1, 1):
            shift = old_shift + d
            if not 0 <= shift <= SHIFT_LIMIT:
                continue
            bias = old_bias * 2 if d > 0 else np.floor_divide(old_bias, 2)
            limit = net.bias_limit(layer, shift)
            bias = np.clip(bias, -limit, limit)
            out = net.shift_variant(layer, shift, bias, idx)
            gain = float(net.gain(np.arange(out.shape[0]), out[None], idx)[0])
            self._count(1, idx)
            if gain >= 0 and (best is None or gain > best[0]):
                best = (gain, shift, bias)
        if best is not None:
            net.apply_shift(layer, best[1], best[2])
            self.accepted += 1


# ---------------------------------------------------------------------------------------------
# The public entry point
# ---------------------------------------------------------------------------------------------


def train_evolve(
    x_train: Any,
    y_train: Any,
    *,
    hidden: Sequence[int] | int = (64,),
    budget_s: float | None = 60.0,
    max_generations: int | None = None,
    seed: int = 0,
    x_test: Any = None,
    y_test: Any = None,
    progress: Callable[[float, str], None] | None = None,
    n_classes: int | None = None,
    labels: Sequence[str] | None = None,
    arch: str | None = None,
    input_shape: Sequence[int] | None = None,
    islands: int | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    migrate_every: int | None = None,
    **hyper: Any,
) -> TrainResult:
    """Evolve a ternary MLP ``K -> hidden... -> n_classes`` on the exact integer outputs.

    Parameters
    ----------
    x_train : array (N, K)
        Raw float features (integers are taken as floats too: the program's ``input_scale``
        is chosen from them, so give the trained program float inputs).
    y_train : int array (N,)
        Class labels in ``[0, n_classes)``.
    hidden : sequence of int
        Widths of the hidden ReLU layers (may be empty: a single ternary layer).
    budget_s : float or None
        Wall-clock budget in seconds (None: no time limit).
    max_generations : int or None
        Generation limit (None: no limit). At least one of the two limits must be set; with
        ``max_generations`` the result depends on ``seed`` only, not on the machine's speed.
    seed : int
        Seed of every random choice (initialisation, batches, mutations).
    x_test, y_test : arrays, optional
        Held-out data, used only to report ``test_acc`` in the history and metrics.
    progress : callable, optional
        ``progress(fraction, message)``, e.g. :class:`trine.cli.common.ProgressBar`.
    n_classes : int, optional
        Output width; by default ``max(y_train) + 1``.
    labels : sequence of str, optional
        Output names stored in the program.
    arch, input_shape : optional
        Instead of ``hidden``, any network as :mod:`trine.host.arch` writes it (convolutions
        too) on samples of ``input_shape``: evolved by :func:`trine.host.evolve_cnn.evolve_network`
        (the same mutations and fitness, scored by forward passes of the network's tail; see
        there), with ``offspring`` 8 and ``batch_size`` (200, 2000) unless given.
    **hyper
        Search settings, see :data:`DEFAULTS`: ``offspring``, ``batch_size`` (an int or a
        ``(start, end)`` pair, None meaning all the training data), ``temperature``,
        ``density``, ``flip_p``, ``flip_width``, ``bias_rate``, ``bias_step``, ``shift_rate``,
        ``input_quantile``, ``history_points``.
    islands, workers, ray_address, migrate_every : optional
        The island search of :mod:`trine.host.evolve_islands`: ``islands`` searches (default
        :data:`~trine.host.evolve_islands.DEFAULT_ISLANDS` when ``workers`` or
        ``ray_address`` is given, else one: the plain search) that all continue from the
        fittest every ``migrate_every`` generations, evaluated on ``workers`` local Ray
        processes or on the Ray cluster at ``ray_address`` (in this process without either).
        The result depends on ``islands``, never on ``workers``. MLPs only.

    Returns
    -------
    TrainResult
        ``method`` "evolve"; ``program`` with ``input_scale`` set; ``history`` entries with
        ``elapsed_s``, ``generation``, ``train_fitness`` (negated mean cross-entropy on the
        whole training set at ``temperature``; higher is better), ``train_acc`` and
        ``test_acc`` (None without test data); ``metrics`` with the final ``train_acc``,
        ``test_acc`` (from :meth:`Program.run_reference`), ``train_fitness``, ``seconds``,
        ``generations``, ``evaluations`` (candidate networks scored), ``accepted``,
        ``sample_evaluations`` (candidates times minibatch rows) and ``sparsity`` (fraction
        of zero trits over all layers).

    Raises
    ------
    EvolveError
        For data of the wrong shape or type, non-finite features, labels out of range, empty
        data, a bad ``hidden`` or a setting outside its range, naming it.
    """
    x = _check_x(x_train, "x_train")
    n, k = x.shape
    if n_classes is not None:
        n_classes = check_int(n_classes, "n_classes", 2)
    y = check_labels(y_train, "y_train", n, n_classes)
    if n_classes is None:
        n_classes = int(y.max()) + 1
        if n_classes < 2:
            raise EvolveError("y_train has a single class (0): give n_classes or more labels")
    if (x_test is None) != (y_test is None):
        raise EvolveError("give both x_test and y_test, or neither")
    xt = yt = None
    if x_test is not None:
        xt = _check_x(x_test, "x_test", k)
        yt = check_labels(y_test, "y_test", len(xt), n_classes)
    if budget_s is not None:
        budget_s = check_float(budget_s, "budget_s", minimum=0.0, maximum=1e9, strict=True)
    if max_generations is not None:
        max_generations = check_int(max_generations, "max_generations")
    if budget_s is None and max_generations is None:
        raise EvolveError("give budget_s or max_generations (or both): the run needs a limit")
    seed = check_int(seed, "seed", 0)
    if progress is not None and not callable(progress):
        raise EvolveError(f"progress must be callable, not {type(progress).__name__}")
    if labels is not None:
        try:  # the program's own rule, checked now rather than after the run
            Program([Layer(np.zeros((n_classes, 1), np.int8), np.zeros(n_classes))],
                    labels=labels)
        except ProgramError as e:
            raise EvolveError(str(e)) from None
    island_mode = any(v is not None for v in (islands, workers, ray_address, migrate_every))
    if island_mode and arch is not None:
        raise EvolveError("the island search (islands, workers, ray_address) evolves MLPs "
                          "(hidden); a convolutional network evolves as one search")
    if island_mode:
        from trine.host.evolve_islands import DEFAULT_ISLANDS, DEFAULT_MIGRATE_EVERY

        island_mode = {
            "islands": check_int(DEFAULT_ISLANDS if islands is None else islands, "islands", 1),
            "workers": None if workers is None else check_int(workers, "workers", 1),
            "address": ray_address,
            "migrate_every": check_int(DEFAULT_MIGRATE_EVERY if migrate_every is None
                                       else migrate_every, "migrate_every", 1),
        }
        if ray_address is not None and not (isinstance(ray_address, str) and ray_address):
            raise EvolveError(f"ray_address must be a non-empty str, not {ray_address!r}")
        if ray_address is not None and workers is not None:
            raise EvolveError("give workers (a local Ray instance) or ray_address, not both")
    if arch is not None:
        from trine.host.arch import ArchError
        from trine.host.evolve_cnn import evolve_network

        shape = tuple(input_shape) if input_shape is not None else (k,)
        if math.prod(shape) != k:
            raise EvolveError(f"input_shape {shape} holds {math.prod(shape)} values, x_train "
                              f"has {k} per sample")
        s = _check_settings(n, (), {"offspring": 8, "batch_size": (200, 2000), **hyper})
        with single_threaded_blas():
            try:
                return evolve_network(
                    x, y, arch=arch, input_shape=shape, n_classes=n_classes,
                    budget_s=budget_s, max_generations=max_generations, seed=seed, x_test=xt,
                    y_test=yt, progress=progress, labels=labels, offspring=s.offspring,
                    batch_size=(s.batch_start, s.batch_end), temperature=s.temperature,
                    density=s.density, flip_p=s.flip_p, flip_width=s.flip_width,
                    bias_rate=s.bias_rate, bias_step=s.bias_step, shift_rate=s.shift_rate,
                    input_quantile=s.input_quantile, history_points=s.history_points)
            except ArchError as e:
                raise EvolveError(f"arch: {e}") from None
    s = _check_settings(n, hidden, hyper)
    widths = [k, *s.hidden, n_classes]  # every fan-in <= MAX_FAN_IN: float32 sums are exact
    relus = [True] * len(s.hidden) + [False]

    with single_threaded_blas():
        return _run(x, y, xt, yt, n_classes, widths, relus, s, budget_s, max_generations, seed,
                    progress, labels, island_mode or None)


def _run(x, y, xt, yt, n_classes, widths, relus, s, budget_s, max_generations, seed, progress,
         labels, island: dict[str, Any] | None = None) -> TrainResult:
    k = x.shape[1]
    clock = Stopwatch()
    rng = np.random.default_rng(seed)
    scale = _input_scale(x, s.input_quantile)
    quantizer = Program([Layer(np.zeros((1, k), np.int8), [0])], input_scale=scale)
    x_q = quantizer.quantize_input(x)
    xt_q = quantizer.quantize_input(xt) if xt is not None else None
    net = _initial_net(x_q, y, widths, relus, s, rng)
    search = _Search(net, s, rng)

    def fraction(gen: int) -> float:
        if max_generations is not None:
            return gen / max_generations
        return clock() / budget_s

    def done(gen: int) -> float:
        f = gen / max_generations if max_generations is not None else 0.0
        if budget_s is not None:
            f = max(f, clock() / budget_s)
        return f

    history: list[dict[str, float]] = []

    def record(gen: int) -> dict[str, float]:
        point = {
            "elapsed_s": clock(),
            "generation": gen,
            "train_fitness": net.fitness(),
            "train_acc": accuracy(net.act[-1].T, y),
            "test_acc": (accuracy(forward(xt_q, net.layers()), yt)
                         if xt_q is not None else None),
        }
        history.append(point)
        return point

    run: dict[str, Any] = {}
    if island is not None:
        from trine.host.evolve_islands import run_islands

        net, history, run = run_islands(
            x_q, y, net, s, islands=island["islands"], migrate_every=island["migrate_every"],
            seed=seed, budget_s=budget_s, max_generations=max_generations, xt_q=xt_q, yt=yt,
            workers=island["workers"], address=island["address"], progress=progress)
        search.evaluations, search.accepted = run["evaluations"], run["accepted"]
        search.sample_evaluations = run["sample_evaluations"]
        gen = run["generations"]
    else:
        record(0)
        gen = 0
    next_mark = 1
    while island is None:
        f = done(gen)
        if f >= 1.0:
            break
        if f * s.history_points >= next_mark:
            p = record(gen)
            next_mark = math.floor(f * s.history_points) + 1
            if progress is not None:
                test = "" if p["test_acc"] is None else f" test {p['test_acc']:.3f}"
                progress(f, f"gen {gen} train {p['train_acc']:.3f}{test}")
        search.step(fraction(gen))
        gen += 1
    if island is None and history[-1]["generation"] != gen:
        record(gen)

    program = Program(net.layers(), input_scale=scale, labels=labels)
    train_out = program.run_reference(x)
    if not np.array_equal(train_out, net.act[-1].T.astype(np.int8)):
        raise RuntimeError("internal error: evolve's cached outputs differ from the reference")
    weights = sum(w.size for w in net.w)
    metrics = {
        "train_acc": accuracy(train_out, y),
        "test_acc": accuracy(program.run_reference(xt), yt) if xt is not None else None,
        "train_fitness": history[-1]["train_fitness"],
        "seconds": clock(),
        "generations": gen,
        "evaluations": search.evaluations,
        "sample_evaluations": search.sample_evaluations,
        "accepted": search.accepted,
        "sparsity": float(sum(int(np.sum(w == 0)) for w in net.w) / weights),
        "weights": weights,
        "shifts": list(net.shift),
        **{k: run[k] for k in ("islands", "epochs", "engine", "workers") if k in run},
    }
    if progress is not None:
        progress(1.0, f"gen {gen} train {metrics['train_acc']:.3f}")
    settings = {
        "hidden": list(s.hidden),
        "budget_s": budget_s,
        "max_generations": max_generations,
        "seed": seed,
        "n_classes": n_classes,
        "offspring": s.offspring,
        "batch_size": [s.batch_start, s.batch_end],
        "temperature": s.temperature,
        "density": s.density,
        "flip_p": s.flip_p,
        "flip_width": s.flip_width,
        "bias_rate": s.bias_rate,
        "bias_step": s.bias_step,
        "shift_rate": s.shift_rate,
        "input_quantile": s.input_quantile,
        "history_points": s.history_points,
    }
    if island is not None:
        settings.update(islands=island["islands"], migrate_every=island["migrate_every"])
    return TrainResult(program=program, method="evolve", settings=settings,
                       history=history, metrics=metrics)
