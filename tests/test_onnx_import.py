"""trine.host.onnx_import: ONNX MLPs from real exporters, hand-built graphs, every rejection
(the convolutional networks are in tests/test_onnx_cnn.py)."""

import re
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from trine.host.data import load_digits_split  # noqa: E402
from trine.host.onnx_import import (  # noqa: E402
    OnnxImportError,
    OnnxMLP,
    check_inputs,
    import_onnx,
    read_onnx_mlp,
)
from trine.host.program import Program  # noqa: E402
from trine.host.results import accuracy, program_accuracy  # noqa: E402
from trine.host.ternarize import (  # noqa: E402
    TernarizeError,
    run_ternarized_float,
    ternarize_layers,
)

RNG = np.random.default_rng(11)
W1 = RNG.normal(size=(4, 3)).astype(np.float32)  # MatMul layout (K, M)
B1 = RNG.normal(size=3).astype(np.float32)
W2 = RNG.normal(size=(3, 2)).astype(np.float32)
B2 = RNG.normal(size=2).astype(np.float32)
X4 = RNG.normal(size=(7, 4))


def _model(nodes, inits=None, in_shape=("N", 4), outputs=("y",), inputs=None, opset=17,
           ml=False):
    """A model from nodes and {name: array} initializers; float32 unless the array says."""
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))]
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    tensors = [numpy_helper.from_array(np.asarray(v), name) for name, v in (inits or {}).items()]
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("ai.onnx.ml", 1)] if ml
                                                 else [])
    graph = helper.make_graph(nodes, "g", inputs, outs, tensors)
    return helper.make_model(graph, opset_imports=opsets)


def _mlp_nodes(out="y"):
    return [
        helper.make_node("MatMul", ["x", "W1"], ["h0"], name="mm1"),
        helper.make_node("Add", ["h0", "B1"], ["h1"], name="add1"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu1"),
        helper.make_node("MatMul", ["h2", "W2"], ["h3"], name="mm2"),
        helper.make_node("Add", ["B2", "h3"], [out], name="add2"),  # bias first: also valid
    ]


MLP_INITS = {"W1": W1, "B1": B1, "W2": W2, "B2": B2}


def _numpy_forward(x):
    h = np.maximum(x @ W1.astype(np.float64) + B1, 0)
    return h @ W2.astype(np.float64) + B2


# --------------------------------------------------------------------------------------------
# Hand-built graphs that are accepted
# --------------------------------------------------------------------------------------------


def test_matmul_add_relu_chain():
    mlp = read_onnx_mlp(_model(_mlp_nodes(), MLP_INITS))
    assert isinstance(mlp, OnnxMLP)
    assert [(w.shape, r) for w, _, r in mlp.layers] == [((3, 4), True), ((2, 3), False)]
    assert np.array_equal(mlp.layers[0][0], W1.T.astype(np.float64))
    assert np.array_equal(mlp.layers[1][1], B2.astype(np.float64))
    assert (mlp.input_name, mlp.input_width, mlp.output_width) == ("x", 4, 2)
    assert mlp.labels is None and mlp.stripped == () and mlp.notes == ()
    assert np.allclose(mlp.forward(X4), _numpy_forward(X4), rtol=1e-12)


def test_bias_adds_sum_and_a_matmul_without_add_has_zero_bias():
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["a"], name="mm1"),
        helper.make_node("Add", ["a", "B1"], ["b"]),
        helper.make_node("Add", ["b", "S"], ["c"]),  # a scalar broadcasts to every output
        helper.make_node("MatMul", ["c", "W2"], ["y"], name="mm2"),
    ]
    mlp = read_onnx_mlp(_model(nodes, {"W1": W1, "B1": B1.reshape(1, 3), "W2": W2,
                                       "S": np.float32(0.5)}))
    assert np.allclose(mlp.layers[0][1], B1 + 0.5)
    assert np.array_equal(mlp.layers[1][1], np.zeros(2))
    assert [r for _, _, r in mlp.layers] == [False, False]


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("alpha, beta", [(1.0, 1.0), (0.5, 2.0)])
@pytest.mark.parametrize("c_shape", [(3,), (1, 3), (), None])
def test_gemm_variants(trans_b, alpha, beta, c_shape):
    b_mat = W1.T if trans_b else W1
    inits = {"B": b_mat}
    ins = ["x", "B"]
    c = np.zeros(3)
    if c_shape is not None:
        c = (B1 if c_shape != () else np.float32(0.25)).reshape(c_shape)
        inits["C"] = c
        ins.append("C")
    node = helper.make_node("Gemm", ins, ["y"], name="g", transB=trans_b, alpha=alpha, beta=beta)
    mlp = read_onnx_mlp(_model([node], inits))
    expected = alpha * X4 @ W1.astype(np.float64) + beta * np.broadcast_to(c, (1, 3))
    assert np.allclose(mlp.forward(X4), expected, rtol=1e-12, atol=1e-12)


