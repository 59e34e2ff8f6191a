r"""Log-uniform (normal-Jeffreys) priors: the improper scale-invariant prior behind sparse variational dropout
and Bayesian compression."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from probsparse.priors.base import DETERMINISTIC, SAMPLE, WeightPrior, _check_groups, _check_name, _check_shape
from probsparse.priors.base import group_shape as _group_shape

__all__ = ["GroupNormalJeffreys", "LogUniform", "molchanov_neg_kl"]

# Constants of Molchanov et al.'s fit of -KL(q || log-uniform) as a function of log alpha (their eq. 14).
_K1, _K2, _K3 = 0.63576, 1.87320, 1.48695


def molchanov_neg_kl(log_alpha: torch.Tensor) -> torch.Tensor:
    r"""Approximation of :math:`-\mathrm{KL}(\mathcal N(\theta, \alpha\theta^2) \,\|\, p(w) \propto 1/|w|)`.

    .. math::

        -\mathrm{KL} \approx k_1 \,\sigma(k_2 + k_3 \log\alpha) - \tfrac12 \log(1 + \alpha^{-1}) - k_1,

    :math:`k_1 = 0.63576, k_2 = 1.87320, k_3 = 1.48695`, up to an additive constant (the prior is
    improper); exact to about 0.01 nats per weight over all :math:`\alpha` and 0 as :math:`\alpha \to \infty`.
    Elementwise; the caller sums.

    References
    ----------
    .. [1] D. Molchanov, A. Ashukha, D. Vetrov, "Variational dropout sparsifies deep neural networks", ICML
       2017, eq. (14).
    """
    return _K1 * torch.sigmoid(_K2 + _K3 * log_alpha) - 0.5 * torch.nn.functional.softplus(-log_alpha) - _K1


class _FlatLogScale(dist.ImproperUniform):
    """Flat density on the real line whose ``sample`` gives 0 (scale 1).

    An improper prior has no draws; Pyro's auto-guides still call ``sample`` to learn the site's shape and a
    feasible initial point, which plain ``ImproperUniform`` refuses. Prior-predictive draws of this site
    are therefore the constant 0, not samples: use the prior under SVI or NUTS only.
    """

    def sample(self, sample_shape=()):
        return torch.zeros(self.shape(torch.Size(sample_shape)))


class LogUniform(WeightPrior):
    r"""Log-uniform prior :math:`p(|w|) \propto 1/|w|`, as a normal scale mixture with a Jeffreys scale.

    .. math::

        w = e^{u} z, \qquad p(u) \propto 1, \qquad z \sim \mathcal N(0, 1)
        \quad\Longrightarrow\quad p(w) \propto \int \mathcal N(w \mid 0, s^2) \frac{ds}{s} \propto \frac{1}{|w|},

    with the log-scale :math:`u` (site ``f"{name}_log_scale"``) flat and improper, one per weight or per
    group. The prior cannot be sampled (SVI and NUTS only need its density) and its KL is defined up to a
    constant. On a Bayesian layer this is sparse variational dropout [1]_ (per weight,
    :math:`q(w) = \mathcal N(\theta, \alpha\theta^2)` with the KL approximation :func:`molchanov_neg_kl`)
    and, with groups, Bayesian compression with group normal-Jeffreys scales [2]_.

    Sites for ``sample("w", shape)``: ``w_log_scale`` (group shape, flat), ``w_raw`` (:math:`z`), ``w``.

    Parameters
    ----------
    groups : None, str or tuple of int, default=None

    References
    ----------
    .. [1] D. Molchanov, A. Ashukha, D. Vetrov, "Variational dropout sparsifies deep neural networks", ICML 2017.
    .. [2] C. Louizos, K. Ullrich, M. Welling, "Bayesian compression for deep learning", NeurIPS 2017.

    Examples
    --------
    >>> list(LogUniform().site_names("w"))
    ['w_log_scale', 'w_raw', 'w']
    """

    def __init__(self, *, groups=None):
        self.groups = _check_groups(groups)

    def site_names(self, name: str) -> dict[str, str]:
        name = _check_name(name)
        return {f"{name}_log_scale": SAMPLE, f"{name}_raw": SAMPLE, name: DETERMINISTIC}

    def sample(self, name: str, shape, *, dtype=None, device=None) -> torch.Tensor:
        """Place the sites (the log-scale is improper: run under SVI or NUTS, not prior sampling)."""
        name = _check_name(name)
        shape = _check_shape(shape)
        zero = torch.zeros((), dtype=dtype or torch.get_default_dtype(), device=device)
        event_dim = len(shape)
        log_scale = pyro.sample(  # event shape = group shape: the flat density has no batch to reinterpret
            f"{name}_log_scale",
            _FlatLogScale(constraints.real, (), _group_shape(shape, self.groups)),
        )
        raw = pyro.sample(f"{name}_raw", dist.Normal(zero, 1.0).expand(shape).to_event(event_dim))
        return pyro.deterministic(name, log_scale.exp() * raw, event_dim=event_dim)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(groups={self.groups!r})"


class GroupNormalJeffreys(LogUniform):
    r"""Group normal-Jeffreys prior of Bayesian compression (BC-GNJ): one Jeffreys scale per group.

    .. math::

        w_{g,j} = e^{u_g} z_{g,j}, \qquad p(u_g) \propto 1,

    so :math:`p(w_g) \propto \int \prod_j \mathcal N(w_{g,j} \mid 0, s_g^2)\, ds_g / s_g`: every weight of a
    group (an input neuron by default, a filter with ``groups="channel"``) shares one scale, and a group is
    pruned whole. On a layer: :math:`q(s_g) = \mathcal N(\mu_g, \sigma_g^2)`, pruned when
    :math:`\log\alpha_g = \log\sigma_g^2/\mu_g^2` is large (Louizos et al.'s rule).

    Parameters
    ----------
    groups : str or tuple of int, default="input"

    Examples
    --------
    >>> GroupNormalJeffreys().groups
    'input'
    """

    def __init__(self, *, groups="input"):
        super().__init__(groups=groups)
        if self.groups is None:
            raise ValueError("GroupNormalJeffreys needs a group structure (e.g. groups='input'); use LogUniform")
