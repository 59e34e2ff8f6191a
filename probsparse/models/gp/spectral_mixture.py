r"""Spectral-mixture covariances with a product over input dimensions and closed-form derivatives.

Each input dimension :math:`j` has its own one-dimensional mixture of :math:`Q` components,

.. math::

    k(x, x') = \prod_{j=1}^{d} k_j(x_j - x'_j), \qquad
    k_j(\tau) = \sum_{q=1}^{Q} w_{jq}\, e(\tau; \ell_{jq}) \cos(2\pi \mu_{jq} \tau),

with an envelope :math:`e` that is the Fourier transform of the spectral shape of a component:

* Gaussian spectrum (:class:`GaussianSpectralMixtureKernel`, the Wilson–Adams spectral mixture):
  :math:`e(\tau; \ell) = \exp(-\tau^2 / 2\ell^2)`;
* Student-t spectrum with :math:`\nu = 5/2` (:class:`StudentTSpectralMixtureKernel`):
  :math:`e(\tau; \ell) = (1 + \sqrt5 r/\ell + 5 r^2 / 3\ell^2)\, e^{-\sqrt5 r/\ell}`, :math:`r = |\tau|`,
  the Matérn-5/2 correlation.

Because the kernel is a product of stationary factors, a derivative of order :math:`(a_j)` in the first
argument and :math:`(b_j)` in the second acts factor by factor:

.. math::

    \operatorname{cov}\big(\partial^{a} f(x), \partial^{b} f(x')\big)
    = \prod_j (-1)^{b_j}\, k_j^{(a_j + b_j)}(x_j - x'_j),

and :math:`k_j^{(1)}, k_j^{(2)}` are written out in closed form (no autograd of autograd). The total order
per dimension is limited to 2 (the Matérn-5/2 factor has no third derivative at the origin).

**Parametrisation (what is optimised).** The weights are stored as ``log_weights`` (no constraint):
gradient steps are taken on :math:`\log w`, and a flat density on :math:`\log w` is the Jeffreys density
:math:`p(w) \propto 1/w` on :math:`w`; this is the only sparsity mechanism of GP-HM and surplus components
drift towards zero weight. An explicit prior on the weights (any GPyTorch prior, e.g.
``gpytorch.priors.HorseshoePrior``) can be added with ``mixture_weights_prior``; it is then part of
``named_priors()`` and a training loss adds its log density. Frequencies :math:`\mu` (cycles per unit of
:math:`x`) are unconstrained (the cosine is even in :math:`\mu`); lengthscales are positive through an
exponential transform (``raw_mixture_lengthscales`` = :math:`\log \ell`).

References
----------
.. [1] S. Fang, M. Cooley, D. Long, S. Li, R. Kirby, S. Zhe, "Solving High Frequency and Multi-Scale PDEs
   with Gaussian Processes", ICLR 2024. Their :math:`w_q, \mu_q` are ours; their inverse lengthscale
   ``exp(log_ls)`` is :math:`1/\ell` (Matérn) or :math:`1/2\ell^2` (Gaussian); their GP-HM-StM is
   :class:`StudentTSpectralMixtureKernel`, GP-HM-GM is :class:`GaussianSpectralMixtureKernel`.
.. [2] A. G. Wilson, R. P. Adams, "Gaussian Process Kernels for Pattern Discovery and Extrapolation",
   ICML 2013.
"""

from __future__ import annotations

import math

import gpytorch
import torch
from gpytorch.constraints import Positive

from probsparse._validation import check_positive_int, check_positive_real

__all__ = [
    "GaussianSpectralMixtureKernel",
    "SpectralMixtureProductKernel",
    "StudentTSpectralMixtureKernel",
    "gaussian_envelope",
    "matern52_envelope",
]

MAX_ORDER = 2
_SQRT5 = math.sqrt(5.0)


