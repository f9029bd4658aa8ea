"""trine import on hostile files: a cycle, a node that feeds itself, chains deeper than
Python's recursion limit, external data that is huge, truncated or outside the model's folder
(under a memory limit too), class labels that would drive the terminal. Each one is a single
line and exit status 2 with nothing written, or, for the deep chains, a working import. Every
file is generated here."""

import contextlib
import os
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from trine.cli.main import main  # noqa: E402
from trine.host.onnx_graph import MAX_MODEL_BYTES  # noqa: E402
from trine.host.onnx_import import (  # noqa: E402
    OnnxImportError,
    escape,
    printable,
    read_onnx_network,
)

RNG = np.random.default_rng(5)
W = RNG.normal(size=(4, 3)).astype(np.float32)
B = RNG.normal(size=3).astype(np.float32)
X = RNG.normal(size=(20, 4)).astype(np.float32)


def _model(nodes, inits=None, opset=17, ml=False, check=True):
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    tensors = [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()]
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("ai.onnx.ml", 1)]
                                                 if ml else [])
    return helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, tensors),
                             opset_imports=opsets)


@contextlib.contextmanager
def _deadline(seconds):
    """Fail instead of hanging: the old importer spun forever on a cycle."""
    def fire(signum, frame):
        raise AssertionError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _refused(tmp_path, capsys, model_path, message, extra=()):
    """trine import refuses with one line holding ``message``, exit status 2, writes nothing."""
    np.save(tmp_path / "calib.npy", X)
    out = tmp_path / "out.trine"
    with _deadline(30):
        rc = main(["import", str(model_path), "--calib", str(tmp_path / "calib.npy"),
                   "-o", str(out), *extra])
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.err.startswith("trine: error: ") and captured.err.count("\n") == 1
    assert message in captured.err, captured.err
    assert "\x1b" not in captured.err + captured.out
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".trine", ".tmp")]
    return captured.err


def _save(tmp_path, model, name="m.onnx"):
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return path


# --------------------------------------------------------------------------------------------
# Cycles
# --------------------------------------------------------------------------------------------


