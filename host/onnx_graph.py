"""The ONNX side of :mod:`trine.host.onnx_import`: loading a model, a graph view of it, and
what each node trine accepts means.

:class:`Graph` indexes a model's nodes by the tensors they produce and consume, names nodes in
messages, and evaluates *constant* tensors: initializers, ``Constant`` nodes and the few
operators exporters apply to them (``Transpose`` of a weight; ``Shape``, ``Gather``,
``Unsqueeze``, ``Squeeze``, ``Concat``, ``Slice``, ``Reshape`` of a target shape, as
``x.view(x.size(0), -1)`` exports). Dimensions the file leaves open (the batch) are
:class:`Dim` objects, so a target shape computed from the input's shape can still be
recognised as "(batch, features)".

The ``read_*`` functions read one node each (``Gemm``/``MatMul``, ``Conv``, ``MaxPool``,
``BatchNormalization``, ``Flatten``, ``Reshape``): its weights as float64 and its geometry,
checked against the shape it receives, or an :class:`OnnxImportError` naming the node.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from trine.contract.errors import TrineError
from trine.host.program import MAGIC

__all__ = ["OnnxImportError", "MAX_MODEL_BYTES", "Dim", "Graph", "fmt_shape", "features",
           "load_model",
           "graph_input", "float_constant", "read_bias", "read_linear", "read_conv",
           "read_max_pool", "read_batch_norm", "read_reshape", "read_flatten"]


class OnnxImportError(TrineError, ValueError):
    """An ONNX file or graph that is not a network trine can import, or bad import settings."""


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
                if not name:
                    continue
                if name in node.input:
                    raise self.fail(i, f"it reads its own output {name!r}: the graph has a "
                                    "cycle, which an ONNX graph must not have")
                if name in self.producer or name in self.inits:
                    first = (f"initializer {name!r}" if name in self.inits
                             else self.desc(self.producer[name]))
                    raise self.fail(i, f"its output {name!r} is also defined by {first}: every "
                                    "tensor of an ONNX graph has one definition")
                self.producer[name] = i
            for name in dict.fromkeys(node.input):
                if name:
                    self.consumers.setdefault(name, []).append(i)
        self._check_acyclic()
        self.values: dict[str, np.ndarray] = {}
        # constants made by a QONNX quantiser (through pass-through ops): its parameters
        self.quant_of: dict[str, Any] = {}
        self.shapes: dict[str, tuple | None] = {}  # tensors of the chain, as walked
        self.used: set[int] = set()
        self.opset = max(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=1
        )

    def _inputs_of(self, i: int) -> list[int]:
        """The nodes whose outputs node ``i`` reads (itself included, if it does)."""
        return [self.producer[n] for n in dict.fromkeys(self.nodes[i].input)
                if n in self.producer]

    def _check_acyclic(self) -> None:
        """Refuse a graph whose nodes feed each other in a cycle (Kahn's algorithm), naming
        the nodes of one cycle: a walk along such a graph would never end."""
        waiting = [len(self._inputs_of(i)) for i in range(len(self.nodes))]
        ready = [i for i, w in enumerate(waiting) if w == 0]
        done = 0
        while ready:
            i = ready.pop()
            done += 1
            for name in self.nodes[i].output:
                for j in self.consumers.get(name, []) if name else []:
                    waiting[j] -= 1
                    if waiting[j] == 0:
                        ready.append(j)
        if done == len(self.nodes):
            return
        stuck = {i for i, w in enumerate(waiting) if w > 0}
        start = min(stuck)
        # Walk back along inputs that are still waiting until a node repeats: that is a cycle.
        path, seen, i = [], {}, start
        while i not in seen:
            seen[i] = len(path)
            path.append(i)
            i = next(j for j in self._inputs_of(i) if j in stuck)
        cycle = path[seen[i]:][::-1]
        first = cycle.index(min(cycle))  # start at the node that comes first in the file
        cycle = cycle[first:] + cycle[:first]
        text = " -> ".join(self.desc(j) for j in [*cycle, cycle[0]])
        raise OnnxImportError(f"{self.source}: the graph has a cycle ({text}), which an ONNX "
                              "graph must not have")

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
        """The tensor's value if it is a constant (folded from constants), else None.

        Folding walks the producers iteratively, so a chain of any length (hundreds of
        ``Identity`` nodes on a weight) needs no recursion; the graph is acyclic (checked
        when it was indexed), so the walk ends.
        """
        if not name:
            return None
        if name in self.values:
            return self.values[name]
        absent: set[str] = set()  # not constant, as far as this call is concerned
        todo: list[tuple[str, bool]] = [(name, False)]
        while todo:
            t, expanded = todo.pop()
            if t in self.values or t in absent:
                continue
            if t in self.inits:
                self.values[t] = self._initializer(t)
                continue
            if t not in self.producer:
                absent.add(t)
                continue
            i = self.producer[t]
            needs = [n for n in self._constant_inputs(i) if n not in self.values]
            if not expanded and needs:
                todo.append((t, True))
                todo.extend((n, False) for n in needs if n not in absent)
                continue
            v = self._fold(i, t)
            if v is None:
                absent.add(t)
            else:
                self.values[t] = v
        return self.values.get(name)

    def _initializer(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        try:
            return numpy_helper.to_array(self.inits[name])
        except MemoryError:
            raise OnnxImportError(f"{self.source}: initializer {name!r} does not fit in "
                                  "memory") from None
        except Exception as e:  # e.g. external data that was not loaded
            raise OnnxImportError(
                f"{self.source}: initializer {name!r} cannot be read: {e}"
            ) from None

    def _constant_inputs(self, i: int) -> list[str]:
        """The inputs node ``i`` needs as constants to be folded itself."""
        op = self.op(i)
        if op not in FOLDABLE and self._quantizer(i) is None:
            return []
        return [n for n in self.nodes[i].input if n]

    def _quantizer(self, i: int) -> str | None:
        """``Quant``, ``IntQuant`` or ``BipolarQuant`` if node ``i`` is that QONNX quantiser."""
        node = self.nodes[i]
        from trine.host.qonnx_import import QONNX_DOMAINS

        if node.domain in QONNX_DOMAINS and node.op_type in ("Quant", "IntQuant",
                                                             "BipolarQuant"):
            return node.op_type
        return None

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
        if self._quantizer(i) is not None:
            from trine.host.qonnx_import import quantize_constant, read_quant

            x = self.values.get(node.input[0]) if node.input else None
            if x is None:
                return None
            params = read_quant(self, i)
            v = quantize_constant(np.asarray(x), params)[1]
            self.quant_of[name] = params
            self.used.add(i)
            return v
        if op not in FOLDABLE:
            return None
        args = [self.values.get(n) if n else None for n in node.input]  # folded by value()
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
            if op in PASS_THROUGH and node.input[0] in self.quant_of:
                self.quant_of[name] = self.quant_of[node.input[0]]
        return v

    def why_not_constant(self, name: str) -> str:
        if name in self.producer:
            from trine.host.qonnx_import import refused

            err = refused(self, self.producer[name])
            if err is not None:  # a quantiser trine never reads, on a weight
                return f"it is computed by {str(err).removeprefix(self.source + ': ')}"
            return f"it is computed by {self.desc(self.producer[name])}"
        if any(g.name == name for g in self.graph.input):
            return "it is a graph input (weights given at run time)"
        return "nothing in the graph defines it"


# Ops that move or relabel a constant's values and keep them what they were (its quantiser).
PASS_THROUGH = {"Identity", "Cast", "Transpose", "Reshape", "Unsqueeze", "Squeeze"}
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
        weight files that are missing, truncated, outside the model's folder or that do not
        match their tensors, and a model or weights larger than :data:`MAX_MODEL_BYTES` or
        than the memory left (the reason is said; nothing larger is ever read).
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
        data = _read_bounded(source, "the model")
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
    except MemoryError:
        raise OnnxImportError(f"{source}: not enough memory to decode the model "
                              f"({_size_text(len(data))})") from None
    except Exception as e:  # protobuf raises DecodeError, RuntimeWarning-like and others
        raise OnnxImportError(
            f"{source} is not an ONNX model (or is truncated): {type(e).__name__}: {e}"
        ) from None
    _check_complete(model, source)
    if isinstance(path_or_model, str | os.PathLike):
        _load_external_data(model, source)
    return model, source


#: The most bytes an import reads: the model file, and all its external weight data together.
#: Far more than any trine device holds (its weights are ternary, at most a few hundred
#: thousand), so only a hostile or unrelated file reaches it, and an import's memory stays
#: bounded by it.
MAX_MODEL_BYTES = 1 << 30


def _size_text(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n:,} bytes"


def _read_bounded(path: str, what: str, offset: int = 0, length: int | None = None,
                  limit: int = MAX_MODEL_BYTES) -> bytes:
    """``length`` bytes of the regular file ``path`` from ``offset`` (by default all of it),
    refused with a reason when it holds fewer or more than ``limit``; never more is read."""
    import errno
    import stat

    st = os.stat(path)  # OSError (missing, unreadable) is the caller's to report
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    if not stat.S_ISREG(st.st_mode):  # a FIFO or a device would block or never end
        raise OnnxImportError(f"{path}: {what} is not a regular file")
    if length is None:
        length = st.st_size - offset
    if length > limit:
        raise OnnxImportError(
            f"{path}: {what} is {_size_text(length)}, more than trine imports "
            f"({_size_text(limit)})"
        )
    if offset + length > st.st_size:
        raise OnnxImportError(
            f"{path} has {st.st_size:,} bytes; {what} needs {length:,} bytes from offset "
            f"{offset:,}: the file is truncated"
        )
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
    except MemoryError:
        raise OnnxImportError(f"{path}: not enough memory to read {what} "
                              f"({_size_text(length)})") from None
    if len(data) != length:
        raise OnnxImportError(f"{path}: {what} ended after {len(data):,} of {length:,} bytes "
                              "(the file changed while it was read)")
    return data


def _external_tensors(model: Any) -> list:
    """The tensors of ``model`` stored in external files: initializers and Constant values."""
    import onnx

    out = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    for node in model.graph.node:
        for a in node.attribute:
            if a.HasField("t") and a.t.data_location == onnx.TensorProto.EXTERNAL:
                out.append(a.t)
    return out


def _tensor_bytes(tensor: Any) -> int | None:
    """The size of a tensor's raw data from its dims and type, None for types without one."""
    import onnx

    count = math.prod(tensor.dims)
    four_bit = {getattr(onnx.TensorProto, n, None) for n in ("INT4", "UINT4", "FLOAT4E2M1")}
    if tensor.data_type in four_bit:
        return (count + 1) // 2
    if tensor.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return None
    try:
        from onnx import helper

        return count * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, ValueError, TypeError):
        return None


