r"""Variational families of a Bayesian layer's weights, one per kind of prior.

A family owns the variational parameters of one weight tensor and answers four questions for the layer:

* :meth:`~WeightFamily.sample_moments`: mean and variance of the weights for one stochastic forward pass
  (the layer turns them into pre-activation moments, local reparameterisation);
* :meth:`~WeightFamily.kl`: :math:`\mathrm{KL}(q \,\|\, p)` of all the family's latent variables;
* :meth:`~WeightFamily.posterior_moments`: :math:`E_q[w]` and :math:`\mathrm{Var}_q[w]` (export, pruning);
* :meth:`~WeightFamily.extra_scores`: pruning statistics only this family defines.

The family is chosen from the prior's class by :func:`family_for` (a registry: a new prior registers its
family with :func:`register_family`).

=========================================  =========================================================
prior                                      family
=========================================  =========================================================
Normal, Horseshoe, RegularizedHorseshoe,   :class:`ScaleMixtureFamily`: :math:`w = s(\phi)\,\theta`,
GroupHorseshoe, ARD                        Gaussian :math:`q(\theta)`, log-normal :math:`q(\phi_k)`
SpikeAndSlab                               :class:`SpikeSlabFamily`: :math:`q(w, \xi)`, closed-form KL
LogUniform (per weight)                    :class:`SparseVDFamily`: :math:`\mathcal N(\theta,\alpha\theta^2)`
LogUniform with groups, GroupNormalJeffreys :class:`GroupNJFamily`: Gaussian group scales
=========================================  =========================================================

A layer built with ``parameterisation="centred"`` gets :class:`CentredScaleMixtureFamily` instead (Normal, the
horseshoes without a slab, ARD): Gaussian weights independent of log-normal scales, which enter the KL only.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from probsparse.nn._autograd import exp_twice, gaussian_kl_sum, gaussian_kl_to_scaled_normal
from probsparse.nn._scale_kl import (
    HERMITE_NODES,
    HERMITE_WEIGHTS,
    QUADRATURE_MAX_ENTRIES,
    ScaleKLPlan,
    centred_kl,
    scale_variables_kl,
)
from probsparse.priors.ard import ARDPrior
from probsparse.priors.base import WeightPrior, group_shape
from probsparse.priors.jeffreys import LogUniform, molchanov_neg_kl
from probsparse.priors.scale_mixture import ScaleMixturePrior
from probsparse.priors.spike_slab import SpikeAndSlab

__all__ = [
    "CentredScaleMixtureFamily",
    "GroupNJFamily",
    "ScaleMixtureFamily",
    "SparseVDFamily",
    "SpikeSlabFamily",
    "WeightFamily",
    "family_for",
    "register_family",
]


@functools.cache
def _hermite_rule(dtype: torch.dtype, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes sqrt(2) x_k and weights w_k / sqrt(pi), shaped to broadcast against an ``ndim``-dim tensor."""
    shape = (-1,) + (1,) * ndim
    return (
        torch.as_tensor(HERMITE_NODES, dtype=dtype).reshape(shape),
        torch.as_tensor(HERMITE_WEIGHTS, dtype=dtype).reshape(shape),
    )


# Draws used to average over the scale variables in posterior_moments (fixed seed: a deterministic export).
_MOMENT_DRAWS = 64
_LOG_2PI_E = math.log(2.0 * math.pi * math.e)


