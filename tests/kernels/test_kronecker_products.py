"""The Kronecker SBL E-step kernels against the plain NumPy references of ``tests/kernels/naive.py``.

``test_nojit.py`` runs this module a second time with ``NUMBA_DISABLE_JIT=1``.
"""

from __future__ import annotations

import numpy as np
import pytest

from probsparse.kernels import (
    factor_rotation,
    kron_change_norm,
    kron_eig_solve,
    kron_estep,
    kron_prune_change,
    kron_second_moments,
)
from probsparse.kernels.kronecker_products import (
    _mode_chain,
    _mode_chain_trailing,
    _sym_eig_kernel,
    _sym_top_eigvec_kernel,
    kron_svd_em,
    kron_svd_mstep,
)
from tests.kernels import naive


def _draw(rng, shape, complex_):
    if complex_:
        return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    return rng.standard_normal(shape)


# ----------------------------------------------------------------------------------------------------
# kron_eig_solve
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("sizes", [(1, 1), (1, 7), (6, 1), (12, 15), (96, 15)])
def test_eig_solve_matches_naive(sizes, complex_):
    rng = np.random.default_rng(sum(sizes))
    p_head = rng.uniform(0.0, 5.0, sizes[0])
    p_last = rng.uniform(0.0, 5.0, sizes[1])
    p_head[0] = 0.0  # rank-deficient factors give zero eigenvalues
    z = _draw(rng, sizes[0] * sizes[1], complex_)
    noise_var = 0.3
    d = np.empty(z.size)
    dz = np.empty_like(z)
    got = kron_eig_solve(p_head, p_last, z, noise_var, d, dz)
    r_d, r_dz, *r_sums = naive.kron_eig_solve(p_head, p_last, z, noise_var)
    np.testing.assert_allclose(d, r_d, rtol=1e-14)
    np.testing.assert_allclose(dz, r_dz, rtol=1e-14)
    np.testing.assert_allclose(got, r_sums, rtol=1e-12)


def test_eig_solve_is_the_evidence_of_a_diagonal_covariance():
    # With U = I the sums are log|C|, y^T C^{-1} y, ||C^{-1} y||^2 and tr(P C^{-1}) of C = s2 I + diag(P).
    rng = np.random.default_rng(0)
    p_head, p_last = rng.uniform(0, 2, 3), rng.uniform(0, 2, 4)
    y = rng.standard_normal(12)
    C = np.diag(0.5 + np.kron(p_head, p_last))
    d, dz = np.empty(12), np.empty(12)
    logdet, quad, dz2, well = kron_eig_solve(p_head, p_last, y, 0.5, d, dz)
    Ci = np.linalg.inv(C)
    assert logdet == pytest.approx(np.linalg.slogdet(C)[1], rel=1e-13)
    assert quad == pytest.approx(y @ Ci @ y, rel=1e-13)
    assert dz2 == pytest.approx(np.sum((Ci @ y) ** 2), rel=1e-13)
    assert well == pytest.approx(np.trace((C - 0.5 * np.eye(12)) @ Ci), rel=1e-13)


def test_eig_solve_validates_its_inputs():
    ok = dict(p_head=np.ones(2), p_last=np.ones(3), z=np.ones(6), noise_var=1.0, d=np.empty(6), dz=np.empty(6))
    kron_eig_solve(**ok)
    for change, error in [
        (dict(z=np.ones(5)), ValueError),
        (dict(noise_var=0.0), ValueError),
        (dict(noise_var=np.nan), ValueError),
        (dict(p_head=np.ones(2, dtype=np.float32)), TypeError),
        (dict(dz=np.empty(6, dtype=complex)), TypeError),
        (dict(d=np.empty(12)[::2]), ValueError),
        (dict(p_last=[1.0, 1.0, 1.0]), TypeError),
        (dict(p_head=np.ones((2, 1))), ValueError),
    ]:
        with pytest.raises(error):
            kron_eig_solve(**{**ok, **change})


