"""The ONNX side of :mod:`trine.host.onnx_import`: loading a model, and a graph view of it.

:class:`Graph` indexes a model's nodes by the tensors they produce and consume, names nodes in
messages, and evaluates *constant* tensors: initializers, ``Constant`` nodes and the few
operators exporters apply to them (``Transpose`` of a weight; ``Shape``, ``Gather``,
``Unsqueeze``, ``Concat``, ``Slice`` of a target shape, as ``x.view(x.size(0), -1)`` exports).
Dimensions the file leaves open (the batch) are :class:`Dim` objects, so a target shape computed
from the input's shape can still be recognised as "(batch, features)".
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from trine.contract.errors import TrineError
from trine.host.program import MAGIC

__all__ = ["OnnxImportError", "Dim", "Graph", "fmt_shape", "features", "load_model",
           "graph_input"]


class OnnxImportError(TrineError, ValueError):
    """An ONNX file or graph that is not an MLP trine can import, or bad import settings."""



class Dim:
    """A dimension whose size the file leaves open (the batch, usually); compared by identity."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name or "?"


def fmt_shape(shape: tuple | None) -> str:
    if shape is None:
        return "(unknown shape)"
    return "(" + ", ".join(str(d) for d in shape) + ")"


def features(shape: tuple | None) -> int | None:
    """Features per sample of a (batch, ...) shape, None when not all fixed."""
    if shape is None or not all(isinstance(d, int) for d in shape[1:]):
        return None
    return math.prod(shape[1:])


# --------------------------------------------------------------------------------------------
# The model as a graph: producers, consumers, constants
# --------------------------------------------------------------------------------------------


class Graph:
    """An index of a model's graph for one walk along it.

    Parameters
    ----------
    model : onnx.ModelProto
    source : str
        How messages name the model (its file name).

    Members
    -------
    nodes, attrs : the nodes and their attributes as Python values, in graph order
    producer : tensor name -> index of the node that outputs it
    consumers : tensor name -> indices of the nodes that read it (each node once)
    shapes : tensor name -> shape, filled in by the walk for the tensors of the chain, so
        ``Shape`` of one of them can be evaluated
    used : indices of the nodes the walk (or a folded constant) accounted for
    opset : the model's version of the default ONNX domain
    """

    def __init__(self, model: Any, source: str) -> None:
        from onnx import helper

        self.source = source
        self.graph = model.graph
        self.nodes = list(model.graph.node)
        self.attrs = [
            {a.name: helper.get_attribute_value(a) for a in n.attribute} for n in self.nodes
        ]
        self.inits = {t.name: t for t in model.graph.initializer}
        self.outputs = {o.name for o in model.graph.output}
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        for i, node in enumerate(self.nodes):
            for name in node.output:
                if name:
                    self.producer[name] = i
            for name in dict.fromkeys(node.input):
                if name:
                    self.consumers.setdefault(name, []).append(i)
        self.values: dict[str, np.ndarray] = {}
        self.shapes: dict[str, tuple | None] = {}  # tensors of the chain, as walked
        self.used: set[int] = set()
        self._folding: set[str] = set()
        self.opset = max(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=1
        )

    def op(self, i: int) -> str:
        node = self.nodes[i]
        return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"

    def desc(self, i: int) -> str:
        node = self.nodes[i]
        name = repr(node.name) if node.name else f"#{i}"
        return f"node {name} ({self.op(i)})"

    def fail(self, i: int, problem: str) -> OnnxImportError:
        """The error for node ``i``: ``"<source>: node 'name' (Op): <problem>"``."""
        return OnnxImportError(f"{self.source}: {self.desc(i)}: {problem}")

    def value(self, name: str) -> np.ndarray | None:
        """The tensor's value if it is a constant (folded from constants), else None."""
        if name in self.values:
            return self.values[name]
        if not name or name in self._folding:
            return None
        if name in self.inits:
            from onnx import numpy_helper

            try:
                v = numpy_helper.to_array(self.inits[name])
            except Exception as e:  # e.g. external data that was not loaded
                raise OnnxImportError(
                    f"{self.source}: initializer {name!r} cannot be read: {e}"
                ) from None
        elif name in self.producer:
            self._folding.add(name)
            try:
                v = self._fold(self.producer[name], name)
            finally:
                self._folding.discard(name)
        else:
            return None
        if v is not None:
            self.values[name] = v
        return v

    def _fold(self, i: int, name: str) -> np.ndarray | None:
        from onnx import helper, numpy_helper

        node, op, at = self.nodes[i], self.op(i), self.attrs[i]
        if op == "Constant":
            if "value" in at:
                v = numpy_helper.to_array(at["value"])
            elif "value_float" in at or "value_int" in at:
                v = np.asarray(at.get("value_float", at.get("value_int")))
            elif "value_floats" in at or "value_ints" in at:
                v = np.asarray(at.get("value_floats", at.get("value_ints")))
            else:
                raise self.fail(i, f"Constant with attributes {sorted(at)} is not supported")
            self.used.add(i)
            return v
        if op == "Shape":
            shape = self.shapes.get(node.input[0])
            if shape is None:
                return None
            dims = list(shape)[at.get("start", 0) : at.get("end", len(shape))]
            fixed = all(isinstance(d, int) for d in dims)
            self.used.add(i)
            return np.array(dims, dtype=np.int64 if fixed else object)
        if op not in FOLDABLE:
            return None
        args = [self.value(n) if n else None for n in node.input]
        needed = FOLDABLE[op]
        if any(a is None for a in args[:needed]):
            return None
        try:
            v = fold_op(op, args, at, helper)
            if v is not None and not isinstance(v, np.ndarray):
                v = np.array(v, dtype=object)  # np.take of an object vector gives the element
        except (ValueError, IndexError, TypeError) as e:
            raise self.fail(i, f"cannot evaluate it on its constant inputs: {e}") from None
        if v is not None:
            self.used.add(i)
        return v

    def why_not_constant(self, name: str) -> str:
        if name in self.producer:
            return f"it is computed by {self.desc(self.producer[name])}"
        if any(g.name == name for g in self.graph.input):
            return "it is a graph input (weights given at run time)"
        return "nothing in the graph defines it"