class WeightFamily(nn.Module):
    """Base class: the variational posterior of one weight tensor (see the module docstring)."""

    def __init__(self, prior: WeightPrior, shape: torch.Size):
        super().__init__()
        self.prior = prior
        self.shape = torch.Size(shape)

    def sample_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of the weights for one stochastic forward pass (scale variables drawn once)."""
        mean, var, in_scale, out_scale = self.sample_factors()
        for scale in (in_scale, out_scale):
            if scale is not None:
                mean, var = scale * mean, scale.square() * var
        return mean, var

    def sample_factors(self, batch_shape=()):
        """:meth:`sample_moments` in factored form ``(mean, var, in_scale, out_scale)``.

        The weight moments are ``in_scale * out_scale * mean`` and ``(in_scale * out_scale)**2 * var``, where
        ``in_scale`` (weight-shaped with non-unit size only along dim 1) and ``out_scale`` (only along dim 0, or
        all ones) may be ``None``; the layer applies them to its input and output instead of the weights. A
        family may draw them once per example: then they carry the leading ``batch_shape`` of the input.
        """
        mean, var = self.sample_moments()
        return mean, var, None, None

    def kl(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def posterior_moments(self) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def mean_weight(self) -> torch.Tensor:
        """:math:`E_q[w]`, shape :attr:`shape` (differentiable where the family allows)."""
        return self.posterior_moments()[0]

    def extra_scores(self) -> dict[str, torch.Tensor]:
        """Pruning statistics particular to the family (weight-shaped, detached)."""
        return {}


_FAMILIES: dict[type, Callable[[WeightPrior, torch.Size, torch.Tensor, float], WeightFamily]] = {}


def register_family(prior_type: type):
    """Class decorator: build layers with ``prior_type`` (and its subclasses) using the decorated family.

    The family's constructor takes ``(prior, shape, init_weight, init_log_std)``.
    """

    def decorate(factory):
        _FAMILIES[prior_type] = factory
        return factory

    return decorate


PARAMETERISATIONS = ("non-centred", "centred")


def family_for(
    prior: WeightPrior, shape, init_weight: torch.Tensor, init_log_std: float, parameterisation: str = "non-centred"
) -> WeightFamily:
    """The variational family of a layer weight of shape ``shape`` under ``prior`` (looked up along the MRO).

    ``parameterisation="centred"`` asks for :class:`CentredScaleMixtureFamily` (product-form scale mixtures only).
    """
    if parameterisation not in PARAMETERISATIONS:
        raise ValueError(f"parameterisation must be one of {PARAMETERISATIONS}, got {parameterisation!r}")
    if parameterisation == "centred":
        if not isinstance(prior, (ScaleMixturePrior, ARDPrior)) or getattr(prior, "scale_exponents", None) is None:
            raise ValueError(
                f"parameterisation='centred' needs a scale mixture whose scale is a product of powers of its scale "
                f"variables (Normal, Horseshoe, GroupHorseshoe, ARD); got {prior!r}"
            )
        return CentredScaleMixtureFamily(prior, torch.Size(shape), init_weight, init_log_std)
    for cls in type(prior).__mro__:
        if cls in _FAMILIES:
            return _FAMILIES[cls](prior, torch.Size(shape), init_weight, init_log_std)
    raise TypeError(
        f"no Bayesian-layer family is registered for the prior {type(prior).__name__}; known priors: "
        f"{sorted(c.__name__ for c in _FAMILIES)} (register one with probsparse.nn.families.register_family)"
    )


def _log_density_of_log(prior, u: torch.Tensor) -> torch.Tensor:
    r"""Log density of :math:`u = \log\phi` for :math:`\phi \sim` ``prior``: :math:`\log p(e^u) + u`.

    Closed forms for the scale priors of the library (a few tensor operations where the generic
    ``log_prob`` of a transformed distribution costs tens); any other distribution goes through ``log_prob``.
    """
    if isinstance(prior, torch.distributions.HalfCauchy):
        log_scale = prior.scale.log()
        return math.log(2.0 / math.pi) - log_scale + u - F.softplus(2.0 * (u - log_scale))
    if isinstance(prior, torch.distributions.InverseGamma):
        a, b = prior.concentration, prior.rate
        return a * b.log() - torch.lgamma(a) - a * u - b * torch.exp(-u)
    if isinstance(prior, torch.distributions.Gamma):
        a, b = prior.concentration, prior.rate
        return a * b.log() - torch.lgamma(a) + a * u - b * u.exp()
    return prior.log_prob(u.exp()) + u


def _scale_variables_kl(priors, locs, log_stds) -> torch.Tensor | float:
    r"""Sum over the scale variables of :math:`\mathrm{KL}(q(\phi_k) \,\|\, p_k(\phi_k))`, log-normal :math:`q`.

    The tensor-operation form of :func:`probsparse.nn._scale_kl.scale_variables_kl`, for priors the kernels do not
    know (any distribution with ``log_prob``, parameters that carry gradients): 10-point Gauss-Hermite quadrature
    per entry, or one reparameterised draw for variables with more than 4096 entries; variables whose prior is
    ``None`` (type-II point estimates) have no KL.
    """
    kl = 0.0
    for key, p in priors.items():
        if p is None:
            continue
        loc, log_std = locs[key], log_stds[key]
        std = log_std.exp()
        if loc.numel() <= QUADRATURE_MAX_ENTRIES:
            nodes, weights = _hermite_rule(loc.dtype, loc.dim())
            expected_log_p = (weights * _log_density_of_log(p, loc + std * nodes)).sum(0)
        else:
            expected_log_p = _log_density_of_log(p, loc + std * torch.randn_like(loc))
        entropy = 0.5 * _LOG_2PI_E + log_std
        kl = kl - (entropy + expected_log_p).sum()
    return kl


class _GaussianParameters(nn.Module):
    """Mean and log standard deviation of a factorised Gaussian.

    The log parameterisation (rather than softplus) makes the variance one ``exp`` whose derivative is the
    variance itself, and the KL's log term free: the cheapest form for the per-step elementwise work.
    """

    def __init__(self, mean: torch.Tensor, init_std: float):
        super().__init__()
        self.mean = nn.Parameter(mean.detach().clone())
        self.log_std = nn.Parameter(torch.full_like(self.mean, math.log(init_std)))
        # The variance of the last forward pass, reused by the KL while log_std is unchanged (same tensor, same
        # version: an optimiser step or a load bumps the version). It saves an exp and a temporary per step.
        self._last_var = None

    @property
    def std(self) -> torch.Tensor:
        return self.log_std.exp()

    def var(self) -> torch.Tensor:
        var = exp_twice(self.log_std)
        self._last_var = (self.log_std, self.log_std._version, var.detach())
        return var

    def cached_var(self) -> torch.Tensor | None:
        """The variance of the last forward pass if ``log_std`` has not changed since (else None), detached."""
        last = self._last_var
        fresh = last is not None and last[0] is self.log_std and last[1] == self.log_std._version
        return last[2] if fresh else None

    def kl_normal(self, prior_std: float = 1.0) -> torch.Tensor:
        """Sum of KL(N(mean, std^2) || N(0, prior_std^2))."""
        return gaussian_kl_sum(self.mean, self.log_std, prior_std, var=self.cached_var())

    def kl_scaled_normal(self, log_precision: torch.Tensor) -> torch.Tensor:
        """Sum of KL(N(mean, std^2) || N(0, 1 / exp(log_precision))) without the log-scale term (see the caller)."""
        return gaussian_kl_to_scaled_normal(self.mean, self.log_std, log_precision, var=self.cached_var())


class ScaleVariables(nn.Module):
    r"""Log-normal posteriors :math:`q(\log\phi_k) = \mathcal N(m_k, e^{2\ell_k})` of a family's scale variables.

    All variables live in two flat parameters, :attr:`loc` (every :math:`m_k`) and :attr:`log_std` (every
    :math:`\ell_k`; the entries of a type-II point estimate, which has no spread, stay unused), so that the number
    of parameter tensors, and the optimiser's and autograd's work per tensor, does not grow with the number of
    variables. :attr:`locs` and :attr:`log_stds` are per-variable views in each variable's shape.

    Parameters
    ----------
    shapes : dict of {str : torch.Size}
        Each variable's shape, in storage order.
    random : set of str
        The variables with a spread (all but the point estimates).
    dtype : torch.dtype
    init_log_std : float
        Initial :math:`\ell` (every :math:`m` starts at 0: every scale at 1).
    """

    def __init__(self, shapes, random, dtype, init_log_std: float):
        super().__init__()
        self.shapes = {k: torch.Size(s) for k, s in shapes.items()}
        self.random = [k for k in self.shapes if k in random]
        self._slices, start = {}, 0
        for key, shape in self.shapes.items():
            self._slices[key] = slice(start, start + shape.numel())
            start += shape.numel()
        self.loc = nn.Parameter(torch.zeros(start, dtype=dtype)) if start else None
        self.log_std = nn.Parameter(torch.full((start,), float(init_log_std), dtype=dtype)) if self.random else None

    def _views(self, flat, keys) -> dict[str, torch.Tensor]:
        return {k: flat[self._slices[k]].view(self.shapes[k]) for k in keys}

    @property
    def locs(self) -> dict[str, torch.Tensor]:
        r""":math:`m_k` of every variable, as views of :attr:`loc`."""
        return {} if self.loc is None else self._views(self.loc, self.shapes)

    @property
    def log_stds(self) -> dict[str, torch.Tensor]:
        r""":math:`\ell_k` of the variables with a spread, as views of :attr:`log_std`."""
        return {} if self.log_std is None else self._views(self.log_std, self.random)


class _ScaleVariableViews:
    """Mixin for families with :class:`ScaleVariables`: ``scale_loc`` / ``scale_log_std`` as per-variable views."""

    @property
    def scale_loc(self) -> dict[str, torch.Tensor]:
        return self.scales.locs

    @property
    def scale_log_std(self) -> dict[str, torch.Tensor]:
        return self.scales.log_stds


@register_family(ScaleMixturePrior)
@register_family(ARDPrior)
class ScaleMixtureFamily(_ScaleVariableViews, WeightFamily):
    r"""Non-centred scale mixture: :math:`w = s(\phi)\,\theta` with Gaussian :math:`\theta`, log-normal scales.

    .. math::

        q(\theta) = \prod \mathcal N(\mu, \sigma^2), \quad p(\theta) = \mathcal N(0, 1), \qquad
        q(\log\phi_k) = \prod \mathcal N(m_k, v_k),

    one :math:`\phi_k` per scale variable of the prior (:meth:`ScaleMixturePrior.scale_distributions`,
    e.g. :math:`\tau` and :math:`\lambda` of the horseshoe). A forward pass draws the scales once
    (reparameterised, shared by the mini-batch) and the weights given the scales by local
    reparameterisation: :math:`E[w \mid \phi] = s\mu`, :math:`\mathrm{Var}[w \mid \phi] = s^2\sigma^2`.

    .. math::

        \mathrm{KL} = \mathrm{KL}(q(\theta) \,\|\, \mathcal N(0, 1))
        + \sum_k \Big( -\mathbb H[q(\log\phi_k)] - E_q\big[\log p_k(e^{u}) + u\big] \Big),

    the expectation by 10-point Gauss-Hermite quadrature per scale entry (the log-normal / half-Cauchy KL has
    no closed form), or by one reparameterised draw for variables with more than 4096 entries. A scale
    variable whose prior is ``None`` (type-II ARD) is a point estimate with no KL.

    Scale variables start at 1 and :math:`\theta` is stored in units of the initial effective scale
    (attribute :attr:`unit`: ``theta.mean`` holds :math:`\mathrm{unit}\cdot\mu`), so that optimiser steps
    have the size of the weights whatever the prior's scale.
    """

    def __init__(self, prior, shape, init_weight, init_log_std):
        super().__init__(prior, shape)
        zero = torch.zeros((), dtype=init_weight.dtype)
        _add_scale_variables(self, prior, zero, init_log_std)
        self._kl_plan = ScaleKLPlan.build(self._priors, self.scales.shapes, self.shape)
        init_std = math.exp(init_log_std)
        with torch.no_grad():
            # Every scale variable starts at 1 (the median of the unit half-Cauchy), so the weights' prior
            # starts wide and the hierarchy shrinks what the data do not support. Starting the scales at the
            # spread of the initial weights instead acts as a strong weight decay before the scales can grow:
            # on MNIST that cost a point of test error.
            start = self._combine({k: torch.ones_like(v) for k, v in self.scale_loc.items()}, zero)
        # theta is stored in units of its initial scale (theta_stored = unit * theta): Adam's steps are then
        # of the size of the weights whatever the prior's scale. Its N(0, 1) prior becomes N(0, unit^2).
        self.unit = float(start.mean()) if start.numel() else 1.0
        self.theta = _GaussianParameters(init_weight * (self.unit / start), init_std * self.unit)
        # Fixed for the layer's life, so worked out once here rather than at every forward pass:
        # - a fixed prior scale relative to theta's unit (None when it is 1: theta is then the weight itself);
        fixed = start / self.unit
        fixed = None if self.scale_loc or bool((fixed == 1).all()) else fixed
        self.register_buffer("_fixed_scale", fixed, persistent=False)  # moves with .to(device / dtype)
        # - "input" / "output" when the effective scale varies along that weight dim only (or nowhere).
        shape = torch.broadcast_shapes(*(v.shape for v in self.scale_loc.values()), (1,) * len(self.shape))
        varying = tuple(i for i, n in enumerate(shape) if n != 1)
        self._factored_along = {(): "output", (0,): "output", (1,): "input"}.get(varying)

    def _combine(self, scales: dict[str, torch.Tensor], zero: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.prior.effective_scale(scales), dtype=zero.dtype)

    def _draw_scales(self, eps: dict[str, torch.Tensor] | None = None, batch_shape=()) -> dict[str, torch.Tensor]:
        scales = {}
        for key, loc in self.scale_loc.items():
            if key in self.scale_log_std:
                noise = torch.randn(tuple(batch_shape) + loc.shape, dtype=loc.dtype) if eps is None else eps[key]
                scales[key] = (loc + self.scale_log_std[key].exp() * noise).exp()
            else:
                scales[key] = loc.exp()
        return scales

    def sample_factors(self, batch_shape=()):
        mean, var = self.theta.mean, self.theta.var()
        if not self.scale_loc:  # a fixed prior scale
            s = self._fixed_scale
            return (mean, var, None, None) if s is None else (s * mean, s.square() * var, None, None)
        along = self._factored_along
        # A scale shared along every dim but the input one (or the output one) scales the layer's input (or
        # output) instead of the weights: a few hundred multiplications instead of one per weight, and a
        # scale drawn per example (local reparameterisation of the scales too), which keeps the likelihood's
        # gradient on the scales' spread from drowning in one-draw noise.
        if along is None:
            s = self._combine(self._draw_scales(), mean) / self.unit
            return s * mean, s.square() * var, None, None
        s = self._combine(self._draw_scales(batch_shape=batch_shape), mean) / self.unit
        s = s.expand(tuple(batch_shape) + s.shape[len(s.shape) - len(self.shape) :]) if batch_shape else s
        return (mean, var, s, None) if along == "input" else (mean, var, None, s)

    def kl(self):
        if self._kl_plan is None or self.theta.mean.device.type != "cpu":  # the kernels take NumPy views
            scales_kl = _scale_variables_kl(self._priors, self.scale_loc, self.scale_log_std)
        elif self.scales.loc is not None:
            scales_kl = scale_variables_kl(self._kl_plan, self.scales.loc, self.scales.log_std)
        else:
            scales_kl = 0.0
        return self.theta.kl_normal(self.unit) + scales_kl

    @torch.no_grad()
    def posterior_moments(self):
        mu, var_theta = self.theta.mean, self.theta.var()
        exponents = getattr(self.prior, "scale_exponents", None)
        if exponents is not None and set(exponents) == set(self.scale_loc):
            # s = c * prod_k phi_k^p_k with independent log-normal phi_k: log s is Gaussian, moments exact.
            c = self._combine({k: torch.ones_like(v) for k, v in self.scale_loc.items()}, mu) / self.unit
            log_mean = sum((p * self.scale_loc[k] for k, p in exponents.items()), torch.zeros(()))
            log_var = sum(
                (p**2 * (2.0 * self.scale_log_std[k]).exp() for k, p in exponents.items() if k in self.scale_log_std),
                torch.zeros(()),
            )
            mean_s = c * torch.exp(log_mean + 0.5 * log_var)
            var_s = mean_s.square() * torch.expm1(log_var)
            mean = mean_s * mu
            var = (var_s + mean_s.square()) * var_theta + var_s * mu.square()
            return mean.expand(self.shape), var.expand(self.shape)
        generator = torch.Generator().manual_seed(0)
        shift = None
        sum_d = sum_d2 = 0.0
        # A loop rather than a batch of draws: with one scale per weight a batch would hold draws x weights.
        for _ in range(_MOMENT_DRAWS):
            eps = {k: torch.randn(v.shape, generator=generator, dtype=v.dtype) for k, v in self.scale_loc.items()}
            s = self._combine(self._draw_scales(eps), mu) / self.unit
            # Sums of s - s_first, so that Var[s] is exactly 0 for a fixed scale and the variance below does not
            # come from a difference of two near-equal numbers (which loses all of sigma^2 << mu^2).
            shift = s if shift is None else shift
            d = s - shift
            sum_d, sum_d2 = sum_d + d, sum_d2 + d.square()
        mean_d = sum_d / _MOMENT_DRAWS
        var_s = (sum_d2 / _MOMENT_DRAWS - mean_d.square()).clamp_min(0.0)
        mean_s = shift + mean_d
        mean = mean_s * mu
        # Var[s theta] = E[s^2] sigma^2 + Var[s] mu^2 for independent s and theta.
        var = (var_s + mean_s.square()) * var_theta + var_s * mu.square()
        return mean.expand(self.shape), var.expand(self.shape)


class CentredScaleMixtureFamily(_ScaleVariableViews, WeightFamily):
    r"""Centred scale mixture: Gaussian weights and log-normal scales, independent in the posterior.

    .. math::

        q(w) = \prod \mathcal N(\mu, \sigma^2), \quad q(\log\phi_k) = \prod \mathcal N(m_k, v_k), \qquad
        p(w \mid \phi) = \mathcal N(0, s^2), \quad s = c \prod_k \phi_k^{p_k},

    for priors whose effective scale is such a product (``scale_exponents``: Normal, the horseshoe, the
    group horseshoe, ARD). A forward pass needs only :math:`q(w)`: the scales enter the KL alone, where the
    weights' part is closed form,

    .. math::

        E_q\big[\mathrm{KL}(q(w) \,\|\, p(w \mid \phi))\big]
        = E[\log s] - \log\sigma + \tfrac12 (\sigma^2 + \mu^2)\, E[s^{-2}] - \tfrac12, \qquad
        E[\log s] = \log c + \sum_k p_k m_k, \quad
        E[s^{-2}] = c^{-2} e^{\sum_k (2 p_k^2 v_k - 2 p_k m_k)},

    and the scales' own terms are those of :class:`ScaleMixtureFamily`.

    Against the non-centred family (:math:`w = s\theta`): the forward pass has no scale draws and no scale
    folding, and the weights' noise is not multiplied by the scales' noise; but the
    posterior cannot correlate a weight with its scale, so a weight does not shrink "with" its group within
    one draw. Select it with ``parameterisation="centred"`` on the layer or in :func:`~probsparse.nn.bayesianize`.
    """

    def __init__(self, prior, shape, init_weight, init_log_std):
        super().__init__(prior, shape)
        zero = torch.zeros((), dtype=init_weight.dtype)
        _add_scale_variables(self, prior, zero, init_log_std)
        self._exponents = dict(prior.scale_exponents)
        init_std = math.exp(init_log_std)
        with torch.no_grad():  # c: the effective scale with every scale variable at 1
            ones = {k: torch.ones_like(v) for k, v in self.scale_loc.items()}
            self._log_c = math.log(float(torch.as_tensor(prior.effective_scale(ones)).mean()))
        self.theta = _GaussianParameters(init_weight, init_std)
        self._kl_plan = ScaleKLPlan.build(self._priors, self.scales.shapes, self.shape, self._exponents, self._log_c)

    def _log_scale_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`\sum_{ij} E[\log s_{ij}]` and :math:`\log E[s^{-2}]` (broadcastable to the weight)."""
        numel = self.shape.numel()
        total_log_s = numel * self._log_c
        log_precision = torch.full((1,) * len(self.shape), -2.0 * self._log_c, dtype=self.theta.mean.dtype)
        # Smallest variables first: terms the size of the weight (per-weight scales) are added last, in place of
        # broadcasting every small term up to it.
        for key, p in sorted(self._exponents.items(), key=lambda item: self.scale_loc[item[0]].numel()):
            loc = self.scale_loc[key]
            total_log_s = total_log_s + p * loc.sum() * (numel // loc.numel())
            log_precision = torch.add(log_precision, loc, alpha=-2.0 * p)
            if key in self.scale_log_std:
                log_precision = torch.add(log_precision, exp_twice(self.scale_log_std[key]), alpha=2.0 * p**2)
        return total_log_s, log_precision

    def sample_factors(self, batch_shape=()):
        return self.theta.mean, self.theta.var(), None, None

    def kernel_plan(self) -> ScaleKLPlan | None:
        """The plan for the KL kernels, or None where they do not apply (see ``_scale_kl``)."""
        return self._kl_plan if self.theta.mean.device.type == "cpu" else None  # the kernels take NumPy views

    def kl(self):
        plan = self.kernel_plan()
        if plan is not None:
            theta, scales = self.theta, self.scales
            return centred_kl(plan, theta.mean, theta.log_std, theta.cached_var(), scales.loc, scales.log_std)
        total_log_s, log_precision = self._log_scale_moments()
        weights_kl = self.theta.kl_scaled_normal(log_precision) + total_log_s
        return weights_kl + _scale_variables_kl(self._priors, self.scale_loc, self.scale_log_std)

    @torch.no_grad()
    def posterior_moments(self):
        return self.theta.mean.detach(), self.theta.var().detach()

    def mean_weight(self):
        return self.theta.mean


def _add_scale_variables(family, prior, zero, init_log_std) -> None:
    """Give ``family`` the prior's scale distributions (``_priors``) and their posteriors (``scales``).

    Every scale starts at 1; a type-II point estimate (prior ``None``) has no spread.
    """
    # Built without argument validation: the KL evaluates their log densities at every step, where the
    # support checks would cost more than the densities (the quadrature points are positive by construction).
    previous = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        family._priors = prior.scale_distributions(family.shape, zero)
    finally:
        torch.distributions.Distribution.set_default_validate_args(previous)
    shapes = {}
    for key, p in family._priors.items():
        if p is None:  # type-II variance: one per weight or group, as the prior declares
            shapes[key] = group_shape(family.shape, getattr(prior, "groups", None))
        else:
            shapes[key] = p.batch_shape if len(p.batch_shape) else torch.Size([1] * len(family.shape))
    random = {k for k, p in family._priors.items() if p is not None}
    family.scales = ScaleVariables(shapes, random, zero.dtype, init_log_std)


@register_family(SpikeAndSlab)
class SpikeSlabFamily(WeightFamily):
    r"""Spike-and-slab family with the indicator kept: :math:`q(w, \xi) = q(\xi)\, q(w \mid \xi)`.

    .. math::

        q(\xi = 1) = \phi, \quad q(w \mid \xi = 1) = \mathcal N(\mu, \sigma^2), \quad
        q(w \mid \xi = 0) = p(w \mid \xi = 0) = \mathcal N(0, \sigma_0^2),

    so the spike part cancels in the KL, which is closed form:

    .. math::

        \mathrm{KL} = \sum \mathrm{KL}(\mathrm{Bern}(\phi) \,\|\, \mathrm{Bern}(\pi))
        + \phi\, \mathrm{KL}(\mathcal N(\mu, \sigma^2) \,\|\, \mathcal N(0, \sigma_1^2)).

    The forward pass uses the marginal moments :math:`E[w] = \phi\mu`,
    :math:`\mathrm{Var}[w] = \phi(\mu^2 + \sigma^2) + (1-\phi)\sigma_0^2 - \phi^2\mu^2`; :math:`\phi` is the
    posterior inclusion probability (score ``"inclusion_prob"``).
    """

    def __init__(self, prior, shape, init_weight, init_log_std):
        super().__init__(prior, shape)
        self.theta = _GaussianParameters(init_weight, math.exp(init_log_std))
        # Start mostly "in the slab" so the network can learn before the KL decides what to switch off.
        self.inclusion_logit = nn.Parameter(torch.full_like(init_weight, 2.0))

    def _moments(self):
        phi = torch.sigmoid(self.inclusion_logit)
        mu, var = self.theta.mean, self.theta.var()
        mean = phi * mu
        second = phi * (mu.square() + var) + (1.0 - phi) * self.prior.spike_scale**2
        return mean, (second - mean.square()).clamp_min(0.0)

    def sample_moments(self):
        return self._moments()

    def kl(self):
        phi = torch.sigmoid(self.inclusion_logit)
        pi = self.prior.inclusion_prior
        # KL between Bernoullis written with log-sigmoids of the logit, stable for phi near 0 or 1.
        log_phi, log_not_phi = F.logsigmoid(self.inclusion_logit), F.logsigmoid(-self.inclusion_logit)
        kl_xi = phi * (log_phi - math.log(pi)) + (1.0 - phi) * (log_not_phi - math.log1p(-pi))
        ratio_sq = (self.theta.std / self.prior.slab_scale).square()
        kl_slab = 0.5 * (ratio_sq - ratio_sq.log() + (self.theta.mean / self.prior.slab_scale).square() - 1.0)
        return (kl_xi + phi * kl_slab).sum()

    @torch.no_grad()
    def posterior_moments(self):
        return self._moments()

    def mean_weight(self):
        return torch.sigmoid(self.inclusion_logit) * self.theta.mean

    @torch.no_grad()
    def extra_scores(self):
        return {"inclusion_prob": torch.sigmoid(self.inclusion_logit)}


# Molchanov et al. clip log alpha to this range in the KL: beyond it the approximation is flat anyway.
_LOG_ALPHA_CLIP = 8.0


@register_family(LogUniform)
def _log_uniform_family(prior, shape, init_weight, init_log_std):
    if prior.groups is None:
        return SparseVDFamily(prior, shape, init_weight, init_log_std)
    return GroupNJFamily(prior, shape, init_weight, init_log_std)


class SparseVDFamily(WeightFamily):
    r"""Sparse variational dropout: :math:`q(w) = \mathcal N(\theta, \sigma^2)`, :math:`\alpha = \sigma^2/\theta^2`.

    .. math::

        \mathrm{KL}(q \,\|\, p) \approx -\sum \mathrm{molchanov\_neg\_kl}(\log\alpha)
        \quad (p(w) \propto 1/|w|, \text{ up to a constant}),

    with :math:`\sigma` parameterised directly (additive noise, Molchanov et al.'s low-variance form) and
    :math:`\log\alpha` clipped to :math:`[-8, 8]`. Pruned where :math:`\log\alpha \ge 3`.
    """

    def __init__(self, prior, shape, init_weight, init_log_std):
        super().__init__(prior, shape)
        self.theta = nn.Parameter(init_weight.detach().clone())
        self.log_sigma2 = nn.Parameter(torch.full_like(init_weight, 2.0 * init_log_std))

    def log_alpha(self) -> torch.Tensor:
        log_alpha = self.log_sigma2 - torch.log(self.theta.square() + 1e-16)
        return log_alpha.clamp(-_LOG_ALPHA_CLIP, _LOG_ALPHA_CLIP)

    def sample_moments(self):
        return self.theta, self.log_sigma2.exp()

    def kl(self):
        return -molchanov_neg_kl(self.log_alpha()).sum()

    @torch.no_grad()
    def posterior_moments(self):
        return self.theta.detach(), self.log_sigma2.exp().detach()

    def mean_weight(self):
        return self.theta

    @torch.no_grad()
    def extra_scores(self):
        return {"log_alpha": self.log_alpha()}


class GroupNJFamily(WeightFamily):
    r"""Group normal-Jeffreys family of Bayesian compression: Gaussian group scales times Gaussian weights.

    .. math::

        w = z_g\,\theta, \qquad q(z_g) = \mathcal N(\mu_g, \sigma_g^2), \qquad
        q(\theta) = \mathcal N(\mu, \sigma^2), \qquad p(z_g) \propto 1/|z_g|, \quad p(\theta) = \mathcal N(0, 1),

    .. math::

        \mathrm{KL} \approx -\sum_g \mathrm{molchanov\_neg\_kl}(\log\alpha_g)
        + \mathrm{KL}(q(\theta) \,\|\, \mathcal N(0, 1)), \qquad \log\alpha_g = \log\sigma_g^2 / \mu_g^2.

    :math:`z` is drawn once per forward pass (shared by the mini-batch); the weights given :math:`z` by local
    reparameterisation. The score ``"log_alpha"`` is the group's :math:`\log\alpha_g` (a whole neuron or
    filter goes together; Louizos et al. prune where it exceeds a per-layer threshold around -3).
    """

    def __init__(self, prior, shape, init_weight, init_log_std):
        super().__init__(prior, shape)
        gshape = group_shape(shape, prior.groups)
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ()).item()))
        # Louizos et al.'s initialisation: z around 1, all log-variances small.
        self.z_mean = nn.Parameter(1.0 + 0.01 * torch.randn(gshape, generator=generator, dtype=init_weight.dtype))
        self.z_log_var = nn.Parameter(torch.full(gshape, 2.0 * init_log_std, dtype=init_weight.dtype))
        self.theta = _GaussianParameters(init_weight, math.exp(init_log_std))

    def log_alpha(self) -> torch.Tensor:
        log_alpha = self.z_log_var - torch.log(self.z_mean.square() + 1e-16)
        return log_alpha.clamp(-_LOG_ALPHA_CLIP, _LOG_ALPHA_CLIP)

    def sample_moments(self):
        z = self.z_mean + (0.5 * self.z_log_var).exp() * torch.randn_like(self.z_mean)
        return z * self.theta.mean, z.square() * self.theta.var()

    def kl(self):
        return -molchanov_neg_kl(self.log_alpha()).sum() + self.theta.kl_normal()

    @torch.no_grad()
    def posterior_moments(self):
        mz, vz = self.z_mean, self.z_log_var.exp()
        mu, var = self.theta.mean, self.theta.var()
        mean = mz * mu
        var_w = (mz.square() + vz) * (mu.square() + var) - mean.square()
        return mean, var_w.clamp_min(0.0)

    def mean_weight(self):
        return self.z_mean * self.theta.mean

    @torch.no_grad()
    def extra_scores(self):
        return {"log_alpha": self.log_alpha().expand(self.shape)}