def _load_external_data(model: Any, source: str) -> None:
    """Read the tensors stored in files next to ``source`` into ``model``, each one checked
    first: a relative location inside the model's folder, a regular file, a declared length
    that matches the tensor's shape and type, all of it present, and at most
    :data:`MAX_MODEL_BYTES` in all (so a hostile file cannot exhaust the memory)."""
    import onnx

    tensors = _external_tensors(model)
    if not tensors:
        return
    base = os.path.dirname(os.path.abspath(source))
    total = 0
    for t in tensors:
        info = {e.key: e.value for e in t.external_data}
        where = f"{source}: tensor {t.name!r}"
        location = info.get("location", "")
        if not location or os.path.isabs(location) or os.path.normpath(location).startswith(
                os.pardir) or "\0" in location:
            raise OnnxImportError(f"{where} is stored at {location!r}: external data must be a "
                                  "file in the model's own folder")
        path = os.path.join(base, location)
        real_base = os.path.realpath(base)
        if os.path.commonpath([real_base, os.path.realpath(path)]) != real_base:
            raise OnnxImportError(f"{where} is stored at {location!r}, which leads out of the "
                                  "model's folder")
        size = _tensor_bytes(t)
        if size is None:
            raise OnnxImportError(f"{where} has data type {t.data_type}, which trine does not "
                                  "read from external files")
        try:
            offset = int(info.get("offset", 0))
            length = int(info.get("length", size))
        except ValueError:
            raise OnnxImportError(f"{where} has a non-integer offset or length "
                                  f"({info.get('offset')!r}, {info.get('length')!r})") from None
        if offset < 0 or length != size:
            raise OnnxImportError(
                f"{where}: its shape {list(t.dims)} needs {size:,} bytes, but the file "
                f"declares {length:,} from offset {offset:,}"
            )
        total += size
        if total > MAX_MODEL_BYTES:
            raise OnnxImportError(
                f"{where}: the external weight data is {_size_text(total)} or more, more than "
                f"trine imports ({_size_text(MAX_MODEL_BYTES)})"
            )
        try:
            t.raw_data = _read_bounded(path, f"the data of tensor {t.name!r}", offset, size)
        except FileNotFoundError:
            raise OnnxImportError(f"{where}: its external data file {location!r} is missing") \
                from None
        except OSError as e:
            raise OnnxImportError(f"{where}: cannot read its external data file {location!r}: "
                                  f"{e.strerror or e}") from None
        del t.external_data[:]
        t.data_location = onnx.TensorProto.DEFAULT


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


