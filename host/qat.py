"""Quantisation-aware training (QAT) of ternary MLPs whose forward pass *is* the device's.

Public API
----------
``train_float_mlp(x_train, y_train, *, hidden=(64,), epochs=300, batch_size=64, lr=1e-3,
weight_decay=0.1, input_percentile=99.9, seed=0, x_test=None, y_test=None, progress=None)``
    -> :class:`trine.host.mlp.FloatMLP`: the float baseline of the same shape (see
    :mod:`trine.host.mlp`).

``train_qat(x_train, y_train, *, hidden=(64,), epochs=200, batch_size=64, lr=0.03,
bias_lr=0.1, logit_scale=0.1, act_percentile=99.9, input_percentile=99.9,
threshold="layer", init=None, float_options=None, seed=0, x_test=None, y_test=None,
labels=None, time_budget_s=None, progress=None)``
    -> :class:`trine.host.results.TrainResult` with ``method="qat"`` and an integer
    :class:`trine.host.program.Program` (``input_scale`` set) that the device runs as is.

:data:`DEFAULTS` holds the settings measured to reach the targets per data set:
``train_qat(x, y, **DEFAULTS[name]["qat"])`` and ``train_float_mlp(x, y,
**DEFAULTS[name]["float"])``.

The model
---------
Each layer keeps *latent* float weights ``W`` (M, K) and a latent bias ``beta`` (M,) in units
of its output's least significant bit; its one shift ``s`` is an integer. The forward pass is
the hardware's integer path, computed exactly (:meth:`QATNet.forward`):

* inputs: ``a0 = clip(rint(x / input_scale), -128, 127)``, the rule of
  :meth:`Program.quantize_input`; ``input_scale`` is the ``input_percentile`` of ``|x_train|``
  divided by 127 (digits: ``16 / 127``; MNIST-1D: about ``3.7 / 127``, the rarer larger
  values saturate);
* trits: TWN, ``T = sign(W)`` where ``|W| > 0.7 * mean|W|``, else 0; the mean is taken per
  layer (``threshold="layer"``, the default) or per output row (``"row"``). The TWN scale
  ``alpha`` needs no representation: it only rescales a layer's accumulator, which the
  layer's shift absorbs;
* ``acc = T a`` (exact integers), ``bias = rint(beta * 2**s)`` (int32, accumulator units),
  ``y = clip(relu?((acc + bias + 2**(s-1)) >> s), -128, 127)``:
  :func:`trine.contract.reference.requantize`.

So the network trained and evaluated is the program: :meth:`QATNet.to_program` copies trits,
integer biases and shifts, and ``to_program().run_reference(x)`` equals ``forward(x)`` bit for
bit (tested on random networks and on trained ones).

Gradients (straight-through estimators): the loss is softmax cross-entropy of
``logit_scale * y_L`` (the last layer's int8 outputs, so the argmax the loss shapes is the
device's). Round and shift pass the gradient through as ``2**-s``; clipping passes it only
where it moves the value back into range (zero below 0 after ReLU); the ternariser passes it
to ``W`` unchanged (plain STE); activations receive ``T^T g``. Adam updates ``W`` (``lr``) and
``beta`` (``bias_lr``) on a cosine schedule.

Shifts are chosen from the data: before training, and after every epoch, each layer in turn
takes the smallest ``s`` for which the ``act_percentile`` of its (ReLU'd) accumulator
magnitudes ``|acc + bias|`` fits 127 after the shift. When a shift moves by ``d``, the layer's
``beta`` and the next layer's ``beta`` are rescaled by ``2**-d`` (the next layer's inputs have
halved or doubled), so the integer biases, hence the function, stay as they were.

Initialisation: random (He normal; the default); from a float MLP (``init`` a list of
``(W, b, relu)`` layers on raw inputs, or ``init="float"`` to train one with
:func:`train_float_mlp` first), whose biases are folded like
:func:`trine.host.ternarize.fold_to_program` does: ``bias = b / (alpha * s_in)``; or from a
``Program`` (fine-tuning it; :meth:`QATNet.from_program`).

Ternary activations (``act="ternary"``, FATNN): every weighted layer but the last outputs
trits (:func:`trine.contract.reference.ternarize` with a per-layer threshold) instead of int8,
so that every layer after the first multiplies trits by trits; the first layer still reads the
int8 inputs and the last one gives int8 logits. Those hidden layers have no ReLU: the
ternariser is their nonlinearity, and a ReLU would leave only the levels 0 and +1. The
threshold of each is calibrated with the shifts (before training and after every epoch):
``act_delta * mean|acc + bias|`` as ``t * 2**s`` (see :mod:`trine.host.qat_net`;
``act_delta=0.3`` by default, chosen on the digits MLP's *training* accuracy among 0.05-1.0;
TWN's 0.7, its weights' rule, trained about two points worse there); the
straight-through gradient is that of a quantiser of step ``2 t``. Such a program is written
as ``.trine`` version 3. ``act="ternary-inner"`` keeps the first hidden layer's outputs int8
(after a ReLU) as well: ternarising the features of the raw input is what cost most on
MNIST-1D (see ``bench/fatnn.py``).

Training is reproducible: the same data and settings give the same ``program.to_bytes()``
(``time_budget_s`` aside, which stops on the wall clock).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from trine.contract.spec import ACT_MAX
from trine.host.arch import ArchError, parse_arch, spec_layers
from trine.host.learning import (
    Adam,
    Progress,
    TrainError,
    check_data,
    check_float,
    check_hidden,
    check_int,
    check_progress,
    cosine,
    input_range,
    single_threaded_blas,
)
from trine.host.mlp import FloatMLP, float_accuracy, train_float_mlp
from trine.host.program import Program
from trine.host.qat_net import THRESHOLDS, QATNet
from trine.host.qat_net import quantize as _quantize
from trine.host.qat_net import shift_for as _shift_for
from trine.host.results import Stopwatch, TrainResult, program_accuracy

__all__ = [
    "DEFAULTS",
    "TrainError",
    "QATNet",
    "train_qat",
    "train_float_mlp",
    "FloatMLP",
    "ACTS",
]

#: Activation kinds of train_qat's hidden layers.
ACTS = ("int8", "ternary", "ternary-inner")

#: Settings per data set (trine.host.data names), measured on the default splits (see the README):
#: float ``train_float_mlp(x, y, **DEFAULTS[name]["float"])``, ternary
#: ``train_qat(x, y, **DEFAULTS[name]["qat"])``. The float settings are the best of about ten
#: tried per data set, as are the QAT ones, so the comparison is between two tuned models.
DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "digits": {
        "float": dict(hidden=(64,), epochs=300, batch_size=64, lr=1e-3, weight_decay=0.1),
        "qat": dict(hidden=(64,), epochs=200, batch_size=64, lr=0.03, logit_scale=0.1,
                    threshold="layer"),
        "cnn": dict(arch="c32k3p1,m2,c64k3p1,m2", input_shape=(1, 8, 8), epochs=100,
                    batch_size=64, lr=0.03, logit_scale=0.2, threshold="layer",
                    act_percentile=99.99, weight_decay=0.1),
    },
    "mnist1d": {
        "float": dict(hidden=(256, 128, 128), epochs=100, batch_size=32, lr=1e-2,
                      weight_decay=0.1),
        "qat": dict(hidden=(256, 128, 128), epochs=100, batch_size=64, lr=0.05,
                    logit_scale=0.2, threshold="row"),
        "cnn": dict(arch="c64k5p2,m2,c64k3p1,m2,c64k3p1,m2", input_shape=(1, 40), epochs=150,
                    batch_size=100, lr=0.05, logit_scale=0.2, threshold="layer",
                    act_percentile=99.99, weight_decay=0.1),
    },
}


def _flat(x: Any, name: str, input_shape) -> tuple[Any, tuple[int, ...] | None]:
    """``x`` as ``(N, K)`` for the checks, and the input shape (given, or that of ``x``)."""
    a = np.asarray(x)
    shape = None if input_shape is None else tuple(int(d) for d in input_shape)
    if a.ndim > 2:
        if shape is not None and a.shape[1:] != shape:
            raise TrainError(f"{name} has samples of shape {a.shape[1:]}, input_shape is {shape}")
        return a.reshape(len(a), -1), tuple(a.shape[1:])
    return a, shape


def _from_float(layers, input_scale: float, a0: np.ndarray, percentile: float,
                threshold: str) -> QATNet:
    """Start from a float MLP on raw inputs: fold its biases into accumulator units."""
    net = QATNet([w / max(float(np.abs(w).mean()), 1e-12) for w, _, _ in layers],
                 [np.zeros(len(b)) for _, b, _ in layers], [0] * len(layers),
                 [r for _, _, r in layers], input_scale, threshold)
    s_in, a = input_scale, a0
    for i, (w, b, _) in enumerate(layers):
        t = net.trits(i)
        kept = t != 0
        alpha = float(np.abs(w)[kept].mean()) if kept.any() else 1.0
        unit = alpha * s_in
        acc = (a.astype(np.float32) @ t.T.astype(np.float32)).astype(np.float64)
        b_acc = np.asarray(b, np.float64) / unit
        s = _shift_for(acc + b_acc, net.relus[i], percentile)
        net.shifts[i] = s
        net.betas[i] = b_acc / 2.0**s
        a = net.layer_forward(i, a, t)[1]
        s_in = unit * 2.0**s
    return net


def _check_init(init: Any, dims: list[int]) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    if isinstance(init, str | bytes) or not isinstance(init, Sequence):
        raise TrainError(f"init must be None, 'float' or a list of (W, b, relu), not {init!r:.60}")
    if len(init) != len(dims) - 1:
        raise TrainError(f"init has {len(init)} layers, the shape {dims} needs {len(dims) - 1}")
    out = []
    for i, item in enumerate(init):
        if not isinstance(item, Sequence) or len(item) != 3:
            raise TrainError(f"init layer {i} must be a (W, b, relu) triple")
        w, b, relu = np.asarray(item[0]), np.asarray(item[1]), item[2]
        want = (dims[i + 1], dims[i])
        if w.dtype.kind not in "fiu" or w.shape != want:
            raise TrainError(f"init layer {i} W must be a real array of shape {want}, "
                             f"not {w.dtype} {w.shape}")
        if b.dtype.kind not in "fiu" or b.shape != (dims[i + 1],):
            raise TrainError(f"init layer {i} b must be a real array of shape "
                             f"({dims[i + 1]},), not {b.dtype} {b.shape}")
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
            raise TrainError(f"init layer {i} must be finite (no NaN or inf)")
        if relu is not (i < len(dims) - 2):
            raise TrainError(f"init layer {i} relu must be {i < len(dims) - 2} (hidden layers "
                             f"have ReLU, the output layer none), not {relu!r}")
        out.append((w.astype(np.float64), b.astype(np.float64), bool(relu)))
    return out


def train_qat(
    x_train: Any,
    y_train: Any,
    *,
    hidden: Sequence[int] | int | None = None,
    arch: str | None = None,
    input_shape: Sequence[int] | None = None,
    epochs: int = 200,
    batch_size: int = 64,
    lr: float = 0.03,
    bias_lr: float = 0.1,
    weight_decay: float = 0.0,
    logit_scale: float = 0.1,
    act_percentile: float = 99.9,
    input_percentile: float = 99.9,
    threshold: str = "layer",
    act: str = "int8",
    act_delta: float = 0.3,
    init: Any = None,
    float_options: dict[str, Any] | None = None,
    seed: int = 0,
    x_test: Any = None,
    y_test: Any = None,
    labels: Sequence[str] | None = None,
    time_budget_s: float | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train a ternary MLP whose forward pass is the device's integer path (see the module).

    Parameters
    ----------
    x_train : float array (N, K)
        Raw features; the program quantises them with its ``input_scale``.
    y_train : int array (N,)
        Class indices ``0 .. C-1``; ``C = max(y_train) + 1`` outputs.
    hidden : sequence of int
        Hidden ReLU layer widths of an MLP (default ``(64,)``).
    arch : str, optional
        Instead of ``hidden``, any network as :mod:`trine.host.arch` writes it, e.g.
        ``"c64k5s2p1,c64k3s2p1,c64k3s2p1"`` (a classifier of ``C`` outputs is appended).
    input_shape : tuple of int, optional
        The shape ``arch`` sees each sample as, e.g. ``(1, 40)`` or ``(1, 8, 8)``; ``x_train``
        may be flat ``(N, K)`` or ``(N, *input_shape)``. Default ``(K,)``.
    epochs, batch_size : int
    lr : float
        Peak Adam step for the latent weights (normalised to ``mean|W| = 1`` at the start).
    bias_lr : float
        Peak Adam step for the latent biases, in output LSBs.
    weight_decay : float
        Decoupled (AdamW) decay of the latent weights per step, scaled by the learning rate:
        it pulls small weights to zero trits (a regulariser; 0 by default).
    logit_scale : float
        The loss sees ``logit_scale * y_L``: the int8 outputs as logits (an inverse
        temperature; larger fits the training set harder, too large stalls training).
    act_percentile : float
        In ``(0, 100]``: the accumulator percentile each shift fits into 127.
    input_percentile : float
        In ``(0, 100]``: ``input_scale = percentile(|x_train|) / 127``.
    threshold : {"layer", "row"}
        TWN threshold per layer or per output row.
    act : {"int8", "ternary", "ternary-inner"}
        The hidden layers' outputs: int8 after a ReLU (the default), or trits (ternary
        activations, no ReLU; see the module); ``"ternary-inner"`` keeps the first hidden
        layer's outputs int8 (after a ReLU) too and ternarises the later hidden layers only
        (needs two hidden layers). Both ternary kinds start from random weights.
    act_delta : float
        With ``act="ternary"``: each ternary threshold is ``act_delta * mean|acc + bias|``
        of its layer on the training set, re-chosen after every epoch.
    init : None, "float", list of (W, b, relu), or Program
        Random He initialisation; a float MLP trained first with :func:`train_float_mlp`
        (``float_options`` are its keyword arguments; ``hidden`` and ``seed`` are shared); a
        given float MLP on raw inputs of the same shape; or a program of the same shape to
        fine-tune (e.g. from :func:`trine.host.ternarize.fold_to_program`), whose ``input_scale``
        and shifts are kept at the start (epoch 0 of the history is that program).
    seed : int
        Initialisation and batch order.
    x_test, y_test : arrays, optional
        Evaluated (never trained on) after every epoch.
    labels : list of str, optional
        Output names stored in the program.
    time_budget_s : float, optional
        Stop QAT after this many seconds (the cosine schedule then runs on time, not
        steps; a float model trained first is not counted); the result then depends on the
        machine's speed.
    progress : callable(fraction, message), optional

    Returns
    -------
    TrainResult
        ``method="qat"``; ``history`` per epoch (epoch 0 is the initial program) with
        ``elapsed_s``, ``epoch``, ``train_acc``, ``test_acc``, ``loss``; ``metrics`` with
        ``train_acc``, ``test_acc``, ``seconds``, ``sparsity`` (per layer), ``shifts``,
        ``input_scale``, and ``float_train_acc`` / ``float_test_acc`` / ``float_seconds``
        when a float model was given or trained. Every accuracy is the reference's.

    Raises
    ------
    TrainError
        For malformed or non-finite data, labels that are not integers in range, a bad
        ``init``, and hyper-parameters out of range, naming the argument and the value.
    """
    x_train, shape = _flat(x_train, "x_train", input_shape)
    if x_test is not None:
        x_test = _flat(x_test, "x_test", shape)[0]
    x, y, xt, yt, n_classes = check_data(x_train, y_train, x_test, y_test)
    if arch is not None and hidden is not None:
        raise TrainError("give hidden (an MLP) or arch, not both")
    specs = None
    if arch is not None:
        shape = shape or (x.shape[1],)
        if math.prod(shape) != x.shape[1]:
            raise TrainError(f"input_shape {shape} holds {math.prod(shape)} values, x_train has "
                             f"{x.shape[1]} per sample")
        try:
            specs = parse_arch(arch, shape, n_classes)
        except ArchError as e:
            raise TrainError(f"arch: {e}") from None
        widths = ()
    else:
        if shape is not None and len(shape) != 1:
            raise TrainError("an MLP (hidden) takes flat inputs; give arch for a shaped input")
        widths = check_hidden((64,) if hidden is None else hidden)
    settings: dict[str, Any] = dict(
        hidden=list(widths), epochs=check_int(epochs, "epochs"),
        batch_size=check_int(batch_size, "batch_size"), lr=check_float(lr, "lr"),
        bias_lr=check_float(bias_lr, "bias_lr", strict=False),
        weight_decay=check_float(weight_decay, "weight_decay", strict=False),
        logit_scale=check_float(logit_scale, "logit_scale"),
        act_percentile=check_float(act_percentile, "act_percentile", maximum=100.0),
        input_percentile=check_float(input_percentile, "input_percentile", maximum=100.0),
        threshold=threshold, seed=check_int(seed, "seed", minimum=0),
        time_budget_s=(None if time_budget_s is None
                       else check_float(time_budget_s, "time_budget_s")),
    )
    if specs is not None:
        settings.update(arch=arch, input_shape=list(shape))
        del settings["hidden"]
    if threshold not in THRESHOLDS:
        raise TrainError(f"threshold must be one of {', '.join(THRESHOLDS)}, not {threshold!r}")
    if act not in ACTS:
        raise TrainError(f"act must be one of {', '.join(ACTS)}, not {act!r}")
    if act != "int8":
        settings.update(act=act, act_delta=check_float(act_delta, "act_delta"))
        if init is not None:
            raise TrainError(f"act={act!r} starts from random weights (init=None)")
    progress = check_progress(progress)
    if labels is not None:
        if isinstance(labels, str | bytes) or not isinstance(labels, Sequence) or not all(
                isinstance(label, str) for label in labels):
            raise TrainError(f"labels must be a list of str or None, not {labels!r:.60}")
        if len(labels) != n_classes:
            raise TrainError(f"labels has {len(labels)} entries for {n_classes} classes")
    dims = [x.shape[1], *widths, n_classes]
    float_model: FloatMLP | None = None
    float_layers = None
    if specs is not None and init is not None and not isinstance(init, Program):
        raise TrainError("a network given by arch starts from random weights or a Program")
    if isinstance(init, str) and init == "float":
        options = dict(float_options or {})
        for key in ("hidden", "seed"):
            if key in options:
                raise TrainError(f"float_options must not set {key!r}: train_qat's is used")
        float_model = train_float_mlp(x, y, hidden=widths, seed=settings["seed"], x_test=xt,
                                      y_test=yt, **options)
        float_layers = float_model.layers
        settings["init"] = "float"
        settings["float"] = float_model.settings
    elif isinstance(init, Program):
        if specs is None:
            widths_p = [init.input_width, *(layer.fan_out for layer in init.layers)]
            if widths_p != dims:
                raise TrainError(f"init program has widths {widths_p}, the data and hidden give "
                                 f"{dims}")
        elif QATNet.from_program(init).specs != specs or init.input_shape != shape:
            raise TrainError(f"init program is not the network {arch!r} on {shape} inputs")
        if init.input_scale is None:
            raise TrainError("init program has no input_scale: QAT needs one for float inputs")
        settings["init"] = "program"
    elif init is not None:
        float_layers = _check_init(init, dims)
        settings["init"] = "given float MLP"
    else:
        settings["init"] = "random"

    if float_options is not None and settings["init"] != "float":
        raise TrainError("float_options only applies with init='float'")
    start = init if isinstance(init, Program) else float_layers
    with single_threaded_blas():
        result = _train(x, y, xt, yt, dims, settings, start, labels, progress, specs, shape)
    if float_layers is not None:
        result.metrics["float_train_acc"] = float_accuracy(float_layers, x, y)
        if xt is not None:
            result.metrics["float_test_acc"] = float_accuracy(float_layers, xt, yt)
    if float_model is not None:
        result.metrics["float_seconds"] = float_model.metrics["seconds"]
    return result


