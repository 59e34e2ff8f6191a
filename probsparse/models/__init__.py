"""Model specifications and the scikit-learn estimators built on them."""

from .linear import SparseLinearModel
from .sbl import RVMRegressor, SBLRegressor

__all__ = ["RVMRegressor", "SBLRegressor", "SparseLinearModel"]
