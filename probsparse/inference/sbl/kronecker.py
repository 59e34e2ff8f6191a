r"""Kronecker-structured sparse Bayesian learning (KroSBL): E-step and the AM / SVD / KSBL engines.

Model, with :math:`I \ge 2` factors :math:`A_i` of shape :math:`(M_i, N_i)`,
:math:`\bar M = \prod_i M_i` and :math:`\bar N = \prod_i N_i`:

.. math::

    y = (A_1 \otimes \cdots \otimes A_I)\, x + n, \qquad
    x \sim \mathcal N(0, \operatorname{diag}(\gamma)), \qquad
    \gamma = \gamma_1 \otimes \cdots \otimes \gamma_I, \qquad n \sim \mathcal N(0, \sigma^2 I),

real or circular complex. Vectors follow the ordering of ``np.kron`` (the first factor varies slowest), i.e.
``x.reshape(N_1, ..., N_I)`` in C order, and likewise ``y`` with the :math:`M_i`.

E-step. With :math:`H = \otimes_i A_i` and :math:`\Gamma = \operatorname{diag}(\gamma)`, the marginal
covariance :math:`C = \sigma^2 I + H\Gamma H^H` is diagonalised by the eigendecompositions of the small
matrices :math:`A_i\Gamma_i A_i^H = U_i P_i U_i^H` (:math:`M_i \times M_i`):
:math:`C = (\otimes U_i)(\sigma^2 I + \otimes P_i)(\otimes U_i)^H`. With :math:`B_i = \Gamma_i A_i^H U_i`,
:math:`d = 1/(\sigma^2 + p_1 \otimes \cdots \otimes p_I)` and :math:`z = (\otimes U_i)^H y`,

.. math::

    \mu = (\otimes B_i)(d \circ z), \qquad
    \operatorname{diag}\Sigma = \gamma - \gamma^2 \circ (\otimes |A_i^H U_i|^2)\, d, \qquad
    \log|C| = \textstyle\sum \log(\sigma^2 + \otimes p), \qquad y^H C^{-1} y = \sum d\,|z|^2,

and also :math:`\|y - H\mu\|^2 = \sigma^4 \sum d^2 |z|^2` and
:math:`\sum_n (1 - \Sigma_{nn}/\gamma_n) = \sum (\otimes p)\, d`. Every product with a Kronecker matrix is
a sequence of mode-:math:`i` products on the reshaped tensor, so one E-step costs
:math:`O(\bar N' \max_i M_i + \sum_i M_i^3)` time (:math:`\bar N'` the size of the current Kronecker
support) and :math:`O(\bar N + \bar M + \sum_i M_i N_i)` memory; :math:`H`, :math:`\Sigma` and every
:math:`\bar N \times \bar N` or :math:`\bar M \times \bar M` matrix are never formed.

M-step. With :math:`\Lambda = \operatorname{diag}\Sigma + |\mu|^2` (the posterior second moments), EM asks for

.. math::

    \min_{\gamma_1, \ldots, \gamma_I \ge 0} \sum_n \left[\log\gamma_n + \Lambda_n / \gamma_n\right],
    \qquad \gamma = \otimes_i \gamma_i,

a non-convex problem. Three solvers (He & Joseph; see :func:`fit_kronecker_sbl`):

* ``"am"`` (AM-KroSBL): block coordinate descent; the exact minimiser over block :math:`i` is
  :math:`\gamma_i[j] = (N_i/\bar N) \sum_{n:\, n_i = j} \Lambda_n / \prod_{k \ne i} \gamma_k[n_k]`;
  sweeps over all blocks until the Kronecker vector stops moving, then all factors but the last are scaled to
  unit :math:`\ell_2` norm (the scale goes into the last one).
* ``"ksbl"`` (the earlier KSBL scheme): a single sweep of the same block updates per EM iteration, no
  normalisation (a generalised EM step).
* ``"svd"`` (SVD-KroSBL): the best rank-one fit of :math:`\Lambda` by sequential SVDs of its unfoldings,
  :math:`\gamma_i` the absolute leading singular vectors; one SVD per factor and EM iteration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.linalg import lapack

from probsparse._kron import check_factors_and_y
from probsparse._validation import (
    check_finite_array,
    check_finite_real,
    check_positive_int,
    check_positive_real,
)
from probsparse.inference.sbl.evidence import check_tol, combine_evidence
from probsparse.kernels.kronecker_products import (
    kron_eig_solve_unchecked,
    kron_estep_unchecked,
    kron_prune_change_unchecked,
    kron_svd_em_unchecked,
)

__all__ = ["KroneckerSBLPosterior", "fit_kronecker_sbl", "kronecker_posterior"]

SOLVERS = ("svd", "am", "ksbl")

# Default pruning ratios, as in the authors' code: SVD-KroSBL prunes at 1e-3 * max, AM-KroSBL and KSBL at 1e-2.
_DEFAULT_PRUNE = {"svd": 1e-3, "am": 1e-2, "ksbl": 1e-2}

# Learned noise never goes below this fraction of the mean power of y.
_NOISE_FLOOR = 1e-8

_TINY = np.finfo(float).tiny

_dsyevd, _zheevd, _dsyevr = lapack.dsyevd, lapack.zheevd, lapack.dsyevr


# ----------------------------------------------------------------------------------------------------
# Kronecker algebra on reshaped tensors
# ----------------------------------------------------------------------------------------------------


def _outer(vectors) -> np.ndarray:
    """The Kronecker product of 1-D vectors as an I-way tensor (``np.kron`` order after ``reshape(-1)``)."""
    t = np.asarray(vectors[0])
    for v in vectors[1:]:
        t = np.multiply.outer(t, v)
    return t


def _ct(A: np.ndarray) -> np.ndarray:
    return A.conj().T if np.iscomplexobj(A) else A.T


def _abs2(A: np.ndarray) -> np.ndarray:
    return (A * A.conj()).real if np.iscomplexobj(A) else A * A


def _mode_products_right(rights, t: np.ndarray) -> np.ndarray:
    r"""``(rights[0]^T ⊗ ... ⊗ rights[I-1]^T) vec(t)`` as a tensor; ``rights[i]`` of shape (Q_i, P_i).

    Each step contracts the leading axis of ``t`` (Q_i, then the rest) with ``rights[i]`` into a
    (rest, P_i) matrix whose C-order is that of the tensor with the new axis appended at the end, so after
    I steps the axes are back in order. One BLAS product per factor: at the sizes of an EM iteration (a few
    thousand entries) the per-call overhead of ``np.tensordot`` costs more than the arithmetic.
    """
    for R in rights:
        t = t.reshape(R.shape[0], -1).T @ R
    return t.reshape([R.shape[1] for R in rights])


def _kron_flat(vectors) -> np.ndarray:
    """``np.kron`` of 1-D vectors as a flat vector (the product of ``_outer``, raveled)."""
    t = vectors[0]
    for v in vectors[1:]:
        t = (t[:, None] * v).reshape(-1)
    return t


def _gram(A: np.ndarray, g: np.ndarray, is_complex: bool) -> np.ndarray:
    r""":math:`A \operatorname{diag}(g) A^H` (exactly Hermitian: a rank-k update of :math:`A g^{1/2}`)."""
    W = A * np.sqrt(g)
    return W @ W.conj().T if is_complex else W @ W.T


def _eigh(G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of a small Hermitian matrix (upper triangle read).

    LAPACK's divide-and-conquer driver is called directly: for the M_i x M_i matrices of the E-step the
    checks of ``scipy.linalg.eigh`` / ``np.linalg.eigh`` take longer than the decomposition itself.
    """
    if np.iscomplexobj(G):
        p, U, info = _zheevd(G, overwrite_a=1)
    else:
        p, U, info = _dsyevd(G, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"eigendecomposition did not converge (LAPACK info = {info})")
    return p, U