# ----------------------------------------------------------------------------------------------------
# kron_second_moments
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("sizes", [(1, 1), (1, 9), (225, 15), (15, 4)])
def test_second_moments_match_naive(sizes, complex_):
    rng = np.random.default_rng(7 + sizes[0])
    g_head = rng.uniform(0.1, 3.0, sizes[0])
    g_last = rng.uniform(0.1, 3.0, sizes[1])
    n = sizes[0] * sizes[1]
    g = np.kron(g_head, g_last)
    q = rng.uniform(0.0, 1.0, n) / g  # 0 <= g q <= 1 as for h^H C^{-1} h
    q[0] = 1.5 / g[0]  # rounding can push g q above 1: the variance is clipped at 0
    mean = _draw(rng, n, complex_)
    r_sigma, r_lam, r_top = naive.kron_second_moments(g_head, g_last, q, mean)
    lam = np.empty(n)
    top = kron_second_moments(g_head, g_last, q, mean, lam)  # q is overwritten with Σ_nn
    np.testing.assert_allclose(q, r_sigma, rtol=1e-12, atol=1e-14 * g.max())
    assert q[0] == 0.0
    np.testing.assert_allclose(lam, r_lam, rtol=1e-12, atol=1e-14 * g.max())
    assert top == pytest.approx(r_top, rel=1e-13)


def test_second_moments_floor_and_degenerate_cases():
    g_head, g_last = np.array([1.0, 1e-40, 1e-20]), np.array([1.0])
    q = np.array([1.0, 0.0, 0.0])  # first variance 0
    mean = np.array([2.0, 0.0, 0.0])
    lam = np.empty(3)
    top = kron_second_moments(g_head, g_last, q, mean, lam)
    assert top == 4.0
    np.testing.assert_array_equal(q, [0.0, 1e-40, 1e-20])
    np.testing.assert_array_equal(lam, [4.0, 4.0 * 1e-30, 1e-20])  # floored at 1e-30 * max
    lam = np.empty(2)
    # All second moments zero: no floor, top 0 (EM stops).
    assert kron_second_moments(np.zeros(2), np.ones(1), np.zeros(2), np.zeros(2), lam) == 0.0
    np.testing.assert_array_equal(lam, 0.0)
    # A NaN anywhere makes top NaN.
    assert np.isnan(kron_second_moments(np.ones(2), np.ones(1), np.zeros(2), np.array([1.0, np.nan]), lam))


def test_second_moments_validate_their_inputs():
    ok = dict(g_head=np.ones(2), g_last=np.ones(2), q=np.zeros(4), mean=np.zeros(4), lam=np.empty(4))
    kron_second_moments(**ok)
    for change, error in [
        (dict(q=np.zeros(3)), ValueError),
        (dict(mean=np.zeros(4, dtype=np.float32)), TypeError),
        (dict(lam=np.empty(8)[::2]), ValueError),
        (dict(q=np.zeros(4, dtype=complex)), TypeError),
    ]:
        with pytest.raises(error):
            kron_second_moments(**{**ok, **change})


# ----------------------------------------------------------------------------------------------------
# kron_change_norm
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [(1, 1), (225, 15), (3, 8)])
def test_change_norm_matches_naive(sizes):
    rng = np.random.default_rng(sizes[0])
    a_head, a_last = rng.random(sizes[0]), rng.random(sizes[1])
    b_head, b_last = a_head * rng.uniform(0.9, 1.1, sizes[0]), a_last.copy()
    b_last[0] = 0.0  # a pruned entry
    got = kron_change_norm(a_head, a_last, b_head, b_last)
    np.testing.assert_allclose(got, naive.kron_change_norm(a_head, a_last, b_head, b_last), rtol=1e-13)
    diff, norm = kron_change_norm(a_head, a_last, a_head, a_last)
    assert diff <= 1e-15 * norm  # 0 up to rounding (fused multiply-adds may keep a product's rounding error)


def test_change_norm_validates_its_inputs():
    with pytest.raises(ValueError, match="b_head"):
        kron_change_norm(np.ones(2), np.ones(3), np.ones(3), np.ones(3))
    with pytest.raises(TypeError, match="a_last"):
        kron_change_norm(np.ones(2), np.ones(3, dtype=int), np.ones(2), np.ones(3))


