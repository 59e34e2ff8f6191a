import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import ARDRegression
from sklearn.utils.estimator_checks import parametrize_with_checks

from probsparse.datasets import make_sparse_regression
from probsparse.models import RVMRegressor, SBLRegressor

ENGINES = ["tipping_faul", "em", "mackay"]


def _expected_failed_checks(estimator):
    return {}


@parametrize_with_checks(
    [
        SBLRegressor(),
        SBLRegressor(engine="mackay"),
        SBLRegressor(engine="em", noise_var=0.5, tol=1e-3),
        RVMRegressor(),
        RVMRegressor(kernel="linear", fit_intercept=False),
    ],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_contract(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def problem():
    return make_sparse_regression(120, 250, 6, 25.0, seed=4)


@pytest.mark.parametrize("engine", ENGINES)
def test_recovers_support_with_known_noise(problem, engine):
    kwargs = {"size_penalty": 0.0} if engine == "tipping_faul" else {}
    model = SBLRegressor(engine=engine, noise_var=problem.noise_var, fit_intercept=False, **kwargs)
    model.fit(problem.X, problem.y)
    # The evidence optimum also keeps some bases that fit the noise (each raises the evidence when its
    # squared normalised correlation with the residual exceeds one), but with tiny weights.
    assert model.active_[problem.support].all()
    assert np.allclose(model.coef_[problem.support], problem.coef[problem.support], atol=0.2)
    assert np.abs(model.coef_[~problem.support]).max() < 0.1
    assert np.all(model.coef_[~model.active_] == 0)
    assert np.isinf(model.lambda_[~model.active_]).all()
    assert model.noise_variance_ == problem.noise_var


@pytest.mark.parametrize("engine", ENGINES)
def test_posterior_is_the_closed_form_at_the_fitted_gamma(problem, engine):
    model = SBLRegressor(engine=engine, fit_intercept=False).fit(problem.X, problem.y)
    A = model.active_
    Phi = problem.X[:, A]
    s2 = model.noise_variance_
    cov = np.linalg.inv(Phi.T @ Phi / s2 + np.diag(1.0 / model.gamma_[A]))
    mean = cov @ Phi.T @ problem.y / s2
    assert np.allclose(model.sigma_, cov, rtol=1e-6, atol=1e-10)
    assert np.allclose(model.coef_[A], mean, rtol=1e-6, atol=1e-10)
    X_new = problem.X[:7]
    y_mean, y_std = model.predict(X_new, return_std=True)
    assert np.allclose(y_mean, X_new[:, A] @ mean)
    ref_std = np.sqrt(s2 + np.einsum("ij,jk,ik->i", X_new[:, A], cov, X_new[:, A]))
    assert np.allclose(y_std, ref_std)


@pytest.mark.parametrize("noise_var", [None, "true"])
def test_default_penalised_fit_recovers_the_support(problem, noise_var):
    noise_var = problem.noise_var if noise_var == "true" else None
    model = SBLRegressor(noise_var=noise_var, fit_intercept=False).fit(problem.X, problem.y)
    plain = SBLRegressor(noise_var=noise_var, fit_intercept=False, size_penalty=0).fit(problem.X, problem.y)
    assert model.active_[problem.support].all() and np.sum(model.active_ & ~problem.support) <= 1
    assert plain.active_.sum() > 2 * problem.support.sum()
    assert model.noise_variance_ == pytest.approx(problem.noise_var, rel=0.3)


def test_intercept_and_centering():
    p = make_sparse_regression(150, 40, 4, 30.0, seed=1)
    X = p.X + 3.0
    y = p.y + 7.5
    model = SBLRegressor().fit(X, y)
    assert model.intercept_ == pytest.approx(7.5 - 3.0 * p.coef.sum(), abs=0.3)
    assert model.score(X, y) > 0.95
    # The predictive std is computed on the centred features: it must not grow with the offset.
    _, std_shift = model.predict(X, return_std=True)
    _, std_plain = SBLRegressor().fit(p.X, p.y).predict(p.X, return_std=True)
    assert np.allclose(std_shift, std_plain, rtol=1e-3)


def test_agrees_with_sklearn_ard_when_well_determined():
    p = make_sparse_regression(400, 20, 5, 20.0, seed=2)
    ours = SBLRegressor(engine="mackay", fit_intercept=False, tol=1e-10, max_iter=2000).fit(p.X, p.y)
    ard = ARDRegression(fit_intercept=False, tol=1e-10, max_iter=2000).fit(p.X, p.y)
    assert np.allclose(ours.coef_, ard.coef_, atol=0.05)
    assert ours.noise_variance_ == pytest.approx(1.0 / ard.alpha_, rel=0.1)


def test_multiple_targets_share_one_support():
    rng = np.random.default_rng(0)
    p = make_sparse_regression(100, 60, 4, 30.0, seed=3)
    W = np.zeros((60, 3))
    W[p.support] = rng.standard_normal((4, 3)) + np.sign(rng.standard_normal((4, 3)))
    Y = p.X @ W + 0.01 * rng.standard_normal((100, 3))
    model = SBLRegressor(fit_intercept=False, noise_var=1e-4).fit(p.X, Y)
    assert model.coef_.shape == (3, 60)
    assert model.active_[p.support].all()
    assert np.allclose(model.coef_[:, p.support], W[p.support].T, atol=0.05)
    assert np.abs(model.coef_[:, ~p.support]).max() < 0.05
    assert model.predict(p.X).shape == (100, 3)
    single = SBLRegressor(fit_intercept=False).fit(p.X, Y[:, :1])
    assert single.coef_.shape == (60,)


def test_convergence_warning_gives_numbers(problem):
    with pytest.warns(
        ConvergenceWarning, match=r"did not converge in max_iter=2 iterations.*active features"
    ):
        SBLRegressor(engine="em", max_iter=2, fit_intercept=False).fit(problem.X, problem.y)


def test_rank_deficient_design_does_not_crash():
    p = make_sparse_regression(60, 30, 3, 30.0, seed=5)
    j = int(np.flatnonzero(p.support)[0])
    X = np.hstack([p.X, p.X[:, [j]]])  # an exact duplicate of a relevant column
    for engine in ENGINES:
        model = SBLRegressor(engine=engine, fit_intercept=False).fit(X, p.y)
        assert np.all(np.isfinite(model.coef_))
        assert model.score(X, p.y) > 0.9
        # the two copies together carry the true weight
        assert model.coef_[j] + model.coef_[-1] == pytest.approx(p.coef[j], abs=0.2)


@pytest.mark.parametrize(
    "X, y, match",
    [
        (np.array([[1.0, np.nan], [0.0, 1.0], [1.0, 1.0]]), np.ones(3), "NaN"),
        (np.ones((3, 2)), np.array([1.0, np.inf, 0.0]), "infinity|NaN"),
        (np.ones((3, 2)), np.ones(4), "inconsistent numbers of samples"),
        (np.c_[np.zeros(3), np.arange(3.0)], np.arange(3.0), "all zeros"),
        (np.empty((3, 0)), np.ones(3), "0 feature"),
        (np.eye(3), np.ones(3), "y is constant"),
        (np.eye(3) * (1 + 1j), np.arange(3.0), "[Cc]omplex"),
    ],
)
def test_bad_input_raises_value_error(X, y, match):
    with pytest.raises(ValueError, match=match):
        SBLRegressor().fit(X, y)


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(engine="gibbs"), "engine must be one of"),
        (dict(noise_var=-1.0), "noise_var"),
        (dict(max_iter=0), "max_iter"),
        (dict(tol=-1.0), "tol"),
        (dict(engine="em", size_penalty="ric"), "size_penalty applies to engine='tipping_faul' only"),
        (dict(size_penalty="aic"), "size_penalty"),
    ],
)
def test_bad_hyperparameters_raise(params, match):
    p = make_sparse_regression(20, 5, 2, 20.0, seed=0)
    with pytest.raises(ValueError, match=match):
        SBLRegressor(**params).fit(p.X, p.y)


