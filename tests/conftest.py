"""Test-wide settings: one thread, fixed seeds, a clean Pyro parameter store (tests choose their own dtypes).

Threads are pinned here (and in the Makefile / CI environment), never by the library: on a busy 2-core
machine multi-threaded BLAS / OpenMP pools stall in ~4 ms quanta, which makes timings meaningless.
"""

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_and_clean_state():
    """Seed every RNG and give each test a clean Pyro parameter store with validation on."""
    import pyro

    pyro.set_rng_seed(0)  # seeds Python's random, NumPy's global generator and torch
    pyro.clear_param_store()
    pyro.enable_validation(True)
    yield
    pyro.clear_param_store()


@pytest.fixture
def rng():
    """A seeded NumPy generator for tests that draw their own data."""
    return np.random.default_rng(12345)
