"""Reading multilayer perceptrons from ONNX files and importing them as trine programs.

:func:`read_onnx_mlp` walks an ONNX graph from its one input to its output and returns the
float MLP it computes, ``y = relu?(W x + b)`` layer by layer (:class:`OnnxMLP`);
:func:`import_onnx` then ternarises it and folds it into an integer
:class:`~trine.host.program.Program`
with :func:`trine.host.ternarize.fold_to_program`.

What is accepted, as real exporters write it (``skl2onnx``, ``torch.onnx`` in both modes):

* linear layers: ``MatMul`` with the activations first and a constant ``(K, M)`` weight,
  followed by ``Add`` of a constant bias (either operand order, shape ``(M,)``, ``(1, M)`` or a
  scalar); ``Gemm`` with ``transA = 0``, any ``transB``, ``alpha`` folded into ``W`` and
  ``beta`` into the bias ``C``;
* ``Relu`` right after a layer (the layer's ``relu`` flag);
* ``Flatten`` (axis 1) and ``Reshape`` to ``(batch, features)``, the target shape a constant or
  computed from the input's shape (``Shape``, ``Gather``, ``Unsqueeze``, ``Concat``, ... as
  ``x.view(x.size(0), -1)`` exports); ``Identity``, ``Dropout`` (inference) and ``Cast`` to a
  floating-point type pass through;
* weights from initializers or ``Constant`` nodes (through ``Transpose``, ``Reshape``, ``Cast``
  and friends when all their inputs are constant);
* a classifier output after the last layer, which is *stripped* (the device outputs the
  logits; their argmax is the class the model predicts): ``Softmax`` / ``LogSoftmax`` /
  ``ArgMax`` over the class axis and what ``skl2onnx`` builds on them (``ZipMap``,
  ``ArrayFeatureExtractor``, ``Cast``, ``Reshape``). A ``Sigmoid`` on a single logit ``z``
  (a binary classifier) becomes two outputs ``(-z/2, +z/2)``: their softmax is exactly
  ``(1 - sigmoid(z), sigmoid(z))``, so argmax gives class 1 exactly when ``sigmoid(z) > 0.5``.
  Class labels found in ``ZipMap`` or the ``classes`` of ``ArrayFeatureExtractor`` become the
  program's labels.

Anything else raises :class:`OnnxImportError` naming the node (its name and op type) and the
problem: other operators (``Conv``, ``Sigmoid`` or ``Tanh`` between layers, ...), a tensor that
feeds two nodes (a branch), more than one input, weights that are not constants, ``transA``,
weights that are not 2-D, non-finite or not floating point, layers whose shapes do not chain,
and files that are not ONNX models.

Calibration is required: :func:`fold_to_program` chooses every layer's shift from the
activations of representative inputs, and there is no data-free rule that does not give a
badly scaled program. Without calibration data :func:`import_onnx` raises, it never guesses.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trine.host.onnx_graph import (
    Dim,
    Graph,
    OnnxImportError,
    features,
    fmt_shape,
    graph_input,
    load_model,
)
from trine.host.program import Program
from trine.host.ternarize import fold_to_program

__all__ = ["OnnxImportError", "OnnxMLP", "read_onnx_mlp", "import_onnx", "check_inputs"]


FloatLayer = tuple[np.ndarray, np.ndarray, bool]

# Cast targets that keep activations real-valued (TensorProto.FLOAT, FLOAT16, DOUBLE, BFLOAT16).
_FLOAT_TYPES = {1: "FLOAT", 10: "FLOAT16", 11: "DOUBLE", 16: "BFLOAT16"}
# Ops that may end the network (class axis only); everything after them is stripped.
_TAIL_START = {"Softmax", "LogSoftmax", "ArgMax", "Sigmoid"}
# What classifier outputs are built from after the start of the tail: formatting only.
_TAIL_OPS = {
    "Softmax", "LogSoftmax", "ArgMax", "Identity", "Cast", "Reshape", "Flatten", "Squeeze",
    "Unsqueeze", "Concat", "Sub", "ai.onnx.ml.ZipMap", "ai.onnx.ml.ArrayFeatureExtractor",
}
_ACTIVATIONS = {
    "Sigmoid", "Tanh", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "HardSigmoid",
    "HardSwish", "Softplus", "Softsign", "Mish", "Clip", "ThresholdedRelu",
}
_NOT_MLP = {
    "Conv", "ConvTranspose", "ConvInteger", "MaxPool", "AveragePool", "GlobalAveragePool",
    "GlobalMaxPool", "BatchNormalization", "LayerNormalization", "LSTM", "GRU", "RNN", "Attention",
}
_SUPPORTED = (
    "trine imports MLPs: MatMul or Gemm (+ Add), Relu, Flatten/Reshape, Identity, Dropout, Cast, "
    "and a classifier output (Softmax, LogSoftmax, ArgMax, ZipMap, Sigmoid on one logit) that "
    "is stripped"
)


# --------------------------------------------------------------------------------------------
# The walk along the chain
# --------------------------------------------------------------------------------------------


def _float_constant(g: Graph, i: int, name: str, role: str) -> np.ndarray:
    v = g.value(name)
    if v is None:
        raise g.fail(
            i, f"{role} {name!r} is not a constant: {g.why_not_constant(name)}; trine needs "
            "weights stored in the model (initializers or Constant nodes)"
        )
    kind = v.dtype.kind
    if not (kind == "f" or v.dtype.name == "bfloat16"):
        raise g.fail(i, f"{role} {name!r} has dtype {v.dtype}, not floating point")
    a = v.astype(np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        pos = tuple(int(p) for p in np.argwhere(bad)[0])
        raise g.fail(i, f"{role} {name!r} is not finite: {a[pos]} at {pos}")
    return a


def _bias(g: Graph, i: int, name: str, m: int, role: str = "bias") -> np.ndarray:
    c = _float_constant(g, i, name, role)
    try:
        return np.broadcast_to(c, (1, m))[0].copy()
    except ValueError:
        raise g.fail(
            i, f"{role} {name!r} has shape {c.shape}, which does not broadcast to one value "
            f"per output ({m},) or (1, {m})"
        ) from None


def _weight_matrix(g: Graph, i: int, name: str) -> np.ndarray:
    w = _float_constant(g, i, name, "weight")
    if w.ndim != 2:
        raise g.fail(i, f"weight {name!r} has shape {w.shape}; trine needs a 2-D weight matrix")
    return w


def _check_2d(g: Graph, i: int, shape: tuple | None) -> None:
    if shape is not None and len(shape) != 2:
        raise g.fail(
            i, f"its input has shape {fmt_shape(shape)}; a layer needs (batch, features): "
            "flatten the input first (Flatten or Reshape)"
        )


def _linear(g: Graph, i: int, t: str, shape: tuple | None) -> tuple[np.ndarray, np.ndarray]:
    """(W (M, K), b (M,)) of a MatMul or Gemm whose activations input is ``t``."""
    node, at = g.nodes[i], g.attrs[i]
    inputs = list(node.input)
    if g.op(i) == "MatMul":
        a, bname = inputs
        if a == bname:
            raise g.fail(i, "it multiplies the activations by themselves")
        if bname == t:
            raise g.fail(
                i, "the activations are its second input (it computes W @ x); trine needs "
                "x @ W, the activations first"
            )
        _check_2d(g, i, shape)
        w = _weight_matrix(g, i, bname).T
        return w, np.zeros(w.shape[0])
    if inputs[0] != t:
        raise g.fail(i, "the activations must be Gemm's first input A, not B or C")
    if at.get("transA", 0):
        raise g.fail(
            i, "transA=1 transposes the activations (batch x features); trine needs transA=0"
        )
    _check_2d(g, i, shape)
    b_mat = _weight_matrix(g, i, inputs[1])
    w = b_mat if at.get("transB", 0) else b_mat.T
    alpha, beta = float(at.get("alpha", 1.0)), float(at.get("beta", 1.0))
    if not (math.isfinite(alpha) and math.isfinite(beta)):
        raise g.fail(i, f"alpha {alpha} and beta {beta} must be finite")
    w = alpha * w
    bias = np.zeros(w.shape[0])
    if len(inputs) > 2 and inputs[2]:
        bias = beta * _bias(g, i, inputs[2], w.shape[0], role="bias C")
    return w, bias


def _reshape(g: Graph, i: int, shape: tuple | None) -> tuple:
    node, at = g.nodes[i], g.attrs[i]
    target = g.value(node.input[1])
    if target is None:
        raise g.fail(
            i, f"its target shape {node.input[1]!r} is not a constant: "
            f"{g.why_not_constant(node.input[1])}"
        )
    target = [d if isinstance(d, Dim) else int(d) for d in np.asarray(target).reshape(-1)]
    batch = shape[0] if shape is not None else Dim("N")
    feats = features(shape)
    where = f"reshaping {fmt_shape(shape)} to {target}"
    if len(target) != 2:
        raise g.fail(i, f"{where} does not give (batch, features)")
    dims = []
    for k, d in enumerate(target):
        if isinstance(d, Dim):
            dims.append(d)
        elif int(d) == 0 and not at.get("allowzero", 0):
            if shape is None:
                raise g.fail(i, f"{where}: 0 copies an input dimension of unknown size")
            dims.append(shape[k])
        else:
            dims.append(int(d))
    d0, d1 = dims
    if d0 is batch or (isinstance(batch, int) and d0 == batch):
        if isinstance(d1, int) and d1 != -1:
            if d1 < 1 or (feats is not None and d1 != feats):
                raise g.fail(i, f"{where} changes the {feats} features per sample to {d1}")
            feats = d1
    elif d0 == -1:
        if not isinstance(d1, int) or d1 < 1:
            raise g.fail(i, f"{where} does not keep the batch first")
        if feats is not None and d1 != feats:
            raise g.fail(
                i, f"{where} changes the batch: each sample has {feats} features, not {d1}"
            )
        feats = d1
    else:
        raise g.fail(i, f"{where} fixes or changes the batch dimension to {d0}")
    return (batch, feats) if feats is not None else (batch, Dim("features"))


def _flatten(g: Graph, i: int, shape: tuple | None) -> tuple:
    axis = g.attrs[i].get("axis", 1)
    if shape is not None and axis < 0:
        axis += len(shape)
    if axis != 1:
        raise g.fail(
            i, f"axis {g.attrs[i].get('axis', 1)} on {fmt_shape(shape)} does not give "
            "(batch, features); trine needs axis 1"
        )
    batch = shape[0] if shape is not None else Dim("N")
    feats = features(shape)
    return (batch, feats if feats is not None else Dim("features"))


def _downstream(g: Graph, t: str) -> list[int]:
    """Every node that depends on tensor ``t``, in graph order."""
    seen: set[int] = set()
    todo = [t]
    while todo:
        for j in g.consumers.get(todo.pop(), []):
            if j not in seen:
                seen.add(j)
                todo.extend(n for n in g.nodes[j].output if n)
    return sorted(seen)


def _strip_tail(
    g: Graph, t: str, layers: list[list], notes: list[str]
) -> tuple[list[int], tuple[str, ...] | None]:
    """Check the classifier output after tensor ``t`` (the logits) and return its nodes and
    labels; a binary Sigmoid output turns the last layer into two outputs."""
    starts = [j for j in g.consumers[t] if g.op(j) in _TAIL_START]
    first = starts[0]
    down = _downstream(g, t)
    direct = set(g.consumers[t])
    foreign = [j for j in down if not (g.op(j) in _TAIL_OPS or (g.op(j) == "Sigmoid"
                                                                and j in direct))]
    for j in foreign:
        if j in direct:
            raise OnnxImportError(
                f"{g.source}: tensor {t!r} feeds {len(direct)} nodes "
                f"({', '.join(g.desc(k) for k in sorted(direct))}); besides a classifier output "
                "trine imports a single chain of layers, not branches"
            )
        if g.op(j) in ("MatMul", "Gemm"):
            raise g.fail(
                first, f"{g.op(first)} between layers is not supported (followed by "
                f"{g.desc(j)}): the device's only activation is ReLU; {g.op(first)} may only "
                "end a classifier"
            )
    if not layers:
        raise g.fail(first, f"{g.op(first)} comes before any linear layer (MatMul or Gemm)")
    m = layers[-1][0].shape[0]
    sigmoids = [j for j in direct if g.op(j) == "Sigmoid"]
    if sigmoids and m != 1:
        raise g.fail(
            sigmoids[0], f"Sigmoid on {m} outputs gives independent (multi-label) "
            "probabilities, which argmax cannot read; only a binary classifier (one logit) "
            "is supported"
        )
    if foreign:
        j = foreign[0]
        raise g.fail(
            j, f"{g.op(j)} after the classifier output {g.desc(first)} is not a post-processing "
            "step trine can strip"
        )
    for j in down:
        op = g.op(j)
        if op in ("Softmax", "LogSoftmax", "ArgMax"):
            default = 0 if op == "ArgMax" else (1 if g.opset < 13 else -1)
            axis = g.attrs[j].get("axis", default)
            if axis not in (1, -1):
                raise g.fail(j, f"axis {axis} is not the class axis (1 or -1)")
    if sigmoids:
        j = sigmoids[0]
        sign = -1.0 if _p_first(g, g.nodes[j].output[0], down) else 1.0
        # With a Relu before the Sigmoid the class is still 1 exactly when the logit is > 0,
        # so the Relu goes: the negated output must not be clamped.
        w, b, relu = layers[-1]
        layers[-1] = [np.vstack([-sign * w / 2, sign * w / 2]),
                      np.concatenate([-sign * b / 2, sign * b / 2]), False]
        notes.append(
            f"binary classifier: {g.desc(j)} on one logit z; the program outputs "
            f"({'-z/2, +z/2' if sign > 0 else '+z/2, -z/2'}), whose argmax is the class the "
            "model predicts (their softmax equals its probabilities)"
            + ("; the Relu before the Sigmoid is dropped, the class is the same" if relu else "")
        )
        m = 2
    labels, where = None, None
    for j in down:
        at = g.attrs[j]
        if g.op(j) == "ai.onnx.ml.ZipMap":
            raw = at.get("classlabels_strings") or at.get("classlabels_int64s")
            labels, where = _label_strings(raw), j
            break
    if labels is None:
        for j in down:
            if g.op(j) == "ai.onnx.ml.ArrayFeatureExtractor":
                classes = g.value(g.nodes[j].input[0])
                if classes is not None and classes.ndim == 1:
                    labels, where = _label_strings(classes), j
                    break
    if labels is not None:
        if len(labels) != m:
            raise g.fail(where, f"it names {len(labels)} classes but the network has {m} outputs")
        notes.append(f"class labels from {g.desc(where)}")
    return down, labels


def _p_first(g: Graph, p: str, down: list[int]) -> bool:
    """True if a Concat builds (p, 1 - p) rather than skl2onnx's (1 - p, p)."""
    for j in down:
        ins = list(g.nodes[j].input)
        if g.op(j) == "Concat" and p in ins:
            return ins.index(p) == 0 and len(ins) == 2
    return False


