import numpy as np
import pytest

from probsparse.datasets import make_kronecker_sparse
from probsparse.inference.kronecker_omp import kronecker_omp


def _noiseless(dims, measurements, k, seed):
    p = make_kronecker_sparse(dims, measurements, k, 20.0, seed=seed)
    return p, p.dictionary @ p.coef


@pytest.mark.parametrize("seed", range(8))
def test_noiseless_two_factors_exact_recovery(seed):
    p, y0 = _noiseless((12, 12), (10, 10), 2, seed)
    r = kronecker_omp(p.factors, y0, n_nonzero=(2, 2))
    assert np.array_equal(r.support, p.support)
    for got, true in zip(r.factor_supports, p.factor_supports, strict=True):
        np.testing.assert_array_equal(got, np.flatnonzero(true))
    np.testing.assert_allclose(r.coef, p.coef, atol=1e-10)
    assert r.residual_norm < 1e-10 * np.linalg.norm(y0)


def test_noiseless_three_factors_exact_recovery_and_tol_stop():
    p, y0 = _noiseless((10, 10, 10), (9, 9, 9), 2, 0)
    r = kronecker_omp(p.factors, y0, n_nonzero=2)
    np.testing.assert_allclose(r.coef, p.coef, atol=1e-10)
    # Residual rule alone: stops once the support is complete (residual ~ 0), with the same answer.
    r_tol = kronecker_omp(p.factors, y0, tol=1e-8 * np.linalg.norm(y0))
    np.testing.assert_allclose(r_tol.coef, p.coef, atol=1e-10)
    assert r_tol.n_iter == r.n_iter
    # Tensor-shaped measurements give the same result as the vector.
    r_t = kronecker_omp(p.factors, y0.reshape(9, 9, 9), n_nonzero=2)
    np.testing.assert_array_equal(r_t.coef, r.coef)


def _dense_reference(factors, y, caps, normalize=True):
    """Greedy Kronecker OMP written on the explicit H = np.kron(...) (tiny problems only)."""
    dims = [A.shape[1] for A in factors]
    H = factors[0]
    for A in factors[1:]:
        H = np.kron(H, A)
    scale = np.linalg.norm(H, axis=0) if normalize else np.ones(H.shape[1])
    Hn = H / scale
    sets = [set() for _ in dims]
    resid = y.copy()
    order = []
    coef = np.zeros(H.shape[1])
    while not all(len(s) >= c for s, c in zip(sets, caps, strict=True)):
        corr = np.abs(Hn.T @ resid)
        for n in range(H.shape[1]):
            multi = np.unravel_index(n, dims)
            if any(len(s) >= c and j not in s for s, c, j in zip(sets, caps, multi, strict=True)):
                corr[n] = -1.0
        n = int(np.argmax(corr))
        multi = np.unravel_index(n, dims)
        if all(j in s for s, j in zip(sets, multi, strict=True)):
            break
        order.append(tuple(int(j) for j in multi))
        for s, j in zip(sets, multi, strict=True):
            s.add(int(j))
        mask = np.ones(dims, dtype=bool)
        for i, s in enumerate(sets):
            m = np.zeros(dims[i], dtype=bool)
            m[sorted(s)] = True
            shape = [1] * len(dims)
            shape[i] = dims[i]
            mask = mask & m.reshape(shape)
        cols = np.flatnonzero(mask.reshape(-1))
        sol, *_ = np.linalg.lstsq(Hn[:, cols], y, rcond=None)
        coef = np.zeros(H.shape[1])
        coef[cols] = sol / scale[cols]
        resid = y - Hn[:, cols] @ sol
    return order, coef


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_dense_greedy_reference(seed, normalize):
    rng = np.random.default_rng(seed)
    factors = [
        rng.standard_normal((4, 5)) * rng.uniform(0.2, 3.0, 5),
        rng.standard_normal((5, 6)),
        rng.standard_normal((3, 4)),
    ]
    y = rng.standard_normal(4 * 5 * 3)
    caps = (2, 3, 2)
    order, coef = _dense_reference(factors, y, caps, normalize)
    r = kronecker_omp(factors, y, n_nonzero=caps, normalize=normalize)
    assert r.selection_order == order
    np.testing.assert_allclose(r.coef, coef, rtol=1e-8, atol=1e-10)
    assert [len(s) for s in r.factor_supports] == list(caps)
    np.testing.assert_allclose(r.residual_norm, np.linalg.norm(y - np.kron(np.kron(*factors[:2]), factors[2]) @ r.coef))


def test_zero_columns_are_never_picked():
    rng = np.random.default_rng(3)
    A1, A2 = rng.standard_normal((5, 6)), rng.standard_normal((4, 5))
    A1[:, 2] = 0.0
    y = rng.standard_normal(20)
    r = kronecker_omp([A1, A2], y, n_nonzero=(4, 3))
    assert 2 not in r.factor_supports[0]
    assert np.all(np.isfinite(r.coef))


def test_bad_input():
    rng = np.random.default_rng(0)
    A = [rng.standard_normal((4, 5)), rng.standard_normal((3, 6))]
    y = rng.standard_normal(12)
    with pytest.raises(TypeError, match="factors"):
        kronecker_omp(np.ones((4, 5)), y, n_nonzero=1)
    with pytest.raises(ValueError, match=r"factors\[1\] must be 2-D"):
        kronecker_omp([A[0], np.ones(3)], y, n_nonzero=1)
    with pytest.raises(ValueError, match="y must have prod"):
        kronecker_omp(A, y[:-1], n_nonzero=1)
    with pytest.raises(ValueError, match="y contains"):
        kronecker_omp(A, np.full(12, np.nan), n_nonzero=1)
    with pytest.raises(ValueError, match="n_nonzero or|give n_nonzero"):
        kronecker_omp(A, y)
    with pytest.raises(ValueError, match="one entry per factor"):
        kronecker_omp(A, y, n_nonzero=(1, 2, 3))
    with pytest.raises(ValueError, match=r"n_nonzero\[1\] = 7 exceeds"):
        kronecker_omp(A, y, n_nonzero=(1, 7))
    with pytest.raises(ValueError, match=r"n_nonzero\[0\] must be >= 1"):
        kronecker_omp(A, y, n_nonzero=(0, 1))
    with pytest.raises(TypeError, match=r"n_nonzero\[0\] must be an integer"):
        kronecker_omp(A, y, n_nonzero=(1.5, 1))
    with pytest.raises(ValueError, match="tol must be >= 0"):
        kronecker_omp(A, y, tol=-1.0)
    with pytest.raises(TypeError, match="normalize"):
        kronecker_omp(A, y, n_nonzero=1, normalize="yes")
