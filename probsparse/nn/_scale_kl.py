r"""A Bayesian layer's scale-variable KL terms through the Numba kernels of :mod:`probsparse.kernels.scale_mixture_kl`.

Written with tensor operations, the KL of a layer's few small scale variables (a global :math:`\tau`, one
:math:`\lambda` per input neuron) costs a few hundred operator dispatches per training step, more than the
layer's matrix products on LeNet-300-100. :class:`ScaleKLPlan` fixes, once per family, how the variables are laid
out for the kernels; the autograd functions here pass the parameters to the kernels as NumPy views and return
their analytic gradient.

A plan exists only for priors the kernels know with constant parameters (half-Cauchy, Gamma, inverse-Gamma, or
``None`` for a type-II point estimate); :func:`ScaleKLPlan.build` returns ``None`` otherwise and the family falls
back to tensor operations with autograd. The centred family's plan also covers large variables and weight groups
(a scale per weight of a large layer): those parts are computed with vectorised tensor operations, since the
kernels' scalar ``exp`` would cost milliseconds there (:func:`centred_kl_parts`).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from probsparse.kernels import scale_mixture_kl as kernels

# Gauss-Hermite rule for E_{N(0, 1)}[f(x)]: nodes sqrt(2) x_j, weights w_j / sqrt(pi).
_HERMITE_X, _HERMITE_W = np.polynomial.hermite.hermgauss(10)
HERMITE_NODES = math.sqrt(2.0) * _HERMITE_X
HERMITE_WEIGHTS = _HERMITE_W / math.sqrt(math.pi)
# Scale variables with more entries than this (one per weight of a large layer) get a one-draw Monte Carlo
# estimate of E_q[log p] instead of the quadrature (in the tensor code of families.py: unbiased, and 10x cheaper
# where it matters); the kernels take only variables and weight groups up to this size.
QUADRATURE_MAX_ENTRIES = 4096


def _constant(value: torch.Tensor) -> float | None:
    """The single value of a parameter tensor that is constant (no gradient, every entry equal), else None."""
    value = torch.as_tensor(value)
    if value.requires_grad or value.numel() == 0:
        return None
    first = value.reshape(-1)[0]
    return float(first) if bool((value == first).all()) else None


def _prior_numbers(prior) -> tuple[int, float, float, float] | None:
    """``(kind, a, b, const)`` of a scale prior for the kernels (module docstring there), or None."""
    if prior is None:
        return kernels.POINT_ESTIMATE, 0.0, 0.0, 0.0
    if isinstance(prior, torch.distributions.HalfCauchy):
        scale = _constant(prior.scale)
        if scale is None:
            return None
        return kernels.HALF_CAUCHY, math.log(scale), 0.0, math.log(2.0 / math.pi) - math.log(scale)
    if isinstance(prior, (torch.distributions.Gamma, torch.distributions.InverseGamma)):
        a, b = _constant(prior.concentration), _constant(prior.rate)
        if a is None or b is None:
            return None
        kind = kernels.GAMMA if isinstance(prior, torch.distributions.Gamma) else kernels.INVERSE_GAMMA
        return kind, a, b, a * math.log(b) - math.lgamma(a)
    return None


class ScaleKLPlan:
    """How one family's scale variables (and, for the centred family, its weights' groups) meet the kernels.

    Made by :meth:`build`. The variables are concatenated in the order of ``shapes``, as
    :class:`~probsparse.nn.families.ScaleVariables` stores them.

    Parameters of :meth:`build`
    ---------------------------
    priors : dict of {str : Distribution or None}
        The prior of each scale variable (``None``: a type-II point estimate).
    shapes : dict of {str : torch.Size}
        Each variable's shape (broadcastable to the weight's).
    weight_shape : torch.Size
    exponents : dict of {str : float}, optional
        :math:`p_k` of :math:`s = c_0 \\prod_k \\phi_k^{p_k}` (the centred family).
    log_c : float
        :math:`\\log c_0`.
    """

    def __init__(self, numbers, shapes, weight_shape, exponents=None, log_c=0.0):
        self.keys = list(shapes)
        self.shapes = [torch.Size(shapes[k]) for k in self.keys]
        sizes = [s.numel() for s in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.kinds = np.array([numbers[k][0] for k in self.keys], dtype=np.int64)
        self.prior_a, self.prior_b, self.prior_const = (
            np.array([numbers[k][i] for k in self.keys], dtype=np.float64) for i in (1, 2, 3)
        )
        self.n_entries = int(self.offsets[-1])
        self.weight_shape = torch.Size(weight_shape)
        self.large = [n > QUADRATURE_MAX_ENTRIES for n in sizes]
        if exponents is None:
            return
        ndim = len(self.weight_shape)
        self.group_shape = torch.broadcast_shapes((1,) * ndim, *self.shapes)
        self.reduce_dims = [d for d in range(ndim) if self.group_shape[d] == 1 and self.weight_shape[d] > 1]
        self.exponents = np.array([exponents[k] for k in self.keys], dtype=np.float64)
        self.repeats = np.array([self.weight_shape.numel() // n for n in sizes], dtype=np.float64)
        self.shape_array = np.array(self.group_shape, dtype=np.int64)
        self.strides = np.zeros((len(self.keys), ndim), dtype=np.int64)
        for k, shape in enumerate(self.shapes):
            step = 1
            for d in range(ndim - 1, -1, -1):
                self.strides[k, d] = step if shape[d] > 1 else 0
                step *= shape[d]
        self.log_c = float(log_c)
        # Large variables or groups (a scale per weight of a large layer): tensor operations, see centred_kl_parts.
        self.vectorised = any(self.large) or self.group_shape.numel() > QUADRATURE_MAX_ENTRIES
        self.small_kinds = np.where(self.large, kernels.POINT_ESTIMATE, self.kinds)

    @classmethod
    def build(cls, priors, shapes, weight_shape, exponents=None, log_c=0.0) -> ScaleKLPlan | None:
        """The plan, or ``None`` where a prior is not one the kernels know with constant parameters.

        Without ``exponents`` (the scale variables' KL alone) also ``None`` for variables over 4096 entries.
        """
        numbers = {k: _prior_numbers(p) for k, p in priors.items()}
        if any(n is None for n in numbers.values()):
            return None
        if exponents is None and any(torch.Size(s).numel() > QUADRATURE_MAX_ENTRIES for s in shapes.values()):
            return None
        if exponents is not None and set(exponents) != set(shapes):
            return None
        return cls(numbers, shapes, weight_shape, exponents, log_c)

    def arrays(self, loc, log_std) -> tuple[np.ndarray, np.ndarray]:
        """The kernels' ``loc`` and ``log_std`` from the flat parameters of
        :class:`~probsparse.nn.families.ScaleVariables` (NumPy views; zeros where there is no ``log_std``)."""
        if loc is None:
            return np.zeros(0), np.zeros(0)
        loc = loc.detach().numpy()
        return loc, np.zeros_like(loc) if log_std is None else log_std.detach().numpy()

    def gradients(self, grad_loc, grad_log_std, scale, like, has_log_std) -> tuple:
        """``scale`` times the kernels' gradients, as tensors of ``like``'s dtype (None for an absent parameter)."""
        if like is None:
            return None, None
        factor = float(scale)
        dtype = _numpy_dtype(like.dtype)
        grads = (torch.from_numpy((g * factor).astype(dtype, copy=False)) for g in (grad_loc, grad_log_std))
        grad_loc, grad_log_std = grads
        return grad_loc, grad_log_std if has_log_std else None


@functools.cache
def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty((), dtype=dtype).numpy().dtype


class _ScaleVariablesKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan, loc, log_std):
        loc_array, log_std_array = plan.arrays(loc, log_std)
        grad_loc, grad_log_std = np.zeros(plan.n_entries), np.zeros(plan.n_entries)
        value = kernels.scale_variables_kl(
            plan.kinds, plan.prior_a, plan.prior_b, plan.prior_const, plan.offsets, loc_array, log_std_array,
            HERMITE_NODES, HERMITE_WEIGHTS, grad_loc, grad_log_std,
        )  # fmt: skip
        ctx.plan, ctx.grads, ctx.like, ctx.has_log_std = plan, (grad_loc, grad_log_std), loc, log_std is not None
        return torch.tensor(value, dtype=loc.dtype)

    @staticmethod
    def backward(ctx, grad):
        return None, *ctx.plan.gradients(*ctx.grads, grad, ctx.like, ctx.has_log_std)


def scale_variables_kl(plan: ScaleKLPlan, loc: torch.Tensor, log_std: torch.Tensor | None) -> torch.Tensor:
    r""":math:`\sum_k \mathrm{KL}(q(\phi_k) \,\|\, p_k)` for log-normal :math:`q`, a scalar.

    Parameters
    ----------
    plan : ScaleKLPlan
    loc, log_std : torch.Tensor
        The flat parameters of :class:`~probsparse.nn.families.ScaleVariables` (``log_std`` None when every variable
        is a point estimate), laid out as ``plan``.
    """
    return _ScaleVariablesKL.apply(plan, loc, log_std)


def centred_kl_parts(plan: ScaleKLPlan, mean, log_std, var, scale_loc, scale_log_std):
    """The centred family's KL (see :func:`centred_kl`) without autograd, with what its gradient needs.

    Returns
    -------
    kl : torch.Tensor
        Shape ().
    precision : torch.Tensor
        :math:`E[s^{-2}]` of each weight group, shape ``plan.group_shape``: the gradient of the KL in the
        weights is ``mean * precision`` and ``var * precision - 1`` (in ``log_std``).
    scale_grads : tuple of ndarray
        The gradient in ``scale_loc`` and ``scale_log_std`` (see :meth:`ScaleKLPlan.gradients`).
    """
    if plan.vectorised:
        return _centred_kl_parts_vectorised(plan, mean, log_std, var, scale_loc, scale_log_std)
    sum_log_std = float(log_std.detach().sum())
    second_moment = _second_moment(mean, var, plan)
    loc, scale_log_std = plan.arrays(scale_loc, scale_log_std)
    grad_loc, grad_log_std = np.zeros(plan.n_entries), np.zeros(plan.n_entries)
    precision = np.empty(second_moment.numel(), dtype=second_moment.numpy().dtype)
    value = kernels.centred_scale_mixture_kl(
        second_moment.reshape(-1).numpy(), plan.shape_array, plan.strides, plan.exponents, plan.repeats,
        plan.log_c, plan.kinds, plan.prior_a, plan.prior_b, plan.prior_const, plan.offsets, loc, scale_log_std,
        HERMITE_NODES, HERMITE_WEIGHTS, precision, grad_loc, grad_log_std,
    )  # fmt: skip
    n = mean.numel()
    # The weights' own terms: -sum log sigma - n / 2 + n log c0 (E[log s] beyond log c0 is in the kernel's value).
    kl = torch.tensor(value - sum_log_std + n * (plan.log_c - 0.5), dtype=mean.dtype)
    return kl, torch.from_numpy(precision).reshape(plan.group_shape), (grad_loc, grad_log_std)


def _log_density_of_log_with_slope(plan: ScaleKLPlan, k: int, u: torch.Tensor) -> tuple[float, torch.Tensor]:
    """:math:`\\sum f(u)` and :math:`f'(u)` of variable ``k``'s prior (the kernels' table, in tensor operations)."""
    kind, a, b, const = plan.kinds[k], plan.prior_a[k], plan.prior_b[k], plan.prior_const[k]
    if kind == kernels.HALF_CAUCHY:
        z = u.sub(a).mul_(2.0)
        value = float(u.sum()) - float(F.softplus(z).sum()) + const * u.numel()
        return value, z.sigmoid_().mul_(-2.0).add_(1.0)
    sign = 1.0 if kind == kernels.GAMMA else -1.0
    tail = torch.exp(u * sign).mul_(b)
    value = sign * a * float(u.sum()) - float(tail.sum()) + const * u.numel()
    return value, tail.mul_(-sign).add_(sign * a)


def _centred_kl_parts_vectorised(plan: ScaleKLPlan, mean, log_std, var, scale_loc, scale_log_std):
    """:func:`centred_kl_parts` in tensor operations, for a layer with a scale per weight (large groups).

    The kernels' scalar ``exp`` would cost milliseconds on a few hundred thousand groups. Small variables still
    go through the quadrature kernel; a large one's KL is estimated from one reparameterised draw (unbiased).
    """
    loc = scale_loc.detach()
    spread = None if scale_log_std is None else scale_log_std.detach()
    grad_loc, grad_log_std = np.zeros(plan.n_entries), np.zeros(plan.n_entries)
    value = kernels.scale_variables_kl(
        plan.small_kinds, plan.prior_a, plan.prior_b, plan.prior_const, plan.offsets, *plan.arrays(loc, spread),
        HERMITE_NODES, HERMITE_WEIGHTS, grad_loc, grad_log_std,
    )  # fmt: skip
    log_precision = torch.full(plan.group_shape, -2.0 * plan.log_c, dtype=mean.dtype)
    views = []
    for k, shape in enumerate(plan.shapes):
        piece = slice(int(plan.offsets[k]), int(plan.offsets[k + 1]))
        m = loc[piece].view(shape)
        ell = None if plan.kinds[k] == kernels.POINT_ESTIMATE else spread[piece].view(shape)
        v = None if ell is None else torch.exp(ell).square_()
        p = float(plan.exponents[k])
        log_precision.add_(m, alpha=-2.0 * p)
        if v is not None:
            log_precision.add_(v, alpha=2.0 * p * p)
        views.append((piece, shape, m, ell, v, p))
    precision = log_precision.exp_()
    half = torch.addcmul(var, mean.detach(), mean.detach())
    if half.shape != plan.group_shape:
        half = half.sum(plan.reduce_dims, keepdim=True)
    half.mul_(precision).mul_(0.5)
    value += float(half.sum()) - float(log_std.detach().sum()) + mean.numel() * (plan.log_c - 0.5)
    for k, (piece, shape, m, ell, v, p) in enumerate(views):
        summed = half.sum_to_size(shape)
        value += p * float(plan.repeats[k]) * float(m.sum())
        grad_loc[piece] += (p * float(plan.repeats[k]) - 2.0 * p * summed).reshape(-1).numpy()
        if v is not None:
            grad_log_std[piece] += (4.0 * p * p * v * summed).reshape(-1).numpy()
        if plan.large[k] and ell is not None:  # one draw: -(log p(e^u) + u) - entropy, u = m + e^ell eps
            std = ell.exp()
            eps = torch.randn_like(m)
            log_density, slope = _log_density_of_log_with_slope(plan, k, torch.addcmul(m, std, eps))
            value -= float(log_density) + float(ell.sum()) + 0.5 * math.log(2.0 * math.pi * math.e) * m.numel()
            grad_loc[piece] -= slope.reshape(-1).numpy()
            grad_log_std[piece] -= slope.mul_(eps).mul_(std).add_(1.0).reshape(-1).numpy()
    return torch.tensor(value, dtype=mean.dtype), precision, (grad_loc, grad_log_std)


class _CentredKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan, mean, log_std, var, scale_loc, scale_log_std):
        if var is None:
            var = torch.exp(log_std).square_()
        kl, precision, ctx.grads = centred_kl_parts(plan, mean, log_std, var, scale_loc, scale_log_std)
        ctx.save_for_backward(mean, var, precision)
        ctx.plan, ctx.like, ctx.has_log_std = plan, scale_loc, scale_log_std is not None
        return kl

    @staticmethod
    def backward(ctx, grad):
        mean, var, precision = ctx.saved_tensors
        scaled = precision * grad
        grad_mean = torch.mul(mean, scaled) if ctx.needs_input_grad[1] else None
        # d/d log_std of (var * precision / 2 - log_std) is var * precision - 1.
        grad_log_std = torch.addcmul(-grad, var, scaled) if ctx.needs_input_grad[2] else None
        return None, grad_mean, grad_log_std, None, *ctx.plan.gradients(*ctx.grads, grad, ctx.like, ctx.has_log_std)


def _second_moment(mean: torch.Tensor, var: torch.Tensor, plan: ScaleKLPlan) -> torch.Tensor:
    """:math:`\\sum (\\sigma^2 + \\mu^2)` over each precision group, contiguous, of shape ``plan.group_shape``."""
    if mean.dim() == 2:  # a linear layer: one Numba pass
        second_moment = torch.empty(plan.group_shape, dtype=mean.dtype)
        kernels.weight_second_moments(mean.detach().numpy(), var.detach().numpy(), second_moment.numpy())
        return second_moment
    dims = plan.reduce_dims
    if not dims:
        return torch.addcmul(var, mean, mean)
    if len(dims) == 1:  # a row or column sum: no weight-sized temporary
        (dim,) = dims
        return var.sum(dim, keepdim=True).add_(torch.linalg.vecdot(mean, mean, dim=dim).unsqueeze(dim))
    return torch.addcmul(var, mean, mean).sum(dims, keepdim=True)


def centred_kl(plan: ScaleKLPlan, mean, log_std, var, scale_loc, scale_log_std) -> torch.Tensor:
    r"""The centred family's KL (:class:`~probsparse.nn.families.CentredScaleMixtureFamily`), a scalar.

    .. math::

        \sum \Big(E[\log s] - \ell + \tfrac12 (e^{2\ell} + \mu^2)\, E[s^{-2}] - \tfrac12\Big)
        + \sum_k \mathrm{KL}(q(\phi_k) \,\|\, p_k).

    Parameters
    ----------
    plan : ScaleKLPlan
        Built with ``exponents``.
    mean, log_std : torch.Tensor
        The weights' :math:`\mu` and :math:`\ell`, shape ``plan.weight_shape``.
    var : torch.Tensor or None
        :math:`e^{2\ell}` if already at hand (a constant here).
    scale_loc, scale_log_std : torch.Tensor or None
        As for :func:`scale_variables_kl`.
    """
    return _CentredKL.apply(plan, mean, log_std, None if var is None else var.detach(), scale_loc, scale_log_std)
