r"""Neural-network GP (NNGP) kernels: the covariance of an infinitely wide fully connected network.

A network with ``depth`` hidden layers of width :math:`H \to \infty`, weights :math:`\mathcal N(0, \sigma_w^2/H)`
(:math:`\sigma_w^2/d` on the input layer) and biases :math:`\mathcal N(0, \sigma_b^2)` has Gaussian
pre-activations at every layer, with covariance given by the recursion

.. math::

    K^{0}(x, x') = \sigma_b^2 + \sigma_w^2\, \frac{x^\top x'}{d}, \qquad
    K^{\ell}(x, x') = \sigma_b^2 + \sigma_w^2\, \mathbb E_{(u, v) \sim \mathcal N(0, \Sigma^{\ell-1})}
    [\phi(u)\, \phi(v)], \quad \ell = 1, \dots, L,

where :math:`\Sigma^{\ell-1}` is the 2x2 covariance of :math:`K^{\ell-1}` at :math:`(x, x')`. Both kernels here
return :math:`K^L`, the covariance of the last hidden pre-activation. The read-out layer's variance (the
quantity a scale mixture puts a prior on) is left to :class:`gpytorch.kernels.ScaleKernel` or to the
Student-t process of :mod:`probsparse.models.gp.student_t_process`.
"""

from __future__ import annotations

import math

import torch
from gpytorch.constraints import Interval, Positive
from gpytorch.kernels import Kernel

from ..._validation import check_positive_int
from ._inputs import check_positive

__all__ = ["ReLUNNGPKernel", "ErfNNGPKernel", "relu_expectation", "erf_expectation"]


def relu_expectation(k11: torch.Tensor, k22: torch.Tensor, k12: torch.Tensor) -> torch.Tensor:
    r"""Arc-cosine expectation :math:`\mathbb E[\mathrm{relu}(u)\,\mathrm{relu}(v)]` (Cho & Saul, 2009).

    .. math::

        \frac{\sqrt{k_{11} k_{22}}}{2\pi} \big(\sin\theta + (\pi - \theta)\cos\theta\big),
        \qquad \cos\theta = \frac{k_{12}}{\sqrt{k_{11} k_{22}}}.

    Parameters
    ----------
    k11, k22, k12 : Tensor
        Variances of :math:`u`, :math:`v` and their covariance; broadcastable shapes.

    Returns
    -------
    Tensor
        The expectation, broadcast shape of the inputs.

    Examples
    --------
    >>> import torch
    >>> one = torch.tensor(1.0, dtype=torch.float64)
    >>> round(relu_expectation(one, one, one).item(), 9)  # E[relu(u)^2] = var / 2
    0.5
    """
    # Clamping the product before the square root keeps the gradient finite when a variance underflows
    # to zero (sqrt has an infinite slope there), e.g. while an optimiser drives sigma_w^2 towards 0.
    norm = torch.sqrt((k11 * k22).clamp_min(torch.finfo(k12.dtype).tiny))
    # Clamping keeps arccos away from its infinite slope at +-1 (the diagonal, where theta is exactly 0);
    # the clamp passes no gradient there, which is right since cos(theta) = 1 identically on the diagonal.
    eps = 1e-12 if k12.dtype == torch.float64 else 1e-6
    cos = (k12 / norm).clamp(-1.0 + eps, 1.0 - eps)
    theta = torch.arccos(cos)
    return norm / (2 * math.pi) * (torch.sqrt(1 - cos * cos) + (math.pi - theta) * cos)


def erf_expectation(k11: torch.Tensor, k22: torch.Tensor, k12: torch.Tensor) -> torch.Tensor:
    r"""Williams' (1997) expectation :math:`\mathbb E[\mathrm{erf}(u)\,\mathrm{erf}(v)]`.

    .. math::

        \frac{2}{\pi} \arcsin \frac{2 k_{12}}{\sqrt{(1 + 2 k_{11})(1 + 2 k_{22})}}.

    Parameters
    ----------
    k11, k22, k12 : Tensor
        Variances of :math:`u`, :math:`v` and their covariance; broadcastable shapes.

    Returns
    -------
    Tensor
        The expectation, broadcast shape of the inputs.

    Examples
    --------
    >>> import torch
    >>> zero = torch.tensor(0.0)
    >>> erf_expectation(torch.tensor(1.0), torch.tensor(1.0), zero).item()
    0.0
    """
    arg = 2 * k12 / torch.sqrt((1 + 2 * k11) * (1 + 2 * k22))
    return (2 / math.pi) * torch.asin(arg.clamp(-1.0, 1.0))


