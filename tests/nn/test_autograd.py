"""The hand-written backward passes of ``probsparse.nn._autograd`` against autograd on the plain formulas (float64)."""

import math

import pytest
import torch

from probsparse.nn import BayesianLinear
from probsparse.nn._autograd import (
    exp_twice,
    gaussian_kl_sum,
    gaussian_kl_to_scaled_normal,
    linear_local_reparam,
    log_normal_kl,
)
from probsparse.nn.families import _hermite_rule, _log_density_of_log, _log_density_of_log_with_slope
from probsparse.priors import GroupHorseshoe

DOUBLE = torch.float64


def _leaf(*shape, scale=1.0, shift=0.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (shift + scale * torch.randn(*shape, generator=generator, dtype=DOUBLE)).requires_grad_()


def test_exp_twice_value_and_gradient():
    log_std = _leaf(3, 4)
    torch.testing.assert_close(exp_twice(log_std), (2.0 * log_std).exp())
    assert torch.autograd.gradcheck(exp_twice, (log_std,))


@pytest.mark.parametrize("prior_std", [1.0, 0.3])
@pytest.mark.parametrize("given_var", [False, True])
def test_gaussian_kl_sum_matches_torch_distributions(prior_std, given_var):
    mean, log_std = _leaf(5, 3, seed=1), _leaf(5, 3, scale=0.5, shift=-1.0, seed=2)
    var = (2.0 * log_std).exp().detach() if given_var else None
    q = torch.distributions.Normal(mean, log_std.exp())
    p = torch.distributions.Normal(torch.zeros((), dtype=DOUBLE), torch.tensor(prior_std, dtype=DOUBLE))
    reference = torch.distributions.kl_divergence(q, p).sum()
    value = gaussian_kl_sum(mean, log_std, prior_std, var=var)
    torch.testing.assert_close(value, reference)
    grads = torch.autograd.grad(value, (mean, log_std))
    expected = torch.autograd.grad(reference, (mean, log_std))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("precision_shape", [(1, 4), (5, 1), (1, 1), (5, 4)])
def test_gaussian_kl_to_scaled_normal_is_the_kl_without_its_log_scale_term(precision_shape):
    mean, log_std = _leaf(5, 4, seed=13), _leaf(5, 4, scale=0.5, shift=-1.0, seed=14)
    log_precision = _leaf(*precision_shape, scale=0.5, seed=15)
    std_prior = (-0.5 * log_precision).exp().expand(5, 4)
    kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, log_std.exp()), torch.distributions.Normal(0.0, std_prior)
    ).sum()
    reference = kl - (-0.5 * log_precision).expand(5, 4).sum()  # the caller adds sum(log s)
    torch.testing.assert_close(gaussian_kl_to_scaled_normal(mean, log_std, log_precision), reference)
    assert torch.autograd.gradcheck(gaussian_kl_to_scaled_normal, (mean, log_std, log_precision))
    var = (2.0 * log_std).exp().detach()
    torch.testing.assert_close(gaussian_kl_to_scaled_normal(mean, log_std, log_precision, var=var), reference)


@pytest.mark.parametrize(
    "prior",
    [
        torch.distributions.HalfCauchy(torch.tensor(0.1, dtype=DOUBLE)),
        torch.distributions.InverseGamma(torch.tensor(2.5, dtype=DOUBLE), torch.tensor(1.5, dtype=DOUBLE)),
        torch.distributions.Gamma(torch.tensor(0.7, dtype=DOUBLE), torch.tensor(2.0, dtype=DOUBLE)),
    ],
    ids=["half_cauchy", "inverse_gamma", "gamma"],
)
def test_log_normal_kl_matches_autograd_on_the_quadrature(prior):
    loc, log_std = _leaf(1, 6, seed=3), _leaf(1, 6, scale=0.3, shift=-0.5, seed=4)
    nodes, weights = _hermite_rule(DOUBLE, loc.dim())
    density = _log_density_of_log_with_slope(prior)
    u = torch.linspace(-3.0, 3.0, 7, dtype=DOUBLE, requires_grad=True)
    value, slope = density(u)
    torch.testing.assert_close(value, _log_density_of_log(prior, u))
    torch.testing.assert_close(slope, torch.autograd.grad(_log_density_of_log(prior, u).sum(), u)[0])

    def reference(loc, log_std):
        expected = (weights * _log_density_of_log(prior, loc + log_std.exp() * nodes)).sum(0)
        return -(expected + 0.5 * math.log(2 * math.pi * math.e) + log_std).sum()

    torch.testing.assert_close(log_normal_kl(loc, log_std, density, nodes, weights), reference(loc, log_std))
    assert torch.autograd.gradcheck(lambda m, s: log_normal_kl(m, s, density, nodes, weights), (loc, log_std))


def test_log_normal_kl_with_one_draw_matches_autograd_on_the_same_draw():
    prior = torch.distributions.HalfCauchy(torch.tensor(0.3, dtype=DOUBLE))
    loc, log_std = _leaf(3, 5, seed=16), _leaf(3, 5, scale=0.3, shift=-0.5, seed=17)
    density = _log_density_of_log_with_slope(prior)

    def one_draw(loc, log_std):
        with torch.random.fork_rng():
            torch.manual_seed(4)
            return log_normal_kl(loc, log_std, density)

    with torch.random.fork_rng():
        torch.manual_seed(4)
        eps = torch.randn(3, 5, dtype=DOUBLE)
    u = loc + log_std.exp() * eps
    reference = -(_log_density_of_log(prior, u) + 0.5 * math.log(2 * math.pi * math.e) + log_std).sum()
    torch.testing.assert_close(one_draw(loc, log_std), reference)
    got = torch.autograd.grad(one_draw(loc, log_std), (loc, log_std))
    want = torch.autograd.grad(reference, (loc, log_std))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
    assert torch.autograd.gradcheck(one_draw, (loc, log_std))