def _top_eigvec(G: np.ndarray) -> np.ndarray:
    """Eigenvector of the largest eigenvalue of a small real symmetric matrix (upper triangle read).

    LAPACK's MRRR driver computes that one eigenpair only (about 2/3 of the time of a full decomposition
    at the sizes of the M-step).
    """
    n = G.shape[0]
    _, v, _, _, info = _dsyevr(G, range="I", il=n, iu=n, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"eigendecomposition did not converge (LAPACK info = {info})")
    return v[:, 0]


@dataclass
class _KronStats:
    """E-step results on the current Kronecker support (tensors of shape (l_1, ..., l_I))."""

    mean: np.ndarray
    sigma_diag: np.ndarray
    second_moment: np.ndarray  # Λ = Σ_nn + |μ_n|^2, floored at 1e-30 max Λ
    top: float  # max Λ before the floor (NaN if some entry is NaN)
    sum_well: float  # sum_n (1 - Sigma_nn / gamma_n)
    resid2: float  # ||y - H mu||^2
    log_evidence: float


def _estep(factors, y_t: np.ndarray, gammas, noise_var: float, is_complex: bool, factors_h=None) -> _KronStats:
    """Kronecker E-step (inputs validated; ``y_t`` of shape (M_1, ..., M_I); gammas >= 0).

    ``factors_h``: the conjugate transposes :math:`A_i^H` as C-contiguous arrays, when the caller keeps them
    (the EM loop does; its factors are then C-contiguous, writeable copies too). The work is one compiled call
    (:func:`probsparse.kernels.kron_estep`): eigendecompositions, mode products and elementwise passes.
    """
    if factors_h is None:
        # One memory layout for every factor: the compiled E-step takes them as a homogeneous tuple.
        factors = [np.require(A, requirements="CW") for A in factors]
        factors_h = [np.ascontiguousarray(_ct(A)) for A in factors]
    mean, sigma_diag, lam, top, _, logdet, quad, dz2, sum_well = kron_estep_unchecked(
        tuple(factors),
        tuple(factors_h),
        tuple(np.ascontiguousarray(g) for g in gammas),
        y_t.reshape(-1),
        noise_var,
    )
    shape = tuple(g.size for g in gammas)
    return _KronStats(
        mean=mean.reshape(shape),
        sigma_diag=sigma_diag.reshape(shape),
        second_moment=lam.reshape(shape),
        top=float(top),
        sum_well=float(sum_well),
        resid2=noise_var**2 * float(dz2),
        log_evidence=combine_evidence(y_t.size, 1, is_complex, float(logdet), float(quad)),
    )


