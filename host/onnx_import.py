"""Reading networks from ONNX files and importing them as trine programs.

:func:`read_onnx_network` walks an ONNX graph from its one input to its output and returns the
float network it computes (:class:`OnnxNetwork`): dense layers ``y = relu?(W x + b)``,
1-D and 2-D convolutions, max-pooling and flatten, in the layer format of
:mod:`trine.host.ternarize`. :func:`import_onnx` then ternarises it and folds it into an
integer :class:`~trine.host.program.Program` with
:func:`trine.host.ternarize.fold_to_program`. (:func:`read_onnx_mlp` and :class:`OnnxMLP`
are the same under the names of the MLP-only importer.)

What is accepted, as real exporters write it (``skl2onnx``; ``torch.onnx`` in both modes,
the TorchScript exporter and ``dynamo=True``):

* linear layers: ``MatMul`` with the activations first and a constant ``(K, M)`` weight,
  followed by ``Add`` of a constant bias (either operand order, shape ``(M,)``, ``(1, M)`` or a
  scalar); ``Gemm`` with ``transA = 0``, any ``transB``, ``alpha`` folded into ``W`` and
  ``beta`` into the bias ``C``;
* convolutions: ``Conv`` on ``(batch, C, L)`` or ``(batch, C, H, W)`` with a constant weight
  (the kernel is the weight's), an optional constant bias, any strides, ``group`` 1,
  ``dilations`` 1 and zero padding alike at both ends of each axis (``pads`` or
  ``auto_pad`` ``NOTSET``/``VALID``);
* ``MaxPool`` with ``strides`` = ``kernel_shape``, no padding, dilation 1, ``ceil_mode`` 0,
  whose windows tile the input exactly (ONNX would drop a remainder; trine refuses it);
* ``BatchNormalization`` (inference: constant statistics, ``training_mode`` 0) right after a
  ``Conv`` or a ``Gemm``/``MatMul`` (+ ``Add``): folded into that layer's weights and bias,
  ``W' = s W``, ``b' = s (b - mean) + beta`` per output channel with
  ``s = gamma / sqrt(var + epsilon)``;
* ``Relu`` after a layer (the layer's ``relu`` flag; a ``MaxPool`` or ``Flatten`` between
  them commutes with it);
* ``Flatten`` (axis 1) and ``Reshape`` to ``(batch, features)``, the target shape a constant or
  computed from the input's shape (``Shape``, ``Gather``, ``Unsqueeze``, ``Concat``, ... as
  ``x.view(x.size(0), -1)`` exports); on the network input it only makes the input flat (an
  MLP on images), after a convolution it is a :class:`~trine.contract.reference.Flatten` layer
  (C order, as PyTorch's ``flatten(1)``); ``Identity``, ``Dropout`` (inference) and ``Cast`` to
  a floating-point type pass through;
* weights from initializers or ``Constant`` nodes (through ``Transpose``, ``Reshape``, ``Cast``,
  ``Identity`` and friends when all their inputs are constant);
* a classifier output after the last layer, which is *stripped* (the device outputs the
  logits; their argmax is the class the model predicts): ``Softmax`` / ``LogSoftmax`` /
  ``ArgMax`` over the class axis and what ``skl2onnx`` builds on them (``ZipMap``,
  ``ArrayFeatureExtractor``, ``Cast``, ``Reshape``). A ``Sigmoid`` on a single logit ``z``
  (a binary classifier) becomes two outputs ``(-z/2, +z/2)``: their softmax is exactly
  ``(1 - sigmoid(z), sigmoid(z))``, so argmax gives class 1 exactly when ``sigmoid(z) > 0.5``.
  Class labels found in ``ZipMap`` or the ``classes`` of ``ArrayFeatureExtractor`` become the
  program's labels.

Anything else raises :class:`OnnxImportError` naming the node (its name and op type) and the
problem: other operators (``AveragePool``, ``Sigmoid`` or ``Tanh`` between layers, ...),
grouped or dilated convolutions, asymmetric pads, overlapping or padded pooling, a
``BatchNormalization`` after anything but a layer (or with ``var + epsilon <= 0``), a tensor
that feeds two nodes (a branch), more than one input, weights that are not constants,
``transA``, weights of the wrong rank, non-finite or not floating point, layers whose shapes do
not chain, and files that are not ONNX models.

Calibration is required: :func:`fold_to_program` chooses every layer's shift from the
activations of representative inputs, and there is no data-free rule that does not give a
badly scaled program. Without calibration data :func:`import_onnx` raises, it never guesses.
By default (``method="gptq"``) the calibration inputs also choose the trits: each layer is
fitted to the float model's output on them (:mod:`trine.host.ptq`).

:func:`import_onnx` then checks the program against the float model on the calibration inputs
(:mod:`trine.host.import_check`) and raises :class:`ImportCheckError` if they agree on fewer
than half of them; with ``distill`` it first fine-tunes the program to mimic the float model
(:mod:`trine.host.distill`). No labels are needed for either.
"""

