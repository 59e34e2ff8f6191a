"""Gaussian-process models: covariance functions (GPyTorch kernels), the GP PDE solver, heavy-tailed and
sparse GPs.

Covariances live here, not in :mod:`probsparse.kernels` (which holds Numba compute kernels only).

- :mod:`~probsparse.models.gp.spectral_mixture`: Gaussian and Student-t (Matérn-5/2 × cos) spectral mixtures per
  dimension with closed-form derivative cross-covariances.
- :mod:`~probsparse.models.gp.kronecker_grid`: covariances on tensor grids through per-factor factorisations.
- :mod:`~probsparse.models.gp.pde`: the GP-HM PDE solver (operators, ready-made problems, :class:`GPPDESolver`).
- :mod:`~probsparse.models.gp.nngp`: infinite-width MLP (NNGP) kernels, ReLU and erf.
- :mod:`~probsparse.models.gp.student_t_process`: exact GP, Student-t process and general scale-mixture regression.
- :mod:`~probsparse.models.gp.robust`: variational GPs with a Student-t (per-point robust) or Gaussian likelihood.
- :mod:`~probsparse.models.gp.sparse_ard`: SVGPs with horseshoe (or plain) ARD inverse lengthscales, fitted by SVI.
- :mod:`~probsparse.models.gp.dkm`: sparse deep kernel machines.
- :mod:`~probsparse.models.gp.classification`: scale-mixture GP classification with inducing points.
"""

from .classification import ScaleMixtureGPClassifier
from .dkm import SparseDKM
from .kronecker_grid import (
    KroneckerGridCovariance,
    apply_along_axes,
    sylvester_solve,
    toeplitz_from_offsets,
    uniform_offsets,
)
from .nngp import ErfNNGPKernel, ReLUNNGPKernel
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
from .robust import StudentTLikelihoodGP, VariationalGP
from .sparse_ard import ARDSVGP, HorseshoeARDSVGP
from .spectral_mixture import (
    GaussianSpectralMixtureKernel,
    SpectralMixtureProductKernel,
    StudentTSpectralMixtureKernel,
)
from .student_t_process import GaussianProcess, ScaleMixtureProcess, StudentTProcess

__all__ = [
    "ARDSVGP",
    "ErfNNGPKernel",
    "GaussianProcess",
    "HorseshoeARDSVGP",
    "ReLUNNGPKernel",
    "ScaleMixtureGPClassifier",
    "ScaleMixtureProcess",
    "SparseDKM",
    "StudentTLikelihoodGP",
    "StudentTProcess",
    "VariationalGP",
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