# Foldable ops and how many leading inputs must be constant.
FOLDABLE = {
    "Identity": 1, "Cast": 1, "Gather": 2, "Unsqueeze": 1, "Squeeze": 1, "Concat": 0,
    "Slice": 3, "Transpose": 1, "Reshape": 2,
}


def _axes(args: list, at: dict) -> list[int] | None:
    if "axes" in at:
        return list(at["axes"])
    if len(args) > 1 and args[1] is not None:
        return [int(a) for a in np.asarray(args[1]).reshape(-1)]
    return None


def fold_op(op: str, args: list, at: dict, helper: Any) -> np.ndarray | None:
    """Evaluate one foldable op on constant inputs ``args`` (object arrays may hold
    :class:`Dim`); None when this use of the op is not supported."""
    v = args[0]
    if op == "Identity":
        return v
    if op == "Cast":
        if v.dtype == object:
            return v
        return v.astype(helper.tensor_dtype_to_np_dtype(at["to"]))
    if op == "Gather":
        return np.take(v, np.asarray(args[1]).astype(np.int64), axis=at.get("axis", 0))
    if op == "Unsqueeze":
        axes = _axes(args, at)
        rank = v.ndim + len(axes)
        return np.expand_dims(v, tuple(a % rank for a in axes))
    if op == "Squeeze":
        axes = _axes(args, at)
        return np.squeeze(v) if axes is None else np.squeeze(v, tuple(a % v.ndim for a in axes))
    if op == "Concat":
        if any(a is None for a in args):
            return None
        return np.concatenate([np.atleast_1d(a) for a in args], axis=at.get("axis", 0))
    if op == "Slice":  # of a 1-D shape vector, as x.shape[a:b] exports
        axes = args[3] if len(args) > 3 else None
        if v.ndim != 1 or (axes is not None and [int(a) for a in np.ravel(axes)] != [0]):
            return None
        step = int(np.ravel(args[4])[0]) if len(args) > 4 and args[4] is not None else 1
        start, end = (int(np.ravel(a)[0]) for a in args[1:3])
        return v[start:end:step]  # Python clamps out-of-range bounds as ONNX does
    if op == "Transpose":
        return np.transpose(v, at.get("perm"))
    if op == "Reshape":
        target = [int(t) for t in np.asarray(args[1]).reshape(-1)]
        if not at.get("allowzero", 0):
            target = [v.shape[k] if t == 0 else t for k, t in enumerate(target)]
        return v.reshape(target)
    return None


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_model(path_or_model: Any) -> tuple[Any, str]:
    """Load and sanity-check a model; return it and the name messages use for it.

    Parameters
    ----------
    path_or_model : str, os.PathLike, bytes or onnx.ModelProto
        For a path, tensors stored in external files next to it are loaded too.

    Raises
    ------
    OnnxImportError
        For anything that is not a complete ONNX model: a ``.trine`` program, an empty file,
        bytes protobuf cannot decode, a message without a graph, nodes of a domain the model
        declares no opset for (what a file cut short after its graph looks like), external
        weight files that are missing.
    OSError
        If the file cannot be read.
    """
    import onnx

    if isinstance(path_or_model, onnx.ModelProto):
        model, source = path_or_model, "model"
        _check_complete(model, source)
        return model, source
    if isinstance(path_or_model, bytes | bytearray | memoryview):
        data, source = bytes(path_or_model), "model bytes"
    elif isinstance(path_or_model, str | os.PathLike):
        source = os.fspath(path_or_model)
        with open(source, "rb") as f:
            data = f.read()
    else:
        raise OnnxImportError(
            "expected a path, bytes or an onnx.ModelProto, not "
            f"{type(path_or_model).__name__}"
        )
    if data.startswith(MAGIC):
        raise OnnxImportError(f"{source} is a trine program (.trine), not an ONNX model")
    if not data:
        raise OnnxImportError(f"{source} is empty, not an ONNX model")
    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:  # protobuf raises DecodeError, RuntimeWarning-like and others
        raise OnnxImportError(
            f"{source} is not an ONNX model (or is truncated): {type(e).__name__}: {e}"
        ) from None
    _check_complete(model, source)
    if isinstance(path_or_model, str | os.PathLike) and any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer
    ):
        from onnx.external_data_helper import load_external_data_for_model

        try:
            load_external_data_for_model(model, os.path.dirname(os.path.abspath(source)))
        except OSError:
            raise
        except Exception as e:  # onnx's checker refuses missing files and paths outside
            raise OnnxImportError(f"{source}: its external weight data cannot be loaded: {e}") \
                from None
    return model, source


