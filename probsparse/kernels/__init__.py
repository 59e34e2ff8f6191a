"""Numba compute kernels: pure functions over NumPy arrays, with thin validated wrappers.

This package imports only NumPy and Numba (never torch), so the NumPy engines that use it stay light.
Every kernel is compiled with the flags of :mod:`probsparse.kernels._config`; set ``NUMBA_DISABLE_JIT=1`` to
run them as plain Python (the test-suite does this once to check the Python and compiled paths agree).
"""

from probsparse.kernels._config import FASTMATH
from probsparse.kernels.kronecker_products import (
    factor_rotation,
    kron_change_norm,
    kron_eig_solve,
    kron_estep,
    kron_prune_change,
    kron_second_moments,
)
from probsparse.kernels.sbl_updates import (
    ACTION_ADD,
    ACTION_DELETE,
    ACTION_NONE,
    ACTION_REESTIMATE,
    SelectedAction,
    rank_one_update,
    select_action,
)
from probsparse.kernels.scale_mixture_kl import centred_scale_mixture_kl, scale_variables_kl
from probsparse.kernels.sparse_matmul import batch_chunk, check_csr, csr_linear, csr_linear_unchecked

__all__ = [
    "ACTION_ADD",
    "ACTION_DELETE",
    "ACTION_NONE",
    "ACTION_REESTIMATE",
    "FASTMATH",
    "SelectedAction",
    "batch_chunk",
    "centred_scale_mixture_kl",
    "check_csr",
    "csr_linear",
    "csr_linear_unchecked",
    "factor_rotation",
    "kron_change_norm",
    "kron_eig_solve",
    "kron_estep",
    "kron_prune_change",
    "kron_second_moments",
    "rank_one_update",
    "scale_variables_kl",
    "select_action",
]
