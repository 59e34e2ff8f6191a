r"""Hand-written backward passes for the per-step hot spots of the Bayesian layers.

Autograd on the plain formulas is correct, but it allocates a weight-sized temporary for every elementwise
operation: about thirty per training step on LeNet-300-100's first layer. The temporaries cost memory traffic,
and page faults whenever the allocator hands their pages back to the system. The functions here do the same
algebra in a few passes over the weights. Each one is tested against autograd on its plain formula with
float64 ``gradcheck`` (``tests/nn/test_autograd.py``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from probsparse.kernels import scale_mixture_kl as kernels
from probsparse.nn._scale_kl import centred_kl_parts

__all__ = [
    "centred_linear_with_kl",
    "exp_twice",
    "gaussian_kl_sum",
    "gaussian_kl_to_scaled_normal",
    "linear_local_reparam",
]


class _ExpTwice(torch.autograd.Function):
    @staticmethod
    def forward(ctx, log_std):
        # exp then an in-place square: one temporary, and faster on the CPU than exp of a doubled copy.
        var = torch.exp(log_std).square_()
        ctx.save_for_backward(var)
        return var

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (var,) = ctx.saved_tensors
        return torch.mul(grad, var).mul_(2.0)


def exp_twice(log_std: torch.Tensor) -> torch.Tensor:
    r""":math:`\sigma^2 = e^{2\ell}` from log standard deviations :math:`\ell` (one temporary, not two)."""
    return _ExpTwice.apply(log_std)


# Below this many entries (a bias, a small layer) the KL is one Numba call: a torch operator costs several
# microseconds of dispatch whatever its size.
_SMALL = 4096


def _small_gaussian_kl(mean, log_std, prior_std):
    """``(kl, d kl / d mean, d kl / d log_std)`` by :func:`probsparse.kernels.gaussian_kl` (float64 gradients)."""
    grad_mean, grad_log_std = np.empty(mean.numel()), np.empty(mean.numel())
    m, ell = mean.detach().reshape(-1).numpy(), log_std.detach().reshape(-1).numpy()
    kl = kernels.gaussian_kl(m, ell, prior_std, grad_mean, grad_log_std)
    dtype = m.dtype
    return kl, grad_mean.astype(dtype, copy=False), grad_log_std.astype(dtype, copy=False)


class _GaussianKLSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mean, log_std, prior_std, var):
        n = mean.numel()
        constant = n * (math.log(prior_std) - 0.5)
        if n <= _SMALL and mean.device.type == "cpu":
            ctx.small, ctx.shape = _small_gaussian_kl(mean, log_std, prior_std), mean.shape
            return torch.tensor(ctx.small[0], dtype=mean.dtype)
        ctx.small = None
        if var is None:
            var = torch.exp(log_std).square_()
        flat_mean = mean.reshape(-1)
        quadratic = var.sum() + torch.dot(flat_mean, flat_mean)
        kl = 0.5 * quadratic / prior_std**2 - log_std.sum() + constant
        ctx.save_for_backward(mean, var)
        ctx.prior_std = prior_std
        return kl

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        need_mean, need_log_std = ctx.needs_input_grad[:2]
        if ctx.small is not None:
            factor = float(grad)
            grad_mean, grad_log_std = (
                torch.from_numpy(g * factor).reshape(ctx.shape) if need else None
                for g, need in zip(ctx.small[1:], (need_mean, need_log_std), strict=True)
            )
            return grad_mean, grad_log_std, None, None
        mean, var = ctx.saved_tensors
        scaled = grad / ctx.prior_std**2
        grad_mean = torch.mul(mean, scaled) if need_mean else None
        # d/d log_std of (var / 2 prior_std^2 - log_std) is var / prior_std^2 - 1.
        grad_log_std = torch.mul(var, scaled).sub_(grad) if need_log_std else None
        return grad_mean, grad_log_std, None, None


def gaussian_kl_sum(
    mean: torch.Tensor, log_std: torch.Tensor, prior_std: float = 1.0, var: torch.Tensor | None = None
) -> torch.Tensor:
    r""":math:`\sum \mathrm{KL}(\mathcal N(\mu, e^{2\ell}) \,\|\, \mathcal N(0, s^2))`, a scalar.

    .. math::

        \mathrm{KL} = \sum \Big( \frac{e^{2\ell} + \mu^2}{2 s^2} - \ell + \log s - \frac12 \Big).

    Parameters
    ----------
    mean, log_std : torch.Tensor
        :math:`\mu` and :math:`\ell`, the same shape.
    prior_std : float
        :math:`s > 0`.
    var : torch.Tensor, optional
        :math:`e^{2\ell}` if already at hand (treated as a constant: the gradient is the analytic one).
    """
    return _GaussianKLSum.apply(mean, log_std, float(prior_std), None if var is None else var.detach())


class _GaussianKLToScaledNormal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mean, log_std, log_precision, var):
        if var is None:
            var = torch.exp(log_std).square_()
        precision = log_precision.exp()
        second_moment = torch.addcmul(var, mean, mean).sum_to_size(log_precision.shape)
        kl = 0.5 * (second_moment * precision).sum() - log_std.sum() - 0.5 * mean.numel()
        ctx.save_for_backward(mean, var, precision, second_moment)
        return kl

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        mean, var, precision, second_moment = ctx.saved_tensors
        scaled = grad * precision
        grad_mean = torch.mul(mean, scaled) if ctx.needs_input_grad[0] else None
        grad_log_std = torch.mul(var, scaled).sub_(grad) if ctx.needs_input_grad[1] else None
        grad_log_precision = 0.5 * second_moment * scaled if ctx.needs_input_grad[2] else None
        return grad_mean, grad_log_std, grad_log_precision, None


def gaussian_kl_to_scaled_normal(
    mean: torch.Tensor, log_std: torch.Tensor, log_precision: torch.Tensor, var: torch.Tensor | None = None
) -> torch.Tensor:
    r""":math:`\sum \big(\tfrac12 (e^{2\ell} + \mu^2) e^{\rho} - \ell - \tfrac12\big)`, a scalar.

    The KL of :math:`\mathcal N(\mu, e^{2\ell})` from :math:`\mathcal N(0, e^{-\rho})` without its
    :math:`-\rho/2` term, which the caller adds (it depends on :math:`\rho` alone, or, for a random
    precision, on :math:`E[\log s]` rather than on :math:`\log E[s^{-2}]`).

    Parameters
    ----------
    mean, log_std : torch.Tensor
        :math:`\mu` and :math:`\ell`, the same shape.
    log_precision : torch.Tensor
        :math:`\rho`, broadcastable to ``mean`` (one per group of weights).
    var : torch.Tensor, optional
        :math:`e^{2\ell}` if already at hand (a constant here).
    """
    return _GaussianKLToScaledNormal.apply(mean, log_std, log_precision, None if var is None else var.detach())


class _LinearLocalReparam(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, mean, var, bias_mean, bias_var):
        scaled = x if scale is None else x * _scaled_view(scale, x)
        scaled_sq = scaled.square()
        out_mean = torch.nn.functional.linear(scaled, mean, bias_mean)
        # sqrt's derivative is infinite at 0 (an all-zero input row without a bias): the variance is floored at
        # the smallest normal number, and no gradient flows through the floor (as clamp_min's).
        std = torch.nn.functional.linear(scaled_sq, var, bias_var).clamp_min_(torch.finfo(x.dtype).tiny).sqrt_()
        noise = torch.randn_like(out_mean)
        ctx.save_for_backward(x, scale, mean, var, scaled, scaled_sq, std, noise)
        return out_mean.addcmul_(std, noise)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, scale, mean, var, scaled, scaled_sq, std, noise = ctx.saved_tensors
        need_x, need_scale, need_mean, need_var, need_bias_mean, need_bias_var = ctx.needs_input_grad
        floor = math.sqrt(torch.finfo(std.dtype).tiny)
        # d out / d variance = noise / (2 std), zero where the variance sat at its floor.
        grad_var_out = torch.where(std > floor, grad * noise / (2.0 * std), 0.0)
        grad_x = grad_scale = grad_mean = grad_var = None
        shared = scale is not None and scale.dim() == 1
        if shared and need_scale:
            # One scale per input column, shared by the batch: its gradient comes from the weight-shaped
            # products the weight gradients need anyway, not from input gradients the step may not need.
            # With G = grad^T x and H = grad_var_out^T x^2 (unscaled inputs), out depends on scale s through
            # mean * s and var * s^2, so d/ds_j = sum_i mean_ij G_ij + 2 s_j sum_i var_ij H_ij.
            g = grad.t().mm(x)
            h = grad_var_out.t().mm(x.square())
            grad_scale = torch.linalg.vecdot(g, mean, dim=0)
            grad_scale += 2.0 * scale * torch.linalg.vecdot(h, var, dim=0)
            grad_mean = g.mul_(scale) if need_mean else None
            grad_var = h.mul_(scale.square()) if need_var else None
        else:
            grad_mean = grad.t().mm(scaled) if need_mean else None
            grad_var = grad_var_out.t().mm(scaled_sq) if need_var else None
        if need_x or (need_scale and not shared):
            grad_scaled = grad.mm(mean)
            grad_scaled.addcmul_(scaled, grad_var_out.mm(var), value=2.0)
            if need_x:
                grad_x = grad_scaled if scale is None else grad_scaled * _scaled_view(scale, x)
            if need_scale and not shared:
                grad_scale = grad_scaled.mul_(x)
        grad_bias_mean = grad.sum(0) if need_bias_mean else None
        grad_bias_var = grad_var_out.sum(0) if need_bias_var else None
        return grad_x, grad_scale, grad_mean, grad_var, grad_bias_mean, grad_bias_var


def _scaled_view(scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``scale`` (``(in,)`` or ``x``'s shape) shaped to multiply ``x`` (batch, in)."""
    return scale if scale.dim() == x.dim() else scale.unsqueeze(0)


