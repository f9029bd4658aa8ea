"""host.regions and ``trine regions``: exact counts on networks whose regions are known, the
counts against dense sampling on random networks, determinism, bounds and errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from trine.contract.reference import Conv, Flatten, Layer, MaxPool
from trine.host import regions as R
from trine.host.program import Program
from trine.host.ternarize import FloatConv, run_float

FIXTURES = Path(__file__).parent / "fixtures"


def one_hidden_program(breaks, out_trits, in_trits=None) -> Program:
    """1 input -> len(breaks) ReLUs, neuron i = relu(w_i x - w_i b_i) -> 1 linear output."""
    n = len(breaks)
    w = np.ones(n, np.int8) if in_trits is None else np.asarray(in_trits, np.int8)
    hidden = Layer(w.reshape(n, 1), (-w * np.asarray(breaks)).astype(np.int32), 0, True)
    out = Layer(np.asarray(out_trits, np.int8).reshape(1, n), np.zeros(1, np.int32), 0, False)
    return Program([hidden, out])


# ---- networks with known counts -----------------------------------------------------------


def test_one_hidden_layer_distinct_breakpoints_gives_n_plus_1():
    net = R.from_program(one_hidden_program([-50, -7, 3, 20, 90], [1, -1, 1, 1, -1]))
    r = R.count_line(net, [-128], [127])
    assert (r.regions, r.activation_regions) == (6, 6)
    t = r.breaks * 255 - 128
    assert np.allclose(t, [-50, -7, 3, 20, 90])
    assert np.array_equal(r.breaks, r.region_breaks)


def test_shared_breakpoint_counts_once():
    # relu(x - 3) and relu(3 - x): two neurons, one breakpoint, |x - 3| in the output
    net = R.from_program(one_hidden_program([-50, 3, 3, 90], [1, 1, 1, 1], [1, 1, -1, 1]))
    r = R.count_line(net, [-128], [127])
    assert (r.regions, r.activation_regions) == (4, 4)
    # relu(x - 3) - relu(3 - x) = x - 3: the pattern changes at 3, the map does not
    net = R.from_program(one_hidden_program([-50, 3, 3, 90], [1, 1, -1, 1], [1, 1, -1, 1]))
    r = R.count_line(net, [-128], [127])
    assert (r.regions, r.activation_regions) == (3, 4)


def test_neuron_that_does_not_reach_the_output_splits_patterns_not_regions():
    # neuron 2 has a zero outgoing trit: its breakpoint changes the pattern, not the map
    net = R.from_program(one_hidden_program([-50, 3, 40, 90], [1, -1, 0, 1]))
    r = R.count_line(net, [-128], [127])
    assert r.activation_regions == 5
    assert r.regions == 4
    assert np.allclose(r.region_breaks * 255 - 128, [-50, 3, 90])


def test_dead_network_has_one_region():
    layers = [Layer(np.array([[1], [-1], [1]], np.int8), np.array([-200, -300, -129], np.int32),
                    0, True),
              Layer(np.ones((2, 3), np.int8), np.zeros(2, np.int32), 0, False)]
    net = R.from_program(Program(layers))
    r = R.count_line(net, [-128], [127])
    assert (r.regions, r.activation_regions) == (1, 1)
    s = R.count_slice(R.from_program(Program([Layer(np.ones((3, 2), np.int8),
                                                    np.full(3, -600, np.int32), 0, True)])),
                      [0, 0], [1, 0], [0, 1], 127)
    assert (s.regions, s.activation_regions) == (1, 1)


@pytest.mark.parametrize("k", [1, 2, 5, 9])
def test_k_lines_in_general_position_give_1_plus_k_plus_k_choose_2_faces(k):
    rng = np.random.default_rng(k)
    angle = np.sort(rng.uniform(0, np.pi, k))
    normals = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    offsets = rng.uniform(-1, 1, k)
    # every pairwise intersection, to choose a square that holds them all
    far = 1.0
    for i in range(k):
        for j in range(i + 1, k):
            far = max(far, np.abs(np.linalg.solve(normals[[i, j]], -offsets[[i, j]])).max())
    net = R.from_float_layers([(normals, offsets, True), (rng.normal(size=(1, k)), [0.0], False)])
    s = R.count_slice(net, [0, 0], [1, 0], [0, 1], 2 * far)
    expected = 1 + k + math.comb(k, 2)
    assert s.activation_regions == expected
    assert s.regions == expected
    assert abs(sum(R._area(p) for p in s.polygons) - (4 * far) ** 2) < 1e-6 * (4 * far) ** 2


def test_slice_merges_only_adjacent_faces_with_one_map():
    # two parallel lines, the middle strip's neuron unseen by the output: 3 faces, 2 regions
    w = np.array([[1.0, 0.0], [1.0, 0.0]])
    net = R.from_float_layers([(w, [0.5, -0.5], True), (np.array([[1.0, 0.0]]), [0.0], False)])
    s = R.count_slice(net, [0, 0], [1, 0], [0, 1], 1)
    assert (s.activation_regions, s.regions) == (3, 2)
    # with a second, unseen neuron far apart the two unseen strips are not adjacent
    w = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    net = R.from_float_layers([(w, [0.5, 0.0, -0.5], True),
                               (np.array([[0.0, 1.0, 0.0]]), [0.0], False)])
    s = R.count_slice(net, [0, 0], [1, 0], [0, 1], 1)
    assert (s.activation_regions, s.regions) == (4, 2)


@pytest.mark.parametrize("n,depth", [(2, 3), (3, 3), (4, 3), (5, 2)])
def test_ternary_sawtooth_reaches_n_to_the_depth(n, depth):
    program = R.sawtooth_program(n, depth)
    top = n ** depth
    x = np.arange(top + 1).reshape(-1, 1)
    y = program.run_reference(x)[:, 0]
    # the integer program is the zig-zag itself: 0 at even multiples of... every integer point
    assert np.array_equal(y, np.arange(top + 1) % 2)
    r = R.count_line(R.from_program(program), [0], [top])
    assert (r.regions, r.activation_regions) == (top, top)
    assert r.regions >= R.general_lower_bound(1, [n] * depth) * n / (n + 1)


# ---- against sampling, layouts, determinism -------------------------------------------------


def _intervals_hit(breaks: np.ndarray, t: np.ndarray) -> int:
    """How many of the intervals between ``breaks`` hold at least one of the points ``t``."""
    return len(np.unique(np.searchsorted(breaks, t)))


@pytest.mark.parametrize("ternary", [True, False])
@pytest.mark.parametrize("shape", [[1, 8, 8, 1], [3, 12, 12, 12, 2], [8, 32, 32, 1]])
def test_line_count_against_dense_sampling(shape, ternary):
    for seed in range(3):
        net = R.random_network(shape, ternary=ternary, seed=seed)
        a, b = R.random_chord(net, np.random.default_rng(seed))
        r = R.count_line(net, a, b)
        points = 20001
        sampled = R.sample_line_patterns(net, a, b, points)
        assert sampled <= r.activation_regions
        t = np.linspace(0, 1, points)
        assert sampled == _intervals_hit(r.breaks, t)
        if np.diff(np.concatenate([[0], r.breaks, [1]])).min() > 2 / (points - 1):
            assert sampled == r.activation_regions


@pytest.mark.parametrize("ternary", [True, False])
def test_slice_count_against_dense_sampling(ternary):
    net = R.random_network([2, 6, 6, 1], ternary=ternary, seed=5)
    a, d1, d2, extent = R.random_plane(net, np.random.default_rng(0))
    s = R.count_slice(net, a, d1, d2, extent)
    grid = 301
    inside = extent * (1 - 1e-4)
    sampled = R.sample_slice_patterns(net, a, d1, d2, inside, grid)
    hit = _faces_hit(s.polygons, inside, grid)
    assert sampled <= s.activation_regions
    assert sampled == hit
    assert sampled >= 0.9 * s.activation_regions
    assert abs(sum(R._area(p) for p in s.polygons) - (2 * extent) ** 2) < 1e-9


def test_random_network_is_determined_by_its_seed():
    a = R.random_network([4, 16, 16, 1], seed=7)
    b = R.random_network([4, 16, 16, 1], seed=7)
    c = R.random_network([4, 16, 16, 1], seed=8)
    for x, y in zip(a.ops, b.ops, strict=True):
        assert np.array_equal(x.matrix, y.matrix) and np.array_equal(x.bias, y.bias)
    assert not np.array_equal(a.ops[0].matrix, c.ops[0].matrix)
    ra = R.count_line(a, *R.random_chord(a, np.random.default_rng(1)))
    rb = R.count_line(b, *R.random_chord(b, np.random.default_rng(1)))
    assert np.array_equal(ra.breaks, rb.breaks)
    trits = a.ops[0].matrix / np.abs(a.ops[0].matrix).max()
    assert set(np.unique(trits)) <= {-1.0, 0.0, 1.0}
    assert 0.3 < np.mean(trits == 0) < 0.7


def test_alternating_network_has_the_papers_layers():
    net = R.random_network([2, 4, 4, 4, 4, 1], alternate=True, seed=0)
    assert [op.relu for op in net.ops] == [False, True, False, True, False]
    assert [op.relu for op in R.random_network([2, 4, 4, 1]).ops] == [True, True, False]
    # two ternary layers with no ReLU between them are one layer of integer weights (times
    # the scales): the composed matrix is not ternary
    w = (net.ops[1].matrix @ net.ops[0].matrix) / (np.abs(net.ops[1].matrix).max()
                                                   * np.abs(net.ops[0].matrix).max())
    assert np.allclose(w, np.round(w)) and np.abs(w).max() >= 2


def test_random_chord_crosses_the_box():
    program = Program([Layer(np.ones((2, 64), np.int8), np.zeros(2, np.int32), 0, True)])
    net = R.from_program(program)
    lengths = []
    for seed in range(10):
        a, b = R.random_chord(net, np.random.default_rng(seed))
        for end in (a, b):
            assert end.min() >= -128 - 1e-9 and end.max() <= 127 + 1e-9
            assert np.isclose(np.abs(end + 0.5).max(), 127.5)  # on the box's boundary
        lengths.append(np.linalg.norm(b - a))
    assert np.mean(lengths) > 0.3 * np.sqrt(64) * 255


def test_program_function_is_the_integer_path_without_rounding():
    rng = np.random.default_rng(0)
    layers = [Layer(rng.integers(-1, 2, (16, 5)).astype(np.int8),
                    rng.integers(-40, 40, 16).astype(np.int32), 3, True),
              Layer(rng.integers(-1, 2, (3, 16)).astype(np.int8),
                    rng.integers(-40, 40, 3).astype(np.int32), 2, False)]
    program = Program(layers)
    net = R.from_program(program)
    x = rng.integers(-20, 20, (200, 5))
    real = net.forward(x)
    # the device rounds after each shift: within half a unit per layer, propagated
    w1, w2 = (layer.weights.astype(float) for layer in layers)
    b1, b2 = (layer.bias.astype(float) for layer in layers)
    assert np.array_equal(real, (np.maximum((x @ w1.T + b1) / 8, 0) @ w2.T + b2) / 4)
    # the device rounds after each shift: half a unit per layer, carried through the next
    assert np.abs(real - program.run_reference(x)).max() <= 0.5 + 16 * 0.5 / 4


def exact_breaks(program: Program, a, b) -> list:
    """The activation pattern's breakpoints on the segment, in exact rational arithmetic: a
    plain transcription of the walk (dense layers only), to check the float64 one against."""
    from fractions import Fraction

    pieces = [(Fraction(0), Fraction(1), [Fraction(int(v)) for v in a],
               [Fraction(int(v) - int(u)) for u, v in zip(a, b, strict=True)])]
    for layer in program.layers:
        s = Fraction(1, 2 ** layer.shift)
        w = [[int(t) for t in row] for row in layer.weights]
        bias = [Fraction(int(v)) * s for v in layer.bias]
        out = []
        for lo, hi, p, q in pieces:
            z0 = [s * sum(wi * pi for wi, pi in zip(row, p, strict=True)) + bi
                  for row, bi in zip(w, bias, strict=True)]
            z1 = [s * sum(wi * qi for wi, qi in zip(row, q, strict=True)) for row in w]
            if not layer.relu:
                out.append((lo, hi, z0, z1))
                continue
            cuts = sorted({-c0 / c1 for c0, c1 in zip(z0, z1, strict=True)
                           if c1 != 0 and lo < -c0 / c1 < hi})
            ends = [lo, *cuts, hi]
            for left, right in zip(ends[:-1], ends[1:], strict=True):
                mid = (left + right) / 2
                on = [c0 + c1 * mid > 0 for c0, c1 in zip(z0, z1, strict=True)]
                out.append((left, right,
                            [c if o else Fraction(0) for c, o in zip(z0, on, strict=True)],
                            [c if o else Fraction(0) for c, o in zip(z1, on, strict=True)]))
        pieces = out
    return [piece[0] for piece in pieces[1:]]


@pytest.mark.parametrize("seed", range(4))
def test_line_walk_equals_exact_rational_arithmetic(seed):
    rng = np.random.default_rng(seed)
    widths = [4, 16, 16, 16, 3]
    layers = [Layer(np.where(rng.random((m, k)) < 0.4, 0, rng.choice([-1, 1], (m, k))
                             ).astype(np.int8),
                    rng.integers(-100, 100, m).astype(np.int32), int(rng.integers(0, 3)),
                    i < len(widths) - 2)
              for i, (k, m) in enumerate(zip(widths[:-1], widths[1:], strict=True))]
    program = Program(layers)
    a, b = rng.integers(-128, 128, (2, 4))
    exact = exact_breaks(program, a, b)
    r = R.count_line(R.from_program(program), a, b)
    assert r.activation_regions == len(exact) + 1 > 5
    assert np.allclose(r.breaks, [float(t) for t in exact], rtol=0, atol=1e-13)


def test_convolution_and_pooling_program_against_sampling():
    rng = np.random.default_rng(2)
    layers = [Conv(rng.integers(-1, 2, (4, 2, 3)).astype(np.int8),
                   rng.integers(-30, 30, 4).astype(np.int32), padding=1, shift=1, relu=True),
              MaxPool(2),
              Conv(rng.integers(-1, 2, (3, 4, 3)).astype(np.int8),
                   rng.integers(-30, 30, 3).astype(np.int32), shift=1, relu=True),
              Flatten(),
              Layer(rng.integers(-1, 2, (2, 6)).astype(np.int8), np.zeros(2, np.int32), 0,
                    False)]
    program = Program(layers, input_shape=(2, 8))
    net = R.from_program(program)
    x = rng.integers(-128, 128, (50, 16))
    # the same network in host.ternarize's float layers, each trit over 2**shift
    c1, _, c2, _, d = layers
    float_layers = [FloatConv(c1.weights / 2, c1.bias / 2, padding=1, relu=True), MaxPool(2),
                    FloatConv(c2.weights / 2, c2.bias / 2, relu=True), Flatten(),
                    (d.weights.astype(float), d.bias.astype(float), False)]
    expected = run_float(float_layers, x.reshape(50, 2, 8).astype(float), (2, 8))
    assert np.allclose(net.forward(x), expected, rtol=1e-12, atol=1e-12)
    total = 0
    for seed in range(3):
        a, b = R.random_chord(net, np.random.default_rng(seed))
        r = R.count_line(net, a, b)
        t = np.linspace(0, 1, 40001)
        sampled = R.sample_line_patterns(net, a, b, len(t))
        total += r.activation_regions
        assert sampled <= r.activation_regions
        assert sampled == _intervals_hit(r.breaks, t)
        assert r.regions <= r.activation_regions
    assert total > 10
    a, d1, d2, extent = R.random_plane(net, np.random.default_rng(0))
    s = R.count_slice(net, a, d1, d2, 30.0)
    assert R.sample_slice_patterns(net, a, d1, d2, 30.0, 201) <= s.activation_regions
    assert abs(sum(R._area(p) for p in s.polygons) - 60.0 ** 2) < 1e-6


def _faces_hit(polygons, extent: float, grid: int) -> int:
    """How many of the convex ``polygons`` hold at least one point of the sampling grid."""
    g = np.linspace(-extent, extent, grid)
    u, v = np.meshgrid(g, g)
    pts = np.stack([u.ravel(), v.ravel()], axis=1)
    hit = 0
    for poly in polygons:
        e = np.roll(poly, -1, axis=0) - poly
        rel = pts[:, None, :] - poly[None]
        cross = e[None, :, 0] * rel[:, :, 1] - e[None, :, 1] * rel[:, :, 0]
        hit += bool(np.any(np.all(cross > 1e-9, axis=1)))
    return hit


@pytest.mark.parametrize("pool,shape", [(3, (2, 9)), ((2, 2), (1, 4, 4))])
def test_pooling_windows_wider_than_two_merge_their_pieces(pool, shape):
    # crossings between two losers of a window split nothing: the pieces must merge again
    rng = np.random.default_rng(11)
    c_in = shape[0]
    kernel = (3,) if len(shape) == 2 else (3, 3)
    conv = Conv(rng.integers(-1, 2, (3, c_in, *kernel)).astype(np.int8),
                rng.integers(-60, 60, 3).astype(np.int32), padding=1, shift=0, relu=True)
    positions = math.prod(shape[1:]) // math.prod(pool if isinstance(pool, tuple) else (pool,))
    layers = [conv, MaxPool(pool), Flatten(),
              Layer(rng.integers(-1, 2, (2, 3 * positions)).astype(np.int8),
                    np.zeros(2, np.int32), 0, False)]
    net = R.from_program(Program(layers, input_shape=shape))
    for seed in range(2):
        a, b = R.random_chord(net, np.random.default_rng(seed))
        r = R.count_line(net, a, b)
        t = np.linspace(0, 1, 20001)
        assert R.sample_line_patterns(net, a, b, len(t)) == _intervals_hit(r.breaks, t)
    d = np.random.default_rng(5).normal(size=(2, net.input_width))
    s = R.count_slice(net, np.zeros(net.input_width), d[0], d[1], 40.0)
    assert s.activation_regions > 10
    # grid points on the square's edges lie in no face's interior; an even grid misses the
    # origin, where the difference lines of a channel's positions in a window all meet (ties)
    inside = 40.0 * (1 - 1e-4)
    assert R.sample_slice_patterns(net, np.zeros(net.input_width), d[0], d[1], inside,
                                   150) == _faces_hit(s.polygons, inside, 150)


def test_onnx_model_is_its_float_network():
    from trine.host.onnx_import import read_onnx_network

    path = FIXTURES / "cnn2d_legacy.onnx"
    model = read_onnx_network(path, read_labels=False)
    net = R.from_onnx(path)
    x = np.random.default_rng(0).normal(size=(20, net.input_width))
    assert np.allclose(net.forward(x), model.forward(x).reshape(20, -1), rtol=1e-12, atol=1e-12)
    a, b = R.random_chord(net, np.random.default_rng(3))
    r = R.count_line(net, a, b)
    assert R.sample_line_patterns(net, a, b, 20001) <= r.activation_regions


def test_onnx_model_imported_is_its_program(tmp_path, capsys):
    from trine.host.data import load_dataset
    from trine.host.onnx_import import import_onnx

    path = FIXTURES / "digits_mlp_skl.onnx"
    x = load_dataset("digits")[0][:200]
    program = import_onnx(path, x)
    net = R.from_onnx(path, x)
    a, b = x[3] / program.input_scale, x[4] / program.input_scale
    assert np.array_equal(R.count_line(net, a, b).breaks,
                          R.count_line(R.from_program(program), a, b).breaks)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "r.json"
    assert run_cli(path, "--calib", tmp_path / "x.npy", "--line", ",".join(map(str, a)),
                   ",".join(map(str, b)), "--json", out) == 0
    assert json.loads(out.read_text())["regions"] == R.count_line(net, a, b).regions
    assert "(imported)" in capsys.readouterr().out


def test_jacobian_probes_agree_with_the_whole_jacobian():
    net = R.random_network([12, 16, 16, 3], ternary=True, seed=4)
    a, b = R.random_chord(net, np.random.default_rng(4))
    r = R.count_line(net, a, b)
    mids = a + np.outer(np.convolve(np.concatenate([[0], r.breaks, [1]]), [0.5, 0.5], "valid"),
                        b - a)
    full = net.jacobians(mids, probes=0)
    same = R._same_maps(full[1:], full[:-1])
    assert r.regions == 1 + int((~same).sum())
    # the whole Jacobian against finite differences at one point
    h = 1e-6
    fd = (net.forward(mids[:1] + h * np.eye(12)) - net.forward(mids[:1])) / h
    assert np.allclose(full[0], fd.T, atol=1e-4)


def test_general_lower_bound():
    assert R.general_lower_bound(1, [4, 4, 4]) == 4 * 4 * 5
    assert R.general_lower_bound(2, [4, 4]) == 2 ** 2 * (1 + 4 + 6)
    with pytest.raises(R.RegionsError, match="input dimension"):
        R.general_lower_bound(3, [2, 4])


# ---- bounded work and errors ---------------------------------------------------------------


def test_limit_stops_the_count_with_a_clear_error():
    program = R.sawtooth_program(3, 3)
    with pytest.raises(R.TooManyRegionsError, match="more than 20 intervals"):
        R.count_line(R.from_program(program), [0], [27], limit=20)
    net = R.random_network([2, 16, 16, 1], seed=0)
    with pytest.raises(R.TooManyRegionsError, match="faces"):
        R.count_slice(net, [0, 0], [1, 0], [0, 1], 1.0, limit=10)


@pytest.mark.parametrize("call,message", [
    (lambda n: R.count_line(n, [0, 0], [1, 1, 1]), "end must have 2 values"),
    (lambda n: R.count_line(n, [0, 0], [0, 0]), "same point"),
    (lambda n: R.count_line(n, [0, np.nan], [1, 1]), "finite"),
    (lambda n: R.count_line(n, [0, 0], [1, 1], limit=0), "limit"),
    (lambda n: R.count_slice(n, [0, 0], [1, 1], [2, 2], 1.0), "parallel"),
    (lambda n: R.count_slice(n, [0, 0], [1, 0], [0, 1], 0.0), "extent"),
])
def test_bad_segments_and_slices_are_refused(call, message):
    with pytest.raises(R.RegionsError, match=message):
        call(R.random_network([2, 4, 1], seed=0))


@pytest.mark.parametrize("kwargs,message", [
    ({"widths": [3]}, "at least two widths"),
    ({"widths": [3, 0, 1]}, "at least two widths"),
    ({"widths": [3, 4, 1], "sparsity": 1.0}, "sparsity"),
    ({"widths": [3, 4, 1], "scale": -1.0}, "scale"),
])
def test_bad_random_networks_are_refused(kwargs, message):
    with pytest.raises(R.RegionsError, match=message):
        R.random_network(**kwargs)


def test_one_input_has_no_plane():
    with pytest.raises(R.RegionsError, match="no 2-D slice"):
        R.random_plane(R.random_network([1, 4, 1]), np.random.default_rng(0))


# ---- trine regions --------------------------------------------------------------------------


def run_cli(*argv):
    from trine.cli.main import main

    return main(["regions", *map(str, argv)])


def test_cli_random_line_writes_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert run_cli("--random", "2,16,16,1", "--seed", 3, "--json", out) == 0
    record = json.loads(out.read_text())
    net = R.random_network([2, 16, 16, 1], seed=3)
    a, b = R.random_chord(net, np.random.default_rng(3))
    r = R.count_line(net, a, b)
    assert record["regions"] == r.regions
    assert record["activation_regions"] == r.activation_regions
    assert record["mode"] == "line" and record["network"]["ternary"] is True
    assert np.allclose(record["a"], a)
    assert f"{r.regions} linear regions" in capsys.readouterr().out


def test_cli_program_line_and_slice(tmp_path, capsys):
    path = tmp_path / "saw.trine"
    R.sawtooth_program(3, 3).save(path)
    out = tmp_path / "r.json"
    assert run_cli(path, "--line", 0, 27, "--json", out) == 0
    assert json.loads(out.read_text())["regions"] == 27
    assert run_cli(path, "--json", out) == 0  # a random chord of [-128, 127]
    record = json.loads(out.read_text())
    assert -128 <= min(record["a"] + record["b"]) and max(record["a"] + record["b"]) <= 127
    assert run_cli("--random", "2,8,1", "--float", "--slice", "0,0", "1,0", "0,1", "--extent",
                   2, "--json", out) == 0
    record = json.loads(out.read_text())
    net = R.random_network([2, 8, 1], ternary=False, seed=0)
    assert record["network"]["alternate"] is False
    assert record["regions"] == R.count_slice(net, [0, 0], [1, 0], [0, 1], 2.0).regions
    assert record["mode"] == "slice"


def test_cli_alternate(tmp_path):
    out = tmp_path / "r.json"
    assert run_cli("--random", "1,8,8,8,8,1", "--alternate", "--line", -5, 5, "--json",
                   out) == 0
    net = R.random_network([1, 8, 8, 8, 8, 1], alternate=True, seed=0)
    assert json.loads(out.read_text())["regions"] == R.count_line(net, [-5], [5]).regions


def test_cli_onnx(capsys):
    assert run_cli(FIXTURES / "cnn1d_legacy.onnx", "--range", -2, 2) == 0
    assert "cnn1d_legacy.onnx" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    ((), "give a PROGRAM.trine or MODEL.onnx, or --random"),
    (("x.trine", "--random", "2,4,1"), "one of them"),
    (("missing.trine",), "no such file"),
    (("--random", "2,4,1", "--line", "0", "1,2,3"), "B has 3 values"),
    (("--random", "2,4,1", "--slice", "0", "1,0", "0,1"), "needs --extent"),
    (("--random", "2,4,1", "--extent", "1"), "--extent goes with --slice"),
    (("--random", "2,4,1", "--range", "1", "0"), "LO < HI"),
    (("--random", "1,4,1", "--plane"), "no 2-D slice"),
    (("--random", "2,64,64,1", "--limit", "5"), "more than 5"),
    (("x.trine", "--alternate"), "--alternate applies to --random networks only"),
    (("--random", "2,4,1", "--calib", "x.npy"), "--calib applies to an .onnx model only"),
])
def test_cli_errors_exit_2(argv, message, capsys):
    assert run_cli(*argv) == 2
    assert message in capsys.readouterr().err


def test_cli_bad_file_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.trine"
    bad.write_bytes(b"not a program")
    assert run_cli(bad) == 2
    assert "bad.trine" in capsys.readouterr().err
