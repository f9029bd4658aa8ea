"""trine.host.onnx_import on convolutional networks: PyTorch exports of both exporters (committed
fixtures, written by tests/fixtures/make_onnx_fixtures.py), hand-built graphs, every refusal,
BatchNormalization folding, and the folded Program through its .trine file."""

import math
import re
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from trine.contract.network import layer_kind  # noqa: E402
from trine.contract.reference import Conv, Flatten, MaxPool  # noqa: E402
from trine.host.onnx_import import (  # noqa: E402
    OnnxImportError,
    import_onnx,
    read_onnx_mlp,
    read_onnx_network,
)
from trine.host.program import Program  # noqa: E402
from trine.host.ternarize import (  # noqa: E402
    FloatConv,
    TernarizedConv,
    run_ternarized_float,
    ternarize_layers,
)

FIXTURES = Path(__file__).parent / "fixtures"

# What each exporter really wrote (torch 2.13): the node types in graph order, and the batch.
EXPORTS = {
    "cnn1d_legacy": ("cnn1d", "batch", ["Conv", "Relu", "Conv", "Relu", "MaxPool", "Flatten",
                                        "Gemm"]),
    "cnn1d_legacy_bn": ("cnn1d", "batch", ["Conv", "Relu", "Conv", "BatchNormalization", "Relu",
                                           "MaxPool", "Flatten", "Gemm"]),
    "cnn1d_dynamo": ("cnn1d", "batch", ["Conv", "Relu", "Conv", "Relu", "MaxPool", "Reshape",
                                        "Gemm"]),
    "cnn1d_dynamo_bn": ("cnn1d", "batch", [
        "Shape", "Squeeze", "Conv", "Relu", "Conv", "BatchNormalization", "Relu", "MaxPool",
        "Constant", "Reshape", "Constant", "Concat", "Reshape", "Gemm"]),
    "cnn2d_legacy": ("cnn2d", "batch", ["Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool",
                                        "Flatten", "Gemm"]),
    "cnn2d_legacy_bn": ("cnn2d", 1, ["Conv", "BatchNormalization", "Relu", "MaxPool", "Conv",
                                     "Relu", "MaxPool", "Flatten", "Gemm"]),
    "cnn2d_dynamo": ("cnn2d", "batch", ["Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool",
                                        "Reshape", "Gemm"]),
    "cnn2d_dynamo_bn": ("cnn2d", "batch", [
        "Shape", "Squeeze", "Conv", "BatchNormalization", "Relu", "MaxPool", "Conv", "Relu",
        "MaxPool", "Constant", "Reshape", "Constant", "Concat", "Reshape", "Gemm"]),
    "mlp_bn_legacy": ("mlp_bn", "batch", ["Gemm", "BatchNormalization", "Relu", "Gemm"]),
    "mlp_bn_dynamo": ("mlp_bn", "batch", ["Gemm", "Relu", "Gemm"]),
    "mlp_bn_dynamo_bn": ("mlp_bn", "batch", ["Gemm", "BatchNormalization", "Relu", "Gemm"]),
}

# The imported network, independent of the exporter: (kind, geometry, relu) per layer, the
# shapes along it.
STRUCTURE = {
    "cnn1d": ([("Conv1d", (8, 1, (5,), (2,), (1,)), True),
               ("Conv1d", (8, 8, (3,), (2,), (1,)), True),
               ("MaxPool1d", (2,), None), ("Flatten", None, None), ("Dense", (10, 40), False)],
              [(1, 40), (8, 19), (8, 10), (8, 5), (40,), (10,)]),
    "cnn2d": ([("Conv2d", (4, 1, (3, 3), (1, 1), (1, 1)), True), ("MaxPool2d", (2, 2), None),
               ("Conv2d", (8, 4, (3, 3), (1, 1), (1, 1)), True), ("MaxPool2d", (2, 2), None),
               ("Flatten", None, None), ("Dense", (10, 32), False)],
              [(1, 8, 8), (4, 8, 8), (4, 4, 4), (8, 4, 4), (8, 2, 2), (32,), (10,)]),
    "mlp_bn": ([("Dense", (32, 64), True), ("Dense", (10, 32), False)], [(64,), (32,), (10,)]),
}