def gaussian_envelope(tau: torch.Tensor, lengthscale: torch.Tensor, order: int = 0) -> torch.Tensor:
    r"""Squared-exponential envelope :math:`e(\tau) = \exp(-\tau^2/2\ell^2)` or its derivative in :math:`\tau`.

    ``tau`` and ``lengthscale`` broadcast; ``order`` is 0, 1 or 2:
    :math:`e' = -\tau e / \ell^2`, :math:`e'' = (\tau^2/\ell^4 - 1/\ell^2) e`.

    Examples
    --------
    >>> float(gaussian_envelope(torch.tensor(0.0), torch.tensor(2.0), order=2))
    -0.25
    """
    inv2 = lengthscale.reciprocal().square()
    e = torch.exp(-0.5 * tau.square() * inv2)
    if order == 0:
        return e
    if order == 1:
        return -tau * inv2 * e
    if order == 2:
        return (tau.square() * inv2 - 1.0) * inv2 * e
    raise ValueError(f"order must be 0, 1 or 2, got {order}")


def matern52_envelope(tau: torch.Tensor, lengthscale: torch.Tensor, order: int = 0) -> torch.Tensor:
    r"""Matérn-5/2 envelope or its derivative in :math:`\tau` (``order`` 0, 1 or 2).

    With :math:`\alpha = \sqrt5/\ell` and :math:`r = |\tau|`:
    :math:`e = (1 + \alpha r + \alpha^2 r^2/3) e^{-\alpha r}`,
    :math:`e' = -\tfrac{\alpha^2}{3} \tau (1 + \alpha r) e^{-\alpha r}`,
    :math:`e'' = -\tfrac{\alpha^2}{3} (1 + \alpha r - \alpha^2 r^2) e^{-\alpha r}`
    (all smooth in :math:`\tau`, including at 0).

    Examples
    --------
    >>> float(matern52_envelope(torch.tensor(0.0), torch.tensor(1.0), order=2))
    -1.666...
    """
    alpha = _SQRT5 / lengthscale
    r = tau.abs()
    ar = alpha * r
    decay = torch.exp(-ar)
    if order == 0:
        return (1.0 + ar + ar.square() / 3.0) * decay
    if order == 1:
        return -(alpha.square() / 3.0) * tau * (1.0 + ar) * decay
    if order == 2:
        return -(alpha.square() / 3.0) * (1.0 + ar - ar.square()) * decay
    raise ValueError(f"order must be 0, 1 or 2, got {order}")


