"""trine.host.evolve: the integer forward equals the reference; the search is reproducible."""

import math

import numpy as np
import pytest

from trine.contract.network import run_network
from trine.contract.reference import Layer, ternary_matmul
from trine.host.data import load_digits_split
from trine.host.evolve import DEFAULTS, EvolveError, _Search, _Settings, train_evolve
from trine.host.evolve_net import EvolvingNet, forward
from trine.host.program import Program
from trine.host.results import TrainResult, accuracy


@pytest.fixture(scope="module")
def digits():
    return load_digits_split()


@pytest.fixture(scope="module")
def small(digits):
    """400 training and 200 test digits: big enough to learn, small enough to be fast."""
    x, y, xt, yt = digits
    return x[:400], y[:400], xt[:200], yt[:200]


def _random_layers(rng, widths, relu_last=False):
    layers = []
    for i, (k, m) in enumerate(zip(widths, widths[1:], strict=False)):
        shift = int(rng.integers(0, 12))
        w = rng.integers(-1, 2, (m, k)) * (rng.random((m, k)) < rng.random())
        bias = rng.integers(-(128 * k + (256 << shift)), 128 * k + (256 << shift), m)
        relu = i < len(widths) - 2 or relu_last
        layers.append(Layer(w, bias, shift, relu))
    return layers


# ---------------------------------------------------------------------------------------------
# The integer forward pass and the incremental caches against the reference
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("widths", [(1, 1), (64, 10), (40, 256, 10), (7, 13, 5, 3), (256, 256, 2)])
def test_forward_equals_reference(widths):
    rng = np.random.default_rng(len(widths) * 1000 + widths[0])
    for _ in range(5):
        layers = _random_layers(rng, widths, relu_last=bool(rng.integers(2)))
        x = rng.integers(-128, 128, (300, widths[0])).astype(np.int8)
        x[0] = 127
        x[1] = -128  # extreme inputs saturate the accumulators' magnitude
        assert np.array_equal(forward(x, layers), run_network(x, layers))


def _net(rng, widths, n=200, temperature=8.0):
    layers = _random_layers(rng, widths)
    x = rng.integers(-128, 128, (n, widths[0])).astype(np.int8)
    y = rng.integers(0, widths[-1], n)
    net = EvolvingNet(x, y, [la.weights for la in layers], [la.bias for la in layers],
                      [la.shift for la in layers], [la.relu for la in layers], temperature)
    return net, x, y


def _loss(out, y, temperature):
    """Summed cross-entropy of softmax(out / T), out (N, M) int8, in float64 from scratch."""
    z = out.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    return float(np.sum(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]))


def _check_caches(net, x):
    layers = net.layers()
    a = a_in = x
    for i, layer in enumerate(layers):
        a = run_network(a, [layer])
        assert np.array_equal(net.act[i].T.astype(np.int8), a), f"layer {i} activations"
        assert np.array_equal(net.acc[i].T, ternary_matmul(a_in, layer)), f"layer {i} sums"
        a_in = a
    out = run_network(x, layers)
    assert np.array_equal(net.act[-1].T.astype(np.int8), out)
    assert net.fitness() == pytest.approx(-_loss(out, net.y, 1 / net.inv_t) / len(x), rel=1e-5)


def _with_row(layers, layer, row, trits, bias):
    layers = list(layers)
    w = layers[layer].weights.copy()
    w[row] = trits
    b = layers[layer].bias.copy()
    b[row] = bias
    layers[layer] = Layer(w, b, layers[layer].shift, layers[layer].relu)
    return layers


