"""probsparse: Bayesian sparse modelling with uncertainty.

Define a model with a sparsity prior, fit it (SVI, or a specialised engine such as sparse Bayesian
learning), inspect the posterior (ArviZ), and export a pruned deterministic network.

The top level re-exports the most used names lazily, so ``import probsparse`` stays cheap (torch, Pyro and
Numba load only when a name that needs them is first used).
"""

from importlib import import_module

from ._version import __version__

_LAZY = {
    "SBLRegressor": "probsparse.models",
    "RVMRegressor": "probsparse.models",
    "SparseLinearModel": "probsparse.models",
    "datasets": "probsparse.datasets",
    "fit": "probsparse.inference.fitting",
    "bayesianize": "probsparse.nn",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        module = import_module(_LAZY[name])
        value = module if module.__name__.endswith(name) else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'probsparse' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
