"""``trine train`` and ``trine eval`` from the command line (in-process, real training)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trine.cli.main import main
from trine.host.data import load_digits_split
from trine.host.program import Program
from trine.host.results import program_accuracy


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    out, js, png = d / "m.trine", d / "m.json", d / "m.png"
    rc = main(["train", "--data", "digits", "--epochs", "30", "--hidden", "32", "--no-float",
               "-q", "-o", str(out), "--json", str(js), "--curve", str(png)])
    assert rc == 0
    return out, js, png


def test_train_writes_program_json_and_curve(trained, capsys):
    out, js, png = trained
    program = Program.load(out)
    x_tr, y_tr, x_te, y_te = load_digits_split()
    assert [layer.fan_out for layer in program.layers] == [32, 10]
    record = json.loads(js.read_text())
    assert record["method"] == "qat" and record["settings"]["hidden"] == [32]
    # the accuracy on file is the reference's on the test split
    assert record["metrics"]["test_acc"] == pytest.approx(program_accuracy(program, x_te, y_te))
    assert record["metrics"]["test_acc"] > 0.8
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_reference_prints_the_same_accuracy(trained, capsys):
    out, js, _ = trained
    assert main(["eval", "--program", str(out)]) == 0
    acc = json.loads(js.read_text())["metrics"]["test_acc"]
    assert f"accuracy (bit-exact reference): {acc:.2%}" in capsys.readouterr().out


def test_eval_own_npy_files(trained, tmp_path, capsys):
    out, _, _ = trained
    _, _, x_te, y_te = load_digits_split()
    np.save(tmp_path / "x.npy", x_te[:50])
    np.save(tmp_path / "y.npy", y_te[:50])
    rc = main(["eval", "--program", str(out), "--input", str(tmp_path / "x.npy"),
               "--labels", str(tmp_path / "y.npy"), "--json", str(tmp_path / "e.json")])
    assert rc == 0
    e = json.loads((tmp_path / "e.json").read_text())
    assert e["samples"] == 50 and e["bit_exact"] is True
    assert e["accuracy"] == pytest.approx(program_accuracy(Program.load(out), x_te[:50],
                                                           y_te[:50]))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--hidden", "64,x"], "--hidden"),
        (["--hidden", "0"], "--hidden"),
        (["--epochs", "0"], "epochs"),
    ],
)
def test_train_errors_write_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "bad.trine"
    assert main(["train", "-q", "--no-float", "-o", str(out), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_eval_errors(trained, tmp_path, capsys):
    out, _, _ = trained
    assert main(["eval", "--program", str(out), "--backend", "device"]) == 2
    assert "--port" in capsys.readouterr().err
    np.save(tmp_path / "x.npy", np.zeros((5, 63), np.float32))
    np.save(tmp_path / "y.npy", np.zeros(5, np.int64))
    assert main(["eval", "--program", str(out), "--input", str(tmp_path / "x.npy"),
                 "--labels", str(tmp_path / "y.npy")]) == 2
    assert "63 features" in capsys.readouterr().err
    assert main(["eval", "--program", str(out), "--input", str(tmp_path / "x.npy")]) == 2
    assert "go together" in capsys.readouterr().err
    (tmp_path / "junk.trine").write_bytes(b"not a program")
    assert main(["eval", "--program", str(tmp_path / "junk.trine")]) == 2
    assert "junk.trine" in capsys.readouterr().err
    assert main(["eval", "--program", str(out), "--input", str(tmp_path / "x.npy"),
                 "--labels", str(tmp_path / "none.npy")]) == 2
    assert capsys.readouterr().err == f"trine: error: --labels: no such file: {tmp_path}/none.npy\n"
    np.savez(tmp_path / "y.npz", y=np.zeros(5, np.int64))
    assert main(["eval", "--program", str(out), "--input", str(tmp_path / "x.npy"),
                 "--labels", str(tmp_path / "y.npz")]) == 2
    assert "holds several arrays (.npz)" in capsys.readouterr().err


def test_train_output_that_cannot_be_written_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("a file, not a folder")
    out = tmp_path / "file" / "m.trine"
    assert main(["train", "--epochs", "1", "--hidden", "8", "--no-float", "-q",
                 "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"trine: error: cannot write {out}: ") and err.count("\n") == 1


def test_train_a_cnn_and_evaluate_it(tmp_path, capsys):
    out = tmp_path / "cnn.trine"
    rc = main(["train", "--data", "digits", "--arch", "c4k3p1,m2,d16", "--epochs", "3", "-q",
               "-o", str(out), "--json", str(tmp_path / "cnn.json")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "CNN c4k3p1,m2,d16 on (1, 8, 8)" in text
    program = Program.load(out)
    assert program.input_shape == (1, 8, 8)
    assert [type(x).__name__ for x in program.layers] == ["Conv", "MaxPool", "Flatten", "Layer",
                                                         "Layer"]
    settings = json.loads((tmp_path / "cnn.json").read_text())["settings"]
    assert settings["arch"] == "c4k3p1,m2,d16" and settings["input_shape"] == [1, 8, 8]
    assert main(["eval", "--program", str(out)]) == 0
    assert "accuracy (bit-exact reference)" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--arch", "c4k3", "--hidden", "8"], "--hidden is for an MLP"),
    (["--arch", "c4k30"], "'c4k30': Conv2d kernel 30 is larger than its padded input height"),
    (["--arch", "q4"], "'q4' is not a layer"),
])
def test_cnn_arguments_are_checked(tmp_path, capsys, argv, message):
    out = tmp_path / "never.trine"
    assert main(["train", "-q", "--epochs", "1", "-o", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_evolve_a_cnn(tmp_path, capsys):
    out = tmp_path / "evo.trine"
    assert main(["train", "--data", "digits", "--arch", "c4k3p1,m2", "--method", "evolve",
                 "--generations", "20", "-q", "--no-float", "-o", str(out)]) == 0
    program = Program.load(out)
    assert program.input_shape == (1, 8, 8) and type(program.layers[0]).__name__ == "Conv"
