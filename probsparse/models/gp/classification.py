r"""Scale-mixture GP classification: a sparse variational GP whose prior variance has an inverse-gamma prior.

For :math:`C` classes, latent functions share one random variance,

.. math::

    \sigma^2 \sim \mathrm{InvGamma}(a, b), \qquad u_c \mid \sigma^2 \sim \mathcal N(0, \sigma^2 K_{ZZ}), \qquad
    f_c(x) \mid u_c, \sigma^2 \sim \mathcal N\big(K_{xZ}K_{ZZ}^{-1}u_c,\; \sigma^2 (k_{xx} - Q_{xx})\big), \qquad
    y \mid f \sim \mathrm{Categorical}(\mathrm{softmax}(f)),

so each :math:`f_c` is a Student-t process marginally (the classification side of Lee et al., 2022). The
variational family is :math:`q(\sigma^2) = \mathrm{InvGamma}(\alpha, \beta)` and
:math:`q(u_c) = \mathcal N(m_c, S_c)` (independent of :math:`\sigma^2`), giving the bound

.. math::

    \mathcal L = \sum_i \mathbb E_{q}[\log p(y_i \mid f_i)]
    - \sum_c \mathbb E_{q(\sigma^2)} \mathrm{KL}\big(q(u_c)\,\|\,\mathcal N(0, \sigma^2 K_{ZZ})\big)
    - \mathrm{KL}\big(\mathrm{InvGamma}(\alpha, \beta)\,\|\,\mathrm{InvGamma}(a, b)\big),

with :math:`\mathbb E_{q(\sigma^2)}\mathrm{KL} = \tfrac12\big[\tfrac\alpha\beta(\mathrm{tr}(K^{-1}S_c) +
m_c^\top K^{-1} m_c) - M + M(\log\beta - \psi(\alpha)) + \log|K| - \log|S_c|\big]`: the Gaussian KL with its
quadratic term scaled by :math:`\mathbb E[1/\sigma^2] = \alpha/\beta`. The expected log-likelihood is a Monte
Carlo average over reparametrised draws of :math:`\sigma^2` and :math:`f`. With ``mixture=False`` the variance
is a learned constant (an ordinary multi-class SVGP).
"""

from __future__ import annotations

import torch
from gpytorch.kernels import Kernel

from ..._validation import check_positive_int
from ._inputs import as_inputs, check_positive, check_same_width
from ._training import fit_loop, relative_change

__all__ = ["ScaleMixtureGPClassifier", "expected_gaussian_kl", "inverse_gamma_kl"]

_JITTER = 1e-6


def expected_gaussian_kl(m, S_tril, K_chol, alpha, beta) -> torch.Tensor:
    r"""Expected KL of a Gaussian to a zero-mean Gaussian whose covariance has an inverse-gamma scale.

    The expectation of :math:`\mathrm{KL}(\mathcal N(m, SS^\top) \| \mathcal N(0, \sigma^2 K))` over
    :math:`\sigma^2 \sim \mathrm{InvGamma}(\alpha, \beta)` is

    .. math::

        \tfrac12\Big[\tfrac\alpha\beta\big(\mathrm{tr}(K^{-1}SS^\top) + m^\top K^{-1}m\big) - M
        + M(\log\beta - \psi(\alpha)) + \log|K| - \log|SS^\top|\Big]

    Parameters
    ----------
    m : Tensor of shape (..., M)
        Variational means (a batch of classes allowed).
    S_tril : Tensor of shape (..., M, M)
        Lower Cholesky factors of the variational covariances.
    K_chol : Tensor of shape (M, M)
        Lower Cholesky factor of the prior covariance :math:`K`.
    alpha, beta : Tensor
        Inverse-gamma shape and scale of :math:`q(\sigma^2)` (0-d).

    Returns
    -------
    Tensor of shape (...)
        One expected KL per batch element.

    Examples
    --------
    >>> import torch
    >>> I = torch.eye(2, dtype=torch.float64); one = torch.tensor(1e9, dtype=torch.float64)
    >>> round(expected_gaussian_kl(torch.zeros(2, dtype=torch.float64), I, I, one, one).item(), 6)
    0.0
    """
    return _gaussian_kl_moments(m, S_tril, K_chol, alpha / beta, torch.log(beta) - torch.digamma(alpha))