# --------------------------------------------------------------------------------------------
# Nodes as layers
# --------------------------------------------------------------------------------------------


def float_constant(g: Graph, i: int, name: str, role: str) -> np.ndarray:
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


def read_bias(g: Graph, i: int, name: str, m: int, role: str = "bias") -> np.ndarray:
    c = float_constant(g, i, name, role)
    try:
        return np.broadcast_to(c, (1, m))[0].copy()
    except ValueError:
        raise g.fail(
            i, f"{role} {name!r} has shape {c.shape}, which does not broadcast to one value "
            f"per output ({m},) or (1, {m})"
        ) from None


def _weight_matrix(g: Graph, i: int, name: str) -> np.ndarray:
    w = float_constant(g, i, name, "weight")
    if w.ndim != 2:
        raise g.fail(i, f"weight {name!r} has shape {w.shape}; trine needs a 2-D weight matrix")
    return w


def _check_2d(g: Graph, i: int, shape: tuple | None) -> None:
    if shape is not None and len(shape) != 2:
        raise g.fail(
            i, f"its input has shape {fmt_shape(shape)}; a layer needs (batch, features): "
            "flatten the input first (Flatten or Reshape)"
        )


def read_linear(g: Graph, i: int, t: str, shape: tuple | None) -> tuple[np.ndarray, np.ndarray]:
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
        bias = beta * read_bias(g, i, inputs[2], w.shape[0], role="bias C")
    return w, bias


