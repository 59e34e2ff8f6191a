"""Bayesian neural-network layers and whole-network helpers.

A layer owns its prior's variational family (:mod:`probsparse.nn.families`) and computes its stochastic
forward pass (local reparameterisation) and its KL divergence to the prior; the objective decides how the KL
is scaled. In a training loop, ``with kl_in_forward() as terms: out = net(x)`` then ``kl_divergence(net, terms)``
has the layers that can do so compute their KL in the same pass as their output, as
:func:`probsparse.inference.fit` does. Every layer also exposes ``pruning_scores()`` and ``mean_parameters()``
(posterior-mean weights under the names of its deterministic counterpart), which is what :mod:`probsparse.export`
reads.
"""

from probsparse.nn.base import BayesianLayer, kl_in_forward
from probsparse.nn.conv import BayesianConv2d
from probsparse.nn.convert import bayesian_layers, bayesianize, kl_divergence, kl_modules, posterior_mean
from probsparse.nn.linear import BayesianLinear

__all__ = [
    "BayesianConv2d",
    "BayesianLayer",
    "BayesianLinear",
    "bayesian_layers",
    "bayesianize",
    "kl_divergence",
    "kl_in_forward",
    "kl_modules",
    "posterior_mean",
]