def _label_strings(raw: Any) -> tuple[str, ...] | None:
    if raw is None or len(raw) == 0:
        return None
    out = []
    for v in list(raw):
        if isinstance(v, bytes):
            out.append(v.decode("utf-8", errors="replace"))
        elif isinstance(v, float | np.floating) and float(v).is_integer():
            out.append(str(int(v)))
        else:
            out.append(str(v.item() if isinstance(v, np.generic) else v))
    return tuple(out)


def read_onnx_mlp(path_or_model: Any) -> OnnxMLP:
    """Read the float MLP an ONNX model computes.

    Parameters
    ----------
    path_or_model : str, os.PathLike, bytes or onnx.ModelProto
        An ``.onnx`` file (external weight files next to it are loaded), its bytes or a model.

    Returns
    -------
    OnnxMLP
        The layers ``(W (M, K), b (M,), relu)`` in float64, the input's name and width, class
        labels if the model names them, the stripped classifier-output nodes and notes.

    Raises
    ------
    OnnxImportError
        For data that is not an ONNX model and for any graph that is not a single chain of the
        supported operators (see the module docstring); the message names the node.
    OSError
        If the file cannot be read.
    """
    model, source = load_model(path_or_model)
    g = Graph(model, source)
    t, shape = graph_input(g)
    input_name = t
    g.shapes[t] = shape
    layers: list[list] = []  # [W, b, relu]
    state = "input"  # what t is: the input, a layer's linear output, or after its Relu
    stripped: list[int] = []
    notes: list[str] = []
    labels = None
    while True:
        data = [j for j in g.consumers.get(t, []) if g.op(j) != "Shape"]
        if any(g.op(j) in _TAIL_START for j in data):
            stripped, labels = _strip_tail(g, t, layers, notes)
            g.used.update(stripped)
            break
        if not data:
            if t not in g.outputs:
                raise OnnxImportError(
                    f"{source}: the chain ends at tensor {t!r}, which is not a graph output"
                )
            break
        if len(data) > 1:
            raise OnnxImportError(
                f"{source}: tensor {t!r} feeds {len(data)} nodes "
                f"({', '.join(g.desc(j) for j in data)}); trine imports a single chain of "
                "layers, not branches"
            )
        i = data[0]
        node, op, at = g.nodes[i], g.op(i), g.attrs[i]
        g.used.add(i)
        if op in ("MatMul", "Gemm"):
            w, b = _linear(g, i, t, shape)
            k = features(shape)
            if k is not None and w.shape[1] != k:
                raise g.fail(
                    i, f"its weight has {w.shape[1]} inputs but it gets {k} features: the "
                    "shapes do not chain"
                )
            layers.append([w, b, False])
            state = "linear"
            shape = (shape[0] if shape is not None else Dim("N"), w.shape[0])
        elif op == "Add":
            others = [n for n in node.input if n != t]
            if len(node.input) != 2 or len(others) != 1:
                raise g.fail(i, "it adds the activations to themselves")
            if state != "linear":
                where = "the network input (preprocessing)" if state == "input" else "a Relu"
                raise g.fail(
                    i, f"Add after {where} is not supported: only a bias right after MatMul "
                    "or Gemm"
                )
            layers[-1][1] = layers[-1][1] + _bias(g, i, others[0], layers[-1][0].shape[0])
        elif op == "Relu":
            if state == "input":
                raise g.fail(i, "Relu on the network input is not supported (the device "
                             "applies ReLU after a layer)")
            layers[-1][2] = True
            state = "relu"
        elif op == "Flatten":
            shape = _flatten(g, i, shape)
        elif op == "Reshape":
            shape = _reshape(g, i, shape)
        elif op == "Identity":
            pass
        elif op == "Cast":
            if at.get("to") not in _FLOAT_TYPES:
                raise g.fail(
                    i, f"Cast to type {at.get('to')} would change the activations' values; "
                    "only casts to floating point are accepted"
                )
        elif op == "Dropout":
            if len(node.output) > 1 and node.output[1] and (
                node.output[1] in g.consumers or node.output[1] in g.outputs
            ):
                raise g.fail(i, "its mask output is used; only inference Dropout is accepted")
            if len(node.input) > 2 and node.input[2]:
                mode = g.value(node.input[2])
                if mode is None or bool(np.asarray(mode).reshape(-1)[0]):
                    raise g.fail(i, "training_mode is not a constant false")
        elif op in _ACTIVATIONS:
            raise g.fail(i, f"activation {op} is not supported: the device's only activation "
                         "is ReLU")
        elif op in _NOT_MLP:
            raise g.fail(i, f"{op} is not part of an MLP: {_SUPPORTED}")
        else:
            raise g.fail(i, f"{op} is not supported: {_SUPPORTED}")
        t = node.output[0]
        g.shapes[t] = shape

    if not layers:
        raise OnnxImportError(f"{source}: no linear layer (MatMul or Gemm) between input and "
                              "output")
    for i in range(len(g.nodes)):
        if i not in g.used and g.op(i) != "Constant":
            raise g.fail(
                i, f"it is not on the chain from input {input_name!r} to the output; trine "
                "imports a single chain of layers"
            )
    if stripped:
        notes.insert(0, "stripped the classifier output after the last layer: "
                     + ", ".join(g.desc(j) for j in stripped))
    return OnnxMLP(
        layers=tuple((w, b, bool(r)) for w, b, r in layers),
        input_name=input_name,
        labels=labels,
        stripped=tuple(g.desc(j) for j in stripped),
        notes=tuple(notes),
        source=source,
    )


