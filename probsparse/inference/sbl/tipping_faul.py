r"""Tipping & Faul's fast marginal-likelihood maximisation: sequential add / re-estimate / delete.

The log evidence separates in any one precision :math:`\alpha_i = 1/\gamma_i` (Tipping & Faul 2003, eq. 7),
here written for :math:`L` target columns and with :math:`c = 1/2` (real) or :math:`c = 1` (complex):

.. math::

    \mathcal{L}(\alpha) = \mathcal{L}(\alpha_{-i})
        + c\left[L\log\frac{\alpha_i}{\alpha_i + s_i} + \frac{\|q_i\|^2}{\alpha_i + s_i}\right],

with :math:`s_i = \phi_i^H C_{-i}^{-1}\phi_i` and :math:`q_i = \phi_i^H C_{-i}^{-1} Y` computed without
basis :math:`i`. Its maximiser is :math:`\alpha_i = s_i^2/\theta_i` when
:math:`\theta_i = \|q_i\|^2/L - s_i > 0` and :math:`\alpha_i = \infty` (basis out of the model)
otherwise. Each iteration scores this move for every basis (:func:`probsparse.kernels.select_action`) and
applies the best one with rank-one updates of :math:`\Sigma, \mu` and of
:math:`S_i = \phi_i^H C^{-1}\phi_i`, :math:`Q_i = \phi_i^H C^{-1} Y` for all bases.

Cost and memory. The engine keeps :math:`\Phi^H\Phi_A` (d x m, one column per active basis, filled when
the basis is added), :math:`\Phi^H Y` and the (m, m) :math:`\Sigma`. A re-estimation or deletion costs
:math:`O(dm)`; an addition also needs :math:`\Phi^H\phi_i` (:math:`O(nd)`); a noise update costs
:math:`O(dL + m^2)` (see :meth:`_SequentialSBL.rescale`). A full recomputation of :math:`\Sigma, S, Q`
(:math:`O(dm^2 + m^3)`, without touching :math:`\Phi`) only happens at the end, or if rounding made the
statistics inconsistent. Memory is :math:`O(nd + dm)` (:math:`\Phi` itself is not copied); no (d, d) or
(n, n) matrix is formed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import linalg
from scipy.linalg import blas

from probsparse._validation import check_matrix_and_targets, check_positive_int, check_positive_real
from probsparse.inference.sbl.evidence import check_tol, combine_evidence
from probsparse.inference.sbl.posterior import SBLPosterior
from probsparse.kernels.sbl_updates import (
    ACTION_ADD,
    ACTION_DELETE,
    ACTION_NONE,
    ACTION_REESTIMATE,
    rank_one_update,
    select_action,
)

__all__ = ["fit_tipping_faul"]

_ACTION_NAMES = {
    ACTION_NONE: "none",
    ACTION_ADD: "add",
    ACTION_REESTIMATE: "reestimate",
    ACTION_DELETE: "delete",
}

# Learned noise never goes below this fraction of the mean power of Y (SparseBayes' BetaMaxFactor).
_NOISE_FLOOR = 1e-6


def _row_sq_norms(A: np.ndarray) -> np.ndarray:
    """Contiguous float64 row sums of |A|^2 (the kernels take contiguous arrays)."""
    if np.iscomplexobj(A):
        return np.einsum("ij,ij->i", A.real, A.real) + np.einsum("ij,ij->i", A.imag, A.imag)
    return np.einsum("ij,ij->i", A, A)


def _hermitian_rank_one(Sigma: np.ndarray, s: np.ndarray, coef: float) -> None:
    """In place ``Sigma += coef * s s^H`` for a C-ordered Hermitian ``Sigma``, without temporaries.

    BLAS ``ger`` / ``gerc`` update a Fortran-ordered matrix in place; ``Sigma.T`` is one, and holds
    ``conj(Sigma)``, whose update is ``coef * conj(s) conj(s)^H``.
    """
    if Sigma.size == 0:
        return
    if np.iscomplexobj(Sigma):
        x = np.conj(s)
        out = blas.zgerc(coef, x, x, a=Sigma.T, overwrite_a=True)
    else:
        out = blas.dger(coef, s, s, a=Sigma.T, overwrite_a=True)
    if not np.shares_memory(out, Sigma):  # pragma: no cover - BLAS always works in place here
        Sigma[...] = out.T


class _SequentialSBL:
    """State of the sequential algorithm on unit-norm columns (internal).

    Column ``i`` of the working dictionary is ``Phi[:, i] * inv_norm[i]``; zero columns stay zero and are
    never addable. ``basis[:, p]`` holds the inner products of all working columns with the ``p``-th active
    one.
    """

    def __init__(self, Phi, Y2, beta, alignment_max):
        self.Phi = Phi
        self.Y2 = Y2
        self.n, self.d = Phi.shape
        self.L = Y2.shape[1]
        self.is_complex = np.iscomplexobj(Phi)
        self.dtype = Phi.dtype
        norm = np.sqrt(_row_sq_norms(Phi.T))
        self.nonzero = norm > 0
        with np.errstate(divide="ignore"):
            self.inv_norm = np.where(self.nonzero, 1.0 / norm, 0.0)
        self.unit = self.nonzero.astype(np.float64)  # phi_i^H phi_i of the working columns
        # Phi^H Y of the working columns, (d, L): computed as (Y^H Phi)^H so that Phi is never copied.
        self.PhiH_Y = np.ascontiguousarray((Y2.conj().T @ Phi).conj().T * self.inv_norm[:, None])
        self.y_sqnorm = float(np.vdot(Y2, Y2).real)
        self.beta = beta
        self.alignment_max = alignment_max

        d = self.d
        self.alpha = np.full(d, np.inf)
        self.active = np.zeros(d, dtype=bool)
        self.pos = np.full(d, -1, dtype=np.int64)  # position of each basis in the active list
        self.blocked = np.zeros(d, dtype=np.int64)  # number of active bases each basis is aligned with
        self.addable = self.nonzero.copy()
        self.order = np.zeros(0, dtype=np.int64)  # active bases, in the order of basis / Sigma / mu
        self.basis = np.zeros((d, min(d, 16)), dtype=self.dtype, order="F")
        self.Sigma = np.zeros((0, 0), dtype=self.dtype)
        self.mu = np.zeros((0, self.L), dtype=self.dtype)
        self.S = np.zeros(d)
        self.Q = np.zeros((d, self.L), dtype=self.dtype)
        self.Q2 = np.zeros(d)
        self.logdet_c = 0.0
        # Scratch buffers of the action kernel, reused at every iteration.
        self.deltas = np.empty(d)
        self.kinds = np.empty(d, dtype=np.int8)

    @property
    def m(self) -> int:
        return self.order.shape[0]

    def _basis_active(self) -> np.ndarray:
        return self.basis[:, : self.m]

    def _column_products(self, i: int) -> np.ndarray:
        """Inner products of every working column with working column ``i``: (Phi_w^H phi_w,i), shape (d,)."""
        phi_i = self.Phi[:, i]
        col = (phi_i.conj() @ self.Phi).conj() if self.is_complex else phi_i @ self.Phi
        col *= self.inv_norm * self.inv_norm[i]
        return col

    # ------------------------------------------------------------------------------------------------------
    # Full recomputation: at the start, at the end, and if rounding drift broke the statistics.
    # ------------------------------------------------------------------------------------------------------
    def full_statistics(self) -> None:
        beta, m = self.beta, self.m
        if m == 0:
            self.Sigma = np.zeros((0, 0), dtype=self.dtype)
            self.mu = np.zeros((0, self.L), dtype=self.dtype)
            self.S = beta * self.unit
            self.Q = np.ascontiguousarray(beta * self.PhiH_Y)
            self.Q2 = _row_sq_norms(self.Q)
            self.logdet_c = -self.n * math.log(beta)
            return
        B = self._basis_active()
        G = B[self.order]
        alpha_a = self.alpha[self.order]
        A = beta * G
        A = 0.5 * (A + A.conj().T)
        A[np.diag_indices(m)] += alpha_a
        U = linalg.cholesky(A, lower=False, check_finite=False)
        U_inv = linalg.solve_triangular(U, np.eye(m, dtype=U.dtype), lower=False, check_finite=False)
        self.Sigma = U_inv @ U_inv.conj().T
        self.mu = beta * (self.Sigma @ self.PhiH_Y[self.order])
        # diag(Phi^H Phi_A Sigma Phi_A^H Phi) as row norms of (Phi^H Phi_A) U^{-1}: one BLAS gemm, O(d m^2).
        W = B @ U_inv
        self.S = beta * self.unit - beta * beta * _row_sq_norms(W)
        self.Q = np.ascontiguousarray(beta * (self.PhiH_Y - B @ self.mu))
        self.Q2 = _row_sq_norms(self.Q)
        self.logdet_c = (
            -self.n * math.log(beta)
            - float(np.sum(np.log(alpha_a)))
            + 2.0 * float(np.sum(np.log(np.real(np.diagonal(U)))))
        )

    def statistics_consistent(self) -> bool:
        """An active basis must have S_i < alpha_i; rounding drift that breaks this calls for a recompute."""
        if self.m == 0:
            return True
        return bool(np.all(self.S[self.order] < self.alpha[self.order]))

    # ------------------------------------------------------------------------------------------------------
    # The three moves (Tipping & Faul 2003, Appendix A), all O(d m) apart from the O(n d) product of an add.
    # ------------------------------------------------------------------------------------------------------
    def add(self, i: int, alpha_new: float) -> None:
        beta, m = self.beta, self.m
        col = self._column_products(i)
        S_i = self.S[i]
        s_ii = 1.0 / (alpha_new + S_i)
        mu_i = s_ii * self.Q[i]
        if m:
            u = beta * (self.Sigma @ col[self.order])
            t = beta * col - beta * (self._basis_active() @ u)
            Sigma = np.empty((m + 1, m + 1), dtype=self.dtype)
            Sigma[:m, :m] = self.Sigma + s_ii * np.outer(u, u.conj())
            Sigma[:m, m] = -s_ii * u
            Sigma[m, :m] = -s_ii * u.conj()
            Sigma[m, m] = s_ii
            self.mu = np.vstack([self.mu - np.outer(u, mu_i), mu_i[None, :]])
            self.Sigma = Sigma
        else:
            t = beta * col
            self.Sigma = np.full((1, 1), s_ii, dtype=self.dtype)
            self.mu = mu_i[None, :].copy()
        rank_one_update(self.S, self.Q, self.Q2, t, -s_ii, np.ascontiguousarray(-mu_i))
        self.logdet_c += math.log1p(S_i / alpha_new)
        if m == self.basis.shape[1]:
            grown = np.zeros((self.d, min(self.d, 2 * m)), dtype=self.dtype, order="F")
            grown[:, :m] = self.basis
            self.basis = grown
        self.basis[:, m] = col
        self.order = np.append(self.order, i)
        self.pos[i] = m
        self.alpha[i] = alpha_new
        self.active[i] = True
        self._update_alignment(col, +1)

    def reestimate(self, i: int, alpha_new: float) -> None:
        p = self.pos[i]
        alpha_old = self.alpha[i]
        S_i = self.S[i]
        s_j = self.Sigma[:, p].copy()
        kappa = 1.0 / (np.real(self.Sigma[p, p]) + 1.0 / (alpha_new - alpha_old))
        mu_p = self.mu[p].copy()
        t = self.beta * (self._basis_active() @ s_j)
        rank_one_update(self.S, self.Q, self.Q2, t, kappa, np.ascontiguousarray(kappa * mu_p))
        _hermitian_rank_one(self.Sigma, s_j, -kappa)
        self.mu -= kappa * np.outer(s_j, mu_p)
        # |C| changes by 1 + S_i (1/alpha_new - 1/alpha_old) (matrix determinant lemma), S_i before the move.
        self.logdet_c += math.log1p(S_i * (1.0 / alpha_new - 1.0 / alpha_old))
        self.alpha[i] = alpha_new

    def delete(self, i: int) -> None:
        p, m = self.pos[i], self.m
        alpha_old = self.alpha[i]
        S_i = self.S[i]
        s_j = self.Sigma[:, p].copy()
        s_pp = float(np.real(self.Sigma[p, p]))
        mu_p = self.mu[p].copy()
        t = self.beta * (self._basis_active() @ s_j)
        rank_one_update(self.S, self.Q, self.Q2, t, 1.0 / s_pp, np.ascontiguousarray(mu_p / s_pp))
        _hermitian_rank_one(self.Sigma, s_j, -1.0 / s_pp)
        self.mu -= np.outer(s_j, mu_p) / s_pp
        self.logdet_c += math.log1p(-S_i / alpha_old)
        self._update_alignment(self.basis[:, p], -1)
        # Swap-remove: the last active basis takes position p, so nothing of size d x m is shifted.
        last = m - 1
        keep = np.arange(last)
        if p != last:
            keep[p] = last
            self.basis[:, p] = self.basis[:, last]
            moved = self.order[last]
            self.order[p] = moved
            self.pos[moved] = p
        self.order = self.order[:last].copy()
        self.Sigma = self.Sigma[np.ix_(keep, keep)]
        self.mu = self.mu[keep]
        self.pos[i] = -1
        self.alpha[i] = np.inf
        self.active[i] = False

    def apply(self, kind: int, i: int, alpha_new: float) -> None:
        if kind == ACTION_ADD:
            self.add(i, alpha_new)
        elif kind == ACTION_REESTIMATE:
            self.reestimate(i, alpha_new)
        else:
            self.delete(i)

    def _update_alignment(self, col: np.ndarray, sign: int) -> None:
        # Bases whose normalised correlation with an active basis exceeds alignment_max cannot be added: they
        # would only split one weight across near-identical columns (SparseBayes' BasisAlignmentTest).
        self.blocked += sign * (np.abs(col) > self.alignment_max)
        np.logical_and(self.nonzero, self.blocked == 0, out=self.addable)

    # ------------------------------------------------------------------------------------------------------
    # Evidence and noise.
    # ------------------------------------------------------------------------------------------------------
    def _fit_inner(self) -> float:
        """Re tr((Phi_A^H Y)^H mu): the part of the quadratic form explained by the active bases."""
        if self.m == 0:
            return 0.0
        return float(np.real(np.vdot(self.PhiH_Y[self.order], self.mu)))

    def log_evidence(self) -> float:
        # tr(Y^H C^{-1} Y) = beta (||Y||^2 - Re tr((Phi_A^H Y)^H mu)),
        # since C^{-1} = beta I - beta^2 Phi_A Sigma Phi_A^H.
        quad = self.beta * (self.y_sqnorm - self._fit_inner())
        return combine_evidence(self.n, self.L, self.is_complex, self.logdet_c, quad)

    def rescale(self, noise_floor: float, tol: float) -> bool:
        r"""Optimal joint rescaling :math:`(\gamma, \sigma^2) \to (c\gamma, c\sigma^2)`; True if it moved.

        Scaling both scales :math:`C` by :math:`c`, which changes the evidence by
        :math:`-k[nL\log c + \operatorname{tr}(Y^H C^{-1} Y)(1/c - 1)]` (:math:`k = 1/2` real, 1 complex),
        largest at :math:`c = \operatorname{tr}(Y^H C^{-1} Y) / (nL)`. Every statistic follows in O(dL + m^2):
        :math:`S, Q \to S/c, Q/c`, :math:`\alpha \to \alpha/c`, :math:`\Sigma \to c\Sigma`, :math:`\mu`
        unchanged. A point where this and every single-basis move are optimal is also stationary in
        :math:`\sigma^2` alone (the derivative along the scaling is
        :math:`\sum_i \gamma_i \partial_{\gamma_i} + \sigma^2 \partial_{\sigma^2}`), so this move replaces
        SparseBayes' noise re-estimate and the O(dm^2) recomputation of the statistics that follows it.
        """
        quad = self.beta * (self.y_sqnorm - self._fit_inner())
        if not quad > 0.0:
            return False
        c = quad / (self.n * self.L)
        # Clamp at the floor; c stays between 1 and the optimum, so the move still raises the evidence.
        c = max(c, noise_floor * self.beta)
        if abs(math.log(c)) <= tol:
            return False
        self.beta /= c
        self.S /= c
        self.Q /= c
        self.Q2 /= c * c
        self.alpha[self.order] /= c
        self.Sigma *= c
        self.logdet_c += self.n * math.log(c)
        return True

    def to_posterior(self, Y_ndim, trace, n_iter, converged, noise_var=None) -> SBLPosterior:
        d, L = self.d, self.L
        order = np.sort(self.order)
        perm = self.pos[order]
        scale = self.inv_norm[order]
        coef = np.zeros((d, L), dtype=self.dtype)
        coef[order] = self.mu[perm] * scale[:, None]
        gamma = np.zeros(d)
        gamma[order] = scale * scale / self.alpha[order]
        cov = self.Sigma[np.ix_(perm, perm)] * np.outer(scale, scale)
        cov = 0.5 * (cov + cov.conj().T)
        return SBLPosterior(
            coef=coef[:, 0] if Y_ndim == 1 else coef,
            active=self.active.copy(),
            gamma=gamma,
            cov=cov,
            noise_var=float(noise_var) if noise_var is not None else 1.0 / self.beta,
            log_evidence=np.asarray(trace, dtype=np.float64),
            n_iter=int(n_iter),
            converged=bool(converged),
            engine="tipping_faul",
        )


def _resolve_size_penalty(size_penalty, n: int, d: int, L: int) -> float:
    """The penalty in nats from a number or the name of a criterion."""
    if isinstance(size_penalty, str):
        rules = {"ric": math.log(d), "bic": 0.5 * math.log(n * L)}
        if size_penalty not in rules:
            raise ValueError(f"size_penalty must be a number >= 0, 'ric' or 'bic', got {size_penalty!r}")
        return rules[size_penalty]
    if isinstance(size_penalty, bool) or not isinstance(size_penalty, int | float | np.floating | np.integer):
        raise TypeError(f"size_penalty must be a number >= 0, 'ric' or 'bic', got {size_penalty!r}")
    if not (math.isfinite(size_penalty) and size_penalty >= 0):
        raise ValueError(f"size_penalty must be finite and >= 0, got {size_penalty}")
    return float(size_penalty)


def _negligible(choice, state: _SequentialSBL, tol: float, min_gain: float) -> bool:
    """Whether the best move is too small to be worth making (the stopping rule)."""
    if choice.kind == ACTION_NONE:
        return True
    if choice.kind == ACTION_DELETE:
        return False  # a basis with theta <= 0 is always removed
    if choice.delta < min_gain:
        return True
    if choice.kind != ACTION_REESTIMATE:
        return False
    # "<=" so that tol = 0 still stops on a re-estimation that would not change alpha at all.
    return abs(math.log(choice.new_alpha / state.alpha[choice.index])) <= tol


def fit_tipping_faul(
    Phi,
    Y,
    *,
    noise_var=None,
    max_iter: int = 10000,
    tol: float = 1e-6,
    alignment_tol: float = 1e-3,
    noise_update_every: int = 1,
    size_penalty: float | str = 0.0,
    callback: Callable[[dict], bool | None] | None = None,
) -> SBLPosterior:
    r"""Sparse Bayesian learning by Tipping & Faul's fast sequential evidence maximisation.

    Maximises :math:`\log p(Y \mid \gamma, \sigma^2)` (see :func:`probsparse.inference.sbl.log_evidence`) over
    the prior variances one basis at a time, starting from the empty model. At each iteration every basis is
    scored (with :math:`c = 1/2` real, :math:`c = 1` complex, :math:`L` target columns):

    .. math::

        \theta_i = \|q_i\|^2 / L - s_i, \qquad \alpha_i^\star = s_i^2 / \theta_i \ (\theta_i > 0),

    an inactive basis with :math:`\theta_i > 0` may be added (gain :math:`cL(r - 1 - \log r)`,
    :math:`r = \|Q_i\|^2/(LS_i)`), an active one re-estimated to :math:`\alpha_i^\star`, or deleted when
    :math:`\theta_i \le 0`. Deletions have priority; otherwise the move with the largest gain is applied.

    Parameters
    ----------
    Phi : array_like of shape (n, d)
        Design (dictionary) matrix, real or complex. Columns are scaled to unit norm internally; results are
        returned in the original scale. Zero columns are never added.
    Y : array_like of shape (n,) or (n, L)
        Targets; several columns share one support (M-SBL). Complex data use the circular Gaussian evidence.
    noise_var : float or None
        Fixed noise variance :math:`\sigma^2`, or ``None`` to learn it: initialised at 0.01 times the mean
        power of ``Y`` (as SparseBayes), floored at 1e-6 times it, and updated every ``noise_update_every``
        iterations by the evidence-optimal joint rescaling
        :math:`(\gamma, \sigma^2) \to (c\gamma, c\sigma^2)`, :math:`c = \operatorname{tr}(Y^H C^{-1} Y)/(nL)`.
        That move has the same fixed points as SparseBayes' re-estimate of :math:`\sigma^2` followed by a full
        recomputation, but costs :math:`O(dL + m^2)` instead of :math:`O(dm^2)` and never lowers the
        evidence.
    max_iter : int
        Maximum number of iterations (one move each).
    tol : float
        Stop when the best move would raise the log evidence by less than ``tol`` per observation
        (``tol * n * L`` nats), or is a re-estimation changing :math:`\log\alpha_i` by less than ``tol``, or
        no move raises it at all; with learned noise the last rescaling must also change
        :math:`\log\sigma^2` by at most ``tol``. The gain of a re-estimation is quadratic in the change of
        :math:`\log\alpha_i`, so converging :math:`\gamma` to a relative precision :math:`\epsilon` takes
        ``tol`` of the order of :math:`\epsilon^2`.
    alignment_tol : float
        A basis whose normalised correlation :math:`|\phi_i^H\phi_j| / (\|\phi_i\|\|\phi_j\|)` with an active
        basis exceeds ``1 - alignment_tol`` is not added while that basis is active. With duplicated (or
        nearly collinear) columns the weight therefore goes to one of them only, the first one the algorithm
        adds, and the other keeps a zero coefficient. ``0`` disables the test except for exact duplicates.
    noise_update_every : int
        Period, in iterations, of the noise updates (learned noise only).
    size_penalty : float or {"ric", "bic"}, default=0.0
        :math:`\kappa \ge 0`: maximise :math:`\log p(Y \mid \gamma, \sigma^2) - \kappa |\mathcal{A}|`
        instead of the evidence alone, i.e. add a prior :math:`p(\mathcal{A}) \propto e^{-\kappa|\mathcal{A}|}`
        on the active set. A basis then enters only if it raises the evidence by more than :math:`\kappa` nats
        and leaves when it contributes less. ``"ric"`` is :math:`\log d` (the risk inflation criterion of
        Foster & George, 1994: a noise column enters with probability of order 1/d), ``"bic"`` is
        :math:`\frac12 \log(nL)`. ``0`` is Tipping & Faul's algorithm. See Notes for when it matters.
    callback : callable, optional
        Called after every iteration with a dict (``iteration``, ``action`` in ``{"add", "reestimate",
        "delete", "none"}``, ``index``, ``log_evidence``, ``n_active``, ``noise_var``); returning ``True``
        stops the run (``converged`` is then False).

    Returns
    -------
    SBLPosterior
        ``log_evidence[k]`` is the exact log evidence after iteration ``k + 1``. Every move raises it, with
        fixed or learned noise, so the trace never decreases (up to rounding).

    Notes
    -----
    Per iteration: :math:`O(d)` to score all bases, :math:`O(dm)` for the rank-one updates, :math:`O(nd)` for
    the product :math:`\Phi^H\phi_i` of an addition, :math:`O(dL + m^2)` for a noise update. Memory
    :math:`O(nd + dm)`. Unlike SparseBayes, the last basis may be deleted (the empty model is then the
    evidence optimum), and the alignment test is applied when a basis is added (to all bases at once)
    rather than when an aligned basis is selected.

    What the evidence optimum looks like. With noise, a basis unrelated to the signal still raises the
    evidence when its squared normalised correlation with the residual exceeds :math:`\sigma^2` (about a
    third of nearly orthogonal noise columns do), so the active set usually holds, besides the signal, bases
    with small weights that fit the noise; rank them by :math:`|\mu_i| / \sqrt{\Sigma_{ii}}` to separate
    them. With learned noise and more columns than rows the evidence often has no interior maximum in
    :math:`\sigma^2`: it keeps rising as :math:`\sigma^2 \to 0` while the model approaches an
    interpolation with up to n bases. The run then ends with :math:`\sigma^2` at its floor and many active
    bases. ``size_penalty="ric"`` addresses both: a noise column must beat :math:`\kappa = \log d` nats
    (a normalised correlation of about :math:`\sqrt{2\log d}` noise standard deviations) to enter, so the
    path stays near the sparse, correctly-noised model instead of drifting to the interpolating one.

    References
    ----------
    Tipping, M. E. & Faul, A. C. (2003). Fast marginal likelihood maximisation for sparse Bayesian models.
    Proc. AISTATS. Their :math:`\alpha_i = 1/\gamma_i` (ours after rescaling the columns to unit norm),
    :math:`\beta = 1/\sigma^2`, :math:`S_m, Q_m, s_m, q_m` and :math:`\theta_m = q_m^2 - s_m` (ours with
    :math:`\|q_m\|^2/L` for :math:`L` columns). Tipping's SparseBayes V2 (MATLAB) for the initial and
    minimum noise, deletion priority and alignment test.
    """
    Phi, Y = check_matrix_and_targets(Phi, Y, X_name="Phi", y_name="Y", allow_complex=True)
    if np.iscomplexobj(Phi) != np.iscomplexobj(Y):
        Phi, Y = Phi.astype(np.complex128), Y.astype(np.complex128)
    learn_noise = noise_var is None
    if not learn_noise:
        noise_var = check_positive_real(noise_var, "noise_var")
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_tol(tol)
    noise_update_every = check_positive_int(noise_update_every, "noise_update_every")
    alignment_tol = float(alignment_tol)
    if not (math.isfinite(alignment_tol) and 0.0 <= alignment_tol < 1.0):
        raise ValueError(f"alignment_tol must be in [0, 1), got {alignment_tol}")
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable or None")
    n_targets = 1 if Y.ndim == 1 else Y.shape[1]
    size_penalty = _resolve_size_penalty(size_penalty, Phi.shape[0], Phi.shape[1], n_targets)

    Y2 = Y[:, None] if Y.ndim == 1 else Y
    y_power = float(np.vdot(Y2, Y2).real) / Y2.size
    if y_power == 0.0:
        y_power = 1.0
    noise_floor = _NOISE_FLOOR * y_power
    sigma2 = 0.01 * y_power if learn_noise else noise_var
    state = _SequentialSBL(Phi, Y2, 1.0 / sigma2, 1.0 - alignment_tol)
    min_gain = tol * Y2.size  # tol nats per observation
    state.full_statistics()

    trace: list[float] = []
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 - n_iter is reported after the loop
        choice = select_action(
            state.S,
            state.Q2,
            state.alpha,
            state.active,
            state.addable,
            n_targets=state.L,
            complex_data=state.is_complex,
            deltas=state.deltas,
            kinds=state.kinds,
            size_penalty=size_penalty,
        )
        kind, i = choice.kind, choice.index
        finished = _negligible(choice, state, tol, min_gain)
        if not finished:
            state.apply(kind, i, choice.new_alpha)

        noise_moved = False
        if learn_noise and (finished or n_iter % noise_update_every == 0):
            noise_moved = state.rescale(noise_floor, tol)
        if not state.statistics_consistent():
            state.full_statistics()
        trace.append(state.log_evidence())

        if callback is not None:
            info = {
                "iteration": n_iter,
                "action": "none" if finished else _ACTION_NAMES[kind],
                "index": -1 if finished else i,
                "log_evidence": trace[-1],
                "objective": trace[-1] - size_penalty * state.m,
                "n_active": state.m,
                "noise_var": 1.0 / state.beta,
            }
            if callback(info) is True:
                break
        if finished and not noise_moved:
            converged = True
            break

    state.full_statistics()
    return state.to_posterior(Y.ndim, trace, n_iter, converged, None if learn_noise else noise_var)