def _fixture(name):
    return FIXTURES / f"{name}.onnx"


def _saved(model):
    d = np.load(FIXTURES / f"{model}.npz")
    return d["x"], d["y"]


def _calibration(model, n=300, seed=0):
    """Inputs drawn like the fixtures' own (see make_onnx_fixtures.py)."""
    rng = np.random.default_rng(seed)
    shape = STRUCTURE[model][1][0]
    if model == "cnn2d":
        return 16 * rng.random((n, *shape))
    return rng.normal(size=(n, *shape))


def _reference_evaluator(path_or_model, x):
    """The ONNX reference runtime, one sample at a time (one fixture has a fixed batch of 1)."""
    session = ReferenceEvaluator(path_or_model)
    name = session.input_names[0]
    return np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def _describe(layer):
    if isinstance(layer, FloatConv):
        geometry = (layer.out_channels, layer.in_channels, layer.kernel, layer.stride,
                    layer.padding)
        return (f"Conv{layer.ndim}d", geometry, layer.relu)
    if isinstance(layer, MaxPool):
        return (layer.kind, layer.kernel, None)
    if isinstance(layer, Flatten):
        return ("Flatten", None, None)
    w, _, relu = layer
    return ("Dense", w.shape, relu)


# --------------------------------------------------------------------------------------------
# The PyTorch exports
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(EXPORTS))
def test_what_the_exporter_wrote_imports_with_its_structure(name):
    model, batch, ops = EXPORTS[name]
    onnx_model = onnx.load(_fixture(name))
    assert [n.op_type for n in onnx_model.graph.node] == ops
    dim = onnx_model.graph.input[0].type.tensor_type.shape.dim[0]
    assert (dim.dim_param or dim.dim_value) == batch
    assert (FIXTURES / f"{name}.onnx.data").exists() == name.endswith("_dynamo")
    net = read_onnx_network(_fixture(name))
    layers, shapes = STRUCTURE[model]
    assert [_describe(layer) for layer in net.layers] == layers
    assert net.input_shape == shapes[0] and net.output_shape == shapes[-1]
    assert net.is_mlp == (model == "mlp_bn")
    folded = [n for n in net.notes if n.startswith("folded")]
    assert len(folded) == ops.count("BatchNormalization")
    assert all("(BatchNormalization) into node" in n for n in folded)


@pytest.mark.parametrize("name", list(EXPORTS))
def test_float_forward_equals_torch_and_the_reference_evaluator(name):
    model = EXPORTS[name][0]
    x, y = _saved(model)
    net = read_onnx_network(_fixture(name))
    logits = net.forward(x)
    assert logits.dtype == np.float64 and logits.shape == y.shape
    assert np.allclose(logits, y, rtol=1e-5, atol=1e-5)
    assert np.allclose(logits, _reference_evaluator(str(_fixture(name)), x), rtol=1e-5,
                       atol=1e-5)
    # Flat inputs are the same inputs in C order.
    assert np.array_equal(net.forward(x.reshape(len(x), -1)), logits)


@pytest.mark.parametrize("model", list(STRUCTURE))
def test_our_batch_norm_folding_equals_the_exporters(model):
    # The legacy exporter (CNNs) and the onnxscript optimiser (dynamo) fold BatchNorm in
    # float32 themselves; the *_bn files keep the node for trine to fold in float64.
    names = [n for n, (m, _, _) in EXPORTS.items() if m == model]
    nets = [read_onnx_network(_fixture(n)) for n in names]
    for net in nets[1:]:
        for a, b in zip(nets[0].layers, net.layers, strict=True):
            if isinstance(a, FloatConv):
                a, b = (a.weights, a.bias), (b.weights, b.bias)
            elif isinstance(a, tuple):
                a, b = a[:2], b[:2]
            else:
                assert a == b
                continue
            for u, v in zip(a, b, strict=True):
                assert np.allclose(u, v, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(EXPORTS))