@pytest.mark.parametrize("widths", [(20, 10), (20, 16, 4), (12, 9, 8, 3), (10, 6, 5, 4, 3)])
def test_row_variants_gains_and_updates_equal_reference(widths):
    rng = np.random.default_rng(sum(widths))
    net, x, y = _net(rng, widths)
    _check_caches(net, x)
    for _ in range(25):
        layer = int(rng.integers(net.n_layers))
        m, k = net.w[layer].shape
        row = int(rng.integers(m))
        trits = rng.integers(-1, 2, (6, k)).astype(np.int8)
        trits[0] = net.w[layer][row]  # variant 0 is the parent itself
        limit = net.bias_limit(layer)
        biases = rng.integers(-limit, limit, 6)
        biases[0] = net.bias[layer][row]
        idx = np.sort(rng.choice(len(x), 50, replace=False)) if rng.integers(2) else None
        rows, new = net.row_variants(layer, row, trits, biases, idx)
        gain = net.gain(rows, new, idx)
        assert gain[0] == 0.0, "the parent's own row must gain exactly nothing"
        cols = np.arange(len(x)) if idx is None else idx
        parent = net.act[-1].T.astype(np.int8)[cols]
        others = np.setdiff1d(np.arange(parent.shape[1]), rows)
        for c in range(len(trits)):
            ref = run_network(x[cols], _with_row(net.layers(), layer, row, trits[c], biases[c]))
            assert np.array_equal(new[c].T.astype(np.int8), ref[:, rows])
            assert np.array_equal(parent[:, others], ref[:, others]), "unlisted outputs moved"
            expect = _loss(parent, y[cols], 8.0) - _loss(ref, y[cols], 8.0)
            assert gain[c] == pytest.approx(expect, rel=1e-4, abs=1e-3)
        c = int(rng.integers(len(trits)))
        net.apply_row(layer, row, trits[c], int(biases[c]))
        _check_caches(net, x)


def test_shift_steps_keep_caches_exact():
    rng = np.random.default_rng(5)
    net, x, _ = _net(rng, (16, 12, 4))
    settings = _Settings(hidden=(12,), offspring=4, batch_start=200, batch_end=200,
                         temperature=8.0, density=0.5, flip_p=0.5, flip_width=64, bias_rate=0.25,
                         bias_step=2.0, shift_rate=1.0, input_quantile=0.999, history_points=5)
    search = _Search(net, settings, rng)
    shifts = set()
    for _ in range(40):
        search.step(0.0)  # shift_rate 1: every generation tries a shift move
        shifts.add(tuple(net.shift))
        _check_caches(net, x)
    assert len(shifts) > 1, "no shift move was ever accepted"


# ---------------------------------------------------------------------------------------------
# The search
# ---------------------------------------------------------------------------------------------


def test_result_is_a_valid_program_and_agrees_with_reference(small):
    x, y, xt, yt = small
    seen = []
    r = train_evolve(x, y, hidden=(16,), budget_s=None, max_generations=150, seed=3,
                     x_test=xt, y_test=yt, progress=lambda f, m: seen.append(f),
                     labels=[str(i) for i in range(10)])
    assert isinstance(r, TrainResult) and r.method == "evolve"
    p = r.program
    assert isinstance(p, Program) and p.input_scale is not None
    assert [la.fan_out for la in p.layers] == [16, 10] and p.input_width == 64
    assert p.labels == tuple(str(i) for i in range(10))
    assert r.metrics["train_acc"] == accuracy(p.run_reference(x), y)
    assert r.metrics["test_acc"] == accuracy(p.run_reference(xt), yt)
    assert r.metrics["generations"] == 150
    assert r.metrics["evaluations"] >= 150
    assert 0.0 <= r.metrics["sparsity"] <= 1.0
    assert r.history[0]["generation"] == 0 and r.history[-1]["generation"] == 150
    assert r.history[-1]["test_acc"] == r.metrics["test_acc"]
    assert r.history[-1]["train_acc"] == r.metrics["train_acc"]
    assert all(set(h) == {"elapsed_s", "generation", "train_fitness", "train_acc", "test_acc"}
               for h in r.history)
    gens = [h["generation"] for h in r.history]
    assert gens == sorted(gens) and len(gens) >= 10
    assert seen and seen == sorted(seen) and seen[-1] == 1.0
    # the program round-trips through its file
    assert Program.from_bytes(p.to_bytes()) == p
    assert r.settings["seed"] == 3 and r.settings["hidden"] == [16]