# ----------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------


def _check_factors_and_y(factors, y):
    return check_factors_and_y(factors, y, min_factors=2)


def _check_factor_gammas(factor_gammas, factors):
    if isinstance(factor_gammas, np.ndarray) or not isinstance(factor_gammas, (list, tuple)):
        raise TypeError("factor_gammas must be a list or tuple of 1-D arrays, one per factor")
    if len(factor_gammas) != len(factors):
        raise ValueError(
            f"factor_gammas must have one vector per factor: {len(factors)} factors, got {len(factor_gammas)}"
        )
    out = []
    for i, (g, A) in enumerate(zip(factor_gammas, factors, strict=True)):
        name = f"factor_gammas[{i}]"
        g = np.asarray(g)
        if g.dtype.kind not in "fiu":
            raise TypeError(f"{name} must be real, got dtype {g.dtype}")
        if g.shape != (A.shape[1],):
            raise ValueError(f"{name} must have shape ({A.shape[1]},) (N_{i} of factors[{i}]), got {g.shape}")
        g = check_finite_array(g.astype(np.float64), name)
        if np.any(g < 0):
            raise ValueError(f"{name} must hold non-negative prior variances")
        out.append(g)
    return out


# ----------------------------------------------------------------------------------------------------
# Public E-step
# ----------------------------------------------------------------------------------------------------


def kronecker_posterior(factors, y, factor_gammas, noise_var) -> tuple[np.ndarray, np.ndarray, float]:
    r"""Posterior mean, posterior variances and log evidence of the Kronecker SBL model at fixed hyperparameters.

    Evaluates :math:`\mu = \Sigma H^H y/\sigma^2`, :math:`\operatorname{diag}\Sigma` with
    :math:`\Sigma = (H^H H/\sigma^2 + \Gamma^{-1})^{-1}` (over :math:`\gamma_n > 0`; zero elsewhere) and
    :math:`\log p(y \mid \gamma, \sigma^2)` for :math:`H = A_1 \otimes \cdots \otimes A_I` and
    :math:`\gamma = \gamma_1 \otimes \cdots \otimes \gamma_I`, through eigendecompositions of the
    :math:`M_i \times M_i` matrices :math:`A_i \Gamma_i A_i^H` and mode products (see the module docstring);
    no :math:`\bar N \times \bar N` or :math:`\bar M \times \bar M` matrix is formed.

    Parameters
    ----------
    factors : sequence of array_like, the i-th of shape (M_i, N_i)
        :math:`I \ge 2` factor matrices, real or complex.
    y : array_like of shape (prod M_i,) or (M_1, ..., M_I)
        Measurements, ordered as ``np.kron`` (first factor slowest).
    factor_gammas : sequence of array_like, the i-th of shape (N_i,)
        Factor prior variances :math:`\gamma_i \ge 0` (zeros switch the corresponding weights off).
    noise_var : float
        :math:`\sigma^2 > 0`.

    Returns
    -------
    mean : ndarray of shape (prod N_i,)
        Posterior mean (float64 or complex128), zero where :math:`\gamma_n = 0`.
    posterior_var : ndarray of shape (prod N_i,)
        :math:`\Sigma_{nn}`, zero where :math:`\gamma_n = 0`.
    log_evidence : float
        Same constant convention as :func:`probsparse.inference.sbl.log_evidence`
        (:math:`-\tfrac12\bar M\log 2\pi` real, :math:`-\bar M\log\pi` complex).
    """
    factors, y_t, is_complex = _check_factors_and_y(factors, y)
    gammas = _check_factor_gammas(factor_gammas, factors)
    noise_var = check_positive_real(noise_var, "noise_var")
    st = _estep(factors, y_t, gammas, noise_var, is_complex)
    return st.mean.reshape(-1), st.sigma_diag.reshape(-1), st.log_evidence


# ----------------------------------------------------------------------------------------------------
# M-steps
# ----------------------------------------------------------------------------------------------------


def _mstep_cost(lam: np.ndarray, gammas) -> float:
    r""":math:`\sum_n [\log\gamma_n + \Lambda_n/\gamma_n]` for :math:`\gamma = \otimes\gamma_i`."""
    g = _outer(gammas)
    return float(np.sum(np.log(g)) + np.sum(lam / g))


