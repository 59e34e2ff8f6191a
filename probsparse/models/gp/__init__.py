"""Gaussian-process models: covariance functions (GPyTorch kernels), the GP PDE solver, heavy-tailed and
sparse GPs.

Covariances live here, not in :mod:`probsparse.kernels` (which holds Numba compute kernels only).

- :mod:`~probsparse.models.gp.spectral_mixture`: Gaussian and Student-t (Matérn-5/2 × cos) spectral mixtures per
  dimension with closed-form derivative cross-covariances.
- :mod:`~probsparse.models.gp.kronecker_grid`: covariances on tensor grids through per-factor factorisations.
- :mod:`~probsparse.models.gp.pde`: the GP-HM PDE solver (operators, ready-made problems, :class:`GPPDESolver`).
"""

from .kronecker_grid import (
    KroneckerGridCovariance,
    apply_along_axes,
    sylvester_solve,
    toeplitz_from_offsets,
    uniform_offsets,
)
from .pde import (
    GPPDESolver,
    PDEOperator,
    PDEProblem,
    advection,
    allen_cahn_1d,
    allen_cahn_2d,
    poisson_1d,
    poisson_2d,
    source_from_solution,
)
from .spectral_mixture import (
    GaussianSpectralMixtureKernel,
    SpectralMixtureProductKernel,
    StudentTSpectralMixtureKernel,
)

__all__ = [
    "GPPDESolver",
    "GaussianSpectralMixtureKernel",
    "KroneckerGridCovariance",
    "PDEOperator",
    "PDEProblem",
    "SpectralMixtureProductKernel",
    "StudentTSpectralMixtureKernel",
    "advection",
    "allen_cahn_1d",
    "allen_cahn_2d",
    "apply_along_axes",
    "poisson_1d",
    "poisson_2d",
    "source_from_solution",
    "sylvester_solve",
    "toeplitz_from_offsets",
    "uniform_offsets",
]
