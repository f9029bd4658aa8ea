"""QAT with ternary activations (trine.host.qat act="ternary"): the forward pass is the
reference's bit for bit, the thresholds are calibrated, and the option is validated."""

import numpy as np
import pytest

from trine.contract.network import ternary_inputs
from trine.host.data import load_digits_split
from trine.host.learning import TrainError
from trine.host.program import Program
from trine.host.qat import train_qat
from trine.host.qat_net import QATNet, ternary_shift_for


@pytest.fixture(scope="module")
def digits_small():
    x_train, y_train, x_test, y_test = load_digits_split()
    return x_train[:600], y_train[:600], x_test, y_test


def test_random_mixed_networks_forward_as_the_reference():
    rng = np.random.default_rng(11)
    for _ in range(40):
        dims = [int(d) for d in rng.integers(1, 40, rng.integers(2, 6))]
        n = len(dims) - 1
        acts = [int(t) if t else None for t in rng.integers(0, 30, n)]
        net = QATNet([rng.normal(size=(m, k)) for k, m in zip(dims, dims[1:], strict=False)],
                     [rng.normal(0, 30, m) for m in dims[1:]],
                     [int(s) for s in rng.integers(0, 6, n)],
                     [bool(r) for r in rng.integers(0, 2, n)],
                     float(rng.uniform(0.01, 0.5)), act_thresholds=acts)
        x = rng.normal(0, 3, (100, dims[0]))
        program = net.to_program()
        assert [layer.ternary_threshold for layer in program.layers] == acts
        assert np.array_equal(net.forward(x), program.run_reference(x))
        back = Program.from_bytes(program.to_bytes())
        assert np.array_equal(back.run_reference(x), net.forward(x))
        assert QATNet.from_program(back).act_thresholds == acts


def test_a_trained_ternary_mlp_is_its_program(digits_small):
    x, y, xt, yt = digits_small
    r = train_qat(x, y, hidden=(32, 16), epochs=8, seed=2, act="ternary", x_test=xt, y_test=yt)
    program = r.program
    layers = program.layers
    assert [layer.relu for layer in layers] == [False, False, False]
    assert [layer.ternary_threshold is not None for layer in layers] == [True, True, False]
    assert ternary_inputs(layers) == (False, True, True)
    assert r.metrics["act_thresholds"] == [layer.ternary_threshold for layer in layers]
    net = QATNet.from_program(program)
    assert np.array_equal(net.forward(xt), program.run_reference(xt))
    hidden = Program(layers[:2], program.input_scale).run_reference(xt)
    assert set(np.unique(hidden)) <= {-1, 0, 1} and len(np.unique(hidden)) == 3
    assert r.metrics["test_acc"] > 0.5  # learns: chance is 0.1
    assert r.settings["act"] == "ternary" and r.settings["act_delta"] == 0.3
    again = train_qat(x, y, hidden=(32, 16), epochs=8, seed=2, act="ternary")
    assert again.program.to_bytes() == program.to_bytes()


def test_a_trained_ternary_cnn_is_its_program():
    rng = np.random.default_rng(4)
    x = rng.normal(0, 2, (200, 40))
    y = rng.integers(0, 3, 200)
    r = train_qat(x, y, arch="c6k5p2,m2,c4k3p1", input_shape=(1, 40), epochs=2,
                  batch_size=50, seed=1, act="ternary")
    program = r.program
    kinds = [(type(layer).__name__, getattr(layer, "ternary_threshold", "-"))
             for layer in program.layers]
    assert [k for k, _ in kinds] == ["Conv", "MaxPool", "Conv", "Flatten", "Layer"]
    assert kinds[0][1] is not None and kinds[2][1] is not None and kinds[4][1] is None
    assert np.array_equal(QATNet.from_program(program).forward(x), program.run_reference(x))