def _gaussian_kl_moments(m, S_tril, K_chol, e_inv, e_log) -> torch.Tensor:
    """The KL averaged over sigma^2 needs only E[1/sigma^2] and E[log sigma^2]."""
    M = m.shape[-1]
    A = torch.linalg.solve_triangular(K_chol, S_tril, upper=False)
    b = torch.linalg.solve_triangular(K_chol, m.unsqueeze(-1), upper=False).squeeze(-1)
    quad = (A * A).sum((-1, -2)) + (b * b).sum(-1)
    logdet_k = 2 * torch.log(torch.diagonal(K_chol)).sum()
    logdet_s = 2 * torch.log(torch.abs(torch.diagonal(S_tril, dim1=-2, dim2=-1))).sum(-1)
    return 0.5 * (e_inv * quad - M + M * e_log + logdet_k - logdet_s)


def inverse_gamma_kl(alpha, beta, a, b) -> torch.Tensor:
    r""":math:`\mathrm{KL}(\mathrm{InvGamma}(\alpha, \beta) \| \mathrm{InvGamma}(a, b))`, that of the reciprocal Gammas.

    .. math::

        (\alpha - a)\psi(\alpha) - \log\Gamma(\alpha) + \log\Gamma(a) + a(\log\beta - \log b)
        + \alpha\,\frac{b - \beta}{\beta}

    Parameters
    ----------
    alpha, beta, a, b : Tensor
        Shapes and scales, positive.

    Returns
    -------
    Tensor
        The KL divergence.

    Examples
    --------
    >>> import torch
    >>> t = torch.tensor(2.0, dtype=torch.float64)
    >>> inverse_gamma_kl(t, t, t, t).item()
    0.0
    """
    return (
        (alpha - a) * torch.digamma(alpha)
        - torch.lgamma(alpha)
        + torch.lgamma(a)
        + a * (torch.log(beta) - torch.log(b))
        + alpha * (b - beta) / beta
    )


