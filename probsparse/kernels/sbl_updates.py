r"""Numba kernels for the hot loops of Tipping & Faul's fast sparse Bayesian learning.

The sequential algorithm (see :func:`probsparse.inference.sbl.fit_tipping_faul`) keeps, for every basis
:math:`i` of the dictionary, the sparsity and quality factors of the *current* model

.. math::

    S_i = \phi_i^H C^{-1} \phi_i, \qquad Q_i = \phi_i^H C^{-1} Y \in \mathbb{C}^{1 \times L},
    \qquad C = \sigma^2 I + \sum_{j \in \mathcal{A}} \alpha_j^{-1} \phi_j \phi_j^H,

and at each iteration it changes the precision :math:`\alpha_i` of the single basis whose change raises the
log evidence most. Two things are done for all :math:`d` bases at every iteration, and both are memory-bound
elementwise passes that NumPy would split into many temporaries:

* :func:`select_action` scores the add / re-estimate / delete move of every basis and picks one;
* :func:`rank_one_update` applies the rank-one change of :math:`S` and :math:`Q` after a move.

Everything else in the algorithm is a matrix-vector product (``Phi^H phi_i``, ``(Phi^H Phi_A) u``), which is
left to BLAS through NumPy because BLAS is faster than a hand-written loop for those.

The kernels take ``|Q_i|^2`` summed over the :math:`L` columns (a real number) rather than :math:`Q` itself,
so that :func:`select_action` is the same real-valued code for real, complex and multi-column data.

This module imports only NumPy and Numba.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from probsparse.kernels._config import CACHE, FASTMATH

ACTION_NONE = 0
ACTION_ADD = 1
ACTION_REESTIMATE = 2
ACTION_DELETE = 3

#: Relevance factors :math:`\theta_i \le` ``ZERO_FACTOR`` :math:`\cdot s_i` count as zero (SparseBayes uses an
#: absolute 1e-12; ours is relative to :math:`s_i` so that it does not depend on the noise level).
ZERO_FACTOR = 1e-12

__all__ = [
    "ACTION_ADD",
    "ACTION_DELETE",
    "ACTION_NONE",
    "ACTION_REESTIMATE",
    "ZERO_FACTOR",
    "SelectedAction",
    "rank_one_update",
    "select_action",
]


class SelectedAction(NamedTuple):
    """Result of :func:`select_action`.

    Attributes
    ----------
    index : int
        Basis to change, ``-1`` when no move raises the evidence.
    kind : int
        One of ``ACTION_NONE``, ``ACTION_ADD``, ``ACTION_REESTIMATE``, ``ACTION_DELETE``.
    delta : float
        Change of the log evidence that the move brings.
    new_alpha : float
        Precision of the basis after the move (``inf`` for a deletion).
    deltas : ndarray of shape (d,)
        Change of the log evidence of the best move of every basis (0 where a basis has no move).
    kinds : ndarray of shape (d,), int8
        The kind of that move for every basis.
    """

    index: int
    kind: int
    delta: float
    new_alpha: float
    deltas: np.ndarray
    kinds: np.ndarray


# ----------------------------------------------------------------------------------------------------
# Kernel 1: score every basis and pick the move.
# Exists because the scoring needs ~20 elementwise operations with branches (active / inactive /
# deletable) and two logarithms per basis; one fused pass avoids NumPy temporaries and evaluates only the
# logarithms that are used.
# ----------------------------------------------------------------------------------------------------
@numba.njit(fastmath=FASTMATH, cache=CACHE)
def _select_action_kernel(
    S_in, Q2_in, alpha, active, addable, n_targets, evidence_scale, zero_factor, size_penalty, deltas, kinds
):  # pragma: no cover - compiled; covered by the NUMBA_DISABLE_JIT run
    d = S_in.shape[0]
    L = float(n_targets)
    best_other = -1
    best_other_val = 0.0
    best_other_alpha = np.inf
    best_del = -1
    best_del_val = -np.inf
    for i in range(d):
        deltas[i] = 0.0
        kinds[i] = ACTION_NONE
        S = S_in[i]
        Q2 = Q2_in[i]
        if active[i]:
            a = alpha[i]
            denom = a - S
            if not denom > 0.0:
                # Inconsistent statistics (S_in must stay below alpha); the caller recomputes them.
                continue
            s = a * S / denom
            q2 = a * a * Q2 / (denom * denom)
            theta = q2 / L - s
            # Removing the basis changes the evidence by this much (any theta), and saves the penalty. Without
            # a penalty a relevant basis is always re-estimated, as in Tipping & Faul.
            del_val = evidence_scale * (-Q2 / denom - L * math.log1p(-S / a)) + size_penalty
            if theta > zero_factor * s and not (size_penalty > 0.0 and del_val > 0.0):
                new_a = s * s / theta
                delta_inv = 1.0 / new_a - 1.0 / a
                val = evidence_scale * (
                    Q2 * delta_inv / (1.0 + S * delta_inv) - L * math.log1p(S * delta_inv)
                )
                deltas[i] = val
                kinds[i] = ACTION_REESTIMATE
                if val > best_other_val:
                    best_other_val = val
                    best_other = i
                    best_other_alpha = new_a
            else:
                deltas[i] = del_val
                kinds[i] = ACTION_DELETE
                if del_val > best_del_val:
                    best_del_val = del_val
                    best_del = i
        elif addable[i] and S > 0.0:
            theta = Q2 / L - S
            if theta > zero_factor * S:
                ratio = Q2 / (L * S)
                val = evidence_scale * L * (ratio - 1.0 - math.log(ratio)) - size_penalty
                if not val > 0.0:
                    continue
                deltas[i] = val
                kinds[i] = ACTION_ADD
                if val > best_other_val:
                    best_other_val = val
                    best_other = i
                    best_other_alpha = S * S / theta
    # Deletion priority (SparseBayes' PriorityDeletion): while some active basis is better removed, only
    # deletions compete. Pruning first keeps the active set, and so every later update, small.
    if best_del >= 0:
        return best_del, ACTION_DELETE, best_del_val, np.inf
    if best_other >= 0:
        return best_other, int(kinds[best_other]), best_other_val, best_other_alpha
    return -1, ACTION_NONE, 0.0, np.inf


# ----------------------------------------------------------------------------------------------------
# Kernel 2: rank-one update of S and Q for all bases, keeping |Q|^2 in sync.
# Exists because the update is three elementwise passes over (d,) and (d, L) arrays plus a row reduction; one
# fused pass reads each array once and allocates nothing. The product that produces ``t`` is BLAS (caller).
# Compiled once for float64 and once for complex128 ``Q``/``t``.
# ----------------------------------------------------------------------------------------------------
@numba.njit(fastmath=FASTMATH, cache=CACHE)
def _rank_one_update_kernel(S, Q, Q2, t, s_coef, q_coef):  # pragma: no cover - compiled
    d, L = Q.shape
    for i in range(d):
        ti = t[i]
        S[i] += s_coef * (ti.real * ti.real + ti.imag * ti.imag)
        for l in range(L):
            Q[i, l] += ti * q_coef[l]
        # The sum in a loop without stores: a vectorised loop that stores is guarded by a pointer check that sends
        # nearby arrays to the scalar loop, which would round the sum in another order.
        acc = 0.0
        for l in range(L):
            v = Q[i, l]
            acc += v.real * v.real + v.imag * v.imag
        Q2[i] = acc


# ----------------------------------------------------------------------------------------------------
# Thin validated wrappers.
# ----------------------------------------------------------------------------------------------------
def _check_vector(arr, name: str, d: int | None, dtype, *, output: bool = False) -> np.ndarray:
    """Check a 1-D array; inputs are made contiguous (a no-op when they are), outputs must already be."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(arr).__name__}")
    if arr.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if d is not None and arr.shape[0] != d:
        raise ValueError(f"{name} must have length {d}, got {arr.shape[0]}")
    if output:
        if not arr.flags.c_contiguous:
            raise ValueError(f"{name} is written in place and must be C-contiguous")
        if not arr.flags.writeable:
            raise ValueError(f"{name} is written in place and must be writeable")
        return arr
    # One memory layout keeps one compiled specialisation per dtype.
    return np.ascontiguousarray(arr)


