"""ARDPrior: site names and kinds per mode, prior moments by sampling, argument validation."""

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from scipy import stats

from probsparse.priors import ARDPrior, WeightPrior


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _trace(prior, name="w", shape=(4,)):
    return poutine.trace(lambda: prior.sample(name, shape)).get_trace()


def _kinds(trace):
    kinds = {}
    for name, site in trace.nodes.items():
        if site["type"] == "param":
            kinds[name] = "param"
        elif site["type"] == "sample":
            kinds[name] = "deterministic" if site["infer"].get("_deterministic") else "sample"
    return kinds


@pytest.mark.parametrize(
    "prior, expected, type2",
    [
        (ARDPrior(), {"w_gamma": "param", "w_raw": "sample", "w": "deterministic"}, True),
        (
            ARDPrior(variance=2.0),
            {"w_gamma": "deterministic", "w_raw": "sample", "w": "deterministic"},
            False,
        ),
        (ARDPrior(variance=2.0, centred=True), {"w_gamma": "deterministic", "w": "sample"}, False),
        (
            ARDPrior(precision_prior=(2.0, 1.0)),
            {"w_precision": "sample", "w_gamma": "deterministic", "w_raw": "sample", "w": "deterministic"},
            False,
        ),
    ],
)
def test_sites_match_site_names(prior, expected, type2):
    assert isinstance(prior, WeightPrior)
    assert prior.site_names("w") == expected
    assert list(prior.site_names("w")) == list(expected)  # creation order
    trace = _trace(prior)
    assert _kinds(trace) == expected
    assert prior.is_type2 is type2
    for name in expected:
        value = trace.nodes[name]["value"]
        assert value.shape == (4,) and value.dtype == torch.float64
    # The returned tensor is the value of the weight site.
    w = poutine.trace(lambda: prior.sample("v", (4,))).get_trace()
    assert set(prior.site_names("v")) <= set(w.nodes)


def test_non_centred_weights_are_scaled_raw():
    trace = _trace(ARDPrior(variance=[1.0, 4.0, 9.0, 16.0]))
    raw = trace.nodes["w_raw"]["value"]
    torch.testing.assert_close(trace.nodes["w"]["value"], torch.tensor([1.0, 2.0, 3.0, 4.0]) * raw)
    torch.testing.assert_close(trace.nodes["w_gamma"]["value"], torch.tensor([1.0, 4.0, 9.0, 16.0]))


def test_type2_variance_is_a_positive_param_with_init_value():
    prior = ARDPrior(init_variance=0.3)
    prior.sample("w", (3,))
    gamma = pyro.param("w_gamma")
    torch.testing.assert_close(gamma, torch.full((3,), 0.3))
    # Stored unconstrained (log scale under the positive constraint), so the optimiser cannot make it <= 0.
    torch.testing.assert_close(gamma.unconstrained(), torch.full((3,), 0.3).log())


@pytest.mark.parametrize("centred", [False, True])
def test_fixed_variance_gives_prior_variance(centred):
    gamma = np.array([0.5, 2.0, 4.0])
    prior = ARDPrior(variance=gamma, centred=centred)
    n = 20000
    with pyro.plate("draws", n, dim=-1):
        w = prior.sample("w", (3,))  # (n, 3): the event shape broadcasts under the caller's plate
    assert w.shape == (n, 3)
    var = w.var(0).numpy()
    np.testing.assert_allclose(var, gamma, rtol=0.06)  # ~1% standard error per entry
    assert np.all(np.abs(w.mean(0).numpy()) < 5 * np.sqrt(gamma / n))


def test_precision_prior_is_gamma_with_rate():
    # alpha ~ Gamma(a, b) with rate b  =>  E[w^2] = E[1 / alpha] = b / (a - 1).
    a, b = 4.0, 6.0
    prior = ARDPrior(precision_prior=(a, b))
    with pyro.plate("draws", 40000, dim=-1):
        trace = poutine.trace(lambda: prior.sample("w", (2,))).get_trace()
    precision = trace.nodes["w_precision"]["value"]
    np.testing.assert_allclose(precision.mean(0).numpy(), a / b, rtol=0.03)
    torch.testing.assert_close(trace.nodes["w_gamma"]["value"], precision.reciprocal())
    np.testing.assert_allclose(trace.nodes["w"]["value"].var(0).numpy(), b / (a - 1), rtol=0.08)