class ScaleMixtureGPClassifier(torch.nn.Module):
    r"""Multi-class sparse variational GP classifier with an optional inverse-gamma scale mixture.

    .. math::

        \mathcal L = \sum_i \mathbb E_q[\log \mathrm{softmax}(f_i)_{y_i}] - \sum_c \mathbb E_{q(\sigma^2)}
        \mathrm{KL}(q(u_c)\|p(u_c \mid \sigma^2)) - \mathrm{KL}(q(\sigma^2)\|p(\sigma^2))

    Parameters
    ----------
    train_x : Tensor of shape (n, d)
        Inputs (their dtype is the model's).
    train_y : Tensor of shape (n,)
        Integer class labels in ``0..num_classes-1``.
    kernel : gpytorch.kernels.Kernel
        Shared covariance of the latent functions (unscaled: the variance is :math:`\sigma^2`).
    num_classes : int, optional
        Number of classes (default: ``max(train_y) + 1``).
    num_inducing : int
        Number of inducing points (a seeded subset of the inputs, learned).
    mixture : bool
        Inverse-gamma scale mixture (``True``) or a learned fixed variance (``False``).
    a, b : float
        Prior :math:`\mathrm{InvGamma}(a, b)` on :math:`\sigma^2`; also the initial :math:`q`.
    num_samples : int
        Monte Carlo draws per step for the expected log-likelihood.
    seed : int
        Seed of the inducing-point choice, minibatches and Monte Carlo draws.

    Attributes
    ----------
    losses_ : list of float
        Negative bound per data point at each step.
    converged_ : bool
        Relative loss change over the last 10 % of steps below ``tol``.

    References
    ----------
    Lee, Yun, Yang & Lee (2022), "Scale mixtures of neural network Gaussian processes" (their SVSP; their
    :math:`(\alpha, \beta)` prior and learned :math:`(a, b)` are our :math:`(a, b)` and :math:`(\alpha,
    \beta)`); Hensman, Matthews & Ghahramani (2015) for the SVGP bound.

    Examples
    --------
    >>> import torch, gpytorch
    >>> x = torch.randn(60, 2, dtype=torch.float64); y = (x[:, 0] > 0).long()
    >>> clf = ScaleMixtureGPClassifier(x, y, gpytorch.kernels.RBFKernel(), num_inducing=10).fit(num_steps=10)
    >>> clf.predict_proba(x[:3]).shape
    torch.Size([3, 2])
    """

    def __init__(
        self,
        train_x,
        train_y,
        kernel: Kernel,
        *,
        num_classes: int | None = None,
        num_inducing: int = 100,
        mixture: bool = True,
        a: float = 2.0,
        b: float = 2.0,
        num_samples: int = 8,
        seed: int = 0,
    ):
        super().__init__()
        if not isinstance(kernel, Kernel):
            raise TypeError(f"kernel must be a gpytorch.kernels.Kernel, got {type(kernel).__name__}")
        self.train_x = as_inputs(train_x, "train_x")
        dtype = self.train_x.dtype
        n, d = self.train_x.shape
        y = torch.as_tensor(train_y)
        if y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
            raise TypeError(f"train_y must hold integer class labels, got dtype {y.dtype}")
        if y.shape != (n,):
            raise ValueError(f"train_y must have shape ({n},) to match train_x, got {tuple(y.shape)}")
        if y.min() < 0:
            raise ValueError("train_y must hold class labels >= 0")
        self.num_classes = int(y.max()) + 1 if num_classes is None else check_positive_int(num_classes, "num_classes")
        if self.num_classes < 2 or y.max() >= self.num_classes:
            raise ValueError(f"need 2 <= num_classes and labels < num_classes, got {self.num_classes} classes")
        self.train_y = y.long()
        self.covar_module = kernel.to(dtype)
        self.mixture = bool(mixture)
        self.prior_a = torch.tensor(check_positive(a, "a"), dtype=dtype)
        self.prior_b = torch.tensor(check_positive(b, "b"), dtype=dtype)
        self.num_samples = check_positive_int(num_samples, "num_samples")
        self._gen = torch.Generator().manual_seed(check_positive_int(seed, "seed", minimum=0))
        M = min(check_positive_int(num_inducing, "num_inducing"), n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:M]
        z = self.train_x[perm].clone()
        check_same_width(z, d)
        self.inducing_points = torch.nn.Parameter(z)
        C = self.num_classes
        self.q_mean = torch.nn.Parameter(torch.zeros(C, M, dtype=dtype))
        self.q_scale_tril = torch.nn.Parameter(0.1 * torch.eye(M, dtype=dtype).expand(C, M, M).clone())
        # q(sigma^2) = InvGamma(alpha, beta) starts at the prior; without the mixture, log_variance is used
        self.log_alpha = torch.nn.Parameter(torch.log(self.prior_a.clone()))
        self.log_beta = torch.nn.Parameter(torch.log(self.prior_b.clone()))
        self.log_variance = torch.nn.Parameter(torch.log(self.prior_b / (self.prior_a - 1).clamp_min(0.5)))

    def _variance_samples(self, num: int) -> torch.Tensor:
        if not self.mixture:
            return torch.exp(self.log_variance).expand(num)
        alpha, beta = torch.exp(self.log_alpha), torch.exp(self.log_beta)
        # reparametrised: sigma^2 = beta / G, G ~ Gamma(alpha, 1) (torch's Gamma.rsample is differentiable)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self._gen)))
            g = torch.distributions.Gamma(alpha.expand(num), torch.ones_like(alpha).expand(num)).rsample()
        return beta / g

    def _kernel_parts(self, x):
        Z = self.inducing_points
        M = Z.shape[0]
        Kzz = self.covar_module(Z, Z).to_dense() + _JITTER * torch.eye(M, dtype=Z.dtype)
        L = torch.linalg.cholesky(Kzz)
        A = torch.cholesky_solve(self.covar_module(Z, x).to_dense(), L).T  # (n, M): K_xZ K_ZZ^{-1}
        kxx = self.covar_module(x, diag=True)
        qxx = (A * self.covar_module(x, Z).to_dense()).sum(-1)
        return L, A, (kxx - qxx).clamp_min(1e-10)

    def _latent_samples(self, x, num: int):
        """Draws of f, shape (num, n, C), and the pieces of the KL."""
        L, A, resid = self._kernel_parts(x)
        S = torch.tril(self.q_scale_tril)
        mean = A @ self.q_mean.T  # (n, C)
        AS = torch.einsum("nm,cmk->cnk", A, S)
        var_u = (AS * AS).sum(-1).T  # (n, C)
        sigma2 = self._variance_samples(num)  # (num,)
        var = var_u.unsqueeze(0) + sigma2.view(-1, 1, 1) * resid.view(1, -1, 1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self._gen)))
            eps = torch.randn(num, *mean.shape, dtype=mean.dtype)
        return mean + var.sqrt() * eps, L, S

    def kl_terms(self) -> torch.Tensor:
        r"""The KL part of the bound: :math:`\sum_c \mathbb E\,\mathrm{KL}(q(u_c)\|p(u_c|\sigma^2))`
        :math:`+ \mathrm{KL}(q(\sigma^2)\|p(\sigma^2))`."""
        Z = self.inducing_points
        Kzz = self.covar_module(Z, Z).to_dense() + _JITTER * torch.eye(Z.shape[0], dtype=Z.dtype)
        L = torch.linalg.cholesky(Kzz)
        S = torch.tril(self.q_scale_tril)
        if self.mixture:
            alpha, beta = torch.exp(self.log_alpha), torch.exp(self.log_beta)
            return expected_gaussian_kl(self.q_mean, S, L, alpha, beta).sum() + inverse_gamma_kl(
                alpha, beta, self.prior_a, self.prior_b
            )
        # a point mass at sigma^2 = v: E[1/sigma^2] = 1/v, E[log sigma^2] = log v
        return _gaussian_kl_moments(self.q_mean, S, L, torch.exp(-self.log_variance), self.log_variance).sum()

    def elbo(self, x=None, y=None, num_data: int | None = None) -> torch.Tensor:
        x = self.train_x if x is None else x
        y = self.train_y if y is None else y
        n = self.train_x.shape[0] if num_data is None else num_data
        f, _, _ = self._latent_samples(x, self.num_samples)
        ell = torch.log_softmax(f, -1).gather(-1, y.view(1, -1, 1).expand(f.shape[0], -1, 1)).mean(0).sum()
        return ell * (n / x.shape[0]) - self.kl_terms()

    def fit(
        self,
        num_steps: int = 500,
        lr: float = 0.02,
        *,
        batch_size: int | None = 256,
        tol: float = 1e-2,
        schedule: str = "cosine",
        min_steps: int = 100,
    ):
        r"""Maximise the bound with Adam on minibatches (``batch_size=None``: full batch).

        The learning rate decays from ``lr`` to ``lr/100`` along a cosine over ``num_steps`` by default
        (``schedule="constant"`` keeps it fixed). The loss is stochastic (Monte Carlo draws, and minibatches),
        so convergence is judged on a least-squares line through the last 10 % of the losses: ``converged_``
        is true when its relative change over that window is below ``tol``; the fit stops there (after at
        least ``min_steps``) (:func:`~probsparse.models.gp._training.relative_change` with ``smooth=True``).
        """
        n = self.train_x.shape[0]
        gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self._gen)))
        if batch_size is not None:
            batch_size = min(check_positive_int(batch_size, "batch_size"), n)

        def loss_fn():
            if batch_size is None:
                return -self.elbo() / n
            idx = torch.randint(0, n, (batch_size,), generator=gen)
            return -self.elbo(self.train_x[idx], self.train_y[idx], num_data=n) / n

        self.losses_ = fit_loop(
            loss_fn, self.parameters(), num_steps, lr, schedule=schedule, tol=tol, min_steps=min_steps, smooth=True
        )
        self.relative_change_ = relative_change(self.losses_, smooth=True)
        self.converged_ = bool(self.relative_change_ < tol)
        return self

    def predict_proba(self, x, *, num_samples: int = 64) -> torch.Tensor:
        """Predictive class probabilities at ``x``: the Monte Carlo mean of the softmax, shape ``(m, C)``."""
        x = as_inputs(x, "x", dtype=self.train_x.dtype, width=self.train_x.shape[1])
        with torch.no_grad():
            f, _, _ = self._latent_samples(x, check_positive_int(num_samples, "num_samples"))
            return torch.softmax(f, -1).mean(0)

    def predictive_entropy(self, x, *, num_samples: int = 64) -> torch.Tensor:
        """Entropy of the predictive class distribution at ``x`` (nats), shape ``(m,)``."""
        p = self.predict_proba(x, num_samples=num_samples).clamp_min(1e-300)
        return -(p * torch.log(p)).sum(-1)