def test_constant_y_with_known_noise_gives_the_mean():
    X = np.random.default_rng(0).standard_normal((30, 4))
    model = SBLRegressor(noise_var=0.1).fit(X, np.full(30, 2.0))
    assert not model.active_.any()
    assert np.allclose(model.predict(X), 2.0)


def test_rvm_fits_sinc_with_few_relevance_vectors():
    rng = np.random.default_rng(0)
    x = np.linspace(-10, 10, 100)[:, None]
    y = np.sinc(x[:, 0] / np.pi) + 0.05 * rng.standard_normal(100)
    rvm = RVMRegressor(kernel="rbf", gamma=0.1).fit(x, y)
    assert rvm.active_.sum() < 25
    assert rvm.relevance_vectors_.shape == (rvm.active_.sum(), 1)
    x_test = np.linspace(-9.5, 9.5, 50)[:, None]
    mean, std = rvm.predict(x_test, return_std=True)
    assert np.sqrt(np.mean((mean - np.sinc(x_test[:, 0] / np.pi)) ** 2)) < 0.05
    assert np.sqrt(rvm.noise_variance_) == pytest.approx(0.05, rel=0.3)
    assert np.all(std >= np.sqrt(rvm.noise_variance_))


def test_rvm_precomputed_kernel_equals_rbf():
    from sklearn.metrics.pairwise import rbf_kernel

    rng = np.random.default_rng(1)
    X = rng.uniform(-3, 3, (60, 2))
    y = np.sin(X[:, 0]) * X[:, 1] + 0.05 * rng.standard_normal(60)
    X_test = rng.uniform(-3, 3, (10, 2))
    direct = RVMRegressor(kernel="rbf", gamma=0.5).fit(X, y)
    pre = RVMRegressor(kernel="precomputed").fit(rbf_kernel(X, gamma=0.5), y)
    assert np.array_equal(direct.active_, pre.active_)
    assert np.allclose(direct.predict(X_test), pre.predict(rbf_kernel(X_test, X, gamma=0.5)))


def test_rvm_rejects_bad_kernel_arguments():
    X = np.random.default_rng(0).standard_normal((10, 2))
    y = X[:, 0]
    with pytest.raises(ValueError, match="kernel must be"):
        RVMRegressor(kernel="sigmoidal").fit(X, y)
    with pytest.raises(ValueError, match="gamma must be"):
        RVMRegressor(gamma=-1.0).fit(X, y)
    with pytest.raises(ValueError, match="square kernel matrix"):
        RVMRegressor(kernel="precomputed").fit(X, y)


def test_to_inference_data_draws_the_gaussian_posterior(problem):
    model = SBLRegressor(fit_intercept=False).fit(problem.X, problem.y)
    idata = model.to_inference_data(num_draws=4000, seed=3)
    w = idata.posterior["w"]
    assert w.dims == ("chain", "draw", "feature")
    assert list(w.coords["feature"].values) == np.flatnonzero(model.active_).tolist()
    draws = w.values.reshape(-1, w.shape[-1])
    sd = np.sqrt(np.diag(model.sigma_))
    assert np.all(np.abs(draws.mean(0) - model.coef_[model.active_]) < 5 * sd / np.sqrt(4000))
    assert np.allclose(draws.std(0), sd, rtol=0.1)
    assert np.allclose(idata["optimization"]["log_evidence"].values, model.scores_)