def read_reshape(g: Graph, i: int, shape: tuple | None) -> tuple:
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


def read_flatten(g: Graph, i: int, shape: tuple | None) -> tuple:
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


def _ints(g: Graph, i: int, name: str, default: list[int], count: int) -> tuple[int, ...]:
    value = tuple(int(v) for v in g.attrs[i].get(name, default))
    if len(value) != count:
        raise g.fail(i, f"{name} {list(value)} has {len(value)} values, not {count}")
    return value


def _auto_pad(g: Graph, i: int) -> str:
    mode = g.attrs[i].get("auto_pad", b"NOTSET")
    mode = mode.decode("ascii", errors="replace") if isinstance(mode, bytes) else str(mode)
    if mode not in ("NOTSET", "VALID"):
        raise g.fail(i, f"auto_pad {mode} is not supported: trine needs explicit symmetric pads "
                     "(auto_pad NOTSET) or none (VALID)")
    return mode


def _spatial_input(g: Graph, i: int, shape: tuple | None, ndim: int) -> tuple[int, ...]:
    """The (C, *spatial) sizes of a conv or pool's input, which must all be fixed."""
    form = "(batch, C, L)" if ndim == 1 else "(batch, C, H, W)"
    if shape is None:
        raise g.fail(i, f"the shape of its input is not known (the graph input declares none); "
                     f"a {ndim}-D {g.op(i)} needs {form}")
    if len(shape) != ndim + 2 or not all(isinstance(d, int) for d in shape[1:]):
        raise g.fail(i, f"its input has shape {fmt_shape(shape)}; a {ndim}-D {g.op(i)} needs "
                     f"{form} with every size but the batch fixed")
    return tuple(shape[1:])


