"""Variational families of the Bayesian layers: KLs and posterior moments against Monte Carlo, per-call moments."""

import math

import pytest
import torch
from torch.distributions import Bernoulli, LogNormal, kl_divergence
from torch.distributions import Normal as TorchNormal

from probsparse.nn import families
from probsparse.nn._scale_kl import QUADRATURE_MAX_ENTRIES
from probsparse.nn.families import (
    CentredScaleMixtureFamily,
    GroupNJFamily,
    ScaleMixtureFamily,
    SparseVDFamily,
    SpikeSlabFamily,
    family_for,
    register_family,
)
from probsparse.priors import (
    ARD,
    GroupHorseshoe,
    GroupNormalJeffreys,
    Horseshoe,
    LogUniform,
    Normal,
    RegularizedHorseshoe,
    SpikeAndSlab,
    WeightPrior,
)
from probsparse.priors.jeffreys import molchanov_neg_kl

DTYPE = torch.float64
SHAPE = torch.Size((3, 4))


@pytest.fixture(autouse=True)
def _float64():
    # References built from Python floats (torch.distributions parameters) must be float64 too.
    old = torch.get_default_dtype()
    torch.set_default_dtype(DTYPE)
    yield
    torch.set_default_dtype(old)


def _family(prior, shape=SHAPE, seed=3):
    gen = torch.Generator().manual_seed(seed)
    init = 0.5 * torch.randn(shape, generator=gen, dtype=DTYPE)
    return family_for(prior, shape, init, math.log(0.3))


def _scale_std(family, key):
    return family.scale_log_std[key].exp()


def _unit(family):
    """Units theta is stored in (a scale mixture keeps unit * theta, so that steps have the weights' size)."""
    return getattr(family, "unit", 1.0)


def _mu(family):
    """Mean of the Gaussian factor theta, in its model units (prior N(0, 1) for the scale mixtures)."""
    return family.theta.mean / _unit(family)


def _sigma(family):
    return family.theta.std / _unit(family)


def _spread(family, seed=5, scale_std=(0.1, 0.4)):
    """Give the family's parameters varied values (the initial ones are all alike)."""
    gen = torch.Generator().manual_seed(seed)

    def uniform(shape, low, high):
        return low + (high - low) * torch.rand(shape, generator=gen, dtype=DTYPE)

    with torch.no_grad():
        if hasattr(family, "theta") and isinstance(family.theta, torch.nn.Module):
            unit = _unit(family)
            family.theta.mean.copy_(unit * torch.randn(family.theta.mean.shape, generator=gen, dtype=DTYPE))
            family.theta.log_std.copy_((unit * uniform(family.theta.mean.shape, 0.2, 1.0)).log())
        if isinstance(family, (ScaleMixtureFamily, CentredScaleMixtureFamily)):
            for key, loc in family.scale_loc.items():
                loc.copy_(uniform(loc.shape, -1.0, 0.5))
                if key in family.scale_log_std:
                    family.scale_log_std[key].copy_(uniform(loc.shape, *scale_std).log())
    return family


@pytest.mark.parametrize(
    "prior, expected",
    [
        (Normal(), ScaleMixtureFamily),
        (Horseshoe(), ScaleMixtureFamily),
        (GroupHorseshoe(), ScaleMixtureFamily),
        (RegularizedHorseshoe(), ScaleMixtureFamily),
        (ARD(), ScaleMixtureFamily),
        (ARD(precision_prior=(2.0, 1.0)), ScaleMixtureFamily),
        (SpikeAndSlab(), SpikeSlabFamily),
        (LogUniform(), SparseVDFamily),
        (LogUniform(groups="input"), GroupNJFamily),
        (GroupNormalJeffreys(), GroupNJFamily),
    ],
    ids=repr,
)
def test_family_for_each_prior(prior, expected):
    family = _family(prior)
    assert type(family) is expected
    assert family.shape == SHAPE and family.prior is prior
    mean, var = family.posterior_moments()
    assert mean.shape == var.shape == SHAPE and mean.dtype == DTYPE
    assert family.kl().shape == ()


