"""Model specifications and the scikit-learn estimators built on them."""

from .kronecker import KroneckerSBLRegressor
from .kronecker_linear import KroneckerSparseLinearModel
from .linear import SparseLinearModel
from .sbl import RVMRegressor, SBLRegressor

__all__ = ["KroneckerSBLRegressor", "KroneckerSparseLinearModel", "RVMRegressor", "SBLRegressor", "SparseLinearModel"]
