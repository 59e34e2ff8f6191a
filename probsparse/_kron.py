"""Products with Kronecker matrices without forming them (mode-n products on the reshaped tensor)."""

from __future__ import annotations

import numpy as np


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
