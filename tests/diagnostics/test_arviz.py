"""The ArviZ conversion: groups, named dims and coords, attrs, Gaussian draws, validation."""

import arviz as az
import numpy as np
import pytest

from probsparse._version import __version__
from probsparse.diagnostics import gaussian_posterior_to_inference_data, samples_to_inference_data


@pytest.fixture
def samples():
    rng = np.random.default_rng(0)
    return {"w": rng.standard_normal((2, 100, 3)), "noise_scale": np.abs(rng.standard_normal((2, 100)))}


def test_samples_groups_dims_and_attrs(samples):
    idata = samples_to_inference_data(
        samples,
        dims={"w": ["feature"], "y": ["obs_id"], "X": ["obs_id", "feature"], "loss": ["step"]},
        coords={"feature": ["a", "b", "c"]},
        sample_stats={"diverging": np.zeros((2, 100), dtype=bool)},
        observed_data={"y": np.arange(5.0)},
        constant_data={"X": np.ones((5, 3))},
        optimization={"loss": np.linspace(10.0, 1.0, 7)},
        attrs={"note": "test"},
    )
    assert set(idata.groups()) == {
        "posterior",
        "sample_stats",
        "observed_data",
        "constant_data",
        "optimization",
    }
    assert idata.posterior["w"].dims == ("chain", "draw", "feature")
    assert idata.posterior["noise_scale"].dims == ("chain", "draw")
    assert list(idata.posterior["feature"].values) == ["a", "b", "c"]
    assert idata.sample_stats["diverging"].dims == ("chain", "draw")
    assert idata.observed_data["y"].dims == ("obs_id",)
    assert idata.constant_data["X"].dims == ("obs_id", "feature")
    assert idata.optimization["loss"].dims == ("step",)
    for attrs in (idata.attrs, idata.posterior.attrs):
        assert attrs["creation_library"] == "probsparse"
        assert attrs["creation_library_version"] == __version__
        assert attrs["inference_library"] == "pyro" and "inference_library_version" in attrs
    assert idata.attrs["note"] == "test"
    np.testing.assert_array_equal(idata.posterior["w"].values, samples["w"])

    summary = az.summary(idata, var_names=["w"])
    assert list(summary.index) == ["w[a]", "w[b]", "w[c]"]
    np.testing.assert_allclose(summary["mean"].values, samples["w"].mean(axis=(0, 1)), atol=1e-3)
    assert np.all(summary["r_hat"].values < 1.1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"samples": {}}, "samples is empty"),
        ({"samples": {"w": np.zeros(5)}}, "leading"),
        ({"samples": {"w": np.zeros((1, 5)), "v": np.zeros((2, 5))}}, r"\(chain, draw\)"),
        ({"samples": {"w": np.full((1, 5), np.nan)}}, "NaN"),
        ({"samples": {"w": np.zeros((1, 5, 3))}, "dims": {"w": ["a", "b"]}}, "dims"),
        ({"samples": {"w": np.zeros((1, 5, 3))}, "dims": {"w": ["f"]}, "coords": {"f": [0, 1]}}, "coords"),
        ({"samples": {"w": np.zeros((1, 5))}, "sample_stats": {"diverging": np.zeros((1, 4))}}, "disagree"),
        ({"samples": {"w": np.zeros((1, 5))}, "constant_data": {"X": [np.inf]}}, "constant_data"),
    ],
)
def test_samples_validation(kwargs, match):
    samples = kwargs.pop("samples")
    with pytest.raises(ValueError, match=match):
        samples_to_inference_data(samples, **kwargs)


def _gaussian():
    mean = np.array([0.0, -1.0, 0.0, 2.0, 0.5, 0.0])
    active = np.array([4, 1, 3])  # any order; cov follows it
    a = np.array([[1.0, 0.0, 0.0], [0.6, 0.5, 0.0], [-0.3, 0.2, 0.3]])
    return mean, a @ a.T, active


def test_gaussian_draws_match_mean_and_cov():
    mean, cov, active = _gaussian()
    n = 20000
    idata = gaussian_posterior_to_inference_data(mean, cov, active, num_draws=n, seed=1)
    w = idata.posterior["w"]
    assert w.dims == ("chain", "draw", "feature") and w.shape == (1, n, 3)
    assert list(w["feature"].values) == [4, 1, 3]
    draws = w.values[0]
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_array_less(np.abs(draws.mean(0) - mean[active]), 5 * sd / np.sqrt(n))
    # Standard error of a sample covariance entry is about sqrt((S_ii S_jj + S_ij^2) / n) <= 1.5% here.
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=0.05 * np.outer(sd, sd).max())
    assert idata.attrs["inference_library"] == "probsparse"
    assert "optimization" not in idata.groups()
    summary = az.summary(idata, kind="stats")
    assert list(summary.index) == ["w[4]", "w[1]", "w[3]"]


def test_gaussian_names_trace_and_noise():
    mean, cov, active = _gaussian()
    names = [f"x{i}" for i in range(6)]
    trace = [-30.0, -20.0, -19.5]
    idata = gaussian_posterior_to_inference_data(
        mean, cov, active, num_draws=50, feature_names=names, log_evidence_trace=trace, noise_var=0.2
    )
    post = idata.posterior
    assert list(post["feature"].values) == ["x4", "x1", "x3"]
    assert list(post["feature_index"].values) == [4, 1, 3]
    opt = idata.optimization
    assert opt["log_evidence"].dims == ("iteration",)
    np.testing.assert_array_equal(opt["log_evidence"].values, trace)
    assert float(opt["noise_var"]) == 0.2
    again = gaussian_posterior_to_inference_data(mean, cov, active, num_draws=50)
    np.testing.assert_array_equal(again.posterior["w"].values, post["w"].values)  # same seed, same draws


