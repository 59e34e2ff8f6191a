"""Sparsity priors: small objects that place named, non-centred Pyro sites for a weight tensor."""

from .ard import ARDPrior, WeightPrior
from .kronecker import KroneckerARDPrior

__all__ = ["ARDPrior", "KroneckerARDPrior", "WeightPrior"]