class _NNGPKernel(Kernel):
    """Shared recursion; subclasses set ``_expectation``."""

    has_lengthscale = False
    _expectation = None

    def __init__(
        self,
        depth: int = 2,
        weight_variance: float = 1.0,
        bias_variance: float = 0.1,
        *,
        weight_variance_constraint: Interval | None = None,
        bias_variance_constraint: Interval | None = None,
        weight_variance_prior=None,
        bias_variance_prior=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.depth = check_positive_int(depth, "depth", minimum=1)
        weight_variance = check_positive(weight_variance, "weight_variance")
        bias_variance = check_positive(bias_variance, "bias_variance")
        for name, constraint, prior, value in (
            ("weight_variance", weight_variance_constraint, weight_variance_prior, weight_variance),
            ("bias_variance", bias_variance_constraint, bias_variance_prior, bias_variance),
        ):
            self.register_parameter(f"raw_{name}", torch.nn.Parameter(torch.zeros(*self.batch_shape, 1, 1)))
            self.register_constraint(f"raw_{name}", constraint if constraint is not None else Positive())
            if prior is not None:
                self.register_prior(
                    f"{name}_prior",
                    prior,
                    lambda m, n=name: getattr(m, n),
                    lambda m, v, n=name: m._set(n, v),
                )
            self._set(name, value)

    def _set(self, name: str, value) -> None:
        if not torch.is_tensor(value):
            value = torch.as_tensor(value).to(getattr(self, f"raw_{name}"))
        constraint = getattr(self, f"raw_{name}_constraint")
        self.initialize(**{f"raw_{name}": constraint.inverse_transform(value)})

    @property
    def weight_variance(self) -> torch.Tensor:
        return self.raw_weight_variance_constraint.transform(self.raw_weight_variance)

    @weight_variance.setter
    def weight_variance(self, value) -> None:
        self._set("weight_variance", value)

    @property
    def bias_variance(self) -> torch.Tensor:
        return self.raw_bias_variance_constraint.transform(self.raw_bias_variance)

    @bias_variance.setter
    def bias_variance(self, value) -> None:
        self._set("bias_variance", value)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False, **params) -> torch.Tensor:
        if x1.shape[-1] != x2.shape[-1]:
            raise ValueError(f"x1 and x2 must have the same number of features, got {x1.shape[-1]} and {x2.shape[-1]}")
        d = x1.shape[-1]
        sw, sb = self.weight_variance, self.bias_variance  # (*batch, 1, 1)
        if diag:
            sw, sb = sw[..., 0], sb[..., 0]  # (*batch, 1) broadcasts against (..., n)
            k12 = sb + sw * (x1 * x2).sum(-1) / d
            k11 = sb + sw * (x1 * x1).sum(-1) / d
            k22 = sb + sw * (x2 * x2).sum(-1) / d
        else:
            k12 = sb + sw * (x1 @ x2.transpose(-1, -2)) / d
            k11 = sb + sw * (x1 * x1).sum(-1, keepdim=True) / d  # (..., n, 1)
            k22 = sb + sw * (x2 * x2).sum(-1).unsqueeze(-2) / d  # (..., 1, m)
        expectation = type(self)._expectation
        for _ in range(self.depth):
            k12 = sb + sw * expectation(k11, k22, k12)
            k11 = sb + sw * expectation(k11, k11, k11)
            k22 = sb + sw * expectation(k22, k22, k22)
        return k12


