r"""Scale mixtures of GPs for regression: the Student-t process (closed form) and general scale priors.

The observations are a GP whose whole covariance is scaled by one random variance,

.. math::

    y \mid \sigma^2 \sim \mathcal N\big(m\mathbf 1,\; \sigma^2 C\big), \qquad C = K_{XX} + s I, \qquad
    \sigma^2 \sim H,

which is the scale-mixture NNGP when :math:`K` is an NNGP kernel and :math:`\sigma^2` the read-out layer's
variance. With :math:`H = \mathrm{InvGamma}(a, b)` the marginal is a multivariate t (a Student-t process),

.. math::

    y \sim \mathrm{MVT}_{2a}\big(m\mathbf 1, \tfrac{b}{a} C\big), \qquad
    y_* \mid y \sim t_{2a + n}\Big(\mu_*, \; \frac{2b + q}{2a + n}\, \Sigma_*\Big),

with :math:`r = y - m\mathbf 1`, :math:`q = r^\top C^{-1} r`, :math:`\mu_* = m + K_{*X} C^{-1} r` and
:math:`\Sigma_* = K_{**} - K_{*X} C^{-1} K_{X*}` (plus :math:`s` for a noisy target). The predictive mean is
the Gaussian one: the t-process widens the variance globally by the data-dependent factor
:math:`(2b + q)/(2a + n)`; it does not discount single outliers (for that use the Student-t *likelihood* of
:mod:`probsparse.models.gp.robust`).
"""

from __future__ import annotations

import math

import gpytorch
import pyro.distributions as pdist
import torch
from gpytorch.constraints import GreaterThan, Positive
from gpytorch.kernels import Kernel

from ..._validation import check_positive_int
from ._inputs import as_inputs, as_targets, check_positive
from ._training import fit_loop, relative_change

__all__ = ["GaussianProcess", "StudentTProcess", "ScaleMixtureProcess"]

_JITTER = 1e-8


