r"""The part every Bayesian layer shares: a weight family, a Gaussian bias, the local reparameterisation."""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator

import torch
from torch import nn

from probsparse._validation import check_finite_real, check_positive_real
from probsparse.nn._autograd import exp_twice, gaussian_kl_sum
from probsparse.nn.families import family_for
from probsparse.priors.base import WeightPrior
from probsparse.priors.scale_mixture import Normal

__all__ = ["BayesianLayer", "kl_in_forward"]

# Set inside kl_in_forward(): id(layer) -> the KL its forward pass computed.
_FORWARD_KL: contextvars.ContextVar[dict | None] = contextvars.ContextVar("probsparse_forward_kl", default=None)


@contextlib.contextmanager
def kl_in_forward() -> Iterator[dict[int, torch.Tensor]]:
    """Within the block, layers that can compute their KL in the same pass as their output do so.

    Yields a dict ``id(layer) -> KL`` (scalar tensors) that the forward passes fill; a layer called twice reports
    its KL once. Used by :func:`probsparse.inference.objectives.network_loss`: with the KL computed next to the
    output, one backward pass writes each weight's gradient once (likelihood and KL parts together). Layers
    that have no such path (or run without gradients) report nothing, and their ``kl_divergence()`` is used.
    """
    terms: dict[int, torch.Tensor] = {}
    token = _FORWARD_KL.set(terms)
    try:
        yield terms
    finally:
        _FORWARD_KL.reset(token)