def test_int8_training_is_unchanged_by_the_option(digits_small):
    x, y, _, _ = digits_small
    a = train_qat(x, y, hidden=(16,), epochs=3, seed=5)
    b = train_qat(x, y, hidden=(16,), epochs=3, seed=5, act="int8", act_delta=0.9)
    assert a.program.to_bytes() == b.program.to_bytes()
    assert "act" not in a.settings and "act_thresholds" not in a.metrics


def test_ternary_shift_for_expresses_the_threshold_as_t_times_a_power_of_two():
    z = np.array([-400, 400, -400, 400])  # mean|z| = 400
    assert ternary_shift_for(z, False, 0.3) == (0, 120)
    assert ternary_shift_for(z, False, 0.5) == (1, 100)  # 200 = 100 * 2
    assert ternary_shift_for(z, True, 0.5) == (0, 100)  # ReLU: mean of max(z, 0) = 200
    assert ternary_shift_for(np.zeros(4), False, 0.5) == (0, 1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(act="binary"), "act must be one of int8, ternary, ternary-inner, not 'binary'"),
    (dict(act="ternary", act_delta=0), "act_delta must be a finite number > 0"),
    (dict(act="ternary", init="float"), r"act='ternary' starts from random weights"),
])
def test_bad_options(digits_small, kwargs, message):
    x, y, _, _ = digits_small
    with pytest.raises(TrainError, match=message):
        train_qat(x, y, hidden=(8,), epochs=1, **kwargs)


def test_bad_thresholds_in_a_net():
    with pytest.raises(TrainError, match=r"act_thresholds\[0\] must be in \[1, 127\]"):
        QATNet([np.ones((2, 3))], [np.zeros(2)], [0], [False], 0.1, act_thresholds=[0])
    with pytest.raises(TrainError, match="act_thresholds has 2 entries for 1 weighted layers"):
        QATNet([np.ones((2, 3))], [np.zeros(2)], [0], [False], 0.1, act_thresholds=[1, 2])


def test_trine_train_ternary_act(tmp_path, capsys):
    from trine.cli.main import main

    out = tmp_path / "t.trine"
    rc = main(["train", "--data", "digits", "--hidden", "16", "--epochs", "3", "--ternary-act",
               "--no-float", "-q", "-o", str(out), "--json", str(tmp_path / "t.json")])
    assert rc == 0
    assert out.read_bytes()[8] == 3  # format version 3
    program = Program.load(out)
    assert [layer.ternary_threshold is not None for layer in program.layers] == [True, False]
    assert main(["eval", "--program", str(out)]) == 0
    assert "accuracy (bit-exact reference)" in capsys.readouterr().out
    assert main(["train", "--method", "evolve", "--ternary-act", "-q",
                 "-o", str(tmp_path / "e.trine")]) == 2
    assert "--ternary-act is for --method qat" in capsys.readouterr().err


def test_ternary_inner_keeps_the_first_hidden_layer_int8(digits_small, tmp_path):
    x, y, xt, _ = digits_small
    r = train_qat(x, y, hidden=(16, 12, 8), epochs=2, seed=1, act="ternary-inner")
    layers = r.program.layers
    assert [layer.ternary_threshold is not None for layer in layers] == [False, True, True,
                                                                          False]
    assert [layer.relu for layer in layers] == [True, False, False, False]
    assert ternary_inputs(layers) == (False, False, True, True)
    assert np.array_equal(QATNet.from_program(r.program).forward(xt),
                          r.program.run_reference(xt))
    with pytest.raises(TrainError, match="act='ternary-inner' needs at least two hidden"):
        train_qat(x, y, hidden=(8,), epochs=1, act="ternary-inner")
    from trine.cli.main import main

    out = tmp_path / "i.trine"
    assert main(["train", "--data", "digits", "--hidden", "16,8", "--epochs", "1",
                 "--ternary-act", "inner", "--no-float", "-q", "-o", str(out)]) == 0
    kinds = [layer.ternary_threshold is not None for layer in Program.load(out).layers]
    assert kinds == [False, True, False]