def test_the_folded_program_is_bit_exact_through_its_file(name, tmp_path):
    model = EXPORTS[name][0]
    calib = _calibration(model)
    net = read_onnx_network(_fixture(name))
    program = net.to_program(calib)
    layers, shapes = STRUCTURE[model]
    assert [layer_kind(x) for x in program.layers] == [k for k, _, _ in layers]
    assert program.shapes == shapes and program.input_shape == net.input_shape
    for layer, (_, geometry, relu) in zip(program.layers, layers, strict=True):
        if isinstance(layer, Conv):
            assert (layer.kernel, layer.stride, layer.padding) == geometry[2:]
        if relu is not None:
            assert layer.relu == relu
    out = program.run_reference(calib)
    assert out.dtype == np.int8 and out.shape == (len(calib), 10)
    again = Program.from_bytes(program.to_bytes())
    assert again == program
    assert np.array_equal(again.run_reference(calib), out)
    program.save(tmp_path / "p.trine")
    loaded = Program.load(tmp_path / "p.trine")
    assert np.array_equal(loaded.run_reference(calib), out)
    assert np.array_equal(loaded.run_reference(calib.reshape(len(calib), -1)), out)
    # A dense program is still a version 1 file; anything with a convolution version 2.
    assert program.to_bytes()[8] == (1 if model == "mlp_bn" else 2)
    # Flat and shaped calibration data are the same data.
    assert net.to_program(calib.reshape(len(calib), -1)) == program
    assert import_onnx(_fixture(name), calib) == program


@pytest.mark.parametrize("model", ["cnn1d", "cnn2d"])
def test_the_integer_program_tracks_the_ternarised_float_model(model):
    # Dequantised with the product of every weighted layer's exact scale, the integer logits
    # follow the ternarised float model through convolutions, pooling and flatten. Measured
    # mean relative error 0.011 (cnn1d) and 0.017 (cnn2d); a scale lost at a pooling or a
    # flatten, or a wrong conv accumulator, makes it several times larger.
    net = read_onnx_network(_fixture(f"{model}_legacy_bn"))
    calib, test = _calibration(model, 500, 1), _calibration(model, 500, 2)
    program = net.to_program(calib, method="twn")
    tern = ternarize_layers(list(net.layers))
    scale = program.input_scale
    weighted = [t for t in tern if isinstance(t, tuple | TernarizedConv)]
    for layer, t in zip(program.weighted_layers, weighted, strict=True):
        alpha = t.alpha if isinstance(t, TernarizedConv) else t[1]
        np.testing.assert_array_equal(layer.weights,
                                      t.trits if isinstance(t, TernarizedConv) else t[0])
        scale *= float(np.mean(alpha)) * 2.0 ** layer.shift
    got = program.run_reference(test) * scale
    want = run_ternarized_float(tern, test, net.input_shape)
    assert np.abs(got - want).mean() <= 0.04 * np.abs(want).mean()
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.95


def test_read_onnx_mlp_is_the_same_reader():
    a = read_onnx_mlp(_fixture("cnn1d_legacy"))
    b = read_onnx_network(_fixture("cnn1d_legacy"))
    x, _ = _saved("cnn1d")
    assert np.array_equal(a.forward(x), b.forward(x))


# --------------------------------------------------------------------------------------------
# Hand-built graphs: a small 2-D CNN, x (N, 2, 6, 6) -> conv 3 x 3 -> ... -> Gemm
# --------------------------------------------------------------------------------------------

RNG = np.random.default_rng(21)
CW = RNG.normal(size=(3, 2, 3, 3)).astype(np.float32)
CB = RNG.normal(size=3).astype(np.float32)
FW = RNG.normal(size=(4, 27)).astype(np.float32)  # after a 2 x 2 pool: 3 x 3 x 3
BN = {"g": (1 + 0.3 * RNG.normal(size=3)).astype(np.float32),
      "be": RNG.normal(size=3).astype(np.float32),
      "mu": RNG.normal(size=3).astype(np.float32),
      "var": (0.2 + RNG.random(3)).astype(np.float32)}
