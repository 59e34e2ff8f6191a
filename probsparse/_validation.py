"""Input checks shared by the whole package.

Every public entry point validates its arguments with these helpers, so that bad input fails early with a
message that names the argument and says what was expected. Nothing here coerces silently: a value of the
wrong kind is an error, not a conversion.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np


def check_positive_int(value, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as an ``int`` after checking it is an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_finite_real(value, name: str) -> float:
    """Return ``value`` as a ``float`` after checking it is a finite real number."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} ({value!r})")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def check_positive_real(value, name: str) -> float:
    """Return ``value`` as a ``float`` after checking it is finite and strictly positive."""
    value = check_finite_real(value, name)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_finite_array(array: np.ndarray, name: str) -> np.ndarray:
    """Raise ``ValueError`` naming ``name`` if ``array`` holds NaN or infinity; return it unchanged."""
    if not np.all(np.isfinite(array)):
        n_bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name} contains {n_bad} NaN or infinite value(s); all entries must be finite")
    return array


def check_matrix_and_targets(
    X, y, *, X_name: str = "X", y_name: str = "y", allow_complex: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a design matrix and its targets for the numerical engines.

    Parameters
    ----------
    X : array_like of shape (n_samples, n_features)
        Design (dictionary) matrix. Real floating point, or complex when ``allow_complex``.
    y : array_like of shape (n_samples,) or (n_samples, n_targets)
        Targets; several columns share one support (multiple measurement vectors).
    allow_complex : bool
        Whether complex ``X`` / ``y`` are accepted.

    Returns
    -------
    X, y : ndarray
        float64 (or complex128) arrays; ``y`` keeps its number of dimensions.
    """
    X = np.asarray(X)
    y = np.asarray(y)
    for arr, name in ((X, X_name), (y, y_name)):
        if arr.dtype.kind == "c" and not allow_complex:
            raise ValueError(f"{name} is complex ({arr.dtype}) but this estimator expects real data")
        if arr.dtype.kind not in "fciu":
            raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if X.ndim != 2:
        raise ValueError(f"{X_name} must be 2-D (n_samples, n_features), got shape {X.shape}")
    if y.ndim not in (1, 2):
        raise ValueError(f"{y_name} must be 1-D or 2-D (n_samples[, n_targets]), got shape {y.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{X_name} has no rows: at least one sample is needed")
    if X.shape[1] == 0:
        raise ValueError(f"{X_name} has no columns (0 features): at least one feature is needed")
    if y.shape[0] != X.shape[0]:
        raise ValueError(
            f"{X_name} and {y_name} have different numbers of samples: {X.shape[0]} and {y.shape[0]}"
        )
    if y.ndim == 2 and y.shape[1] == 0:
        raise ValueError(f"{y_name} has no columns: at least one target is needed")
    dtype = np.complex128 if (X.dtype.kind == "c" or y.dtype.kind == "c") else np.float64
    X = check_finite_array(X.astype(dtype, copy=False), X_name)
    y = check_finite_array(y.astype(dtype, copy=False), y_name)
    return X, y
