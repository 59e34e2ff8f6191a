r"""Posterior and log evidence of the SBL model for fixed hyperparameters.

Model: :math:`Y = \Phi W + E` with :math:`\Phi` of shape (n, d), :math:`Y` of shape (n,) or (n, L),
independent columns, :math:`w_{i\cdot} \sim \mathcal{N}(0, \gamma_i I_L)` and
:math:`E_{kl} \sim \mathcal{N}(0, \sigma^2)` (circular complex Gaussian for complex data). Marginally every
column of :math:`Y` is Gaussian with covariance

.. math::

    C = \sigma^2 I_n + \Phi \Gamma \Phi^H, \qquad \Gamma = \operatorname{diag}(\gamma).

Only the active columns (:math:`\gamma_i > 0`) enter. Two algebraically equal forms are used, whichever is
cheaper for :math:`m` active columns:

* :math:`m \le n`, the "weight space" form: with
  :math:`K = \Gamma^{1/2} \Phi_A^H \Phi_A \Gamma^{1/2} / \sigma^2` and :math:`B = I_m + K = R^H R`
  (Cholesky), :math:`\Sigma = \Gamma^{1/2} B^{-1} \Gamma^{1/2}` and
  :math:`\log|C| = n \log\sigma^2 + \log|B|`. :math:`B` has eigenvalues :math:`\ge 1`, so the
  factorisation is well conditioned however small some :math:`\gamma_i` are.
* :math:`m > n`, the Woodbury "data space" form: :math:`C = L L^H` (Cholesky, n x n),
  :math:`\Sigma = \Gamma - \Gamma \Phi_A^H C^{-1} \Phi_A \Gamma`; never an (m, m) matrix unless the caller
  asks for the covariance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from probsparse._validation import check_finite_real, check_matrix_and_targets, check_positive_real

__all__ = ["log_evidence", "posterior_given_gamma"]


@dataclass
class _GammaStats:
    """Everything an SBL iteration needs at fixed (gamma, noise_var); arrays over the active set only."""

    mean: np.ndarray  # (m, L)
    sigma_diag: np.ndarray  # (m,) diag of the posterior covariance
    well_determined: np.ndarray  # (m,) g_i = 1 - Sigma_ii / gamma_i, computed without cancellation
    resid2: float  # ||Y - Phi_A mean||_F^2
    log_evidence: float
    cov: np.ndarray | None  # (m, m) when requested


def _ct(A: np.ndarray) -> np.ndarray:
    """Conjugate transpose; a free view for real arrays."""
    return A.conj().T if np.iscomplexobj(A) else A.T


def _sq_norm(A: np.ndarray) -> float:
    return float(np.vdot(A, A).real)


def evidence_constant(n: int, n_targets: int, is_complex: bool) -> float:
    r"""The data-independent term: :math:`-\tfrac12 nL\log 2\pi` (real) or :math:`-nL\log\pi` (complex)."""
    if is_complex:
        return -n * n_targets * math.log(math.pi)
    return -0.5 * n * n_targets * math.log(2.0 * math.pi)


def combine_evidence(n: int, n_targets: int, is_complex: bool, logdet_c: float, quad: float) -> float:
    r"""Log evidence from :math:`\log|C|` and :math:`\operatorname{tr}(Y^H C^{-1} Y)`."""
    const = evidence_constant(n, n_targets, is_complex)
    scale = 1.0 if is_complex else 0.5
    return const - scale * (n_targets * logdet_c + quad)


def _stats_empty(Y2: np.ndarray, noise_var: float, is_complex: bool) -> _GammaStats:
    n, L = Y2.shape
    y2 = _sq_norm(Y2)
    logev = combine_evidence(n, L, is_complex, n * math.log(noise_var), y2 / noise_var)
    dtype = Y2.dtype
    return _GammaStats(
        mean=np.zeros((0, L), dtype=dtype),
        sigma_diag=np.zeros(0),
        well_determined=np.zeros(0),
        resid2=y2,
        log_evidence=logev,
        cov=np.zeros((0, 0), dtype=dtype),
    )


def _stats_weight_space(Phi_a, Y2, gamma_a, noise_var, is_complex, want_cov) -> _GammaStats:
    n, L = Y2.shape
    m = Phi_a.shape[1]
    sq = np.sqrt(gamma_a)
    Psc = Phi_a * sq
    K = (_ct(Psc) @ Psc) / noise_var
    B = K + np.eye(m)
    R = linalg.cholesky(B, lower=False, check_finite=False)
    # B^{-1} is needed entry-wise (diag for every iteration, all of it for the covariance); R^{-1} from a
    # triangular solve is the stable way to get it, and m <= n keeps it small.
    R_inv = linalg.solve_triangular(R, np.eye(m, dtype=R.dtype), lower=False, check_finite=False)
    B_inv = R_inv @ _ct(R_inv)
    b = (_ct(Psc) @ Y2) / noise_var
    mean = sq[:, None] * (B_inv @ b)
    b_inv_diag = np.real(np.diagonal(B_inv))
    sigma_diag = gamma_a * b_inv_diag
    # g_i = 1 - (B^{-1})_ii = (B^{-1} K)_ii, summed from the entries so that tiny gamma_i keep full precision.
    well = np.real(np.sum(B_inv * K.conj(), axis=1))
    resid2 = _sq_norm(Y2 - Phi_a @ mean)
    logdet_c = n * math.log(noise_var) + 2.0 * float(np.sum(np.log(np.real(np.diagonal(R)))))
    # tr(Y^H C^{-1} Y) = ||Y - Phi mu||^2 / sigma^2 + sum_i ||mu_i||^2 / gamma_i: no cancellation.
    mu2 = np.real(np.sum(mean * mean.conj(), axis=1))
    quad = resid2 / noise_var + float(np.sum(mu2 / gamma_a))
    cov = None
    if want_cov:
        cov = sq[:, None] * B_inv * sq[None, :]
        cov = 0.5 * (cov + _ct(cov))
    return _GammaStats(
        mean=mean,
        sigma_diag=sigma_diag,
        well_determined=well,
        resid2=resid2,
        log_evidence=combine_evidence(n, L, is_complex, logdet_c, quad),
        cov=cov,
    )


def _stats_data_space(Phi_a, Y2, gamma_a, noise_var, is_complex, want_cov) -> _GammaStats:
    n, L = Y2.shape
    C = (Phi_a * gamma_a) @ _ct(Phi_a)
    C[np.diag_indices(n)] += noise_var
    Lc = linalg.cholesky(C, lower=True, check_finite=False)
    V = linalg.solve_triangular(Lc, Phi_a, lower=True, check_finite=False)  # L^{-1} Phi_A, (n, m)
    W = linalg.solve_triangular(Lc, Y2, lower=True, check_finite=False)  # L^{-1} Y, (n, L)
    mean = gamma_a[:, None] * (_ct(V) @ W)
    S = np.real(np.sum(V * V.conj(), axis=0))  # phi_i^H C^{-1} phi_i
    well = gamma_a * S
    sigma_diag = gamma_a * (1.0 - well)
    resid2 = _sq_norm(Y2 - Phi_a @ mean)
    logdet_c = 2.0 * float(np.sum(np.log(np.real(np.diagonal(Lc)))))
    quad = _sq_norm(W)
    cov = None
    if want_cov:
        Vg = V * gamma_a
        cov = np.diag(gamma_a).astype(Vg.dtype) - _ct(Vg) @ Vg
        cov = 0.5 * (cov + _ct(cov))
    return _GammaStats(
        mean=mean,
        sigma_diag=sigma_diag,
        well_determined=well,
        resid2=resid2,
        log_evidence=combine_evidence(n, L, is_complex, logdet_c, quad),
        cov=cov,
    )


def gamma_stats(
    Phi_a: np.ndarray, Y2: np.ndarray, gamma_a: np.ndarray, noise_var: float, *, want_cov: bool = False
) -> _GammaStats:
    """Posterior statistics over the active columns ``Phi_a`` (internal; inputs already validated).

    ``Y2`` is 2-D (n, L); ``gamma_a`` holds the strictly positive prior variances of the columns of ``Phi_a``.
    Picks the (m, m) form when m <= n and the (n, n) Woodbury form otherwise.
    """
    is_complex = np.iscomplexobj(Phi_a) or np.iscomplexobj(Y2)
    n, m = Phi_a.shape
    if m == 0:
        return _stats_empty(Y2, noise_var, is_complex)
    if m <= n:
        return _stats_weight_space(Phi_a, Y2, gamma_a, noise_var, is_complex, want_cov)
    return _stats_data_space(Phi_a, Y2, gamma_a, noise_var, is_complex, want_cov)


def check_tol(tol) -> float:
    """A stopping tolerance: finite and >= 0 (0 runs until no move helps, or to ``max_iter``)."""
    tol = check_finite_real(tol, "tol")
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    return tol


def _validate(Phi, Y, gamma, noise_var):
    Phi, Y = check_matrix_and_targets(Phi, Y, X_name="Phi", y_name="Y", allow_complex=True)
    if np.iscomplexobj(Y) and not np.iscomplexobj(Phi):
        Phi = Phi.astype(np.complex128)
    elif np.iscomplexobj(Phi) and not np.iscomplexobj(Y):
        Y = Y.astype(np.complex128)
    noise_var = check_positive_real(noise_var, "noise_var")
    gamma = np.asarray(gamma)
    d = Phi.shape[1]
    if gamma.dtype.kind not in "fiu":
        raise TypeError(f"gamma must be real, got dtype {gamma.dtype}")
    if gamma.shape != (d,):
        raise ValueError(f"gamma must have shape ({d},) (one variance per column of Phi), got {gamma.shape}")
    gamma = gamma.astype(np.float64)
    if not np.all(np.isfinite(gamma)) or np.any(gamma < 0):
        raise ValueError("gamma must hold finite, non-negative prior variances")
    return Phi, Y, gamma, noise_var


def posterior_given_gamma(Phi, Y, gamma, noise_var) -> tuple[np.ndarray, np.ndarray]:
    r"""Posterior mean and covariance of the active weights for fixed :math:`\gamma` and :math:`\sigma^2`.

    .. math::

        \Sigma = \left(\Phi_A^H \Phi_A / \sigma^2 + \Gamma_A^{-1}\right)^{-1}, \qquad
        \mu = \Sigma \Phi_A^H Y / \sigma^2,

    over the active set :math:`A = \{i : \gamma_i > 0\}`, evaluated through a Cholesky factor of the cheaper
    of the (m, m) form and the Woodbury (n, n) form (see the module docstring); no (d, d) matrix is formed.

    Parameters
    ----------
    Phi : array_like of shape (n, d)
        Design (dictionary) matrix, real or complex.
    Y : array_like of shape (n,) or (n, L)
        Targets; columns share the prior.
    gamma : array_like of shape (d,)
        Prior variances, >= 0 (zeros are excluded).
    noise_var : float
        Noise variance :math:`\sigma^2 > 0`.

    Returns
    -------
    mean : ndarray of shape (m,) or (m, L)
        Posterior mean over ``np.flatnonzero(gamma > 0)``; the shape follows ``Y``.
    cov : ndarray of shape (m, m)
        Posterior covariance, shared by all columns.

    References
    ----------
    Tipping, M. E. (2001). Sparse Bayesian learning and the relevance vector machine. JMLR 1, 211-244; his
    :math:`\alpha_i = 1/\gamma_i` and :math:`\beta = 1/\sigma^2`.
    """
    Phi, Y, gamma, noise_var = _validate(Phi, Y, gamma, noise_var)
    Y2 = Y[:, None] if Y.ndim == 1 else Y
    idx = np.flatnonzero(gamma > 0)
    st = gamma_stats(Phi[:, idx], Y2, gamma[idx], noise_var, want_cov=True)
    mean = st.mean[:, 0] if Y.ndim == 1 else st.mean
    return mean, st.cov


def log_evidence(Phi, Y, gamma, noise_var) -> float:
    r"""Exact log marginal likelihood :math:`\log p(Y \mid \gamma, \sigma^2)` of the SBL model.

    With :math:`C = \sigma^2 I + \Phi \Gamma \Phi^H` and :math:`L` columns,

    .. math::

        \text{real:}\quad & -\tfrac12\left[nL\log 2\pi + L\log|C|
            + \operatorname{tr}(Y^T C^{-1} Y)\right],\\
        \text{complex:}\quad & -nL\log\pi - L\log|C| - \operatorname{tr}(Y^H C^{-1} Y).

    Evaluated through the cheaper of the (m, m) and (n, n) forms with the determinant lemma
    :math:`|C| = \sigma^{2n}\,|I_m + \Gamma_A^{1/2}\Phi_A^H\Phi_A\Gamma_A^{1/2}/\sigma^2|`.

    Parameters
    ----------
    Phi : array_like of shape (n, d)
    Y : array_like of shape (n,) or (n, L)
    gamma : array_like of shape (d,)
        Prior variances, >= 0.
    noise_var : float
        :math:`\sigma^2 > 0`.

    Returns
    -------
    float
    """
    Phi, Y, gamma, noise_var = _validate(Phi, Y, gamma, noise_var)
    Y2 = Y[:, None] if Y.ndim == 1 else Y
    idx = np.flatnonzero(gamma > 0)
    return gamma_stats(Phi[:, idx], Y2, gamma[idx], noise_var).log_evidence
