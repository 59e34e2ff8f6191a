r"""Continuous spike-and-slab prior: a two-component Gaussian mixture with a narrow spike at zero."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from probsparse._validation import check_positive_real
from probsparse.priors.base import DETERMINISTIC, SAMPLE, WeightPrior, _check_name, _check_shape

__all__ = ["SpikeAndSlab"]


class _GaussianMixture(dist.MixtureSameFamily):
    """Mixture whose support is declared as the real line, so auto-guides can build their transforms
    (torch's mixture support object has no registered bijection)."""

    @property
    def support(self):
        return constraints.real


class SpikeAndSlab(WeightPrior):
    r"""Spike-and-slab prior in its continuous Gaussian-spike form (George and McCulloch's SSVS).

    .. math::

        p(w) = \pi \, \mathcal N(w \mid 0, \sigma_1^2) + (1 - \pi) \, \mathcal N(w \mid 0, \sigma_0^2),
        \qquad \sigma_0 \ll \sigma_1,

    i.e. :math:`w \mid \xi \sim \mathcal N(0, \sigma_\xi^2)` with a Bernoulli(:math:`\pi`) inclusion
    indicator :math:`\xi` summed out. The relaxation is the spike: a Gaussian of width :math:`\sigma_0`
    instead of a point mass, which keeps the density continuous (usable by SVI and NUTS without discrete
    sites) and tends to the Dirac spike as :math:`\sigma_0 \to 0`. The posterior inclusion probability given
    the weight,

    .. math::

        P(\xi = 1 \mid w) = \frac{\pi \mathcal N(w \mid 0, \sigma_1^2)}
        {\pi \mathcal N(w \mid 0, \sigma_1^2) + (1-\pi) \mathcal N(w \mid 0, \sigma_0^2)},

    is recorded as the deterministic site ``f"{name}_inclusion_prob"``; averaged over posterior draws of
    :math:`w` it is the posterior inclusion probability. The weights are sampled centred (site ``name``):
    a mixture has no non-centred form without the discrete indicator.

    On a Bayesian layer the variational family keeps the indicator (:mod:`probsparse.nn.families`):
    :math:`q(w, \xi) = q(\xi)\,q(w \mid \xi)` with the spike fixed to its prior, which makes the KL closed
    form.

    Parameters
    ----------
    slab_scale : float, default=1.0
        :math:`\sigma_1 > 0`.
    spike_scale : float, default=0.01
        :math:`\sigma_0`, with ``0 < spike_scale < slab_scale``.
    inclusion_prior : float, default=0.1
        :math:`\pi \in (0, 1)`.

    References
    ----------
    .. [1] E. I. George, R. E. McCulloch, "Variable selection via Gibbs sampling", JASA 88(423), 1993.
       Their :math:`\tau, c\tau, p` are our :math:`\sigma_0, \sigma_1, \pi`.
    .. [2] M. K. Titsias, M. Lázaro-Gredilla, "Spike and slab variational inference for multi-task and
       multiple kernel learning", NeurIPS 2011 (the :math:`q(w, \xi)` family).

    Examples
    --------
    >>> prior = SpikeAndSlab(slab_scale=1.0, spike_scale=0.01, inclusion_prior=0.2)
    >>> prior.sample("w", (3,)).shape
    torch.Size([3])
    >>> list(prior.site_names("w"))
    ['w', 'w_inclusion_prob']
    """

    def __init__(self, slab_scale: float = 1.0, spike_scale: float = 0.01, inclusion_prior: float = 0.1):
        self.slab_scale = check_positive_real(slab_scale, "slab_scale")
        self.spike_scale = check_positive_real(spike_scale, "spike_scale")
        if self.spike_scale >= self.slab_scale:
            raise ValueError(f"spike_scale must be below slab_scale={self.slab_scale}, got {self.spike_scale}")
        pi = check_positive_real(inclusion_prior, "inclusion_prior")
        if pi >= 1.0:
            raise ValueError(f"inclusion_prior must be in (0, 1), got {pi}")
        self.inclusion_prior = pi

    def distribution(self, zero: torch.Tensor) -> dist.Distribution:
        """The mixture as a Pyro distribution with batch shape ``zero.shape``."""
        probs = torch.tensor([1.0 - self.inclusion_prior, self.inclusion_prior], dtype=zero.dtype)
        scales = torch.tensor([self.spike_scale, self.slab_scale], dtype=zero.dtype)
        return _GaussianMixture(
            dist.Categorical(probs.expand(zero.shape + (2,))),
            dist.Normal(torch.zeros_like(scales).expand(zero.shape + (2,)), scales.expand(zero.shape + (2,))),
        )

    def inclusion_probability(self, w: torch.Tensor) -> torch.Tensor:
        r""":math:`P(\xi = 1 \mid w)`, elementwise."""
        # log-odds = log(pi / (1 - pi)) + log N(w; 0, s1^2) - log N(w; 0, s0^2)
        log_odds = (
            math.log(self.inclusion_prior / (1.0 - self.inclusion_prior))
            + math.log(self.spike_scale / self.slab_scale)
            + 0.5 * w.square() * (self.spike_scale**-2 - self.slab_scale**-2)
        )
        return torch.sigmoid(log_odds)

    def site_names(self, name: str) -> dict[str, str]:
        name = _check_name(name)
        return {name: SAMPLE, f"{name}_inclusion_prob": DETERMINISTIC}

    def sample(self, name: str, shape, *, dtype=None, device=None) -> torch.Tensor:
        """Place the weight site (centred) and its inclusion probability; return the weights."""
        name = _check_name(name)
        shape = _check_shape(shape)
        zero = torch.zeros(shape, dtype=dtype or torch.get_default_dtype(), device=device)
        w = pyro.sample(name, self.distribution(zero).to_event(len(shape)))
        pyro.deterministic(f"{name}_inclusion_prob", self.inclusion_probability(w), event_dim=len(shape))
        return w

    def __repr__(self) -> str:
        return (
            f"SpikeAndSlab(slab_scale={self.slab_scale}, spike_scale={self.spike_scale}, "
            f"inclusion_prior={self.inclusion_prior})"
        )
