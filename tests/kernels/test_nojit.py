"""Run the kernel tests again as plain Python (``NUMBA_DISABLE_JIT=1``), in a fresh interpreter.

The compiled and the interpreted kernels must agree with the same NumPy / SciPy references; this also lets
coverage see the kernel bodies.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
KERNEL_TESTS = [
    "test_sbl_updates.py",
    "test_sparse_matmul.py",
    "test_kronecker_products.py",
    "test_scale_mixture_kl.py",
]
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("test_file", KERNEL_TESTS)
def test_kernel_tests_pass_without_jit(test_file):
    if os.environ.get("NUMBA_DISABLE_JIT") == "1":
        pytest.skip("already running without JIT")
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env.setdefault(var, "1")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE / test_file)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