def test_log_normal_kl_is_the_kl_of_the_log_normal_to_an_inverse_gamma():
    # KL(LogNormal(m, s) || InvGamma(a, b)) by Monte Carlo in float64, against the 10-point quadrature.
    a, b, m, s = 3.0, 2.0, 0.2, 0.4
    prior = torch.distributions.InverseGamma(torch.tensor(a, dtype=DOUBLE), torch.tensor(b, dtype=DOUBLE))
    nodes, weights = _hermite_rule(DOUBLE, 1)
    loc, log_std = torch.tensor([m], dtype=DOUBLE), torch.tensor([math.log(s)], dtype=DOUBLE)
    quadrature = log_normal_kl(loc, log_std, _log_density_of_log_with_slope(prior), nodes, weights)
    q = torch.distributions.LogNormal(torch.tensor(m, dtype=DOUBLE), torch.tensor(s, dtype=DOUBLE))
    torch.manual_seed(0)
    draws = q.sample(torch.Size([400_000]))
    monte_carlo = (q.log_prob(draws) - prior.log_prob(draws)).mean()
    assert abs(float(quadrature) - float(monte_carlo)) < 5e-3


def test_priors_with_learnable_parameters_get_no_closed_form_slope():
    scale = torch.tensor(1.0, requires_grad=True)
    assert _log_density_of_log_with_slope(torch.distributions.HalfCauchy(scale)) is None
    assert _log_density_of_log_with_slope(torch.distributions.InverseGamma(scale, 1.0)) is None
    assert _log_density_of_log_with_slope(torch.distributions.LogNormal(0.0, 1.0)) is None


def _reference_lrt(x, mean, var, bias_mean, bias_var, scale, noise):
    xs = x if scale is None else x * scale
    out_mean = xs @ mean.t() + (0.0 if bias_mean is None else bias_mean)
    out_var = xs.square() @ var.t() + (0.0 if bias_var is None else bias_var)
    return out_mean + out_var.clamp_min(torch.finfo(x.dtype).tiny).sqrt() * noise


@pytest.mark.parametrize("scale_kind", [None, "shared", "per_example"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("x_grad", [True, False])
def test_linear_local_reparam_matches_the_plain_formula(scale_kind, bias, x_grad):
    batch, n_in, n_out = 4, 5, 3
    x = _leaf(batch, n_in, seed=5).requires_grad_(x_grad)
    mean, var = _leaf(n_out, n_in, seed=6), (0.1 * _leaf(n_out, n_in, seed=7)).exp().detach().requires_grad_()
    bias_mean = _leaf(n_out, seed=8) if bias else None
    bias_var = (0.1 * _leaf(n_out, seed=9)).exp().detach().requires_grad_() if bias else None
    scale = {None: None, "shared": _leaf(n_in, seed=10), "per_example": _leaf(batch, n_in, seed=11)}[scale_kind]
    inputs = tuple(t for t in (x, mean, var, bias_mean, bias_var, scale) if t is not None and t.requires_grad)

    def fused(*_):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return linear_local_reparam(x, mean, var, bias_mean, bias_var, scale=scale)

    with torch.random.fork_rng():
        torch.manual_seed(0)
        noise = torch.randn(batch, n_out, dtype=DOUBLE)
    reference = _reference_lrt(x, mean, var, bias_mean, bias_var, scale, noise)
    torch.testing.assert_close(fused(), reference)
    weights = torch.randn(batch, n_out, dtype=DOUBLE)
    got = torch.autograd.grad((fused() * weights).sum(), inputs)
    want = torch.autograd.grad((reference * weights).sum(), inputs)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
    assert torch.autograd.gradcheck(fused, inputs)


def test_linear_local_reparam_passes_no_gradient_through_the_variance_floor():
    x = torch.zeros(2, 3, dtype=DOUBLE)  # an all-zero input row and no bias: variance exactly 0
    mean, var = _leaf(4, 3, seed=12), torch.ones(4, 3, dtype=DOUBLE, requires_grad=True)
    out = linear_local_reparam(x, mean, var)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.equal(var.grad, torch.zeros_like(var))


def test_layer_kl_reuses_the_forward_variance_only_while_it_is_current():
    layer = BayesianLinear(6, 4, prior=GroupHorseshoe(groups="input"), dtype=DOUBLE)
    theta = layer.weight.theta

    def reference():
        q = torch.distributions.Normal(theta.mean, theta.log_std.exp())
        p = torch.distributions.Normal(0.0, layer.weight.unit)
        return torch.distributions.kl_divergence(q, p).sum()

    layer(torch.randn(3, 6, dtype=DOUBLE))
    torch.testing.assert_close(theta.kl_normal(layer.weight.unit), reference())
    with torch.no_grad():
        theta.log_std.add_(0.7)  # as an optimiser step would: the cached variance is stale now
    torch.testing.assert_close(theta.kl_normal(layer.weight.unit), reference())
