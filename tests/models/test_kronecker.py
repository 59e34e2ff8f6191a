import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from probsparse.datasets import make_kronecker_sparse
from probsparse.inference.sbl import fit_kronecker_sbl
from probsparse.models import KroneckerSBLRegressor


@pytest.fixture(scope="module")
def problem():
    return make_kronecker_sparse((10, 10, 10), (8, 8, 8), 2, 30.0, seed=0)


@pytest.mark.parametrize("solver", ["svd", "am", "ksbl"])
def test_estimator_equals_the_engine_and_reshapes_per_factor(problem, solver):
    model = KroneckerSBLRegressor(solver=solver, noise_var=problem.noise_var).fit(problem.factors, problem.y)
    post = fit_kronecker_sbl(problem.factors, problem.y, solver=solver, noise_var=problem.noise_var)
    assert model.coef_.shape == (10, 10, 10) and model.active_.shape == (10, 10, 10)
    assert np.allclose(model.coef_.ravel(), post.coef)
    assert np.array_equal(model.active_.ravel(), post.active)
    assert all(np.array_equal(a, b) for a, b in zip(model.factor_gammas_, post.factor_gammas, strict=True))
    assert model.n_iter_ == post.n_iter and model.noise_variance_ == problem.noise_var


def test_recovers_the_kronecker_support_and_predicts(problem):
    model = KroneckerSBLRegressor(noise_var=problem.noise_var).fit(problem.factors, problem.y)
    assert np.array_equal(model.active_.ravel(), problem.support)
    for est, truth in zip(model.factor_active_, problem.factor_supports, strict=True):
        assert np.array_equal(est, truth)
    H = problem.dictionary
    assert np.allclose(model.predict(), H @ model.coef_.ravel())
    # New factors with the same columns: the prediction is the new Kronecker dictionary times x.
    rng = np.random.default_rng(1)
    new = [rng.standard_normal((3, 10)) for _ in range(3)]
    dense_new = np.kron(np.kron(new[0], new[1]), new[2])
    assert np.allclose(model.predict(new), dense_new @ model.coef_.ravel())
    with pytest.raises(ValueError, match="columns"):
        model.predict([rng.standard_normal((3, 9))] + new[1:])


def test_to_inference_data_has_the_marginal_posterior(problem):
    model = KroneckerSBLRegressor(noise_var=problem.noise_var).fit(problem.factors, problem.y)
    idata = model.to_inference_data(num_draws=4000, seed=0)
    w = idata.posterior["w"].values.reshape(-1, int(model.active_.sum()))
    sd = np.sqrt(model.posterior_var_[model.active_])
    assert np.allclose(w.mean(0), model.coef_[model.active_], atol=5 * sd.max() / np.sqrt(4000))
    assert np.allclose(w.std(0), sd, rtol=0.1)


def test_errors_and_warnings(problem):
    with pytest.raises(NotFittedError):
        KroneckerSBLRegressor().predict()
    with pytest.raises(ValueError, match="solver must be one of"):
        KroneckerSBLRegressor(solver="cp").fit(problem.factors, problem.y)
    with pytest.raises(ValueError, match="at least 2"):
        KroneckerSBLRegressor().fit(problem.factors[:1], problem.y[:8])
    with pytest.raises(ValueError, match="prod"):
        KroneckerSBLRegressor().fit(problem.factors, problem.y[:-1])
    with pytest.warns(ConvergenceWarning, match="max_iter=1"):
        KroneckerSBLRegressor(max_iter=1, tol=0.0).fit(problem.factors, problem.y)


def test_pattern_coupled_solver_through_the_estimator(problem):
    from probsparse.inference.sbl import fit_pc_kronecker_sbl

    model = KroneckerSBLRegressor(solver="pc", noise_var=problem.noise_var, solver_options={"coupling": 0.5})
    model.fit(problem.factors, problem.y)
    post = fit_pc_kronecker_sbl(problem.factors, problem.y, coupling=0.5, noise_var=problem.noise_var)
    assert np.allclose(model.coef_.ravel(), post.coef)
