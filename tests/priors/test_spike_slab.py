"""SpikeAndSlab: mixture density, marginal variance, inclusion probability by Bayes' rule, plates, bad input."""

import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from scipy import stats

from probsparse.priors import SpikeAndSlab


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _mixture_logpdf(w, pi, s1, s0):
    return np.logaddexp(np.log(pi) + stats.norm.logpdf(w, scale=s1), np.log1p(-pi) + stats.norm.logpdf(w, scale=s0))


def test_sites_and_log_density_against_scipy():
    prior = SpikeAndSlab(slab_scale=1.5, spike_scale=0.05, inclusion_prior=0.3)
    trace = poutine.trace(lambda: prior.sample("w", (3, 4))).get_trace()
    assert [k for k, v in trace.nodes.items() if v["type"] == "sample"] == list(prior.site_names("w"))
    assert trace.nodes["w_inclusion_prob"]["infer"].get("_deterministic")
    w = trace.nodes["w"]["value"].numpy()
    assert w.shape == (3, 4)
    np.testing.assert_allclose(trace.log_prob_sum().item(), _mixture_logpdf(w, 0.3, 1.5, 0.05).sum(), rtol=1e-12)
    # At fixed points too (covering both components' regions), not only at draws.
    grid = torch.tensor([0.0, 0.01, 0.1, 1.0, -3.0])
    got = prior.distribution(torch.zeros(5)).log_prob(grid).numpy()
    np.testing.assert_allclose(got, _mixture_logpdf(grid.numpy(), 0.3, 1.5, 0.05), rtol=1e-12)


def test_inclusion_probability_is_bayes_rule():
    pi, s1, s0 = 0.2, 2.0, 0.1
    prior = SpikeAndSlab(slab_scale=s1, spike_scale=s0, inclusion_prior=pi)
    w = np.array([0.0, 0.05, 0.2, 0.35, 1.0, -4.0])
    slab, spike = pi * stats.norm.pdf(w, scale=s1), (1 - pi) * stats.norm.pdf(w, scale=s0)
    np.testing.assert_allclose(prior.inclusion_probability(torch.tensor(w)).numpy(), slab / (slab + spike), rtol=1e-12)
    # The site records it for the sampled weights.
    trace = poutine.trace(lambda: prior.sample("w", (6,))).get_trace()
    drawn = trace.nodes["w"]["value"]
    torch.testing.assert_close(trace.nodes["w_inclusion_prob"]["value"], prior.inclusion_probability(drawn))


def test_inclusion_probability_saturates_without_nan():
    prior = SpikeAndSlab(slab_scale=1.0, spike_scale=1e-3, inclusion_prior=0.5)
    p = prior.inclusion_probability(torch.tensor([0.0, 1e3, -1e150]))
    assert torch.all(torch.isfinite(p))
    assert p[0] < 0.01 and p[1] == 1.0 and p[2] == 1.0


def test_marginal_variance_and_inclusion_rate():
    pi, s1, s0 = 0.3, 1.0, 0.05
    prior = SpikeAndSlab(slab_scale=s1, spike_scale=s0, inclusion_prior=pi)
    n = 50000
    with pyro.plate("draws", n, dim=-1):
        trace = poutine.trace(lambda: prior.sample("w", (2,))).get_trace()
    w = trace.nodes["w"]["value"]
    assert w.shape == (n, 2)
    variance = pi * s1**2 + (1 - pi) * s0**2
    # Standard error of a sample variance: sqrt((m4 - var^2) / n), with m4 = 3 (pi s1^4 + (1 - pi) s0^4).
    m4 = 3 * (pi * s1**4 + (1 - pi) * s0**4)
    np.testing.assert_allclose(w.var(0).numpy(), variance, atol=5 * math.sqrt((m4 - variance**2) / n))
    # Fraction of draws outside the spike's reach: P(|w| > 5 s0) = pi P(|N(0, s1^2)| > 5 s0) (+ ~1e-6 spike).
    expected = pi * 2 * stats.norm.sf(5 * s0 / s1)
    frac = (w.abs() > 5 * s0).double().mean().item()
    assert abs(frac - expected) < 5 * math.sqrt(expected * (1 - expected) / (2 * n))


def test_sites_broadcast_under_a_plate_at_dim_minus_3():
    with pyro.plate("p", 5, dim=-3):
        trace = poutine.trace(lambda: SpikeAndSlab().sample("w", (3, 4))).get_trace()
    trace.compute_log_prob()
    for name in ("w", "w_inclusion_prob"):
        assert trace.nodes[name]["value"].shape == (5, 1, 1, 3, 4)
        assert trace.nodes[name]["log_prob"].shape == (5, 1, 1)


def test_usable_with_autonormal_svi():
    prior = SpikeAndSlab()
    x = torch.randn(20, 3)
    y = x @ torch.tensor([1.0, 0.0, 0.0]) + 0.1 * torch.randn(20)

    def model(x, y):
        w = prior.sample("w", (3,))
        with pyro.plate("data", len(y)):
            pyro.sample("y", pyro.distributions.Normal(x @ w, 0.1), obs=y)

    guide = AutoNormal(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    losses = [svi.step(x, y) for _ in range(2)]
    assert all(math.isfinite(loss) for loss in losses)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"slab_scale": 0.0}, ValueError, "slab_scale"),
        ({"slab_scale": -1.0}, ValueError, "slab_scale"),
        ({"spike_scale": 0.0}, ValueError, "spike_scale"),
        ({"spike_scale": float("nan")}, ValueError, "spike_scale"),
        ({"slab_scale": 1.0, "spike_scale": 1.0}, ValueError, "spike_scale"),
        ({"slab_scale": 1.0, "spike_scale": 2.0}, ValueError, "spike_scale"),
        ({"inclusion_prior": 0.0}, ValueError, "inclusion_prior"),
        ({"inclusion_prior": 1.0}, ValueError, "inclusion_prior"),
        ({"inclusion_prior": 1.5}, ValueError, "inclusion_prior"),
        ({"inclusion_prior": -0.1}, ValueError, "inclusion_prior"),
        ({"inclusion_prior": "half"}, TypeError, "inclusion_prior"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        SpikeAndSlab(**kwargs)


def test_repr_gives_the_settings():
    assert repr(SpikeAndSlab(2.0, 0.1, 0.25)) == "SpikeAndSlab(slab_scale=2.0, spike_scale=0.1, inclusion_prior=0.25)"
