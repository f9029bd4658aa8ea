"""trine import: the summary, the accuracies side by side, and nothing written on any error;
MLPs from scikit-learn, CNNs from the committed PyTorch exports (tests/fixtures)."""

import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
skl2onnx = pytest.importorskip("skl2onnx")

from trine.cli.main import main  # noqa: E402
from trine.host.data import load_digits_split  # noqa: E402
from trine.host.onnx_import import import_onnx, read_onnx_network  # noqa: E402
from trine.host.program import Program  # noqa: E402
from trine.host.results import program_accuracy  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A digits MLPClassifier as ONNX, with calibration and evaluation .npy files."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    d = tmp_path_factory.mktemp("import")
    x_train, y_train, x_test, y_test = load_digits_split()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=80, random_state=0)
        clf.fit(x_train, y_train)
    (d / "mlp.onnx").write_bytes(skl2onnx.to_onnx(clf, x_train[:1]).SerializeToString())
    for name, a in {"xtr": x_train, "xte": x_test, "yte": y_test}.items():
        np.save(d / f"{name}.npy", a)
    return {"dir": d, "model": str(d / "mlp.onnx"), "calib": str(d / "xtr.npy"),
            "x": str(d / "xte.npy"), "y": str(d / "yte.npy"), "clf": clf,
            "data": (x_train, y_train, x_test, y_test)}


def _pct(text, label):
    m = re.search(re.escape(label) + r"\s+([0-9.]+)%", text)
    assert m, f"no {label!r} line in:\n{text}"
    return float(m.group(1))


def test_import_writes_the_program_and_reports_accuracies(files, tmp_path, capsys):
    out = tmp_path / "mlp.trine"
    rc = main(["import", files["model"], "-o", str(out), "--calib", files["calib"],
               "--eval", files["x"], files["y"]])
    text = capsys.readouterr().out
    assert rc == 0
    x_train, _, x_test, y_test = files["data"]
    program = Program.load(out)
    assert program == import_onnx(files["model"], x_train)
    assert program.labels == tuple("0123456789")
    assert "input 'X' (64 features), 2 linear layer(s), 10 outputs" in text
    assert "stripped the classifier output after the last layer: node 'Relu1' (Softmax)" in text
    assert re.search(r"0\s+32 x 64\s+yes\s+\d+\s+[0-9.]+%\s+0\.\d{3}\n", text)
    assert re.search(r"1\s+10 x 32\s+no\s+\d+\s+[0-9.]+%\s+0\.\d{3}\n", text)
    assert f"{program.stats()['file_bytes']:,} bytes" in text
    assert re.search(r"check, post-training: agrees with the float model on [0-9.]+% of the "
                     r"1347 calibration inputs, output correlation 0\.\d{3}\n", text)
    # the calibration inputs are those the fit saw: the check is made on --eval's too
    assert re.search(r"check on --eval \S+\.npy, post-training: agrees with the float model "
                     r"on [0-9.]+% of the 450 inputs, output correlation 0\.\d{3}\n", text)
    assert "distilled" not in text
    assert _pct(text, "float model (argmax of its float logits)") == round(
        100 * files["clf"].score(x_test, y_test), 1)
    assert _pct(text, "post-training program (the device's reference)") == round(
        100 * program_accuracy(program, x_test, y_test), 1)


def test_options_reach_the_program(files, tmp_path, capsys):
    out = tmp_path / "p.trine"
    names = "zero,one,two,three,four,five,six,seven,eight,nine"
    np.save(tmp_path / "names.npy", np.array(names.split(","))[files["data"][3]])
    rc = main(["import", files["model"], "-o", str(out), "--calib", files["calib"],
               "--method", "absmean", "--input-scale", "0.2", "--percentile", "99.5",
               "--labels", names, "--eval", files["x"], str(tmp_path / "names.npy")])
    text = capsys.readouterr().out
    assert rc == 0
    program = Program.load(out)
    assert program == import_onnx(files["model"], files["data"][0], method="absmean",
                                  input_scale=0.2, percentile=99.5, labels=names.split(","))
    assert "ternarised with absmean" in text and "input_scale 0.2 (given)" in text
    # Class names in Y are looked up in the labels: the same accuracy as indices.
    assert _pct(text, "post-training program (the device's reference)") == round(
        100 * program_accuracy(program, files["data"][2], files["data"][3]), 1)


FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("flat", [False, True], ids=["shaped", "flat"])
def test_import_a_cnn(tmp_path, capsys, flat):
    # The PyTorch outputs' argmax as labels: the float model is right on every sample.
    saved = np.load(FIXTURES / "cnn1d.npz")
    x, logits = saved["x"], saved["y"]
    rng = np.random.default_rng(0)
    calib = rng.normal(size=(200, 1, 40))
    model = str(FIXTURES / "cnn1d_dynamo.onnx")
    args = {"c": calib.reshape(200, -1) if flat else calib, "x": x, "y": logits.argmax(1)}
    for name, a in args.items():
        np.save(tmp_path / f"{name}.npy", a)
    out = tmp_path / "cnn.trine"
    rc = main(["import", model, "-o", str(out), "--calib", str(tmp_path / "c.npy"),
               "--eval", str(tmp_path / "x.npy"), str(tmp_path / "y.npy")])
    text = capsys.readouterr().out
    assert rc == 0
    program = Program.load(out)
    assert program == import_onnx(model, calib)
    assert program.input_shape == (1, 40)
    assert ("input 'x' (1, 40), 5 layers (Conv1d, Conv1d, MaxPool1d, Flatten, Dense), "
            "10 outputs") in text
    assert re.search(r"0\s+Conv1d 5 s2 p1\s+\(8, 19\)\s+yes\s+\d+\s+[0-9.]+%", text)
    assert re.search(r"1\s+Conv1d 3 s2 p1\s+\(8, 10\)\s+yes\s+\d+\s+[0-9.]+%", text)
    assert re.search(r"2\s+MaxPool1d 2\s+\(8, 5\)\n", text)
    assert re.search(r"4\s+Dense\s+\(10,\)\s+no\s+\d+\s+[0-9.]+%", text)
    assert _pct(text, "float model (argmax of its float logits)") == 100.0
    assert _pct(text, "post-training program (the device's reference)") == round(
        100 * program_accuracy(program, x, logits.argmax(1)), 1)


def _conv_model(path):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "K"], ["y"], name="conv1", dilations=[2, 2])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "K")],
    )
    path.write_bytes(helper.make_model(graph).SerializeToString())
    return str(path)


FAILURES = {
    "no --calib": (lambda f, d: [f["model"]],
                   "--calib X.npy is required: the layers' shifts are chosen from the activations"),
    "random bytes": (lambda f, d: [_bytes(d / "r.onnx", bytes(range(256)) * 3), "--calib",
                                   f["calib"]], "r.onnx is not an ONNX model"),
    "a .trine file": (lambda f, d: [_trine(d), "--calib", f["calib"]],
                      "is a trine program (.trine), not an ONNX model"),
    "dilated conv": (lambda f, d: [_conv_model(d / "c.onnx"), "--calib", f["calib"]],
                     "node 'conv1' (Conv): dilations [2, 2] are not supported"),
    "missing model": (lambda f, d: [str(d / "none.onnx"), "--calib", f["calib"]],
                      "none.onnx: No such file or directory"),
    "calib of the wrong width": (
        lambda f, d: [f["model"], "--calib", _npy(d / "w.npy", np.ones((5, 63)))],
        "w.npy has 63 features per sample, the model expects 64"),
    "integer calib": (
        lambda f, d: [f["model"], "--calib", _npy(d / "i.npy", np.ones((5, 64), np.int64))],
        "i.npy must be a float array of raw inputs (N, 64), not dtype int64"),
    "calib is not a .npy": (lambda f, d: [f["model"], "--calib", f["model"]],
                            "--calib: cannot read"),
    "model is a folder": (lambda f, d: [str(d), "--calib", f["calib"]], ": Is a directory"),
    "labels of the wrong count": (lambda f, d: [f["model"], "--calib", f["calib"], "--labels",
                                                "a,b"], "--labels has 2 names but"),
    "empty label": (lambda f, d: [f["model"], "--calib", f["calib"], "--labels", "a,,b"],
                    "--labels must be comma-separated non-empty names"),
    "eval labels out of range": (
        lambda f, d: [f["model"], "--calib", f["calib"], "--eval", f["x"],
                      _npy(d / "y.npy", np.full(450, 10))],
        "must hold class indices in 0..9, not 10"),
    "eval labels of the wrong length": (
        lambda f, d: [f["model"], "--calib", f["calib"], "--eval", f["x"],
                      _npy(d / "y.npy", np.zeros(3, np.int64))],
        "must have shape (450,), one label per input, not (3,)"),
    "eval names that are not labels": (
        lambda f, d: [f["model"], "--calib", f["calib"], "--eval", f["x"],
                      _npy(d / "y.npy", np.array(["cat"] * 450))],
        "holds 'cat', which is not one of the labels 0, 1"),
    "missing eval file": (lambda f, d: [f["model"], "--calib", f["calib"], "--eval",
                                        str(d / "none.npy"), f["y"]], "--eval X: no such file"),
    "per channel with absmean": (lambda f, d: [f["model"], "--calib", f["calib"], "--method",
                                               "absmean", "--per-channel"],
                                 "per_channel is only supported with method 'twn'"),
    "percentile out of range": (lambda f, d: [f["model"], "--calib", f["calib"],
                                              "--percentile", "0"],
                                "percentile must be in (0, 100]"),
    "negative mixtures": (lambda f, d: [f["model"], "--calib", f["calib"], "--mixtures", "-1"],
                          "--mixtures must be an integer >= 0, not -1"),
    "cnn calib of the wrong shape": (
        lambda f, d: [str(FIXTURES / "cnn2d_legacy.onnx"), "--calib",
                      _npy(d / "s.npy", np.ones((5, 1, 8, 7)))],
        "s.npy must have shape (N, 64) or (N, 1, 8, 8) with N >= 1, not (5, 1, 8, 7)"),
    "cnn eval data of the wrong shape": (
        lambda f, d: [str(FIXTURES / "cnn1d_legacy.onnx"), "--calib",
                      _npy(d / "s.npy", np.ones((5, 1, 40))), "--eval", f["x"], f["y"]],
        "xte.npy has 64 features per sample, the model expects 40"),
}