def test_unknown_prior_raises_listing_the_known_ones(monkeypatch):
    class Laplace(WeightPrior):
        def sample(self, name, shape, *, dtype=None, device=None):
            raise NotImplementedError

        def site_names(self, name):
            return {name: "sample"}

    with pytest.raises(TypeError, match=r"Laplace.*known priors.*ScaleMixturePrior.*register_family"):
        _family(Laplace())
    # Registering a family makes the prior usable (the registry is restored after the test).
    monkeypatch.setattr(families, "_FAMILIES", dict(families._FAMILIES))
    register_family(Laplace)(lambda prior, shape, init, log_std: SparseVDFamily(prior, shape, init, log_std))
    assert isinstance(_family(Laplace()), SparseVDFamily)


# ------------------------------------------------------------------------------------- scale mixtures


def _scale_kl_monte_carlo(family, n_draws=100_000):
    """Sum over scale variables of E_q[log q(u) - log p_u(u)], u = log phi, and its standard error."""
    total = torch.zeros((), dtype=DTYPE)
    variance = torch.zeros((), dtype=DTYPE)
    gen = torch.Generator().manual_seed(11)
    for key, prior in family._priors.items():
        loc, std = family.scale_loc[key].detach(), _scale_std(family, key).detach()
        q = TorchNormal(loc, std)
        u = loc + std * torch.randn((n_draws,) + loc.shape, generator=gen, dtype=DTYPE)
        # Density of u = log phi under the prior: p_phi(e^u) e^u.
        log_ratio = q.log_prob(u) - (prior.log_prob(u.exp()) + u)
        per_draw = log_ratio.reshape(n_draws, -1).sum(1)
        total = total + per_draw.mean()
        variance = variance + per_draw.var() / n_draws
    return total, variance.sqrt()


@pytest.mark.parametrize(
    "prior",
    [
        Horseshoe(0.3),
        GroupHorseshoe(groups="output"),
        RegularizedHorseshoe(0.5, slab_scale=1.0, slab_df=3.0, groups="input"),
        ARD(precision_prior=(2.0, 0.5)),
    ],
    ids=repr,
)
def test_scale_mixture_kl_against_monte_carlo(prior):
    family = _spread(_family(prior), scale_std=(0.2, 1.0))
    with torch.no_grad():
        kl = family.kl()
    theta = TorchNormal(_mu(family).detach(), _sigma(family).detach())
    kl_theta = kl_divergence(theta, TorchNormal(0.0, 1.0)).sum()
    estimate, std_error = _scale_kl_monte_carlo(family)
    # Sharp enough to see a missing Jacobian term (u per entry) or a wrong entropy.
    assert std_error < 0.02 * abs(kl - kl_theta)
    assert abs((kl - kl_theta) - estimate) < 5 * std_error + 1e-6 * abs(estimate)


def test_scale_kl_of_a_large_variable_is_an_unbiased_one_draw_estimate(monkeypatch):
    # Above a size threshold E_q[log p] is estimated with one reparameterised draw instead of the quadrature:
    # its average over calls must be the quadrature value.
    shape = torch.Size((40, 150))
    family = _spread(_family(Horseshoe(0.3), shape=shape), scale_std=(0.2, 1.0))
    assert family.scale_loc["lambda"].numel() > QUADRATURE_MAX_ENTRIES
    with torch.no_grad():
        draws = torch.stack([family.kl() for _ in range(400)])
        monkeypatch.setattr(families, "QUADRATURE_MAX_ENTRIES", shape.numel())
        quadrature = family.kl()
    assert draws.std() > 0  # the estimate is random
    assert abs(draws.mean() - quadrature) < 5 * draws.std() / math.sqrt(len(draws))


def test_normal_family_kl_is_closed_form_on_the_weights():
    prior = Normal(0.4)
    family = _spread(_family(prior))
    assert len(family.scale_loc) == 0
    # w = 0.4 theta: KL(N(0.4 mu, 0.4^2 sigma^2) || N(0, 0.4^2)) on the weights.
    q = TorchNormal(0.4 * _mu(family), 0.4 * _sigma(family))
    torch.testing.assert_close(family.kl(), kl_divergence(q, TorchNormal(0.0, 0.4)).sum(), rtol=1e-12, atol=1e-12)
    mean, var = family.posterior_moments()
    torch.testing.assert_close(mean, 0.4 * _mu(family).detach())
    torch.testing.assert_close(var, (0.4 * _sigma(family).detach()).square())


