"""Post-training ternarisation that fits each layer's *output* on calibration data.

:func:`trine.host.ternarize.fold_to_program` with ``method="gptq"`` calls :func:`fit_layer`
once per weighted layer, in order, with what the integer program computes up to that layer.
Each layer is then chosen to reproduce the float model's own output at that point:

* *float targets with quantised inputs* (the propagation): the layer sees ``X_q``, the
  activations the already-folded integer layers before it produce (dequantised), and should
  output ``Y = X_f W^T + b``, what the float model computes from its own activations ``X_f``.
  The weight that does so best in the least-squares sense is
  ``W' = W (X_f^T X_q) (X_q^T X_q + lambda I)^-1``, which absorbs the error of every layer
  before (the asymmetric calibration of GPTAQ, Li et al. 2025);
* *error feedback* (GPTQ, Frantar et al. 2023): the columns of ``W'`` are rounded to
  ``alpha * {-1, 0, +1}`` one at a time, and the error each makes is spread over the columns
  not yet rounded through the inverse of ``H = X_q^T X_q``, so that the output error
  ``tr((W' - alpha T) H (W' - alpha T)^T)`` stays small rather than the weight error;
* *the scale by the output*: ``alpha`` is searched over a grid around ``mean|W'|``; for each,
  the trits are found as above and ``alpha`` is then refitted in closed form to the output; the
  pair with the smallest output error is kept (one ``alpha`` per layer: the device has one
  shift per layer);
* *bias correction*: the bias becomes ``b + mean(Y - alpha T X_q)`` per output, so the layer's
  error has zero mean on the calibration data (Nagel et al. 2019).

A convolution is fitted as the dense layer every window of its input sees (the rows of
:func:`trine.contract.reference.im2col`). Each part can be switched off (:class:`OutputFit`),
to measure what it brings (``python -m bench import_accuracy``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["OutputFit", "ternarize_gptq", "fit_layer", "mixtures"]


@dataclass(frozen=True)
class OutputFit:
    """Which parts of the output fit :func:`fit_layer` uses (all, by default).

    Members
    -------
    float_targets : bool
        Fit ``X_q -> X_f W^T`` (correct for the error of the layers before); else
        ``X_q -> X_q W^T`` (each layer on its own).
    error_feedback : bool
        GPTQ's column-by-column rounding with the error spread over the rest; else each weight
        rounded to the nearest of ``alpha * {-1, 0, 1}``.
    search_scale : bool
        Search ``alpha`` for the smallest output error; else TWN's threshold
        ``0.7 mean|W|`` and scale (the mean kept magnitude).
    bias_correction : bool
        Add the mean output error to the bias.
    damping : float
        ``lambda`` as a fraction of the mean of ``diag(H)`` (GPTQ's 1 %), > 0: keeps ``H``
        invertible when inputs are constant or few.
    """

    float_targets: bool = True
    error_feedback: bool = True
    search_scale: bool = True
    bias_correction: bool = True
    damping: float = 0.01

    def __post_init__(self):
        if not (isinstance(self.damping, float | int) and 0 < self.damping < float("inf")):
            raise ValueError(f"damping must be a positive number, not {self.damping!r}")


def mixtures(x: np.ndarray, per_input: int, rng: np.random.Generator, noise: float = 0.0,
             spread: np.ndarray | None = None) -> np.ndarray:
    """``x`` (N, ...) followed by ``per_input * N`` random mixtures ``lam x_i + (1 - lam) x_j``
    of two of its rows (``i``, ``j`` uniform, ``lam`` uniform in [0, 1]: mixup, Zhang et al.
    2018), plus Gaussian noise of ``noise`` times ``spread`` (per feature) if ``noise``.

    Unlabelled inputs between the calibration points: the float model labels them with its own
    activations, which is all the output fit and distillation need. Mixtures without noise
    stay within the calibration inputs' range, so the input scale is kept."""
    if per_input == 0:
        return x
    n = per_input * len(x)
    i = rng.integers(0, len(x), n)
    j = rng.integers(0, len(x), n)
    lam = rng.uniform(0.0, 1.0, (n,) + (1,) * (x.ndim - 1))
    new = lam * x[i] + (1.0 - lam) * x[j]
    if noise:
        new += noise * spread * rng.standard_normal(new.shape)
    return np.concatenate([x, new])


# Grid of alpha / mean|W'| tried by the scale search: TWN's alpha is about 1.2 mean|W| for
# Gaussian weights; heavy-tailed rows want larger, many small weights smaller.
_SCALE_GRID = np.geomspace(0.35, 3.0, 25)


def _damped(h: np.ndarray, damping: float) -> np.ndarray:
    mean = float(np.mean(np.diag(h)))
    return h + (damping * mean if mean > 0 else 1.0) * np.eye(len(h))


def ternarize_gptq(w: np.ndarray, h_inv_chol: np.ndarray, alpha: float) -> np.ndarray:
    """GPTQ's rounding of ``w`` (M, K) to ``alpha * trits``, column by column.

    ``h_inv_chol`` is the upper Cholesky factor ``U`` of ``H^-1`` (``H^-1 = U^T U``), ``H``
    the damped ``X^T X`` of the layer's inputs: rounding column ``k`` makes the error
    ``e = (w_k - alpha t_k) / U_kk``, and the columns after it absorb ``-e U_k,k+1:``, which is
    the least-squares compensation of the output for what column ``k`` lost. Returns the trits,
    int8 (M, K).
    """
    w = np.array(w, dtype=np.float64)
    m, k = w.shape
    trits = np.zeros((m, k), np.int8)
    if alpha <= 0:
        return trits
    for j in range(k):
        col = w[:, j]
        t = np.clip(np.rint(col / alpha), -1, 1)
        trits[:, j] = t
        err = (col - alpha * t) / h_inv_chol[j, j]
        w[:, j + 1:] -= np.outer(err, h_inv_chol[j, j + 1:])
    return trits


def _twn(w: np.ndarray) -> tuple[np.ndarray, float]:
    from trine.host.ternarize import ternarize_twn

    trits, alpha = ternarize_twn(w)
    return trits, float(alpha)


def _refit(z: np.ndarray, y: np.ndarray, centred: bool) -> tuple[float, float]:
    """The one alpha minimising ``|y - alpha z (- mean)|^2`` over the layer's outputs, and
    that error; ``z = X_q T^T`` and ``y`` the targets minus the bias (N, M)."""
    if centred:
        z = z - z.mean(axis=0)
        y = y - y.mean(axis=0)
    zz = float(np.vdot(z, z))
    alpha = float(np.vdot(z, y)) / zz if zz > 0 else 0.0
    alpha = max(alpha, 0.0)
    return alpha, float(np.vdot(y - alpha * z, y - alpha * z))


def fit_layer(w: np.ndarray, b: np.ndarray, x_q: np.ndarray, x_f: np.ndarray,
              fit: OutputFit = OutputFit()) -> tuple[np.ndarray, float, np.ndarray]:
    """Ternarise one layer to reproduce its float output on calibration data.

    Parameters
    ----------
    w : float array (M, K)
        The layer's float weights (a convolution's as its (C_out, C_in * prod(kernel)) matrix).
    b : float array (M,)
    x_q : float array (R, K)
        The layer's inputs as the integer program computes them, dequantised (one row per
        calibration input, or per window of a convolution).
    x_f : float array (R, K)
        The same rows as the float model computes them.
    fit : OutputFit

    Returns
    -------
    trits : int8 (M, K)
    alpha : float
        ``>= 0``; the layer computes ``alpha * (T x) + bias``.
    bias : float64 (M,)
    """
    x_q = np.asarray(x_q, np.float64)
    x_f = np.asarray(x_f, np.float64)
    target_in = x_f if fit.float_targets else x_q
    y = target_in @ w.T  # what the layer should add to its bias
    h = _damped(x_q.T @ x_q, fit.damping)
    if fit.float_targets:
        w_fit = np.linalg.solve(h, x_q.T @ y).T  # (X_q^T X_q + lambda I)^-1 X_q^T Y
    else:
        w_fit = w
    if fit.error_feedback:
        # GPTQ's upper Cholesky factor of H^-1, from the Cholesky factor of H itself
        h_inv = np.linalg.inv(h)
        u = np.linalg.cholesky((h_inv + h_inv.T) / 2).T

    def trits_for(alpha: float) -> np.ndarray:
        if fit.error_feedback:
            return ternarize_gptq(w_fit, u, alpha)
        return np.clip(np.rint(w_fit / alpha), -1, 1).astype(np.int8) if alpha > 0 else \
            np.zeros(w.shape, np.int8)

    if fit.search_scale:
        mean = float(np.abs(w_fit).mean())
        best = None
        for factor in _SCALE_GRID if mean > 0 else ():
            t = trits_for(factor * mean)
            alpha, err = _refit(x_q @ t.T.astype(np.float64), y, fit.bias_correction)
            if best is None or err < best[0]:
                best = (err, t, alpha)
        if best is None:
            trits, alpha = np.zeros(w.shape, np.int8), 0.0
        else:
            _, trits, alpha = best
    else:
        trits, alpha = _twn(w_fit)
        if fit.error_feedback:
            trits = trits_for(alpha)
    bias = np.asarray(b, np.float64).copy()
    if fit.bias_correction:
        bias += (y - alpha * (x_q @ trits.T.astype(np.float64))).mean(axis=0)
    return trits, float(alpha), bias
