"""scikit-learn estimators for sparse Bayesian learning: ``SBLRegressor`` and ``RVMRegressor``.

Both wrap an engine of :mod:`probsparse.inference.sbl` (Tipping–Faul by default); the estimators only
validate input, build the feature matrix Φ, centre for the intercept, call the engine and keep its
posterior. The numerical work lives in the engines.
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics.pairwise import pairwise_kernels
from sklearn.utils.validation import check_is_fitted, validate_data

from ..inference.sbl import ENGINES

__all__ = ["SBLRegressor", "RVMRegressor"]


def _check_params(est) -> None:
    """Validate the hyperparameters shared by both estimators (sklearn: no logic in ``__init__``)."""
    if est.engine not in ENGINES:
        raise ValueError(f"engine must be one of {sorted(ENGINES)}, got {est.engine!r}")
    if est.noise_var is not None:
        if isinstance(est.noise_var, bool) or not isinstance(est.noise_var, Real):
            raise TypeError(f"noise_var must be None (learned) or a positive float, got {est.noise_var!r}")
        if not np.isfinite(est.noise_var) or est.noise_var <= 0:
            raise ValueError(f"noise_var must be a finite positive float or None, got {est.noise_var}")
    if est.max_iter is not None and (
        isinstance(est.max_iter, bool) or not isinstance(est.max_iter, Integral) or est.max_iter < 1
    ):
        raise ValueError(f"max_iter must be None or an integer >= 1, got {est.max_iter!r}")
    if isinstance(est.tol, bool) or not isinstance(est.tol, Real) or not est.tol >= 0:
        raise ValueError(f"tol must be a non-negative float, got {est.tol!r}")
    if est.size_penalty not in ("auto", 0, 0.0) and est.engine != "tipping_faul":
        raise ValueError(
            f"size_penalty applies to engine='tipping_faul' only; engine={est.engine!r} maximises the evidence "
            "alone (leave size_penalty='auto')"
        )


def _engine_kwargs(est, n_samples: int, n_features: int) -> dict:
    kwargs = {"noise_var": est.noise_var, "tol": est.tol}
    if est.max_iter is not None:
        kwargs["max_iter"] = est.max_iter
    if est.engine == "tipping_faul":
        penalty = est.size_penalty
        if isinstance(penalty, str) and penalty == "auto":
            # The evidence alone degenerates (sigma^2 -> 0, noise-fitting bases) only when the bases
            # outnumber the samples; there the log(d) penalty keeps the sparse model.
            penalty = "ric" if n_features > n_samples else 0.0
        kwargs["size_penalty"] = penalty
    return kwargs


class _SBLBase(RegressorMixin, BaseEstimator):
    """Shared fit / predict of the SBL estimators; subclasses define the feature map Φ(X)."""

    # Subclasses define ``_features(X) -> Phi``, the feature map applied in ``fit`` and ``predict``.

    def _prepare_features(self, X: np.ndarray) -> np.ndarray:
        """Called once in ``fit`` before ``_features``; stores what the feature map needs."""

    def _fit_engine(self, X: np.ndarray, y: np.ndarray):
        _check_params(self)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if self.noise_var is None and np.all(np.ptp(y, axis=0) == 0):
            raise ValueError(
                "y is constant: the noise variance cannot be learned from a constant target; "
                "pass noise_var to fit it with known noise"
            )
        self._prepare_features(X)
        Phi = self._features(X)
        if self.fit_intercept:
            self.Phi_offset_ = Phi.mean(axis=0)
            self.y_offset_ = y.mean(axis=0)
            Phi = Phi - self.Phi_offset_
            y = y - self.y_offset_
        else:
            self.Phi_offset_ = np.zeros(Phi.shape[1])
            self.y_offset_ = np.zeros(y.shape[1:]) if y.ndim == 2 else 0.0
        # Columns that are zero (after centring: constant features) carry no information; they are kept out
        # of the engine and reported inactive with zero weight.
        usable = np.linalg.norm(Phi, axis=0) > 0
        if usable.any():
            post = ENGINES[self.engine](Phi[:, usable], y, **_engine_kwargs(self, *Phi[:, usable].shape))
        else:
            post = None
        self._store(post, usable, y)
        return self

    def _store(self, post, usable: np.ndarray, y: np.ndarray) -> None:
        d = usable.size
        n_targets = y.shape[1] if y.ndim == 2 else None
        coef = np.zeros((d, n_targets) if n_targets else d)
        gamma = np.zeros(d)
        active = np.zeros(d, dtype=bool)
        if post is not None:
            coef[usable] = post.coef
            gamma[usable] = post.gamma
            active[usable] = post.active
            self.sigma_ = post.cov
            self.noise_variance_ = float(post.noise_var)
            self.n_iter_ = int(post.n_iter)
            self.scores_ = np.asarray(post.log_evidence, dtype=float)
            converged = post.converged
        else:
            self.sigma_ = np.zeros((0, 0))
            self.noise_variance_ = float(self.noise_var if self.noise_var is not None else np.var(y))
            self.n_iter_, self.scores_, converged = 1, np.zeros(0), True
        self.coef_ = coef.T if n_targets else coef
        self.gamma_ = gamma
        with np.errstate(divide="ignore"):
            self.lambda_ = np.where(active, 1.0 / np.where(active, gamma, 1.0), np.inf)
        self.active_ = active
        self.intercept_ = self.y_offset_ - self.Phi_offset_ @ coef
        if not converged:
            last = np.diff(self.scores_[-2:])
            change = f"{last[0]:.3e}" if last.size else "n/a"
            warnings.warn(
                f"{type(self).__name__} (engine={self.engine!r}) did not converge in max_iter="
                f"{self.n_iter_} iterations (last change of the log evidence: {change}, tol={self.tol:.1e}, "
                f"{int(active.sum())} active features). Increase max_iter or tol.",
                ConvergenceWarning,
                stacklevel=3,
            )

    def predict(self, X, return_std: bool = False):
        r"""Posterior predictive mean (and standard deviation) at ``X``.

        .. math::

            \hat y(x) = \phi(x)^\top \mu + b, \qquad
            \mathrm{std}(x) = \sqrt{\sigma^2 + \phi_A(x)^\top \Sigma\, \phi_A(x)},

        with A the active set, Σ = ``sigma_`` and σ² = ``noise_variance_``. The standard deviation includes
        the noise, so it is that of a new observation. For several targets the std is shared by all.

        Returns
        -------
        y_mean : ndarray of shape (n_samples,) or (n_samples, n_targets)
        y_std : ndarray of shape (n_samples,), only if ``return_std``
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        Phi = self._features(X)
        mean = Phi @ self.coef_.T + self.intercept_
        if not return_std:
            return mean
        Phi_a = Phi[:, self.active_] - self.Phi_offset_[self.active_]
        var = self.noise_variance_ + np.einsum("ij,jk,ik->i", Phi_a, self.sigma_, Phi_a)
        return mean, np.sqrt(np.maximum(var, 0.0))

    def to_inference_data(self, *, num_draws: int = 1000, seed: int = 0, feature_names=None):
        """Posterior draws of the active weights as an ArviZ ``InferenceData``.

        The weights w_A ~ N(μ_A, Σ) are drawn on the active set (dim ``feature``, coords the active
        indices or ``feature_names``); the log-evidence trace ``scores_`` is stored beside them. For several
        targets only the first target's weights are drawn (Σ is shared by all targets).
        """
        from ..diagnostics.arviz import gaussian_posterior_to_inference_data

        check_is_fitted(self)
        coef = self.coef_ if self.coef_.ndim == 1 else self.coef_[0]
        active_idx = np.flatnonzero(self.active_)
        if feature_names is None and hasattr(self, "feature_names_in_"):
            feature_names = self.feature_names_in_
        return gaussian_posterior_to_inference_data(
            coef[active_idx],
            self.sigma_,
            active_idx,
            num_draws=num_draws,
            seed=seed,
            feature_names=feature_names,
            log_evidence_trace=self.scores_,
            noise_var=self.noise_variance_,
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class SBLRegressor(_SBLBase):
    r"""Sparse Bayesian learning (automatic relevance determination) for linear regression.

    .. math::

        y = X w + b + \varepsilon, \quad w_i \sim \mathcal N(0, \gamma_i), \quad
        \varepsilon \sim \mathcal N(0, \sigma^2 I),

    with the variances γ (and σ² unless ``noise_var`` is given) set by maximising the marginal likelihood
    (type-II maximum likelihood). Most γ_i go to zero, which prunes feature i; ``active_`` marks the others.
    With a 2-D ``y`` the columns share one support (multiple measurement vectors, M-SBL).

    Parameters
    ----------
    engine : {"tipping_faul", "em", "mackay"}, default="tipping_faul"
        Tipping–Faul's fast sequential marginal-likelihood algorithm, or the EM / MacKay fixed points.
    noise_var : float or None, default=None
        Known noise variance σ²; None learns it.
    max_iter : int or None, default=None
        Iteration cap; None uses the engine's default.
    tol : float, default=1e-6
        Convergence tolerance passed to the engine.
    size_penalty : "auto", float, "ric" or "bic", default="auto"
        Tipping–Faul only: maximise log evidence − κ·(number of active features), κ = ``size_penalty``
        nats (``"ric"``: log n_features; ``"bic"``: ½ log n_samples; ``0``: plain Tipping–Faul).
        ``"auto"`` is ``"ric"`` when there are more features than samples and ``0`` otherwise (and no
        penalty for the fixed-point engines). Why: with noise and more features than samples, the evidence
        alone keeps many small noise-fitting weights, and with learned noise it drives σ² towards zero (see
        :func:`probsparse.inference.sbl.fit_tipping_faul`); the log(d) penalty keeps the sparse model. With
        more samples than features the evidence alone is well posed and is the classic choice.
    fit_intercept : bool, default=True
        Centre X and y and fit an unpenalised intercept b.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,) or (n_targets, n_features)
        Posterior mean of w, exactly zero outside the active set.
    active_ : ndarray of shape (n_features,), bool
    gamma_ : ndarray of shape (n_features,)
        Prior variances γ (0 for pruned features). ``lambda_ = 1 / gamma_`` are the precisions (inf when pruned).
    sigma_ : ndarray of shape (n_active, n_active)
        Posterior covariance of w over the active features, in the order of ``np.flatnonzero(active_)``.
    noise_variance_ : float
    intercept_ : float or ndarray of shape (n_targets,)
    n_iter_ : int
    scores_ : ndarray
        Log marginal likelihood after each iteration of the engine.

    References
    ----------
    Tipping, M. E. (2001). Sparse Bayesian learning and the relevance vector machine. JMLR 1.
    Tipping, M. E. & Faul, A. C. (2003). Fast marginal likelihood maximisation for sparse Bayesian models.
    AISTATS. Their α_i is our 1/γ_i (``lambda_``), their β is our 1/σ².

    Examples
    --------
    >>> from probsparse.datasets import make_sparse_regression
    >>> p = make_sparse_regression(100, 300, 5, 20.0, seed=0)
    >>> model = SBLRegressor(fit_intercept=False).fit(p.X, p.y)
    >>> int(model.active_.sum())
    5
    """

    def __init__(
        self,
        *,
        engine="tipping_faul",
        noise_var=None,
        max_iter=None,
        tol=1e-6,
        size_penalty="auto",
        fit_intercept=True,
    ):
        self.engine = engine
        self.noise_var = noise_var
        self.max_iter = max_iter
        self.tol = tol
        self.size_penalty = size_penalty
        self.fit_intercept = fit_intercept

    def _features(self, X):
        return X

    def fit(self, X, y):
        """Fit the sparse Bayesian linear model to ``X`` (n_samples, n_features) and ``y``."""
        X, y = validate_data(
            self, X, y, dtype=np.float64, y_numeric=True, multi_output=True, ensure_min_samples=2
        )
        zero = np.flatnonzero(~X.any(axis=0))
        if zero.size:
            raise ValueError(
                f"X has {zero.size} column(s) that are all zeros (indices {zero[:10].tolist()}"
                f"{'...' if zero.size > 10 else ''}); remove them, they carry no information"
            )
        return self._fit_engine(X, y)


class RVMRegressor(_SBLBase):
    r"""Relevance vector machine: sparse Bayesian regression on kernel features.

    .. math::

        y(x) = \sum_{j=1}^{n} w_j\, k(x, x_j) + b, \qquad w_j \sim \mathcal N(0, \gamma_j),

    fitted as :class:`SBLRegressor` on Φ = K(X, X_train). Training points with γ_j > 0 are the relevance
    vectors (``relevance_vectors_``).

    Parameters
    ----------
    kernel : {"rbf", "linear", "poly", "precomputed"}, default="rbf"
        With "precomputed", ``X`` in ``fit`` is the (n, n) training kernel matrix and in ``predict`` the
        (n_test, n_train) cross-kernel matrix.
    gamma : float or "scale", default="scale"
        Kernel coefficient of rbf / poly; "scale" is 1 / (n_features · X.var()), as in scikit-learn's SVR.
    degree : int, default=3
        Degree of the polynomial kernel.
    coef0 : float, default=1.0
        Constant of the polynomial kernel.
    engine, noise_var, max_iter, tol, fit_intercept
        As in :class:`SBLRegressor`.
    size_penalty : "auto", float, "ric" or "bic", default="auto"
        As in :class:`SBLRegressor`. With one kernel basis per training point, ``"auto"`` means no
        penalty: the classic RVM evidence.

    Attributes
    ----------
    coef_ : ndarray of shape (n_train,) or (n_targets, n_train)
        Weights of the kernel bases (zero for non-relevance vectors).
    active_ : ndarray of shape (n_train,), bool
    relevance_vectors_ : ndarray of shape (n_relevance, n_features)
    gamma_, lambda_, sigma_, noise_variance_, intercept_, n_iter_, scores_
        As in :class:`SBLRegressor`.
    """

    def __init__(
        self,
        *,
        kernel="rbf",
        gamma="scale",
        degree=3,
        coef0=1.0,
        engine="tipping_faul",
        noise_var=None,
        max_iter=None,
        tol=1e-6,
        size_penalty="auto",
        fit_intercept=True,
    ):
        self.kernel = kernel
        self.gamma = gamma
        self.degree = degree
        self.coef0 = coef0
        self.engine = engine
        self.noise_var = noise_var
        self.max_iter = max_iter
        self.tol = tol
        self.size_penalty = size_penalty
        self.fit_intercept = fit_intercept

    def _prepare_features(self, X):
        if self.kernel not in ("rbf", "linear", "poly", "precomputed"):
            raise ValueError(f"kernel must be 'rbf', 'linear', 'poly' or 'precomputed', got {self.kernel!r}")
        if self.kernel == "precomputed":
            if X.shape[0] != X.shape[1]:
                raise ValueError(
                    f"with kernel='precomputed', X must be a square kernel matrix, got {X.shape}"
                )
            self.X_fit_ = None
            return
        if self.gamma == "scale":
            var = X.var()
            self.gamma_kernel_ = 1.0 / (X.shape[1] * var) if var > 0 else 1.0
        elif isinstance(self.gamma, Real) and not isinstance(self.gamma, bool) and self.gamma > 0:
            self.gamma_kernel_ = float(self.gamma)
        else:
            raise ValueError(f"gamma must be 'scale' or a positive float, got {self.gamma!r}")
        self.X_fit_ = X

    def _features(self, X):
        if self.kernel == "precomputed":
            return X
        params = {}
        if self.kernel in ("rbf", "poly"):
            params["gamma"] = self.gamma_kernel_
        if self.kernel == "poly":
            params.update(degree=self.degree, coef0=self.coef0)
        return pairwise_kernels(X, self.X_fit_, metric=self.kernel, **params)

    def fit(self, X, y):
        """Fit the RVM to training inputs ``X`` (n_samples, n_features) and targets ``y``."""
        X, y = validate_data(
            self, X, y, dtype=np.float64, y_numeric=True, multi_output=True, ensure_min_samples=2
        )
        self._fit_engine(X, y)
        if self.X_fit_ is not None:
            self.relevance_vectors_ = self.X_fit_[self.active_]
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = self.kernel == "precomputed"
        return tags
