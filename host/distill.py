"""Distillation without labels: fine-tune an imported ternary program to mimic its float model.

:func:`distill` starts from a program (typically what post-training ternarisation made of a
float model, :func:`trine.host.ternarize.fold_to_program`) and trains it with the project's
QAT (:class:`trine.host.qat_net.QATNet`: the device's integer path forward, straight-through
estimators backward) to reproduce the *float model's* predictions. No labels are needed: the
float model (the teacher) labels every input, so the calibration inputs suffice, and new
inputs can be made from them.

Per epoch:

* the inputs are the calibration inputs and ``augment`` times as many new ones, each a random
  mixture ``lam x_i + (1 - lam) x_j`` of two calibration inputs (``lam`` uniform in [0, 1],
  mixup; Zhang et al. 2018) plus Gaussian noise of ``noise`` times each feature's standard
  deviation: the teacher's answers off the calibration points are what a student trained on a
  few hundred inputs lacks;
* the teacher's logits ``z`` give soft targets ``q = softmax(z / T)`` (Hinton et al. 2015,
  temperature ``T``);
* the student's int8 outputs ``y`` are read as logits ``tau y / T``, ``tau`` the scale that
  maps the starting program's outputs onto the teacher's logits (least squares), so both
  sides speak in the same units;
* each minibatch's loss is the cross-entropy of the student against a class *drawn* from
  ``q`` for every input: in expectation its gradient is that of the cross-entropy against
  ``q`` itself (``softmax(tau y / T) - q``), so this is soft-label distillation through the
  QAT's own hard-label step, :meth:`QATNet.loss_and_grads`;
* Adam on a cosine schedule, then every shift re-chosen from the calibration inputs
  (:meth:`QATNet.calibrate`), as :func:`trine.host.qat.train_qat` does, with a high
  percentile (99.99): a shift that flips between two values from epoch to epoch costs more
  than the few outputs it saturates;
* the program returned is that of the epoch (the start included) that agrees best with the
  teacher on held-out mixtures made the same way, never trained on: a QAT step can flip many
  trits at once, and an epoch can end worse than it began.

The same program, teacher, inputs and settings give the same program, byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trine.host.learning import (
    Adam,
    Progress,
    TrainError,
    check_float,
    check_int,
    check_progress,
    cosine,
    single_threaded_blas,
)
from trine.host.program import Program
from trine.host.ptq import mixtures
from trine.host.qat_net import QATNet

__all__ = ["DISTILL_DEFAULTS", "DistillResult", "distill", "soft_targets", "logit_scale"]

#: The settings :func:`distill` uses unless told otherwise (measured on the skl2onnx digits MLP
#: and the MNIST-1D CNN of ``python -m bench import_accuracy``).
DISTILL_DEFAULTS: dict[str, Any] = dict(
    epochs=60, batch_size=32, lr=0.01, bias_lr=0.1, temperature=1.0, augment=12, noise=0.3,
    act_percentile=99.99, recalibrate=True, select=8,
)


@dataclass(eq=False)
class DistillResult:
    """What :func:`distill` returns.

    Members
    -------
    program : Program
        The distilled program (labels and input shape of the starting one).
    history : list of dict
        Per epoch (0 is the start): ``epoch``, ``agreement`` (top-1 agreement with the teacher
        on the calibration inputs), ``held_out_agreement`` (on the held-out mixtures),
        ``loss`` (NaN at epoch 0).
    settings : dict
        Every setting used, ``seed`` included, the ``logit_scale`` ``tau / T`` and the
        ``selected_epoch``.
    """

    program: Program
    history: list[dict[str, float]]
    settings: dict[str, Any] = field(default_factory=dict)


def soft_targets(logits: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(logits / temperature)`` per row, float64 (N, M)."""
    z = np.asarray(logits, np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def logit_scale(outputs: np.ndarray, logits: np.ndarray) -> float:
    """The ``tau`` with ``tau * outputs`` closest to ``logits`` in the least-squares sense, each
    row centred first (a softmax ignores a constant per row); 1.0 if the outputs are all
    constant or the fit is not positive."""
    y = np.asarray(outputs, np.float64)
    z = np.asarray(logits, np.float64)
    y = y - y.mean(axis=1, keepdims=True)
    z = z - z.mean(axis=1, keepdims=True)
    yy = float(np.vdot(y, y))
    tau = float(np.vdot(y, z)) / yy if yy > 0 else 0.0
    return tau if tau > 0 and math.isfinite(tau) else 1.0


def _flat_logits(z: Any, n: int, name: str) -> np.ndarray:
    a = np.asarray(z, np.float64)
    if a.ndim < 1 or len(a) != n:
        raise TrainError(f"{name} must give one row of logits per input ({n}), not shape "
                         f"{a.shape}")
    a = a.reshape(n, -1)
    if not np.all(np.isfinite(a)):
        raise TrainError(f"{name} gave logits that are not finite")
    return a


def distill(
    program: Program,
    teacher: Callable[[np.ndarray], np.ndarray],
    calibration_x: Any,
    *,
    epochs: int = DISTILL_DEFAULTS["epochs"],
    batch_size: int = DISTILL_DEFAULTS["batch_size"],
    lr: float = DISTILL_DEFAULTS["lr"],
    bias_lr: float = DISTILL_DEFAULTS["bias_lr"],
    temperature: float = DISTILL_DEFAULTS["temperature"],
    augment: int = DISTILL_DEFAULTS["augment"],
    noise: float = DISTILL_DEFAULTS["noise"],
    act_percentile: float = DISTILL_DEFAULTS["act_percentile"],
    recalibrate: bool = DISTILL_DEFAULTS["recalibrate"],
    select: int = DISTILL_DEFAULTS["select"],
    seed: int = 0,
    progress: Progress | None = None,
) -> DistillResult:
    """Fine-tune ``program`` to reproduce ``teacher``'s predictions (see the module).

    Parameters
    ----------
    program : Program
        The start, with an ``input_scale`` (every program the importer makes has one).
    teacher : callable
        Float inputs ``(N, *program.input_shape)`` -> float logits ``(N, M)`` (or any shape
        with ``M`` values per input), e.g. :meth:`trine.host.onnx_import.OnnxNetwork.forward`.
    calibration_x : float array (N, *program.input_shape) or flat (N, K)
        The inputs to learn on (the same the program was calibrated on, typically).
    epochs, batch_size : int
    lr, bias_lr : float
        Peak Adam steps of the latent weights (``mean|W| = 1`` at the start) and biases.
    temperature : float
        ``T``, > 0.
    augment : int
        New inputs per calibration input and epoch (0: the calibration inputs alone).
    noise : float
        Noise added to the new inputs, in each feature's standard deviations (>= 0).
    act_percentile : float
        In ``(0, 100]``: as in :func:`trine.host.qat.train_qat`.
    recalibrate : bool
        Re-choose the shifts after every epoch (:meth:`QATNet.calibrate`); else keep the
        starting program's.
    select : int
        Held-out mixtures per calibration input (made once, never trained on): the program
        of the epoch that agrees best with the teacher on them is returned, the start
        included. 0: the last epoch's.
    seed : int
        Augmentation, batch order and the drawn classes.
    progress : callable(fraction, message), optional

    Returns
    -------
    DistillResult

    Raises
    ------
    TrainError
        For a program without ``input_scale``, inputs of the wrong shape or not finite, a
        teacher whose outputs do not match the program's, and settings out of range.
    """
    if not isinstance(program, Program):
        raise TrainError(f"program must be a trine.host.program.Program, not "
                         f"{type(program).__name__}")
    net = QATNet.from_program(program)  # refuses a program without input_scale
    settings: dict[str, Any] = dict(
        epochs=check_int(epochs, "epochs"), batch_size=check_int(batch_size, "batch_size"),
        lr=check_float(lr, "lr"), bias_lr=check_float(bias_lr, "bias_lr", strict=False),
        temperature=check_float(temperature, "temperature"),
        augment=check_int(augment, "augment", minimum=0),
        noise=check_float(noise, "noise", strict=False),
        act_percentile=check_float(act_percentile, "act_percentile", maximum=100.0),
        recalibrate=bool(recalibrate), select=check_int(select, "select", minimum=0),
        seed=check_int(seed, "seed", minimum=0),
    )
    progress = check_progress(progress)
    shape = program.input_shape
    x = np.asarray(calibration_x)
    if x.dtype.kind != "f" or x.ndim < 2 or len(x) < 1 or math.prod(x.shape[1:]) != \
            math.prod(shape):
        raise TrainError(f"calibration_x must be float inputs (N, {', '.join(map(str, shape))})"
                         f" or (N, {math.prod(shape)}), not {x.dtype} {x.shape}")
    x = x.astype(np.float64).reshape(len(x), *shape)
    if not np.all(np.isfinite(x)):
        raise TrainError("calibration_x must be finite (no NaN or inf)")
    z_calib = _flat_logits(teacher(x), len(x), "the teacher")
    if z_calib.shape[1] != program.output_width:
        raise TrainError(f"the teacher gives {z_calib.shape[1]} logits per input, the program "
                         f"{program.output_width} outputs")
    temperature = settings["temperature"]
    a_calib = net.quantize_input(x)
    tau = logit_scale(net.forward(x).reshape(len(x), -1), z_calib) / temperature
    settings["logit_scale"] = tau
    teacher_class = z_calib.argmax(axis=1)
    rng = np.random.default_rng(settings["seed"])
    spread = x.reshape(len(x), -1).std(axis=0).reshape(shape)
    n_layers = net.n_layers
    opt = Adam(net.weights + net.betas)
    per_epoch = -(-len(x) * (1 + settings["augment"]) // settings["batch_size"])
    total = settings["epochs"] * per_epoch
    history: list[dict[str, float]] = []

    def record(epoch: int, loss: float) -> None:
        student = net.forward(x).reshape(len(x), -1).argmax(axis=1)
        entry = {"epoch": epoch, "agreement": float(np.mean(student == teacher_class)),
                 "loss": loss}
        history.append(entry)
        if progress is not None:
            progress(epoch / settings["epochs"],
                     f"epoch {epoch} agreement {entry['agreement']:.3f}")

    # Inputs never trained on, made like the training mixtures: the epoch whose program
    # agrees best with the teacher on them is the one returned (a QAT step can flip many
    # trits at once, and an epoch can end worse than it began).
    held = _augmented(x, spread, settings["select"], settings["noise"],
                      np.random.default_rng([settings["seed"], 1]))[len(x):]
    held_class = (_flat_logits(teacher(held), len(held), "the teacher").argmax(axis=1)
                  if len(held) else None)
    best: list = [-1.0, None, 0]

    def keep(epoch: int) -> None:
        if held_class is None:
            return
        agree = float(np.mean(net.forward(held).reshape(len(held), -1).argmax(axis=1)
                              == held_class))
        history[-1]["held_out_agreement"] = agree
        if agree > best[0]:
            best[:] = [agree, net.to_program(program.labels), epoch]

    step = 0
    with single_threaded_blas():
        record(0, math.nan)
        keep(0)
        for epoch in range(1, settings["epochs"] + 1):
            inputs = _augmented(x, spread, settings["augment"], settings["noise"], rng)
            q = soft_targets(z_calib if inputs is x else
                             _flat_logits(teacher(inputs), len(inputs), "the teacher"),
                             temperature)
            a0 = net.quantize_input(inputs)
            order = rng.permutation(len(inputs))
            losses = []
            for start in range(0, len(inputs), settings["batch_size"]):
                idx = order[start:start + settings["batch_size"]]
                drawn = _draw(q[idx], rng)
                loss, grads = net.loss_and_grads(a0[idx], drawn, tau)
                losses.append(loss)
                f = cosine(step / total)
                opt.step(grads, [settings["lr"] * f] * n_layers +
                         [settings["bias_lr"] * f] * n_layers, [0.0] * (2 * n_layers))
                step += 1
            if settings["recalibrate"]:
                net.calibrate(a_calib, settings["act_percentile"], opt)
            record(epoch, float(np.mean(losses)))
            keep(epoch)
    if best[1] is None:
        return DistillResult(net.to_program(program.labels), history, settings)
    settings["selected_epoch"] = best[2]
    return DistillResult(best[1], history, settings)


def _augmented(x: np.ndarray, spread: np.ndarray, augment: int, noise: float,
               rng: np.random.Generator) -> np.ndarray:
    """The calibration inputs and ``augment`` mixtures with noise per input (see the module)."""
    return mixtures(x, augment, rng, noise, spread)


def _draw(q: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One class per row, drawn from the row's probabilities ``q``."""
    u = rng.random((len(q), 1))
    return np.minimum((u > np.cumsum(q, axis=1)).sum(axis=1), q.shape[1] - 1)
