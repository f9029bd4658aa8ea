"""trine.host.qonnx_import: QONNX models as Brevitas exports them (the committed fixtures,
made by tests/fixtures/make_import_fixtures.py) and hand-built QONNX graphs for every rule.

Where the model's quantisation rules are the device's (power-of-two scales, 8-bit signed input
and logits, 7-bit unsigned ReLU, Int32Bias, per-tensor ternary weights) the program's outputs
equal Brevitas' own integers once the requantiser rounds ties as Brevitas does (half to even);
with the device's half-up rounding they differ only at ties."""

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from trine.host.onnx_import import OnnxImportError, read_onnx_network  # noqa: E402
from trine.host.program import Program  # noqa: E402
from trine.host.qonnx_import import run_half_even  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
QONNX = "qonnx.custom_op.general"


def _fixture(name):
    net = read_onnx_network(FIXTURES / f"{name}.onnx")
    saved = np.load(FIXTURES / f"{name}.npz")
    return net, saved["x"], saved["y_int"], saved["y"]


def _quantized_weights(name):
    """The integers of every weight Quant in the file, computed here from its initializers."""
    model = onnx.load(FIXTURES / f"{name}.onnx")
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type == "Quant" and node.input[0] in inits and "weight" in node.input[0]:
            w, scale = inits[node.input[0]], inits[node.input[1]]
            out.append(np.clip(np.round(w / scale), -1, 1).astype(np.int8))
    return out


@pytest.mark.parametrize("name", ["brevitas_mlp", "brevitas_cnn"])
def test_brevitas_with_the_devices_rules_imports_exactly(name, tmp_path):
    net, x, y_int, y = _fixture(name)
    # the float model is the QONNX graph's own arithmetic: equal to Brevitas' outputs
    np.testing.assert_allclose(net.forward(x), y, rtol=0, atol=1e-6)
    program = net.to_program(None)  # every scale comes from the model: no calibration
    assert program == net.to_program(x)
    # the trits are the Quant nodes' integers, read, not re-quantised
    for layer, trits in zip(program.weighted_layers, _quantized_weights(name), strict=True):
        assert np.array_equal(layer.weights.reshape(trits.shape), trits)
    # rounding ties as Brevitas does, the program is Brevitas bit for bit
    assert np.array_equal(run_half_even(program, x), y_int)
    # the device rounds them half up: a difference that starts at ties and adds up over the
    # layers, of a few units; the classes stay
    got = program.run_reference(x).astype(int)
    assert 0 < np.abs(got - y_int).max() <= 4
    assert np.mean(got.argmax(1) == y_int.argmax(1)) > 0.95
    assert any("rounds half to even, the device's requantiser half up" in n for n in net.notes)
    program.save(tmp_path / "p.trine")
    assert Program.load(tmp_path / "p.trine") == program


def test_brevitas_float_scales_differ_and_say_so():
    net, x, y_int, _ = _fixture("brevitas_mlp_float")
    notes = " | ".join(net.notes)
    assert "one scale per output channel" in notes and "the device has one per layer" in notes
    assert "8 unsigned bits (0..255) kept at twice its scale" in notes
    assert "not a power of two" in notes
    program = net.to_program(x)
    # the classes mostly survive; the integers are on other scales
    assert np.mean(program.run_reference(x).argmax(1) == y_int.argmax(1)) > 0.9
    assert not np.array_equal(run_half_even(program, x), y_int)


# --------------------------------------------------------------------------------------------
# Hand-built QONNX graphs
# --------------------------------------------------------------------------------------------

RNG = np.random.default_rng(8)
W = (RNG.integers(-1, 2, size=(3, 4)) * 0.25).astype(np.float32)  # (out, in), ternary
B = np.array([0.5, -0.25, 0.125], np.float32)


def _quant(x, out, name, scale="s", zero="z", bits="b", **attrs):
    attrs = {"signed": 1, "narrow": 0, "rounding_mode": "ROUND", **attrs}
    return helper.make_node("Quant", [x, scale, zero, bits], [out], name=name, domain=QONNX,
                            **attrs)


def _model(nodes, inits):
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    tensors = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()]
    return helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, tensors),
                             opset_imports=[helper.make_opsetid("", 17),
                                            helper.make_opsetid(QONNX, 1)])


BASE = {"W": W, "B": B, "s": 2.0**-4, "z": 0.0, "b": 8.0, "ws": 0.25, "wb": 2.0}


def _layer(weight_quant=None, act=None, inits=None, w_input="W"):
    wq = weight_quant or _quant(w_input, "Wq", "wq", scale="ws", bits="wb", narrow=1)
    nodes = [_quant("x", "xq", "in_q"), wq,
             helper.make_node("Gemm", ["xq", "Wq", "B"], ["h"], name="fc", transB=1),
             act or _quant("h", "y", "out_q")]
    return _model([n for n in nodes if n is not None], {**BASE, **(inits or {})})


def test_a_hand_built_qonnx_layer():
    net = read_onnx_network(_layer())
    assert net.quantization is not None
    lq = net.quantization.weights[0]
    assert np.array_equal(lq.trits, np.rint(W / 0.25)) and np.all(lq.scales == 0.25)
    program = net.to_program(None)
    assert program.input_scale == 2.0**-4
    layer = program.layers[0]
    # unit 0.25 / 16, output scale 1/16: shift 2; bias b / unit
    assert layer.shift == 2 and np.array_equal(layer.bias, np.rint(B / (0.25 / 16)))
    x = RNG.normal(size=(50, 4))
    want = np.clip(np.round(net.forward(x) / 2.0**-4), -128, 127)
    assert np.array_equal(run_half_even(program, x), want)