# --------------------------------------------------------------------------------------------
# The imported model and the Program
# --------------------------------------------------------------------------------------------


def check_inputs(x: Any, width: int, name: str = "calibration_x") -> np.ndarray:
    """Check raw float inputs ``(N, width)``, N >= 1, finite; return them as float64.

    ``name`` is what the messages call the data (a file or a command-line flag).

    Raises
    ------
    OnnxImportError
        For a non-float dtype, a wrong shape or width, or NaN / inf.
    """
    a = np.asarray(x)
    if a.dtype.kind != "f":
        raise OnnxImportError(
            f"{name} must be a float array of raw inputs (N, {width}), not dtype {a.dtype}"
        )
    if a.ndim != 2 or a.shape[0] < 1:
        raise OnnxImportError(f"{name} must have shape (N, {width}) with N >= 1, not {a.shape}")
    if a.shape[1] != width:
        raise OnnxImportError(
            f"{name} has {a.shape[1]} features per sample, the model expects {width}"
        )
    bad = ~np.isfinite(a)
    if bad.any():
        r, c = (int(v) for v in np.argwhere(bad)[0])
        raise OnnxImportError(f"{name} must be finite: {a[r, c]} at ({r}, {c})")
    return a.astype(np.float64)


@dataclass(frozen=True, eq=False)
class OnnxMLP:
    """A float MLP read from an ONNX model by :func:`read_onnx_mlp`.

    Members
    -------
    layers : tuple of (W (M, K) float64, b (M,) float64, relu bool)
        ``y = relu?(W x + b)`` layer by layer; the input of :func:`fold_to_program`.
    input_name : str
        The graph input's name.
    labels : tuple of str or None
        Class names from the model's classifier output, one per output.
    stripped : tuple of str
        The classifier-output nodes that were removed (empty if there were none).
    notes : tuple of str
        What the import changed or found, for the user.
    source : str
        The file name (or "model") used in messages.
    """

    layers: tuple[FloatLayer, ...]
    input_name: str
    labels: tuple[str, ...] | None
    stripped: tuple[str, ...]
    notes: tuple[str, ...]
    source: str

    @property
    def input_width(self) -> int:
        return self.layers[0][0].shape[1]

    @property
    def output_width(self) -> int:
        return self.layers[-1][0].shape[0]

    def forward(self, x: Any) -> np.ndarray:
        """The float logits, float64 ``(N, M)``, of raw inputs ``x`` ``(N, K)``.

        Their argmax is the class the ONNX model predicts (the stripped output is monotonic).
        """
        y = check_inputs(x, self.input_width, "x")
        for w, b, relu in self.layers:
            y = y @ w.T + b
            if relu:
                y = np.maximum(y, 0.0)
        return y

    def to_program(
        self,
        calibration_x: Any,
        *,
        method: str = "twn",
        per_channel: bool = False,
        input_scale: float | None = None,
        percentile: float = 100.0,
        labels: Sequence[str] | None = None,
        calibration_name: str = "calibration_x",
    ) -> Program:
        """Ternarise and fold into a :class:`Program` (see :func:`import_onnx`)."""
        if calibration_x is None:
            raise OnnxImportError(
                f"calibration data is needed to import {self.source}: every layer's shift is "
                "chosen from the activations of representative inputs; give a few hundred "
                f"training inputs, float (N, {self.input_width}) in the units the device will "
                "get (trine import --calib X.npy)"
            )
        x = check_inputs(calibration_x, self.input_width, calibration_name)
        if labels is None:
            labels = self.labels
        elif isinstance(labels, str) or len(labels) != self.output_width:
            n = "a str" if isinstance(labels, str) else f"{len(labels)} names"
            raise OnnxImportError(
                f"labels has {n}; {self.source} has {self.output_width} outputs"
            )
        return fold_to_program(
            list(self.layers), x, method=method, per_channel=per_channel,
            input_scale=input_scale, labels=labels, percentile=percentile,
        )


