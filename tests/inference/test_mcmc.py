"""fit_nuts against the closed-form Gaussian posterior, chains and sample stats, ArviZ output, validation."""

import numpy as np
import pytest
import torch

from probsparse.inference.mcmc import MCMCResult, fit_nuts
from probsparse.models import SparseLinearModel
from probsparse.priors import ARDPrior

NOISE_VAR = 0.25
GAMMA = np.array([1.0, 2.0, 0.5])


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _problem():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 3))
    X[:, 1] += 0.5 * X[:, 0]
    y = X @ np.array([1.0, 0.0, -2.0]) + np.sqrt(NOISE_VAR) * rng.standard_normal(20)
    return X, y


@pytest.fixture(scope="module")
def nuts_fit():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        X, y = _problem()
        model = SparseLinearModel(3, prior=ARDPrior(variance=GAMMA), noise_var=NOISE_VAR)
        yield fit_nuts(model, torch.as_tensor(X), torch.as_tensor(y), num_samples=300, warmup_steps=300)
    finally:
        torch.set_default_dtype(old)


def test_fixed_gamma_and_noise_match_closed_form(nuts_fit):
    X, y = _problem()
    cov = np.linalg.inv(X.T @ X / NOISE_VAR + np.diag(1.0 / GAMMA))
    mu = cov @ X.T @ y / NOISE_VAR
    sd = np.sqrt(np.diag(cov))
    w = nuts_fit.samples["w"][0]
    assert w.shape == (300, 3)
    # Monte Carlo tolerance: the mean's standard error is sd / sqrt(ESS) <= 0.1 sd for ESS >= 100.
    np.testing.assert_array_less(np.abs(w.mean(0) - mu), 0.35 * sd)
    np.testing.assert_allclose(w.std(0), sd, rtol=0.2)
    np.testing.assert_allclose(nuts_fit.samples["w"], np.sqrt(GAMMA) * nuts_fit.samples["w_raw"])


def test_result_layout_and_sample_stats(nuts_fit):
    assert isinstance(nuts_fit, MCMCResult)
    assert set(nuts_fit.samples) == {"w_gamma", "w_raw", "w"}
    assert all(v.shape[:2] == (1, 300) for v in nuts_fit.samples.values())
    assert nuts_fit.constant_sites == ("w_gamma",)
    stats = nuts_fit.sample_stats
    assert stats["diverging"].shape == (1, 300) and stats["diverging"].dtype == bool
    assert not stats["diverging"].any()  # a Gaussian posterior gives no divergences
    assert stats["step_size"].shape == (1, 300) and np.all(stats["step_size"] > 0)
    assert 0.5 < nuts_fit.acceptance_rate[0] <= 1.0


def test_to_inference_data(nuts_fit):
    import arviz as az

    idata = nuts_fit.to_inference_data()
    assert set(idata.groups()) == {"posterior", "sample_stats", "observed_data", "constant_data"}
    assert idata.posterior["w"].dims == ("chain", "draw", "feature")
    assert idata.sample_stats["diverging"].dims == ("chain", "draw")
    np.testing.assert_allclose(idata.constant_data["w_gamma"].values, GAMMA)
    assert idata.attrs["inference_method"] == "nuts"
    ess = az.ess(idata, var_names=["w"])["w"].values
    assert np.all(ess > 100)


def test_chains_are_stacked_and_differ():
    X, y = _problem()
    model = SparseLinearModel(3, prior=ARDPrior(precision_prior=(3.0, 2.0)), noise_prior=1.0)
    result = fit_nuts(model, X, y, num_samples=20, warmup_steps=20, num_chains=2, seed=1)
    assert set(result.samples) == {"w_precision", "w_gamma", "w_raw", "w", "noise_scale"}
    assert result.samples["w"].shape == (2, 20, 3) and result.samples["noise_scale"].shape == (2, 20)
    assert not np.allclose(result.samples["w"][0], result.samples["w"][1])
    assert result.constant_sites == ()  # w_gamma = 1 / w_precision varies here
    np.testing.assert_allclose(result.samples["w_gamma"], 1.0 / result.samples["w_precision"])
    idata = result.to_inference_data()
    assert idata.posterior.sizes["chain"] == 2 and "w_gamma" in idata.posterior


def test_type2_model_is_rejected():
    X, y = _problem()
    with pytest.raises(ValueError, match=r"pyro.param sites \['w_gamma'\]"):
        fit_nuts(SparseLinearModel(3), X, y, num_samples=5, warmup_steps=5)


def test_invalid_arguments():
    X, y = _problem()
    model = SparseLinearModel(3, prior=ARDPrior(variance=1.0), noise_var=1.0)
    for kwargs, match in [
        ({"num_samples": 0}, "num_samples"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"num_chains": 0}, "num_chains"),
        ({"seed": -2}, "seed"),
    ]:
        with pytest.raises(ValueError, match=match):
            fit_nuts(model, X, y, **kwargs)
    with pytest.raises(ValueError, match="X contains NaN"):
        fit_nuts(model, np.full((20, 3), np.nan), y)
