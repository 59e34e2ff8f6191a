"""Inference engines. Each takes a model (or its arrays) and data and returns a posterior object.

- :func:`fit` (:mod:`probsparse.inference.fitting`): minibatch SVI for Bayesian networks and Pyro models,
  with KL scaling and warm-up, schedules, early stopping, callbacks and checkpoint / resume.
- :mod:`probsparse.inference.sbl`: sparse Bayesian learning engines on NumPy arrays (EM, MacKay,
  Tipping–Faul), returning :class:`~probsparse.inference.sbl.SBLPosterior`.
- :mod:`probsparse.inference.svi`: Pyro stochastic variational inference on whole data (``fit_svi``).
- :mod:`probsparse.inference.mcmc`: Pyro NUTS (``fit_nuts``).
- :mod:`probsparse.inference.kronecker_omp`: Kronecker (N-way) orthogonal matching pursuit, the greedy
  baseline of Kronecker-structured recovery.

Submodules are imported on demand, so the NumPy engines do not load torch and Pyro.
"""

from importlib import import_module

_LAZY = {"fit": "probsparse.inference.fitting", "FitResult": "probsparse.inference.fitting"}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'probsparse.inference' has no attribute {name!r}")
