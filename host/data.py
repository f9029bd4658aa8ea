"""Small, bundled data sets for examples and tests (no download).

Only :func:`load_digits_split` for now: the 8 x 8 handwritten digits that ship with
scikit-learn, split once and for all by a seed so accuracy figures are reproducible.
"""

from __future__ import annotations

import numpy as np

__all__ = ["load_digits_split"]


def load_digits_split(
    seed: int = 0, test_size: float = 0.25
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The scikit-learn digits (1797 samples, 64 pixels, 10 classes), split stratified.

    Parameters
    ----------
    seed : int
        ``random_state`` of the split; the same seed always gives the same split.
    test_size : float
        Fraction of the samples in the test split, in ``(0, 1)``.

    Returns
    -------
    x_train, y_train, x_test, y_test
        Features as float32 in their natural range ``0..16`` (no scaling: choosing the input
        scale is the compiler's job), labels as int64 in ``0..9``.

    Raises
    ------
    ValueError
        If ``test_size`` is not in ``(0, 1)``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if (
        isinstance(test_size, bool)
        or not isinstance(test_size, int | float)
        or not (0 < test_size < 1)
    ):
        raise ValueError(f"test_size must be a fraction in (0, 1), not {test_size!r}")
    digits = load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y
    )
    return x_train, y_train, x_test, y_test