def _block_update(lam: np.ndarray, gammas, i: int) -> np.ndarray:
    """Exact minimiser of the M-step cost over factor ``i`` with the others fixed."""
    # Contract every other axis with 1/gamma_k, last axis first: each contraction is a BLAS matrix-vector
    # product that shrinks the tensor, so no full-size temporary is made (25x faster than dividing
    # the full tensor I - 1 times and averaging, at N = 40^3).
    t = lam
    for k in range(lam.ndim - 1, -1, -1):
        if k != i:
            t = np.tensordot(t, 1.0 / gammas[k], axes=([k], [0]))
    return t * (gammas[i].size / lam.size)


def _am_sweep(lam: np.ndarray, gammas) -> list:
    gammas = list(gammas)
    for i in range(len(gammas)):
        gammas[i] = _block_update(lam, gammas, i)
    return gammas


def _normalise(gammas) -> list:
    """Unit l2 norm for all factors but the last; the scale goes into the last one."""
    gammas = [g.copy() for g in gammas]
    scale = 1.0
    for i in range(len(gammas) - 1):
        nrm = float(np.linalg.norm(gammas[i]))
        if nrm > 0:
            gammas[i] /= nrm
            scale *= nrm
    gammas[-1] *= scale
    return gammas


def _am_mstep(lam, gammas, inner_tol, inner_max_iter, trace=None):
    """AM-KroSBL M-step: block sweeps until ||Δγ|| <= inner_tol * ||γ|| (Kronecker vectors) or the cap."""
    return _sweep_until_stable(lam, gammas, lambda g: _am_sweep(lam, g), inner_tol, inner_max_iter, trace)


def _sweep_until_stable(lam, gammas, sweep, inner_tol, inner_max_iter, trace=None):
    """Repeat ``sweep`` (then normalise) until the Kronecker vector moves by at most ``inner_tol`` relative."""
    gammas = _normalise(gammas)
    prev = _outer(gammas)
    for _ in range(inner_max_iter):
        gammas = _normalise(sweep(gammas))
        cur = _outer(gammas)
        if trace is not None:
            trace.append(_mstep_cost(lam, gammas))
        change = float(np.linalg.norm(cur - prev))
        prev = cur
        if change <= inner_tol * float(np.linalg.norm(cur)):
            break
    return gammas


def _svd_mstep(lam: np.ndarray) -> list:
    """SVD-KroSBL M-step: sequential rank-one fit of Λ through the leading singular triplets of unfoldings.

    The leading left singular vector u of an unfolding R is the top eigenvector of R R^T (l_i x l_i), and
    u^T R = s v^T; an eigenvector of the small Gram matrix costs a fraction of a full SVD of R, and the top
    singular pair is as accurate through it as through the SVD (its error scales with the gap s_1^2 - s_2^2).
    ``fit_kronecker_sbl`` runs the compiled twin of this step (:func:`probsparse.kernels.kronecker_products.
    kron_svd_mstep`, inside :func:`~probsparse.kernels.kronecker_products.kron_svd_em`); this one serves the
    plain-Python loop of :func:`_run_em` (and the tests that compare the two).
    """
    shape = lam.shape
    gammas = []
    R = lam.reshape(shape[0], -1)
    for i in range(len(shape) - 1):
        u = _top_eigvec(R @ R.T)
        gammas.append(np.abs(u))
        rest = u @ R
        if i + 1 < len(shape) - 1:
            R = rest.reshape(shape[i + 1], -1)
        else:
            gammas.append(np.abs(rest))
    return gammas


# ----------------------------------------------------------------------------------------------------
# Engine
# ----------------------------------------------------------------------------------------------------


@dataclass
class KroneckerSBLPosterior:
    r"""Result of :func:`fit_kronecker_sbl`: the Gaussian posterior at the fitted Kronecker hyperparameters.

    The posterior is :math:`\mathcal N(\mu, \Sigma)` over the Kronecker support (all entries are in the
    ordering of ``np.kron``); only the diagonal of :math:`\Sigma` is kept.

    Attributes
    ----------
    coef : ndarray of shape (prod N_i,)
        Posterior mean :math:`\mu`, exact zeros off the support.
    factor_gammas : list of ndarray, the i-th of shape (N_i,)
        Factor prior variances :math:`\gamma_i`, 0.0 at pruned entries (original factor indexing).
    gamma : ndarray of shape (prod N_i,)
        :math:`\gamma = \gamma_1 \otimes \cdots \otimes \gamma_I`.
    active : ndarray of shape (prod N_i,), bool
        The Kronecker support :math:`S_1 \times \cdots \times S_I` of the nonzero factor entries.
    posterior_var : ndarray of shape (prod N_i,)
        :math:`\Sigma_{nn}`, 0.0 off the support.
    noise_var : float
        :math:`\sigma^2` (fixed or learned).
    log_evidence : ndarray of shape (n_iter,)
        Log evidence after each EM iteration (same constant convention as
        :func:`probsparse.inference.sbl.log_evidence`).
    n_iter : int
    converged : bool
        Whether the stopping rule was met before ``max_iter``.
    solver : str
        ``"svd"``, ``"am"`` or ``"ksbl"``.
    """

    coef: np.ndarray
    factor_gammas: list
    gamma: np.ndarray
    active: np.ndarray
    posterior_var: np.ndarray
    noise_var: float
    log_evidence: np.ndarray
    n_iter: int
    converged: bool
    solver: str

    @property
    def factor_active(self) -> list:
        """The per-factor supports :math:`S_i` (bool arrays of shape (N_i,))."""
        return [g > 0 for g in self.factor_gammas]

    @property
    def n_active(self) -> int:
        """Number of weights on the Kronecker support."""
        return int(np.count_nonzero(self.active))


