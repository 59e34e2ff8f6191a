"""SparseLinearModel: sites and shapes, prior predictive moments, vectorisation, input validation."""

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive

from probsparse.models import SparseLinearModel
from probsparse.priors import ARDPrior


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture
def X():
    return torch.as_tensor(np.random.default_rng(0).standard_normal((6, 3)))


def _sites(trace):
    return {name for name, site in trace.nodes.items() if site["type"] in ("sample", "param")}


def test_sites_and_shapes_with_learned_noise(X):
    model = SparseLinearModel(3)
    trace = poutine.trace(model).get_trace(X)
    assert _sites(trace) == {"w_gamma", "w_raw", "w", "noise_scale", "obs", "y"}
    assert trace.nodes["w"]["value"].shape == (3,)
    assert trace.nodes["noise_scale"]["value"].shape == ()
    assert trace.nodes["y"]["value"].shape == (6,)
    assert not trace.nodes["y"]["is_observed"]
    assert trace.nodes["y"]["cond_indep_stack"][0].name == "obs"
    assert model.noise_var is None and model.noise_prior == 1.0 and isinstance(model.prior, ARDPrior)


def test_sites_with_known_noise_and_observed_y(X):
    model = SparseLinearModel(3, prior=ARDPrior(variance=1.0), noise_var=0.5)
    y = torch.arange(6.0)
    trace = poutine.trace(model).get_trace(X, y)
    assert _sites(trace) == {"w_gamma", "w_raw", "w", "obs", "y"}
    assert trace.nodes["y"]["is_observed"]
    torch.testing.assert_close(trace.nodes["_RETURN"]["value"], y)
    assert model.noise_var == 0.5
    # y ~ N(X w, noise_var)
    torch.testing.assert_close(trace.nodes["y"]["fn"].mean, X @ trace.nodes["w"]["value"])
    torch.testing.assert_close(trace.nodes["y"]["fn"].variance, torch.full((6,), 0.5))


def test_dtype_follows_X(X):
    model = SparseLinearModel(3, noise_var=1.0)
    trace = poutine.trace(model).get_trace(X.float(), torch.zeros(6, dtype=torch.float64))
    assert trace.nodes["w"]["value"].dtype == torch.float32
    assert trace.nodes["y"]["value"].dtype == torch.float32  # y is cast to X's dtype
    y = model(np.asarray(X))  # a NumPy float64 array is accepted
    assert y.dtype == torch.float64


def test_prior_predictive_variance(X):
    # Var(y_j) = sigma^2 + sum_i gamma_i X_ji^2 when w_i ~ N(0, gamma_i) and noise ~ N(0, sigma^2).
    gamma = np.array([0.5, 2.0, 1.0])
    noise_var = 0.3
    model = SparseLinearModel(3, prior=ARDPrior(variance=gamma), noise_var=noise_var)
    n = 20000
    y = Predictive(model, num_samples=n, parallel=True)(X)["y"]
    assert y.shape == (n, 6)
    expected = noise_var + (X.numpy() ** 2) @ gamma
    np.testing.assert_allclose(y.var(0).numpy(), expected, rtol=0.06)  # ~1% standard error per entry
    assert np.all(np.abs(y.mean(0).numpy()) < 5 * np.sqrt(expected / n))


def test_vectorised_under_outer_plate(X):
    # Draws under an outer plate broadcast like separate runs: every site gains the batch dim.
    model = SparseLinearModel(3, prior=ARDPrior(precision_prior=(2.0, 1.0)))
    with pyro.plate("batch", 5, dim=-2):
        trace = poutine.trace(model).get_trace(X)
    assert trace.nodes["w"]["value"].shape == (5, 1, 3)
    assert trace.nodes["noise_scale"]["value"].shape == (5, 1)
    assert trace.nodes["y"]["value"].shape == (5, 6)
    w = trace.nodes["w"]["value"][:, 0]  # (5, 3)
    torch.testing.assert_close(trace.nodes["y"]["fn"].mean, w @ X.T)
    scale = trace.nodes["y"]["fn"].stddev
    torch.testing.assert_close(scale, trace.nodes["noise_scale"]["value"].expand(5, 6))


def test_dims():
    dims = SparseLinearModel(3).dims
    assert dims == {"w_gamma": ["feature"], "w_raw": ["feature"], "w": ["feature"], "y": ["obs_id"]}


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"n_features": 0}, ValueError, "n_features"),
        ({"n_features": 2.0}, TypeError, "n_features"),
        ({"n_features": 2, "noise_var": 0.0}, ValueError, "noise_var"),
        ({"n_features": 2, "noise_var": float("nan")}, ValueError, "noise_var"),
        ({"n_features": 2, "noise_prior": -1.0}, ValueError, "noise_prior"),
        ({"n_features": 2, "noise_var": 1.0, "noise_prior": 1.0}, ValueError, "noise_prior"),
        ({"n_features": 2, "prior": "ard"}, TypeError, "prior"),
    ],
)
def test_invalid_constructor_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        SparseLinearModel(**kwargs)


def test_invalid_data(X):
    model = SparseLinearModel(3, noise_var=1.0)
    y = torch.zeros(6)
    bad_X = X.clone()
    bad_X[1, 2] = float("nan")
    bad_y = y.clone()
    bad_y[0] = float("inf")
    cases = [
        ((X[:, :2], y), "n_features=3"),
        ((X[0], None), "X must be 2-D"),
        ((X[:0], None), "X has no rows"),
        ((bad_X, y), "X contains NaN"),
        ((X, bad_y), "y contains NaN"),
        ((X, y[:5]), "different numbers of rows"),
        ((X, y[:, None]), "y must be 1-D"),
        ((1.0, None), "X must be an array"),
    ]
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            model(*args)
    with pytest.raises(TypeError, match="X must hold real numbers"):
        model(X.to(torch.complex128))