def select_action(
    S_in: np.ndarray,
    Q2_in: np.ndarray,
    alpha: np.ndarray,
    active: np.ndarray,
    addable: np.ndarray,
    *,
    n_targets: int = 1,
    complex_data: bool = False,
    zero_factor: float = ZERO_FACTOR,
    size_penalty: float = 0.0,
    deltas: np.ndarray | None = None,
    kinds: np.ndarray | None = None,
) -> SelectedAction:
    r"""Score the add / re-estimate / delete move of every basis and pick the best (Numba JIT-compiled).

    With :math:`c = 1/2` for real and :math:`c = 1` for complex data, :math:`L` = ``n_targets``, the factors
    "out" of the model are :math:`s_i = \alpha_i S_i / (\alpha_i - S_i)`,
    :math:`\|q_i\|^2 = \alpha_i^2 \|Q_i\|^2 / (\alpha_i - S_i)^2` for an active basis and :math:`s_i = S_i`,
    :math:`q_i = Q_i` otherwise; the relevance factor is :math:`\theta_i = \|q_i\|^2 / L - s_i` and the
    optimal precision :math:`\alpha_i^\star = s_i^2 / \theta_i` when :math:`\theta_i > 0`. The change of the
    log evidence is

    .. math::

        \Delta_{\text{add}} &= c L \,(r - 1 - \log r), \quad r = \|Q_i\|^2 / (L S_i),\\
        \Delta_{\text{re-est}} &= c \left[\frac{\|Q_i\|^2 \delta}{1 + S_i \delta}
            - L \log(1 + S_i \delta)\right], \quad \delta = 1/\alpha_i^\star - 1/\alpha_i,\\
        \Delta_{\text{delete}} &= c \left[-\frac{\|Q_i\|^2}{\alpha_i - S_i}
            - L \log(1 - S_i/\alpha_i)\right] \quad (\theta_i \le 0).

    With a penalty :math:`\kappa` = ``size_penalty`` on the number of active bases (the objective is
    :math:`\mathcal{L} - \kappa |\mathcal{A}|`), an addition gains :math:`\Delta_{\text{add}} - \kappa` and
    a deletion :math:`\Delta_{\text{delete}} + \kappa`, the latter for any active basis: one whose evidence
    contribution is below :math:`\kappa` is deleted even when :math:`\theta_i > 0`. :math:`\kappa = 0` is
    Tipping & Faul's algorithm.

    If any active basis is better deleted (:math:`\theta_i \le 0`, or a positive penalised deletion gain), the
    deletion with the largest gain is chosen whatever the other gains (deletion priority, as in SparseBayes).
    Otherwise the move with the largest positive gain is chosen; ties go to the lowest index.

    Parameters
    ----------
    S_in, Q2_in : ndarray of shape (d,), float64
        :math:`S_i` and :math:`\|Q_i\|^2` (summed over the ``n_targets`` columns) under the current model.
    alpha : ndarray of shape (d,), float64
        Prior precisions :math:`\alpha_i = 1/\gamma_i`; read only where ``active``.
    active : ndarray of shape (d,), bool
        Bases in the model.
    addable : ndarray of shape (d,), bool
        Inactive bases that may be added (False for zero columns and for bases failing the alignment test).
    n_targets : int
        Number of columns :math:`L` of the targets.
    complex_data : bool
        Whether the data are complex (circular Gaussian evidence, no factor 1/2).
    zero_factor : float
        :math:`\theta_i \le` ``zero_factor`` :math:`\cdot s_i` counts as :math:`\theta_i \le 0`.
    size_penalty : float
        :math:`\kappa \ge 0`, the log-prior cost of each active basis (nats).
    deltas, kinds : ndarray of shape (d,), optional
        Output buffers (float64 and int8) to reuse between calls.

    Returns
    -------
    SelectedAction
        The chosen move and, for every basis, the gain and kind of its own best move.

    References
    ----------
    Tipping, M. E. & Faul, A. C. (2003). Fast marginal likelihood maximisation for sparse Bayesian models.
    AISTATS. Their :math:`S_m, Q_m, s_m, q_m, \alpha_m` are ours; their :math:`\beta` is :math:`1/\sigma^2`.
    The :math:`L` factor (multiple measurement vectors) follows from the same derivation with
    :math:`\operatorname{tr}(Y^H C^{-1} Y)`.
    """
    S_in = _check_vector(S_in, "S_in", None, np.float64)
    d = S_in.shape[0]
    Q2_in = _check_vector(Q2_in, "Q2_in", d, np.float64)
    alpha = _check_vector(alpha, "alpha", d, np.float64)
    active = _check_vector(active, "active", d, np.bool_)
    addable = _check_vector(addable, "addable", d, np.bool_)
    if isinstance(n_targets, bool) or not isinstance(n_targets, int | np.integer) or n_targets < 1:
        raise ValueError(f"n_targets must be an integer >= 1, got {n_targets!r}")
    zero_factor = float(zero_factor)
    if not (math.isfinite(zero_factor) and zero_factor >= 0.0):
        raise ValueError(f"zero_factor must be finite and >= 0, got {zero_factor}")
    size_penalty = float(size_penalty)
    if not (math.isfinite(size_penalty) and size_penalty >= 0.0):
        raise ValueError(f"size_penalty must be finite and >= 0, got {size_penalty}")
    if deltas is None:
        deltas = np.empty(d, dtype=np.float64)
    else:
        _check_vector(deltas, "deltas", d, np.float64, output=True)
    if kinds is None:
        kinds = np.empty(d, dtype=np.int8)
    else:
        _check_vector(kinds, "kinds", d, np.int8, output=True)
    scale = 1.0 if complex_data else 0.5
    index, kind, delta, new_alpha = _select_action_kernel(
        S_in, Q2_in, alpha, active, addable, int(n_targets), scale, zero_factor, size_penalty, deltas, kinds
    )
    return SelectedAction(int(index), int(kind), float(delta), float(new_alpha), deltas, kinds)