class ReLUNNGPKernel(_NNGPKernel):
    r"""NNGP kernel of an infinitely wide ReLU network (arc-cosine recursion).

    .. math::

        K^{\ell}(x, x') = \sigma_b^2 + \frac{\sigma_w^2}{2\pi} \sqrt{K^{\ell-1}_{xx} K^{\ell-1}_{x'x'}}
        \big(\sin\theta + (\pi - \theta)\cos\theta\big), \quad
        \theta = \arccos \frac{K^{\ell-1}_{xx'}}{\sqrt{K^{\ell-1}_{xx} K^{\ell-1}_{x'x'}}},

    starting from :math:`K^0 = \sigma_b^2 + \sigma_w^2 x^\top x'/d`; the kernel is :math:`K^L`, ``L = depth``.
    Inputs ``(*batch, n, d)`` and ``(*batch, m, d)`` give ``(*batch, n, m)`` (``(*batch, n)`` with
    ``diag=True``).

    Parameters
    ----------
    depth : int
        Number of hidden layers :math:`L \ge 1`.
    weight_variance, bias_variance : float
        Initial :math:`\sigma_w^2 > 0` and :math:`\sigma_b^2 > 0` (learned, positive constraint).
    weight_variance_constraint, bias_variance_constraint : gpytorch.constraints.Interval, optional
        Constraints of the raw parameters (default ``Positive()``).
    weight_variance_prior, bias_variance_prior : gpytorch.priors.Prior, optional
        Priors, collected by GPyTorch's marginal likelihoods.
    **kwargs
        Passed to :class:`gpytorch.kernels.Kernel` (``batch_shape``, ``active_dims``).

    References
    ----------
    Cho & Saul (2009), "Kernel methods for deep learning"; Lee et al. (2018), "Deep neural networks as
    Gaussian processes" (their :math:`\sigma_w^2, \sigma_b^2, L` are ours). Lee, Yun, Yang & Lee (2022) use
    :math:`L = 4`, :math:`\sigma_w = 1`.

    Examples
    --------
    >>> import torch
    >>> k = ReLUNNGPKernel(depth=3, weight_variance=2.0, bias_variance=0.1)
    >>> x = torch.randn(5, 4, dtype=torch.float64)
    >>> k(x, x).to_dense().shape, k(x, diag=True).shape
    (torch.Size([5, 5]), torch.Size([5]))
    """

    _expectation = staticmethod(relu_expectation)


class ErfNNGPKernel(_NNGPKernel):
    r"""NNGP kernel of an infinitely wide erf network (Williams, 1997).

    .. math::

        K^{\ell}(x, x') = \sigma_b^2 + \sigma_w^2\, \frac{2}{\pi}
        \arcsin \frac{2 K^{\ell-1}_{xx'}}{\sqrt{(1 + 2K^{\ell-1}_{xx})(1 + 2K^{\ell-1}_{x'x'})}},

    starting from :math:`K^0 = \sigma_b^2 + \sigma_w^2 x^\top x'/d`. Shapes as in :class:`ReLUNNGPKernel`.

    Parameters
    ----------
    depth : int
        Number of hidden layers :math:`L \ge 1`.
    weight_variance, bias_variance : float
        Initial :math:`\sigma_w^2 > 0` and :math:`\sigma_b^2 > 0` (learned, positive constraint).
    weight_variance_constraint, bias_variance_constraint : gpytorch.constraints.Interval, optional
        Constraints of the raw parameters (default ``Positive()``).
    weight_variance_prior, bias_variance_prior : gpytorch.priors.Prior, optional
        Priors, collected by GPyTorch's marginal likelihoods.
    **kwargs
        Passed to :class:`gpytorch.kernels.Kernel`.

    References
    ----------
    Williams (1997), "Computing with infinite networks"; Lee et al. (2018).

    Examples
    --------
    >>> import torch
    >>> k = ErfNNGPKernel(depth=2, batch_shape=torch.Size([3]))
    >>> x = torch.randn(3, 6, 2, dtype=torch.float64)
    >>> k(x, x).to_dense().shape
    torch.Size([3, 6, 6])
    """

    _expectation = staticmethod(erf_expectation)