def test_type2_ard_scale_is_a_point_estimate_without_kl():
    family = _spread(_family(ARD()))
    assert set(family.scale_loc) == {"gamma"} and len(family.scale_log_std) == 0
    theta = TorchNormal(_mu(family), _sigma(family))
    torch.testing.assert_close(family.kl(), kl_divergence(theta, TorchNormal(0.0, 1.0)).sum())
    # The scale is deterministic: exp(loc) = gamma, so w has sd sqrt(gamma) * sigma.
    mean, var = family.sample_moments()
    gamma = family.scale_loc["gamma"].exp()
    torch.testing.assert_close(mean, gamma.sqrt() * _mu(family))
    torch.testing.assert_close(var, gamma * _sigma(family).square())


@pytest.mark.parametrize("prior", [Horseshoe(0.3), RegularizedHorseshoe(0.5, groups="input")], ids=repr)
def test_sample_moments_are_conditional_on_one_scale_draw(prior):
    family = _spread(_family(prior))
    torch.manual_seed(123)
    mean, var = family.sample_moments()
    torch.manual_seed(123)
    scales = {}
    for key, loc in family.scale_loc.items():  # the same order and draws as the family's own
        scales[key] = (loc + _scale_std(family, key) * torch.randn_like(loc)).exp()
    s = prior.effective_scale(scales)
    torch.testing.assert_close(mean, s * _mu(family), rtol=1e-14, atol=0)
    torch.testing.assert_close(var, s.square() * _sigma(family).square(), rtol=1e-14, atol=0)


def test_horseshoe_scale_draws_follow_the_log_normal_posterior():
    # Over calls, s = tau * lambda is log-normal with log-mean m_tau + m_lambda and log-variance v_tau + v_lambda.
    family = _spread(_family(Horseshoe(0.3)))
    n = 4000
    with torch.no_grad():
        log_s = torch.stack([(family.sample_moments()[0] / _mu(family)).log() for _ in range(n)])
    loc = family.scale_loc["tau"] + family.scale_loc["lambda"]
    var = _scale_std(family, "tau").square() + _scale_std(family, "lambda").square()
    assert torch.all((log_s.mean(0) - loc).abs() < 5 * (var / n).sqrt())
    assert torch.all((log_s.var(0) / var - 1).abs() < 5 * math.sqrt(2 / n))


def test_scale_mixture_posterior_moments_with_degenerate_scales_are_exact():
    prior = RegularizedHorseshoe(0.5, groups="input")
    family = _spread(_family(prior), scale_std=(1e-9, 2e-9))
    mean, var = family.posterior_moments()
    s = prior.effective_scale({k: v.exp() for k, v in family.scale_loc.items()})
    torch.testing.assert_close(mean, s * _mu(family), rtol=1e-7, atol=0)
    torch.testing.assert_close(var, s.square() * _sigma(family).square(), rtol=1e-7, atol=0)


def test_horseshoe_posterior_moments_against_log_normal_closed_form():
    # w = tau * lambda * theta: E[s] = exp(m + v / 2), E[s^2] = exp(2m + 2v) with m, v the log-scale sums.
    family = _spread(_family(Horseshoe(0.3)), scale_std=(0.05, 0.1))
    mean, var = family.posterior_moments()
    loc = family.scale_loc["tau"] + family.scale_loc["lambda"]
    log_var = _scale_std(family, "tau").square() + _scale_std(family, "lambda").square()
    e_s, e_s2 = (loc + log_var / 2).exp(), (2 * loc + 2 * log_var).exp()
    mu, sigma2 = _mu(family).detach(), _sigma(family).detach().square()
    exact_mean = (e_s * mu).detach()
    exact_var = (e_s2 * (mu.square() + sigma2) - exact_mean.square()).detach()
    # posterior_moments averages the scales over 64 fixed draws: its relative error is about cv(s) / 8.
    cv = LogNormal(loc, log_var.sqrt()).stddev / e_s
    tol = (5 * cv / math.sqrt(64)).detach()
    assert torch.all((mean - exact_mean).abs() <= tol * exact_mean.abs())
    assert torch.all((var - exact_var).abs() <= 2 * tol * exact_var)
    # The theta variance is a large part of Var[w] here, so dropping it would fail the check above.
    assert torch.all(e_s2 * sigma2 > 4 * tol.detach() * exact_var)