def _shape_pattern_nodes():
    """What torch's legacy exporter writes for x.view(x.size(0), -1) with a dynamic batch."""
    return [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Constant", [], ["i0"], value=numpy_helper.from_array(np.int64(0))),
        helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
        helper.make_node("Constant", [], ["ax"], value=numpy_helper.from_array(
            np.array([0], np.int64))),
        helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
        helper.make_node("Constant", [], ["m1"], value=numpy_helper.from_array(
            np.array([-1], np.int64))),
        helper.make_node("Concat", ["n1", "m1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["f"], name="reshape"),
    ]


@pytest.mark.parametrize("flatten", ["Flatten", "[-1, 4]", "[0, -1]", "[N, -1] from Shape",
                                     "Slice of Shape"])
def test_flatten_and_reshape_of_an_image_input(flatten):
    inits = {"W1": W1}
    if flatten == "Flatten":
        nodes = [helper.make_node("Flatten", ["x"], ["f"], axis=1)]
    elif flatten == "[N, -1] from Shape":
        nodes = _shape_pattern_nodes()
    elif flatten == "Slice of Shape":  # x.view(x.shape[0:1] + (-1,)), sliced instead of gathered
        nodes = [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("Slice", ["s", "zero", "one"], ["n1"]),
            helper.make_node("Concat", ["n1", "m1"], ["target"], axis=0),
            helper.make_node("Reshape", ["x", "target"], ["f"]),
        ]
        inits.update(zero=np.array([0], np.int64), one=np.array([1], np.int64),
                     m1=np.array([-1], np.int64))
    else:
        inits["t"] = np.array(eval(flatten), np.int64)
        nodes = [helper.make_node("Reshape", ["x", "t"], ["f"])]
    nodes.append(helper.make_node("MatMul", ["f", "W1"], ["y"]))
    mlp = read_onnx_mlp(_model(nodes, inits, in_shape=("N", 1, 2, 2)))
    assert mlp.input_width == 4
    assert np.allclose(mlp.forward(X4), X4 @ W1.astype(np.float64))


def test_weights_from_constant_nodes_and_folded_transposes():
    nodes = [
        helper.make_node("Constant", [], ["Wt"], value=numpy_helper.from_array(W1.T.copy())),
        helper.make_node("Transpose", ["Wt"], ["W"], perm=[1, 0]),
        helper.make_node("Constant", [], ["b"], value_floats=[float(v) for v in B1]),
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["y"]),
    ]
    mlp = read_onnx_mlp(_model(nodes))
    assert np.array_equal(mlp.layers[0][0], W1.T.astype(np.float64))
    assert np.allclose(mlp.layers[0][1], B1)


def test_identity_dropout_and_float_casts_pass_through():
    nodes = [
        helper.make_node("Cast", ["x"], ["x64"], to=TensorProto.DOUBLE),
        helper.make_node("Identity", ["x64"], ["xi"]),
        helper.make_node("MatMul", ["xi", "W1"], ["h"]),
        helper.make_node("Dropout", ["h"], ["d"]),
        helper.make_node("Cast", ["d"], ["y"], to=TensorProto.FLOAT),
    ]
    mlp = read_onnx_mlp(_model(nodes, {"W1": W1.astype(np.float64)}))
    assert np.allclose(mlp.forward(X4), X4 @ W1.astype(np.float64))


def test_initializers_listed_as_graph_inputs_are_constants():
    # IR < 4 exporters (and keep_initializers_as_inputs=True) list every weight as an input.
    model = _model(_mlp_nodes(), MLP_INITS)
    for name, v in MLP_INITS.items():
        model.graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, v.shape))
    assert len(read_onnx_mlp(model).layers) == 2