class BayesianLayer(nn.Module):
    r"""Base class of the Bayesian layers: an affine map with a variational posterior on its weights.

    For a linear map :math:`A` of the weights (a matrix product or a convolution), the layer's
    pre-activation :math:`y = A_W(x) + b` is Gaussian given the moments of the factorised posterior, so one
    forward pass samples it directly (local reparameterisation):

    .. math::

        \mu_y = A_{E[W]}(x) + m, \qquad \sigma_y^2 = A_{\mathrm{Var}[W]}(x \odot x) + s^2, \qquad
        y = \mu_y + \sigma_y \odot \varepsilon,

    with the weight moments from the prior's variational family (:mod:`probsparse.nn.families`; scale
    variables are drawn once per call) and a mean-field Gaussian bias :math:`\mathcal N(m, s^2)` under a
    :math:`\mathcal N(0, \sigma_b^2)` prior. With :attr:`sampling` off the layer computes
    :math:`A_{E[W]}(x) + m`, the posterior-mean network.

    Subclasses set the weight shape and implement :meth:`_affine` (``F.linear`` / ``F.conv2d``).

    Attributes
    ----------
    prior : WeightPrior
    weight : probsparse.nn.families.WeightFamily
        Variational parameters of the weights.
    bias_mean, bias_log_std : torch.nn.Parameter or None
    sampling : bool
        ``True``: stochastic forward passes; ``False``: posterior-mean forward passes.
    """

    def __init__(
        self, weight_shape, init_weight, *, prior, bias, init_bias, bias_prior_scale, init_log_std, parameterisation
    ):
        super().__init__()
        if prior is None:
            prior = Normal(1.0)
        if not isinstance(prior, WeightPrior):
            raise TypeError(f"prior must be a probsparse.priors.WeightPrior, got {type(prior).__name__}")
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be a bool, got {type(bias).__name__} ({bias!r})")
        self.prior = prior
        self.bias_prior_scale = check_positive_real(bias_prior_scale, "bias_prior_scale")
        self.init_log_std = check_finite_real(init_log_std, "init_log_std")
        std = math.exp(self.init_log_std)
        if not (torch.finfo(init_weight.dtype).tiny < std < torch.finfo(init_weight.dtype).max):
            raise ValueError(
                f"init_log_std={self.init_log_std} gives an initial standard deviation that is zero or infinite "
                f"in {init_weight.dtype}"
            )
        self.parameterisation = parameterisation
        self.weight = family_for(prior, weight_shape, init_weight, self.init_log_std, parameterisation)
        if bias:
            self.bias_mean = nn.Parameter(init_bias.detach().clone())
            self.bias_log_std = nn.Parameter(torch.full_like(init_bias, self.init_log_std))
        else:
            self.register_parameter("bias_mean", None)
            self.register_parameter("bias_log_std", None)
        self.sampling = True

    def _start_at(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        shape, init = self.weight.shape, weight.detach()
        self.weight = family_for(self.prior, shape, init, self.init_log_std, self.parameterisation)
        if bias is not None:
            with torch.no_grad():
                self.bias_mean.copy_(bias)

    def _affine(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    def _check_input(self, x: torch.Tensor) -> None:
        raise NotImplementedError  # pragma: no cover

    @property
    def has_bias(self) -> bool:
        return self.bias_mean is not None

    @property
    def bias_std(self) -> torch.Tensor | None:
        return None if self.bias_log_std is None else self.bias_log_std.exp()

    def _batch_shape(self, x: torch.Tensor) -> torch.Size:
        """The input's leading (example) dimensions."""
        raise NotImplementedError  # pragma: no cover

    def _input_view(self, scale: torch.Tensor) -> torch.Tensor:
        """An input scale (``batch_shape`` + weight shape, varying along dim 1) shaped to multiply the input."""
        raise NotImplementedError  # pragma: no cover

    def _output_view(self, scale: torch.Tensor) -> torch.Tensor:
        """An output scale (``batch_shape`` + weight shape, varying along dim 0) shaped to multiply the output."""
        raise NotImplementedError  # pragma: no cover

    def _bias_view(self, bias: torch.Tensor) -> torch.Tensor:
        """A bias (out,) shaped to add to the output."""
        raise NotImplementedError  # pragma: no cover

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if not self.sampling:
            return self._affine(x, self.weight.mean_weight(), self.bias_mean)
        terms = _FORWARD_KL.get()
        if terms is not None and id(self) not in terms and torch.is_grad_enabled():
            fused = self._forward_with_kl(x)
            if fused is not None:
                out, terms[id(self)] = fused
                return out
        # Group scales are drawn per example when the input carries gradients (a hidden layer's input): their
        # gradient then costs elementwise work only. For a data input it would cost a product with the output
        # gradient that the step does not otherwise need, so there they are drawn once per call and folded
        # into the weight moments.
        per_example = x.requires_grad
        mean_w, var_w, in_scale, out_scale = self.weight.sample_factors(self._batch_shape(x) if per_example else ())
        bias_var = None if self.bias_log_std is None else exp_twice(self.bias_log_std)
        return self._sample_preactivation(x, mean_w, var_w, in_scale, out_scale, bias_var)

    def _forward_with_kl(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(output, kl_divergence())`` from one fused computation, or None where the layer has none."""
        return None

    def _sample_preactivation(self, x, mean_w, var_w, in_scale, out_scale, bias_var):
        """One local-reparameterisation draw of the pre-activation from the factored weight moments.

        ``in_scale`` carries the input's batch dims when it was drawn per example; otherwise it is folded
        into the weight moments. Subclasses may override this with a fused computation.
        """
        x_sq = x.square()
        if in_scale is not None and in_scale.dim() == len(self.weight.shape):
            mean_w, var_w = mean_w * in_scale, var_w * in_scale.square()
        elif in_scale is not None:
            view = self._input_view(in_scale)
            x, x_sq = x * view, x_sq * view.square()
        if out_scale is None:
            mean = self._affine(x, mean_w, self.bias_mean)
            var = self._affine(x_sq, var_w, bias_var)
        else:
            view = self._output_view(out_scale)
            mean = self._affine(x, mean_w, None) * view
            var = self._affine(x_sq, var_w, None) * view.square()
            if self.bias_mean is not None:
                mean = mean + self._bias_view(self.bias_mean)
                var = var + self._bias_view(bias_var)
        # An all-zero input patch (common after ReLU) without a bias gives var == 0, where sqrt's derivative
        # is infinite; clamp_min has zero gradient below the floor, so no NaN forms in backward.
        return mean + var.clamp_min(torch.finfo(var.dtype).tiny).sqrt() * torch.randn_like(mean)

    def kl_divergence(self) -> torch.Tensor:
        r""":math:`\mathrm{KL}(q \,\|\, p)` of the weights' latent variables and the bias, summed (not scaled by N)."""
        kl = self.weight.kl()
        if self.bias_mean is not None:
            kl = kl + gaussian_kl_sum(self.bias_mean, self.bias_log_std, self.bias_prior_scale)
        return kl

    @torch.no_grad()
    def pruning_scores(self) -> dict[str, torch.Tensor]:
        r"""Per-weight statistics of the posterior for pruning decisions, each of the weight's shape.

        Returns
        -------
        dict of {str : torch.Tensor}
            ``"mean"`` :math:`E[w]`, ``"std"`` :math:`\sqrt{\mathrm{Var}[w]}`, ``"snr"`` :math:`|E w| / \mathrm{sd}`,
            ``"log_alpha"`` :math:`\log(\mathrm{Var}[w] / E[w]^2)` (the family's own :math:`\log\alpha` for
            sparse VD and group normal-Jeffreys), ``"folded_snr"`` (SNR of :math:`|w|` under
            :math:`\mathcal N(E w, \mathrm{Var}\,w)`), and ``"inclusion_prob"`` for spike-and-slab.
        """
        mean, var = self.weight.posterior_moments()
        mean, std = mean.detach(), var.detach().sqrt()
        tiny = torch.finfo(mean.dtype).tiny
        scores = {
            "mean": mean,
            "std": std,
            "snr": mean.abs() / std.clamp_min(tiny),
            "log_alpha": 2.0 * (std.clamp_min(tiny).log() - mean.abs().clamp_min(tiny).log()),
            "folded_snr": _folded_normal_snr(mean, std),
        }
        scores.update(self.weight.extra_scores())
        return scores

    @torch.no_grad()
    def mean_parameters(self) -> dict[str, torch.Tensor]:
        """Posterior means under the deterministic layer's names: ``{"weight": E[W], "bias": m}``."""
        params = {"weight": self.weight.mean_weight().detach().clone()}
        if self.bias_mean is not None:
            params["bias"] = self.bias_mean.detach().clone()
        return params


def _folded_normal_snr(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    r"""SNR :math:`E|w| / \mathrm{sd}|w|` of :math:`|w|`, :math:`w \sim \mathcal N(\mu, \sigma^2)`.

    .. math::

        E|w| = \sigma\sqrt{2/\pi}\, e^{-\mu^2 / 2\sigma^2} + \mu\,\mathrm{erf}(\mu / \sigma\sqrt 2), \qquad
        \mathrm{Var}|w| = \mu^2 + \sigma^2 - (E|w|)^2.
    """
    std = std.clamp_min(torch.finfo(std.dtype).tiny)
    z = mean / std
    abs_mean = std * math.sqrt(2.0 / math.pi) * torch.exp(-0.5 * z.square()) + mean * torch.erf(z / math.sqrt(2.0))
    var = (mean.square() + std.square() - abs_mean.square()).clamp_min(torch.finfo(std.dtype).tiny)
    return abs_mean / var.sqrt()
