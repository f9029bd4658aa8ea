"""Accuracy of a program on labelled data, in software or on a device, checked bit for bit.

:func:`evaluate` runs a :class:`~trine.host.program.Program` on inputs ``x`` with labels ``y``:

* ``backend="reference"``: the bit-exact integer reference (``Program.run_reference``);
* ``backend="device"``: a device at ``url`` (a serial port or ``socket://`` for the simulated
  RTL) through :class:`trine.host.client.Client`. The device's outputs are compared with the
  reference *for every sample*; the accuracy reported is the device's own, and the number of
  samples on which device and reference differ is part of the result (it must be 0: a non-zero
  count is a hardware or link bug, and :attr:`Evaluation.bit_exact` says so).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from trine.contract.network import layer_macs
from trine.host.program import Program, ProgramError
from trine.host.results import accuracy

__all__ = ["Evaluation", "evaluate"]

BACKENDS = ("reference", "device")


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` measured.

    Members
    -------
    backend : str
    samples : int
    accuracy : float
        From the backend's outputs (the device's, with ``backend="device"``).
    reference_accuracy : float
        From the reference outputs (equal to ``accuracy`` when the device is bit-exact).
    mismatches : int
        Samples whose device outputs differ from the reference in any position (0 for the
        reference backend).
    seconds : float
        Wall-clock time of the inferences (the load excluded).
    device : dict or None
        With ``backend="device"``: ``lanes``, ``rows``, ``clock_hz``, ``baud``, ``max_batch``, the
        device's ``cycles`` summed over all runs, ``runs``, ``cycles_per_inference`` (at the
        batch size used), ``latency_cycles`` (one sample alone, batch 1), and the load's
        ``payload_bytes``, ``wire_bytes_sent``, ``frames``, ``retries``, ``bits_per_weight``
        (wire bits towards the device per real weight, biases, table and framing included);
        for the inferences, ``infer_wire_bytes`` (both directions, frames and retries included)
        and ``infer_retries``. What the array did, from the device's own cycle counter (RUN's
        answer): ``macs_per_inference`` (:func:`trine.contract.network.network_macs`),
        ``layer_macs`` (its count per layer of the program, 0 for pooling and flatten),
        ``macs`` (over all samples), ``macs_per_cycle`` (``macs / cycles``),
        ``peak_macs_per_cycle`` (``lanes x rows``, the array's compute roof),
        ``run_samples``, ``run_cycles`` and ``run_macs_per_cycle`` (each run's), and
        ``latency_macs_per_cycle`` (the sample alone, batch 1).
    """

    backend: str
    samples: int
    accuracy: float
    reference_accuracy: float
    mismatches: int
    seconds: float
    device: dict[str, Any] | None = None

    @property
    def bit_exact(self) -> bool:
        """True when every output equalled the reference."""
        return self.mismatches == 0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["bit_exact"] = self.bit_exact
        return d


def _check_data(program: Program, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    xa = np.asarray(x)
    if xa.ndim != 2 or xa.shape[0] < 1:
        raise ProgramError(f"inputs must have shape (N, K) with N >= 1, not {xa.shape}")
    if xa.shape[1] != program.input_width:
        raise ProgramError(
            f"inputs have {xa.shape[1]} features, the program expects {program.input_width}"
        )
    ya = np.asarray(y)
    if ya.dtype.kind not in "iu" or ya.shape != (xa.shape[0],):
        raise ProgramError(
            f"labels must be integers of shape ({xa.shape[0]},), not {ya.dtype} {ya.shape}"
        )
    if ya.size and (ya.min() < 0 or ya.max() >= program.output_width):
        raise ProgramError(
            f"labels must be class indices in 0..{program.output_width - 1}, "
            f"found {int(ya.min())}..{int(ya.max())}"
        )
    return xa, ya


def evaluate(
    program: Program,
    x: Any,
    y: Any,
    *,
    backend: str = "reference",
    url: str | None = None,
    baud: int = 3_000_000,
    timeout: float = 2.0,
    load_progress: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """Run ``program`` on ``x`` (raw floats or int8) and score it against labels ``y``.

    Parameters
    ----------
    program : Program
    x : array (N, K)
        Float inputs are quantised with ``program.input_scale``; integers used as int8.
    y : int array (N,)
        Class indices; the prediction is the argmax of the int8 outputs
        (:func:`trine.host.results.predict`).
    backend : {"reference", "device"}
    url : str
        The device (``/dev/ttyUSB1``, ``socket://127.0.0.1:PORT``); required for "device".
    baud, timeout
        Passed to :class:`trine.host.client.Client`.
    load_progress : callable, optional
        ``progress(bytes_done, bytes_total)`` while the program is streamed.

    Raises
    ------
    ProgramError
        For inputs or labels that do not fit the program.
    ValueError
        For an unknown backend or a missing ``url``.
    trine.host.transport.LinkError
        If the device cannot be reached or fails (never a wrong answer: see Client).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    xa, ya = _check_data(program, x, y)
    t0 = time.perf_counter()
    ref = program.run_reference(xa)
    ref_acc = accuracy(ref, ya)
    if backend == "reference":
        return Evaluation("reference", len(ya), ref_acc, ref_acc, 0, time.perf_counter() - t0)
    if not url:
        raise ValueError("the device backend needs a device URL (--port)")

    from trine.host.client import Client

    with Client(url, baud=baud, timeout=timeout) as client:
        info = client.info()
        load = client.load(program, progress=load_progress)
        before = client.stats
        t0 = time.perf_counter()
        out, cycles = client.infer_batch(xa)
        seconds = time.perf_counter() - t0
        after = client.stats
        # infer cuts the samples into runs of the image's batch, in order
        per_run = client.image.batch
        _, latency = client.infer(xa[0])
    run_samples = [min(per_run, len(ya) - first) for first in range(0, len(ya), per_run)]
    assert len(run_samples) == len(cycles), (run_samples, cycles)
    per_layer = layer_macs(program.layers, program.input_shape)
    macs = sum(per_layer)
    mismatches = int(np.sum(np.any(out != ref, axis=1)))
    device = {
        "lanes": info.lanes,
        "rows": info.rows,
        "clock_hz": info.clock_hz,
        "baud": info.baud,
        "max_batch": info.max_batch,
        "cycles": int(sum(cycles)),
        "runs": len(cycles),
        "cycles_per_inference": sum(cycles) / len(ya),
        "latency_cycles": int(latency[0]),
        "payload_bytes": load.payload_bytes,
        "wire_bytes_sent": load.wire_bytes_sent,
        "frames": load.frames,
        "retries": load.retries,
        "weights": load.weights,
        "bits_per_weight": load.bits_per_trit,
        "infer_wire_bytes": (after.bytes_sent - before.bytes_sent
                             + after.bytes_received - before.bytes_received),
        "infer_retries": after.retries - before.retries,
        "macs_per_inference": macs,
        "layer_macs": per_layer,
        "macs": macs * len(ya),
        "macs_per_cycle": macs * len(ya) / sum(cycles),
        "peak_macs_per_cycle": info.lanes * info.rows,
        "run_samples": run_samples,
        "run_cycles": [int(c) for c in cycles],
        "run_macs_per_cycle": [macs * n / c for n, c in zip(run_samples, cycles, strict=True)],
        "latency_macs_per_cycle": macs / latency[0],
    }
    return Evaluation("device", len(ya), accuracy(out, ya), ref_acc, mismatches, seconds, device)
