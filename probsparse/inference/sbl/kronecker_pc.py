r"""Pattern-coupled KroSBL (PC-KroSBL): Kronecker SBL with block-sparse (clustered) factor supports.

Same model and E-step as :mod:`probsparse.inference.sbl.kronecker`,
:math:`y = (A_1 \otimes \cdots \otimes A_I)\, x + n`, except that the prior variance of a *coupled* factor
:math:`i` is not a free vector but a neighbourhood sum of hidden non-negative variances :math:`\gamma_i`:

.. math::

    \tilde\gamma_i = C_\beta\, \gamma_i, \qquad
    C_\beta = I + \beta\,(\text{ones on the sub- and super-diagonal}), \qquad
    \gamma = \tilde\gamma_1 \otimes \cdots \otimes \tilde\gamma_I,

(:math:`\tilde\gamma_i = \gamma_i` for the uncoupled factors). A large :math:`\gamma_i[j]` raises the prior
variance of grid point :math:`j` *and* of its two neighbours, so supports made of contiguous runs (angular
spread in the IRS-MIMO channel of :func:`probsparse.datasets.make_irs_mimo_channel`) are favoured, without
fixing the block positions or lengths (the pattern-coupled idea of Fang et al., 2014, applied inside the
Kronecker factors by He & Joseph).

M-step. With :math:`\Lambda = \operatorname{diag}\Sigma + |\mu|^2`, the AM-KroSBL block sweeps are kept; for
block :math:`i`, let :math:`t_i` be the plain AM update (the exact minimiser of
:math:`\sum_n[\log\gamma_n + \Lambda_n/\gamma_n]` over a free :math:`\tilde\gamma_i`, the other blocks
fixed at their current :math:`\tilde\gamma_k`):

* coupled block: :math:`\gamma_i = \operatorname{NNLS}(C_\beta, t_i) = \arg\min_{g \ge 0}\|C_\beta g - t_i\|_2`
  (:func:`scipy.optimize.nnls`), then :math:`\tilde\gamma_i = \max(C_\beta\gamma_i, \epsilon\max C_\beta\gamma_i)`;
* uncoupled block: :math:`\tilde\gamma_i = t_i`.

After each sweep all factors but the last are scaled to unit :math:`\ell_2` norm (the scale goes into the
last one); sweeps stop when the Kronecker vector moves by at most ``inner_tol`` (relative) or after
``inner_max_iter`` sweeps (the authors use 1e-4 and 10).

The NNLS step is the authors' surrogate: it fits :math:`C_\beta\gamma_i` to :math:`t_i` in Euclidean
distance, not in the EM cost, so for :math:`\beta > 0` a block update can raise the M-step cost (the cost
:math:`\log g + t/g` is steep below :math:`t` and flat above it, and the Euclidean fit ignores that). This
module follows the authors and does not safeguard it; :func:`fit_pc_kronecker_sbl` is therefore not a
monotone (generalised) EM for :math:`\beta > 0`. For :math:`\beta = 0`, :math:`C_\beta = I`, the NNLS
solution is :math:`t_i` itself and the algorithm is AM-KroSBL.

Pruning (as in the authors' ``kroSBL_am_pc.m``): after each M-step, the entries of the *coupled* variances
with :math:`\tilde\gamma_i[j] \le r_i \max_j \tilde\gamma_i[j]` are dropped for good, and the coupling
matrix of later iterations is :math:`C_\beta` restricted to the surviving grid points (a submatrix, so
only grid neighbours stay coupled; a point whose neighbour was pruned loses that neighbour's share).
The relative floor :math:`\epsilon = 10^{-10}` keeps the coupled variances strictly positive inside the
inner loop (NNLS returns exact zeros); the authors add an absolute 1e-5 instead, which depends on the
scale of the data.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
from scipy.optimize import nnls

from probsparse._validation import check_finite_real, check_positive_int, check_positive_real
from probsparse.inference.sbl.evidence import check_tol
from probsparse.inference.sbl.kronecker import (
    KroneckerSBLPosterior,
    _block_update,
    _check_factors_and_y,
    _check_fraction,
    _run_em,
    _sweep_until_stable,
)

__all__ = ["coupling_matrix", "fit_pc_kronecker_sbl"]

# Coupled variances never go below this fraction of their largest entry inside the M-step.
_COUPLED_FLOOR = 1e-10


def coupling_matrix(n: int, coupling: float) -> np.ndarray:
    r"""The tridiagonal pattern-coupling matrix :math:`C_\beta = I + \beta(\text{sub- and super-diagonal ones})`.

    Parameters
    ----------
    n : int
        Size (grid points of the factor), >= 1.
    coupling : float
        :math:`\beta \ge 0`.
    """
    n = check_positive_int(n, "n")
    coupling = _check_coupling(coupling)
    C = np.eye(n)
    if n > 1:
        off = np.full(n - 1, coupling)
        C += np.diag(off, 1) + np.diag(off, -1)
    return C


def _check_coupling(coupling) -> float:
    coupling = check_finite_real(coupling, "coupling")
    if coupling < 0:
        raise ValueError(f"coupling (beta) must be >= 0, got {coupling}")
    return coupling


def _check_coupled_factors(coupled_factors, n_factors: int) -> tuple[int, ...]:
    if coupled_factors is None:
        return tuple(range(n_factors))
    if isinstance(coupled_factors, (str, bytes)) or not hasattr(coupled_factors, "__iter__"):
        raise TypeError(
            f"coupled_factors must be None or a sequence of factor indices, got {type(coupled_factors).__name__}"
        )
    out = []
    for v in coupled_factors:
        if isinstance(v, bool) or not isinstance(v, Integral):
            raise TypeError(f"coupled_factors must hold integer factor indices, got {v!r}")
        v = int(v)
        if not -n_factors <= v < n_factors:
            raise ValueError(f"coupled_factors index {v} is out of range for {n_factors} factors")
        v %= n_factors
        if v in out:
            raise ValueError(f"coupled_factors lists factor {v} twice")
        out.append(v)
    return tuple(sorted(out))


def _check_prune_ratios(prune_ratio, n_factors: int) -> list[float]:
    if np.ndim(prune_ratio) == 0:
        return [_check_fraction(prune_ratio, "prune_ratio")] * n_factors
    ratios = list(prune_ratio)
    if len(ratios) != n_factors:
        raise ValueError(f"prune_ratio must be a number or have one entry per factor ({n_factors}), got {len(ratios)}")
    return [_check_fraction(r, f"prune_ratio[{i}]") for i, r in enumerate(ratios)]


def _coupled_block(C: np.ndarray, target: np.ndarray) -> np.ndarray:
    """NNLS fit of the coupled variance to the plain AM target; returns the floored coupled variance."""
    g, _ = nnls(C, target)
    gt = C @ g
    top = float(gt.max())
    if top <= 0:  # only when the target is 0 everywhere; keep it positive and let pruning decide
        return np.full(target.size, float(target.max()) if target.max() > 0 else 1.0)
    return np.maximum(gt, _COUPLED_FLOOR * top)


def _pc_sweep(lam, gammas, couplings):
    """One sweep of block updates; ``couplings[i]`` is C for a coupled factor or None."""
    gammas = list(gammas)
    for i, C in enumerate(couplings):
        target = _block_update(lam, gammas, i)
        gammas[i] = target if C is None else _coupled_block(C, target)
    return gammas


def _pc_mstep(lam, gammas, couplings, inner_tol, inner_max_iter, trace=None):
    """PC-KroSBL M-step (see the module docstring); ``gammas`` are the coupled variances γ̃_i."""
    return _sweep_until_stable(
        lam, gammas, lambda g: _pc_sweep(lam, g, couplings), inner_tol, inner_max_iter, trace
    )


def fit_pc_kronecker_sbl(
    factors,
    y,
    *,
    coupling: float = 0.8,
    coupled_factors=None,
    noise_var=None,
    max_iter: int = 150,
    tol: float = 1e-4,
    prune_ratio=1e-2,
    inner_max_iter: int = 10,
    inner_tol: float = 1e-4,
) -> KroneckerSBLPosterior:
    r"""Pattern-coupled Kronecker SBL (PC-KroSBL) by EM, for Kronecker factors with clustered supports.

    The EM loop of :func:`~probsparse.inference.sbl.fit_kronecker_sbl` (Kronecker E-step on the surviving
    support, noise update, pruning, final E-step) with the pattern-coupled AM M-step of the module docstring:
    the prior variance of each coupled factor is :math:`\tilde\gamma_i = C_\beta\gamma_i` with the tridiagonal
    :math:`C_\beta` of :func:`coupling_matrix`, its block update an NNLS fit of :math:`C_\beta\gamma_i` to the
    plain AM update.

    Parameters
    ----------
    factors : sequence of array_like, the i-th of shape (M_i, N_i)
        :math:`I \ge 2` factor matrices, real or complex; the columns of a coupled factor must be ordered
        along its grid (neighbouring columns = neighbouring grid points).
    y : array_like of shape (prod M_i,) or (M_1, ..., M_I)
        Measurements in ``np.kron`` order (first factor slowest).
    coupling : float, default=0.8
        :math:`\beta \ge 0`; 0 gives AM-KroSBL (see Notes).
    coupled_factors : sequence of int, optional
        Indices of the factors whose support is clustered (coupled); default all. The others get the plain
        AM block update.
    noise_var : float or None
        Known :math:`\sigma^2 > 0`, or ``None`` to learn it (as in ``fit_kronecker_sbl``).
    max_iter : int, default=150
        Maximum number of EM iterations.
    tol : float, default=1e-4
        Stop when the Kronecker prior variance moves by at most ``tol`` (relative) and, when the noise is
        learned, :math:`|\Delta\sigma^2|/\sigma^2 \le` ``tol``.
    prune_ratio : float or sequence of float, default=1e-2
        Per-factor pruning ratio in [0, 1) (one number for all factors or one per factor): entries with
        :math:`\tilde\gamma_i[j] \le r_i \max_j \tilde\gamma_i[j]` are dropped for good. The authors' IRS code
        uses (1e-2, 1e-1, 1e-2) plus an absolute 1e-4.
    inner_max_iter : int, default=10
        Maximum number of block sweeps per M-step.
    inner_tol : float, default=1e-4
        Inner-loop tolerance on the relative change of :math:`\otimes\tilde\gamma_i`.

    Returns
    -------
    KroneckerSBLPosterior
        With ``solver="pc"``; ``factor_gammas`` are the coupled prior variances :math:`\tilde\gamma_i`
        (the ones the posterior uses), 0.0 at pruned entries.

    Notes
    -----
    With ``coupling=0`` (or ``coupled_factors=()``) every block update is the plain AM one and the result is
    that of ``fit_kronecker_sbl(factors, y, solver="am", prune_ratio=r, inner_tol=..., inner_max_iter=...)``
    with the same settings (same initialisation, stopping and pruning), up to rounding in NNLS, as long as no
    factor variance falls below 1e-10 of its maximum (the floor) before being pruned.

    The NNLS block update does not minimise the M-step cost for :math:`\beta > 0` and may raise it (module
    docstring); the authors' algorithm is kept as it is.

    References
    ----------
    He, Y. & Joseph, G. (2024). Bayesian algorithms for Kronecker-structured sparse vector recovery with
    application to IRS-MIMO channel estimation. IEEE TSP (arXiv 2307.14719).
    Fang, J., Shen, Y., Li, H. & Wang, P. (2015). Pattern-coupled sparse Bayesian learning for recovery of
    block-sparse signals. IEEE TSP 63(2).
    """
    factors, y_t, is_complex = _check_factors_and_y(factors, y)
    n_factors = len(factors)
    coupling = _check_coupling(coupling)
    coupled = _check_coupled_factors(coupled_factors, n_factors)
    fixed_noise = None if noise_var is None else check_positive_real(noise_var, "noise_var")
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_tol(tol)
    ratios = _check_prune_ratios(prune_ratio, n_factors)
    inner_tol = check_finite_real(inner_tol, "inner_tol")
    if inner_tol < 0:
        raise ValueError(f"inner_tol must be >= 0, got {inner_tol}")
    inner_max_iter = check_positive_int(inner_max_iter, "inner_max_iter")

    full_C = [coupling_matrix(A.shape[1], coupling) if i in coupled else None for i, A in enumerate(factors)]

    def mstep(lam, gam, idx):
        # The coupling matrices are restricted to the surviving grid points, as in the authors' code.
        couplings = [None if C is None else C[np.ix_(ix, ix)] for C, ix in zip(full_C, idx, strict=True)]
        return _pc_mstep(lam, gam, couplings, inner_tol, inner_max_iter)

    return _run_em(
        factors,
        y_t,
        is_complex,
        mstep=mstep,
        prune_ratios=ratios,
        fixed_noise=fixed_noise,
        max_iter=max_iter,
        tol=tol,
        solver="pc",
    )