def import_onnx(
    path: Any,
    calibration_x: Any = None,
    *,
    method: str = "twn",
    per_channel: bool = False,
    input_scale: float | None = None,
    percentile: float = 100.0,
    labels: Sequence[str] | None = None,
) -> Program:
    """Import an ONNX MLP as an integer :class:`Program`.

    Parameters
    ----------
    path : str, os.PathLike, bytes or onnx.ModelProto
        The model, as for :func:`read_onnx_mlp`.
    calibration_x : float array (N, K), or the path of a ``.npy`` file holding one
        Representative raw inputs (training data, not the test set). Required: without it
        :class:`OnnxImportError` says so, as there is no safe data-free choice of the shifts.
    method, per_channel, input_scale, percentile
        As in :func:`trine.host.ternarize.fold_to_program`.
    labels : list of str, optional
        Output names; by default the class labels found in the model, if any.

    Returns
    -------
    Program
        With ``input_scale`` set, so raw float inputs can be given to it.

    Raises
    ------
    OnnxImportError
        For a model that cannot be read (see :func:`read_onnx_mlp`), missing or malformed
        calibration data (the message names it) or labels of the wrong count.
    trine.host.ternarize.TernarizeError
        For a bad ``method``, ``input_scale`` or ``percentile``.
    """
    mlp = read_onnx_mlp(path)
    name = "calibration_x"
    if isinstance(calibration_x, str | os.PathLike):
        name = os.fspath(calibration_x)
        try:
            calibration_x = np.load(name, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise OnnxImportError(f"cannot read calibration data {name}: {e}") from None
        if not isinstance(calibration_x, np.ndarray):
            raise OnnxImportError(f"calibration data {name} must be a .npy array, not .npz")
    return mlp.to_program(
        calibration_x, method=method, per_channel=per_channel, input_scale=input_scale,
        percentile=percentile, labels=labels, calibration_name=name,
    )