def test_per_channel_and_bipolar_weights():
    scales = np.array([[0.5], [0.25], [0.125]], np.float32)
    trits = np.rint(W / 0.25)
    net = read_onnx_network(_layer(inits={"ws": scales, "W": trits * scales}))
    lq = net.quantization.weights[0]
    assert np.array_equal(lq.trits, trits) and lq.per_channel
    assert np.array_equal(lq.scales, scales[:, 0])
    assert any("one scale per output channel" in n for n in net.notes)
    bipolar = helper.make_node("BipolarQuant", ["W", "ws"], ["Wq"], name="wq", domain=QONNX)
    net = read_onnx_network(_layer(weight_quant=bipolar))
    assert np.array_equal(net.quantization.weights[0].trits, np.where(W >= 0, 1, -1))


def test_a_layer_without_an_output_quant_needs_calibration():
    net = read_onnx_network(_layer(act=helper.make_node("Identity", ["h"], ["y"], name="o")))
    with pytest.raises(OnnxImportError, match="layer 0 has no activation Quant to give its "
                       "scale: calibration inputs are needed"):
        net.to_program(None)
    program = net.to_program(RNG.normal(size=(30, 4)))
    assert program.input_scale == 2.0**-4  # the input's scale is still the model's


@pytest.mark.parametrize("case, change, message", [
    ("4-bit weights", {"inits": {"wb": 4.0}},
     "node 'fc' (Gemm): its weight quantiser node 'wq' (qonnx.custom_op.general.Quant) has 4 "
     "bits: the device's weights are ternary"),
    ("2-bit weights not narrow", {"weight_quant": _quant("W", "Wq", "wq", scale="ws",
                                                         bits="wb", narrow=0)},
     "has 2 bits (-2..1, not narrow)"),
    ("weight zero point", {"weight_quant": _quant("W", "Wq", "wq", scale="ws", zero="one",
                                                  bits="wb", narrow=1),
                           "inits": {"one": 1.0}},
     "has zero point 1: the device's trits are symmetric"),
    ("activation zero point", {"act": _quant("h", "y", "out_q", zero="one"),
                               "inits": {"one": 3.0}},
     "node 'out_q' (qonnx.custom_op.general.Quant): zero point 3 is not supported"),
    ("16-bit activations", {"act": _quant("h", "y", "out_q", bits="b16"),
                            "inits": {"b16": 16.0}},
     "it quantises activations to 16 bits: the device's activations are 8 bits"),
    ("activation scale per channel", {"act": _quant("h", "y", "out_q", scale="s3"),
                                      "inits": {"s3": [0.1, 0.2, 0.3]}},
     "it has 3 scales (one per channel): the device has one scale per activation tensor"),
    ("FloatQuant on the chain", {"act": helper.make_node(
        "FloatQuant", ["h", "s", "b", "b", "b", "b"], ["y"], name="fq", domain=QONNX)},
     "node 'fq' (qonnx.custom_op.general.FloatQuant): minifloat quantisation (FloatQuant) is "
     "not supported"),
    ("Trunc on the chain", {"act": helper.make_node("Trunc", ["h", "s", "z", "b", "b"], ["y"],
                                                    name="tr", domain=QONNX)},
     "node 'tr' (qonnx.custom_op.general.Trunc): Trunc (dropping low bits"),
    ("FloatQuant on a weight", {"weight_quant": helper.make_node(
        "FloatQuant", ["W", "s", "b", "b", "b", "b"], ["Wq"], name="fw", domain=QONNX)},
     "weight 'Wq' is not a constant: it is computed by node 'fw' "
     "(qonnx.custom_op.general.FloatQuant): minifloat quantisation"),
    ("MultiThreshold", {"act": helper.make_node("MultiThreshold", ["h", "s"], ["y"], name="mt",
                                                domain=QONNX)},
     "MultiThreshold (FINN's streamlined activations) is not supported"),
    ("BipolarQuant on activations", {"act": helper.make_node(
        "BipolarQuant", ["h", "s"], ["y"], name="bq", domain=QONNX)},
     "BipolarQuant on activations is not supported"),
    ("unknown rounding", {"act": _quant("h", "y", "out_q", rounding_mode="STOCHASTIC")},
     "rounding_mode 'STOCHASTIC' is not one of ROUND"),
    ("negative scale", {"inits": {"s": -0.5}}, "its scale must be > 0, not -0.5"),
    ("fractional bit width", {"inits": {"b": 7.5}}, "its bit width [7.5] must be one integer"),
])
def test_qonnx_refusals_name_the_node(case, change, message):
    with pytest.raises(OnnxImportError) as e:
        read_onnx_network(_layer(**change))
    assert message in str(e.value), str(e.value)


def test_float_weights_among_quantised_ones_are_refused():
    nodes = [_quant("x", "xq", "in_q"),
             _quant("W", "Wq", "wq", scale="ws", bits="wb", narrow=1),
             helper.make_node("Gemm", ["xq", "Wq", "B"], ["h"], name="fc1", transB=1),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "W2", "B2"], ["y"], name="fc2", transB=1)]
    inits = {**BASE, "W2": RNG.normal(size=(2, 3)), "B2": np.zeros(2)}
    with pytest.raises(OnnxImportError, match="node 'fc2' \\(Gemm\\): its weights are float but "
                       "those of node 'fc1' \\(Gemm\\) are quantised"):
        read_onnx_network(_model(nodes, inits))
