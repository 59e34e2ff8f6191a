"""Products with Kronecker matrices without forming them (mode-n products on the reshaped tensor)."""

from __future__ import annotations

import math

import numpy as np

from probsparse._validation import check_finite_array


def mode_products(mats, t: np.ndarray) -> np.ndarray:
    r"""``(mats[0] ⊗ ... ⊗ mats[I-1]) vec(t)`` as a tensor, by one mode product per factor.

    ``t`` has shape ``(Q_1, ..., Q_I)`` and ``mats[i]`` shape ``(P_i, Q_i)``; the result has shape
    ``(P_1, ..., P_I)``. Vectors follow ``np.kron`` order (C-order reshape, the first factor slowest). Each
    step contracts the leading axis and appends the new one at the end, so after :math:`I` steps the axes
    are back in order (no transposed copies are needed). Cost :math:`O(\sum_i P_i \prod_{k} \max(P_k, Q_k))`.
    """
    for A in mats:
        t = np.tensordot(t, A, axes=([0], [1]))
    return t


def kron_matvec(mats, x: np.ndarray) -> np.ndarray:
    """``(mats[0] ⊗ ... ⊗ mats[I-1]) @ x`` for a flat ``x`` of length ``prod Q_i``; returns a flat vector."""
    return mode_products(mats, np.asarray(x).reshape([A.shape[1] for A in mats])).reshape(-1)


def check_factors_and_y(factors, y, *, min_factors: int = 1):
    """Validated factor matrices (float64 or complex128), ``y`` shaped (M_1, ..., M_I), and whether complex."""
    if isinstance(factors, np.ndarray) or not isinstance(factors, (list, tuple)):
        raise TypeError(f"factors must be a list or tuple of 2-D arrays, got {type(factors).__name__}")
    if len(factors) < min_factors:
        raise ValueError(f"factors must hold at least {min_factors} matrices (I >= {min_factors}), got {len(factors)}")
    out = []
    is_complex = False
    for i, A in enumerate(factors):
        name = f"factors[{i}]"
        A = np.asarray(A)
        if A.dtype.kind not in "fciu":
            raise TypeError(f"{name} must hold numbers, got dtype {A.dtype}")
        if A.ndim != 2:
            raise ValueError(f"{name} must be 2-D (M_i, N_i), got shape {A.shape}")
        if A.shape[0] == 0 or A.shape[1] == 0:
            raise ValueError(f"{name} is empty (shape {A.shape}): each factor needs at least one row and column")
        is_complex = is_complex or A.dtype.kind == "c"
        out.append(A)
    y = np.asarray(y)
    if y.dtype.kind not in "fciu":
        raise TypeError(f"y must hold numbers, got dtype {y.dtype}")
    is_complex = is_complex or y.dtype.kind == "c"
    dtype = np.complex128 if is_complex else np.float64
    out = [check_finite_array(A.astype(dtype, copy=False), f"factors[{i}]") for i, A in enumerate(out)]
    m_shape = tuple(A.shape[0] for A in out)
    m_bar = math.prod(m_shape)
    if not (y.ndim == 1 and y.size == m_bar) and y.shape != m_shape:
        raise ValueError(
            f"y must have prod(M_i) = {m_bar} entries (a 1-D vector, or an array of shape {m_shape}) for "
            f"factors with M_i = {m_shape}, got shape {y.shape}"
        )
    y = check_finite_array(y.astype(dtype, copy=False), "y")
    return out, y.reshape(m_shape), is_complex