X6 = RNG.normal(size=(5, 2, 6, 6)).astype(np.float32)


def _model(nodes, inits=None, in_shape=("N", 2, 6, 6), dtype=TensorProto.FLOAT, opset=17):
    inputs = [helper.make_tensor_value_info("x", dtype, list(in_shape) if in_shape else None)]
    outs = [helper.make_tensor_value_info("y", dtype, None)]
    tensors = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    graph = helper.make_graph(nodes, "g", inputs, outs, tensors)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _conv(inp="x", out="c", name="conv", inputs=("CW", "CB"), **attrs):
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], **attrs}
    attrs = {k: v for k, v in attrs.items() if v is not None}
    return helper.make_node("Conv", [inp, *inputs], [out], name=name, **attrs)


def _pool(inp, out, name="pool", **attrs):
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2], **attrs}
    return helper.make_node("MaxPool", [inp], [out], name=name, **attrs)


def _bn(inp, out, name="bn", **attrs):
    return helper.make_node("BatchNormalization", [inp, "g", "be", "mu", "var"], [out],
                            name=name, **attrs)


def _head(inp):
    return [helper.make_node("Flatten", [inp], ["f"], name="flat"),
            helper.make_node("Gemm", ["f", "FW"], ["y"], name="fc", transB=1)]


INITS = {"CW": CW, "CB": CB, "FW": FW, **BN}


def _cnn(*mid, inits=None, **kwargs):
    """conv (c) -> mid (c ... p) -> flatten -> gemm."""
    return _model([_conv(), *mid, *_head("p")], {**INITS, **(inits or {})}, **kwargs)


