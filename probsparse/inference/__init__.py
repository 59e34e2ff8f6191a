"""Inference engines. Each takes a model (or its arrays) and data and returns a posterior object.

- :mod:`probsparse.inference.sbl`: sparse Bayesian learning engines on NumPy arrays (EM, MacKay,
  Tipping–Faul), returning :class:`~probsparse.inference.sbl.SBLPosterior`.
- :mod:`probsparse.inference.svi`: Pyro stochastic variational inference (``fit_svi``).
- :mod:`probsparse.inference.mcmc`: Pyro NUTS (``fit_nuts``).
- :mod:`probsparse.inference.kronecker_omp`: Kronecker (N-way) orthogonal matching pursuit, the greedy
  baseline of Kronecker-structured recovery.

Submodules are imported on demand, so the NumPy engines do not load torch and Pyro.
"""
