"""Horseshoe, GroupHorseshoe and RegularizedHorseshoe: densities, shrinkage-factor law, slab cap, groups."""

import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from scipy import stats

from probsparse.priors import GroupHorseshoe, Horseshoe, RegularizedHorseshoe


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _trace(prior, shape, *, plate=None, data=None):
    model = lambda: prior.sample("w", shape)  # noqa: E731
    if data is not None:
        model = poutine.condition(model, data=data)
    if plate is None:
        return poutine.trace(model).get_trace()
    with pyro.plate("draws", plate, dim=-1):  # batch dims sit left of the weight's event dims
        return poutine.trace(model).get_trace()


def _value(trace, name):
    return trace.nodes[name]["value"].numpy()


@pytest.mark.parametrize(
    "prior, shape",
    [(Horseshoe(0.3), (3, 4)), (Horseshoe(groups="input"), (3, 4)), (GroupHorseshoe(2.0, groups="output"), (3, 4))],
    ids=repr,
)
def test_horseshoe_log_density_against_scipy(prior, shape):
    trace = _trace(prior, shape)
    tau, lam, raw = _value(trace, "w_tau"), _value(trace, "w_lambda"), _value(trace, "w_raw")
    assert lam.shape == tuple(torch.Size(prior._group_shape(torch.Size(shape))))
    expected = (
        stats.halfcauchy.logpdf(tau, scale=prior.global_scale)
        + stats.halfcauchy.logpdf(lam).sum()
        + stats.norm.logpdf(raw).sum()
    )
    np.testing.assert_allclose(trace.log_prob_sum().item(), expected, rtol=1e-12)


def test_regularized_horseshoe_log_density_against_scipy():
    prior = RegularizedHorseshoe(0.2, slab_scale=1.5, slab_df=3.0)
    trace = _trace(prior, (5,))
    tau, lam, c2, raw = (_value(trace, k) for k in ("w_tau", "w_lambda", "w_c2", "w_raw"))
    # InvGamma(nu/2, nu s^2/2) in scipy's (shape, scale) form.
    expected = (
        stats.halfcauchy.logpdf(tau, scale=0.2)
        + stats.halfcauchy.logpdf(lam).sum()
        + stats.invgamma.logpdf(c2, a=1.5, scale=1.5 * 1.5**2)
        + stats.norm.logpdf(raw).sum()
    )
    np.testing.assert_allclose(trace.log_prob_sum().item(), expected, rtol=1e-12)
    # The effective scale, written out from Piironen and Vehtari's lambda-tilde.
    lam_tilde = np.sqrt(c2 * lam**2 / (c2 + tau**2 * lam**2))
    np.testing.assert_allclose(_value(trace, "w_scale"), tau * lam_tilde, rtol=1e-12)
    np.testing.assert_allclose(_value(trace, "w"), tau * lam_tilde * raw, rtol=1e-12)


def test_shrinkage_factor_is_beta_half_half_given_unit_global_scale():
    # kappa = 1 / (1 + tau^2 lambda^2) is Beta(1/2, 1/2) when tau = 1 (Carvalho et al.); tau is conditioned on
    # 1, since with a random tau ~ C+(0, 1) kappa's law is wider.
    trace = _trace(Horseshoe(1.0), (5,), plate=20000, data={"w_tau": torch.tensor(1.0)})
    kappa = _value(trace, "w_kappa")
    assert kappa.shape == (20000, 5)
    assert stats.kstest(kappa.ravel(), stats.beta(0.5, 0.5).cdf).pvalue > 1e-3
    # A wrong law is detected at this sample size: with tau = 2 kappa is not Beta(1/2, 1/2).
    wider = _value(_trace(Horseshoe(1.0), (5,), plate=20000, data={"w_tau": torch.tensor(2.0)}), "w_kappa")
    assert stats.kstest(wider.ravel(), stats.beta(0.5, 0.5).cdf).pvalue < 1e-6


def test_global_and_local_scales_are_half_cauchy():
    trace = _trace(Horseshoe(0.1), (4,), plate=20000)
    tau, lam = _value(trace, "w_tau"), _value(trace, "w_lambda")
    assert tau.shape == (20000,) and lam.shape == (20000, 4)
    assert stats.kstest(tau.ravel(), stats.halfcauchy(scale=0.1).cdf).pvalue > 1e-3
    assert stats.kstest(lam.ravel(), stats.halfcauchy().cdf).pvalue > 1e-3
    # Quantiles of the product tau * lambda: log tau + log lambda is a sum of two independent logistic-like
    # variables, symmetric about log(0.1).
    np.testing.assert_allclose(np.median(_value(trace, "w_scale")), 0.1, rtol=0.05)


def test_regularized_horseshoe_scale_never_exceeds_the_slab():
    prior = RegularizedHorseshoe(1.0, slab_scale=0.5, slab_df=2.0)
    trace = _trace(prior, (10,), plate=5000)
    scale, c2 = _value(trace, "w_scale"), _value(trace, "w_c2")[:, None]
    tau, lam = _value(trace, "w_tau")[:, None], _value(trace, "w_lambda")
    assert np.all(scale <= np.sqrt(c2) * (1 + 1e-12))
    assert np.all(scale <= tau * lam * (1 + 1e-12))
    # Half-Cauchy scales are often far above c, where the cap binds: tau * lambda-tilde -> c.
    big = tau * lam > 100 * np.sqrt(c2)
    assert big.sum() > 100
    np.testing.assert_allclose(scale[big], np.broadcast_to(np.sqrt(c2), scale.shape)[big], rtol=1e-4)
    # c^2 ~ InvGamma(nu/2, nu s^2/2).
    assert stats.kstest(c2.ravel(), stats.invgamma(1.0, scale=0.25).cdf).pvalue > 1e-3