def test_regularized_horseshoe_posterior_moments_against_monte_carlo():
    prior = RegularizedHorseshoe(0.5, slab_scale=0.8, groups="output")
    family = _spread(_family(prior), scale_std=(0.05, 0.1))
    mean, var = family.posterior_moments()
    n = 50_000
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        scales = {
            k: (loc + _scale_std(family, k) * torch.randn((n,) + loc.shape, generator=gen)).exp()
            for k, loc in family.scale_loc.items()
        }
        s = prior.effective_scale(scales)
        w = s * (_mu(family) + _sigma(family) * torch.randn((n,) + SHAPE, generator=gen))
    torch.testing.assert_close(mean, w.mean(0), rtol=0.05, atol=5 * (w.var(0) / n).sqrt().max().item())
    torch.testing.assert_close(var, w.var(0), rtol=0.1, atol=0)


# ------------------------------------------------------------------------------------- spike and slab


def _spike_slab_family(prior):
    family = _spread(_family(prior))
    gen = torch.Generator().manual_seed(9)
    with torch.no_grad():
        family.inclusion_logit.copy_(2.0 * torch.randn(SHAPE, generator=gen, dtype=DTYPE))
    return family


def test_spike_slab_kl_against_monte_carlo():
    prior = SpikeAndSlab(slab_scale=0.8, spike_scale=0.05, inclusion_prior=0.2)
    family = _spike_slab_family(prior)
    phi, mu, sigma = (torch.sigmoid(family.inclusion_logit), _mu(family), _sigma(family))
    phi, mu, sigma = phi.detach(), mu.detach(), sigma.detach()
    n = 200_000
    gen = torch.Generator().manual_seed(2)
    xi = torch.rand((n,) + SHAPE, generator=gen, dtype=DTYPE) < phi
    eps = torch.randn((n,) + SHAPE, generator=gen, dtype=DTYPE)
    w = torch.where(xi, mu + sigma * eps, prior.spike_scale * eps)
    slab_q, slab_p, spike = TorchNormal(mu, sigma), TorchNormal(0.0, prior.slab_scale), TorchNormal(0.0, 0.05)
    log_q = Bernoulli(probs=phi).log_prob(xi.double()) + torch.where(xi, slab_q.log_prob(w), spike.log_prob(w))
    log_p = Bernoulli(probs=torch.tensor(0.2, dtype=DTYPE)).log_prob(xi.double()) + torch.where(
        xi, slab_p.log_prob(w), spike.log_prob(w)
    )
    per_draw = (log_q - log_p).reshape(n, -1).sum(1)
    estimate, std_error = per_draw.mean(), per_draw.std() / math.sqrt(n)
    kl = family.kl().detach()
    assert std_error < 0.02 * kl
    assert abs(kl - estimate) < 5 * std_error


def test_spike_slab_moments_against_monte_carlo():
    prior = SpikeAndSlab(slab_scale=0.8, spike_scale=0.05, inclusion_prior=0.2)
    family = _spike_slab_family(prior)
    mean, var = family.posterior_moments()
    sample_mean, sample_var = family.sample_moments()
    torch.testing.assert_close(sample_mean, mean, rtol=0, atol=0)
    torch.testing.assert_close(sample_var, var, rtol=0, atol=0)
    n = 200_000
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        phi = torch.sigmoid(family.inclusion_logit)
        xi = torch.rand((n,) + SHAPE, generator=gen, dtype=DTYPE) < phi
        eps = torch.randn((n,) + SHAPE, generator=gen, dtype=DTYPE)
        w = torch.where(xi, _mu(family) + _sigma(family) * eps, prior.spike_scale * eps)
    assert torch.all((mean - w.mean(0)).abs() < 5 * (w.var(0) / n).sqrt())
    torch.testing.assert_close(var, w.var(0), rtol=0.03, atol=1e-5)
    # The layer's mean weight is differentiable (used by the posterior-mean forward) and equals E[w].
    mean_weight = family.mean_weight()
    assert mean_weight.requires_grad
    torch.testing.assert_close(mean_weight.detach(), mean)
    torch.testing.assert_close(family.extra_scores()["inclusion_prob"], phi)