def test_same_seed_same_program_bytes(small):
    x, y, _, _ = small
    kw = dict(hidden=(12,), budget_s=None, max_generations=120, shift_rate=0.05)
    a = train_evolve(x, y, seed=11, **kw)
    b = train_evolve(x, y, seed=11, **kw)
    c = train_evolve(x, y, seed=12, **kw)
    assert a.program.to_bytes() == b.program.to_bytes()
    assert a.metrics["evaluations"] == b.metrics["evaluations"]
    assert c.program.to_bytes() != a.program.to_bytes()


def test_selection_improves_fitness(small):
    """Fails if selection or mutation is broken: 400 generations must learn the digits."""
    x, y, xt, yt = small
    r = train_evolve(x, y, hidden=(32,), budget_s=None, max_generations=400, seed=0,
                     x_test=xt, y_test=yt)
    first, last = r.history[0], r.history[-1]
    assert last["train_fitness"] > first["train_fitness"] + 1.0
    assert first["train_acc"] < 0.5
    assert last["train_acc"] > 0.85 and r.metrics["test_acc"] > 0.75
    assert r.metrics["accepted"] > 100


def test_no_hidden_layer_and_single_sample_classes():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    y = (x[:, 0] > 0).astype(int)
    r = train_evolve(x, y, hidden=(), budget_s=None, max_generations=50, seed=0)
    assert r.program.n_layers == 1 and r.program.output_width == 2
    assert r.metrics["train_acc"] > 0.8
    r = train_evolve(x, np.zeros(60, int), n_classes=3, hidden=4, max_generations=5)
    assert r.program.output_width == 3


def test_budget_stops_the_run(small):
    x, y, _, _ = small
    r = train_evolve(x, y, hidden=(8,), budget_s=0.5, seed=0)
    assert r.metrics["generations"] >= 1
    assert r.metrics["seconds"] < 30  # a generous bound: the budget was honoured at all


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