# ----------------------------------------------------------------------------------------------------
# factor_rotation
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("shape", [(8, 15), (15, 15), (12, 3), (1, 4), (5, 1)])
def test_factor_rotation_matches_naive(shape, complex_):
    m, n = shape
    r = min(m, n)  # thin factors (n < m) keep the n directions whose eigenvalue can be nonzero
    rng = np.random.default_rng(m * 100 + n)
    A = _draw(rng, shape, complex_)
    g = rng.uniform(0.1, 2.0, n)
    g[0] = 0.0  # a pruned entry inside the factor
    Ah = A.conj().T
    p, rot, back, sq = factor_rotation(A, Ah, g)
    assert p.shape == (r,) and rot.shape == (m, r) and back.shape == (r, n) and sq.shape == (r, n)
    r_p, r_U = naive.factor_rotation(A, g)
    scale = float(np.max(np.abs(r_p))) + 1.0
    np.testing.assert_allclose(np.sort(p), r_p[m - r :], rtol=1e-12, atol=1e-13 * scale)
    assert np.all(p >= 0.0)
    U = rot.conj()
    # Eigenvectors are unique up to a phase per column: compare the invariants the E-step uses.
    np.testing.assert_allclose(U.conj().T @ U, np.eye(r), atol=1e-12)
    G = (A * g) @ A.conj().T
    np.testing.assert_allclose(U @ np.diag(p) @ U.conj().T, G, atol=1e-12 * scale)
    AU = Ah @ U
    np.testing.assert_allclose(back, (g[:, None] * AU).T, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(sq, np.abs(AU.T) ** 2, rtol=1e-13, atol=1e-14)
    assert sq.dtype == np.float64 and back.dtype == A.dtype and rot.dtype == A.dtype
    # Columns of U for distinct nonzero eigenvalues agree with the reference up to a unit phase.
    for j in range(r):
        k = int(np.argmin(np.abs(r_p - p[j])))
        if p[j] > 1e-6 * scale and np.all(np.abs(np.delete(r_p, k) - r_p[k]) > 1e-6 * scale):
            assert abs(np.vdot(r_U[:, k], U[:, j])) == pytest.approx(1.0, abs=1e-10)


def test_factor_rotation_validates_its_inputs():
    A = np.ones((3, 4))
    with pytest.raises(ValueError, match="Ah"):
        factor_rotation(A, A, np.ones(4))
    with pytest.raises(TypeError, match="Ah"):
        factor_rotation(A, A.T.astype(complex), np.ones(4))
    with pytest.raises(ValueError, match="g"):
        factor_rotation(A, A.T, np.ones(3))
    with pytest.raises(ValueError, match="g must be >= 0"):
        factor_rotation(A, A.T, -np.ones(4))
    with pytest.raises(TypeError, match="A"):
        factor_rotation(A.astype(np.float32), A.T, np.ones(4))


# ----------------------------------------------------------------------------------------------------
# kron_prune_change
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_factors", [2, 3, 4])
def test_prune_change_matches_naive(n_factors):
    rng = np.random.default_rng(n_factors)
    sizes = [5, 7, 4, 3][:n_factors]
    old = tuple(rng.uniform(0.0, 2.0, n) for n in sizes)
    new = tuple(o * rng.uniform(0.5, 1.5, o.size) for o in old)
    new[0][1] = 1e-4 * new[0].max()  # below a 1e-3 ratio: pruned
    new[-1][:] = 0.0 if n_factors == 4 else new[-1]  # an all-zero factor is pruned whole
    ratios = np.full(n_factors, 1e-3)
    ratios[-1] = 0.2
    keeps, n_kept, diff, norm = kron_prune_change(old, new, ratios)
    r_keeps, r_n, r_diff, r_norm = naive.kron_prune_change(old, new, ratios)
    for k, r in zip(keeps, r_keeps, strict=True):
        np.testing.assert_array_equal(k, r)
    np.testing.assert_array_equal(n_kept, r_n)
    assert not keeps[0][1]
    assert diff == pytest.approx(r_diff, rel=1e-12)
    assert norm == pytest.approx(r_norm, rel=1e-12)


def test_prune_change_nan_prunes_the_factor():
    old = (np.ones(3), np.ones(2))
    keeps, n_kept, _, _ = kron_prune_change(old, (np.array([1.0, np.nan, 2.0]), np.ones(2)), np.zeros(2))
    assert not keeps[0].any() and keeps[1].all()
    np.testing.assert_array_equal(n_kept, [0, 2])


def test_prune_change_validates_its_inputs():
    old = (np.ones(3), np.ones(2))
    with pytest.raises(TypeError, match="tuple"):
        kron_prune_change(list(old), old, np.zeros(2))
    with pytest.raises(ValueError, match="new"):
        kron_prune_change(old, (np.ones(3), np.ones(3)), np.zeros(2))
    with pytest.raises(ValueError, match="ratios"):
        kron_prune_change(old, old, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="same number"):
        kron_prune_change(old, old[:1], np.zeros(1))


# ----------------------------------------------------------------------------------------------------
# kron_estep (the whole E-step) against the dense formulas
# ----------------------------------------------------------------------------------------------------


def _kron(mats):
    out = mats[0]
    for m in mats[1:]:
        out = np.kron(out, m)
    return out


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("ms, ns", [((3, 4), (5, 2)), ((2, 3, 2), (3, 2, 4)), ((2, 2, 2, 2), (2, 3, 2, 2))])
def test_estep_matches_dense_formulas(ms, ns, complex_):
    rng = np.random.default_rng(len(ms) + 10 * complex_)
    factors = tuple(_draw(rng, (m, n), complex_) for m, n in zip(ms, ns, strict=True))
    factors_h = tuple(np.ascontiguousarray(A.conj().T) for A in factors)
    gammas = tuple(rng.uniform(0.2, 2.0, n) for n in ns)
    gammas[0][0] = 0.0  # a pruned entry
    y = _draw(rng, int(np.prod(ms)), complex_)
    s2 = 0.3
    mean, var, lam, top, g_head, logdet, quad, dz2, well = kron_estep(factors, factors_h, gammas, y, s2)
    H = _kron(list(factors))
    gamma = _kron(list(gammas))
    C = s2 * np.eye(H.shape[0]) + (H * gamma) @ H.conj().T
    Ci_y = np.linalg.solve(C, y)
    r_mean = gamma * (H.conj().T @ Ci_y)
    r_var = gamma - gamma**2 * np.real(np.sum(H.conj() * np.linalg.solve(C, H), axis=0))
    np.testing.assert_allclose(mean, r_mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(var, r_var, rtol=1e-10, atol=1e-12)
    r_lam = var + np.abs(mean) ** 2
    np.testing.assert_allclose(lam, np.maximum(r_lam, 1e-30 * r_lam.max()), rtol=1e-12)
    assert top == pytest.approx(r_lam.max(), rel=1e-12)
    np.testing.assert_allclose(g_head, _kron(list(gammas[:-1])), rtol=1e-15)
    assert logdet == pytest.approx(np.linalg.slogdet(C)[1], rel=1e-10)
    assert quad == pytest.approx(np.real(np.vdot(y, Ci_y)), rel=1e-10)
    assert s2**2 * dz2 == pytest.approx(np.sum(np.abs(y - H @ r_mean) ** 2), rel=1e-8)
    assert well == pytest.approx(np.sum(1.0 - r_var[gamma > 0] / gamma[gamma > 0]), rel=1e-9)


def test_estep_validates_its_inputs():
    rng = np.random.default_rng(0)
    A = (rng.standard_normal((2, 3)), rng.standard_normal((3, 2)))
    Ah = tuple(np.ascontiguousarray(a.T) for a in A)
    g = (np.ones(3), np.ones(2))
    y = np.ones(6)
    kron_estep(A, Ah, g, y, 1.0)
    with pytest.raises(TypeError, match="tuple"):
        kron_estep(list(A), Ah, g, y, 1.0)
    with pytest.raises(ValueError, match="factors_h\\[1\\]"):
        kron_estep(A, (Ah[0], Ah[0]), g, y, 1.0)
    with pytest.raises(ValueError, match="C-contiguous"):
        kron_estep(A, (A[0].T, Ah[1]), g, y, 1.0)
    with pytest.raises(ValueError, match="y"):
        kron_estep(A, Ah, g, np.ones(5), 1.0)
    with pytest.raises(TypeError, match="y"):
        kron_estep(A, Ah, g, np.ones(6, dtype=complex), 1.0)
    with pytest.raises(ValueError, match="noise_var"):
        kron_estep(A, Ah, g, y, -1.0)
    with pytest.raises(ValueError, match="gammas"):
        kron_estep(A, Ah, (np.ones(3), -np.ones(2)), y, 1.0)
    with pytest.raises(ValueError, match=">= 2"):
        kron_estep(A[:1], Ah[:1], g[:1], np.ones(2), 1.0)


# ----------------------------------------------------------------------------------------------------
# _sym_eig_kernel (small symmetric eigensolver) against LAPACK
# ----------------------------------------------------------------------------------------------------


def _sym_cases():
    rng = np.random.default_rng(7)
    cases = []
    for n in (1, 2, 3, 8, 12, 15, 17):
        A = rng.standard_normal((n, 15))
        cases.append((f"gram{n}", (A * rng.uniform(0.0, 2.0, 15)) @ A.T))
        B = rng.standard_normal((n, n))
        cases.append((f"indefinite{n}", B + B.T))
    A = rng.standard_normal((12, 3))
    cases.append(("rank3", A @ A.T))  # nine zero eigenvalues
    cases.append(("zero", np.zeros((5, 5))))
    cases.append(("diagonal", np.diag([3.0, -1.0, 3.0, 0.5])))  # already tridiagonal, repeated eigenvalue
    cases.append(("identity", np.eye(6)))
    Q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    cases.append(("clustered", (Q * np.array([1.0, 1.0 + 1e-13, 2.0, 2.0, 2.0, 5.0, 5.0 + 1e-9, 7.0])) @ Q.T))
    C = rng.standard_normal((6, 6))
    cases.append(("tiny", 1e-200 * (C @ C.T)))
    cases.append(("huge", 1e200 * (C @ C.T)))
    T = np.diag(rng.uniform(1, 2, 7)) + np.diag(np.full(6, 1e-20), 1) + np.diag(np.full(6, 1e-20), -1)
    cases.append(("split", T))
    return cases


@pytest.mark.parametrize("name, G", _sym_cases(), ids=[c[0] for c in _sym_cases()])
def test_sym_eig_matches_lapack(name, G):
    p, U = _sym_eig_kernel(np.ascontiguousarray(G))
    n = G.shape[0]
    r_p = np.linalg.eigvalsh(G)
    scale = float(np.max(np.abs(r_p))) if np.any(r_p) else 1.0
    assert p.shape == (n,) and U.shape == (n, n)
    assert np.all(np.diff(p) >= 0.0)  # ascending
    np.testing.assert_allclose(p, r_p, rtol=0, atol=1e-13 * scale)
    np.testing.assert_allclose(U.T @ U, np.eye(n), atol=1e-13)
    np.testing.assert_allclose((U * p) @ U.T, G, rtol=0, atol=1e-13 * scale)
    # An eigenvector of a simple eigenvalue agrees with LAPACK's up to sign.
    r_p_full, r_U = np.linalg.eigh(G)
    for j in range(n):
        if np.all(np.abs(np.delete(r_p_full, j) - r_p_full[j]) > 1e-6 * scale):
            assert abs(U[:, j] @ r_U[:, j]) == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("name, G", _sym_cases(), ids=[c[0] for c in _sym_cases()])
def test_sym_top_eigvec_matches_lapack(name, G):
    u = _sym_top_eigvec_kernel(np.ascontiguousarray(G))
    r_p, r_U = np.linalg.eigh(G)
    scale = float(np.max(np.abs(r_p))) if np.any(r_p) else 1.0
    assert u.shape == (G.shape[0],)
    assert np.linalg.norm(u) == pytest.approx(1.0, abs=1e-14)
    np.testing.assert_allclose(G @ u, r_p[-1] * u, rtol=0, atol=1e-13 * scale)  # an eigenvector of the top one
    if G.shape[0] == 1 or r_p[-1] - r_p[-2] > 1e-6 * scale:
        assert abs(u @ r_U[:, -1]) == pytest.approx(1.0, abs=1e-10)


def test_sym_eig_reads_the_lower_triangle_and_rejects_non_finite():
    rng = np.random.default_rng(3)
    B = rng.standard_normal((5, 5))
    G = B + B.T
    lower = np.tril(G) + np.triu(np.full((5, 5), 99.0), 1)
    np.testing.assert_allclose(_sym_eig_kernel(lower)[0], np.linalg.eigvalsh(G), atol=1e-13)
    u = _sym_top_eigvec_kernel(lower)
    assert abs(u @ np.linalg.eigh(G)[1][:, -1]) == pytest.approx(1.0, abs=1e-12)
    G[3, 1] = np.nan
    with pytest.raises(np.linalg.LinAlgError):
        _sym_eig_kernel(G)
    with pytest.raises(np.linalg.LinAlgError):
        _sym_top_eigvec_kernel(G)


# ----------------------------------------------------------------------------------------------------
# _mode_chain_trailing: the same product as _mode_chain, in the other order
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("shapes", [[(3, 5), (4, 2)], [(2, 3), (3, 3), (4, 5)], [(2, 2), (1, 3), (3, 2), (2, 4)]])
def test_mode_chains_match_the_kronecker_product(shapes, complex_):
    rng = np.random.default_rng(len(shapes) + 5 * complex_)
    rights = tuple(_draw(rng, s, complex_) for s in shapes)
    t = _draw(rng, int(np.prod([s[0] for s in shapes])), complex_)
    ref = _kron([R.T for R in rights]) @ t
    np.testing.assert_allclose(_mode_chain_trailing(rights, t), ref, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(_mode_chain(rights, t), ref, rtol=1e-13, atol=1e-13)


def test_eig_solve_log_determinant_over_a_wide_range():
    # Entries far outside the running product's range, and enough moderate ones to renormalise it often.
    rng = np.random.default_rng(11)
    p_head = np.concatenate([[1e200, 1e-200, 0.0], 10.0 ** rng.uniform(-100, 100, 40)])
    p_last = 10.0 ** rng.uniform(-3, 60, 9)
    z = rng.standard_normal(p_head.size * p_last.size)
    d, dz = np.empty(z.size), np.empty(z.size)
    logdet, *_ = kron_eig_solve(p_head, p_last, z, 1e-152, d, dz)
    r_logdet = naive.kron_eig_solve(p_head, p_last, z, 1e-152)[2]
    assert logdet == pytest.approx(r_logdet, rel=1e-13)


# ----------------------------------------------------------------------------------------------------
# kron_svd_mstep against full SVDs of the unfoldings
# ----------------------------------------------------------------------------------------------------


def _naive_svd_mstep(lam):
    """Sequential rank-one fit by np.linalg.svd: |u_1|, then the unfolding of s_1 v_1 for the next factor."""
    shape = lam.shape
    out = []
    R = lam.reshape(shape[0], -1)
    for i in range(len(shape) - 1):
        U, s, Vt = np.linalg.svd(R, full_matrices=False)
        out.append(np.abs(U[:, 0]))
        rest = s[0] * Vt[0]
        if i + 1 < len(shape) - 1:
            R = rest.reshape(shape[i + 1], -1)
        else:
            out.append(np.abs(rest))
    return out


@pytest.mark.parametrize("shape", [(4, 5), (3, 4, 5), (2, 3, 2, 4), (15, 15, 15), (1, 6, 3)])
def test_svd_mstep_matches_naive(shape):
    rng = np.random.default_rng(sum(shape))
    lam = rng.uniform(0.0, 1.0, shape) + 3.0 * _kron_outer([rng.uniform(0.5, 1.0, n) for n in shape])
    got = kron_svd_mstep(lam.reshape(-1), np.array(shape))
    ref = _naive_svd_mstep(lam)
    assert len(got) == len(shape)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-13)


def test_svd_mstep_validates_its_inputs():
    with pytest.raises(ValueError, match="shape"):
        kron_svd_mstep(np.ones(4), np.array([4]))
    with pytest.raises(ValueError, match="lam"):
        kron_svd_mstep(np.ones(5), np.array([2, 2]))
    with pytest.raises(ValueError, match="finite"):
        kron_svd_mstep(np.array([1.0, np.inf, 1.0, 1.0]), np.array([2, 2]))


def _kron_outer(vectors):
    t = vectors[0]
    for v in vectors[1:]:
        t = np.multiply.outer(t, v)
    return t


# ----------------------------------------------------------------------------------------------------
# kron_svd_em against a dense EM loop
# ----------------------------------------------------------------------------------------------------


def _naive_svd_em(factors, idx, gammas, y, s2, learn_noise, floor, ratios, max_iter, tol):
    """SVD-KroSBL EM with dense H, C and Sigma: the iteration kron_svd_em documents, written plainly."""
    idx = [np.asarray(ix) for ix in idx]
    gam = [np.asarray(g, dtype=float) for g in gammas]
    m_bar = y.size

    def estep(idx, gam, s2):
        H = _kron([A[:, ix] for A, ix in zip(factors, idx, strict=True)])
        g = _kron(gam)
        C = s2 * np.eye(m_bar) + (H * g) @ H.conj().T
        Ci_y = np.linalg.solve(C, y)
        mean = g * (H.conj().T @ Ci_y)
        var = np.maximum(g - g**2 * np.real(np.sum(H.conj() * np.linalg.solve(C, H), axis=0)), 0.0)
        lam = var + np.abs(mean) ** 2
        top = lam.max()
        resid2 = float(np.sum(np.abs(y - H @ mean) ** 2))
        well = float(np.sum(1.0 - var / g))
        logdet = np.linalg.slogdet(C)[1]
        quad = float(np.real(np.vdot(y, Ci_y)))
        return mean, var, np.maximum(lam, 1e-30 * top), top, resid2, well, logdet, quad

    mean, var, lam, top, resid2, well, *_ = estep(idx, gam, s2)
    logdets, quads = [], []
    n_iter, converged, empty = 0, False, False
    for it in range(1, max_iter + 1):
        n_iter = it
        if not top > 0:
            break
        new = _naive_svd_mstep(lam.reshape([g.size for g in gam]))
        new_s2 = max((resid2 + s2 * well) / m_bar, floor) if learn_noise else s2
        keeps, n_kept, diff, norm = naive.kron_prune_change(tuple(gam), tuple(new), ratios)
        rel, noise_rel = diff / max(norm, np.finfo(float).tiny), abs(new_s2 - s2) / s2
        idx = [ix[k] for ix, k in zip(idx, keeps, strict=True)]
        gam = [g[k] for g, k in zip(new, keeps, strict=True)]
        s2 = new_s2
        if any(g.size == 0 for g in gam):
            empty = True
            break
        mean, var, lam, top, resid2, well, logdet, quad = estep(idx, gam, s2)
        logdets.append(logdet)
        quads.append(quad)
        if rel <= tol and noise_rel <= tol:
            converged = True
            break
    return idx, gam, s2, mean, var, np.array(logdets), np.array(quads), n_iter, converged, empty


@pytest.mark.parametrize("learn_noise", [False, True], ids=["fixed", "learned"])
@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("ms, ns", [((4, 5), (6, 7)), ((3, 4, 3), (5, 4, 6))])
def test_svd_em_matches_a_dense_loop(ms, ns, complex_, learn_noise):
    rng = np.random.default_rng(sum(ms) + 3 * complex_ + 7 * learn_noise)
    factors = tuple(np.ascontiguousarray(_draw(rng, (m, n), complex_)) for m, n in zip(ms, ns, strict=True))
    supports = [rng.choice(n, 2, replace=False) for n in ns]
    x = _kron([np.isin(np.arange(n), s) * rng.uniform(1.0, 2.0, n) for n, s in zip(ns, supports, strict=True)])
    H = _kron(list(factors))
    y = H @ x + 0.05 * _draw(rng, H.shape[0], complex_)
    idx = tuple(np.arange(n) for n in ns)
    gammas = tuple(np.ones(n) for n in ns)
    args = (y, 0.01, learn_noise, 1e-8, np.full(len(ms), 1e-3), 60, 1e-6)
    got = kron_svd_em(factors, idx, gammas, *args)
    ref = _naive_svd_em(factors, idx, gammas, *args)
    g_idx, g_gam, g_s2, g_mean, g_var, g_logdets, g_quads, g_n, g_conv, g_empty = got
    r_idx, r_gam, r_s2, r_mean, r_var, r_logdets, r_quads, r_n, r_conv, r_empty = ref
    assert (g_n, g_conv, g_empty) == (r_n, r_conv, r_empty)
    assert any(ix.size < n for ix, n in zip(g_idx, ns, strict=True))  # the draw must exercise the pruning
    for a, b in zip(g_idx, r_idx, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(g_gam, r_gam, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-7)
    assert g_s2 == pytest.approx(r_s2, rel=1e-9)
    np.testing.assert_allclose(g_mean, r_mean, rtol=1e-7, atol=1e-9 * np.abs(r_mean).max())
    np.testing.assert_allclose(g_var, r_var, rtol=1e-7, atol=1e-9 * np.abs(r_var).max())
    np.testing.assert_allclose(g_logdets, r_logdets, rtol=1e-7, atol=1e-7)  # dense slogdet of an ill-conditioned C
    np.testing.assert_allclose(g_quads, r_quads, rtol=1e-7)


def test_svd_em_reports_an_emptied_factor():
    # A factor whose variances come out all zero (here y = 0 gives Λ = Σ only, and a zero column) ends EM.
    rng = np.random.default_rng(2)
    factors = (rng.standard_normal((3, 4)), np.zeros((2, 3)))
    idx = (np.arange(4), np.arange(3))
    out = kron_svd_em(factors, idx, (np.ones(4), np.ones(3)), np.zeros(6), 1.0, False, 0.0, np.zeros(2), 5, 1e-6)
    ref = _naive_svd_em(factors, idx, (np.ones(4), np.ones(3)), np.zeros(6), 1.0, False, 0.0, np.zeros(2), 5, 1e-6)
    assert out[7:] == ref[7:]


def test_svd_em_validates_its_inputs():
    rng = np.random.default_rng(0)
    A = (rng.standard_normal((2, 3)), rng.standard_normal((3, 2)))
    idx = (np.arange(3), np.arange(2))
    g = (np.ones(3), np.ones(2))
    y = np.ones(6)
    rest = (1.0, False, 0.0, np.zeros(2), 10, 1e-4)
    kron_svd_em(A, idx, g, y, *rest)
    with pytest.raises(TypeError, match="tuple"):
        kron_svd_em(list(A), idx, g, y, *rest)
    with pytest.raises(ValueError, match="idx\\[0\\]"):
        kron_svd_em(A, (np.array([0, 0, 1]), idx[1]), g, y, *rest)
    with pytest.raises(ValueError, match="idx\\[1\\]"):
        kron_svd_em(A, (idx[0], np.array([0, 2])), g, y, *rest)
    with pytest.raises(ValueError, match="gammas\\[0\\]"):
        kron_svd_em(A, idx, (np.ones(2), g[1]), y, *rest)
    with pytest.raises(ValueError, match="gammas"):
        kron_svd_em(A, idx, (-np.ones(3), g[1]), y, *rest)
    with pytest.raises(TypeError, match="y"):
        kron_svd_em(A, idx, g, y.astype(complex), *rest)
    with pytest.raises(ValueError, match="noise_var"):
        kron_svd_em(A, idx, g, y, 0.0, *rest[1:])
    with pytest.raises(ValueError, match="ratios"):
        kron_svd_em(A, idx, g, y, 1.0, False, 0.0, np.ones(2), 10, 1e-4)
    with pytest.raises(ValueError, match="max_iter"):
        kron_svd_em(A, idx, g, y, 1.0, False, 0.0, np.zeros(2), 0, 1e-4)
    with pytest.raises(ValueError, match="tol"):
        kron_svd_em(A, idx, g, y, 1.0, False, 0.0, np.zeros(2), 10, -1.0)