def _check_fraction(value, name: str) -> float:
    value = check_finite_real(value, name)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


def _initial_gammas(factors, y2: float):
    """Surviving indices and initial variances per factor (see Notes of :func:`fit_kronecker_sbl`)."""
    root = (y2 if y2 > 0 else 1.0) ** (1.0 / len(factors))
    idx, gam = [], []
    for A in factors:
        cn2 = np.sum(_abs2(A), axis=0)
        keep = np.flatnonzero(cn2 > 0)  # all-zero columns start pruned
        idx.append(keep)
        gam.append(root / cn2[keep])
    if all(g.size for g in gam):
        gam = _normalise(gam)
    return idx, gam


def fit_kronecker_sbl(
    factors,
    y,
    *,
    solver: str = "svd",
    noise_var=None,
    max_iter: int = 150,
    tol: float = 1e-4,
    prune_ratio=None,
    inner_tol: float = 1e-5,
    inner_max_iter: int = 100,
    swap_rounds: int = 0,
    restart_rounds: int = 0,
) -> KroneckerSBLPosterior:
    r"""Kronecker-structured sparse Bayesian learning by EM (AM-KroSBL, SVD-KroSBL or KSBL).

    Each EM iteration runs the Kronecker E-step (:func:`kronecker_posterior`, restricted to the surviving
    factor entries), forms :math:`\Lambda = \operatorname{diag}\Sigma + |\mu|^2` and updates the factor
    variances with the chosen M-step (see the module docstring):

    * ``"svd"``: sequential rank-one SVD fit of :math:`\Lambda` (no inner loop);
    * ``"am"``: closed-form block coordinate descent until the relative change of
      :math:`\otimes\gamma_i` is at most ``inner_tol`` or ``inner_max_iter`` sweeps;
    * ``"ksbl"``: one block sweep, no normalisation.

    When the noise is learned,
    :math:`\sigma^2 \leftarrow (\|y - H\mu\|^2 + \sigma^2 \sum_n (1 - \Sigma_{nn}/\gamma_n)) / \bar M`.
    After each M-step the entries :math:`\gamma_i[j] \le` ``prune_ratio`` :math:`\cdot \max_j \gamma_i[j]` are
    dropped for good, and each later iteration works on the smaller Kronecker support. The result comes from
    a final E-step on the surviving support.

    Parameters
    ----------
    factors : sequence of array_like, the i-th of shape (M_i, N_i)
        :math:`I \ge 2` factor matrices, real or complex. All-zero columns start (and stay) pruned.
    y : array_like of shape (prod M_i,) or (M_1, ..., M_I)
        Measurements in ``np.kron`` order (first factor slowest).
    solver : {"svd", "am", "ksbl"}
    noise_var : float or None
        Known :math:`\sigma^2 > 0`, or ``None`` to learn it (initialised at 0.1 times the mean power of
        ``y``, floored at 1e-8 times it).
    max_iter : int
        Maximum number of EM iterations.
    tol : float
        Stop when :math:`\|\gamma - \gamma_{old}\| / \|\gamma_{old}\| \le` ``tol`` (Kronecker vectors, pruned
        entries counted as 0) and, when the noise is learned, :math:`|\Delta\sigma^2|/\sigma^2 \le` ``tol``.
    prune_ratio : float or None
        Per-factor pruning ratio in [0, 1); ``None`` takes the authors' values, 1e-3 for ``"svd"`` and 1e-2
        for ``"am"`` / ``"ksbl"``; 0 prunes only exact zeros.
    inner_tol : float
        AM inner-loop tolerance on the relative change of :math:`\otimes\gamma_i` (``"am"`` only).
    inner_max_iter : int
        Maximum number of AM sweeps per EM iteration (``"am"`` only).
    swap_rounds : int, default=0
        Rounds of a swap search after EM (not in the authors' algorithm): every move of one factor's surviving
        entry to one of its pruned entries (same variance) is scored by the log evidence at fixed
        hyperparameters; the best move that raises the evidence restarts EM from the moved variances, and the
        restarted fit is kept if its evidence is higher. EM's pruning is final, so a wrong factor entry kept
        early is a local optimum that restarts from scratch return to; one swap escapes it. Costs
        :math:`\sum_i |S_i|(N_i - |S_i|)` evidence evaluations per round.
    restart_rounds : int, default=0
        Rounds of a restart search after EM and the swap search (not in the authors' algorithm). Each round
        restarts EM from :math:`I + \sum_i |S_i|` starts near the current fit: factor :math:`i` re-initialised
        to the broad start (all :math:`N_i` entries back, profile :math:`\propto 1/\|a_{i,j}\|^2`, scaled to
        the current :math:`\max_j \gamma_i[j]`) with the other factors kept, one start per factor; and one
        surviving entry removed, one start per entry. The restarted fit of highest evidence replaces the
        current one if its evidence is higher; the rounds stop when none is. A factor with few rows
        (:math:`M_i < N_i`) can keep several wrong entries whose span mimics a true one (EM's pruning is
        final); at such fits neither a single swap nor a restart from scratch helps, but re-learning that
        factor with the others fixed, or dropping one of its entries, reaches the higher-evidence support.
        Costs up to :math:`I + \sum_i |S_i|` EM runs per round, each from a warm start.
        Every restart prunes as EM does, so no round brings back a true entry that the pruning ratio removes:
        at high SNR an entry of amplitude below about :math:`\sqrt{\text{prune\_ratio}}` times its factor's
        largest (3 % at the default 1e-3) can be; a smaller ``prune_ratio`` (1e-4) keeps it.

    Returns
    -------
    KroneckerSBLPosterior

    Notes
    -----
    The factor variances start at :math:`\gamma_i[j] = \|y\|^{2/I} / \|a_{i,j}\|^2` (:math:`a_{i,j}` the
    :math:`j`-th column of :math:`A_i`), i.e. :math:`\gamma_n = \|y\|^2/\|h_n\|^2` for every column
    :math:`h_n` of :math:`H` as in :func:`probsparse.inference.sbl.fit_em`: broad, and equivariant to the
    scaling of the data and of each factor. The authors' code starts at :math:`\gamma = 1` instead. Then all
    factors but the last are scaled to unit norm.

    References
    ----------
    He, Y. & Joseph, G. (2024). Bayesian algorithms for Kronecker-structured sparse vector recovery with
    application to IRS-MIMO channel estimation. IEEE TSP (arXiv 2307.14719).
    """
    factors, y_t, is_complex = _check_factors_and_y(factors, y)
    if not isinstance(solver, str) or solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    fixed_noise = None if noise_var is None else check_positive_real(noise_var, "noise_var")
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_tol(tol)
    prune_ratio = _DEFAULT_PRUNE[solver] if prune_ratio is None else _check_fraction(prune_ratio, "prune_ratio")
    inner_tol = check_finite_real(inner_tol, "inner_tol")
    if inner_tol < 0:
        raise ValueError(f"inner_tol must be >= 0, got {inner_tol}")
    inner_max_iter = check_positive_int(inner_max_iter, "inner_max_iter")
    if isinstance(swap_rounds, bool) or not isinstance(swap_rounds, int | np.integer) or swap_rounds < 0:
        raise ValueError(f"swap_rounds must be an integer >= 0, got {swap_rounds!r}")
    if isinstance(restart_rounds, bool) or not isinstance(restart_rounds, int | np.integer) or restart_rounds < 0:
        raise ValueError(f"restart_rounds must be an integer >= 0, got {restart_rounds!r}")

    if solver == "svd":
        mstep = None  # the compiled loop of _run_em

    elif solver == "am":

        def mstep(lam, gam, idx):
            return _am_mstep(lam, gam, inner_tol, inner_max_iter)

    else:

        def mstep(lam, gam, idx):
            return _am_sweep(lam, gam)

    def run(init=None):
        return _run_em(
            factors,
            y_t,
            is_complex,
            mstep=mstep,
            prune_ratios=[prune_ratio] * len(factors),
            fixed_noise=fixed_noise,
            max_iter=max_iter,
            tol=tol,
            solver=solver,
            init=init,
        )

    result = run()
    for _ in range(int(swap_rounds)):
        moved = _best_swap(factors, y_t, result, is_complex)
        if moved is None:
            break
        restarted = run(init=moved)
        if restarted.log_evidence[-1] <= result.log_evidence[-1]:
            break
        result = restarted
    if restart_rounds:
        broad_idx, broad_gam = _initial_gammas(factors, float(np.sum(_abs2(y_t))))
        for _ in range(int(restart_rounds)):
            best = result
            for init in _restart_starts(result, broad_idx, broad_gam):
                restarted = run(init=init)
                if _final_evidence(restarted) > _final_evidence(best):
                    best = restarted
            if best is result:
                break
            result = best
    return result