def rank_one_update(
    S: np.ndarray, Q: np.ndarray, Q2: np.ndarray, t: np.ndarray, s_coef: float, q_coef: np.ndarray
) -> None:
    r"""In-place rank-one update of the sparsity and quality factors (Numba JIT-compiled).

    .. math::

        S_i \leftarrow S_i + a\,|t_i|^2, \qquad Q_{il} \leftarrow Q_{il} + t_i b_l, \qquad
        \|Q_i\|^2 \leftarrow \textstyle\sum_l |Q_{il}|^2,

    with :math:`a` = ``s_coef`` and :math:`b` = ``q_coef``. Every move of the sequential algorithm has this
    form (Tipping & Faul 2003, Appendix A): for example re-estimating basis :math:`j` uses
    :math:`t = \beta (\Phi^H \Phi_{\mathcal{A}}) \Sigma_{:,j}`, :math:`a = \kappa`, :math:`b = \kappa \mu_j`.

    Parameters
    ----------
    S : ndarray of shape (d,), float64
        Updated in place.
    Q : ndarray of shape (d, L), float64 or complex128, C-contiguous
        Updated in place.
    Q2 : ndarray of shape (d,), float64
        Overwritten with the row sums of :math:`|Q|^2` after the update.
    t : ndarray of shape (d,), same dtype as ``Q``
    s_coef : float
    q_coef : ndarray of shape (L,), same dtype as ``Q``
    """
    if not isinstance(Q, np.ndarray) or Q.dtype not in (np.float64, np.complex128):
        raise TypeError("Q must be a float64 or complex128 NumPy array")
    if Q.ndim != 2 or not Q.flags.c_contiguous or not Q.flags.writeable:
        raise ValueError(f"Q must be a writeable C-contiguous 2-D array, got shape {Q.shape}")
    d, L = Q.shape
    _check_vector(S, "S", d, np.float64, output=True)
    _check_vector(Q2, "Q2", d, np.float64, output=True)
    t = _check_vector(t, "t", d, Q.dtype)
    q_coef = _check_vector(q_coef, "q_coef", L, Q.dtype)
    s_coef = float(s_coef)
    if not math.isfinite(s_coef):
        raise ValueError(f"s_coef must be finite, got {s_coef}")
    _rank_one_update_kernel(S, Q, Q2, t, s_coef, q_coef)