from __future__ import annotations

import math
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trine.contract.reference import Flatten, MaxPool
from trine.host.onnx_graph import (
    Dim,
    Graph,
    OnnxImportError,
    features,
    fmt_shape,
    graph_input,
    load_model,
    read_batch_norm,
    read_bias,
    read_conv,
    read_flatten,
    read_linear,
    read_max_pool,
    read_reshape,
)
from trine.host.program import Program
from trine.host.qonnx_import import (
    Quantization,
    activation_quant,
    apply_activation,
    fold_quantized,
    qonnx_op,
    quantization_notes,
    weight_trits,
)
from trine.host.qonnx_import import refused as qonnx_refused
from trine.host.ternarize import FloatConv, float_step, fold_to_program, run_float

__all__ = ["OnnxImportError", "ImportCheckError", "OnnxNetwork", "OnnxMLP", "read_onnx_network",
           "read_onnx_mlp", "import_onnx", "check_inputs", "printable", "escape"]


# Cast targets that keep activations real-valued (TensorProto.FLOAT, FLOAT16, DOUBLE, BFLOAT16).
_FLOAT_TYPES = {1: "FLOAT", 10: "FLOAT16", 11: "DOUBLE", 16: "BFLOAT16"}
# Unicode categories of characters a terminal acts on or that hide text: control, format
# (bidirectional overrides, zero-width), surrogate, private use, unassigned, line separators.
_UNPRINTABLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
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
_POOLS = {"AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool",
          "MaxRoiPool", "MaxUnpool"}
_SUPPORTED = (
    "trine imports chains of Conv (1-D, 2-D), MaxPool, BatchNormalization, MatMul or Gemm "
    "(+ Add), Relu, Flatten/Reshape, Identity, Dropout, Cast, and a classifier output (Softmax, "
    "LogSoftmax, ArgMax, ZipMap, Sigmoid on one logit) that is stripped"
)
_LAYER_OPS = ("Conv", "MatMul", "Gemm")
# How messages name what a node follows (the walk's state).
_AFTER = {
    "input": "the network input", "dense": "a linear layer", "conv": "a Conv",
    "bn": "a BatchNormalization", "relu": "a Relu", "pool": "a MaxPool", "flatten": "a Flatten",
    "quant": "an activation quantiser",
}


# --------------------------------------------------------------------------------------------
# The walk along the chain
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Weighted:
    """A layer with weights while the walk may still fold a bias, a BatchNormalization or a
    Relu into it: dense ``w`` (M, K), or a convolution's (C_out, C_in, *kernel)."""

    node: int
    w: np.ndarray
    b: np.ndarray
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()
    relu: bool = False
    quantizer: Any = None  # the QONNX quantiser of the weight, if it has one

    @property
    def conv(self) -> bool:
        return self.w.ndim > 2

    def float_layer(self) -> Any:
        if self.conv:
            return FloatConv(self.w, self.b, self.stride, self.padding, self.relu)
        return (self.w, self.b, self.relu)