def linear_local_reparam(
    x: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    bias_mean: torch.Tensor | None = None,
    bias_var: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""One draw of a Gaussian linear layer's pre-activation (local reparameterisation).

    .. math::

        \tilde x = x \odot s, \qquad
        y = \tilde x M^\top + m
        + \sqrt{\max\big((\tilde x \odot \tilde x) V^\top + v,\ \epsilon\big)} \odot \varepsilon, \qquad
        \varepsilon \sim \mathcal N(0, I),

    the pre-activation of :math:`y = W \tilde x + b` for independent :math:`W_{ij} \sim \mathcal N(M_{ij}, V_{ij})`
    and :math:`b \sim \mathcal N(m, v)`, with :math:`\epsilon` the dtype's smallest normal number.

    Parameters
    ----------
    x : torch.Tensor
        Inputs, shape ``(batch, in)``.
    mean, var : torch.Tensor
        :math:`M` and :math:`V`, shape ``(out, in)``.
    bias_mean, bias_var : torch.Tensor or None
        :math:`m` and :math:`v`, shape ``(out,)``.
    scale : torch.Tensor or None
        :math:`s`: ``(in,)`` (one per input, equivalent to the weights :math:`M s` and :math:`V s^2`) or
        ``(batch, in)`` (one per example and input).

    Returns
    -------
    torch.Tensor
        Shape ``(batch, out)``.
    """
    return _LinearLocalReparam.apply(x, scale, mean, var, bias_mean, bias_var)


class _CentredLinearWithKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, mean, log_std, bias_mean, bias_log_std, bias_prior_std, plan, scale_loc, scale_log_std):
        var = torch.exp(log_std).square_()
        x_sq = x.square()
        out = torch.nn.functional.linear(x, mean, bias_mean)
        bias_var = None if bias_log_std is None else torch.exp(bias_log_std).square_()
        std = torch.nn.functional.linear(x_sq, var, bias_var).clamp_min_(torch.finfo(x.dtype).tiny).sqrt_()
        noise = torch.randn_like(out)
        out.addcmul_(std, noise)
        # Twice d out / d variance, noise / std. Where the variance sits at its floor (an all-zero input row without
        # a bias, or weight variances that underflow) it is large but finite, and every gradient it feeds is then
        # multiplied by a zero (the input or the weight variances).
        twice_slope = noise.div_(std)
        # After the output's noise, so that a KL with draws (large scale variables) uses the random stream as
        # linear_local_reparam followed by the family's kl() does.
        kl, precision, ctx.scale_grads = centred_kl_parts(plan, mean, log_std, var, scale_loc, scale_log_std)
        ctx.bias_grads = None
        if bias_mean is not None:  # the bias's Gaussian KL: small, one Numba call
            bias_kl, *ctx.bias_grads = _small_gaussian_kl(bias_mean, bias_log_std, bias_prior_std)
            kl += bias_kl
        ctx.save_for_backward(x, x_sq, mean, var, bias_var, twice_slope, precision)
        ctx.plan, ctx.scale_like, ctx.has_scale_log_std = plan, scale_loc, scale_log_std is not None
        return out, kl

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, grad_kl):
        x, x_sq, mean, var, bias_var, twice_slope, precision = ctx.saved_tensors
        need_x, need_mean, need_log_std, need_bias_mean, need_bias_log_std = ctx.needs_input_grad[:5]
        grad_var_out = grad * twice_slope  # twice dL/d(output variance)
        kl_precision = precision * grad_kl
        grad_x = grad_mean = grad_log_std = grad_bias_mean = grad_bias_log_std = None
        if need_x:
            grad_x = grad.mm(mean).addcmul_(x, grad_var_out.mm(var))
        if need_mean:  # likelihood part + KL part (mean * E[s^-2])
            grad_mean = grad.t().mm(x).addcmul_(mean, kl_precision)
        if need_log_std:  # var * (2 dL/dvar + KL's precision) - KL's 1, dL/dvar from the likelihood
            grad_log_std = torch.addmm(kl_precision, grad_var_out.t(), x_sq).mul_(var).sub_(grad_kl)
        if ctx.bias_grads is not None:
            factor = float(grad_kl)
            kl_mean, kl_log_std = (torch.from_numpy(g * factor) for g in ctx.bias_grads)
            if need_bias_mean:
                grad_bias_mean = grad.sum(0).add_(kl_mean)
            if need_bias_log_std:  # bias_var * (2 dL/dvar) + KL part
                grad_bias_log_std = grad_var_out.sum(0).mul_(bias_var).add_(kl_log_std)
        scale_grads = ctx.plan.gradients(*ctx.scale_grads, grad_kl, ctx.scale_like, ctx.has_scale_log_std)
        return grad_x, grad_mean, grad_log_std, grad_bias_mean, grad_bias_log_std, None, None, *scale_grads


def centred_linear_with_kl(x, mean, log_std, bias_mean, bias_log_std, bias_prior_std, plan, scale_loc, scale_log_std):
    r"""A linear layer's local-reparameterisation draw and its whole KL, in one pass (centred family).

    .. math::

        y = x M^\top + m + \sqrt{(x \odot x)\, V^\top + v} \odot \varepsilon, \qquad
        \mathrm{KL} = \mathrm{KL}_W + \mathrm{KL}(\mathcal N(m, v) \,\|\, \mathcal N(0, \sigma_b^2)),

    with :math:`V = e^{2\ell}`, :math:`v = e^{2\ell_b}` and :math:`\mathrm{KL}_W` the centred scale-mixture KL of
    :func:`probsparse.nn._scale_kl.centred_kl`. The same values as :func:`linear_local_reparam` and the layer's
    ``kl_divergence()``; one backward pass then writes each parameter's gradient once, where the separate
    functions would add a likelihood part and a KL part into every weight-sized gradient.

    Parameters
    ----------
    x : torch.Tensor
        Shape ``(batch, in)``.
    mean, log_std : torch.Tensor
        :math:`M` and :math:`\ell`, shape ``(out, in)``.
    bias_mean, bias_log_std : torch.Tensor or None
        :math:`m` and :math:`\ell_b`, shape ``(out,)``.
    bias_prior_std : float
        :math:`\sigma_b`.
    plan : probsparse.nn._scale_kl.ScaleKLPlan
        The family's plan (built with exponents).
    scale_loc, scale_log_std : torch.Tensor or None
        The flat parameters of the family's :class:`~probsparse.nn.families.ScaleVariables`.

    Returns
    -------
    out : torch.Tensor
        Shape ``(batch, out)``.
    kl : torch.Tensor
        Shape ().
    """
    return _CentredLinearWithKL.apply(
        x, mean, log_std, bias_mean, bias_log_std, float(bias_prior_std), plan, scale_loc, scale_log_std
    )