def test_a_cycle_through_nodes_is_named(tmp_path, capsys):
    nodes = [
        helper.make_node("Gemm", ["x", "W", "B"], ["h"], name="fc", transB=0),
        helper.make_node("Add", ["h", "back"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["r"], name="relu"),
        helper.make_node("Identity", ["r"], ["back"], name="loop"),
        helper.make_node("Identity", ["r"], ["y"], name="out"),
    ]
    path = _save(tmp_path, _model(nodes, {"W": W, "B": B}))
    err = _refused(tmp_path, capsys, path, "the graph has a cycle (node 'add' (Add) -> node "
                   "'relu' (Relu) -> node 'loop' (Identity) -> node 'add' (Add))")
    assert "must not have" in err


def test_a_cycle_that_redefines_a_tensor_is_named(tmp_path, capsys):
    # The chain walk of the old importer went round h -> relu -> loop -> h for ever.
    nodes = [
        helper.make_node("Gemm", ["x", "W", "B"], ["h"], name="fc"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Identity", ["r"], ["h"], name="loop"),
    ]
    path = _save(tmp_path, _model(nodes, {"W": W, "B": B}))
    _refused(tmp_path, capsys, path, "node 'loop' (Identity): its output 'h' is also defined by "
             "node 'fc' (Gemm): every tensor of an ONNX graph has one definition")


@pytest.mark.parametrize("op, inputs", [("Relu", ["h"]), ("Max", ["h", "y"])])
def test_a_node_that_feeds_itself_is_named(tmp_path, capsys, op, inputs):
    out = inputs[-1]
    nodes = [
        helper.make_node("Gemm", ["x", "W", "B"], ["h" if out == "y" else "g"], name="fc"),
        helper.make_node("Identity", ["g"], ["h"], name="id") if out == "h" else None,
        helper.make_node(op, inputs, [out], name="self"),
    ]
    path = _save(tmp_path, _model([n for n in nodes if n], {"W": W, "B": B}))
    _refused(tmp_path, capsys, path, f"node 'self' ({op}): it reads its own output '{out}': the "
             "graph has a cycle")


def test_a_cycle_among_constants_is_refused_too():
    nodes = [
        helper.make_node("Identity", ["w2"], ["w1"], name="a"),
        helper.make_node("Identity", ["w1"], ["w2"], name="b"),
        helper.make_node("Gemm", ["x", "w1"], ["y"], name="fc"),
    ]
    with _deadline(30), pytest.raises(OnnxImportError, match="the graph has a cycle"):
        read_onnx_network(_model(nodes))


def test_a_tensor_with_two_definitions_is_refused():
    nodes = [
        helper.make_node("Gemm", ["x", "W", "B"], ["y"], name="fc"),
        helper.make_node("Identity", ["x"], ["y"], name="again"),
    ]
    with pytest.raises(OnnxImportError, match="node 'again' \\(Identity\\): its output 'y' is "
                       "also defined by node 'fc' \\(Gemm\\)"):
        read_onnx_network(_model(nodes, {"W": W, "B": B}))
    nodes = [helper.make_node("Identity", ["x"], ["W"], name="shadow"),
             helper.make_node("Gemm", ["x", "W", "B"], ["y"], name="fc")]
    with pytest.raises(OnnxImportError, match="also defined by initializer 'W'"):
        read_onnx_network(_model(nodes, {"W": W, "B": B}))


# --------------------------------------------------------------------------------------------
# Chains deeper than the recursion limit
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [300, 3 * sys.getrecursionlimit()])
def test_identity_chains_on_a_weight_and_on_the_activations_import(tmp_path, capsys, depth):
    nodes = [helper.make_node("Identity", [f"w{k}"], [f"w{k + 1}"], name=f"id{k}")
             for k in range(depth)]
    nodes += [helper.make_node("Identity", [f"a{k}"], [f"a{k + 1}"], name=f"act{k}")
              for k in range(depth)]
    nodes += [helper.make_node("Transpose", [f"w{depth}"], ["wt"], name="t", perm=[1, 0]),
              helper.make_node("Gemm", ["x", "wt", "B"], ["a0"], name="fc", transB=1),
              helper.make_node("Identity", [f"a{depth}"], ["y"], name="out")]
    path = _save(tmp_path, _model(nodes, {"w0": W, "B": B}))
    net = read_onnx_network(path)
    assert np.allclose(net.forward(X), X.astype(np.float64) @ W + B, rtol=1e-6)
    np.save(tmp_path / "calib.npy", X)
    assert main(["import", str(path), "--calib", str(tmp_path / "calib.npy"), "-o",
                 str(tmp_path / "m.trine")]) == 0
    assert (tmp_path / "m.trine").exists()
    capsys.readouterr()


# --------------------------------------------------------------------------------------------
# External data: bounded reads with a reason
# --------------------------------------------------------------------------------------------


def _external_model(tmp_path, dims, location="w.bin", offset=0, length=None, data_bytes=None):
    """An MLP whose weight W (dims) is stored in ``location`` next to the model; the data
    file is sparse (``data_bytes`` long, default what the tensor needs) so it costs no disk."""
    t = onnx.TensorProto(name="W", data_type=TensorProto.FLOAT, dims=dims)
    t.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": str(offset)}
    if length is not None:
        entries["length"] = str(length)
    for k, v in entries.items():
        t.external_data.add(key=k, value=v)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="fc")]
    model = _model(nodes)
    model.graph.initializer.append(t)
    need = int(np.prod(dims)) * 4
    if location == "w.bin":
        with open(tmp_path / "w.bin", "wb") as f:
            f.truncate(need + offset if data_bytes is None else data_bytes)
    return _save(tmp_path, model)


def test_a_4gb_external_weight_is_refused_before_it_is_read(tmp_path, capsys):
    path = _external_model(tmp_path, [4, 1 << 28])  # 4 GiB of float32
    assert (tmp_path / "w.bin").stat().st_size == 1 << 32
    _refused(tmp_path, capsys, path, "m.onnx: tensor 'W': the external weight data is 4.0 GiB "
             "or more, more than trine imports (1.0 GiB)")


def _import_under_memory_limit(tmp_path, path, megabytes):
    np.save(tmp_path / "calib.npy", X)

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (megabytes << 20, megabytes << 20))

    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "trine.cli", "import", str(path), "--calib",
         str(tmp_path / "calib.npy"), "-o", str(tmp_path / "out.trine")],
        preexec_fn=limit, capture_output=True, text=True, timeout=120, env=env)


def test_external_data_under_a_memory_limit_is_one_line_with_a_reason(tmp_path):
    # 4 GiB declared: refused without reading, whatever the memory.
    big = _external_model(tmp_path, [4, 1 << 28])
    r = _import_under_memory_limit(tmp_path, big, 600)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "more than trine imports (1.0 GiB)" in r.stderr
    # 800 MB, within the bound but not within the memory: the reason is the memory.
    (tmp_path / "w.bin").unlink()
    mid = _external_model(tmp_path, [4, 50 << 20])
    r = _import_under_memory_limit(tmp_path, mid, 600)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "w.bin: not enough memory to read the data of tensor 'W' (838,860,800 bytes)" \
        in r.stderr
    assert not (tmp_path / "out.trine").exists()