ACCEPTED = {
    "conv, relu, pool": lambda: _cnn(helper.make_node("Relu", ["c"], ["r"]), _pool("r", "p")),
    "pool before relu (they commute)": lambda: _cnn(_pool("c", "q"),
                                                    helper.make_node("Relu", ["q"], ["p"])),
    "batch norm, dropout and identity": lambda: _cnn(
        helper.make_node("Dropout", ["c"], ["d"]), _bn("d", "b"),
        helper.make_node("Identity", ["b"], ["i"]), helper.make_node("Relu", ["i"], ["r"]),
        _pool("r", "p")),
    "auto_pad VALID, no bias, strided": lambda: _model(
        [_conv(inputs=("CW",), auto_pad="VALID", strides=[2, 1], pads=None),
         helper.make_node("Flatten", ["c"], ["f"]),
         helper.make_node("MatMul", ["f", "FW2"], ["y"])],
        {"CW": CW, "FW2": RNG.normal(size=(3 * 2 * 4, 4)).astype(np.float32)}),
    "a pool on the input first": lambda: _model(
        [_pool("x", "q"), helper.make_node("Flatten", ["q"], ["f"]),
         helper.make_node("MatMul", ["f", "FW3"], ["y"])],
        {"FW3": RNG.normal(size=(18, 4)).astype(np.float32)}),
    "batch norm after MatMul + Add": lambda: _model(
        [helper.make_node("Flatten", ["x"], ["f"]),
         helper.make_node("MatMul", ["f", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["a"]),
         _bn("a", "y")],
        {"W": RNG.normal(size=(72, 3)).astype(np.float32), "b": CB, **BN}),
    "batch norm statistics through Identity (equal initializers merged)": lambda: _cnn(
        helper.make_node("Identity", ["g"], ["g2"]),
        helper.make_node("BatchNormalization", ["c", "g2", "be", "mu", "var"], ["b"]),
        _pool("b", "p")),
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_accepted_graphs_compute_what_onnx_computes(case):
    model = ACCEPTED[case]()
    net = read_onnx_network(model)
    assert np.allclose(net.forward(X6), ReferenceEvaluator(model).run(None, {"x": X6})[0],
                       rtol=1e-4, atol=1e-4)


def test_accepted_geometry():
    net = read_onnx_network(ACCEPTED["auto_pad VALID, no bias, strided"]())
    conv = net.layers[0]
    assert (conv.stride, conv.padding, conv.kernel) == ((2, 1), (0, 0), (3, 3))
    assert not conv.bias.any() and not conv.relu
    net = read_onnx_network(ACCEPTED["pool before relu (they commute)"]())
    assert [_describe(x)[0] for x in net.layers] == ["Conv2d", "MaxPool2d", "Flatten", "Dense"]
    assert net.layers[0].relu
    net = read_onnx_network(ACCEPTED["a pool on the input first"]())
    assert net.input_shape == (2, 6, 6) and isinstance(net.layers[0], MaxPool)
    net = read_onnx_network(ACCEPTED["batch norm after MatMul + Add"]())
    assert net.is_mlp and net.input_shape == (72,) and net.model_input_shape == (2, 6, 6)


def _conv1d_bn_model(dtype):
    """x (N, 2, 11) -> Conv1d k3 s2 p1 -> BatchNorm -> Relu -> Flatten -> Gemm -> BatchNorm."""
    np_type = helper.tensor_dtype_to_np_dtype(dtype)
    rng = np.random.default_rng(8)
    inits = {"W": rng.normal(size=(3, 2, 3)), "B": rng.normal(size=3),
             "FW": rng.normal(size=(4, 18)), "FB": rng.normal(size=4),
             **{k: v.astype(np.float64) for k, v in BN.items()},
             "g4": 1 + rng.random(4), "be4": rng.normal(size=4), "mu4": rng.normal(size=4),
             "var4": 0.1 + rng.random(4)}
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[3], strides=[2],
                         pads=[1, 1]),
        _bn("c", "b", epsilon=1e-3),
        helper.make_node("Relu", ["b"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "FW", "FB"], ["h"], transB=1),
        helper.make_node("BatchNormalization", ["h", "g4", "be4", "mu4", "var4"], ["y"],
                         name="bn2"),
    ]
    return _model(nodes, {k: np.asarray(v, np_type) for k, v in inits.items()},
                  in_shape=("N", 2, 11), dtype=dtype), inits