def test_gaussian_mean_over_active_set_only():
    mean, cov, active = _gaussian()
    full = gaussian_posterior_to_inference_data(mean, cov, active, num_draws=30)
    restricted = gaussian_posterior_to_inference_data(mean[active], cov, active, num_draws=30)
    np.testing.assert_array_equal(full.posterior["w"].values, restricted.posterior["w"].values)
    names = [f"x{i}" for i in range(6)]
    named = gaussian_posterior_to_inference_data(mean[active], cov, active, num_draws=30, feature_names=names)
    assert list(named.posterior["feature"].values) == ["x4", "x1", "x3"]
    with pytest.raises(ValueError, match=r"active_indices must lie in \[0, 4\)"):
        gaussian_posterior_to_inference_data(mean[active], cov, active, feature_names=names[:4])
    with pytest.raises(TypeError, match="active_indices must hold integers"):
        gaussian_posterior_to_inference_data(mean, cov, active.astype(float))


def test_gaussian_singular_cov_and_empty_active_set():
    cov = np.array([[1.0, 1.0], [1.0, 1.0]])  # rank one: both weights move together
    idata = gaussian_posterior_to_inference_data(np.zeros(3), cov, [0, 2], num_draws=100)
    draws = idata.posterior["w"].values[0]
    np.testing.assert_allclose(draws[:, 0], draws[:, 1])
    empty = gaussian_posterior_to_inference_data(np.zeros(3), np.zeros((0, 0)), [], num_draws=10)
    assert empty.posterior["w"].shape == (1, 10, 0)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"mean": np.array([0.0, np.nan, 0.0, 0.0, 0.0, 0.0])}, "mean contains NaN"),
        ({"mean": np.zeros(4)}, r"active_indices must lie in \[0, 4\)"),
        ({"mean": np.zeros((6, 1))}, "mean must be 1-D"),
        ({"active_indices": [4, 1, 1]}, "repeated"),
        ({"active_indices": [4, 1, -1]}, "active_indices must be >= 0"),
        ({"cov": np.eye(2)}, "cov must have shape"),
        ({"cov": np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])}, "symmetric"),
        ({"cov": np.diag([1.0, -1.0, 1.0])}, "positive semi-definite"),
        ({"feature_names": ["a", "b"]}, "feature_names"),
        ({"log_evidence_trace": [[1.0]]}, "log_evidence_trace"),
        ({"log_evidence_trace": [1.0, np.inf]}, "log_evidence_trace"),
        ({"noise_var": 0.0}, "noise_var"),
        ({"num_draws": 0}, "num_draws"),
        ({"seed": -1}, "seed"),
    ],
)
def test_gaussian_validation(change, match):
    mean, cov, active = _gaussian()
    kwargs = {"mean": mean, "cov": cov, "active_indices": active, **change}
    with pytest.raises(ValueError, match=match):
        gaussian_posterior_to_inference_data(
            kwargs.pop("mean"), kwargs.pop("cov"), kwargs.pop("active_indices"), **kwargs
        )


def test_variational_draws_are_one_chain_with_named_dims():
    import arviz as az

    from probsparse.diagnostics import variational_draws_to_inference_data

    rng = np.random.default_rng(3)
    draws = {"w": rng.standard_normal((400, 3)) + np.array([1.0, -2.0, 0.0]), "tau": np.abs(rng.standard_normal(400))}
    idata = variational_draws_to_inference_data(
        draws,
        dims={"w": ["feature"], "y": ["obs_id"]},
        coords={"feature": ["a", "b", "c"]},
        observed_data={"y": np.arange(4.0)},
        optimization={"loss": np.linspace(5.0, 1.0, 10)},
    )
    post = idata.posterior
    assert post["w"].dims == ("chain", "draw", "feature") and post["w"].shape == (1, 400, 3)
    assert post["tau"].dims == ("chain", "draw")
    assert list(post["feature"].values) == ["a", "b", "c"]
    np.testing.assert_array_equal(post["w"].values[0], draws["w"])
    assert idata.observed_data["y"].dims == ("obs_id",)
    assert idata.optimization["loss"].dims == ("loss_dim_0",)
    assert idata.attrs["inference_method"] == "vi" and idata.attrs["creation_library"] == "probsparse"
    # ArviZ reads the draws: the means agree and, with one chain of independent draws, the bulk ESS is
    # close to the number of draws.
    summary = az.summary(idata, var_names=["w"])
    assert list(summary.index) == ["w[a]", "w[b]", "w[c]"]
    np.testing.assert_allclose(summary["mean"].values, draws["w"].mean(0), atol=1e-3)
    ess = az.ess(idata, var_names=["w"])["w"].values
    assert np.all(ess > 200)


@pytest.mark.parametrize(
    "draws, match",
    [
        ({}, "draws is empty"),
        ({"w": np.float64(1.0)}, "leading draw axis"),
        ({"w": np.zeros((5, 2)), "v": np.zeros(4)}, "disagree"),
        ({"w": np.array([np.nan])}, "NaN"),
    ],
)
def test_variational_draws_validation(draws, match):
    from probsparse.diagnostics import variational_draws_to_inference_data

    with pytest.raises(ValueError, match=match):
        variational_draws_to_inference_data(draws)
