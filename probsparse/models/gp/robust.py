r"""Per-point robust GP regression: a sparse variational GP with a Student-t likelihood.

.. math::

    f \sim \mathcal{GP}(m, k), \qquad y_i \mid f_i \sim t_\nu(f_i, \sigma), \qquad
    q(u) = \mathcal N(\mu_u, S_u), \; u = f(Z),

fitted by maximising the SVGP evidence lower bound

.. math::

    \mathcal L = \sum_{i=1}^n \mathbb E_{q(f_i)}[\log p(y_i \mid f_i)] - \mathrm{KL}(q(u) \,\|\, p(u)),

with the expectations by Gauss–Hermite quadrature (GPyTorch's :class:`~gpytorch.variational.VariationalStrategy`,
whitened). Each observation gets its own heavy tail, so a single outlier is discounted and the predictive
mean moves away from it. **Trade-off with the Student-t process** (:mod:`probsparse.models.gp.student_t_process`):
the t-process puts one random scale on the whole function (closed-form, exact marginal likelihood, and a
predictive variance that widens globally when the data are surprising, e.g. out of distribution), but its
mean is the Gaussian one and is dragged by outliers; the t-likelihood is robust point by point but needs
variational inference, its predictive is not closed form, and it does not widen the function's uncertainty.
With ``likelihood="gaussian"`` the same class is a plain SVGP (with inducing points at the data and the
optimal :math:`q(u)` it equals the exact GP).
"""

from __future__ import annotations

import math

import gpytorch
import torch
from gpytorch.constraints import GreaterThan
from gpytorch.kernels import Kernel

from ..._validation import check_positive_int
from ._inputs import as_inputs, as_targets, check_positive, initial_inducing_points
from ._training import fit_loop, relative_change

__all__ = ["VariationalGP", "StudentTLikelihoodGP"]


class _SVGP(gpytorch.models.ApproximateGP):
    def __init__(self, inducing_points: torch.Tensor, kernel: Kernel, learn_inducing: bool):
        q_u = gpytorch.variational.CholeskyVariationalDistribution(inducing_points.shape[0]).to(inducing_points)
        strategy = gpytorch.variational.VariationalStrategy(
            self, inducing_points, q_u, learn_inducing_locations=learn_inducing
        )
        super().__init__(strategy)
        self.mean_module = gpytorch.means.ConstantMean().to(inducing_points)
        self.covar_module = kernel.to(inducing_points)

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