X = np.zeros((4, 3))
Y = np.array([0, 1, 0, 1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(x_train=np.zeros((4,))), r"x_train must have shape \(N, K\)"),
        (dict(x_train=np.zeros((0, 3)), y_train=np.zeros(0, int)), "x_train is empty"),
        (dict(x_train=np.array([[0, 1, math.nan]] * 4)), r"finite .*: nan at \(0, 2\)"),
        (dict(x_train=np.array([[0, math.inf, 0]] * 4)), "x_train must be finite .*: inf"),
        (dict(x_train=np.array([["a", "b", "c"]] * 4)), "x_train must be a real numeric array"),
        (dict(y_train=np.array([0, 1, 2])), r"y_train must have shape \(4,\)"),
        (dict(y_train=np.array([0, 1, -1, 0])), "y_train must be >= 0: value -1 at 2"),
        (dict(y_train=np.array([0.5, 1, 0, 1])), "y_train must be integer class indices"),
        (dict(y_train=np.array([0, 3, 0, 1]), n_classes=2), r"must be < 2 .*: value 3 at 1"),
        (dict(y_train=np.zeros(4, int)), "single class"),
        (dict(x_test=np.zeros((2, 3))), "give both x_test and y_test"),
        (dict(x_test=np.zeros((2, 4)), y_test=[0, 1]), "x_test has 4 features per sample"),
        (dict(x_test=np.zeros((2, 3)), y_test=[0, 5]), r"y_test must be < 2 .*: value 5"),
        (dict(hidden=(8, 0)), r"hidden\[1\] must be an integer >= 1, not 0"),
        (dict(hidden="64"), "hidden must be a sequence"),
        (dict(hidden=(70000,)), "wider than the fan-in limit"),
        (dict(budget_s=None, max_generations=None), "give budget_s or max_generations"),
        (dict(budget_s=-1.0), "budget_s must be a finite number > 0"),
        (dict(budget_s=math.nan), "budget_s must be a finite number > 0"),
        (dict(max_generations=0), "max_generations must be an integer >= 1, not 0"),
        (dict(max_generations=2.5), "max_generations must be an integer"),
        (dict(seed=-1), "seed must be an integer >= 0"),
        (dict(progress=3), "progress must be callable"),
        (dict(n_classes=1), "n_classes must be an integer >= 2"),
        (dict(offspring=0), "offspring must be an integer >= 1"),
        (dict(batch_size=(0, None)), r"batch_size\[0\] must be an integer >= 1"),
        (dict(batch_size="all"), "batch_size must be an int or a pair"),
        (dict(temperature=3.0), "temperature must be a finite number >= 4.0"),
        (dict(density=1.5), "density must be a finite number > 0.0 and <= 1.0"),
        (dict(flip_p=0.0), "flip_p must be a finite number > 0"),
        (dict(flip_width=0), "flip_width must be an integer >= 1"),
        (dict(bias_rate=-0.1), "bias_rate must be a finite number >= 0"),
        (dict(shift_rate=2), "shift_rate must be a finite number >= 0.0 and <= 1.0"),
        (dict(input_quantile=0), "input_quantile must be a finite number > 0"),
        (dict(history_points=0), "history_points must be an integer >= 1"),
        (dict(mutation_rate=0.1), "unknown setting 'mutation_rate'"),
        (dict(labels=["a", "b", "c"]), "labels has 3 entries but the last layer has 2 outputs"),
    ],
)
def test_errors(kwargs, match):
    args = dict(x_train=X, y_train=Y, max_generations=1)
    args.update(kwargs)
    with pytest.raises(EvolveError, match=match):
        train_evolve(args.pop("x_train"), args.pop("y_train"), **args)


def test_error_is_a_value_error_and_defaults_are_documented():
    assert issubclass(EvolveError, ValueError)
    assert train_evolve.__doc__ is not None
    for name in DEFAULTS:
        assert f"``{name}``" in train_evolve.__doc__


# ---------------------------------------------------------------------------------------------
# The target (slow): digits >= 97% on the test split within 5 minutes
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_digits_target(digits):
    x, y, xt, yt = digits
    r = train_evolve(x, y, hidden=(128,), budget_s=300, seed=0, x_test=xt, y_test=yt)
    assert r.metrics["test_acc"] >= 0.97, r.metrics


# ---------------------------------------------------------------------------------------------
# Convolutional networks
# ---------------------------------------------------------------------------------------------


def test_cnn_evolution_is_reproducible_exact_and_learns(digits):
    x, y, xt, yt = digits
    kw = dict(arch="c4k3p1,m2", input_shape=(1, 8, 8), max_generations=150, budget_s=None,
              x_test=xt, y_test=yt)
    a = train_evolve(x, y, seed=3, **kw)
    b = train_evolve(x, y, seed=3, **kw)
    assert a.program.to_bytes() == b.program.to_bytes()
    assert a.metrics["accepted"] > 0 and a.metrics["generations"] == 150
    assert a.metrics["test_acc"] == accuracy(a.program.run_reference(xt), yt)
    assert a.history[-1]["train_acc"] > a.history[0]["train_acc"]  # it learns something
    with pytest.raises(EvolveError, match=r"input_shape \(2, 8, 8\) holds 128 values"):
        train_evolve(x, y, arch="c4k3", input_shape=(2, 8, 8), max_generations=1)
    with pytest.raises(EvolveError, match="arch: 'c4k30'"):
        train_evolve(x, y, arch="c4k30", input_shape=(1, 8, 8), max_generations=1)