def test_dtype_and_matrix_shapes():
    w = ARDPrior(variance=1.0).sample("w", (2, 3), dtype=torch.float32)
    assert w.shape == (2, 3) and w.dtype == torch.float32
    w = ARDPrior(variance=torch.ones(3)).sample("w", 3)  # int shape, row-broadcast variance
    assert w.shape == (3,)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"variance": 0.0}, ValueError, "variance"),
        ({"variance": -1.0}, ValueError, "variance"),
        ({"variance": [1.0, -2.0]}, ValueError, "variance"),
        ({"variance": [1.0, float("nan")]}, ValueError, "variance"),
        ({"variance": float("inf")}, ValueError, "variance"),
        ({"variance": []}, ValueError, "variance"),
        ({"variance": "big"}, TypeError, "variance"),
        ({"precision_prior": (0.0, 1.0)}, ValueError, "precision_prior a"),
        ({"precision_prior": (1.0, -1.0)}, ValueError, "precision_prior b"),
        ({"precision_prior": (1.0,)}, ValueError, "precision_prior"),
        ({"variance": 1.0, "precision_prior": (1.0, 1.0)}, ValueError, "precision_prior"),
        ({"centred": True}, ValueError, "centred"),
        ({"precision_prior": (1.0, 1.0), "centred": True}, ValueError, "centred"),
        ({"init_variance": 0.0}, ValueError, "init_variance"),
    ],
)
def test_invalid_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ARDPrior(**kwargs)


def test_invalid_sample_arguments():
    with pytest.raises(ValueError, match="does not broadcast"):
        ARDPrior(variance=[1.0, 2.0]).sample("w", (3,))
    with pytest.raises(ValueError, match="name"):
        ARDPrior().sample("", (3,))
    with pytest.raises(ValueError, match="shape"):
        ARDPrior().sample("w", (0,))
    with pytest.raises(TypeError, match="shape"):
        ARDPrior().sample("w", (2.5,))


# ------------------------------------------------------------------ the Bayesian layers' view of the prior


def test_scale_distributions_hierarchical_match_the_sampled_sites():
    a, b = 3.0, 2.0
    prior = ARDPrior(precision_prior=(a, b))
    shape = torch.Size((2, 3))
    priors = prior.scale_distributions(shape, torch.zeros(()))
    assert list(priors) == ["precision"]
    assert priors["precision"].batch_shape == shape
    trace = _trace(prior, shape=shape)
    precision = trace.nodes["w_precision"]["value"]
    # The same Gamma(a, rate b) density as the site, against scipy's (shape, scale = 1 / rate) form.
    np.testing.assert_allclose(
        priors["precision"].log_prob(precision).numpy(),
        stats.gamma.logpdf(precision.numpy(), a, scale=1.0 / b),
        rtol=1e-12,
    )
    # effective_scale is the standard deviation of w given the scales: sqrt(gamma) = precision^(-1/2).
    scale = prior.effective_scale({"precision": precision})
    torch.testing.assert_close(scale, trace.nodes["w_gamma"]["value"].sqrt())
    torch.testing.assert_close(scale * trace.nodes["w_raw"]["value"], trace.nodes["w"]["value"])


def test_scale_distributions_type2_and_fixed():
    type2 = ARDPrior()
    assert type2.scale_distributions(torch.Size((3,)), torch.zeros(())) == {"gamma": None}
    gamma = torch.tensor([0.25, 4.0, 9.0])
    torch.testing.assert_close(type2.effective_scale({"gamma": gamma}), torch.tensor([0.5, 2.0, 3.0]))
    fixed = ARDPrior(variance=[1.0, 4.0, 16.0])
    assert fixed.scale_distributions(torch.Size((3,)), torch.zeros(())) == {}
    torch.testing.assert_close(fixed.effective_scale({}), torch.tensor([1.0, 2.0, 4.0]))