def _unused_outputs(g: Graph, i: int, what: str) -> None:
    for name in g.nodes[i].output[1:]:
        if name and (name in g.consumers or name in g.outputs):
            raise g.fail(i, f"its output {name!r} ({what}) is used; trine computes the first "
                         "output only")


def read_conv(g: Graph, i: int, t: str, shape: tuple | None) -> tuple[
        np.ndarray, np.ndarray, tuple[int, ...], tuple[int, ...], tuple]:
    """(weights (C_out, C_in, *kernel), bias (C_out,), stride, padding, output shape) of a
    ``Conv`` whose input X is ``t``, of ``shape`` (batch first)."""
    node = g.nodes[i]
    inputs = list(node.input)
    if len(inputs) < 2 or not inputs[1]:
        raise g.fail(i, "it has no weight W")
    if inputs[0] != t or t in inputs[1:]:
        raise g.fail(i, "the activations must be Conv's first input X, and only that")
    w = float_constant(g, i, inputs[1], "weight")
    if w.ndim not in (3, 4) or 0 in w.shape:
        raise g.fail(i, f"weight {inputs[1]!r} has shape {w.shape}; trine takes 1-D convolutions "
                     "(C_out, C_in, k) and 2-D ones (C_out, C_in, kh, kw)")
    ndim = w.ndim - 2
    kernel = tuple(w.shape[2:])
    at = g.attrs[i]
    group = int(at.get("group", 1))
    if group != 1:
        raise g.fail(i, f"group {group} is not supported (a grouped or depthwise convolution): "
                     "trine needs group 1")
    dilations = _ints(g, i, "dilations", [1] * ndim, ndim)
    if any(d != 1 for d in dilations):
        raise g.fail(i, f"dilations {list(dilations)} are not supported: trine needs dilation 1")
    if "kernel_shape" in at and tuple(at["kernel_shape"]) != kernel:
        raise g.fail(i, f"kernel_shape {list(at['kernel_shape'])} does not match its weight's "
                     f"kernel {list(kernel)}")
    stride = _ints(g, i, "strides", [1] * ndim, ndim)
    if any(s < 1 for s in stride):
        raise g.fail(i, f"strides {list(stride)} must be >= 1")
    pads = (0,) * 2 * ndim if _auto_pad(g, i) == "VALID" else _ints(g, i, "pads", [0] * 2 * ndim,
                                                                     2 * ndim)
    begin, end = pads[:ndim], pads[ndim:]
    if begin != end or any(p < 0 for p in pads):
        raise g.fail(i, f"pads {list(pads)} are not supported: trine pads both ends of an axis "
                     f"alike (begin {list(begin)}, end {list(end)})")
    c, *spatial = _spatial_input(g, i, shape, ndim)
    if c != w.shape[1]:
        raise g.fail(i, f"its weight takes {w.shape[1]} input channels but it gets {c}: the "
                     "shapes do not chain")
    bias = np.zeros(w.shape[0])
    if len(inputs) > 2 and inputs[2]:
        b = float_constant(g, i, inputs[2], "bias")
        if b.shape != (w.shape[0],):
            raise g.fail(i, f"bias {inputs[2]!r} has shape {b.shape}, not ({w.shape[0]},)")
        bias = b
    out = []
    for n, k, s, p in zip(spatial, kernel, stride, begin, strict=True):
        if k > n + 2 * p:
            raise g.fail(i, f"its kernel {k} is larger than its padded input {n + 2 * p}")
        out.append((n + 2 * p - k) // s + 1)
    return w, bias, stride, begin, (shape[0], w.shape[0], *out)


def read_max_pool(g: Graph, i: int, shape: tuple | None) -> tuple[tuple[int, ...], tuple]:
    """(kernel, output shape) of a ``MaxPool`` with kernel = stride that tiles its input."""
    at = g.attrs[i]
    if "kernel_shape" not in at:
        raise g.fail(i, "it has no kernel_shape")
    kernel = tuple(int(k) for k in at["kernel_shape"])
    ndim = len(kernel)
    if ndim not in (1, 2):
        raise g.fail(i, f"kernel_shape {list(kernel)}: trine pools 1 or 2 spatial axes")
    _unused_outputs(g, i, "the indices of the maxima")
    stride = _ints(g, i, "strides", [1] * ndim, ndim)
    if stride != kernel:
        raise g.fail(i, f"strides {list(stride)} differ from kernel_shape {list(kernel)}: "
                     "trine pools non-overlapping windows (stride = kernel)")
    pads = _ints(g, i, "pads", [0] * 2 * ndim, 2 * ndim)
    if _auto_pad(g, i) == "NOTSET" and any(pads):
        raise g.fail(i, f"pads {list(pads)} are not supported: trine pools without padding")
    dilations = _ints(g, i, "dilations", [1] * ndim, ndim)
    if any(d != 1 for d in dilations):
        raise g.fail(i, f"dilations {list(dilations)} are not supported: trine needs dilation 1")
    if at.get("ceil_mode", 0):
        raise g.fail(i, "ceil_mode 1 is not supported: trine's windows tile the input exactly")
    c, *spatial = _spatial_input(g, i, shape, ndim)
    for n, k in zip(spatial, kernel, strict=True):
        if n % k:
            raise g.fail(i, f"its window {k} does not divide its input size {n} (ONNX would drop "
                         "the rest): trine's windows must tile the input")
    return kernel, (shape[0], c, *(n // k for n, k in zip(spatial, kernel, strict=True)))


def read_batch_norm(g: Graph, i: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, shift)`` (C,) of an inference ``BatchNormalization``: it computes
    ``scale * x + shift`` per channel, ``scale = gamma / sqrt(var + epsilon)`` and
    ``shift = beta - mean * scale``."""
    node, at = g.nodes[i], g.attrs[i]
    if len(node.input) != 5 or not all(node.input[1:]):
        raise g.fail(i, f"it has {len(node.input)} inputs; BatchNormalization needs X, scale, "
                     "B, input_mean and input_var")
    if at.get("training_mode", 0):
        raise g.fail(i, "training_mode 1 normalises with the batch's statistics; trine imports "
                     "inference BatchNormalization (training_mode 0)")
    if not at.get("spatial", 1):
        raise g.fail(i, "spatial 0 (statistics per position, opset < 9) is not supported")
    _unused_outputs(g, i, "training statistics")
    gamma, beta, mean, var = (
        float_constant(g, i, name, role)
        for name, role in zip(node.input[1:], ("scale", "B", "input_mean", "input_var"),
                              strict=True)
    )
    for name, v in zip(node.input[1:], (gamma, beta, mean, var), strict=True):
        if v.shape != (channels,):
            raise g.fail(i, f"{name!r} has shape {v.shape}; its input has {channels} channels")
    eps = float(at.get("epsilon", 1e-5))
    denominator = var + eps
    bad = ~(denominator > 0)
    if bad.any():
        c = int(np.flatnonzero(bad)[0])
        raise g.fail(i, f"input_var + epsilon must be > 0 in every channel, not {denominator[c]:g} "
                     f"in channel {c}")
    scale = gamma / np.sqrt(denominator)
    if not np.all(np.isfinite(scale)):
        c = int(np.flatnonzero(~np.isfinite(scale))[0])
        raise g.fail(i, f"its scale gamma / sqrt(var + epsilon) is not finite in channel {c}")
    return scale, beta - mean * scale