def _final_evidence(result) -> float:
    return float(result.log_evidence[-1]) if result.log_evidence.size else -math.inf


def _restart_starts(result, broad_idx, broad_gam):
    """The EM starts ``(idx, gammas, noise_var)`` of one round of the restart search (see ``restart_rounds``).

    Per factor i: factor i back to the broad start (all its entries, the default profile scaled to its current
    largest variance), the other factors as fitted; then, for each surviving entry of factor i (if it has two
    or more), the fit with that entry removed.
    """
    current = [np.flatnonzero(g > 0) for g in result.factor_gammas]
    if any(c.size == 0 for c in current):
        return  # the fit is empty: there is no factor profile to keep
    for i, g_i in enumerate(result.factor_gammas):
        idx = [broad_idx[i] if k == i else c for k, c in enumerate(current)]
        gam = [g[ix] for g, ix in zip(result.factor_gammas, idx, strict=True)]
        gam[i] = broad_gam[i] * (g_i.max() / broad_gam[i].max())
        yield idx, gam, result.noise_var
        if current[i].size > 1:
            for j in current[i]:
                idx = [c[c != j] if k == i else c for k, c in enumerate(current)]
                yield idx, [g[ix] for g, ix in zip(result.factor_gammas, idx, strict=True)], result.noise_var


