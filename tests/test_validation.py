import numpy as np
import pytest

from probsparse._validation import (
    check_finite_real,
    check_matrix_and_targets,
    check_positive_int,
    check_positive_real,
)


def test_scalar_checks():
    assert check_positive_int(3, "n") == 3
    with pytest.raises(TypeError, match="n must be an integer"):
        check_positive_int(True, "n")
    with pytest.raises(ValueError, match="n must be >= 1"):
        check_positive_int(0, "n")
    assert check_finite_real(2, "x") == 2.0
    with pytest.raises(ValueError, match="x must be finite"):
        check_finite_real(float("nan"), "x")
    with pytest.raises(ValueError, match="noise_var must be > 0"):
        check_positive_real(0.0, "noise_var")
    with pytest.raises(TypeError, match="noise_var must be a real number"):
        check_positive_real("1", "noise_var")


def test_matrix_and_targets_accepts_and_converts():
    X, y = check_matrix_and_targets(np.ones((3, 2), dtype=np.float32), [1, 2, 3])
    assert X.dtype == np.float64 and y.dtype == np.float64 and y.shape == (3,)
    X, y = check_matrix_and_targets(np.ones((3, 2)), np.ones((3, 2)) * 1j, allow_complex=True)
    assert X.dtype == np.complex128 and y.shape == (3, 2)


@pytest.mark.parametrize(
    "X, y, match",
    [
        (np.ones((3, 2)), np.ones(4), "different numbers of samples"),
        (np.ones((3, 0)), np.ones(3), "no columns"),
        (np.ones((0, 2)), np.ones(0), "no rows"),
        (np.ones(3), np.ones(3), "must be 2-D"),
        (np.array([[1.0, np.nan]]), np.ones(1), "X contains 1 NaN"),
        (np.ones((2, 2)), np.array([1.0, np.inf]), "y contains 1 NaN or infinite"),
        (np.ones((2, 2)) * 1j, np.ones(2), "complex"),
    ],
)
def test_matrix_and_targets_rejects_bad_input(X, y, match):
    with pytest.raises(ValueError, match=match):
        check_matrix_and_targets(X, y)


def test_matrix_and_targets_rejects_non_numbers():
    with pytest.raises(TypeError, match="X must hold numbers"):
        check_matrix_and_targets(np.array([["a", "b"]]), np.ones(1))