class _ScaleMixtureBase(gpytorch.Module):
    """Data, kernel, constant mean and noise shared by both models; the conditional Gaussian algebra."""

    def __init__(self, train_x, train_y, kernel: Kernel, *, noise: float, learn_mean: bool):
        super().__init__()
        if not isinstance(kernel, Kernel):
            raise TypeError(f"kernel must be a gpytorch.kernels.Kernel, got {type(kernel).__name__}")
        train_x = as_inputs(train_x, "train_x")
        dtype = train_x.dtype
        self.train_x = train_x
        self.train_y = as_targets(train_y, train_x.shape[0], "train_y", dtype=dtype)
        if self.train_y.shape[0] < 2:
            raise ValueError("train_y needs at least 2 points")
        self.covar_module = kernel.to(dtype)
        noise = check_positive(noise, "noise")
        self.register_parameter("raw_noise", torch.nn.Parameter(torch.zeros((), dtype=dtype)))
        self.register_constraint("raw_noise", GreaterThan(1e-6))
        self.noise = noise
        self.mean_constant = torch.nn.Parameter(self.train_y.median().detach().clone(), requires_grad=learn_mean)

    @property
    def noise(self) -> torch.Tensor:
        return self.raw_noise_constraint.transform(self.raw_noise)

    @noise.setter
    def noise(self, value) -> None:
        value = torch.as_tensor(value, dtype=self.raw_noise.dtype)
        self.initialize(raw_noise=self.raw_noise_constraint.inverse_transform(value))

    @property
    def n(self) -> int:
        return self.train_x.shape[0]

    def _factor(self):
        """Cholesky of C = K + sI, the residual r and its whitened form C^{-1/2} r."""
        x = self.train_x
        C = self.covar_module(x, x).to_dense() + (self.noise + _JITTER) * torch.eye(self.n, dtype=x.dtype)
        L = torch.linalg.cholesky(C)
        r = self.train_y - self.mean_constant
        alpha = torch.linalg.solve_triangular(L, r.unsqueeze(-1), upper=False).squeeze(-1)
        return L, r, alpha

    def _conditional(self, x, include_noise: bool, full_cov: bool):
        """Gaussian conditional mean and (co)variance Σ_* at ``x`` given the training data, with q."""
        x = as_inputs(x, "x", dtype=self.train_x.dtype, width=self.train_x.shape[1])
        L, r, alpha = self._factor()
        Kxs = self.covar_module(self.train_x, x).to_dense()
        V = torch.linalg.solve_triangular(L, Kxs, upper=False)
        mean = self.mean_constant + V.transpose(-1, -2) @ alpha
        extra = self.noise if include_noise else 0.0
        if full_cov:
            cov = self.covar_module(x, x).to_dense() - V.transpose(-1, -2) @ V
            cov = cov + (extra + _JITTER) * torch.eye(x.shape[0], dtype=x.dtype)
        else:
            cov = self.covar_module(x, diag=True) - (V * V).sum(0) + extra
            cov = cov.clamp_min(_JITTER)
        return mean, cov, (alpha * alpha).sum()

    def fit(
        self,
        num_steps: int = 300,
        lr: float | None = None,
        *,
        tol: float = 1e-5,
        optimizer: str = "lbfgs",
        min_steps: int = 20,
        fallback_lr: float | None = 1e-4,
    ):
        r"""Maximise the marginal likelihood; sets ``losses_``, ``relative_change_``, ``converged_``.

        The loss is the negative log marginal likelihood per training point, :math:`-\log p(y)/n`, a
        deterministic function of the few hyperparameters, so the default optimiser is L-BFGS with a
        strong-Wolfe line search (``lr`` its trial step, default 1); ``optimizer="adam"`` (``lr`` default
        0.05, constant) is kept for comparison. If L-BFGS stops short of the test below (its line search
        finds no decrease, typically at the optimum to working precision or at a variance's bound) the rest
        of the budget goes to Adam from ``fallback_lr`` with a cosine decay
        (:func:`~probsparse.models.gp._training.fit_loop`). The fit stops once converged (at least ``min_steps``
        iterations): ``converged_`` is true when the relative loss change over the last 10 % of the
        iterations, :math:`|L_s - L_T| / \max(|L_T|, 1)`, is below ``tol``
        (:func:`~probsparse.models.gp._training.relative_change`); ``relative_change_`` holds that change.
        """
        check_positive_int(num_steps, "num_steps")
        if lr is None:
            lr = 1.0 if optimizer == "lbfgs" else 0.05
        self.train()
        try:
            self.losses_ = fit_loop(
                lambda: -self.log_marginal_likelihood() / self.n,
                self.parameters(),
                num_steps,
                lr,
                optimizer=optimizer,
                tol=tol,
                min_steps=min_steps,
                fallback_lr=fallback_lr if optimizer == "lbfgs" else None,
            )
        finally:
            self.eval()
        self.relative_change_ = relative_change(self.losses_)
        self.converged_ = bool(self.relative_change_ < tol)
        return self


class GaussianProcess(_ScaleMixtureBase):
    r"""Exact GP regression in the same parametrisation: the fixed-scale member of the family.

    .. math::

        y \sim \mathcal N\big(m\mathbf 1, c\, C\big), \qquad C = K_{XX} + sI, \qquad
        y_* \mid y \sim \mathcal N\big(\mu_*, c\, \Sigma_*\big),

    with a learned output scale :math:`c > 0` (the read-out variance as a point estimate). It is the
    reference for :class:`StudentTProcess` (the limit :math:`a, b \to \infty`, :math:`b/a = c`) and has the
    same ``fit`` / ``predict`` API.

    Parameters
    ----------
    train_x, train_y, kernel, noise, learn_mean
        As in :class:`StudentTProcess`.
    outputscale : float
        Initial :math:`c > 0`.

    Attributes
    ----------
    losses_, converged_
        As in :class:`StudentTProcess`.

    Examples
    --------
    >>> import torch
    >>> from probsparse.models.gp.nngp import ReLUNNGPKernel
    >>> x = torch.linspace(-2, 2, 20, dtype=torch.float64).unsqueeze(-1)
    >>> gp = GaussianProcess(x, torch.sin(2 * x[:, 0]), ReLUNNGPKernel()).fit(num_steps=20)
    >>> gp.predict(x).scale.shape
    torch.Size([20])
    """

    def __init__(
        self, train_x, train_y, kernel: Kernel, *, outputscale: float = 1.0, noise: float = 0.1, learn_mean: bool = True
    ):
        super().__init__(train_x, train_y, kernel, noise=noise, learn_mean=learn_mean)
        value = check_positive(outputscale, "outputscale")
        self.register_parameter("raw_outputscale", torch.nn.Parameter(torch.zeros((), dtype=self.train_x.dtype)))
        self.register_constraint("raw_outputscale", Positive())
        with torch.no_grad():
            self.raw_outputscale.copy_(
                self.raw_outputscale_constraint.inverse_transform(torch.tensor(value, dtype=self.train_x.dtype))
            )

    @property
    def outputscale(self) -> torch.Tensor:
        return self.raw_outputscale_constraint.transform(self.raw_outputscale)

    def log_marginal_likelihood(self) -> torch.Tensor:
        r"""Exact Gaussian :math:`\log p(y)`, a 0-d tensor."""
        L, _, alpha = self._factor()
        n, c = self.n, self.outputscale
        q = (alpha * alpha).sum()
        logdet = 2 * torch.log(torch.diagonal(L)).sum()
        return -0.5 * (n * torch.log(2 * math.pi * c) + logdet + q / c)

    def predict(self, x, *, include_noise: bool = True) -> torch.distributions.Normal:
        """Predictive marginals at ``x`` (shape ``(m, d)``): a Normal with ``loc`` and ``scale`` of shape ``(m,)``."""
        with torch.no_grad():
            mean, var, _ = self._conditional(x, include_noise, full_cov=False)
            return torch.distributions.Normal(mean, torch.sqrt(self.outputscale * var))