def _last_weighted(layers: list) -> _Weighted | None:
    return next((x for x in reversed(layers) if isinstance(x, _Weighted)), None)


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
    g: Graph, t: str, shape: tuple | None, layers: list, notes: list[str], read_labels: bool
) -> tuple[list[int], tuple[str, ...] | None]:
    """Check the classifier output after tensor ``t`` (the logits, of ``shape``) and return its
    nodes and labels; a binary Sigmoid output turns the last layer into two outputs."""
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
        if g.op(j) in _LAYER_OPS:
            raise g.fail(
                first, f"{g.op(first)} between layers is not supported (followed by "
                f"{g.desc(j)}): the device's only activation is ReLU; {g.op(first)} may only "
                "end a classifier"
            )
    if _last_weighted(layers) is None:
        raise g.fail(first, f"{g.op(first)} comes before any linear layer (Conv, MatMul or "
                     "Gemm)")
    if shape is None or len(shape) != 2:
        raise g.fail(first, f"its input has shape {fmt_shape(shape)}; a classifier output "
                     "takes (batch, classes)")
    m = shape[1]
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
        last = layers[-1]
        if not isinstance(last, _Weighted) or last.conv:
            raise g.fail(j, "a binary Sigmoid needs a dense layer (MatMul or Gemm) right before "
                         "it, whose one output trine turns into two")
        w, b, relu = last.w, last.b, last.relu
        last.w = np.vstack([-sign * w / 2, sign * w / 2])
        last.b = np.concatenate([-sign * b / 2, sign * b / 2])
        last.relu = False
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
    if labels is not None and not read_labels:
        notes.append(f"class labels of {g.desc(where)} not read (given instead)")
        labels = None
    if labels is not None:
        if len(labels) != m:
            raise g.fail(where, f"it names {len(labels)} classes but the network has {m} outputs")
        for j, label in enumerate(labels):
            if not printable(label):
                raise g.fail(
                    where, f"class label {j}, {label!r}, holds control or invisible characters "
                    "(a terminal would act on them); name the classes yourself (labels=, "
                    "trine import --labels A,B,...)"
                )
        notes.append(f"class labels from {g.desc(where)}")
    return down, labels


def _p_first(g: Graph, p: str, down: list[int]) -> bool:
    """True if a Concat builds (p, 1 - p) rather than skl2onnx's (1 - p, p)."""
    for j in down:
        ins = list(g.nodes[j].input)
        if g.op(j) == "Concat" and p in ins:
            return ins.index(p) == 0 and len(ins) == 2
    return False


def printable(text: str) -> bool:
    """True if ``text`` has no control, format (bidirectional overrides, zero-width), private,
    unassigned or line-separator characters: nothing a terminal would act on or hide."""
    return not any(unicodedata.category(c) in _UNPRINTABLE for c in text)


def escape(text: str) -> str:
    """``text`` with every character :func:`printable` refuses written as a Python escape
    (``\\x1b``, ``\\u202e``), for printing what a file holds."""
    return "".join(c if printable(c) else repr(c)[1:-1] for c in text)


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


