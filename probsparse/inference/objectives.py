r"""Minibatch objectives of :func:`~probsparse.inference.fitting.fit`: a Bayesian network's loss and a Pyro ELBO.

Both estimate the negative ELBO of the whole training set of size :math:`N` from a minibatch :math:`B`;
they differ in units. For a network (per example, as a loss function):

.. math::

    \mathcal L = \frac{1}{|B|} \sum_{i \in B} -\log p(y_i \mid f(x_i))
        + \beta_t \, \frac{\mathrm{KL}(q \,\|\, p)}{N},

and for a Pyro model (nats, as Pyro's ``Trace_ELBO``), with the data plate scaled by :math:`N/|B|`:

.. math::

    \mathcal L = -\frac{N}{|B|} \sum_{i \in B} \log p(y_i \mid z) + \beta_t \big(\log q(z) - \log p(z)\big),
    \qquad z \sim q.

:math:`\beta_t` is the KL warm-up weight. The KL of a network is the sum of its Bayesian layers'
``kl_divergence()``, never scaled by the layers themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites
from torch import nn

from probsparse.nn.base import kl_in_forward
from probsparse.nn.convert import kl_divergence, kl_modules

__all__ = ["LossTerms", "bayesian_modules", "network_kl", "network_loss"]


class LossTerms(NamedTuple):
    """The objective of one step and its two parts (tensors of shape ())."""

    loss: torch.Tensor
    nll: torch.Tensor
    kl: torch.Tensor


# The layer protocol (any module with kl_divergence()) and its KL sum live with the layers.
bayesian_modules = kl_modules
network_kl = kl_divergence


def network_loss(
    network: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    likelihood: Callable,
    n_train: int,
    kl_weight: float = 1.0,
) -> LossTerms:
    r"""Minibatch estimate of a Bayesian network's negative ELBO per training example.

    .. math::

        \mathcal L = \underbrace{\frac{1}{|B|} \sum_{i \in B} -\log p(y_i \mid f(x_i))}_{\texttt{nll}}
            + \beta \, \frac{\overbrace{\mathrm{KL}(q \,\|\, p)}^{\texttt{kl}}}{N}

    Parameters
    ----------
    network : torch.nn.Module
        Its Bayesian layers provide ``kl_divergence()``; ``network(x)`` is one stochastic forward pass.
    x : torch.Tensor of shape (batch, ...)
    y : torch.Tensor of shape (batch, ...)
    likelihood : callable
        ``likelihood(output, y)`` -> per-example NLL of shape ``(batch,)`` (see
        :mod:`probsparse.inference.likelihoods`).
    n_train : int
        Training-set size :math:`N`.
    kl_weight : float, default=1.0
        Warm-up weight :math:`\beta`.

    Returns
    -------
    LossTerms
        ``loss``, ``nll`` (the mean over the batch) and ``kl`` (the unscaled sum over layers).

    Examples
    --------
    >>> import torch
    >>> from probsparse.inference.likelihoods import GaussianLikelihood
    >>> from probsparse.nn import BayesianLinear
    >>> net = BayesianLinear(2, 1)
    >>> terms = network_loss(net, torch.randn(5, 2), torch.randn(5), likelihood=GaussianLikelihood(1.0),
    ...                      n_train=100)
    >>> bool(torch.isclose(terms.loss, terms.nll + terms.kl / 100))
    True
    """
    with kl_in_forward() as forward_kl:
        output = network(x)
    nll_per_example = likelihood(output, y)
    if not torch.is_tensor(nll_per_example) or nll_per_example.shape != (x.shape[0],):
        shape = tuple(nll_per_example.shape) if torch.is_tensor(nll_per_example) else type(nll_per_example).__name__
        raise ValueError(f"likelihood must return per-example NLLs of shape ({x.shape[0]},), got {shape}")
    nll = nll_per_example.mean()
    kl = network_kl(network, forward_kl)
    return LossTerms(nll + kl_weight * kl / n_train, nll, kl)


class _MinibatchScale(Messenger):
    """Scale every sample site inside the plate ``plate_name`` by ``scale`` (= N / batch).

    This is what ``pyro.plate(name, N, subsample=...)`` does for a model that is handed only the minibatch
    rows. It checks on the way that the plate spans the minibatch and that no observed site sits outside it
    (it would be left unscaled and so weigh |B|/N too little).
    """

    def __init__(self, plate_name: str, scale: float, batch_size: int) -> None:
        super().__init__()
        self.plate_name = plate_name
        self.scale = scale
        self.batch_size = batch_size
        self.seen = False

    def _pyro_sample(self, msg) -> None:
        if type(msg["fn"]).__name__ == "_Subsample":
            return
        frame = next((f for f in msg["cond_indep_stack"] if f.name == self.plate_name), None)
        if frame is None:
            if msg["is_observed"] and not msg["infer"].get("_deterministic", False) and self.scale != 1.0:
                raise ValueError(
                    f"observed site {msg['name']!r} is outside the data plate {self.plate_name!r}: minibatch "
                    "scaling needs every observation inside that plate (set data_plate)"
                )
            return
        if frame.size != self.batch_size:
            raise ValueError(
                f"the data plate {self.plate_name!r} has size {frame.size} but the minibatch has "
                f"{self.batch_size} rows: the model must place its plate over the rows it is given"
            )
        self.seen = True
        msg["scale"] = self.scale * msg["scale"]


def _is_observation(site) -> bool:
    return site["is_observed"] and not site["infer"].get("_deterministic", False)


def pyro_elbo_terms(
    model, guide, args: tuple, kwargs: dict, *, kl_weight: float = 1.0, scale: _MinibatchScale | None = None
) -> LossTerms:
    r"""One-draw negative ELBO of a Pyro model with a reparameterised guide, split into NLL and KL.

    ``nll`` is :math:`-\sum \log p(y \mid z)` over the observed sites (with their plate scales), ``kl`` is
    :math:`\log q(z) - \log p(z)` over the latent sites, and ``loss = nll + kl_weight * kl``. With
    ``kl_weight = 1`` the value and gradient equal ``Trace_ELBO`` for a fully reparameterised guide.
    """
    if scale is not None:
        model, guide = scale(model), scale(guide)
    guide_trace = prune_subsample_sites(poutine.trace(guide).get_trace(*args, **kwargs))
    model_trace = prune_subsample_sites(
        poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    )
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    nll = 0.0
    log_prior = 0.0
    for site in model_trace.nodes.values():
        if site["type"] != "sample" or site["infer"].get("_deterministic", False):
            continue
        if site["is_observed"]:
            nll = nll - site["log_prob_sum"]
        else:
            log_prior = log_prior + site["log_prob_sum"]
    log_q = 0.0
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and not site["is_observed"]:
            if not site["fn"].has_rsample:
                raise ValueError(
                    f"guide site {name!r} is not reparameterisable; fit() needs a reparameterised "
                    "guide (e.g. AutoNormal or AutoMultivariateNormal)"
                )
            log_q = log_q + site["log_prob_sum"]
    kl = log_q - log_prior
    nll, kl = torch.as_tensor(nll), torch.as_tensor(kl)
    return LossTerms(nll + kl_weight * kl, nll, kl)


def pyro_predictive_nll(model, guide, args: tuple, kwargs: dict, *, data_plate: str, num_draws: int) -> float:
    r"""Mean predictive NLL per datum, :math:`-\frac1n \sum_i \log \frac1S \sum_s p(y_i \mid z_s)`, z_s ~ q.

    The observed sites inside the plate ``data_plate`` give each datum's log-likelihood.
    """
    per_draw = []
    with torch.no_grad():
        for _ in range(num_draws):
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
            model_trace = prune_subsample_sites(model_trace)
            model_trace.compute_log_prob(lambda _name, site: _is_observation(site))
            total = None
            for name, site in model_trace.nodes.items():
                if site["type"] != "sample" or not _is_observation(site):
                    continue
                frame = next((f for f in site["cond_indep_stack"] if f.name == data_plate), None)
                if frame is None:
                    raise ValueError(f"observed site {name!r} is outside the data plate {data_plate!r}")
                lp = site["unscaled_log_prob"]
                if lp.dim() < -frame.dim:
                    lp = lp.reshape((1,) * (-frame.dim - lp.dim()) + tuple(lp.shape))
                lp = lp.movedim(frame.dim, 0)
                lp = lp.expand((frame.size,) + tuple(lp.shape[1:])).reshape(frame.size, -1).sum(1)
                total = lp if total is None else total + lp
            if total is None:
                raise ValueError("the model has no observed site to score the validation data")
            per_draw.append(total)
    lp = torch.stack(per_draw)
    return float(-(torch.logsumexp(lp, 0) - math.log(num_draws)).mean())
