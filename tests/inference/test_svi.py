"""fit_svi against the closed-form Gaussian posterior, type-II ARD sparsity, result layout and validation."""

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

from probsparse.inference.svi import SVIResult, fit_svi, make_guide
from probsparse.models import SparseLinearModel
from probsparse.priors import ARDPrior

NOISE_VAR = 0.5


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def closed_form_posterior(X, y, gamma, noise_var):
    """mu = Sigma X^T y / s2,  Sigma = (X^T X / s2 + diag(1 / gamma))^-1, in float64 NumPy."""
    cov = np.linalg.inv(X.T @ X / noise_var + np.diag(1.0 / gamma))
    return cov @ X.T @ y / noise_var, cov


def _orthogonal_problem():
    # Orthogonal columns: the posterior covariance is diagonal, so the mean-field AutoNormal is exact.
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((30, 4)))
    X = q * np.array([3.0, 4.0, 5.0, 6.0])
    y = X @ np.array([1.0, -0.5, 0.0, 2.0]) + np.sqrt(NOISE_VAR) * rng.standard_normal(30)
    return X, y, np.array([1.0, 0.5, 2.0, 1.0])


def _correlated_problem():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 3))
    X[:, 1] += 0.8 * X[:, 0]
    y = X @ np.array([1.0, 0.0, -2.0]) + np.sqrt(NOISE_VAR) * rng.standard_normal(30)
    return X, y, np.array([1.0, 2.0, 0.5])


@pytest.mark.parametrize(
    "problem, guide, centred, std_rtol",
    [
        (_orthogonal_problem, None, False, 0.12),
        (_orthogonal_problem, None, True, 0.12),
        (_correlated_problem, "mvn", False, 0.15),
    ],
    ids=["normal-orthogonal", "normal-orthogonal-centred", "mvn-correlated"],
)
def test_fixed_gamma_matches_closed_form(problem, guide, centred, std_rtol):
    X, y, gamma = problem()
    mu, cov = closed_form_posterior(X, y, gamma, NOISE_VAR)
    sd = np.sqrt(np.diag(cov))
    model = SparseLinearModel(
        X.shape[1], prior=ARDPrior(variance=gamma, centred=centred), noise_var=NOISE_VAR
    )
    result = fit_svi(
        model, torch.as_tensor(X), torch.as_tensor(y), guide=guide, num_steps=1500, lr=0.02, lr_decay=0.05
    )
    w = result.samples["w"]
    assert w.shape == (1000, X.shape[1])
    # Posterior mean within 0.3 posterior sd (the Monte Carlo error of the mean is ~0.03 sd).
    np.testing.assert_array_less(np.abs(w.mean(0) - mu), 0.3 * sd)
    np.testing.assert_allclose(w.std(0), sd, rtol=std_rtol)
    if guide == "mvn":  # the correlation is recovered too
        corr = np.corrcoef(w.T)[0, 1]
        assert abs(corr - cov[0, 1] / (sd[0] * sd[1])) < 0.1


def test_type2_gamma_prunes_irrelevant_features():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 8))
    w_true = np.zeros(8)
    w_true[[0, 3]] = [2.0, -1.5]
    y = X @ w_true + 0.3 * rng.standard_normal(60)
    model = SparseLinearModel(8)  # type-II ARD variances, HalfCauchy prior on the noise scale
    result = fit_svi(model, torch.as_tensor(X), torch.as_tensor(y), num_steps=800, lr=0.1, num_samples=200)
    gamma = result.params["w_gamma"]
    assert set(result.params) == {"w_gamma"}  # model params only, no guide params
    relevant = gamma[[0, 3]]
    irrelevant = np.delete(gamma, [0, 3])
    assert relevant.min() > 1.0
    assert irrelevant.max() < 0.03
    np.testing.assert_allclose(result.samples["w"].mean(0)[[0, 3]], [2.0, -1.5], atol=0.15)
    assert 0.2 < result.samples["noise_scale"].mean() < 0.45


@pytest.fixture(scope="module")
def small_fit():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        X, y, gamma = _correlated_problem()
        model = SparseLinearModel(3, prior=ARDPrior(variance=gamma), noise_prior=1.0)
        yield fit_svi(model, X, y, num_steps=300, lr=0.05, num_samples=50, seed=3)
    finally:
        torch.set_default_dtype(old)


