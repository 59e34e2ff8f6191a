"""LogUniform / GroupNormalJeffreys sites and SVI use, and Molchanov's KL approximation against an integral."""

import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from scipy import integrate, stats

from probsparse.priors import GroupNormalJeffreys, LogUniform
from probsparse.priors.jeffreys import molchanov_neg_kl


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize(
    "prior, shape, scale_shape",
    [
        (LogUniform(), (3, 4), (3, 4)),
        (LogUniform(groups="output"), (3, 4), (3, 1)),
        (GroupNormalJeffreys(), (3, 4), (1, 4)),
        (GroupNormalJeffreys(groups="channel"), (5, 2, 3, 3), (5, 1, 1, 1)),
    ],
    ids=repr,
)
def test_sites_and_log_density(prior, shape, scale_shape):
    log_scale = torch.randn(scale_shape)  # the flat site has no draws: condition it on a value
    model = poutine.condition(lambda: prior.sample("w", shape), data={"w_log_scale": log_scale})
    trace = poutine.trace(model).get_trace()
    assert [k for k, v in trace.nodes.items() if v["type"] == "sample"] == list(prior.site_names("w"))
    raw = trace.nodes["w_raw"]["value"]
    assert raw.shape == shape
    torch.testing.assert_close(trace.nodes["w"]["value"], log_scale.exp() * raw, rtol=1e-14, atol=0)
    # Flat in the log-scale, so the joint density is the unit Gaussian's of raw only.
    np.testing.assert_allclose(trace.log_prob_sum().item(), stats.norm.logpdf(raw.numpy()).sum(), rtol=1e-12)


def test_implied_weight_density_is_log_uniform():
    # p(w) = int N(w | 0, e^{2u}) du is proportional to 1/|w|: its ratio at two points is the inverse ratio.
    def density(w):
        return integrate.quad(lambda u: stats.norm.pdf(w, scale=math.exp(u)), -30, 30, limit=200)[0]

    np.testing.assert_allclose(density(0.1) / density(2.0), 20.0, rtol=1e-6)


def test_sites_broadcast_under_a_plate_at_dim_minus_3():
    with pyro.plate("p", 5, dim=-3):
        trace = poutine.trace(lambda: GroupNormalJeffreys().sample("w", (3, 4))).get_trace()
    trace.compute_log_prob()
    assert trace.nodes["w_log_scale"]["value"].shape == (5, 1, 1, 1, 4)
    assert trace.nodes["w"]["value"].shape == (5, 1, 1, 3, 4)
    for name in ("w_log_scale", "w_raw", "w"):
        assert trace.nodes[name]["log_prob"].shape == (5, 1, 1), name


@pytest.mark.parametrize("prior", [LogUniform(), LogUniform(groups="input"), GroupNormalJeffreys()], ids=repr)
def test_usable_with_autonormal_svi(prior):
    x, y = torch.randn(30, 4), torch.randn(30, 2)

    def model(x, y):
        w = prior.sample("w", (2, 4))
        with pyro.plate("data", len(y)):
            pyro.sample("y", pyro.distributions.Normal(x @ w.T, 1.0).to_event(1), obs=y)

    guide = AutoNormal(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    losses = [svi.step(x, y) for _ in range(2)]
    assert all(math.isfinite(loss) for loss in losses)
    expected = (2, 4) if prior.groups is None else (1, 4)
    assert pyro.param("AutoNormal.locs.w_log_scale").shape == expected


def _neg_kl_up_to_constant(log_alpha):
    """-KL(N(theta, alpha theta^2) || 1/|w|) + C = 1/2 log alpha - E_{eps ~ N(1, alpha)} log|eps| (Molchanov eq. 8)."""
    sd = math.exp(0.5 * log_alpha)

    def f(e):
        return math.log(abs(e)) * stats.norm.pdf(e, loc=1.0, scale=sd)

    # The integrand has an integrable log singularity at 0: integrate either side of it.
    expectation = integrate.quad(f, -np.inf, 0.0, limit=200)[0] + integrate.quad(f, 0.0, np.inf, limit=200)[0]
    return 0.5 * log_alpha - expectation


def test_molchanov_neg_kl_against_numerical_integral():
    log_alphas = np.linspace(-4.0, 4.0, 17)
    approx = molchanov_neg_kl(torch.tensor(log_alphas)).numpy()
    exact = np.array([_neg_kl_up_to_constant(la) for la in log_alphas])
    difference = approx - exact
    # The fit is exact up to one constant (C = -k1 in the paper) to about 0.01 nats.
    assert np.ptp(difference) < 0.02
    np.testing.assert_allclose(difference, -0.63576, atol=0.015)


def test_molchanov_neg_kl_limits_and_shape():
    # -KL -> 0 as alpha -> infinity (the posterior matches the improper prior's shape), and it is increasing.
    values = molchanov_neg_kl(torch.tensor([[-8.0, 0.0], [8.0, 30.0]]))
    assert values.shape == (2, 2)
    assert abs(values[1, 1].item()) < 1e-6
    flat = values.flatten()
    assert torch.all(flat[1:] > flat[:-1])


def test_flat_site_samples_zero_for_initialisation():
    trace = poutine.trace(lambda: LogUniform(groups="input").sample("w", (2, 3))).get_trace()
    torch.testing.assert_close(trace.nodes["w_log_scale"]["value"], torch.zeros(1, 3), rtol=0, atol=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="group"):
        GroupNormalJeffreys(groups=None)
    with pytest.raises(ValueError, match="groups"):
        LogUniform(groups="filters")
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        GroupNormalJeffreys().sample("w", (3,))
    with pytest.raises(ValueError, match="shape"):
        LogUniform().sample("w", (2, 0))