class SpectralMixtureProductKernel(gpytorch.kernels.Kernel):
    r"""Product over dimensions of one-dimensional spectral mixtures (base class; pick an envelope).

    .. math::

        k(x, x') = \prod_{j=1}^{d} \sum_{q=1}^{Q} w_{jq}\, e(x_j - x'_j; \ell_{jq})
        \cos\big(2\pi \mu_{jq} (x_j - x'_j)\big)

    Parameters
    ----------
    num_mixtures : int
        :math:`Q`, components per dimension (>= 1).
    num_dims : int, default=1
        :math:`d`, input dimensions; inputs have shape ``(..., n, d)``.
    mixture_means : array_like of shape (Q,) or (d, Q), optional
        Initial frequencies :math:`\mu` in cycles per unit of :math:`x`. Default ``linspace(0, 1, Q)``.
    mixture_lengthscales : float or array_like of shape (Q,) or (d, Q), default=1.0
        Initial envelope lengthscales :math:`\ell > 0`.
    mixture_weights : float or array_like of shape (Q,) or (d, Q), optional
        Initial weights :math:`w > 0`; default :math:`1/Q` (GP-HM's initialisation).
    mixture_weights_prior : gpytorch.priors.Prior, optional
        Explicit prior on :math:`w` (shape ``(d, Q)``), registered as ``mixture_weights_prior``.
    learn_means : bool, default=True
        ``False`` freezes :math:`\mu` (e.g. the plain SE / Matérn baselines with :math:`\mu = 0`, :math:`Q = 1`).

    Attributes
    ----------
    log_weights : torch.nn.Parameter of shape (d, Q)
        :math:`\log w`, the optimised parametrisation of the weights.
    mixture_means : torch.nn.Parameter of shape (d, Q)
        :math:`\mu`.
    raw_mixture_lengthscales : torch.nn.Parameter of shape (d, Q)
        :math:`\log \ell` (constraint ``Positive(exp, log)``).
    """

    is_stationary = True
    has_lengthscale = False

    def __init__(
        self,
        num_mixtures: int,
        num_dims: int = 1,
        *,
        mixture_means=None,
        mixture_lengthscales=1.0,
        mixture_weights=None,
        mixture_weights_prior: gpytorch.priors.Prior | None = None,
        learn_means: bool = True,
        **kwargs,
    ):
        num_mixtures = check_positive_int(num_mixtures, "num_mixtures")
        num_dims = check_positive_int(num_dims, "num_dims")
        if kwargs.get("batch_shape") not in (None, torch.Size([])):
            raise ValueError(f"batch_shape is not supported by {type(self).__name__}; got {kwargs['batch_shape']}")
        super().__init__(**kwargs)
        self.num_mixtures = num_mixtures
        self.num_dims = num_dims
        shape = (num_dims, num_mixtures)
        dtype = torch.get_default_dtype()
        means = torch.linspace(0.0, 1.0, num_mixtures, dtype=dtype) if mixture_means is None else mixture_means
        weights = 1.0 / num_mixtures if mixture_weights is None else mixture_weights
        means = self._init_tensor(means, shape, "mixture_means", positive=False)
        ells = self._init_tensor(mixture_lengthscales, shape, "mixture_lengthscales", positive=True)
        weights = self._init_tensor(weights, shape, "mixture_weights", positive=True)
        self.register_parameter("log_weights", torch.nn.Parameter(weights.log()))
        self.register_parameter("mixture_means", torch.nn.Parameter(means, requires_grad=bool(learn_means)))
        self.register_parameter("raw_mixture_lengthscales", torch.nn.Parameter(ells.log()))
        self.register_constraint(
            "raw_mixture_lengthscales", Positive(transform=torch.exp, inv_transform=torch.log)
        )
        if mixture_weights_prior is not None:
            if not isinstance(mixture_weights_prior, gpytorch.priors.Prior):
                raise TypeError(
                    "mixture_weights_prior must be a gpytorch.priors.Prior, got "
                    f"{type(mixture_weights_prior).__name__}"
                )
            self.register_prior(
                "mixture_weights_prior", mixture_weights_prior, lambda m: m.mixture_weights, _set_weights
            )

    @staticmethod
    def _init_tensor(value, shape: tuple[int, int], name: str, *, positive: bool) -> torch.Tensor:
        t = torch.as_tensor(value)
        if t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{name} must be real numbers, got dtype {t.dtype}")
        t = t.detach().to(torch.get_default_dtype()).clone()
        try:
            t = torch.broadcast_to(t, shape).clone()
        except RuntimeError:
            raise ValueError(f"{name} must broadcast to (num_dims, num_mixtures) = {shape}, got shape "
                             f"{tuple(t.shape)}") from None
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} must be finite")
        if positive and (t <= 0).any():
            raise ValueError(f"{name} must be > 0, got minimum {float(t.min())}")
        return t

    # -- constrained views ------------------------------------------------------------------------------
    @property
    def mixture_weights(self) -> torch.Tensor:
        """:math:`w = \\exp(\\text{log\\_weights})`, shape ``(d, Q)``."""
        return self.log_weights.exp()

    @mixture_weights.setter
    def mixture_weights(self, value) -> None:
        _set_weights(self, value)

    @property
    def mixture_lengthscales(self) -> torch.Tensor:
        """:math:`\\ell`, shape ``(d, Q)``."""
        return self.raw_mixture_lengthscales_constraint.transform(self.raw_mixture_lengthscales)

    @mixture_lengthscales.setter
    def mixture_lengthscales(self, value) -> None:
        value = self._init_tensor(value, tuple(self.log_weights.shape), "mixture_lengthscales", positive=True)
        self.initialize(raw_mixture_lengthscales=self.raw_mixture_lengthscales_constraint.inverse_transform(value))

    def envelope(self, tau: torch.Tensor, lengthscale: torch.Tensor, order: int) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover - set by subclasses

    # -- one-dimensional factors -------------------------------------------------------------------------
    def factor(self, dim: int, tau: torch.Tensor, order: int = 0) -> torch.Tensor:
        r""":math:`k_j^{(\text{order})}(\tau)` for dimension ``dim``, elementwise over ``tau`` (any shape).

        .. math::

            k' = \sum_q w_q (e' c - m e s), \quad k'' = \sum_q w_q (e'' c - 2 m e' s - m^2 e c),
            \quad m = 2\pi\mu_q,\ c = \cos m\tau,\ s = \sin m\tau .
        """
        if order not in (0, 1, 2):
            raise ValueError(f"derivative order per dimension must be 0, 1 or 2 (at most {MAX_ORDER}), got {order}")
        w = self.mixture_weights[dim]
        ell = self.mixture_lengthscales[dim]
        m = 2.0 * math.pi * self.mixture_means[dim]
        t = tau.unsqueeze(-1)
        mt = m * t
        cos = torch.cos(mt)
        e0 = self.envelope(t, ell, 0)
        if order == 0:
            val = e0 * cos
        else:
            sin = torch.sin(mt)
            e1 = self.envelope(t, ell, 1)
            if order == 1:
                val = e1 * cos - m * e0 * sin
            else:
                e2 = self.envelope(t, ell, 2)
                val = (e2 - m.square() * e0) * cos - 2.0 * m * e1 * sin
        return val @ w

    def derivative_covariance(self, x1: torch.Tensor, x2: torch.Tensor, orders1=None, orders2=None) -> torch.Tensor:
        r"""Cross-covariance :math:`\operatorname{cov}(\partial^{a} f(x_1), \partial^{b} f(x_2))`, shape ``(n1, n2)``.

        Parameters
        ----------
        x1 : torch.Tensor of shape (n1, d)
        x2 : torch.Tensor of shape (n2, d)
        orders1, orders2 : sequence of int of length d, optional
            Derivative orders :math:`a_j`, :math:`b_j` per dimension (default all 0); :math:`a_j + b_j \le 2`.
        """
        x1, x2 = self._check_inputs(x1, x2)
        a = self._check_orders(orders1, "orders1")
        b = self._check_orders(orders2, "orders2")
        out = None
        for j in range(self.num_dims):
            if a[j] + b[j] > MAX_ORDER:
                raise ValueError(
                    f"total derivative order in dimension {j} is {a[j] + b[j]}; at most {MAX_ORDER} is supported"
                )
            tau = x1[:, j, None] - x2[None, :, j]
            fj = self.factor(j, tau, a[j] + b[j])
            if b[j] % 2:
                fj = -fj
            out = fj if out is None else out * fj
        return out

    def _check_orders(self, orders, name: str) -> list[int]:
        if orders is None:
            return [0] * self.num_dims
        orders = list(orders)
        if len(orders) != self.num_dims:
            raise ValueError(f"{name} must have one entry per dimension ({self.num_dims}), got {len(orders)}")
        for o in orders:
            if isinstance(o, bool) or not isinstance(o, int) or o < 0:
                raise ValueError(f"{name} must hold non-negative integers, got {orders}")
        return orders

    def _check_inputs(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for x, name in ((x1, "x1"), (x2, "x2")):
            if not torch.is_tensor(x):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
            if x.dim() != 2 or x.shape[-1] != self.num_dims:
                raise ValueError(f"{name} must have shape (n, {self.num_dims}), got {tuple(x.shape)}")
        return x1, x2

    def forward(self, x1, x2, diag: bool = False, last_dim_is_batch: bool = False, **params):
        if last_dim_is_batch:
            raise ValueError(f"last_dim_is_batch is not supported by {type(self).__name__}")
        if x1.shape[-1] != self.num_dims or x2.shape[-1] != self.num_dims:
            raise ValueError(
                f"inputs must have {self.num_dims} columns (num_dims), got {x1.shape[-1]} and {x2.shape[-1]}"
            )
        out = None
        for j in range(self.num_dims):
            if diag:
                tau = x1[..., j] - x2[..., j]
            else:
                tau = x1[..., :, j, None] - x2[..., None, :, j]
            fj = self.factor(j, tau, 0)
            out = fj if out is None else out * fj
        return out

    def num_active_components(self, threshold: float = 1e-3) -> list[int]:
        """Components per dimension whose weight is above ``threshold`` times that dimension's largest."""
        threshold = check_positive_real(threshold, "threshold")
        w = self.mixture_weights.detach()
        return [int(c) for c in (w > threshold * w.max(dim=-1, keepdim=True).values).sum(dim=-1)]

    def spectrum(self, dim: int, freqs: torch.Tensor) -> torch.Tensor:
        r"""One-sided spectral density of factor ``dim`` at frequencies ``freqs`` (cycles per unit), for plots.

        Sum over components of :math:`w_q [S(s - \mu_q) + S(s + \mu_q)]/2` where :math:`S` is the
        transform of the envelope.
        """
        w = self.mixture_weights[dim]
        ell = self.mixture_lengthscales[dim]
        mu = self.mixture_means[dim]
        s = freqs.unsqueeze(-1)
        return 0.5 * ((self.envelope_spectrum(s - mu, ell) + self.envelope_spectrum(s + mu, ell)) @ w)


def _set_weights(module: SpectralMixtureProductKernel, value) -> None:
    value = module._init_tensor(value, tuple(module.log_weights.shape), "mixture_weights", positive=True)
    module.initialize(log_weights=value.log())


class GaussianSpectralMixtureKernel(SpectralMixtureProductKernel):
    r"""Gaussian spectral mixture per dimension (GP-HM-GM).

    .. math::

        k_j(\tau) = \sum_q w_{jq} \exp\!\big(-\tau^2 / 2\ell_{jq}^2\big) \cos(2\pi\mu_{jq}\tau)

    The spectrum of a component is a Gaussian of standard deviation :math:`1/(2\pi\ell)` around
    :math:`\pm\mu`. See :class:`SpectralMixtureProductKernel` for the parameters.

    Examples
    --------
    >>> k = GaussianSpectralMixtureKernel(2, mixture_means=[0.0, 3.0])
    >>> x = torch.linspace(0, 1, 4).unsqueeze(-1)
    >>> k(x, x).to_dense().shape
    torch.Size([4, 4])
    >>> float(k(x[:1], x[:1]).to_dense().detach())  # k(0) = sum of the weights
    1.0
    """

    def envelope(self, tau, lengthscale, order):
        return gaussian_envelope(tau, lengthscale, order)

    @staticmethod
    def envelope_spectrum(s: torch.Tensor, lengthscale: torch.Tensor) -> torch.Tensor:
        return lengthscale * math.sqrt(2.0 * math.pi) * torch.exp(-2.0 * (math.pi * lengthscale * s).square())


class StudentTSpectralMixtureKernel(SpectralMixtureProductKernel):
    r"""Student-t (:math:`\nu = 5/2`) spectral mixture per dimension: Matérn-5/2 × cosine (GP-HM-StM).

    .. math::

        k_j(\tau) = \sum_q w_{jq} \Big(1 + \tfrac{\sqrt5 |\tau|}{\ell_{jq}} + \tfrac{5\tau^2}{3\ell_{jq}^2}\Big)
        e^{-\sqrt5|\tau|/\ell_{jq}} \cos(2\pi\mu_{jq}\tau)

    The spectrum of a component is a Student-t with :math:`2\nu = 5` degrees of freedom around :math:`\pm\mu`.
    See :class:`SpectralMixtureProductKernel` for the parameters.

    Examples
    --------
    >>> k = StudentTSpectralMixtureKernel(3, num_dims=2, mixture_means=[0.0, 1.0, 2.0])
    >>> x = torch.rand(5, 2)
    >>> k(x, x).to_dense().shape
    torch.Size([5, 5])
    >>> k.derivative_covariance(x, x, orders1=[2, 0]).shape  # cov(f_xx(x1), f(x2))
    torch.Size([5, 5])
    >>> k.num_active_components()
    [3, 3]
    """

    def envelope(self, tau, lengthscale, order):
        return matern52_envelope(tau, lengthscale, order)

    @staticmethod
    def envelope_spectrum(s: torch.Tensor, lengthscale: torch.Tensor) -> torch.Tensor:
        # Fourier transform of the Matérn-5/2 correlation (unit variance), s in cycles per unit.
        lam2 = 5.0 / lengthscale.square()
        return (16.0 / 3.0) * lam2**2.5 / (lam2 + (2.0 * math.pi * s).square()) ** 3
