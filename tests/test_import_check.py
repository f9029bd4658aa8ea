"""trine.host.import_check and the import's check of itself: agreement and correlation with
the float model, the layer that loses the most, and the refusal (in Python and on the command
line) of a program that no longer computes the model."""

from pathlib import Path

import numpy as np
import pytest

from trine.host.data import load_digits_split
from trine.host.import_check import MIN_AGREEMENT, check_program, correlation

onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402

from trine.cli.main import main  # noqa: E402
from trine.host.onnx_import import ImportCheckError, import_onnx, read_onnx_network  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"


def test_correlation():
    a = np.arange(10.0)
    assert correlation(a, 3 * a + 1) == pytest.approx(1.0)
    assert correlation(a, -a) == pytest.approx(-1.0)
    assert correlation(np.ones(4), np.ones(4)) == 1.0
    assert correlation(np.ones(4), a[:4]) == 0.0


@pytest.fixture(scope="module")
def digits():
    x_train, _, _, _ = load_digits_split()
    return read_onnx_network(FIXTURES / "digits_mlp_skl.onnx"), x_train[:256]


def test_a_good_import_passes(digits):
    net, calib = digits
    program = net.to_program(calib)
    check = check_program(net.layers, program, calib)
    assert check.n == 256 and check.agreement > 0.95 and check.correlation > 0.95
    assert [(c.index, c.kind) for c in check.layers] == [(0, "Dense"), (1, "Dense")]
    assert check.layers[-1].correlation == pytest.approx(check.correlation)
    assert check.checkable and check.float_decided == 1.0
    assert check.refusal() is None


def _scaled_model(factor, names):
    """The digits MLP with the initializers ``names`` scaled by ``factor`` (in float32)."""
    model = onnx.load(FIXTURES / "digits_mlp_skl.onnx")
    for t in model.graph.initializer:
        if t.name in names:
            v = numpy_helper.to_array(t) * np.float32(factor)
            t.CopyFrom(numpy_helper.from_array(v, t.name))
    return model


def test_weights_scaled_by_1e_44_are_refused_naming_the_layer(digits, tmp_path, capsys):
    # The case: the first layer's weights times 1e-44 (float32 denormals, a few bits
    # left). The float model still decides every input (by its biases); TWN's program then
    # agrees with it on none.
    net, calib = digits
    model = _scaled_model(1e-44, ["coefficient"])
    scaled = read_onnx_network(model)
    program = scaled.to_program(calib, method="twn")
    check = check_program(scaled.layers, program, calib)
    assert check.agreement < MIN_AGREEMENT and check.checkable
    reason = check.refusal()
    assert reason.startswith("the program agrees with the float model on 0.0% of the 256 "
                             "calibration inputs (below 50%; output correlation ")
    assert f"layer {check.worst.index} (Dense) loses the most" in reason
    with pytest.raises(ImportCheckError, match="loses the most.*try distill=True, or "
                       "force=True"):
        import_onnx(model, calib, method="twn")
    assert import_onnx(model, calib, method="twn", force=True) == program
    # the command line: one line, exit status 2, nothing written; --force writes
    path = tmp_path / "tiny.onnx"
    onnx.save(model, path)
    np.save(tmp_path / "calib.npy", calib)
    out = tmp_path / "tiny.trine"
    argv = ["import", str(path), "--calib", str(tmp_path / "calib.npy"), "-o", str(out),
            "--method", "twn"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tiny.onnx: post-training program agrees with the float " \
        "model on 0.0% of the 256 calibration inputs (below 50%" in err
    assert "(Dense) loses the most" in err and "try --distill" in err
    assert "--force to write it anyway" in err and not out.exists()
    assert main([*argv, "--force"]) == 0 and out.exists()
    assert "check, post-training: agrees with the float model on 0.0%" in capsys.readouterr().out


def test_a_float_model_that_cannot_decide_is_not_checked(digits):
    net, calib = digits
    program = net.to_program(calib)
    w, b, relu = net.layers[-1]
    layers = [net.layers[0], (np.zeros_like(w), np.zeros_like(b), relu)]  # every output 0
    check = check_program(layers, program, calib)
    assert check.float_decided == 0.0 and not check.checkable
    assert check.agreement < MIN_AGREEMENT and check.refusal() is None