# ------------------------------------------------------------------------------ log-uniform families


def test_sparse_vd_kl_is_molchanov_with_clipped_log_alpha():
    family = _family(LogUniform())
    with torch.no_grad():
        family.theta.copy_(torch.tensor([[1.0, -0.5, 0.0, 2.0]] * 3, dtype=DTYPE))
        family.log_sigma2.copy_(torch.tensor([[0.0, -3.0, -1.0, 50.0]] * 3, dtype=DTYPE))
    expected_log_alpha = torch.tensor([[0.0, -3.0 - math.log(0.25), 8.0, 8.0]] * 3, dtype=DTYPE)
    torch.testing.assert_close(family.log_alpha(), expected_log_alpha)
    torch.testing.assert_close(family.kl(), -molchanov_neg_kl(expected_log_alpha).sum())
    torch.testing.assert_close(family.extra_scores()["log_alpha"], expected_log_alpha)
    mean, var = family.posterior_moments()
    torch.testing.assert_close(mean, family.theta.detach())
    torch.testing.assert_close(var, family.log_sigma2.exp().detach())
    assert family.sample_moments()[0] is family.theta


def _group_nj_family(groups="input"):
    family = _spread(_family(GroupNormalJeffreys(groups=groups)))
    gen = torch.Generator().manual_seed(6)
    with torch.no_grad():
        family.z_mean.copy_(1.0 + 0.5 * torch.randn(family.z_mean.shape, generator=gen, dtype=DTYPE))
        family.z_log_var.copy_(-2.0 + torch.randn(family.z_mean.shape, generator=gen, dtype=DTYPE))
    return family


def test_group_nj_kl_gaussian_part_against_monte_carlo():
    family = _group_nj_family()
    assert family.z_mean.shape == (1, 4)
    log_alpha = family.z_log_var - (family.z_mean.square() + 1e-16).log()
    group_part = -molchanov_neg_kl(log_alpha.clamp(-8, 8)).sum()
    gaussian_part = (family.kl() - group_part).detach()
    mu, sigma = _mu(family).detach(), _sigma(family).detach()
    n = 200_000
    theta = mu + sigma * torch.randn((n,) + SHAPE, dtype=DTYPE)
    log_ratio = TorchNormal(mu, sigma).log_prob(theta) - TorchNormal(0.0, 1.0).log_prob(theta)
    per_draw = log_ratio.reshape(n, -1).sum(1)
    assert abs(gaussian_part - per_draw.mean()) < 5 * per_draw.std() / math.sqrt(n)
    assert per_draw.std() / math.sqrt(n) < 0.02 * gaussian_part


def test_group_nj_moments_against_monte_carlo():
    family = _group_nj_family()
    mean, var = family.posterior_moments()
    n = 200_000
    with torch.no_grad():
        z = family.z_mean + (0.5 * family.z_log_var).exp() * torch.randn((n,) + family.z_mean.shape, dtype=DTYPE)
        w = z * (_mu(family) + _sigma(family) * torch.randn((n,) + SHAPE, dtype=DTYPE))
    assert torch.all((mean - w.mean(0)).abs() < 5 * (w.var(0) / n).sqrt())
    torch.testing.assert_close(var, w.var(0), rtol=0.03, atol=0)
    torch.testing.assert_close(family.mean_weight().detach(), mean)
    # The group's log alpha, broadcast to the weight shape and constant down a column (an input neuron).
    score = family.extra_scores()["log_alpha"]
    assert score.shape == SHAPE
    torch.testing.assert_close(score, family.log_alpha().expand(SHAPE))