def test_weights_in_an_external_data_file(tmp_path):
    model = _model(_mlp_nodes(), MLP_INITS)
    onnx.save_model(model, tmp_path / "m.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=True, location="m.weights", size_threshold=0)
    assert (tmp_path / "m.weights").stat().st_size > 0
    assert np.allclose(read_onnx_mlp(tmp_path / "m.onnx").forward(X4), _numpy_forward(X4))
    (tmp_path / "m.weights").unlink()
    with pytest.raises(OnnxImportError, match=r"m\.onnx: tensor '\w+': its external data "
                       r"file 'm\.weights' is missing"):
        read_onnx_mlp(tmp_path / "m.onnx")


@pytest.mark.parametrize("op, attrs", [("Softmax", {}), ("LogSoftmax", {"axis": 1}),
                                       ("ArgMax", {"axis": -1})])
def test_a_classifier_output_is_stripped(op, attrs):
    nodes = _mlp_nodes("logits") + [helper.make_node(op, ["logits"], ["y"], name="out", **attrs)]
    mlp = read_onnx_mlp(_model(nodes, MLP_INITS))
    assert mlp.stripped == (f"node 'out' ({op})",)
    assert "stripped the classifier output" in mlp.notes[0]
    assert np.allclose(mlp.forward(X4), _numpy_forward(X4))


@pytest.mark.parametrize("p_first", [False, True])
def test_binary_sigmoid_output_becomes_two_logits_in_the_concat_order(p_first):
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["p"], name="sig"),
        helper.make_node("Sub", ["one", "p"], ["q"]),
        helper.make_node("Concat", ["p", "q"] if p_first else ["q", "p"], ["y"], axis=1),
    ]
    w = W1[:, :1]
    mlp = read_onnx_mlp(_model(nodes, {"W": w, "one": np.float32(1)}))
    z = X4 @ w.astype(np.float64)
    probs = np.hstack([z > 0, z <= 0] if p_first else [z <= 0, z > 0])  # column of sigmoid > .5
    logits = mlp.forward(X4)
    assert logits.shape == (7, 2)
    assert np.allclose(logits, np.hstack([z / 2, -z / 2] if p_first else [-z / 2, z / 2]))
    assert np.array_equal(np.argmax(logits, 1), np.argmax(probs, 1))
    assert "binary classifier" in mlp.notes[-1]


# --------------------------------------------------------------------------------------------
# Hand-built graphs that are rejected, each naming the node and the problem
# --------------------------------------------------------------------------------------------


def _branch():
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["a"], name="left"),
             helper.make_node("MatMul", ["x", "W1"], ["b"], name="right"),
             helper.make_node("Add", ["a", "b"], ["y"])]
    return _model(nodes, {"W1": W1})


def _residual():
    nodes = [helper.make_node("MatMul", ["x", "Wsq"], ["h"], name="mm"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Add", ["h", "r"], ["y"], name="skip")]
    return _model(nodes, {"Wsq": np.eye(4, dtype=np.float32)})


def _chain(*mid, inits=None, first="MatMul"):
    """x -> first layer (W1, B1) -> mid nodes (h -> y) ."""
    layer = [helper.make_node("MatMul", ["x", "W1"], ["h0"], name="mm1"),
             helper.make_node("Add", ["h0", "B1"], ["h"], name="add1")]
    return _model(layer + list(mid), {"W1": W1, "B1": B1, **(inits or {})})


def _nan_weight():
    w = W1.copy()
    w[1, 2] = np.nan
    return _model(_mlp_nodes(), {**MLP_INITS, "W1": w})


def _inf_bias():
    return _model(_mlp_nodes(), {**MLP_INITS, "B2": np.array([0, np.inf], np.float32)})


def _two_inputs():
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4]) for n in "xz"]
    nodes = [helper.make_node("Add", ["x", "z"], ["s"]),
             helper.make_node("MatMul", ["s", "W1"], ["y"])]
    return _model(nodes, {"W1": W1}, inputs=inputs)


def _dynamic_weight():
    nodes = [helper.make_node("RandomNormal", [], ["W"], name="rand", shape=[4, 3]),
             helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    return _model(nodes)


def _off_chain_node():
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["y"]),
             helper.make_node("RandomNormal", [], ["extra"], name="rand", shape=[2])]
    return _model(nodes, {"W1": W1}, outputs=("y", "extra"))


def _zipmap_wrong_labels():
    nodes = _mlp_nodes("logits") + [
        helper.make_node("Softmax", ["logits"], ["p"], axis=1),
        helper.make_node("ZipMap", ["p"], ["y"], name="zip", domain="ai.onnx.ml",
                         classlabels_int64s=[0, 1, 2]),
    ]
    return _model(nodes, MLP_INITS, ml=True)


