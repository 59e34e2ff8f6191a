"""One model, several engines: the SBL engines and Pyro SVI / NUTS on the same SparseLinearModel."""

import numpy as np
import pytest
import torch

from probsparse.datasets import make_sparse_regression
from probsparse.inference.mcmc import fit_nuts
from probsparse.inference.sbl import fit_model, fit_tipping_faul
from probsparse.inference.svi import fit_svi
from probsparse.models import SparseLinearModel
from probsparse.priors import ARDPrior


@pytest.fixture(scope="module")
def problem():
    return make_sparse_regression(60, 30, 3, 20.0, seed=11)


def test_engine_on_model_equals_engine_on_arrays(problem):
    model = SparseLinearModel(30)
    via_model = fit_model(model, torch.from_numpy(problem.X), torch.from_numpy(problem.y))
    direct = fit_tipping_faul(problem.X, problem.y)
    assert np.array_equal(via_model.active, direct.active)
    assert np.allclose(via_model.coef, direct.coef) and np.allclose(via_model.gamma, direct.gamma)


@pytest.mark.parametrize("engine", ["em", "mackay", "tipping_faul"])
def test_known_noise_of_the_model_is_used(problem, engine):
    model = SparseLinearModel(30, noise_var=problem.noise_var)
    post = fit_model(model, problem.X, problem.y, engine=engine)
    assert post.noise_var == problem.noise_var
    assert post.active[problem.support].all()


def test_rejects_priors_the_engines_cannot_fit(problem):
    for prior in (ARDPrior(variance=1.0), ARDPrior(precision_prior=(1.0, 1.0))):
        with pytest.raises(ValueError, match="fit_svi"):
            fit_model(SparseLinearModel(30, prior=prior), problem.X, problem.y)
    with pytest.raises(ValueError, match="engine must be one of"):
        fit_model(SparseLinearModel(30), problem.X, problem.y, engine="gibbs")
    with pytest.raises(ValueError, match="y is required"):
        fit_model(SparseLinearModel(30), problem.X, None)
    with pytest.raises(ValueError, match="n_features"):
        fit_model(SparseLinearModel(31), problem.X, problem.y)


@pytest.fixture(scope="module")
def fixed_gamma_model(problem):
    """The engine's evidence optimum, as a fixed-γ Pyro model on the active features."""
    post = fit_model(SparseLinearModel(30, noise_var=problem.noise_var), problem.X, problem.y)
    X_active = torch.from_numpy(problem.X[:, post.active])
    model = SparseLinearModel(
        int(post.active.sum()),
        prior=ARDPrior(variance=torch.from_numpy(post.gamma[post.active])),
        noise_var=post.noise_var,
    )
    return post, model, X_active, torch.from_numpy(problem.y)


def test_svi_on_the_model_agrees_with_the_engine_posterior(fixed_gamma_model):
    post, model, X, y = fixed_gamma_model
    result = fit_svi(model, X, y, guide="mvn", num_steps=3000, lr=0.02, num_samples=4000, seed=1)
    w = result.samples["w"]
    sd = np.sqrt(np.diag(post.cov))
    assert np.all(np.abs(w.mean(0) - post.coef[post.active]) < 0.25 * sd)
    assert np.allclose(w.std(0), sd, rtol=0.15)


@pytest.mark.slow
def test_nuts_on_the_model_agrees_with_the_engine_posterior(fixed_gamma_model):
    post, model, X, y = fixed_gamma_model
    result = fit_nuts(model, X, y, num_samples=300, warmup_steps=200, seed=2)
    w = result.samples["w"].reshape(-1, X.shape[1])
    sd = np.sqrt(np.diag(post.cov))
    assert np.all(np.abs(w.mean(0) - post.coef[post.active]) < 0.3 * sd)
    assert np.allclose(w.std(0), sd, rtol=0.2)