class VariationalGP(gpytorch.Module):
    r"""Sparse variational GP regression (SVGP) with a Student-t or Gaussian likelihood.

    .. math::

        \mathcal L(q, \theta) = \sum_i \mathbb E_{q(f_i)}[\log p(y_i \mid f_i)] - \mathrm{KL}(q(u)\,\|\,p(u))
        \le \log p(y),

    linear in :math:`n` per step (cubic in the number :math:`M` of inducing points). See the module docstring
    for the trade-off between this per-point robust model and the Student-t process.

    Parameters
    ----------
    train_x : Tensor of shape (n, d)
        Training inputs; their dtype is the model's.
    train_y : Tensor of shape (n,)
        Training targets.
    kernel : gpytorch.kernels.Kernel
        Covariance of the latent function (wrap in ``ScaleKernel`` for an output scale).
    likelihood : {"student_t", "gaussian"}
        Observation model. The Student-t degrees of freedom :math:`\nu > 0.5` and scale are learned.
    inducing_points : int or Tensor of shape (M, d)
        Number of inducing points (the first ``M`` of a seeded permutation of the inputs) or their locations.
    learn_inducing : bool
        Whether the inducing locations are optimised.
    noise : float
        Initial likelihood variance / squared scale.
    seed : int
        Seed of the inducing-point choice.

    Attributes
    ----------
    losses_ : list of float
        Negative ELBO per point at each step (after :meth:`fit`).
    converged_ : bool
        Relative loss change over the last 10 % of steps below ``tol``.

    References
    ----------
    Hensman, Matthews & Ghahramani (2015), "Scalable variational Gaussian process classification";
    Jylänki, Vanhatalo & Vehtari (2011), "Robust Gaussian process regression with a Student-t likelihood"
    (their :math:`\nu, \sigma` are ours).

    Examples
    --------
    >>> import torch
    >>> x = torch.linspace(0, 1, 30, dtype=torch.float64).unsqueeze(-1)
    >>> y = torch.sin(6 * x[:, 0]); y[5] = 8.0
    >>> kernel = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())
    >>> m = StudentTLikelihoodGP(x, y, kernel, inducing_points=10).fit(num_steps=20)
    >>> m.predict(x).mean.shape
    torch.Size([30])
    """

    def __init__(
        self,
        train_x,
        train_y,
        kernel: Kernel,
        *,
        likelihood: str = "student_t",
        inducing_points=64,
        learn_inducing: bool = True,
        noise: float = 0.1,
        seed: int = 0,
    ):
        super().__init__()
        if not isinstance(kernel, Kernel):
            raise TypeError(f"kernel must be a gpytorch.kernels.Kernel, got {type(kernel).__name__}")
        self.train_x = as_inputs(train_x, "train_x")
        dtype = self.train_x.dtype
        self.train_y = as_targets(train_y, self.train_x.shape[0], "train_y", dtype=dtype)
        noise = check_positive(noise, "noise")
        z = initial_inducing_points(inducing_points, self.train_x, seed)
        if likelihood == "student_t":
            lik = gpytorch.likelihoods.StudentTLikelihood(deg_free_constraint=GreaterThan(0.5))
            lik.deg_free = 4.0
        elif likelihood == "gaussian":
            lik = gpytorch.likelihoods.GaussianLikelihood()
        else:
            raise ValueError(f"likelihood must be 'student_t' or 'gaussian', got {likelihood!r}")
        self.likelihood = lik.to(dtype)
        self.likelihood.noise = noise
        self.gp = _SVGP(z, kernel, learn_inducing)
        self.gp.mean_module.constant.data.fill_(self.train_y.median().item())

    @property
    def n(self) -> int:
        return self.train_x.shape[0]

    def elbo(self, x=None, y=None) -> torch.Tensor:
        """The evidence lower bound (total, not per point) on ``(x, y)`` (the training data by default)."""
        x = self.train_x if x is None else x
        y = self.train_y if y is None else y
        mll = gpytorch.mlls.VariationalELBO(self.likelihood, self.gp, num_data=x.shape[0])
        return mll(self.gp(x), y) * x.shape[0]

    def fit(
        self,
        num_steps: int = 500,
        lr: float = 0.02,
        *,
        batch_size: int | None = None,
        tol: float = 1e-4,
        optimizer: str = "adam",
        schedule: str = "cosine",
        min_steps: int = 100,
    ):
        r"""Maximise the ELBO (full batch, or minibatches of ``batch_size`` scaled to ``n``).

        Adam with a cosine learning-rate decay from ``lr`` to ``lr/100`` over ``num_steps`` by default (so
        the iterates settle instead of oscillating at a fixed step size); ``optimizer="lbfgs"`` (full batch
        only: the quadrature ELBO is then deterministic) and ``schedule="constant"`` are the alternatives.
        The fit stops once converged (after at least ``min_steps``): ``converged_`` is true when the
        relative change of the negative ELBO per point over the last 10 % of the steps is below ``tol``
        — the spread of that window for the deterministic full-batch loss, a least-squares line through it
        for minibatch losses (:func:`~probsparse.models.gp._training.relative_change`).
        """
        self.train()
        stochastic = batch_size is not None
        if not stochastic:
            loss_fn = lambda: -self.elbo() / self.n  # noqa: E731
        else:
            batch_size = check_positive_int(batch_size, "batch_size")
            if optimizer == "lbfgs":
                raise ValueError("optimizer='lbfgs' needs the deterministic full-batch loss: use batch_size=None")
            gen = torch.Generator().manual_seed(0)

            def loss_fn():
                idx = torch.randint(0, self.n, (min(batch_size, self.n),), generator=gen)
                mll = gpytorch.mlls.VariationalELBO(self.likelihood, self.gp, num_data=self.n)
                return -mll(self.gp(self.train_x[idx]), self.train_y[idx])

        try:
            self.losses_ = fit_loop(
                loss_fn,
                self.parameters(),
                num_steps,
                lr,
                optimizer=optimizer,
                schedule=schedule,
                tol=tol,
                min_steps=min_steps,
                smooth=stochastic,
            )
        finally:
            self.eval()
        self.relative_change_ = relative_change(self.losses_, smooth=stochastic)
        self.converged_ = bool(self.relative_change_ < tol)
        return self

    def _latent(self, x) -> gpytorch.distributions.MultivariateNormal:
        x = as_inputs(x, "x", dtype=self.train_x.dtype, width=self.train_x.shape[1])
        self.eval()
        return self.gp(x)

    def predict(self, x) -> torch.distributions.Normal:
        """Marginal posterior of the latent :math:`f_*` at ``x`` (shape ``(m, d)``): a Normal of shape ``(m,)``."""
        with torch.no_grad():
            f = self._latent(x)
            return torch.distributions.Normal(f.mean, f.variance.clamp_min(1e-12).sqrt())

    def log_predictive_density(self, x, y) -> torch.Tensor:
        r"""Per-point :math:`\log \int p(y_i \mid f_i)\, q(f_i)\, df_i` (1-D quadrature for the t likelihood)."""
        x = as_inputs(x, "x", dtype=self.train_x.dtype, width=self.train_x.shape[1])
        y = as_targets(y, x.shape[0], "y", dtype=self.train_x.dtype)
        with torch.no_grad():
            f = self._latent(x)
            if isinstance(self.likelihood, gpytorch.likelihoods.GaussianLikelihood):
                var = f.variance + self.likelihood.noise
                return -0.5 * (torch.log(2 * math.pi * var) + (y - f.mean) ** 2 / var)
            marginal = torch.distributions.Normal(f.mean, f.variance.clamp_min(1e-12).sqrt())
            return _student_t_log_marginal(self.likelihood, y, marginal)