REJECTED = {
    "branch": (_branch, "tensor 'x' feeds 2 nodes (node 'left' (MatMul), node 'right' "
               "(MatMul)); trine imports a single chain of layers, not branches"),
    "residual": (_residual, "tensor 'h' feeds 2 nodes (node 'relu' (Relu), node 'skip' (Add))"),
    "average pooling": (
        lambda: _model([helper.make_node("AveragePool", ["x"], ["p"], name="ap",
                                         kernel_shape=[2, 2], strides=[2, 2]),
                        helper.make_node("Flatten", ["p"], ["f"]),
                        helper.make_node("MatMul", ["f", "W1"], ["y"])],
                       {"W1": W1}, in_shape=("N", 1, 4, 4)),
        "node 'ap' (AveragePool): AveragePool is not supported: the device pools by maximum "
        "only"),
    "sigmoid between layers": (
        lambda: _chain(helper.make_node("Sigmoid", ["h"], ["s"], name="sig"),
                       helper.make_node("MatMul", ["s", "W2"], ["y"], name="mm2"),
                       inits={"W2": W2}),
        "node 'sig' (Sigmoid): Sigmoid between layers is not supported (followed by node 'mm2' "
        "(MatMul)): the device's only activation is ReLU"),
    "a branch beside the classifier output": (
        lambda: _chain(helper.make_node("Softmax", ["h"], ["y"], name="sm"),
                       helper.make_node("Tanh", ["h"], ["z"], name="th")),
        "tensor 'h' feeds 2 nodes (node 'sm' (Softmax), node 'th' (Tanh)); besides a classifier "
        "output trine imports a single chain of layers, not branches"),
    "tanh": (lambda: _chain(helper.make_node("Tanh", ["h"], ["y"], name="th")),
             "node 'th' (Tanh): activation Tanh is not supported"),
    "transA": (lambda: _model([helper.make_node("Gemm", ["x", "W"], ["y"], name="g",
                                                transA=1)], {"W": W1}),
               "node 'g' (Gemm): transA=1 transposes the activations"),
    "gemm activations as B": (
        lambda: _model([helper.make_node("Gemm", ["W", "x"], ["y"], name="g")], {"W": W1}),
        "node 'g' (Gemm): the activations must be Gemm's first input A"),
    "shapes do not chain": (
        lambda: _chain(helper.make_node("MatMul", ["h", "W5"], ["y"], name="mm2"),
                       inits={"W5": np.ones((5, 2), np.float32)}),
        "node 'mm2' (MatMul): its weight has 5 inputs but it gets 3 features: the shapes do "
        "not chain"),
    "first layer does not fit the input": (
        lambda: _model([helper.make_node("MatMul", ["x", "W2"], ["y"], name="mm")], {"W2": W2}),
        "node 'mm' (MatMul): its weight has 3 inputs but it gets 4 features"),
    "nan weight": (_nan_weight, "node 'mm1' (MatMul): weight 'W1' is not finite: nan at (1, 2)"),
    "inf bias": (_inf_bias, "node 'add2' (Add): bias 'B2' is not finite: inf at (1,)"),
    "two inputs": (_two_inputs, "the graph has 2 inputs ('x', 'z'); trine imports models with "
                   "exactly one input"),
    "dynamic weight": (_dynamic_weight, "node 'mm' (MatMul): weight 'W' is not a constant: it is "
                       "computed by node 'rand' (RandomNormal)"),
    "3-D weight": (lambda: _model([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
                                  {"W": np.ones((4, 3, 1), np.float32)}),
                   "node 'mm' (MatMul): weight 'W' has shape (4, 3, 1); trine needs a 2-D weight"),
    "activations on the right": (
        lambda: _model([helper.make_node("MatMul", ["W", "x"], ["y"], name="mm")],
                       {"W": W1.T.copy()}),
        "node 'mm' (MatMul): the activations are its second input (it computes W @ x)"),
    "integer weight": (
        lambda: _model([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
                       {"W": np.ones((4, 3), np.int32)}),
        "node 'mm' (MatMul): weight 'W' has dtype int32, not floating point"),
    "reshape fixes the batch": (
        lambda: _model([helper.make_node("Reshape", ["x", "t"], ["f"], name="r"),
                        helper.make_node("MatMul", ["f", "W1"], ["y"])],
                       {"t": np.array([1, -1], np.int64), "W1": W1}, in_shape=("N", 1, 2, 2)),
        "node 'r' (Reshape): reshaping (N, 1, 2, 2) to [1, -1] fixes or changes the batch"),
    "reshape splits samples": (
        lambda: _model([helper.make_node("Reshape", ["x", "t"], ["f"], name="r"),
                        helper.make_node("MatMul", ["f", "W"], ["y"])],
                       {"t": np.array([-1, 2], np.int64), "W": W1[:2]}),
        "node 'r' (Reshape): reshaping (N, 4) to [-1, 2] changes the batch: each sample has 4 "
        "features, not 2"),
    "flatten axis 0": (
        lambda: _model([helper.make_node("Flatten", ["x"], ["f"], name="fl", axis=0),
                        helper.make_node("MatMul", ["f", "W1"], ["y"])], {"W1": W1}),
        "node 'fl' (Flatten): axis 0 on (N, 4) does not give (batch, features)"),
    "no flatten": (
        lambda: _model([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
                       {"W": np.ones((2, 3), np.float32)}, in_shape=("N", 1, 2, 2)),
        "node 'mm' (MatMul): its input has shape (N, 1, 2, 2); a layer needs (batch, features)"),
    "cast to int": (lambda: _chain(helper.make_node("Cast", ["h"], ["y"], name="c",
                                                    to=TensorProto.INT64)),
                    "node 'c' (Cast): Cast to type 7 would change the activations' values"),
    "relu on the input": (
        lambda: _model([helper.make_node("Relu", ["x"], ["r"], name="r0"),
                        helper.make_node("MatMul", ["r", "W1"], ["y"])], {"W1": W1}),
        "node 'r0' (Relu): Relu on the network input is not supported"),
    "add on the input": (
        lambda: _model([helper.make_node("Add", ["x", "m"], ["a"], name="pre"),
                        helper.make_node("MatMul", ["a", "W1"], ["y"])],
                       {"m": np.ones(4, np.float32), "W1": W1}),
        "node 'pre' (Add): Add after the network input (preprocessing) is not supported"),
    "add after relu": (
        lambda: _chain(helper.make_node("Relu", ["h"], ["r"]),
                       helper.make_node("Add", ["r", "B1"], ["y"], name="late")),
        "node 'late' (Add): Add after a Relu is not supported"),
    "bias of the wrong shape": (
        lambda: _chain(helper.make_node("Add", ["h", "bb"], ["y"], name="a2"),
                       inits={"bb": np.ones((2, 3), np.float32)}),
        "node 'a2' (Add): bias 'bb' has shape (2, 3), which does not broadcast to one value per "
        "output (3,)"),
    "gemm C of the wrong shape": (
        lambda: _model([helper.make_node("Gemm", ["x", "W", "C"], ["y"], name="g")],
                       {"W": W1, "C": np.ones((5, 3), np.float32)}),
        "node 'g' (Gemm): bias C 'C' has shape (5, 3)"),
    "softmax over the batch": (
        lambda: _chain(helper.make_node("Softmax", ["h"], ["y"], name="sm", axis=0)),
        "node 'sm' (Softmax): axis 0 is not the class axis (1 or -1)"),
    "multi-label sigmoid": (
        lambda: _chain(helper.make_node("Sigmoid", ["h"], ["y"], name="sig")),
        "node 'sig' (Sigmoid): Sigmoid on 3 outputs gives independent (multi-label) "
        "probabilities"),
    "something after the softmax": (
        lambda: _chain(helper.make_node("Softmax", ["h"], ["p"]),
                       helper.make_node("Mul", ["p", "B1"], ["y"], name="scale")),
        "node 'scale' (Mul): Mul after the classifier output"),
    "softmax before any layer": (
        lambda: _model([helper.make_node("Softmax", ["x"], ["y"], name="sm")]),
        "node 'sm' (Softmax): Softmax comes before any linear layer"),
    "no layer": (lambda: _model([helper.make_node("Identity", ["x"], ["y"])]),
                 "no linear layer (Conv, MatMul or Gemm) between input and output"),
    "node off the chain": (_off_chain_node, "node 'rand' (RandomNormal): it is not on the chain "
                           "from input 'x' to the output"),
    "unknown op": (lambda: _chain(helper.make_node("Mul", ["h", "B1"], ["y"], name="m")),
                   "node 'm' (Mul): Mul is not supported: trine imports chains of Conv"),
    "zipmap labels do not match": (
        _zipmap_wrong_labels, "node 'zip' (ai.onnx.ml.ZipMap): it names 3 classes but the "
        "network has 2 outputs"),
    "dropout in training mode": (
        lambda: _chain(helper.make_node("Dropout", ["h", "", "tm"], ["y"], name="do"),
                       inits={"tm": np.array(True)}),
        "node 'do' (Dropout): training_mode is not a constant false"),
}


@pytest.mark.parametrize("case", list(REJECTED))
def test_rejections_name_the_node_and_the_problem(case):
    build, message = REJECTED[case]
    with pytest.raises(OnnxImportError, match=re.escape(message)) as e:
        read_onnx_mlp(build())
    assert isinstance(e.value, ValueError)


# --------------------------------------------------------------------------------------------
# Files that are not ONNX models
# --------------------------------------------------------------------------------------------


def test_files_that_are_not_onnx(tmp_path):
    cases = {
        "random.onnx": np.random.default_rng(3).integers(0, 256, 4000, dtype=np.uint8).tobytes(),
        "empty.onnx": b"",
        "text.onnx": b"hello, this is not a model\n",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(OnnxImportError, match="not an ONNX model|is empty"):
            read_onnx_mlp(tmp_path / name)
    Program([_any_layer()], input_scale=0.5).save(tmp_path / "p.trine")
    with pytest.raises(OnnxImportError, match=r"p\.trine is a trine program \(\.trine\), not an "
                       "ONNX model"):
        read_onnx_mlp(tmp_path / "p.trine")
    with pytest.raises(FileNotFoundError):
        read_onnx_mlp(tmp_path / "missing.onnx")
    with pytest.raises(OnnxImportError, match="expected a path, bytes or an onnx.ModelProto"):
        read_onnx_mlp(42)


def _any_layer():
    from trine.contract.reference import Layer

    return Layer(np.ones((2, 4), np.int8), np.zeros(2, np.int64), 0, False)


def test_every_truncation_of_a_real_model_is_rejected(sklearn_model):
    data = sklearn_model.SerializeToString()
    cuts = sorted(set(range(0, len(data), 53)) | set(range(len(data) - 64, len(data))))
    for cut in cuts:
        with pytest.raises(OnnxImportError, match="not an ONNX model|not a complete|is empty"):
            read_onnx_mlp(data[:cut])
    assert read_onnx_mlp(data).input_width == 64  # the whole file is fine


# --------------------------------------------------------------------------------------------
# scikit-learn through skl2onnx
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return load_digits_split()


def _fit(estimator, x, y):
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(x, y)


@pytest.fixture(scope="module")
def sklearn_clf(digits):
    from sklearn.neural_network import MLPClassifier

    x_train, y_train, _, _ = digits
    return _fit(MLPClassifier(hidden_layer_sizes=(32,), max_iter=80, random_state=0),
                x_train, y_train)


@pytest.fixture(scope="module")
def to_onnx():
    return pytest.importorskip("skl2onnx").to_onnx


@pytest.fixture(scope="module")
def sklearn_model(sklearn_clf, digits, to_onnx):
    return to_onnx(sklearn_clf, digits[0][:1])


def test_sklearn_layers_equal_the_estimator(sklearn_clf, sklearn_model, digits):
    _, _, x_test, _ = digits
    mlp = read_onnx_mlp(sklearn_model)
    assert len(mlp.layers) == len(sklearn_clf.coefs_) == 2
    for (w, b, relu), coef, intercept, last in zip(
        mlp.layers, sklearn_clf.coefs_, sklearn_clf.intercepts_, (False, True), strict=True
    ):
        # skl2onnx stores float32 for a float32 input.
        assert np.array_equal(w, coef.T.astype(np.float32).astype(np.float64))
        assert np.array_equal(b, intercept.astype(np.float32).astype(np.float64))
        assert relu is not last
    assert mlp.labels == tuple(str(c) for c in sklearn_clf.classes_)
    assert any("ZipMap" in s for s in mlp.stripped) and any("Softmax" in s for s in mlp.stripped)
    logits = x_test.astype(np.float64)
    for coef, intercept, last in zip(sklearn_clf.coefs_, sklearn_clf.intercepts_, (0, 1),
                                     strict=True):
        logits = logits @ coef + intercept
        logits = logits if last else np.maximum(logits, 0)
    assert np.allclose(mlp.forward(x_test), logits, rtol=1e-5, atol=1e-4)
    assert np.array_equal(np.argmax(mlp.forward(x_test), 1), sklearn_clf.predict(x_test))


def test_sklearn_import_gives_a_working_program(sklearn_clf, sklearn_model, digits, tmp_path):
    x_train, _, x_test, y_test = digits
    mlp = read_onnx_mlp(sklearn_model)
    float_acc = accuracy(mlp.forward(x_test), y_test)
    assert float_acc == sklearn_clf.score(x_test, y_test) > 0.85
    np.save(tmp_path / "calib.npy", x_train)
    program = import_onnx(sklearn_model, tmp_path / "calib.npy")
    assert program == import_onnx(sklearn_model, x_train)
    assert program.labels == tuple("0123456789") and program.input_scale == 16 / 127
    assert [layer.relu for layer in program.layers] == [True, False]
    int_acc = program_accuracy(program, x_test, y_test)
    twn = import_onnx(sklearn_model, x_train, method="twn")
    twn_acc = program_accuracy(twn, x_test, y_test)
    tern_acc = accuracy(run_ternarized_float(ternarize_layers(list(mlp.layers)), x_test), y_test)
    # Post-training ternarisation loses accuracy (no retraining): TWN's integer program tracks
    # the ternarised float model it folds; gptq, which fits each layer's output, loses less.
    assert twn_acc > 0.4
    assert abs(twn_acc - tern_acc) < 0.05
    assert int_acc > twn_acc + 0.05 and int_acc > float_acc - 0.1


def test_sklearn_binary_string_labels(digits, to_onnx):
    from sklearn.neural_network import MLPClassifier

    x_train, y_train, x_test, _ = digits
    names = np.where(y_train % 2, "odd", "even")
    clf = _fit(MLPClassifier(hidden_layer_sizes=(16,), max_iter=40, random_state=0), x_train,
               names)
    mlp = read_onnx_mlp(to_onnx(clf, x_train[:1]))
    assert mlp.labels == ("even", "odd") and mlp.output_width == 2
    w, b = clf.coefs_[1][:, 0].astype(np.float32), clf.intercepts_[1].astype(np.float32)
    assert np.array_equal(mlp.layers[1][0], np.vstack([-w / 2, w / 2]).astype(np.float64))
    assert np.allclose(mlp.layers[1][1], [-b[0] / 2, b[0] / 2])
    predicted = np.array(mlp.labels)[np.argmax(mlp.forward(x_test), 1)]
    assert np.array_equal(predicted, clf.predict(x_test))
    program = import_onnx(to_onnx(clf, x_train[:1]), x_train)
    assert program.labels == ("even", "odd")


@pytest.mark.parametrize("variant", ["no zipmap", "float64"])
def test_sklearn_converter_options(digits, sklearn_clf, variant, to_onnx):

    x_train, _, x_test, _ = digits
    if variant == "no zipmap":  # labels then come from ArrayFeatureExtractor's classes
        model = to_onnx(sklearn_clf, x_train[:1], options={"zipmap": False})
    else:
        model = to_onnx(sklearn_clf, x_train[:1].astype(np.float64))
    mlp = read_onnx_mlp(model)
    assert mlp.labels == tuple("0123456789")
    if variant == "float64":
        assert np.array_equal(mlp.layers[0][0], sklearn_clf.coefs_[0].T)
    assert np.array_equal(np.argmax(mlp.forward(x_test), 1), sklearn_clf.predict(x_test))


def test_sklearn_regressor(digits, to_onnx):
    from sklearn.neural_network import MLPRegressor

    x_train, y_train, x_test, _ = digits
    reg = _fit(MLPRegressor(hidden_layer_sizes=(16,), max_iter=30, random_state=0), x_train,
               y_train.astype(np.float64))
    mlp = read_onnx_mlp(to_onnx(reg, x_train[:1]))
    assert mlp.output_width == 1 and mlp.labels is None and mlp.stripped == ()
    assert np.allclose(mlp.forward(x_test)[:, 0], reg.predict(x_test), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant, message", [
    ("tanh", "node 'Tanh' (Tanh): activation Tanh is not supported"),
    ("logistic", "node 'Sigmoid' (Sigmoid): Sigmoid between layers is not supported"),
    ("multilabel", "(Sigmoid): Sigmoid on 2 outputs gives independent (multi-label)"),
])
def test_sklearn_models_trine_cannot_run(digits, variant, message, to_onnx):
    from sklearn.neural_network import MLPClassifier

    x_train, y_train, _, _ = digits
    y = np.stack([y_train % 2, y_train > 4], 1) if variant == "multilabel" else y_train
    activation = "relu" if variant == "multilabel" else variant
    clf = _fit(MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0,
                             activation=activation), x_train, y)
    with pytest.raises(OnnxImportError, match=re.escape(message)):
        read_onnx_mlp(to_onnx(clf, x_train[:1]))


# --------------------------------------------------------------------------------------------
# import_onnx: calibration data and settings
# --------------------------------------------------------------------------------------------


def test_import_needs_calibration_data():
    with pytest.raises(OnnxImportError, match=r"calibration data is needed .* --calib X\.npy"):
        import_onnx(_model(_mlp_nodes(), MLP_INITS))


def test_bad_calibration_data_is_named(tmp_path):
    model = _model(_mlp_nodes(), MLP_INITS)
    with pytest.raises(OnnxImportError, match=r"calibration_x must be a float array of raw "
                       r"inputs \(N, 4\), not dtype int64"):
        import_onnx(model, np.ones((5, 4), np.int64))
    np.save(tmp_path / "c.npy", np.ones((5, 3)))
    with pytest.raises(OnnxImportError, match=r"c\.npy has 3 features per sample, the model "
                       "expects 4"):
        import_onnx(model, tmp_path / "c.npy")
    with pytest.raises(OnnxImportError, match=r"cannot read calibration data .*nothing\.npy"):
        import_onnx(model, tmp_path / "nothing.npy")
    with pytest.raises(OnnxImportError, match=r"must be finite: nan at \(1, 2\)"):
        x = np.ones((3, 4))
        x[1, 2] = np.nan
        import_onnx(model, x)
    with pytest.raises(OnnxImportError, match=r"shape \(N, 4\) with N >= 1, not \(4,\)"):
        check_inputs(np.ones(4), 4)


def test_import_settings_reach_fold_to_program():
    model = _model(_mlp_nodes(), MLP_INITS)
    p = import_onnx(model, X4, method="absmean", input_scale=0.05, percentile=99.0,
                    labels=["a", "b"])
    assert p.input_scale == 0.05 and p.labels == ("a", "b")
    with pytest.raises(OnnxImportError, match="labels has 3 names; model has 2 outputs"):
        import_onnx(model, X4, labels=["a", "b", "c"])
    with pytest.raises(TernarizeError, match="method must be one of"):
        import_onnx(model, X4, method="binary")


# --------------------------------------------------------------------------------------------
# PyTorch through torch.onnx (only where torch is installed; not in the project's venv)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dynamic", [False, True], ids=["static-batch", "dynamic-batch"])
@pytest.mark.parametrize("flatten", ["nn.Flatten", "view", "none+log_softmax"])
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_torch_export(tmp_path, dynamo, flatten, dynamic):
    torch = pytest.importorskip("torch")
    if dynamo:
        pytest.importorskip("onnxscript")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.flat = torch.nn.Flatten()
            self.l1 = torch.nn.Linear(64, 32)
            self.l2 = torch.nn.Linear(32, 16, bias=False)
            self.l3 = torch.nn.Linear(16, 10)

        def forward(self, x):
            if flatten == "nn.Flatten":
                x = self.flat(x)
            elif flatten == "view":
                x = x.view(x.size(0), -1)
            y = self.l3(torch.relu(self.l2(torch.relu(self.l1(x)))))
            return torch.log_softmax(y, dim=1) if flatten.endswith("log_softmax") else y

    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(3, 64) if flatten.startswith("none") else torch.randn(3, 1, 8, 8)
    kwargs = {}
    if dynamic and dynamo:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
    elif dynamic:
        kwargs["dynamic_axes"] = {"x": {0: "batch"}}
    path = tmp_path / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(path), dynamo=dynamo, input_names=["x"], **kwargs)
    mlp = read_onnx_mlp(path)
    state = net.state_dict()
    assert [w.shape for w, _, _ in mlp.layers] == [(32, 64), (16, 32), (10, 16)]
    assert [r for _, _, r in mlp.layers] == [True, True, False]
    for (w, b, _), name in zip(mlp.layers, ("l1", "l2", "l3"), strict=True):
        assert np.array_equal(w, state[f"{name}.weight"].numpy().astype(np.float64))
        bias = state.get(f"{name}.bias")
        assert np.array_equal(b, np.zeros(w.shape[0]) if bias is None else bias.numpy())
    x_np = x.numpy().reshape(3, 64)
    with torch.no_grad():
        expected = net(x).numpy()
    logits = mlp.forward(x_np)
    if flatten.endswith("log_softmax"):
        assert mlp.stripped and "LogSoftmax" in mlp.stripped[0]
        expected = expected + np.log(np.exp(logits).sum(1, keepdims=True))  # back to logits
    assert np.allclose(logits, expected, rtol=1e-4, atol=1e-5)