def _best_swap(factors, y_t, result, is_complex):
    """``(idx, gammas, noise_var)`` after the one-entry move that most raises the evidence, or None.

    A move changes one factor's variances only, so the evidence of every move of factor ``i`` reuses the
    other factors' eigendecompositions: y is rotated by them once per factor, and each move costs one
    M_i x M_i eigendecomposition, one product and one pass over the M̄ entries (no posterior is formed).
    """
    base = [g.copy() for g in result.factor_gammas]
    noise_var = result.noise_var
    m_bar = y_t.size
    d = np.empty(m_bar)
    dz = np.empty(m_bar, dtype=y_t.dtype)
    eigs = [_eigh(_gram(A, g, is_complex)) for A, g in zip(factors, base, strict=True)]
    ps = [np.maximum(p, 0.0) for p, _ in eigs]
    rot = [U.conj() if is_complex else U for _, U in eigs]

    def evidence(A, g, t, p_rest):
        p, U = _eigh(_gram(A, g, is_complex))
        z = _ct(U) @ t  # (M_i, rest): factor i's axis first, the others in order
        logdet, quad, _, _ = kron_eig_solve_unchecked(np.maximum(p, 0.0), p_rest, z.reshape(-1), noise_var, d, dz)
        return combine_evidence(m_bar, 1, is_complex, logdet, quad)

    best_ev, best = None, None
    for i, (A, g) in enumerate(zip(factors, base, strict=True)):
        # y rotated by every factor but i, with factor i's axis moved first.
        rights = [np.eye(A.shape[0]) if k == i else r for k, r in enumerate(rot)]
        t = np.moveaxis(_mode_products_right(rights, y_t), i, 0).reshape(A.shape[0], -1)
        p_rest = _kron_flat([p for k, p in enumerate(ps) if k != i])
        if best_ev is None:
            best_ev = evidence(A, g, t, p_rest)
        for a in np.flatnonzero(g > 0):
            for b in np.flatnonzero((g == 0) & (np.sum(_abs2(A), axis=0) > 0)):
                moved = g.copy()
                moved[b], moved[a] = g[a], 0.0
                ev = evidence(A, moved, t, p_rest)
                if ev > best_ev:
                    best_ev, best = ev, [moved if k == i else x.copy() for k, x in enumerate(base)]
    if best is None:
        return None
    idx = [np.flatnonzero(g > 0) for g in best]
    return idx, [g[ix] for g, ix in zip(best, idx, strict=True)], noise_var


