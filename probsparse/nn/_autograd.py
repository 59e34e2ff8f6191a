r"""Hand-written backward passes for the per-step hot spots of the Bayesian layers.

Autograd on the plain formulas is correct, but it allocates a weight-sized temporary for every elementwise
operation: about thirty per training step on LeNet-300-100's first layer. The temporaries cost memory traffic,
and page faults whenever the allocator hands their pages back to the system. The functions here do the same
algebra in a few passes over the weights. Each one is tested against autograd on its plain formula with
float64 ``gradcheck`` (``tests/nn/test_autograd.py``).
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

_LOG_2PI_E = math.log(2.0 * math.pi * math.e)

__all__ = ["exp_twice", "gaussian_kl_sum", "gaussian_kl_to_scaled_normal", "linear_local_reparam", "log_normal_kl"]


class _ExpTwice(torch.autograd.Function):
    @staticmethod
    def forward(ctx, log_std):
        var = torch.mul(log_std, 2.0).exp_()
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


class _GaussianKLSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mean, log_std, prior_std, var):
        if var is None:
            var = torch.mul(log_std, 2.0).exp_()
        flat_mean = mean.reshape(-1)
        quadratic = var.sum() + torch.dot(flat_mean, flat_mean)
        n = mean.numel()
        kl = 0.5 * quadratic / prior_std**2 - log_std.sum() + n * (math.log(prior_std) - 0.5)
        ctx.save_for_backward(mean, var)
        ctx.prior_std = prior_std
        return kl

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        mean, var = ctx.saved_tensors
        scaled = grad / ctx.prior_std**2
        grad_mean = torch.mul(mean, scaled) if ctx.needs_input_grad[0] else None
        # d/d log_std of (var / 2 prior_std^2 - log_std) is var / prior_std^2 - 1.
        grad_log_std = torch.mul(var, scaled).sub_(grad) if ctx.needs_input_grad[1] else None
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
            var = torch.mul(log_std, 2.0).exp_()
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


class _LogNormalKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, loc, log_std, density, nodes, weights):
        std = log_std.exp()
        if nodes is None:  # one reparameterised draw: the weights are 1 and the node is the draw itself
            nodes = torch.randn_like(loc)
            value, slope = density(torch.addcmul(loc, std, nodes))
            ctx.save_for_backward(slope, torch.mul(slope, nodes).mul_(std))
            return -(value.sum() + log_std.sum()) - 0.5 * _LOG_2PI_E * loc.numel()
        value, slope = density(loc + std * nodes)
        expected = (weights * value).sum(0)
        weighted_slope = weights * slope
        ctx.save_for_backward(weighted_slope.sum(0), std * (weighted_slope * nodes).sum(0))
        # -(entropy + E[log p]) with the entropy of N(loc, std^2): 0.5 log(2 pi e) + log_std.
        return -(expected + log_std).sum() - 0.5 * _LOG_2PI_E * loc.numel()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        slope_loc, slope_std = ctx.saved_tensors
        return -grad * slope_loc, -grad * (1.0 + slope_std), None, None, None


def log_normal_kl(loc, log_std, density, nodes=None, weights=None) -> torch.Tensor:
    r"""Quadrature estimate of :math:`\sum_k -\mathbb H[q_k] - E_{q_k}[f(u)]` for Gaussian :math:`q_k`.

    With :math:`f(u) = \log p(e^u) + u` the log density of :math:`u = \log\phi` under the prior of
    :math:`\phi`, this is :math:`\mathrm{KL}(q(\phi) \,\|\, p(\phi))` for the log-normal :math:`q(\phi)`,
    summed over the entries, :math:`q_k = \mathcal N(m_k, e^{2\ell_k})`. The expectation is
    :math:`\sum_j w_j f(m + \sigma x_j)` and its gradient
    :math:`\partial_m = \sum_j w_j f'(u_j)`, :math:`\partial_\sigma = \sum_j w_j f'(u_j) x_j`.

    Parameters
    ----------
    loc, log_std : torch.Tensor
        :math:`m` and :math:`\ell`, the same shape.
    density : callable
        ``u -> (f(u), f'(u))``, elementwise.
    nodes, weights : torch.Tensor, optional
        Quadrature nodes :math:`x_j` and weights :math:`w_j`, shaped ``(K,) + (1,) * loc.dim()``. Without them,
        one reparameterised draw :math:`x \sim \mathcal N(0, 1)` per entry: an unbiased estimate, for variables too
        large for the quadrature.
    """
    return _LogNormalKL.apply(loc, log_std, density, nodes, weights)


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