def read_onnx_network(path_or_model: Any, *, read_labels: bool = True) -> OnnxNetwork:
    """Read the float network an ONNX model computes.

    Parameters
    ----------
    path_or_model : str, os.PathLike, bytes or onnx.ModelProto
        An ``.onnx`` file (external weight files next to it are loaded), its bytes or a model.
    read_labels : bool
        Take the class labels of the classifier output (false when the caller names the
        classes itself: the model's labels are then neither checked nor kept).

    Returns
    -------
    OnnxNetwork
        The layers in float64 (every BatchNormalization folded into the layer before it), the
        input's name and shape, class labels if the model names them, the stripped
        classifier-output nodes and notes.

    Raises
    ------
    OnnxImportError
        For data that is not an ONNX model and for any graph that is not a single chain of the
        supported operators (see the module docstring), a graph with a cycle, and class labels
        with control characters; the message names the node.
    OSError
        If the file cannot be read.
    """
    model, source = load_model(path_or_model)
    g = Graph(model, source)
    t, shape = graph_input(g)
    input_name = t
    model_shape = None
    if shape is not None and all(isinstance(d, int) for d in shape[1:]):
        model_shape = tuple(shape[1:])
    g.shapes[t] = shape
    layers: list = []  # _Weighted, MaxPool, Flatten
    # What t is: the input, a dense layer's linear output (also after its bias), a Conv's, a
    # BatchNormalization's, or after a Relu, a MaxPool or a Flatten.
    state = "input"
    stripped: list[int] = []
    notes: list[str] = []
    labels = None
    acts: dict[int, Any] = {}  # QONNX activation quantisers by weighted layer (-1: the input)
    while True:
        data = [j for j in g.consumers.get(t, []) if g.op(j) != "Shape"]
        if any(g.op(j) in _TAIL_START for j in data):
            stripped, labels = _strip_tail(g, t, shape, layers, notes, read_labels)
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
        assert i not in g.used, "the graph is acyclic, so the walk visits each node once"
        g.used.add(i)
        if op in ("MatMul", "Gemm"):
            w, b = read_linear(g, i, t, shape)
            k = features(shape)
            if k is not None and w.shape[1] != k:
                raise g.fail(
                    i, f"its weight has {w.shape[1]} inputs but it gets {k} features: the "
                    "shapes do not chain"
                )
            layers.append(_Weighted(i, w, b, quantizer=g.quant_of.get(node.input[1])))
            state = "dense"
            shape = (shape[0] if shape is not None else Dim("N"), w.shape[0])
        elif op == "Conv":
            w, b, stride, padding, shape = read_conv(g, i, t, shape)
            layers.append(_Weighted(i, w, b, stride, padding, quantizer=g.quant_of.get(
                node.input[1])))
            state = "conv"
        elif qonnx_op(g, i) is not None:
            err = qonnx_refused(g, i)
            if err is not None:
                raise err
            weighted = sum(isinstance(x, _Weighted) for x in layers)
            key = weighted - 1 if state != "input" else -1
            if key in acts:
                raise g.fail(i, f"a second activation quantiser after {acts[key].node}: trine "
                             "takes one per layer output")
            acts[key] = activation_quant(g, i)
            if state != "input":
                state = "quant"
        elif op == "MaxPool":
            kernel, shape = read_max_pool(g, i, shape)
            layers.append(MaxPool(kernel, ndim=len(kernel)))
            state = "pool"
        elif op == "BatchNormalization":
            if state not in ("dense", "conv"):
                raise g.fail(i, f"BatchNormalization after {_AFTER[state]} cannot be folded: "
                             "trine folds it into the Conv, Gemm or MatMul right before it")
            last = layers[-1]
            scale, offset = read_batch_norm(g, i, last.w.shape[0])
            last.w = last.w * scale.reshape(-1, *(1,) * (last.w.ndim - 1))
            last.b = last.b * scale + offset
            notes.append(f"folded {g.desc(i)} into {g.desc(last.node)}")
            state = "bn"
        elif op == "Add":
            others = [n for n in node.input if n != t]
            if len(node.input) != 2 or len(others) != 1:
                raise g.fail(i, "it adds the activations to themselves")
            if state != "dense":
                where = ("the network input (preprocessing)" if state == "input"
                         else _AFTER[state])
                raise g.fail(
                    i, f"Add after {where} is not supported: only a bias right after MatMul "
                    "or Gemm"
                )
            last = layers[-1]
            last.b = last.b + read_bias(g, i, others[0], last.w.shape[0])
        elif op == "Relu":
            last = _last_weighted(layers)
            if last is None:
                raise g.fail(i, "Relu on the network input is not supported (the device "
                             "applies ReLU after a layer)")
            # Between the layer and here only pooling and flattening, which commute with it.
            last.relu = True
            state = "relu"
        elif op in ("Flatten", "Reshape"):
            flat = read_flatten(g, i, shape) if op == "Flatten" else read_reshape(g, i, shape)
            if shape is not None and len(shape) > 2 and layers:
                layers.append(Flatten())
                state = "flatten"
            # On the network input a flatten only makes the input flat (an MLP on images).
            shape = flat
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
        elif op in _POOLS:
            raise g.fail(i, f"{op} is not supported: the device pools by maximum only, MaxPool "
                         "with kernel = stride")
        else:
            raise g.fail(i, f"{op} is not supported: {_SUPPORTED}")
        t = node.output[0]
        g.shapes[t] = shape

    if _last_weighted(layers) is None:
        raise OnnxImportError(f"{source}: no linear layer (Conv, MatMul or Gemm) between input "
                              "and output")
    for i in range(len(g.nodes)):
        if i not in g.used and g.op(i) != "Constant":
            raise g.fail(
                i, f"it is not on the chain from input {input_name!r} to the output; trine "
                "imports a single chain of layers"
            )
    if stripped:
        notes.insert(0, "stripped the classifier output after the last layer: "
                     + ", ".join(g.desc(j) for j in stripped))
    weighted = [x for x in layers if isinstance(x, _Weighted)]
    quantization = None
    if acts or any(x.quantizer is not None for x in weighted):
        quantization = _quantization(g, weighted, acts)
        notes.append(f"quantised (QONNX): trits read from {len(weighted)} weight "
                     f"quantiser(s), {len(acts)} activation quantiser(s) give the scales")
        notes.extend(quantization_notes(quantization, [x.relu for x in weighted]))
    first, last = layers[0], layers[-1]
    if isinstance(first, _Weighted) and not first.conv:
        input_shape = (first.w.shape[1],)
    else:
        assert model_shape is not None  # a Conv or MaxPool first needs a fixed input shape
        input_shape = model_shape
    return OnnxNetwork(
        layers=tuple(x.float_layer() if isinstance(x, _Weighted) else x for x in layers),
        input_name=input_name,
        input_shape=input_shape,
        output_shape=(last.w.shape[0],) if isinstance(last, _Weighted) else tuple(shape[1:]),
        labels=labels,
        stripped=tuple(g.desc(j) for j in stripped),
        notes=tuple(notes),
        source=source,
        model_input_shape=model_shape,
        quantization=quantization,
    )