def _bytes(path, data):
    path.write_bytes(data)
    return str(path)


def _npy(path, a):
    np.save(path, a)
    return str(path)


def _trine(d):
    from trine.contract.reference import Layer

    Program([Layer(np.ones((2, 3), np.int8), np.zeros(2, np.int64), 0, False)]).save(d / "p.trine")
    return str(d / "p.trine")


@pytest.mark.parametrize("case", list(FAILURES))
def test_errors_are_one_line_and_write_nothing(files, tmp_path, capsys, case):
    args, message = FAILURES[case]
    fresh, kept = tmp_path / "new.trine", tmp_path / "old.trine"
    kept.write_bytes(b"previous contents")
    argv = args(files, tmp_path)
    for out in (fresh, kept):
        rc = main(["import", *argv, "-o", str(out)])
        err = capsys.readouterr().err
        assert rc == 2
        assert err.startswith("trine: error: ") and err.count("\n") == 1
        assert message in err
    assert not fresh.exists()
    assert kept.read_bytes() == b"previous contents"
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".trine", ".tmp")) == \
        (["old.trine", "p.trine"] if case == "a .trine file" else ["old.trine"])


@pytest.mark.parametrize("module", ["trine.cli", "trine.cli.main"])
def test_errors_through_python_m_are_one_line(files, tmp_path, module):
    # ``python -m trine.cli.main`` runs the CLI as __main__: errors must still be one line.
    out = tmp_path / "x.trine"
    proc = subprocess.run([sys.executable, "-m", module, "import", files["model"], "-o",
                           str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("trine: error: --calib X.npy is required")
    assert proc.stderr.count("\n") == 1 and not out.exists()


def test_help_explains_the_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["import", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for needle in ("MODEL.onnx", "-o OUT.trine", "--calib X.npy", "--eval X.npy Y.npy",
                   "--method {gptq,twn,absmean}", "--per-channel", "--input-scale S",
                   "--percentile P", "--labels A,B,...", "is stripped", "--calib is required",
                   "--distill", "--epochs N", "--seed S", "--force", "No labels are needed",
                   "below 50% agreement nothing is written",
                   "Nothing is written when anything fails", "example:"):
        assert needle in text


def test_distill_prints_the_three_side_by_side(files, tmp_path, capsys):
    out, again = tmp_path / "d.trine", tmp_path / "e.trine"
    argv = ["import", files["model"], "--calib", files["calib"], "--distill", "--epochs", "3",
            "--seed", "4", "--eval", files["x"], files["y"]]
    assert main([*argv, "-o", str(out)]) == 0
    captured = capsys.readouterr()
    text = captured.out
    program = Program.load(out)
    x_test, y_test = files["data"][2:]
    assert re.search(r"distilled from the float model on the calibration inputs and mixtures of "
                     r"them \(1347 inputs; seed 4; the program of epoch [0-3], the one that "
                     r"agrees best with it on held-out mixtures\)", text)
    assert re.search(r"check, post-training: agrees .*\ncheck, distilled: agrees with the "
                     r"float model on [0-9.]+%", text)
    assert _pct(text, "distilled program (the device's reference)") == round(
        100 * program_accuracy(program, x_test, y_test), 1)
    assert program != import_onnx(files["model"], files["data"][0])  # it did train
    assert "distilling 100% epoch 3 agreement" in captured.err  # the progress bar, off a tty
    assert main([*argv, "-o", str(again)]) == 0
    assert again.read_bytes() == out.read_bytes()  # the same seed, the same program
    capsys.readouterr()


def test_mixtures_reach_the_fit(files, tmp_path, capsys):
    out = tmp_path / "m.trine"
    rc = main(["import", files["model"], "-o", str(out), "--calib", files["calib"],
               "--mixtures", "2"])
    assert rc == 0
    assert Program.load(out) == import_onnx(files["model"], files["data"][0], mixtures=2)
    assert "and 2 mixtures of them per input (percentile 100)" in capsys.readouterr().out
    rc = main(["import", str(FIXTURES / "brevitas_mlp.onnx"), "-o", str(tmp_path / "b.trine"),
               "--calib", files["calib"], "--mixtures", "2"])
    assert rc == 2 and not (tmp_path / "b.trine").exists()
    assert "mixtures do not apply to" in capsys.readouterr().err


def test_a_qonnx_model_needs_no_calibration(tmp_path, capsys):
    # Brevitas' quantisers give every scale: the import is exact without --calib; the check
    # is then made on the --eval inputs
    saved = np.load(FIXTURES / "brevitas_mlp.npz")
    np.save(tmp_path / "x.npy", saved["x"])
    np.save(tmp_path / "y.npy", saved["y_int"].argmax(1))
    out = tmp_path / "b.trine"
    rc = main(["import", str(FIXTURES / "brevitas_mlp.onnx"), "-o", str(out), "--eval",
               str(tmp_path / "x.npy"), str(tmp_path / "y.npy")])
    text = capsys.readouterr().out
    assert rc == 0
    program = Program.load(out)
    assert program == read_onnx_network(FIXTURES / "brevitas_mlp.onnx").to_program(None)
    assert "scales from its activation quantisers; input_scale" in text
    assert re.search(r"check, post-training: agrees with the float model on [0-9.]+% of the 256 "
                     r"inputs of --eval \S+\.npy", text)
    assert "check on --eval" not in text
    rc = main(["import", str(FIXTURES / "brevitas_mlp.onnx"), "-o", str(out), "--calib",
               str(tmp_path / "x.npy")])
    assert rc == 0 and Program.load(out) == program
    assert re.search(r"check, post-training: agrees with the float model on 100\.0% of the 256 "
                     r"calibration inputs", capsys.readouterr().out)
    # without any inputs the check is not made, and said so
    assert main(["import", str(FIXTURES / "brevitas_mlp.onnx"), "-o", str(out)]) == 0
    assert "check, post-training: not made (no --calib or --eval inputs" in \
        capsys.readouterr().out
    # distillation learns from calibration inputs
    out.unlink()
    assert main(["import", str(FIXTURES / "brevitas_mlp.onnx"), "-o", str(out),
                 "--distill"]) == 2
    assert "--calib X.npy is required: --distill learns from them" in capsys.readouterr().err
    assert not out.exists()


def test_distillation_options_need_distill(files, tmp_path, capsys):
    rc = main(["import", files["model"], "--calib", files["calib"], "--epochs", "3", "-o",
               str(tmp_path / "x.trine")])
    assert rc == 2
    assert "--epochs and --seed set the distillation: give --distill too" in \
        capsys.readouterr().err
    assert not (tmp_path / "x.trine").exists()