def test_group_nj_sample_moments_draw_one_z_per_call():
    family = _group_nj_family(groups="output")
    torch.manual_seed(5)
    mean, var = family.sample_moments()
    torch.manual_seed(5)
    z = family.z_mean + (0.5 * family.z_log_var).exp() * torch.randn_like(family.z_mean)
    torch.testing.assert_close(mean, z * _mu(family), rtol=1e-14, atol=0)
    torch.testing.assert_close(var, z.square() * _sigma(family).square(), rtol=1e-14, atol=0)


# ------------------------------------------------------------------------------------- centred scale mixtures


def _centred(prior, seed=3):
    gen = torch.Generator().manual_seed(seed)
    init = 0.5 * torch.randn(SHAPE, generator=gen, dtype=DTYPE)
    return _spread(family_for(prior, SHAPE, init, math.log(0.3), parameterisation="centred"), scale_std=(0.2, 0.8))


@pytest.mark.parametrize(
    "prior", [Horseshoe(0.3), GroupHorseshoe(groups="input"), ARD(precision_prior=(2.0, 0.5)), ARD()], ids=repr
)
def test_centred_kl_against_monte_carlo_over_the_scales(prior):
    # E_q(phi)[KL(q(w) || N(0, s(phi)^2))] by sampling the scales, plus the scales' own KL by Monte Carlo.
    family = _centred(prior)
    gen = torch.Generator().manual_seed(13)
    n_draws = 20_000
    with torch.no_grad():
        kl = family.kl()
        scales = {}
        for key, loc in family.scale_loc.items():
            std = family.scale_log_std[key].exp() if key in family.scale_log_std else torch.zeros_like(loc)
            scales[key] = (loc + std * torch.randn((n_draws,) + loc.shape, generator=gen, dtype=DTYPE)).exp()
        s = torch.as_tensor(prior.effective_scale(scales))
        q = TorchNormal(family.theta.mean, family.theta.std)
        per_draw = kl_divergence(q, TorchNormal(torch.zeros(()), s)).reshape(n_draws, -1).sum(1)
    scale_kl, scale_se = _scale_kl_monte_carlo(family) if family.scale_log_std else (0.0, 0.0)
    estimate = per_draw.mean() + scale_kl
    std_error = math.sqrt(float(per_draw.var()) / n_draws + float(scale_se) ** 2)
    assert abs(float(kl) - float(estimate)) < 5 * std_error + 1e-9 * abs(float(estimate))


def test_centred_family_with_a_fixed_scale_is_the_normal_family():
    prior = Normal(0.4)
    centred, plain = _centred(prior), _spread(_family(prior))
    with torch.no_grad():
        centred.theta.mean.copy_(0.4 * _mu(plain))
        centred.theta.log_std.copy_((0.4 * _sigma(plain)).log())
    torch.testing.assert_close(centred.kl(), plain.kl(), rtol=1e-12, atol=1e-12)
    for got, want in zip(centred.posterior_moments(), plain.posterior_moments(), strict=True):
        torch.testing.assert_close(got, want)


def test_centred_forward_needs_only_the_weights_posterior():
    family = _centred(GroupHorseshoe(groups="input"))
    mean, var, in_scale, out_scale = family.sample_factors()
    assert in_scale is None and out_scale is None
    torch.testing.assert_close(mean, family.theta.mean)
    torch.testing.assert_close(var, family.theta.var())
    torch.testing.assert_close(family.posterior_moments()[1], family.theta.var())


@pytest.mark.parametrize(
    "prior", [RegularizedHorseshoe(), SpikeAndSlab(), LogUniform(), GroupNormalJeffreys()], ids=repr
)
def test_centred_parameterisation_needs_a_product_form_scale(prior):
    with pytest.raises(ValueError, match="parameterisation='centred' needs a scale mixture"):
        family_for(prior, SHAPE, torch.zeros(SHAPE), -3.0, parameterisation="centred")


def test_unknown_parameterisation_raises():
    with pytest.raises(ValueError, match="parameterisation must be one of"):
        family_for(Normal(), SHAPE, torch.zeros(SHAPE), -3.0, parameterisation="centered")