def test_regularized_horseshoe_is_finite_for_huge_local_scales():
    prior = RegularizedHorseshoe(1.0, slab_scale=1.0)
    # tau * lambda = 1e200, 1e100 and 1e-200: the first squares to inf, the last to 0; the scale is then c and
    # tau * lambda.
    data = {"w_tau": torch.tensor(1e100), "w_lambda": torch.tensor([1e100, 1.0, 1e-300]), "w_c2": torch.tensor(4.0)}
    scale = _value(_trace(prior, (3,), data=data), "w_scale")
    np.testing.assert_allclose(scale, [2.0, 2.0, 1e-200], rtol=1e-12)


def test_group_horseshoe_shares_lambda_within_a_group():
    trace = _trace(GroupHorseshoe(groups="input"), (3, 4))
    assert _value(trace, "w_lambda").shape == (1, 4)
    scale = np.broadcast_to(_value(trace, "w_scale"), (3, 4))
    np.testing.assert_array_equal(scale, np.broadcast_to(scale[:1], (3, 4)))
    trace = _trace(GroupHorseshoe(groups="channel"), (6, 2, 3, 3))
    assert _value(trace, "w_lambda").shape == (6, 1, 1, 1)


def test_recommended_global_scale():
    assert Horseshoe.recommended_global_scale(100, 10, 400, noise_scale=2.0) == pytest.approx(10 / 90 * 2.0 / 20.0)
    with pytest.raises(ValueError, match="expected_nonzero"):
        Horseshoe.recommended_global_scale(10, 10, 50)
    with pytest.raises(ValueError, match="noise_scale"):
        Horseshoe.recommended_global_scale(10, 2, 50, noise_scale=0.0)
    with pytest.raises(TypeError, match="n_samples"):
        Horseshoe.recommended_global_scale(10, 2, 50.0)


@pytest.mark.parametrize(
    "build, exc, match",
    [
        (lambda: Horseshoe(0.0), ValueError, "global_scale"),
        (lambda: Horseshoe(-1.0), ValueError, "global_scale"),
        (lambda: Horseshoe(math.nan), ValueError, "global_scale"),
        (lambda: GroupHorseshoe(-2.0), ValueError, "global_scale"),
        (lambda: GroupHorseshoe(groups=None), ValueError, "group"),
        (lambda: RegularizedHorseshoe(slab_scale=0.0), ValueError, "slab_scale"),
        (lambda: RegularizedHorseshoe(slab_scale=-1.0), ValueError, "slab_scale"),
        (lambda: RegularizedHorseshoe(slab_df=0.0), ValueError, "slab_df"),
        (lambda: RegularizedHorseshoe(slab_df=-3.0), ValueError, "slab_df"),
        (lambda: RegularizedHorseshoe(slab_df=math.inf), ValueError, "slab_df"),
        (lambda: RegularizedHorseshoe(global_scale=0.0), ValueError, "global_scale"),
        (lambda: Horseshoe(groups="rows"), ValueError, "groups"),
    ],
)
def test_bad_arguments(build, exc, match):
    with pytest.raises(exc, match=match):
        build()


def test_group_horseshoe_with_weight_scales_multiplies_a_per_weight_scale():
    prior = GroupHorseshoe(groups="input", weight_scales=True)
    assert list(prior.site_names("w")) == ["w_tau", "w_lambda", "w_eta", "w_scale", "w_kappa", "w_raw", "w"]
    trace = poutine.trace(lambda: prior.sample("w", (4, 3), dtype=torch.float64)).get_trace()
    nodes = trace.nodes
    assert nodes["w_lambda"]["value"].shape == (1, 3) and nodes["w_eta"]["value"].shape == (4, 3)
    expected = nodes["w_tau"]["value"] * nodes["w_lambda"]["value"] * nodes["w_eta"]["value"]
    torch.testing.assert_close(nodes["w_scale"]["value"], expected)
    torch.testing.assert_close(nodes["w"]["value"], expected * nodes["w_raw"]["value"])
    with pytest.raises(TypeError, match="weight_scales"):
        GroupHorseshoe(weight_scales=1)


def test_group_horseshoe_with_weight_scales_on_a_layer_has_exact_posterior_moments():
    from probsparse.nn import BayesianLinear

    layer = BayesianLinear(5, 3, prior=GroupHorseshoe(weight_scales=True), dtype=torch.float64)
    family = layer.weight
    mean, var = family.posterior_moments()
    gen = torch.Generator().manual_seed(0)
    n = 200_000
    eps = {k: torch.randn((n, *v.shape), generator=gen, dtype=v.dtype) for k, v in family.scale_loc.items()}
    s = family._combine(family._draw_scales(eps), family.theta.mean) / family.unit
    w = s * (family.theta.mean + family.theta.std * torch.randn((n, 3, 5), generator=gen, dtype=torch.float64))
    torch.testing.assert_close(mean, w.mean(0), rtol=0.02, atol=1e-3)
    torch.testing.assert_close(var, w.var(0), rtol=0.05, atol=1e-5)