def _quantization(g: Graph, weighted: list[_Weighted], acts: dict[int, Any]) -> Quantization:
    """The quantisers of a QONNX network; every weighted layer must have a weight quantiser."""
    missing = [x for x in weighted if x.quantizer is None]
    if missing:
        have = next((x for x in weighted if x.quantizer is not None), None)
        other = (f"those of {g.desc(have.node)} are" if have is not None
                 else "its activations are")
        raise g.fail(missing[0].node, f"its weights are float but {other} quantised: trine "
                     "imports a QONNX model whose every layer has a ternary weight quantiser")
    return Quantization(tuple(weight_trits(g, x.node, x.w, x.quantizer) for x in weighted),
                        dict(acts))


def read_onnx_mlp(path_or_model: Any) -> OnnxNetwork:
    """:func:`read_onnx_network` under the name of the MLP-only importer (it reads every
    network it reads; an MLP's ``layers`` are ``(W, b, relu)`` triples alone)."""
    return read_onnx_network(path_or_model)


# --------------------------------------------------------------------------------------------
# The imported model and the Program
# --------------------------------------------------------------------------------------------


def check_inputs(x: Any, shape: int | Sequence[int], name: str = "calibration_x",
                 model_shape: Sequence[int] | None = None) -> np.ndarray:
    """Check raw float inputs for a model whose one input has ``shape``; return them float64
    ``(N, *shape)``.

    ``shape`` is an int ``K`` (or ``(K,)``) for a flat input, or ``(C, L)`` / ``(C, H, W)``.
    Accepted are ``(N, prod(shape))`` (reshaped in C order), ``(N, *shape)`` and, if given,
    ``(N, *model_shape)`` (the ONNX input's own shape, for an MLP that flattens it); N >= 1,
    finite. ``name`` is what the messages call the data (a file or a command-line flag).

    Raises
    ------
    OnnxImportError
        For a non-float dtype, a wrong shape or width, or NaN / inf.
    """
    shape = (int(shape),) if isinstance(shape, int | np.integer) else tuple(shape)
    width = math.prod(shape)
    forms = list(dict.fromkeys([(width,), shape] + ([tuple(model_shape)] if model_shape
                                                      else [])))
    text = " or ".join(f"(N, {', '.join(map(str, f))})" for f in forms)
    a = np.asarray(x)
    if a.dtype.kind != "f":
        raise OnnxImportError(
            f"{name} must be a float array of raw inputs {text}, not dtype {a.dtype}"
        )
    if a.ndim < 2 or a.shape[0] < 1 or (a.ndim > 2 and a.shape[1:] not in forms):
        raise OnnxImportError(f"{name} must have shape {text} with N >= 1, not {a.shape}")
    if a.ndim == 2 and a.shape[1] != width:
        raise OnnxImportError(
            f"{name} has {a.shape[1]} features per sample, the model expects {width}"
        )
    bad = ~np.isfinite(a)
    if bad.any():
        pos = tuple(int(v) for v in np.argwhere(bad)[0])
        raise OnnxImportError(f"{name} must be finite: {a[pos]} at {pos}")
    return a.astype(np.float64).reshape(len(a), *shape)


