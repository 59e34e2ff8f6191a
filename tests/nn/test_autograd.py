"""The hand-written backward passes of ``probsparse.nn._autograd`` against autograd on the plain formulas (float64)."""

import pytest
import torch

from probsparse.nn import BayesianLinear
from probsparse.nn._autograd import (
    exp_twice,
    gaussian_kl_sum,
    gaussian_kl_to_scaled_normal,
    linear_local_reparam,
)
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
@pytest.mark.parametrize("rows", [5, 1000], ids=["numpy_path", "tensor_path"])  # 4096 entries and fewer: NumPy
def test_gaussian_kl_sum_matches_torch_distributions(prior_std, given_var, rows):
    mean, log_std = _leaf(rows, 5, seed=1), _leaf(rows, 5, scale=0.5, shift=-1.0, seed=2)
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