@pytest.mark.parametrize("case, kwargs, message", [
    ("truncated", dict(dims=[4, 3], data_bytes=40),
     "w.bin has 40 bytes; the data of tensor 'W' needs 48 bytes from offset 0: the file is "
     "truncated"),
    ("length that does not match", dict(dims=[4, 3], length=4),
     "tensor 'W': its shape [4, 3] needs 48 bytes, but the file declares 4 from offset 0"),
    ("negative offset", dict(dims=[4, 3], offset=-8),
     "needs 48 bytes, but the file declares 48 from offset -8"),
    ("outside the folder", dict(dims=[4, 3], location="../w.bin"),
     "tensor 'W' is stored at '../w.bin': external data must be a file in the model's own "
     "folder"),
    ("absolute path", dict(dims=[4, 3], location="/etc/passwd"),
     "is stored at '/etc/passwd': external data must be a file in the model's own folder"),
    ("missing", dict(dims=[4, 3], location="none.bin"),
     "tensor 'W': its external data file 'none.bin' is missing"),
])
def test_bad_external_data_is_named(tmp_path, capsys, case, kwargs, message):
    path = _external_model(tmp_path, **kwargs)
    _refused(tmp_path, capsys, path, message)


def test_a_symlink_out_of_the_folder_is_refused(tmp_path, capsys):
    (tmp_path / "outside").mkdir()
    inner = tmp_path / "model"
    inner.mkdir()
    (tmp_path / "outside" / "w.bin").write_bytes(W.tobytes())
    path = _external_model(inner, [4, 3], location="link.bin")
    (inner / "link.bin").symlink_to(tmp_path / "outside" / "w.bin")
    with pytest.raises(OnnxImportError, match="stored at 'link.bin', which leads out of the "
                       "model's folder"):
        read_onnx_network(path)


def test_a_model_file_over_the_bound_is_refused_unread(tmp_path, capsys):
    path = tmp_path / "huge.onnx"
    with open(path, "wb") as f:
        f.truncate(MAX_MODEL_BYTES + 1)
    _refused(tmp_path, capsys, path, "huge.onnx: the model is 1.0 GiB, more than trine imports "
             "(1.0 GiB)")


def test_a_fifo_is_not_read(tmp_path, capsys):
    path = tmp_path / "pipe.onnx"
    os.mkfifo(path)
    _refused(tmp_path, capsys, path, "pipe.onnx: the model is not a regular file")


# --------------------------------------------------------------------------------------------
# What reaches the terminal
# --------------------------------------------------------------------------------------------


def _zipmap_model(labels):
    nodes = [
        helper.make_node("Gemm", ["x", "W", "B"], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], ["p"], name="softmax", axis=1),
        helper.make_node("ZipMap", ["p"], ["y"], name="zipmap", domain="ai.onnx.ml",
                         classlabels_strings=labels),
    ]
    return _model(nodes, {"W": W, "B": B}, ml=True)


@pytest.mark.parametrize("label", ["\x1b[2J\x1b[31mpwned", "a\nb", "evil\u202eexe.txt",
                                   "bell\x07", "zero\u200bwidth", "\x9b31m"])
def test_labels_with_terminal_escapes_are_refused_escaped(tmp_path, capsys, label):
    path = _save(tmp_path, _zipmap_model([label, "b", "c"]))
    err = _refused(tmp_path, capsys, path, "node 'zipmap' (ai.onnx.ml.ZipMap): class label 0, ")
    assert repr(label) in err and label not in err
    assert "trine import --labels A,B,..." in err
    # named by the user instead, the model imports
    assert main(["import", str(path), "--calib", str(tmp_path / "calib.npy"), "-o",
                 str(tmp_path / "ok.trine"), "--labels", "a,b,c"]) == 0
    assert "not read (given instead)" in capsys.readouterr().out


def test_printable_labels_are_kept():
    net = read_onnx_network(_zipmap_model(["chat", "Straße", "犬 dog"]))
    assert net.labels == ("chat", "Straße", "犬 dog")


def test_escape_writes_what_a_terminal_would_act_on():
    assert escape("ok \x1b[2J\u202e\n") == "ok \\x1b[2J\\u202e\\n"
    assert printable("café 1") and not printable("a\tb") and not printable("\u2028")