@dataclass(frozen=True, eq=False)
class OnnxNetwork:
    """A float network read from an ONNX model by :func:`read_onnx_network`.

    Members
    -------
    layers : tuple of layers
        In the format of :mod:`trine.host.ternarize`: ``(W (M, K), b (M,), relu)`` for a
        dense layer, :class:`~trine.host.ternarize.FloatConv`,
        :class:`~trine.contract.reference.MaxPool`, :class:`~trine.contract.reference.Flatten`;
        float64, the input of :func:`fold_to_program`.
    input_name : str
        The graph input's name.
    input_shape, output_shape : tuple of int
        One sample's input (``(K,)`` when the network starts with a dense layer, the graph
        input's ``(C, L)`` or ``(C, H, W)`` otherwise) and output.
    labels : tuple of str or None
        Class names from the model's classifier output, one per output.
    stripped : tuple of str
        The classifier-output nodes that were removed (empty if there were none).
    notes : tuple of str
        What the import changed or found, for the user.
    source : str
        The file name (or "model") used in messages.
    model_input_shape : tuple of int or None
        The graph input's own shape per sample, if the file fixes it (an MLP may flatten
        ``(1, 8, 8)`` to its ``input_shape`` ``(64,)``); inputs of this shape are accepted too.
    quantization : trine.host.qonnx_import.Quantization or None
        For a QONNX model: its trits and scales (``layers`` hold the dequantised weights).
    """

    layers: tuple
    input_name: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    labels: tuple[str, ...] | None
    stripped: tuple[str, ...]
    notes: tuple[str, ...]
    source: str
    model_input_shape: tuple[int, ...] | None = field(default=None)
    quantization: Quantization | None = field(default=None)

    @property
    def is_mlp(self) -> bool:
        """Dense layers alone (the input may still have been flattened from an image)."""
        return all(isinstance(x, tuple) for x in self.layers)

    @property
    def input_width(self) -> int:
        return math.prod(self.input_shape)

    @property
    def output_width(self) -> int:
        return math.prod(self.output_shape)

    def check_inputs(self, x: Any, name: str = "x") -> np.ndarray:
        """:func:`check_inputs` for this network: float64 ``(N, *input_shape)``."""
        return check_inputs(x, self.input_shape, name, self.model_input_shape)

    def forward(self, x: Any) -> np.ndarray:
        """The float outputs, float64 ``(N, *output_shape)``, of raw inputs ``x``: flat
        ``(N, K)`` or shaped (see :meth:`check_inputs`).

        Their argmax is the class the ONNX model predicts (the stripped output is monotonic).
        A QONNX model's activation quantisers are applied (fake quantisation, as its own
        executor computes them), its weights are the dequantised ones.
        """
        x = self.check_inputs(x)
        if self.quantization is None:
            return run_float(self.layers, x, self.input_shape)
        acts = self.quantization.activations
        y = apply_activation(x, acts[-1]) if -1 in acts else x
        k = 0
        for layer in self.layers:
            y = float_step(layer, y)
            if not isinstance(layer, MaxPool | Flatten):
                if k in acts:
                    y = apply_activation(y, acts[k])
                k += 1
        return y

    def to_program(
        self,
        calibration_x: Any,
        *,
        method: str = "gptq",
        per_channel: bool = False,
        input_scale: float | None = None,
        percentile: float = 100.0,
        labels: Sequence[str] | None = None,
        calibration_name: str = "calibration_x",
        mixtures: int = 0,
    ) -> Program:
        """Ternarise and fold into a :class:`Program` (see :func:`import_onnx`).

        A QONNX model's trits are its own and its quantisers give the scales
        (:func:`trine.host.qonnx_import.fold_quantized`): ``method``, ``per_channel``,
        ``input_scale`` and ``mixtures`` do not apply, and calibration inputs are needed only
        where a scale is missing."""
        if mixtures and self.quantization is not None:
            raise OnnxImportError(f"mixtures do not apply to {self.source}: a QONNX model's "
                                  "trits and scales are its own, not fitted")
        if calibration_x is None and self.quantization is not None:
            return fold_quantized(list(self.layers), self.quantization, self.input_shape,
                                  None, percentile=percentile,
                                  labels=self._labels(labels))[0]
        if calibration_x is None:
            dims = ", ".join(map(str, self.input_shape))
            raise OnnxImportError(
                f"calibration data is needed to import {self.source}: every layer's shift is "
                "chosen from the activations of representative inputs; give a few hundred "
                f"training inputs, float (N, {dims}) in the units the device will "
                "get (trine import --calib X.npy)"
            )
        x = self.check_inputs(calibration_x, calibration_name)
        labels = self._labels(labels)
        if self.quantization is not None:
            return fold_quantized(list(self.layers), self.quantization, self.input_shape, x,
                                  percentile=percentile, labels=labels)[0]
        return fold_to_program(
            list(self.layers), x, method=method, per_channel=per_channel,
            input_scale=input_scale, labels=labels, percentile=percentile,
            input_shape=self.input_shape, mixtures=mixtures,
        )


    def _labels(self, labels: Sequence[str] | None) -> Sequence[str] | None:
        if labels is None:
            return self.labels
        if isinstance(labels, str) or len(labels) != self.output_width:
            n = "a str" if isinstance(labels, str) else f"{len(labels)} names"
            raise OnnxImportError(
                f"labels has {n}; {self.source} has {self.output_width} outputs"
            )
        return labels


