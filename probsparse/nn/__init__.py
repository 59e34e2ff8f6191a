"""Bayesian neural-network layers.

A layer owns its variational parameters and computes its stochastic forward pass (local
reparameterisation) and its KL divergence to the prior; the objective decides how the KL is scaled.
Every layer also exposes ``mean_parameters()``, the posterior-mean weights under the names of its
deterministic counterpart, which is what :mod:`probsparse.export` reads.
"""

from probsparse.nn.linear import BayesianLinear

__all__ = ["BayesianLinear"]