def _train(x, y, xt, yt, dims, settings, start, labels, progress, specs=None,
           shape=None) -> TrainResult:
    clock = Stopwatch()
    rng = np.random.default_rng(settings["seed"])
    pct = settings["act_percentile"]
    threshold = settings["threshold"]
    relus = [i < len(dims) - 2 for i in range(len(dims) - 1)]
    act = settings.get("act", "int8")
    delta = settings.get("act_delta", 0.3)
    n_weighted = len(dims) - 1 if specs is None else sum(s.weighted for s in specs)
    # which weighted layers output trits: all but the last, or ("ternary-inner") all but the
    # first and the last
    ternary_out = [act != "int8" and i < n_weighted - 1 and (act == "ternary" or i > 0)
                   for i in range(n_weighted)]
    if act == "ternary-inner" and not any(ternary_out):
        raise TrainError("act='ternary-inner' needs at least two hidden layers (the first "
                         "hidden layer's outputs stay int8)")

    def acts(n: int) -> list[int | None] | None:
        """Ternary outputs (a first threshold, calibrated below) where ternary_out says."""
        return [1 if t else None for t in ternary_out] if act != "int8" else None
    if isinstance(start, Program):
        input_scale = start.input_scale
    else:
        input_scale = input_range(x, settings["input_percentile"]) / ACT_MAX
    a0 = _quantize(x, input_scale)
    if specs is not None:
        a0 = a0.reshape(len(a0), *shape)
    if isinstance(start, Program):
        net = QATNet.from_program(start, threshold)
    elif start is not None:
        net = _from_float(start, input_scale, a0, pct, threshold)
    elif specs is not None:
        geometry = spec_layers(specs, shape)
        fans = [(g.fan_out, g.fan_in) if s.kind == "dense" else (g.out_channels, g.fan_in)
                for s, g in zip(specs, geometry, strict=True) if s.weighted]
        ws = [rng.normal(0.0, 1.0, fan) for fan in fans]
        spec_relus = [s.relu and not t for s, t in zip([s for s in specs if s.weighted],
                                                       ternary_out, strict=True)]
        net = QATNet([w / np.abs(w).mean() for w in ws], [np.zeros(m) for m, _ in fans],
                     [0] * len(ws), spec_relus, input_scale, threshold, specs=specs,
                     input_shape=shape, act_thresholds=acts(len(ws)), act_delta=delta)
        net.calibrate(a0, pct)
    else:
        ws = [rng.normal(0.0, 1.0, (m, k)) for k, m in zip(dims, dims[1:], strict=False)]
        net = QATNet([w / np.abs(w).mean() for w in ws], [np.zeros(m) for m in dims[1:]],
                     [0] * len(ws), [r and not t for r, t in zip(relus, ternary_out,
                                                                 strict=True)], input_scale,
                     threshold, act_thresholds=acts(len(ws)), act_delta=delta)
        net.calibrate(a0, pct)
    n_layers = net.n_layers
    opt = Adam(net.weights + net.betas)
    budget = settings["time_budget_s"]
    epochs, batch_size = settings["epochs"], settings["batch_size"]
    total = epochs * -(-len(x) // batch_size)
    tau = settings["logit_scale"]
    history: list[dict[str, float]] = []

    def evaluate(epoch: int, loss: float) -> None:
        program = net.to_program(labels)
        entry = {"elapsed_s": clock(), "epoch": epoch,
                 "train_acc": program_accuracy(program, x, y), "loss": loss}
        if xt is not None:
            entry["test_acc"] = program_accuracy(program, xt, yt)
        history.append(entry)
        if progress is not None:
            frac = epoch / epochs if budget is None else max(epoch / epochs, clock() / budget)
            progress(frac, _describe(entry))

    evaluate(0, math.nan)
    step = 0
    out_of_time = False
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x))
        losses = []
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            loss, grads = net.loss_and_grads(a0[idx], y[idx], tau)
            losses.append(loss)
            done = step / total
            if budget is not None:
                done = max(done, clock() / budget)
            f = cosine(done)
            opt.step(grads, [settings["lr"] * f] * n_layers + [settings["bias_lr"] * f] * n_layers,
                     [settings["weight_decay"]] * n_layers + [0.0] * n_layers)
            step += 1
            if budget is not None and clock() >= budget:
                out_of_time = True
                break
        net.calibrate(a0, pct, opt)
        evaluate(epoch, float(np.mean(losses)))
        if out_of_time:
            break

    program = net.to_program(labels)
    final = history[-1]
    metrics: dict[str, Any] = {
        "train_acc": final["train_acc"], "seconds": clock(), "epochs_run": final["epoch"],
        "sparsity": net.sparsity(), "shifts": list(net.shifts), "input_scale": input_scale,
    }
    if act != "int8":
        metrics["act_thresholds"] = list(net.act_thresholds)
    if xt is not None:
        metrics["test_acc"] = final["test_acc"]
        metrics["initial_test_acc"] = history[0]["test_acc"]
    return TrainResult(program, "qat", settings, history, metrics)


def _describe(entry: dict[str, float]) -> str:
    text = f"epoch {entry['epoch']} train {entry['train_acc']:.3f}"
    if "test_acc" in entry:
        text += f" test {entry['test_acc']:.3f}"
    return text
