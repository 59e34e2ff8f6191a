r"""Fixed-point SBL engines: EM (Wipf & Rao) and MacKay (Tipping's RVM) updates of all :math:`\gamma_i`.

Both engines run the same loop (:func:`_fit_fixed_point`): compute the posterior of the active weights at the
current :math:`(\gamma, \sigma^2)`, apply an update rule, prune, repeat. Only the rule differs. With
:math:`\mu_i` the posterior mean (row :math:`i`, :math:`L` columns), :math:`\Sigma_{ii}` its variance and
:math:`g_i = 1 - \Sigma_{ii}/\gamma_i \in [0, 1]` how well the data determine weight :math:`i`:

.. math::

    \text{EM:}\quad & \gamma_i \leftarrow \|\mu_i\|^2 / L + \Sigma_{ii}, &
        \sigma^2 \leftarrow \left(\|Y - \Phi\mu\|_F^2/L + \sigma^2 \textstyle\sum_i g_i\right) / n,\\
    \text{MacKay:}\quad & \gamma_i \leftarrow \|\mu_i\|^2 / (L g_i), &
        \sigma^2 \leftarrow \left(\|Y - \Phi\mu\|_F^2/L\right) / \left(n - \textstyle\sum_i g_i\right),

the noise updates applying only when the noise is learned. Each iteration costs :math:`O(nm^2 + m^3)` with
the (m, m) form or :math:`O(n^2 m + n^3)` with the Woodbury form, whichever is cheaper for the :math:`m`
active columns; no (d, d) matrix is ever formed, and pruned columns leave the computation for good (a zero
:math:`\gamma_i` is a fixed point of both rules).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from probsparse._validation import check_matrix_and_targets, check_positive_int, check_positive_real
from probsparse.inference.sbl.evidence import _GammaStats, check_tol, gamma_stats
from probsparse.inference.sbl.posterior import SBLPosterior

__all__ = ["fit_em", "fit_mackay"]

# Learned noise never goes below this fraction of the mean power of Y (as SparseBayes' BetaMaxFactor): an
# interpolating fit would otherwise drive sigma^2 to 0 and the evidence to +inf.
_NOISE_FLOOR = 1e-6

GammaRule = Callable[[_GammaStats, np.ndarray, int], np.ndarray]
NoiseRule = Callable[[_GammaStats, float, int, int], float]


def _mean_power(stats: _GammaStats, L: int) -> np.ndarray:
    return np.real(np.sum(stats.mean * stats.mean.conj(), axis=1)) / L


def _em_gamma(stats: _GammaStats, gamma: np.ndarray, L: int) -> np.ndarray:
    return _mean_power(stats, L) + stats.sigma_diag


def _mackay_gamma(stats: _GammaStats, gamma: np.ndarray, L: int) -> np.ndarray:
    g = stats.well_determined
    out = np.zeros_like(gamma)
    # g_i = 0 means the data carry no information on w_i: its evidence optimum is gamma_i = 0 (pruned).
    ok = g > 0
    out[ok] = _mean_power(stats, L)[ok] / g[ok]
    return out


def _em_noise(stats: _GammaStats, noise_var: float, n: int, L: int) -> float:
    return (stats.resid2 / L + noise_var * float(np.sum(stats.well_determined))) / n


def _mackay_noise(stats: _GammaStats, noise_var: float, n: int, L: int) -> float:
    dof = n - float(np.sum(stats.well_determined))
    if dof <= 0:
        return 0.0  # raised to the floor by the caller
    return (stats.resid2 / L) / dof


def _relative_change(new: np.ndarray, old: np.ndarray) -> float:
    if old.size == 0:
        return 0.0
    return float(np.max(np.abs(new - old))) / max(float(old.max()), np.finfo(float).tiny)


def _prepare(Phi, Y, noise_var, gamma_init):
    """Validate inputs; return Phi, 2-D Y, the 1-D flag, the fixed noise (or None) and the initial gamma."""
    Phi, Y = check_matrix_and_targets(Phi, Y, X_name="Phi", y_name="Y", allow_complex=True)
    if np.iscomplexobj(Phi) != np.iscomplexobj(Y):
        Phi, Y = Phi.astype(np.complex128), Y.astype(np.complex128)
    if noise_var is not None:
        noise_var = check_positive_real(noise_var, "noise_var")
    Y2 = Y[:, None] if Y.ndim == 1 else Y
    n, d = Phi.shape
    L = Y2.shape[1]
    col_norm2 = np.real(np.sum(Phi * Phi.conj(), axis=0))
    if gamma_init is None:
        # Variance that lets each column alone explain all of Y: broad, and equivariant to column scaling.
        y2 = float(np.vdot(Y2, Y2).real) / L
        with np.errstate(divide="ignore"):
            gamma = np.where(col_norm2 > 0, (y2 if y2 > 0 else 1.0) / col_norm2, 0.0)
    else:
        gamma = np.asarray(gamma_init)
        if gamma.dtype.kind not in "fiu" or gamma.shape != (d,):
            raise ValueError(f"gamma_init must be a real array of shape ({d},), got {gamma.shape}")
        gamma = gamma.astype(np.float64)
        if not np.all(np.isfinite(gamma)) or np.any(gamma < 0):
            raise ValueError("gamma_init must hold finite, non-negative prior variances")
        gamma = np.where(col_norm2 > 0, gamma, 0.0)  # a zero column carries no information
    return Phi, Y, Y2, noise_var, gamma


def _fit_fixed_point(
    Phi,
    Y,
    *,
    gamma_rule: GammaRule,
    noise_rule: NoiseRule,
    engine: str,
    noise_var,
    max_iter,
    tol,
    prune_tol,
    gamma_init,
) -> SBLPosterior:
    Phi, Y, Y2, fixed_noise, gamma = _prepare(Phi, Y, noise_var, gamma_init)
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_tol(tol)
    prune_tol = float(prune_tol)
    if not (math.isfinite(prune_tol) and 0.0 <= prune_tol < 1.0):
        raise ValueError(f"prune_tol must be in [0, 1), got {prune_tol}")
    n, d = Phi.shape
    L = Y2.shape[1]
    y_power = float(np.vdot(Y2, Y2).real) / (n * L)
    if y_power == 0.0:
        y_power = 1.0
    learn_noise = fixed_noise is None
    sigma2 = 0.1 * y_power if learn_noise else fixed_noise
    noise_floor = _NOISE_FLOOR * y_power

    idx = np.flatnonzero(gamma > 0)
    gamma_a = gamma[idx]
    stats = gamma_stats(Phi[:, idx], Y2, gamma_a, sigma2)
    trace: list[float] = []
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 - n_iter is reported after the loop
        new_gamma = gamma_rule(stats, gamma_a, L)
        new_sigma2 = sigma2
        if learn_noise:
            new_sigma2 = max(noise_rule(stats, sigma2, n, L), noise_floor)
        top = float(new_gamma.max()) if new_gamma.size else 0.0
        keep = new_gamma > max(prune_tol * top, 0.0)
        # Convergence is judged on the bases that survive; pruning itself is progress, not convergence.
        with np.errstate(divide="ignore"):
            dlog = np.abs(np.log(new_gamma[keep]) - np.log(gamma_a[keep]))
        max_dlog = float(dlog.max()) if dlog.size else 0.0
        rel = _relative_change(new_gamma, gamma_a)
        noise_dlog = abs(math.log(new_sigma2 / sigma2))
        pruned_any = not np.all(keep)

        idx, gamma_a, sigma2 = idx[keep], new_gamma[keep], new_sigma2
        stats = gamma_stats(Phi[:, idx], Y2, gamma_a, sigma2)
        trace.append(stats.log_evidence)
        if not pruned_any and noise_dlog < tol and (max_dlog < tol or rel < tol):
            converged = True
            break

    final = gamma_stats(Phi[:, idx], Y2, gamma_a, sigma2, want_cov=True)
    return _to_posterior(final, idx, gamma_a, sigma2, d, Y.ndim, trace, n_iter, converged, engine)


def _to_posterior(stats, idx, gamma_a, sigma2, d, y_ndim, trace, n_iter, converged, engine) -> SBLPosterior:
    L = stats.mean.shape[1]
    coef = np.zeros((d, L), dtype=stats.mean.dtype)
    coef[idx] = stats.mean
    active = np.zeros(d, dtype=bool)
    active[idx] = True
    gamma = np.zeros(d)
    gamma[idx] = gamma_a
    return SBLPosterior(
        coef=coef[:, 0] if y_ndim == 1 else coef,
        active=active,
        gamma=gamma,
        cov=stats.cov,
        noise_var=float(sigma2),
        log_evidence=np.asarray(trace, dtype=np.float64),
        n_iter=int(n_iter),
        converged=bool(converged),
        engine=engine,
    )


def fit_em(
    Phi, Y, *, noise_var=None, max_iter=1000, tol=1e-6, prune_tol=1e-8, gamma_init=None
) -> SBLPosterior:
    r"""Sparse Bayesian learning by expectation-maximisation of the prior variances.

    .. math::

        \gamma_i \leftarrow \|\mu_i\|^2 / L + \Sigma_{ii}, \qquad
        \sigma^2 \leftarrow \frac{\|Y - \Phi\mu\|_F^2 / L + \sigma^2 \sum_i (1 - \Sigma_{ii}/\gamma_i)}{n}

    Each update never decreases the evidence, but convergence is slow near sparse solutions: the
    :math:`\gamma_i` of irrelevant bases shrink only like :math:`1/t`, so small nonzero :math:`\gamma_i`
    remain after ``max_iter`` unless they fall below ``prune_tol``.

    Parameters
    ----------
    Phi : array_like of shape (n, d)
        Design (dictionary) matrix, real or complex. Zero columns start (and stay) pruned.
    Y : array_like of shape (n,) or (n, L)
        Targets. Several columns share one support (M-SBL); the shape of ``coef`` follows ``Y``.
    noise_var : float or None
        Fixed noise variance :math:`\sigma^2`, or ``None`` to learn it (initialised at 0.1 times the mean
        power of ``Y``, floored at 1e-6 times it).
    max_iter : int
        Maximum number of updates.
    tol : float
        Stop when no basis was pruned, :math:`|\Delta\log\sigma^2| <` ``tol`` and either
        :math:`\max_i|\Delta\log\gamma_i| <` ``tol`` or :math:`\max_i|\Delta\gamma_i| / \max_i\gamma_i <`
        ``tol``.
    prune_tol : float
        After each update, drop the bases with :math:`\gamma_i <` ``prune_tol`` :math:`\cdot\max_j\gamma_j`
        (they never come back, and each later iteration gets cheaper).
    gamma_init : array_like of shape (d,), optional
        Initial prior variances (>= 0; zeros start pruned). Default: :math:`\|Y\|_F^2 / (L\|\phi_i\|^2)`.

    Returns
    -------
    SBLPosterior
        ``log_evidence[k]`` is the exact log evidence after update ``k + 1``.

    References
    ----------
    Wipf, D. P. & Rao, B. D. (2004). Sparse Bayesian learning for basis selection. IEEE TSP 52(8).
    Wipf, D. P. & Rao, B. D. (2007). An empirical Bayesian strategy for solving the simultaneous sparse
    approximation problem (M-SBL). IEEE TSP 55(7). Their :math:`\gamma`, :math:`\lambda = \sigma^2` and
    :math:`\Phi` are ours.
    """
    return _fit_fixed_point(
        Phi,
        Y,
        gamma_rule=_em_gamma,
        noise_rule=_em_noise,
        engine="em",
        noise_var=noise_var,
        max_iter=max_iter,
        tol=tol,
        prune_tol=prune_tol,
        gamma_init=gamma_init,
    )


def fit_mackay(
    Phi, Y, *, noise_var=None, max_iter=1000, tol=1e-6, prune_tol=1e-8, gamma_init=None
) -> SBLPosterior:
    r"""Sparse Bayesian learning with MacKay's fixed-point updates (Tipping's RVM, sklearn's ARD).

    .. math::

        g_i = 1 - \Sigma_{ii}/\gamma_i, \qquad
        \gamma_i \leftarrow \frac{\|\mu_i\|^2}{L\, g_i}, \qquad
        \sigma^2 \leftarrow \frac{\|Y - \Phi\mu\|_F^2 / L}{n - \sum_i g_i}

    Usually much faster than EM (irrelevant :math:`\gamma_i` collapse geometrically), but not guaranteed to
    increase the evidence at every step.

    Parameters
    ----------
    Phi : array_like of shape (n, d)
        Design (dictionary) matrix, real or complex. Zero columns start (and stay) pruned.
    Y : array_like of shape (n,) or (n, L)
        Targets. Several columns share one support (M-SBL); the shape of ``coef`` follows ``Y``.
    noise_var : float or None
        Fixed noise variance :math:`\sigma^2`, or ``None`` to learn it (initialised at 0.1 times the mean
        power of ``Y``, floored at 1e-6 times it).
    max_iter : int
        Maximum number of updates.
    tol : float
        Stop when no basis was pruned, :math:`|\Delta\log\sigma^2| <` ``tol`` and either
        :math:`\max_i|\Delta\log\gamma_i| <` ``tol`` or :math:`\max_i|\Delta\gamma_i| / \max_i\gamma_i <`
        ``tol``.
    prune_tol : float
        After each update, drop the bases with :math:`\gamma_i <` ``prune_tol`` :math:`\cdot\max_j\gamma_j`
        (they never come back, and each later iteration gets cheaper).
    gamma_init : array_like of shape (d,), optional
        Initial prior variances (>= 0; zeros start pruned). Default: :math:`\|Y\|_F^2 / (L\|\phi_i\|^2)`.

    Returns
    -------
    SBLPosterior
        ``log_evidence[k]`` is the exact log evidence after update ``k + 1``.

    References
    ----------
    MacKay, D. J. C. (1992). Bayesian interpolation. Neural Computation 4(3).
    Tipping, M. E. (2001). Sparse Bayesian learning and the relevance vector machine. JMLR 1. His
    :math:`\alpha_i = 1/\gamma_i`, :math:`\beta = 1/\sigma^2` and :math:`\gamma_i` (the "well-determined"
    factor) is our :math:`g_i`.
    """
    return _fit_fixed_point(
        Phi,
        Y,
        gamma_rule=_mackay_gamma,
        noise_rule=_mackay_noise,
        engine="mackay",
        noise_var=noise_var,
        max_iter=max_iter,
        tol=tol,
        prune_tol=prune_tol,
        gamma_init=gamma_init,
    )
