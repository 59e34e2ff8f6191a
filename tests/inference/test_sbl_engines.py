"""SBL engines against dense float64 formulas and against each other.

The references here form C = σ²I + ΦΓΦᴴ (or the d×d precision) explicitly and invert it: slow, but with no
shared code with the engines.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from probsparse.datasets import make_sparse_regression
from probsparse.inference.sbl import (
    ENGINES,
    SBLPosterior,
    fit_em,
    fit_mackay,
    fit_tipping_faul,
    log_evidence,
    posterior_given_gamma,
)
from probsparse.kernels import ACTION_ADD, ACTION_DELETE, ACTION_NONE, ACTION_REESTIMATE, select_action

# ----------------------------------------------------------------------------------------------------
# Dense references
# ----------------------------------------------------------------------------------------------------


def _as2d(Y):
    return Y[:, None] if Y.ndim == 1 else Y


def dense_marginal_cov(Phi, gamma, s2):
    return s2 * np.eye(Phi.shape[0]) + (Phi * gamma) @ Phi.conj().T


def dense_log_evidence(Phi, Y, gamma, s2):
    Y2 = _as2d(Y)
    n, L = Y2.shape
    C = dense_marginal_cov(Phi, gamma, s2)
    _, logdet = np.linalg.slogdet(C)
    quad = float(np.real(np.trace(Y2.conj().T @ np.linalg.solve(C, Y2))))
    if np.iscomplexobj(Phi) or np.iscomplexobj(Y2):
        return -n * L * math.log(math.pi) - L * logdet - quad
    return -0.5 * (n * L * math.log(2 * math.pi) + L * logdet + quad)


def dense_posterior(Phi, Y, gamma, s2):
    """Σ = (ΦᴴΦ/σ² + Γ⁻¹)⁻¹ and μ = ΣΦᴴY/σ² over the active columns, by explicit inversion."""
    idx = np.flatnonzero(gamma > 0)
    Pa = Phi[:, idx]
    cov = np.linalg.inv(Pa.conj().T @ Pa / s2 + np.diag(1.0 / gamma[idx]))
    mean = cov @ Pa.conj().T @ Y / s2
    return mean, cov


def dense_s_q(Phi, Y2, gamma, s2):
    """In-model factors S_i = φᵢᴴC⁻¹φᵢ and Q_i = φᵢᴴC⁻¹Y for every column."""
    Ci = np.linalg.inv(dense_marginal_cov(Phi, gamma, s2))
    S = np.real(np.einsum("ki,kl,li->i", Phi.conj(), Ci, Phi))
    Q = Phi.conj().T @ Ci @ Y2
    return S, Q


def dense_coordinate_sbl(Phi, Y, s2, *, max_sweeps=3000, tol=1e-13):
    """Slow reference: cyclic α_i = s_i²/θ_i (or α_i = ∞), each from a freshly inverted C without basis i."""
    Y2 = _as2d(Y)
    L = Y2.shape[1]
    d = Phi.shape[1]
    gamma = np.zeros(d)
    for _ in range(max_sweeps):
        old = gamma.copy()
        for i in range(d):
            gamma[i] = 0.0
            Ci = np.linalg.inv(dense_marginal_cov(Phi, gamma, s2))
            phi = Phi[:, i]
            s = float(np.real(phi.conj() @ Ci @ phi))
            q = phi.conj() @ Ci @ Y2
            theta = float(np.sum(np.abs(q) ** 2)) / L - s
            gamma[i] = theta / s**2 if theta > 0 else 0.0
        if np.max(np.abs(gamma - old)) <= tol * gamma.max():
            return gamma
    raise AssertionError("dense reference did not converge")


def complex_problem(n, d, k, s2, seed, n_targets=None):
    rng = np.random.default_rng(seed)
    Phi = (rng.standard_normal((n, d)) + 1j * rng.standard_normal((n, d))) / np.sqrt(2 * n)
    support = np.zeros(d, dtype=bool)
    support[rng.choice(d, k, replace=False)] = True
    shape = (k,) if n_targets is None else (k, n_targets)
    W = np.zeros((d,) + shape[1:], dtype=complex)
    W[support] = rng.uniform(1, 2, shape) * np.exp(2j * np.pi * rng.uniform(size=shape))
    noise_shape = (n,) + shape[1:]
    noise = (rng.standard_normal(noise_shape) + 1j * rng.standard_normal(noise_shape)) * np.sqrt(s2 / 2)
    return Phi, Phi @ W + noise, W, support


def real_problem(n, d, k, seed, n_targets=1, snr_db=20.0):
    p = make_sparse_regression(n, d, k, snr_db, seed=seed)
    if n_targets == 1:
        return p.X, p.y, p.coef, p.support, p.noise_var
    rng = np.random.default_rng(seed + 100)
    W = np.zeros((d, n_targets))
    W[p.support] = rng.uniform(1, 2, (k, n_targets)) * rng.choice([-1, 1], (k, n_targets))
    Y = p.X @ W + np.sqrt(p.noise_var) * rng.standard_normal((n, n_targets))
    return p.X, Y, W, p.support, p.noise_var


def gammas_for(d, m, seed):
    rng = np.random.default_rng(seed)
    gamma = np.zeros(d)
    gamma[rng.choice(d, m, replace=False)] = rng.uniform(0.05, 3.0, m)
    return gamma


# ----------------------------------------------------------------------------------------------------
# Fixed γ: posterior and evidence
# ----------------------------------------------------------------------------------------------------

# (n, d, m active): m <= n uses the (m, m) form, m > n the Woodbury (n, n) form.
SHAPES = [(25, 40, 8), (10, 40, 30), (12, 12, 12)]


@pytest.mark.parametrize("n, d, m", SHAPES)
@pytest.mark.parametrize("kind", ["real", "real_mmv", "complex", "complex_mmv"])
def test_posterior_given_gamma_matches_dense(n, d, m, kind):
    rng = np.random.default_rng(n * 100 + m)
    L = 3 if kind.endswith("mmv") else None
    shape_y = (n,) if L is None else (n, L)
    if kind.startswith("complex"):
        Phi = rng.standard_normal((n, d)) + 1j * rng.standard_normal((n, d))
        Y = rng.standard_normal(shape_y) + 1j * rng.standard_normal(shape_y)
    else:
        Phi = rng.standard_normal((n, d))
        Y = rng.standard_normal(shape_y)
    gamma = gammas_for(d, m, seed=m)
    s2 = 0.3
    mean, cov = posterior_given_gamma(Phi, Y, gamma, s2)
    ref_mean, ref_cov = dense_posterior(Phi, Y, gamma, s2)
    assert mean.shape == ref_mean.shape and cov.shape == (m, m)
    np.testing.assert_allclose(cov, ref_cov, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("n, d, m", SHAPES + [(15, 30, 0)])
def test_log_evidence_matches_scipy_multivariate_normal(n, d, m):
    rng = np.random.default_rng(7 + m)
    Phi = rng.standard_normal((n, d))
    Y = rng.standard_normal((n, 2))
    gamma = gammas_for(d, m, seed=3)
    s2 = 0.7
    C = dense_marginal_cov(Phi, gamma, s2)
    ref = sum(stats.multivariate_normal(np.zeros(n), C).logpdf(Y[:, l]) for l in range(2))
    assert log_evidence(Phi, Y, gamma, s2) == pytest.approx(ref, rel=1e-11, abs=1e-9)
    assert log_evidence(Phi, Y[:, 0], gamma, s2) == pytest.approx(
        stats.multivariate_normal(np.zeros(n), C).logpdf(Y[:, 0]), rel=1e-11, abs=1e-9
    )


@pytest.mark.parametrize("n, d, m", SHAPES)
def test_log_evidence_complex_matches_dense_formula(n, d, m):
    rng = np.random.default_rng(11 + m)
    Phi = rng.standard_normal((n, d)) + 1j * rng.standard_normal((n, d))
    Y = rng.standard_normal((n, 3)) + 1j * rng.standard_normal((n, 3))
    gamma = gammas_for(d, m, seed=5)
    # −nL log π − L log|C| − tr(YᴴC⁻¹Y), written out independently of the helper above.
    C = dense_marginal_cov(Phi, gamma, 0.2)
    ref = (
        -n * 3 * np.log(np.pi)
        - 3 * np.log(np.linalg.det(C).real)
        - np.real(np.trace(Y.conj().T @ np.linalg.inv(C) @ Y))
    )
    assert log_evidence(Phi, Y, gamma, 0.2) == pytest.approx(ref, rel=1e-10)


def test_tiny_gamma_is_well_conditioned():
    rng = np.random.default_rng(0)
    Phi = rng.standard_normal((30, 10))
    gamma = np.logspace(-14, 1, 10)
    mean, cov = posterior_given_gamma(Phi, rng.standard_normal(30), gamma, 0.5)
    assert np.all(np.isfinite(mean)) and np.all(np.linalg.eigvalsh(cov) > 0)
    assert np.allclose(np.diag(cov)[:3], gamma[:3], rtol=1e-9)  # prior-dominated weights keep their prior


# ----------------------------------------------------------------------------------------------------
# ΔL formulas of the sequential algorithm against exact evidence differences
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, L", [("real", 1), ("real", 3), ("complex", 1), ("complex", 2)])
def test_delta_likelihoods_equal_exact_evidence_differences(kind, L):
    rng = np.random.default_rng(L + (10 if kind == "complex" else 0))
    n, d = 25, 18
    if kind == "complex":
        Phi = (rng.standard_normal((n, d)) + 1j * rng.standard_normal((n, d))) / np.sqrt(2 * n)
        W = np.zeros((d, L), dtype=complex)
        W[:4] = rng.standard_normal((4, L)) + 1j * rng.standard_normal((4, L))
        Y = Phi @ W + 0.2 * (rng.standard_normal((n, L)) + 1j * rng.standard_normal((n, L)))
    else:
        Phi = rng.standard_normal((n, d)) / np.sqrt(n)
        W = np.zeros((d, L))
        W[:4] = rng.standard_normal((4, L))
        Y = Phi @ W + 0.2 * rng.standard_normal((n, L))
    s2 = 0.04
    gamma = np.zeros(d)
    # Relevant (0-3), tiny (5, 9) and irrelevant with large variances (12-15, mostly to be deleted).
    gamma[[0, 1, 2, 3, 5, 9, 12, 13, 14, 15]] = [2.0, 0.5, 1.0, 1.5, 0.3, 1e-3, 4.0, 5.0, 3.0, 2.0]
    S, Q = dense_s_q(Phi, Y, gamma, s2)
    Q2 = np.sum(np.abs(Q) ** 2, axis=1)
    active = gamma > 0
    alpha = np.where(active, 1.0 / np.where(active, gamma, 1.0), np.inf)
    res = select_action(S, Q2, alpha, active, ~active, n_targets=L, complex_data=(kind == "complex"))
    base = log_evidence(Phi, Y, gamma, s2)
    a = np.where(active, alpha, 1.0)  # a finite stand-in where the basis is out
    s = np.where(active, a * S / (a - S), S)
    q2 = np.where(active, a**2 * Q2 / (a - S) ** 2, Q2)
    theta = q2 / L - s
    seen = set()
    for i in range(d):
        k = int(res.kinds[i])
        if k == ACTION_NONE:
            assert not active[i] and theta[i] <= 0
            continue
        seen.add(k)
        new = gamma.copy()
        new[i] = 0.0 if k == ACTION_DELETE else theta[i] / s[i] ** 2
        exact = log_evidence(Phi, Y, new, s2) - base
        assert res.deltas[i] == pytest.approx(exact, rel=1e-7, abs=1e-9), (i, k)
    assert seen == {ACTION_ADD, ACTION_REESTIMATE, ACTION_DELETE}


# ----------------------------------------------------------------------------------------------------
# The three engines reach the same optimum
# ----------------------------------------------------------------------------------------------------


def _support(post, rel=1e-3):
    return set(np.flatnonzero(post.gamma > rel * post.gamma.max()).tolist())


@pytest.mark.parametrize("seed", [0, 1])
def test_em_mackay_and_tipping_faul_reach_the_same_evidence_optimum(seed):
    X, y, _, support, s2 = real_problem(40, 60, 5, seed)
    tf = fit_tipping_faul(X, y, noise_var=s2, tol=1e-10)
    mk = fit_mackay(X, y, noise_var=s2, tol=1e-10, max_iter=5000)
    em = fit_em(X, y, noise_var=s2, tol=1e-12, max_iter=4000)
    assert tf.converged and mk.converged
    assert mk.log_evidence[-1] == pytest.approx(tf.log_evidence[-1], abs=1e-6)
    # EM approaches the optimum only like 1/t near sparse solutions: close, from below.
    assert tf.log_evidence[-1] - 0.02 < em.log_evidence[-1] <= tf.log_evidence[-1] + 1e-6
    assert _support(tf) == _support(mk) == _support(em)
    assert set(np.flatnonzero(support)) <= _support(tf)
    np.testing.assert_allclose(mk.gamma, tf.gamma, rtol=1e-3, atol=1e-4 * tf.gamma.max())
    # The returned traces are the exact evidence at the returned state.
    for post in (tf, mk, em):
        assert post.log_evidence[-1] == pytest.approx(log_evidence(X, y, post.gamma, s2), rel=1e-9)


@pytest.mark.parametrize("kind, L", [("real", 1), ("real", 3), ("complex", 1)])
def test_tipping_faul_equals_slow_dense_coordinate_ascent(kind, L):
    if kind == "complex":
        X, Y, _, _ = complex_problem(30, 16, 4, 0.05, seed=2, n_targets=None if L == 1 else L)
        s2 = 0.05
    else:
        X, Y, _, _, s2 = real_problem(30, 16, 4, seed=3, n_targets=L, snr_db=15.0)
    ref = dense_coordinate_sbl(X, Y, s2)
    # tol bounds the gain of the last move (tol * n * L nats), and that gain is quadratic in the change of
    # log(alpha): a tiny tol is needed to converge gamma to ~1e-7.
    tf = fit_tipping_faul(X, Y, noise_var=s2, tol=1e-15)
    assert tf.converged
    np.testing.assert_array_equal(tf.active, ref > 0)
    np.testing.assert_allclose(tf.gamma, ref, rtol=1e-5, atol=1e-12)
    ref_mean, ref_cov = dense_posterior(X, Y, ref, s2)
    np.testing.assert_allclose(tf.coef[ref > 0], ref_mean, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(tf.cov, ref_cov, rtol=1e-5, atol=1e-10)
    assert tf.log_evidence[-1] == pytest.approx(dense_log_evidence(X, Y, ref, s2), abs=1e-7)


# ----------------------------------------------------------------------------------------------------
# Tipping–Faul: monotone trace, MMV, complex, degenerate designs
# ----------------------------------------------------------------------------------------------------


def _assert_non_decreasing(trace):
    assert np.all(np.diff(trace) >= -1e-10 * max(1.0, np.abs(trace).max())), np.diff(trace).min()


@pytest.mark.parametrize("kind", ["real", "complex", "mmv"])
@pytest.mark.parametrize("learn_noise", [False, True])
def test_tipping_faul_evidence_never_decreases(kind, learn_noise):
    if kind == "complex":
        X, Y, _, _ = complex_problem(50, 120, 6, 0.01, seed=4)
        s2 = 0.01
    else:
        X, Y, _, _, s2 = real_problem(50, 120, 6, seed=4, n_targets=3 if kind == "mmv" else 1)
    post = fit_tipping_faul(X, Y, noise_var=None if learn_noise else s2)
    assert post.n_iter == post.log_evidence.size > 5
    _assert_non_decreasing(post.log_evidence)
    assert post.log_evidence[-1] == pytest.approx(log_evidence(X, Y, post.gamma, post.noise_var), rel=1e-8)


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("learn_noise", [False, True])
def test_one_column_mmv_equals_single_vector_exactly(engine, learn_noise):
    X, y, _, _, s2 = real_problem(40, 50, 4, seed=6)
    kwargs = {"noise_var": None if learn_noise else s2, "max_iter": 300}
    one = ENGINES[engine](X, y, **kwargs)
    two = ENGINES[engine](X, y[:, None], **kwargs)
    assert one.coef.shape == (50,) and two.coef.shape == (50, 1)
    np.testing.assert_array_equal(one.coef, two.coef[:, 0])
    np.testing.assert_array_equal(one.gamma, two.gamma)
    np.testing.assert_array_equal(one.cov, two.cov)
    np.testing.assert_array_equal(one.log_evidence, two.log_evidence)
    assert one.noise_var == two.noise_var


def test_mmv_recovers_a_shared_support():
    X, Y, W, support, s2 = real_problem(60, 150, 6, seed=8, n_targets=4)
    post = fit_tipping_faul(X, Y, noise_var=s2)
    assert post.coef.shape == (150, 4)
    assert post.active[support].all()
    np.testing.assert_allclose(post.coef[support], W[support], atol=0.2)
    # Bases that fit the noise may stay in the model (see the engine's notes), with small weights.
    assert np.abs(post.coef[~support]).max() < 0.25


@pytest.mark.parametrize("learn_noise", [False, True])
def test_complex_data_recovers_a_complex_sparse_signal(learn_noise):
    X, y, w, support = complex_problem(96, 128, 6, 1e-3, seed=9)
    post = fit_tipping_faul(X, y, noise_var=None if learn_noise else 1e-3)
    assert np.iscomplexobj(post.coef)
    top = np.argsort(np.abs(post.coef))[-6:]
    assert set(top.tolist()) == set(np.flatnonzero(support).tolist())
    nmse = np.sum(np.abs(post.coef - w) ** 2) / np.sum(np.abs(w) ** 2)
    assert nmse < 1e-2
    assert np.allclose(post.cov, post.cov.conj().T)


def test_duplicated_column_gets_weight_on_one_copy_only():
    X, y, w, support, s2 = real_problem(60, 30, 3, seed=5)
    j = int(np.flatnonzero(support)[0])
    X_dup = np.hstack([X, X[:, [j]]])
    post = fit_tipping_faul(X_dup, y, noise_var=s2)
    assert post.active[j] != post.active[-1]
    assert post.coef[j] + post.coef[-1] == pytest.approx(w[j], abs=0.2)
    for engine in (fit_em, fit_mackay):  # the fixed-point engines split it, but must not fail
        other = engine(X_dup, y, noise_var=s2, max_iter=200)
        assert np.all(np.isfinite(other.coef)) and np.all(np.isfinite(other.cov))
        assert other.coef[j] + other.coef[-1] == pytest.approx(w[j], abs=0.2)


def test_scaled_duplicate_is_also_blocked():
    X, y, _, support, s2 = real_problem(60, 30, 3, seed=5)
    j = int(np.flatnonzero(support)[0])
    post = fit_tipping_faul(np.hstack([X, -3.0 * X[:, [j]]]), y, noise_var=s2)
    assert post.active[j] != post.active[-1]


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_zero_columns_are_never_used(engine):
    X, y, _, _, s2 = real_problem(40, 20, 3, seed=2)
    X = X.copy()
    X[:, [4, 11]] = 0.0
    post = ENGINES[engine](X, y, noise_var=s2, max_iter=300)
    assert not post.active[[4, 11]].any()
    assert np.all(post.coef[[4, 11]] == 0) and np.all(post.gamma[[4, 11]] == 0)
    assert np.all(np.isfinite(post.coef))


def test_all_zero_design_gives_the_empty_model():
    post = fit_tipping_faul(np.zeros((10, 4)), np.arange(10.0), noise_var=1.0)
    assert post.n_active == 0 and post.converged and post.cov.shape == (0, 0)
    assert np.all(post.coef == 0)


def test_alignment_test_can_be_switched_off_without_crashing():
    X, y, _, _, s2 = real_problem(40, 25, 3, seed=1)
    X_near = np.hstack([X, X[:, :1] + 1e-4 * np.random.default_rng(0).standard_normal((40, 1))])
    on = fit_tipping_faul(X_near, y, noise_var=s2)
    off = fit_tipping_faul(X_near, y, noise_var=s2, alignment_tol=0.0)
    assert not (on.active[0] and on.active[-1])
    assert np.all(np.isfinite(off.coef))
    _assert_non_decreasing(off.log_evidence)


# ----------------------------------------------------------------------------------------------------
# Learned noise
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_learned_noise_is_recovered(engine):
    X, y, _, _, s2 = real_problem(500, 100, 10, seed=3)
    post = ENGINES[engine](X, y)
    assert post.converged
    assert post.noise_var == pytest.approx(s2, rel=0.2)


@pytest.mark.parametrize("engine", ["em", "tipping_faul"])
def test_learned_noise_trace_never_decreases_for_ascent_engines(engine):
    X, y, _, _, _ = real_problem(80, 40, 4, seed=12)
    _assert_non_decreasing(ENGINES[engine](X, y).log_evidence)


# ----------------------------------------------------------------------------------------------------
# Result object and input validation
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_result_fields_and_predict(engine):
    X, y, _, _, s2 = real_problem(50, 30, 3, seed=4)
    post = ENGINES[engine](X, y, noise_var=s2)
    assert isinstance(post, SBLPosterior) and post.engine == engine
    m = post.n_active
    assert m == np.count_nonzero(post.active) and post.cov.shape == (m, m)
    assert np.all(post.coef[~post.active] == 0) and np.all(post.gamma[~post.active] == 0)
    assert np.all(post.gamma[post.active] > 0)
    assert post.noise_var == s2 and post.log_evidence.shape == (post.n_iter,)
    mean, cov = posterior_given_gamma(X, y, post.gamma, s2)
    np.testing.assert_allclose(post.coef[post.active], mean, rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(post.cov, cov, rtol=1e-6, atol=1e-10)
    X_new = np.random.default_rng(0).standard_normal((7, 30))
    y_mean, y_std = post.predict(X_new, return_std=True)
    Xa = X_new[:, post.active]
    np.testing.assert_allclose(y_mean, Xa @ mean)
    np.testing.assert_allclose(y_std, np.sqrt(s2 + np.einsum("ij,jk,ik->i", Xa, cov, Xa)))
    np.testing.assert_allclose(post.predict(X_new), y_mean)


def test_predict_std_complex_uses_the_hermitian_form():
    X, y, _, _ = complex_problem(40, 30, 3, 0.01, seed=1)
    post = fit_tipping_faul(X, y, noise_var=0.01)
    Xn = X[:5]
    _, std = post.predict(Xn, return_std=True)
    Xa = Xn[:, post.active]
    ref = np.sqrt(0.01 + np.real(np.einsum("ij,jk,ik->i", Xa, post.cov, Xa.conj())))
    np.testing.assert_allclose(std, ref)


def test_engines_registry():
    assert ENGINES == {"em": fit_em, "mackay": fit_mackay, "tipping_faul": fit_tipping_faul}


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize(
    "Phi, Y, kwargs, error",
    [
        (np.ones(5), np.ones(5), {}, ValueError),
        (np.ones((5, 3)), np.ones(4), {}, ValueError),
        (np.full((5, 3), np.nan), np.ones(5), {}, ValueError),
        (np.ones((5, 3)), np.ones(5), {"noise_var": 0.0}, ValueError),
        (np.ones((5, 3)), np.ones(5), {"noise_var": -1.0}, ValueError),
        (np.ones((5, 3)), np.ones(5), {"noise_var": np.inf}, ValueError),
        (np.ones((5, 3)), np.ones(5), {"noise_var": "0.1"}, TypeError),
        (np.ones((5, 3)), np.ones(5), {"max_iter": 0}, ValueError),
        (np.ones((5, 3)), np.ones(5), {"tol": -1.0}, ValueError),
    ],
)
def test_bad_input_raises(engine, Phi, Y, kwargs, error):
    with pytest.raises(error):
        ENGINES[engine](Phi, Y, **kwargs)


def test_bad_fixed_gamma_inputs_raise():
    X = np.ones((5, 3))
    with pytest.raises(ValueError, match="gamma"):
        log_evidence(X, np.ones(5), np.ones(4), 1.0)
    with pytest.raises(ValueError, match="gamma"):
        posterior_given_gamma(X, np.ones(5), np.array([1.0, -1.0, 0.0]), 1.0)
    with pytest.raises(ValueError, match="noise_var"):
        log_evidence(X, np.ones(5), np.ones(3), 0.0)
    with pytest.raises(ValueError, match="gamma_init"):
        fit_em(X, np.ones(5), gamma_init=np.ones(2))
    with pytest.raises(ValueError, match="alignment_tol"):
        fit_tipping_faul(X, np.ones(5), alignment_tol=1.0)
    with pytest.raises(TypeError, match="callback"):
        fit_tipping_faul(X, np.ones(5), callback=3)


def test_callback_sees_every_iteration_and_can_stop():
    X, y, _, _, s2 = real_problem(40, 30, 3, seed=0)
    seen = []
    post = fit_tipping_faul(X, y, noise_var=s2, callback=lambda info: seen.append(info) or len(seen) == 3)
    assert len(seen) == 3 == post.n_iter and not post.converged
    assert [s["iteration"] for s in seen] == [1, 2, 3]
    assert seen[0]["action"] == "add" and seen[0]["n_active"] == 1
    assert [s["log_evidence"] for s in seen] == post.log_evidence.tolist()


# ----------------------------------------------------------------------------------------------------
# Tipping–Faul with a penalty on the number of active bases
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["real", "complex", "mmv"])
@pytest.mark.parametrize("learn_noise", [False, True])
def test_penalised_objective_never_decreases(kind, learn_noise):
    if kind == "complex":
        X, Y, _, _ = complex_problem(50, 120, 6, 0.01, seed=4)
        s2 = 0.01
    else:
        X, Y, _, _, s2 = real_problem(50, 120, 6, seed=4, n_targets=3 if kind == "mmv" else 1)
    objective, active = [], []
    post = fit_tipping_faul(
        X, Y, noise_var=None if learn_noise else s2, size_penalty=2.0,
        callback=lambda info: objective.append(info["objective"]) or active.append(info["n_active"]),
    )
    _assert_non_decreasing(np.array(objective))
    assert np.allclose(np.array(objective), post.log_evidence - 2.0 * np.array(active))


def test_zero_penalty_is_plain_tipping_faul():
    X, y, _, _, s2 = real_problem(40, 90, 5, seed=7)
    plain = fit_tipping_faul(X, y, noise_var=s2)
    zero = fit_tipping_faul(X, y, noise_var=s2, size_penalty=0.0)
    assert np.array_equal(plain.active, zero.active) and np.array_equal(plain.gamma, zero.gamma)


@pytest.mark.parametrize("learn_noise", [False, True])
def test_ric_penalty_recovers_the_support_where_the_evidence_alone_overfits(learn_noise):
    # d > n with noise: the plain evidence optimum keeps many noise-fitting bases (and, with learned noise,
    # drives sigma^2 to its floor); the log(d) penalty keeps exactly the true support.
    X, y, w, support, s2 = real_problem(120, 250, 6, seed=4, snr_db=25.0)
    noise_var = None if learn_noise else s2
    plain = fit_tipping_faul(X, y, noise_var=noise_var)
    ric = fit_tipping_faul(X, y, noise_var=noise_var, size_penalty="ric")
    assert plain.n_active > 2 * support.sum()
    assert ric.active[support].all() and np.sum(ric.active & ~support) <= 1
    assert np.linalg.norm(ric.coef - w) < np.linalg.norm(plain.coef - w)
    assert ric.noise_var == pytest.approx(s2, rel=0.3)


def test_named_penalties_and_bad_values():
    X, y, _, _, s2 = real_problem(30, 60, 3, seed=1)
    values = {}
    for name in ("ric", "bic"):
        fit_tipping_faul(
            X, y, noise_var=s2, size_penalty=name, max_iter=1,
            callback=lambda info, name=name: values.setdefault(name, info["log_evidence"] - info["objective"]),
        )
    assert values["ric"] == pytest.approx(math.log(60) * 1)
    assert values["bic"] == pytest.approx(0.5 * math.log(30) * 1)
    with pytest.raises(ValueError, match="size_penalty"):
        fit_tipping_faul(X, y, size_penalty=-1.0)
    with pytest.raises(ValueError, match="size_penalty"):
        fit_tipping_faul(X, y, size_penalty="aic")
    with pytest.raises(TypeError, match="size_penalty"):
        fit_tipping_faul(X, y, size_penalty=None)