class StudentTProcess(_ScaleMixtureBase):
    r"""Student-t process regression: a GP scale mixture with an inverse-gamma prior on the variance.

    .. math::

        \log p(y) = \log\Gamma(a + \tfrac n2) - \log\Gamma(a) - \tfrac n2 \log(2\pi b)
        - \tfrac12 \log|C| - (a + \tfrac n2) \log\Big(1 + \frac{q}{2b}\Big),

    the multivariate-t density :math:`\mathrm{MVT}_{2a}(m\mathbf 1, (b/a) C)` with
    :math:`C = K_{XX} + sI` and :math:`q = r^\top C^{-1} r`. The predictive is a Student-t with
    :math:`2a + n` degrees of freedom (module docstring). As :math:`a, b \to \infty` with :math:`b/a = c`
    fixed it tends to the GP with covariance :math:`cC`.

    Parameters
    ----------
    train_x : Tensor of shape (n, d)
        Training inputs; their dtype (float64 recommended) is the model's.
    train_y : Tensor of shape (n,)
        Training targets, finite.
    kernel : gpytorch.kernels.Kernel
        Covariance :math:`K` (e.g. :class:`~probsparse.models.gp.nngp.ReLUNNGPKernel`); its output scale is
        redundant with :math:`b` (only :math:`b \cdot \text{scale}` is identified), so leave it unscaled.
    a, b : float
        Initial inverse-gamma shape and scale (> 0). ``learn_ab=False`` keeps them fixed.
    noise : float
        Initial noise variance :math:`s` (inside the scaled covariance).
    learn_mean : bool
        Learn the constant mean :math:`m` (initialised at the median of ``train_y``, robust to outliers).

    Attributes
    ----------
    losses_ : list of float
        Per-step negative log marginal likelihood per point (after :meth:`fit`).
    converged_ : bool
        Whether the relative loss change over the last 10 % of steps is below ``tol``.

    References
    ----------
    Lee, Yun, Yang & Lee (2022), "Scale mixtures of neural network Gaussian processes": their
    :math:`\sigma_v^2 \sim \mathrm{InvGamma}(\alpha, \beta)` is our :math:`\sigma^2 \sim \mathrm{InvGamma}(a, b)`;
    Shah, Wilson & Ghahramani (2014), "Student-t processes as alternatives to Gaussian processes".

    Examples
    --------
    >>> import torch
    >>> from probsparse.models.gp.nngp import ReLUNNGPKernel
    >>> x = torch.linspace(-2, 2, 20, dtype=torch.float64).unsqueeze(-1)
    >>> y = torch.sin(2 * x[:, 0])
    >>> tp = StudentTProcess(x, y, ReLUNNGPKernel(depth=2)).fit(num_steps=30)
    >>> pred = tp.predict(x)
    >>> bool(torch.allclose(pred.df, 2 * tp.a + 20)), pred.loc.shape
    (True, torch.Size([20]))
    """

    def __init__(
        self,
        train_x,
        train_y,
        kernel: Kernel,
        *,
        a: float = 2.0,
        b: float = 2.0,
        noise: float = 0.1,
        learn_ab: bool = True,
        learn_mean: bool = True,
    ):
        super().__init__(train_x, train_y, kernel, noise=noise, learn_mean=learn_mean)
        dtype = self.train_x.dtype
        for name, value in (("a", a), ("b", b)):
            value = check_positive(value, name)
            raw = torch.nn.Parameter(torch.zeros((), dtype=dtype), requires_grad=learn_ab)
            self.register_parameter(f"raw_{name}", raw)
            self.register_constraint(f"raw_{name}", Positive())
            constraint = getattr(self, f"raw_{name}_constraint")
            with torch.no_grad():
                raw.copy_(constraint.inverse_transform(torch.tensor(value, dtype=dtype)))

    @property
    def a(self) -> torch.Tensor:
        return self.raw_a_constraint.transform(self.raw_a)

    @property
    def b(self) -> torch.Tensor:
        return self.raw_b_constraint.transform(self.raw_b)

    def log_marginal_likelihood(self) -> torch.Tensor:
        """Exact :math:`\\log p(y)` (multivariate t), a 0-d tensor differentiable in all hyperparameters."""
        L, _, alpha = self._factor()
        n, a, b = self.n, self.a, self.b
        q = (alpha * alpha).sum()
        logdet = 2 * torch.log(torch.diagonal(L)).sum()
        return (
            torch.lgamma(a + n / 2)
            - torch.lgamma(a)
            - n / 2 * torch.log(2 * math.pi * b)
            - logdet / 2
            - (a + n / 2) * torch.log1p(q / (2 * b))
        )

    def predict(self, x, *, include_noise: bool = True, full_cov: bool = False):
        r"""Predictive Student-t at ``x`` (shape ``(m, d)``).

        Returns
        -------
        torch.distributions.StudentT or pyro.distributions.MultivariateStudentT
            Independent marginals (``df`` = :math:`2a + n`, ``loc`` shape ``(m,)``, ``scale`` shape ``(m,)``),
            or with ``full_cov=True`` the joint multivariate t. ``include_noise`` predicts :math:`y_*`
            rather than :math:`f_*`.
        """
        with torch.no_grad():
            mean, cov, q = self._conditional(x, include_noise, full_cov)
            df = 2 * self.a + self.n
            factor = (2 * self.b + q) / df
            if full_cov:
                return pdist.MultivariateStudentT(df, mean, torch.linalg.cholesky(factor * cov))
            return torch.distributions.StudentT(df, mean, torch.sqrt(factor * cov))


