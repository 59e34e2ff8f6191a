"""Sparsity priors: small objects that place named, non-centred Pyro sites for a weight tensor.

Each prior works in a hand-written Pyro model (``w = prior.sample("w", shape)``) and on the Bayesian layers
of :mod:`probsparse.nn`, which pick the matching variational family from the prior's class.
"""

from .ard import ARD, ARDPrior
from .base import WeightPrior, group_shape
from .horseshoe import GroupHorseshoe, Horseshoe, RegularizedHorseshoe
from .jeffreys import GroupNormalJeffreys, LogUniform
from .kronecker import KroneckerARDPrior
from .scale_mixture import Normal, ScaleMixturePrior
from .spike_slab import SpikeAndSlab

__all__ = [
    "ARD",
    "ARDPrior",
    "GroupHorseshoe",
    "GroupNormalJeffreys",
    "Horseshoe",
    "KroneckerARDPrior",
    "LogUniform",
    "Normal",
    "RegularizedHorseshoe",
    "ScaleMixturePrior",
    "SpikeAndSlab",
    "WeightPrior",
    "group_shape",
]
