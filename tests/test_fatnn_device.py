"""Mixed networks (int8 input layer, ternary hidden layers) on the simulated RTL device, issue
15 §1: the real Client over socket:// to trine.sim.serve on Icarus and Verilator, every output
equal to the reference (np.array_equal); ``trine eval --backend device`` end to end; a device
built without ``ternary_act`` refuses such a program from its INFO, naming layer and parameter.

The devices are the simulated default (:data:`trine.contract.params.SIMULATED`, which has
``ternary_act``), shared with the other tests that ask for it.
"""

import numpy as np
import pytest
from conftest import CNN_KINDS, random_cnn, random_layers
from ternary_nets import trit_counts, with_thresholds

from trine.cli.main import main
from trine.contract.params import SIMULATED
from trine.contract.protocol import Feature
from trine.host.client import Client
from trine.host.data import load_digits_split
from trine.host.program import Program, ProgramTooLargeError
from trine.host.qat import train_qat
from trine.sim.serve import DeviceConfig, device_parser

SIMULATORS = [pytest.param("icarus", marks=pytest.mark.cocotb, id="icarus"),
              pytest.param("verilator", marks=pytest.mark.verilator, id="verilator")]


@pytest.fixture(scope="module")
def digits():
    return load_digits_split()


@pytest.fixture(scope="module")
def trained_mlp(digits):
    x, y, x_test, y_test = digits
    r = train_qat(x[:600], y[:600], hidden=(32, 16), epochs=8, seed=2, act="ternary")
    assert [layer.ternary_threshold is not None for layer in r.program.layers] == [
        True, True, False]
    return r.program


@pytest.fixture(scope="module")
def trained_cnn(digits):
    x, y, _, _ = digits
    r = train_qat(x[:400], y[:400], arch="c6k3p1,m2,c8k3p1,m2", input_shape=(1, 8, 8),
                  epochs=2, batch_size=50, seed=1, act="ternary")
    thresholds = [getattr(layer, "ternary_threshold", "-") for layer in r.program.layers]
    assert thresholds[0] is not None and thresholds[2] is not None and thresholds[-1] is None
    return r.program


def run_bit_exact(url, program, x):
    with Client(url, timeout=60) as client:
        assert client.limits().ternary_act
        client.load(program)
        y, cycles = client.infer_batch(x)
    assert np.array_equal(y, program.run_reference(x))
    assert all(c > 0 for c in cycles)
    return y


@pytest.mark.parametrize("sim", SIMULATORS)
def test_a_trained_mixed_mlp_is_bit_exact_on_the_device(sim, device_server, trained_mlp,
                                                        digits):
    x = digits[2][:100]
    hidden = Program(trained_mlp.layers[:2], trained_mlp.input_scale).run_reference(x)
    assert set(np.unique(hidden)) == {-1, 0, 1}
    run_bit_exact(device_server(sim, "byte"), trained_mlp, x)


@pytest.mark.parametrize("sim", SIMULATORS)
def test_a_trained_mixed_cnn_is_bit_exact_on_the_device(sim, device_server, trained_cnn,
                                                        digits):
    run_bit_exact(device_server(sim, "byte"), trained_cnn, digits[2][:40])


@pytest.mark.parametrize("sim", SIMULATORS)
def test_random_mixed_networks_are_bit_exact_on_the_device(sim, device_server):
    """Random MLPs and every CNN kind (strides, padding, pooling of trits, flatten), with
    calibrated thresholds; some end in a ternary layer (its trits are the outputs)."""
    rng = np.random.default_rng(2028)
    url = device_server(sim, "byte")
    nets = [(random_layers(rng, [30, 24, 17, 9], bias=300, shifts=4), (30,), False),
            (random_layers(rng, [12, 41, 6], bias=300, shifts=4), (12,), True)]
    nets += [(*random_cnn(rng, kind), kind == "conv2d") for kind in CNN_KINDS]
    trits = np.zeros(3, np.int64)
    for layers, shape, last in nets:
        x = rng.integers(-128, 128, (7, *shape)).astype(np.int8)
        layers = with_thresholds(rng, layers, x, shape, last=last)
        trits += sum(trit_counts(layers, x, shape))
        program = Program(layers, input_shape=shape)
        y = run_bit_exact(url, program, x)
        if last:
            assert set(np.unique(y)) <= {-1, 0, 1}
    assert trits.min() > trits.sum() // 10  # each of -1, 0, +1 is common


@pytest.mark.cocotb
def test_trine_eval_runs_a_ternary_program_on_the_device(device_server, trained_mlp, digits,
                                                         tmp_path, capsys):
    x, y = digits[2][:120], digits[3][:120]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    trained_mlp.save(tmp_path / "mixed.trine")
    rc = main(["eval", "--program", str(tmp_path / "mixed.trine"), "--input",
               str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"), "--backend",
               "device", "--port", device_server("icarus", "byte"), "--timeout", "60"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "device == reference on 120 of 120 samples" in out


@pytest.mark.cocotb
def test_a_device_without_ternary_act_refuses_the_program(device_server, trained_mlp):
    url = device_server("icarus", "byte", ternary_act=False)
    with Client(url, timeout=60) as client:
        assert client.info().features == 0 and not client.limits().ternary_act
        with pytest.raises(ProgramTooLargeError,
                           match=r"layer 0 \(Dense\) has ternary outputs \(ternary_threshold "
                                 r"\d+\): this device computes int8 activations only \(built "
                                 r"without the accelerator parameter ternary_act\)"):
            client.load(trained_mlp)
        # an int8 program still runs there
        int8 = Program(random_layers(np.random.default_rng(1), [9, 5, 3]))
        client.load(int8)
        x = np.arange(-4, 5, dtype=np.int8)[None]
        assert np.array_equal(client.infer(x[0])[0], int8.run_reference(x[0]))


def test_the_parameter_is_in_info_and_on_the_server_command_line():
    assert SIMULATED.ternary_act and SIMULATED.device_info().features == Feature.TERNARY_ACT
    assert SIMULATED.limits().ternary_act
    off = SIMULATED.replace(ternary_act=False)
    assert off.device_info().features == 0 and not off.limits().ternary_act
    for params in (SIMULATED, off):
        args = device_parser("serve", "").parse_args(
            ["--port", "0", *DeviceConfig(params=params).cli_args()])
        assert args.ternary_act is params.ternary_act
    assert "ternary_act" not in SIMULATED.size()