#: :class:`OnnxNetwork` under the name of the MLP-only importer.
OnnxMLP = OnnxNetwork


class ImportCheckError(OnnxImportError):
    """The imported program does not compute what the float model computes (see
    :mod:`trine.host.import_check`)."""


def import_onnx(
    path: Any,
    calibration_x: Any = None,
    *,
    method: str = "gptq",
    per_channel: bool = False,
    input_scale: float | None = None,
    percentile: float = 100.0,
    labels: Sequence[str] | None = None,
    distill: bool | dict[str, Any] = False,
    force: bool = False,
    mixtures: int = 0,
) -> Program:
    """Import an ONNX network (an MLP or a CNN) as an integer :class:`Program`.

    Parameters
    ----------
    path : str, os.PathLike, bytes or onnx.ModelProto
        The model, as for :func:`read_onnx_network`.
    calibration_x : float array (N, K) or (N, *input_shape), or the path of a ``.npy`` file
        Representative raw inputs (training data, not the test set). Required: without it
        :class:`OnnxImportError` says so, as there is no safe data-free choice of the shifts.
    method, per_channel, input_scale, percentile, mixtures
        As in :func:`trine.host.ternarize.fold_to_program` (``gptq`` by default: each layer
        fitted to the float model's output on the calibration inputs; ``mixtures`` per input
        fit it on mixtures of them too).
    labels : list of str, optional
        Output names; by default the class labels found in the model, if any.
    distill : bool or dict
        Fine-tune the program to mimic the float model on the calibration inputs
        (:func:`trine.host.distill.distill`; a dict gives its keyword arguments).
    force : bool
        Return the program even if it fails the check below.

    Returns
    -------
    Program
        With ``input_scale`` and the network's ``input_shape`` set, so raw float inputs, flat
        or shaped, can be given to it.

    Raises
    ------
    OnnxImportError
        For a model that cannot be read (see :func:`read_onnx_network`), missing or malformed
        calibration data (the message names it) or labels of the wrong count.
    ImportCheckError
        Unless ``force``: if the program agrees with the float model on fewer than half of
        the calibration inputs (:func:`trine.host.import_check.check_program`; the message
        names the layer that loses the most).
    trine.host.ternarize.TernarizeError
        For a bad ``method``, ``input_scale`` or ``percentile``.
    """
    net = read_onnx_network(path, read_labels=labels is None)
    name = "calibration_x"
    if isinstance(calibration_x, str | os.PathLike):
        name = os.fspath(calibration_x)
        try:
            calibration_x = np.load(name, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise OnnxImportError(f"cannot read calibration data {name}: {e}") from None
        if not isinstance(calibration_x, np.ndarray):
            raise OnnxImportError(f"calibration data {name} must be a .npy array, not .npz")
    program = net.to_program(
        calibration_x, method=method, per_channel=per_channel, input_scale=input_scale,
        percentile=percentile, labels=labels, calibration_name=name, mixtures=mixtures,
    )
    x = net.check_inputs(calibration_x, name)
    if distill is not False:
        from trine.host.distill import distill as run_distill

        options = distill if isinstance(distill, dict) else {}
        program = run_distill(program, net.forward, x, **options).program
    if not force:
        from trine.host.import_check import check_program

        reason = check_program(net.layers, program, x).refusal()
        if reason is not None:
            raise ImportCheckError(f"{net.source}: {reason}"
                                   + ("" if distill is not False else "; try distill=True")
                                   + ", or force=True to keep it")
    return program
