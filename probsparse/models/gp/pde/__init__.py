"""Gaussian-process solver for high-frequency and multi-scale PDEs (GP-HM): operators, problems, the solver."""

from .operator import (
    PDEOperator,
    PDEProblem,
    advection,
    allen_cahn_1d,
    allen_cahn_2d,
    poisson_1d,
    poisson_2d,
    source_from_solution,
)
from .solver import GPPDESolver, SolverHistory, make_kernel

__all__ = [
    "GPPDESolver",
    "PDEOperator",
    "PDEProblem",
    "SolverHistory",
    "advection",
    "allen_cahn_1d",
    "allen_cahn_2d",
    "make_kernel",
    "poisson_1d",
    "poisson_2d",
    "source_from_solution",
]