class ScaleMixtureProcess(_ScaleMixtureBase):
    r"""GP scale mixture with any prior :math:`H` on the variance, by importance sampling over :math:`\sigma^2`.

    .. math::

        p(y) = \int \mathcal N(y \mid m\mathbf 1, \sigma^2 C)\, H(d\sigma^2)
        \approx Z \cdot \frac1S \sum_{s=1}^S h(\sigma_s^2)\, \sigma_s^2, \qquad
        \sigma_s^2 \sim \mathrm{InvGamma}\big(\tfrac n2, \tfrac q2\big),

    **Proposal**: :math:`\mathrm{InvGamma}(n/2, q/2)`, the exact posterior of :math:`\sigma^2` under the
    scale-invariant reference prior :math:`1/\sigma^2`; then :math:`\mathcal N(y \mid \sigma^2 C) / q(\sigma^2)
    = Z \sigma^2` with :math:`\log Z = -\frac n2 \log 2\pi - \frac12\log|C| + \log\Gamma(\frac n2)
    - \frac n2 \log\frac q2`, so each weight is just :math:`h(\sigma_s^2)\,\sigma_s^2` (:math:`h` the prior
    density). The proposal is as concentrated as the likelihood (relative width :math:`\sqrt{2/n}`), so few
    samples suffice unless :math:`H` is much narrower than that. The draws are reparametrised,
    :math:`\sigma_s^2 = (q/2)/G_s` with fixed :math:`G_s \sim \mathrm{Gamma}(n/2, 1)`, which makes the
    estimate a smooth deterministic function of the hyperparameters for optimisation. The predictive is the
    mixture :math:`\sum_s w_s\, \mathcal N(\mu_*, \sigma_s^2 \Sigma_*)` with self-normalised weights
    :math:`w_s \propto h(\sigma_s^2) \sigma_s^2`.

    Parameters
    ----------
    train_x, train_y, kernel, noise, learn_mean
        As in :class:`StudentTProcess`.
    scale_prior : torch.distributions.Distribution
        Prior :math:`H` on :math:`\sigma^2` (positive support, scalar event), e.g. ``LogNormal`` or
        ``pyro.distributions.InverseGamma``.
    num_samples : int
        Number :math:`S` of importance samples.
    seed : int
        Seed of the fixed Gamma base draws.

    Attributes
    ----------
    losses_, converged_
        As in :class:`StudentTProcess`.

    References
    ----------
    Lee, Yun, Yang & Lee (2022), section on general priors (their importance sampler's proposal is not
    stated in the sources we checked; the one here is our choice).

    Examples
    --------
    >>> import torch
    >>> from probsparse.models.gp.nngp import ErfNNGPKernel
    >>> x = torch.linspace(-2, 2, 15, dtype=torch.float64).unsqueeze(-1)
    >>> prior = torch.distributions.LogNormal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    >>> m = ScaleMixtureProcess(x, torch.cos(x[:, 0]), ErfNNGPKernel(), scale_prior=prior, num_samples=64)
    >>> m.predict(x).mean.shape
    torch.Size([15])
    """

    def __init__(
        self,
        train_x,
        train_y,
        kernel: Kernel,
        *,
        scale_prior: torch.distributions.Distribution,
        num_samples: int = 256,
        noise: float = 0.1,
        learn_mean: bool = True,
        seed: int = 0,
    ):
        super().__init__(train_x, train_y, kernel, noise=noise, learn_mean=learn_mean)
        if not isinstance(scale_prior, torch.distributions.Distribution):
            raise TypeError(f"scale_prior must be a torch Distribution over sigma^2, got {type(scale_prior).__name__}")
        if scale_prior.event_shape != torch.Size() or scale_prior.batch_shape != torch.Size():
            raise ValueError("scale_prior must be a scalar distribution (empty batch and event shapes)")
        support = scale_prior.support
        if not (support is torch.distributions.constraints.positive or getattr(support, "lower_bound", -1) == 0):
            raise ValueError(f"scale_prior must have positive support (a prior on a variance), got {support}")
        self.scale_prior = scale_prior
        self.num_samples = check_positive_int(num_samples, "num_samples", minimum=2)
        shape = torch.full((self.num_samples,), self.n / 2, dtype=torch.float64)
        # torch's Gamma sampler takes no generator; a forked RNG keeps the caller's global stream untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(check_positive_int(seed, "seed", minimum=0))
            base = torch.distributions.Gamma(shape, torch.ones_like(shape)).sample()
        self.register_buffer("gamma_draws", base.to(self.train_x.dtype))

    def _samples(self):
        L, _, alpha = self._factor()
        q = (alpha * alpha).sum()
        sigma2 = (q / 2) / self.gamma_draws
        log_w = self.scale_prior.log_prob(sigma2) + torch.log(sigma2)
        return L, q, sigma2, log_w

    def log_marginal_likelihood(self) -> torch.Tensor:
        """Importance-sampling estimate of :math:`\\log p(y)` (a 0-d tensor, differentiable)."""
        L, q, _, log_w = self._samples()
        n = self.n
        log_z = (
            -n / 2 * math.log(2 * math.pi)
            - torch.log(torch.diagonal(L)).sum()
            + math.lgamma(n / 2)
            - n / 2 * torch.log(q / 2)
        )
        return log_z + torch.logsumexp(log_w, 0) - math.log(self.num_samples)

    def effective_sample_size(self) -> float:
        """Kish effective sample size of the importance weights, :math:`(\\sum w)^2 / \\sum w^2`."""
        with torch.no_grad():
            w = torch.softmax(self._samples()[3], 0)
            return float(1 / (w * w).sum())

    def predict(self, x, *, include_noise: bool = True) -> torch.distributions.MixtureSameFamily:
        """Predictive scale mixture at ``x``: independent marginals, batch shape ``(m,)``.

        Returns
        -------
        torch.distributions.MixtureSameFamily
            Mixture over the :math:`S` posterior-weighted variances of Normals (``.mean``, ``.variance``,
            ``.log_prob``).
        """
        with torch.no_grad():
            _, _, sigma2, log_w = self._samples()
            mean, var, _ = self._conditional(x, include_noise, full_cov=False)
            comp = torch.distributions.Normal(mean.unsqueeze(-1), torch.sqrt(var.unsqueeze(-1) * sigma2))
            mix = torch.distributions.Categorical(logits=log_w.expand(mean.shape[0], -1))
            return torch.distributions.MixtureSameFamily(mix, comp)