def _check_complete(model: Any, source: str) -> None:
    # Protobuf is lenient: a few random bytes can decode as an almost empty message.
    if model.ir_version < 1 or not model.HasField("graph") or not model.graph.node:
        raise OnnxImportError(
            f"{source} is not an ONNX model (or is truncated): "
            + ("no ir_version" if model.ir_version < 1 else "no graph")
        )
    # A model cut short can still decode; the opsets come last, so check they cover the nodes.
    domains = {"" if o.domain == "ai.onnx" else o.domain for o in model.opset_import}
    for node in model.graph.node:
        domain = "" if node.domain == "ai.onnx" else node.domain
        if domain not in domains:
            raise OnnxImportError(
                f"{source} is not a complete ONNX model (or is truncated): node "
                f"{node.name!r} ({node.op_type}) uses domain {domain or 'ai.onnx'!r}, for which "
                "the model declares no opset"
            )


def graph_input(g: Graph) -> tuple[str, tuple | None]:
    """The one real input (initializers listed as inputs are weights): its name and shape,
    :class:`Dim` for open dimensions, None if the file gives no shape."""
    inputs = [v for v in g.graph.input if v.name not in g.inits]
    if len(inputs) != 1:
        names = ", ".join(repr(v.name) for v in inputs) or "none"
        raise OnnxImportError(
            f"{g.source}: the graph has {len(inputs)} inputs ({names}); trine imports models "
            "with exactly one input"
        )
    vi = inputs[0]
    kind = vi.type.WhichOneof("value")
    if kind != "tensor_type":
        raise OnnxImportError(f"{g.source}: input {vi.name!r} is a {kind}, not a tensor")
    tt = vi.type.tensor_type
    if tt.elem_type in (0, 8, 9):  # undefined, string, bool
        raise OnnxImportError(f"{g.source}: input {vi.name!r} does not hold numbers")
    if not tt.HasField("shape"):
        return vi.name, None
    shape = tuple(
        d.dim_value if d.HasField("dim_value") else Dim(d.dim_param) for d in tt.shape.dim
    )
    if len(shape) < 2:
        raise OnnxImportError(
            f"{g.source}: input {vi.name!r} has shape {fmt_shape(shape)}: trine needs a batch "
            "dimension first, (batch, features) or (batch, ...) with a Flatten"
        )
    return vi.name, shape