def _student_t_log_marginal(likelihood, y: torch.Tensor, f: torch.distributions.Normal, n_grid: int = 1500):
    r""":math:`\log \int \mathcal N(f \mid \mu, v)\, t_\nu(y \mid f, s)\, df` through the t's scale mixture.

    With :math:`t_\nu(y \mid f, s) = \int \mathcal N(y \mid f, s^2/\lambda)\, \mathrm{Ga}(\lambda \mid \nu/2, \nu/2)
    d\lambda` the :math:`f` integral is closed form and what is left is a smooth 1-D integral over
    :math:`\log\lambda`, done by the trapezoid rule on a fixed grid in log space. Unlike Gauss–Hermite in
    :math:`f` it stays accurate when the likelihood is much narrower than :math:`q(f)` or :math:`y` is a far
    outlier (the integrand decays like :math:`\lambda^{(\nu+1)/2}` at the left end, doubly exponentially at
    the right).
    """
    nu = likelihood.deg_free.reshape(())
    s2 = likelihood.noise.reshape(())
    log_lam = torch.linspace(-40.0, 8.0, n_grid, dtype=y.dtype)
    lam = torch.exp(log_lam)
    gamma = torch.distributions.Gamma(nu / 2, nu / 2)
    var = f.variance.unsqueeze(-1) + s2 / lam  # (m, grid)
    log_int = (
        -0.5 * torch.log(2 * math.pi * var) - 0.5 * (y - f.loc).unsqueeze(-1) ** 2 / var + gamma.log_prob(lam) + log_lam
    )
    step = log_lam[1] - log_lam[0]
    # trapezoid weights: half weight at both ends
    log_wts = torch.full_like(log_lam, math.log(step))
    log_wts[0] = log_wts[-1] = math.log(step / 2)
    return torch.logsumexp(log_int + log_wts, -1)


class StudentTLikelihoodGP(VariationalGP):
    """:class:`VariationalGP` with ``likelihood="student_t"`` (per-point robust regression).

    .. math::

        y_i \\mid f_i \\sim t_\\nu(f_i, \\sigma)

    Parameters and attributes as in :class:`VariationalGP` (``likelihood`` is fixed).

    Examples
    --------
    >>> import torch, gpytorch
    >>> x = torch.randn(20, 2, dtype=torch.float64); y = x.sum(-1)
    >>> m = StudentTLikelihoodGP(x, y, gpytorch.kernels.RBFKernel(), inducing_points=8)
    >>> round(m.likelihood.deg_free.item(), 4)
    4.0
    """

    def __init__(self, train_x, train_y, kernel: Kernel, **kwargs):
        if "likelihood" in kwargs:
            raise TypeError("StudentTLikelihoodGP fixes likelihood='student_t'; use VariationalGP to choose")
        super().__init__(train_x, train_y, kernel, likelihood="student_t", **kwargs)