def test_result_layout(small_fit):
    result = small_fit
    assert isinstance(result, SVIResult)
    assert result.losses.shape == (300,) and np.all(np.isfinite(result.losses))
    assert result.losses[-50:].mean() < result.losses[:50].mean()
    assert set(result.samples) == {"w_gamma", "w_raw", "w", "noise_scale"}
    assert result.samples["w"].shape == (50, 3) and result.samples["noise_scale"].shape == (50,)
    np.testing.assert_allclose(result.samples["w_gamma"], np.broadcast_to([1.0, 2.0, 0.5], (50, 3)))
    np.testing.assert_allclose(result.samples["w"], np.sqrt([1.0, 2.0, 0.5]) * result.samples["w_raw"])
    assert result.params == {}
    assert result.constant_sites == ("w_gamma",)
    assert result.X.shape == (30, 3) and result.y.shape == (30,)


def test_to_inference_data(small_fit):
    import arviz as az

    idata = small_fit.to_inference_data(feature_names=["a", "b", "c"])
    assert set(idata.groups()) == {"posterior", "observed_data", "constant_data", "optimization"}
    post = idata.posterior
    assert post["w"].dims == ("chain", "draw", "feature") and post["w"].shape == (1, 50, 3)
    assert list(post["feature"].values) == ["a", "b", "c"]
    assert "w_gamma" not in post and idata.constant_data["w_gamma"].dims == ("feature",)
    assert idata.constant_data["X"].dims == ("obs_id", "feature")
    assert idata.observed_data["y"].dims == ("obs_id",)
    assert idata.optimization["loss"].dims == ("step",)
    assert idata.attrs["inference_library"] == "pyro" and idata.attrs["inference_method"] == "svi"
    summary = az.summary(idata, var_names=["w"], kind="stats")
    assert list(summary.index) == ["w[a]", "w[b]", "w[c]"]


def test_seed_reproducible_and_global_rng_untouched():
    X, y, gamma = _correlated_problem()
    model = SparseLinearModel(3, prior=ARDPrior(variance=gamma), noise_var=NOISE_VAR)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = fit_svi(model, X, y, num_steps=20, num_samples=5, seed=7)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's torch RNG stream is unchanged
    second = fit_svi(model, X, y, num_steps=20, num_samples=5, seed=7)
    np.testing.assert_array_equal(first.losses, second.losses)
    np.testing.assert_array_equal(first.samples["w"], second.samples["w"])
    third = fit_svi(model, X, y, num_steps=20, num_samples=5, seed=8)
    assert not np.array_equal(first.losses, third.losses)


def test_callback_stops_early_and_param_store_is_cleared():
    X, y, gamma = _correlated_problem()
    model = SparseLinearModel(3)
    pyro.param("left_over", torch.ones(2))
    seen = []

    def callback(step, loss):
        seen.append((step, loss))
        return step == 9

    result = fit_svi(model, X, y, num_steps=100, num_samples=5, callback=callback, progress=True)
    assert [s for s, _ in seen] == list(range(10))
    np.testing.assert_array_equal(result.losses, [loss for _, loss in seen])
    assert "left_over" not in pyro.get_param_store()
    assert "w_gamma" in pyro.get_param_store()


def test_user_owned_loop_with_public_pieces():
    X, y, gamma = _correlated_problem()
    model = SparseLinearModel(3, prior=ARDPrior(variance=gamma), noise_var=NOISE_VAR)
    X, y = model.check_data(X, y)
    guide = make_guide(model, "mvn")
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    losses = [svi.step(X, y) for _ in range(200)]
    assert np.mean(losses[-20:]) < np.mean(losses[:20])
    assert type(make_guide(model)).__name__ == "AutoNormal"


def test_invalid_arguments():
    X, y, _ = _correlated_problem()
    model = SparseLinearModel(3)
    bad_y = y.copy()
    bad_y[2] = np.nan
    cases = [
        ({"num_steps": 0}, ValueError, "num_steps"),
        ({"lr": 0.0}, ValueError, "lr"),
        ({"lr_decay": 1.5}, ValueError, "lr_decay"),
        ({"num_particles": 0}, ValueError, "num_particles"),
        ({"num_samples": 0}, ValueError, "num_samples"),
        ({"seed": -1}, ValueError, "seed"),
        ({"guide": "flow"}, ValueError, "guide"),
        ({"callback": 3}, TypeError, "callback"),
    ]
    for kwargs, exc, match in cases:
        with pytest.raises(exc, match=match):
            fit_svi(model, X, y, **kwargs)
    with pytest.raises(ValueError, match="y contains NaN"):
        fit_svi(model, X, bad_y)
    with pytest.raises(ValueError, match="y is None"):
        fit_svi(model, X, None)
    with pytest.raises(ValueError, match="n_features=3"):
        fit_svi(model, X[:, :2], y)