def _run_em(factors, y_t, is_complex, *, mstep, prune_ratios, fixed_noise, max_iter, tol, solver, init=None):
    """The EM loop shared by the Kronecker engines; ``mstep(lam, gammas, idx)`` returns the new factor variances.

    ``idx`` holds the surviving entries of each factor (an M-step that couples neighbours needs them).
    ``mstep=None`` is the SVD M-step, run with the whole loop compiled (:func:`kron_svd_em`, the same
    iteration as the Python loop below with :func:`_svd_mstep`).
    ``init``: ``(idx, gammas, noise_var)`` to start from instead of the default broad start.
    """
    n_factors = len(factors)
    ratios = np.asarray(prune_ratios, dtype=np.float64)
    m_bar = y_t.size
    y2 = float(np.sum(_abs2(y_t)))
    y_power = y2 / m_bar if y2 > 0 else 1.0
    learn_noise = fixed_noise is None
    sigma2 = 0.1 * y_power if learn_noise else fixed_noise
    noise_floor = _NOISE_FLOOR * y_power

    if init is None:
        idx, gam = _initial_gammas(factors, y2)
    else:
        idx, gam, start_noise = init
        sigma2 = start_noise if learn_noise else sigma2

    def sub(i):
        # A C-contiguous, writeable copy: the compiled E-step takes the factors as one homogeneous tuple.
        return np.ascontiguousarray(factors[i][:, idx[i]])

    trace: list[float] = []
    converged = False
    n_iter = 0
    empty = any(g.size == 0 for g in gam)
    if mstep is None and not empty:
        # SVD-KroSBL: the same loop, compiled (kron_svd_em), on C-contiguous copies of the inputs.
        dtype = np.complex128 if is_complex else np.float64
        out = kron_svd_em_unchecked(
            tuple(np.ascontiguousarray(A, dtype=dtype) for A in factors),
            tuple(np.ascontiguousarray(ix, dtype=np.int64) for ix in idx),
            tuple(np.ascontiguousarray(g, dtype=np.float64) for g in gam),
            np.ascontiguousarray(y_t.reshape(-1)),
            float(sigma2),
            learn_noise,
            noise_floor,
            ratios,
            max_iter,
            tol,
        )
        idx, gam, sigma2, mean, sigma_diag, logdets, quads, n_iter, converged, empty = out
        trace = list(combine_evidence(m_bar, 1, is_complex, logdets, quads))
        if not empty:
            shape = tuple(g.size for g in gam)
            post_mean, post_sigma = mean.reshape(shape), sigma_diag.reshape(shape)
    elif not empty:
        sub_factors = [sub(i) for i in range(n_factors)]
        sub_h = [np.ascontiguousarray(_ct(A)) for A in sub_factors]
        stats = _estep(sub_factors, y_t, gam, sigma2, is_complex, sub_h)
        for n_iter in range(1, max_iter + 1):  # noqa: B007 - reported after the loop
            if not stats.top > 0:  # Λ >= 0: no positive second moment (or a NaN)
                break
            lam = stats.second_moment
            new = mstep(lam, gam, idx)
            new_sigma2 = sigma2
            if learn_noise:
                new_sigma2 = max((stats.resid2 + sigma2 * stats.sum_well) / m_bar, noise_floor)

            # Pruning, and the relative change of the Kronecker vector on the old support (pruned entries 0).
            new = [np.ascontiguousarray(g, dtype=np.float64) for g in new]
            keeps, n_kept, change, old_norm = kron_prune_change_unchecked(tuple(gam), tuple(new), ratios)
            pruned = [int(c) < g.size for c, g in zip(n_kept, new, strict=True)]
            rel = change / max(old_norm, _TINY)
            noise_rel = abs(new_sigma2 - sigma2) / sigma2

            idx = [ix[k] if cut else ix for ix, k, cut in zip(idx, keeps, pruned, strict=True)]
            gam = [g[k] if cut else g for g, k, cut in zip(new, keeps, pruned, strict=True)]
            sigma2 = new_sigma2
            if any(g.size == 0 for g in gam):
                empty = True
                break
            if any(pruned):
                sub_factors = [sub(i) for i in range(n_factors)]
                sub_h = [np.ascontiguousarray(_ct(A)) for A in sub_factors]
            stats = _estep(sub_factors, y_t, gam, sigma2, is_complex, sub_h)
            trace.append(stats.log_evidence)
            if rel <= tol and noise_rel <= tol:
                converged = True
                break
        post_mean, post_sigma = stats.mean, stats.sigma_diag

    dims = [A.shape[1] for A in factors]
    factor_gammas = []
    for ix, g, n_i in zip(idx, gam, dims, strict=True):
        full = np.zeros(n_i)
        if not empty:
            full[ix] = g
        factor_gammas.append(full)
    dtype = np.complex128 if is_complex else np.float64
    coef = np.zeros(dims, dtype=dtype)
    post_var = np.zeros(dims)
    if empty:
        # No weight survives: the model is pure noise.
        logdet = m_bar * math.log(sigma2)
        trace.append(combine_evidence(m_bar, 1, is_complex, logdet, y2 / sigma2))
    else:
        sel = np.ix_(*idx)
        coef[sel] = post_mean
        post_var[sel] = post_sigma
    active = _outer([g > 0 for g in factor_gammas]).reshape(-1)
    return KroneckerSBLPosterior(
        coef=coef.reshape(-1),
        factor_gammas=factor_gammas,
        gamma=_outer(factor_gammas).reshape(-1),
        active=active.astype(bool),
        posterior_var=post_var.reshape(-1),
        noise_var=float(sigma2),
        log_evidence=np.asarray(trace, dtype=np.float64),
        n_iter=int(n_iter),
        converged=bool(converged),
        solver=solver,
    )