def test_batch_norm_is_folded_exactly():
    # In float64 the folded network and the graph with its BatchNormalization nodes (the ONNX
    # reference runtime, and a plain transcription of the formulas) agree to 1e-9.
    model, p = _conv1d_bn_model(TensorProto.DOUBLE)
    x = np.random.default_rng(9).normal(size=(6, 2, 11))
    net = read_onnx_network(model)
    assert [_describe(x)[0] for x in net.layers] == ["Conv1d", "Flatten", "Dense"]
    assert len([n for n in net.notes if n.startswith("folded")]) == 2
    got = net.forward(x)
    onnx_out = ReferenceEvaluator(model).run(None, {"x": x})[0]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1)))
    conv = np.stack([np.einsum("nck,ock->no", xp[:, :, 2 * q:2 * q + 3], p["W"])
                     for q in range(6)], axis=2) + p["B"][:, None]
    bn = ((conv - p["mu"][:, None]) / np.sqrt(p["var"][:, None] + 1e-3) * p["g"][:, None]
          + p["be"][:, None])
    h = np.maximum(bn, 0).reshape(len(x), -1) @ p["FW"].T + p["FB"]
    want = (h - p["mu4"]) / np.sqrt(p["var4"] + 1e-5) * p["g4"] + p["be4"]
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-9 * scale
    assert np.abs(got - onnx_out).max() <= 1e-9 * scale
    # A wrong fold (epsilon ignored) is far outside that.
    conv_layer = net.layers[0]
    assert not np.allclose(conv_layer.weights, p["W"] * p["g"][:, None, None]
                           / np.sqrt(p["var"][:, None, None]), rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Refusals, each naming the node
# --------------------------------------------------------------------------------------------


def _bad_var():
    return _cnn(_bn("c", "b", epsilon=1e-5), _pool("b", "p"),
                inits={"var": np.array([0.5, -0.5, 1.0], np.float32)})


def _dynamic_stats():
    return _model([_conv(), helper.make_node("RandomNormal", [], ["rmu"], shape=[3], name="rand"),
                   helper.make_node("BatchNormalization", ["c", "g", "be", "rmu", "var"], ["b"],
                                    name="bn"),
                   _pool("b", "p"), *_head("p")], INITS)


def _training_outputs():
    node = helper.make_node("BatchNormalization", ["c", "g", "be", "mu", "var"],
                            ["b", "m_out", "v_out"], name="bn", training_mode=1)
    return _cnn(node, _pool("b", "p"))


def _indices_used():
    model = _cnn(helper.make_node("MaxPool", ["c"], ["p", "idx"], name="pool",
                                  kernel_shape=[2, 2], strides=[2, 2]))
    model.graph.output.append(helper.make_tensor_value_info("idx", TensorProto.INT64, None))
    return model


REFUSED = {
    "grouped conv": (
        lambda: _model([_conv(group=2, inputs=("G",))], {"G": np.ones((4, 1, 3, 3), np.float32)}),
        "node 'conv' (Conv): group 2 is not supported (a grouped or depthwise convolution)"),
    "dilated conv": (
        lambda: _model([_conv(dilations=[2, 2], pads=[2, 2, 2, 2]), *_head("c")], INITS),
        "node 'conv' (Conv): dilations [2, 2] are not supported: trine needs dilation 1"),
    "asymmetric pads": (lambda: _model([_conv(pads=[1, 1, 0, 0]), *_head("c")], INITS),
                        "node 'conv' (Conv): pads [1, 1, 0, 0] are not supported: trine pads "
                        "both ends of an axis alike (begin [1, 1], end [0, 0])"),
    "auto_pad SAME": (lambda: _model([_conv(auto_pad="SAME_UPPER", pads=None), *_head("c")],
                                     INITS),
                      "node 'conv' (Conv): auto_pad SAME_UPPER is not supported"),
    "kernel_shape not the weight's": (
        lambda: _model([_conv(kernel_shape=[2, 2]), *_head("c")], INITS),
        "node 'conv' (Conv): kernel_shape [2, 2] does not match its weight's kernel [3, 3]"),
    "3-D convolution": (
        lambda: _model([_conv(inputs=("W5",), kernel_shape=[1, 1, 1], pads=[0] * 6)],
                       {"W5": np.ones((1, 2, 1, 1, 1), np.float32)}, in_shape=("N", 2, 3, 3, 3)),
        "node 'conv' (Conv): weight 'W5' has shape (1, 2, 1, 1, 1); trine takes 1-D "
        "convolutions"),
    "conv channels do not chain": (
        lambda: _model([_conv()], INITS, in_shape=("N", 3, 6, 6)),
        "node 'conv' (Conv): its weight takes 2 input channels but it gets 3"),
    "conv kernel larger than its input": (
        lambda: _model([_conv(pads=[0, 0, 0, 0])], INITS, in_shape=("N", 2, 2, 6)),
        "node 'conv' (Conv): its kernel 3 is larger than its padded input 2"),
    "conv of unknown size": (
        lambda: _model([_conv()], INITS, in_shape=("N", 2, "H", "W")),
        "node 'conv' (Conv): its input has shape (N, 2, H, W); a 2-D Conv needs (batch, C, H, "
        "W) with every size but the batch fixed"),
    "conv on an input without a shape": (
        lambda: _model([_conv()], INITS, in_shape=None),
        "node 'conv' (Conv): the shape of its input is not known"),
    "conv after a dense layer": (
        lambda: _model([helper.make_node("Flatten", ["x"], ["f"]),
                        helper.make_node("MatMul", ["f", "W"], ["h"]), _conv("h", "y")],
                       {**INITS, "W": np.ones((72, 4), np.float32)}),
        "node 'conv' (Conv): its input has shape (N, 4); a 2-D Conv needs (batch, C, H, W)"),
    "conv weight not constant": (
        lambda: _model([helper.make_node("RandomNormal", [], ["RW"], shape=[3, 2, 3, 3],
                                         name="rand"), _conv(inputs=("RW",))]),
        "node 'conv' (Conv): weight 'RW' is not a constant: it is computed by node 'rand' "
        "(RandomNormal)"),
    "gemm on feature maps": (
        lambda: _model([_conv(), helper.make_node("Gemm", ["c", "FW"], ["y"], name="fc")], INITS),
        "node 'fc' (Gemm): its input has shape (N, 3, 6, 6); a layer needs (batch, features)"),
    "add after a conv": (lambda: _cnn(helper.make_node("Add", ["c", "CB"], ["a"], name="add"),
                                      _pool("a", "p")),
                         "node 'add' (Add): Add after a Conv is not supported"),
    "average pooling": (
        lambda: _cnn(helper.make_node("AveragePool", ["c"], ["p"], name="avg", kernel_shape=[2, 2],
                                      strides=[2, 2])),
        "node 'avg' (AveragePool): AveragePool is not supported: the device pools by maximum "
        "only, MaxPool with kernel = stride"),
    "global average pooling": (
        lambda: _model([_conv(), helper.make_node("GlobalAveragePool", ["c"], ["y"], name="gap")],
                       INITS),
        "node 'gap' (GlobalAveragePool): GlobalAveragePool is not supported"),
    "overlapping pool": (lambda: _cnn(_pool("c", "p", kernel_shape=[3, 3], strides=[2, 2])),
                         "node 'pool' (MaxPool): strides [2, 2] differ from kernel_shape [3, 3]: "
                         "trine pools non-overlapping windows (stride = kernel)"),
    "pool with the default stride 1": (
        lambda: _cnn(helper.make_node("MaxPool", ["c"], ["p"], name="pool", kernel_shape=[2, 2])),
        "node 'pool' (MaxPool): strides [1, 1] differ from kernel_shape [2, 2]"),
    "padded pool": (lambda: _cnn(_pool("c", "p", pads=[1, 1, 1, 1])),
                    "node 'pool' (MaxPool): pads [1, 1, 1, 1] are not supported: trine pools "
                    "without padding"),
    "dilated pool": (lambda: _cnn(_pool("c", "p", dilations=[2, 2])),
                     "node 'pool' (MaxPool): dilations [2, 2] are not supported"),
    "ceil mode": (lambda: _cnn(_pool("c", "p", ceil_mode=1)),
                  "node 'pool' (MaxPool): ceil_mode 1 is not supported"),
    "windows that do not tile": (
        lambda: _cnn(_pool("c", "p", kernel_shape=[4, 4], strides=[4, 4])),
        "node 'pool' (MaxPool): its window 4 does not divide its input size 6 (ONNX would drop "
        "the rest): trine's windows must tile the input"),
    "pool indices used": (_indices_used, "node 'pool' (MaxPool): its output 'idx' (the indices "
                          "of the maxima) is used"),
    "batch norm after relu": (
        lambda: _cnn(helper.make_node("Relu", ["c"], ["r"]), _bn("r", "b"), _pool("b", "p")),
        "node 'bn' (BatchNormalization): BatchNormalization after a Relu cannot be folded: "
        "trine folds it into the Conv, Gemm or MatMul right before it"),
    "batch norm after a pool": (
        lambda: _cnn(_pool("c", "q"), _bn("q", "p")),
        "node 'bn' (BatchNormalization): BatchNormalization after a MaxPool cannot be folded"),
    "batch norm on the input": (
        lambda: _model([_bn("x", "b"), _conv("b", "c"), _pool("c", "p"), *_head("p")],
                       {**INITS, **{k: np.resize(v, 2) for k, v in BN.items()}}),
        "node 'bn' (BatchNormalization): BatchNormalization after the network input cannot be "
        "folded"),
    "batch norm after a batch norm": (
        lambda: _cnn(_bn("c", "b"), _bn("b", "b2", name="bn2"), _pool("b2", "p")),
        "node 'bn2' (BatchNormalization): BatchNormalization after a BatchNormalization cannot "
        "be folded"),
    "batch norm with var + epsilon <= 0": (
        _bad_var, "node 'bn' (BatchNormalization): input_var + epsilon must be > 0 in every "
        "channel, not -0.49999 in channel 1"),
    "batch norm with statistics computed at run time": (
        _dynamic_stats, "node 'bn' (BatchNormalization): input_mean 'rmu' is not a constant: it is "
        "computed by node 'rand' (RandomNormal)"),
    "batch norm in training mode": (
        _training_outputs, "node 'bn' (BatchNormalization): training_mode 1 normalises with the "
        "batch's statistics"),
    "batch norm of the wrong width": (
        lambda: _cnn(_bn("c", "b"), _pool("b", "p"), inits={"mu": np.zeros(4, np.float32)}),
        "node 'bn' (BatchNormalization): 'mu' has shape (4,); its input has 3 channels"),
    "softmax over feature maps": (
        lambda: _model([_conv(), helper.make_node("Softmax", ["c"], ["y"], name="sm", axis=1)],
                       INITS),
        "node 'sm' (Softmax): its input has shape (N, 3, 6, 6); a classifier output takes "
        "(batch, classes)"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refusals_name_the_node_and_the_problem(case):
    build, message = REFUSED[case]
    model = build()
    with pytest.raises(OnnxImportError, match=re.escape(message)):
        read_onnx_network(model)


def test_a_zero_variance_is_named_with_its_channel():
    model = _cnn(_bn("c", "b", epsilon=0.0), _pool("b", "p"),
                 inits={"var": np.array([1.0, 1.0, 0.0], np.float32)})
    with pytest.raises(OnnxImportError, match=r"must be > 0 in every channel, not 0 in channel 2"):
        read_onnx_network(model)


# --------------------------------------------------------------------------------------------
# Inputs: flat or shaped, and what is refused
# --------------------------------------------------------------------------------------------


def test_inputs_flat_or_shaped():
    net = read_onnx_network(_fixture("cnn1d_dynamo"))
    x = _calibration("cnn1d", 20)
    assert np.array_equal(net.check_inputs(x.reshape(20, 40)), x)
    with pytest.raises(OnnxImportError, match=re.escape(
            "x must have shape (N, 40) or (N, 1, 40) with N >= 1, not (20, 1, 39)")):
        net.forward(x[:, :, :39])
    with pytest.raises(OnnxImportError, match="x has 39 features per sample, the model "
                       "expects 40"):
        net.forward(x.reshape(20, 40)[:, :39])
    with pytest.raises(OnnxImportError, match=re.escape(
            "calibration_x must be a float array of raw inputs (N, 40) or (N, 1, 40), not "
            "dtype int64")):
        net.to_program(np.ones((3, 1, 40), np.int64))
    bad = x.copy()
    bad[3, 0, 7] = np.inf
    with pytest.raises(OnnxImportError, match=re.escape("must be finite: inf at (3, 0, 7)")):
        net.to_program(bad)
    with pytest.raises(OnnxImportError, match=re.escape("float (N, 1, 40)")):
        net.to_program(None)


def test_an_mlp_on_images_takes_its_images():
    net = read_onnx_network(ACCEPTED["batch norm after MatMul + Add"]())
    calib = np.random.default_rng(4).normal(size=(50, 2, 6, 6))
    program = net.to_program(calib)
    assert program.input_shape == (72,) and program.to_bytes()[8] == 1
    assert program == net.to_program(calib.reshape(50, 72))
    assert math.isclose(program.input_scale, np.abs(calib).max() / 127)
