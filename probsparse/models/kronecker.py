"""Kronecker-structured sparse Bayesian learning as an estimator: ``KroneckerSBLRegressor``.

The design is given as its factors rather than as one matrix, so ``fit`` takes ``(factors, y)`` instead of
scikit-learn's ``(X, y)``; otherwise the estimator keeps scikit-learn's conventions (parameters stored by
``__init__`` and validated in ``fit``, fitted attributes ending in ``_``, ``fit`` returning ``self``).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from .._kron import kron_matvec
from ..inference.sbl.kronecker import KroneckerSBLPosterior, _check_factors_and_y, fit_kronecker_sbl
from ..inference.sbl.kronecker_pc import fit_pc_kronecker_sbl

__all__ = ["KroneckerSBLRegressor"]


def _solvers() -> dict:
    """Solver name -> engine."""
    solvers = {name: fit_kronecker_sbl for name in ("svd", "am", "ksbl")}
    solvers["pc"] = fit_pc_kronecker_sbl
    return solvers


class KroneckerSBLRegressor(BaseEstimator):
    r"""Sparse Bayesian learning with a Kronecker-structured dictionary and prior.

    .. math::

        y = (A_1 \otimes \cdots \otimes A_I)\, x + n, \qquad
        x \sim \mathcal N(0, \operatorname{diag}(\gamma_1 \otimes \cdots \otimes \gamma_I)), \qquad
        n \sim \mathcal N(0, \sigma^2 I),

    with the factor variances γ_i (and σ² unless given) fitted by EM; the support of x is the Kronecker
    product of the per-factor supports. The dictionary is never formed.

    Parameters
    ----------
    solver : {"svd", "am", "ksbl", "pc"}, default="svd"
        M-step: SVD-KroSBL (rank-one fit of the second moments), AM-KroSBL (alternating minimisation),
        KSBL (one AM sweep per EM iteration), or PC-KroSBL (pattern-coupled, for clustered supports).
    noise_var : float or None, default=None
        Known noise variance; None learns it.
    max_iter : int, default=150
    tol : float, default=1e-4
        Relative change of γ = ⊗γ_i that stops EM.
    prune_ratio : float or None, default=None
        Per-factor pruning ratio; None takes the engine's default (the authors' values).
    solver_options : dict or None, default=None
        Further keyword arguments of the engine (e.g. ``{"coupling": 0.8}`` for ``"pc"``, or ``{"swap_rounds": 3}``
        for a swap search over factor entries after EM, see :func:`~probsparse.inference.sbl.fit_kronecker_sbl`).

    Attributes
    ----------
    coef_ : ndarray of shape (N_1, ..., N_I)
        Posterior mean of x, reshaped per factor (``coef_.ravel()`` is in ``np.kron`` order).
    factor_gammas_ : list of ndarray, the i-th of shape (N_i,)
        Fitted factor variances, 0 where pruned.
    factor_active_ : list of ndarray of bool
        Per-factor supports.
    active_ : ndarray of shape (N_1, ..., N_I), bool
        The Kronecker support.
    posterior_var_ : ndarray of shape (N_1, ..., N_I)
        Posterior variances of x (the diagonal of Σ), 0 off the support.
    noise_variance_ : float
    n_iter_ : int
    scores_ : ndarray
        Log evidence after each EM iteration.

    References
    ----------
    He, Y. & Joseph, G. (2024). Bayesian algorithms for Kronecker-structured sparse vector recovery with
    application to IRS-MIMO channel estimation. IEEE TSP. Their γ_i and σ² are ours.

    Examples
    --------
    >>> from probsparse.datasets import make_kronecker_sparse
    >>> p = make_kronecker_sparse((10, 10, 10), (8, 8, 8), 2, 30.0, seed=0)
    >>> model = KroneckerSBLRegressor(noise_var=p.noise_var).fit(p.factors, p.y)
    >>> model.coef_.shape, int(model.active_.sum())
    ((10, 10, 10), 8)
    """

    def __init__(self, *, solver="svd", noise_var=None, max_iter=150, tol=1e-4, prune_ratio=None, solver_options=None):
        self.solver = solver
        self.noise_var = noise_var
        self.max_iter = max_iter
        self.tol = tol
        self.prune_ratio = prune_ratio
        self.solver_options = solver_options

    def fit(self, factors, y):
        """Fit to the factor matrices ``factors`` (the i-th of shape (M_i, N_i)) and ``y`` (prod M_i,)."""
        solvers = _solvers()
        if self.solver not in solvers:
            raise ValueError(f"solver must be one of {sorted(solvers)}, got {self.solver!r}")
        options = dict(self.solver_options or {})
        kwargs = {"noise_var": self.noise_var, "max_iter": self.max_iter, "tol": self.tol, **options}
        if self.prune_ratio is not None:
            kwargs["prune_ratio"] = self.prune_ratio
        if solvers[self.solver] is fit_kronecker_sbl:
            kwargs["solver"] = self.solver
        post: KroneckerSBLPosterior = solvers[self.solver](factors, y, **kwargs)
        dims = tuple(g.size for g in post.factor_gammas)
        self.coef_ = post.coef.reshape(dims)
        self.factor_gammas_ = post.factor_gammas
        self.factor_active_ = post.factor_active
        self.active_ = post.active.reshape(dims)
        self.posterior_var_ = post.posterior_var.reshape(dims)
        self.noise_variance_ = float(post.noise_var)
        self.n_iter_ = int(post.n_iter)
        self.scores_ = np.asarray(post.log_evidence)
        self.factors_ = [np.asarray(A) for A in factors]
        if not post.converged and post.n_iter >= self.max_iter:
            warnings.warn(
                f"KroneckerSBLRegressor (solver={self.solver!r}) did not converge in max_iter={self.max_iter} "
                f"EM iterations (tol={self.tol:.1e}, {int(self.active_.sum())} active entries). "
                "Increase max_iter or tol.",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def _check_fitted(self):
        if not hasattr(self, "coef_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet; call 'fit' first.")

    def predict(self, factors=None):
        r"""Noise-free prediction :math:`(\otimes A_i)\,\hat x` for ``factors`` (default: the training factors).

        New factors must have the training column counts N_i; the result has shape (prod M_i,).
        """
        self._check_fitted()
        factors = self.factors_ if factors is None else factors
        for i, (A, A_fit) in enumerate(zip(factors, self.factors_, strict=True)):
            if np.shape(A)[1:] != A_fit.shape[1:]:
                raise ValueError(f"factors[{i}] must have {A_fit.shape[1]} columns, got shape {np.shape(A)}")
        factors, _, _ = _check_factors_and_y(factors, np.zeros(int(np.prod([np.shape(A)[0] for A in factors]))))
        return kron_matvec(factors, self.coef_)

    def to_inference_data(self, *, num_draws: int = 1000, seed: int = 0):
        """Draws of x on the Kronecker support as ArviZ ``InferenceData``.

        The engines keep only the diagonal of Σ, so the draws are independent across entries (their
        marginal means and variances are exact; the posterior correlations are not represented). The
        ``feature`` coordinate holds the flat ``np.kron`` index of each active entry.
        """
        from ..diagnostics.arviz import gaussian_posterior_to_inference_data

        self._check_fitted()
        if np.iscomplexobj(self.coef_):
            raise ValueError("to_inference_data supports real-valued fits only; this fit is complex")
        active = np.flatnonzero(self.active_.ravel())
        return gaussian_posterior_to_inference_data(
            self.coef_.ravel()[active],
            np.diag(self.posterior_var_.ravel()[active]),
            active,
            num_draws=num_draws,
            seed=seed,
            log_evidence_trace=self.scores_,
            noise_var=self.noise_variance_,
        )
