"""Tests for probsparse.nn.BayesianLinear: KL, local-reparameterisation moments, gradients, validation."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from probsparse.nn import BayesianLinear

DTYPE = torch.float64


def _layer(in_features=4, out_features=3, *, bias=True, prior_std=0.7, std=0.4, seed=1):
    """A float64 layer with non-trivial means and standard deviations (the defaults are near zero)."""
    layer = BayesianLinear(
        in_features, out_features, prior_std=prior_std, bias=bias, init_log_std=math.log(std), dtype=DTYPE
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight_mean.copy_(0.8 * torch.randn(layer.weight_mean.shape, generator=gen, dtype=DTYPE))
        # Spread the standard deviations so that a mix-up of entries would show.
        layer.weight_raw_std.add_(0.5 * torch.randn(layer.weight_raw_std.shape, generator=gen, dtype=DTYPE))
        if bias:
            layer.bias_mean.copy_(0.5 * torch.randn(out_features, generator=gen, dtype=DTYPE))
            layer.bias_raw_std.add_(0.5 * torch.randn(out_features, generator=gen, dtype=DTYPE))
    return layer


def _posterior_and_prior(layer):
    """Independent torch.distributions description of q and p over all entries, flattened."""
    means = [layer.weight_mean.reshape(-1)]
    stds = [F.softplus(layer.weight_raw_std).reshape(-1)]
    if layer.bias_mean is not None:
        means.append(layer.bias_mean)
        stds.append(F.softplus(layer.bias_raw_std))
    loc, scale = torch.cat(means), torch.cat(stds)
    return Normal(loc, scale), Normal(torch.zeros_like(loc), torch.full_like(loc, layer.prior_std))


# ---------------------------------------------------------------------------------------------- KL


@pytest.mark.parametrize("bias", [True, False])
def test_kl_matches_torch_distributions(bias):
    layer = _layer(bias=bias)
    q, p = _posterior_and_prior(layer)
    reference = kl_divergence(q, p).sum()
    torch.testing.assert_close(layer.kl_divergence(), reference, rtol=1e-12, atol=1e-12)
    assert layer.kl_divergence().shape == ()


def test_kl_gradient_matches_torch_distributions():
    layer = _layer()
    params = list(layer.parameters())
    ours = torch.autograd.grad(layer.kl_divergence(), params)
    q, p = _posterior_and_prior(layer)
    reference = torch.autograd.grad(kl_divergence(q, p).sum(), params)
    for got, want in zip(ours, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_kl_matches_monte_carlo_estimate():
    layer = _layer()
    q, p = _posterior_and_prior(layer)
    n_draws = 200_000
    with torch.no_grad():
        w = q.sample((n_draws,))
        log_ratio = (q.log_prob(w) - p.log_prob(w)).sum(-1)
        estimate, std_error = log_ratio.mean(), log_ratio.std() / math.sqrt(n_draws)
        exact = layer.kl_divergence()
    # The check must be sharp enough to catch a wrong term (e.g. a missing 1/2 or log).
    assert 5 * std_error < 0.02 * exact
    assert abs(estimate - exact) < 5 * std_error


def test_kl_is_zero_when_posterior_equals_prior():
    layer = BayesianLinear(3, 2, prior_std=0.3, init_log_std=math.log(0.3), dtype=DTYPE)
    with torch.no_grad():
        layer.weight_mean.zero_()
        layer.bias_mean.zero_()
    torch.testing.assert_close(layer.kl_divergence(), torch.zeros((), dtype=DTYPE), rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------ forward


def test_local_reparameterisation_matches_moments_of_sampled_weights():
    layer = _layer(in_features=4, out_features=3)
    x = torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.3, 0.3, -1.5, 2.0]], dtype=DTYPE)
    n_draws = 100_000
    with torch.no_grad():
        # Local reparameterisation: one forward over n_draws copies of the batch.
        lrt = layer(x.expand(n_draws, *x.shape))
        # Reference: sample whole weight matrices and biases from q and apply them.
        w_std, b_std = F.softplus(layer.weight_raw_std), F.softplus(layer.bias_raw_std)
        w = layer.weight_mean + w_std * torch.randn(n_draws, *w_std.shape, dtype=DTYPE)
        b = layer.bias_mean + b_std * torch.randn(n_draws, *b_std.shape, dtype=DTYPE)
        sampled = torch.einsum("bi,noi->nbo", x, w) + b[:, None, :]
        exact_mean = x @ layer.weight_mean.T + layer.bias_mean
        exact_var = x.square() @ w_std.square().T + b_std.square()

    assert lrt.shape == sampled.shape == (n_draws, 2, 3)
    # Standard errors of a sample mean and (Gaussian) sample variance; 5 of them for the difference
    # of two independent estimates.
    mean_tol = 5 * math.sqrt(2) * (exact_var / n_draws).sqrt()
    var_tol = 5 * math.sqrt(2) * math.sqrt(2 / n_draws) * exact_var
    for draws in (lrt, sampled):
        assert torch.all((draws.mean(0) - exact_mean).abs() < mean_tol / math.sqrt(2))
        assert torch.all((draws.var(0) - exact_var).abs() < var_tol / math.sqrt(2))
    assert torch.all((lrt.mean(0) - sampled.mean(0)).abs() < mean_tol)
    assert torch.all((lrt.var(0) - sampled.var(0)).abs() < var_tol)


def test_noise_is_drawn_per_example():
    layer = _layer()
    x = torch.ones(2, 4, dtype=DTYPE)  # two identical rows
    out = layer(x)
    assert not torch.allclose(out[0], out[1])
    assert not torch.allclose(layer(x), layer(x))


def test_mean_forward_is_x_times_mean_weights_plus_bias():
    layer = _layer()
    x = torch.randn(5, 4, dtype=DTYPE)
    expected = x @ layer.weight_mean.T + layer.bias_mean
    torch.testing.assert_close(layer(x, sample=False), expected)
    torch.testing.assert_close(layer(x, sample=False), layer(x, sample=False), rtol=0, atol=0)


def test_mean_forward_without_bias():
    layer = _layer(bias=False)
    x = torch.randn(5, 4, dtype=DTYPE)
    torch.testing.assert_close(layer(x, sample=False), x @ layer.weight_mean.T)


@pytest.mark.parametrize("batch_shape", [(), (5,), (2, 3)])
def test_forward_keeps_leading_dimensions(batch_shape):
    layer = _layer()
    x = torch.randn(*batch_shape, 4, dtype=DTYPE)
    assert layer(x).shape == (*batch_shape, 3)
    assert layer(x, sample=False).shape == (*batch_shape, 3)


def test_forward_rejects_wrong_input_width():
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        _layer()(torch.randn(5, 3, dtype=DTYPE))


def test_float32_layer():
    layer = BayesianLinear(4, 3, dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in layer.parameters())
    assert layer(torch.randn(2, 4, dtype=torch.float32)).dtype == torch.float32


# ------------------------------------------------------------------------------------------ gradients


def test_gradient_reaches_every_parameter():
    layer = _layer()
    x = torch.randn(8, 4, dtype=DTYPE)
    loss = layer(x).square().sum() + layer.kl_divergence()
    loss.backward()
    names = {name for name, _ in layer.named_parameters()}
    assert names == {"weight_mean", "weight_raw_std", "bias_mean", "bias_raw_std"}
    for name, param in layer.named_parameters():
        assert param.grad is not None, name
        assert torch.all(torch.isfinite(param.grad)), name
        assert param.grad.abs().sum() > 0, name


def test_zero_input_row_without_bias_gives_finite_gradients():
    # The output variance of an all-zero row is exactly 0 here; a plain sqrt would give NaN gradients.
    layer = _layer(bias=False)
    x = torch.randn(3, 4, dtype=DTYPE)
    x[1] = 0.0
    out = layer(x)
    # Up to the sqrt(finfo.tiny) floor on the standard deviation.
    torch.testing.assert_close(out[1], torch.zeros(3, dtype=DTYPE), rtol=0, atol=1e-100)
    out.square().sum().backward()
    for name, param in layer.named_parameters():
        assert torch.all(torch.isfinite(param.grad)), name


# ------------------------------------------------------------------------------------------ scores and init


def test_weight_snr_is_abs_mean_over_std():
    layer = _layer()
    snr = layer.weight_snr()
    assert snr.shape == (3, 4)
    torch.testing.assert_close(snr, layer.weight_mean.abs() / F.softplus(layer.weight_raw_std))
    torch.testing.assert_close(layer.weight_std, F.softplus(layer.weight_raw_std))


@pytest.mark.parametrize("init_log_std", [-30.0, -5.0, 0.0, 3.0])
def test_initial_std_is_exp_init_log_std(init_log_std):
    layer = BayesianLinear(4, 3, init_log_std=init_log_std, dtype=DTYPE)
    expected = torch.full((3, 4), math.exp(init_log_std), dtype=DTYPE)
    torch.testing.assert_close(layer.weight_std, expected)
    torch.testing.assert_close(layer.bias_std, expected[:, 0])


def test_without_bias_has_no_bias_parameters():
    layer = BayesianLinear(4, 3, bias=False)
    assert layer.bias_mean is None and layer.bias_raw_std is None and layer.bias_std is None
    assert set(layer.state_dict()) == {"weight_mean", "weight_raw_std"}
    assert set(layer.mean_parameters()) == {"weight"}


def test_mean_parameters_are_the_posterior_means():
    layer = _layer()
    params = layer.mean_parameters()
    assert set(params) == {"weight", "bias"}
    torch.testing.assert_close(params["weight"], layer.weight_mean, rtol=0, atol=0)
    torch.testing.assert_close(params["bias"], layer.bias_mean, rtol=0, atol=0)
    assert not params["weight"].requires_grad


# ------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize("name", ["in_features", "out_features"])
@pytest.mark.parametrize("value", [0, -3])
def test_rejects_non_positive_sizes(name, value):
    kwargs = {"in_features": 4, "out_features": 3, name: value}
    with pytest.raises(ValueError, match=name):
        BayesianLinear(**kwargs)


@pytest.mark.parametrize("name", ["in_features", "out_features"])
def test_rejects_non_integer_sizes(name):
    kwargs = {"in_features": 4, "out_features": 3, name: 2.5}
    with pytest.raises(TypeError, match=name):
        BayesianLinear(**kwargs)


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_rejects_bad_prior_std(value):
    with pytest.raises(ValueError, match="prior_std"):
        BayesianLinear(4, 3, prior_std=value)


@pytest.mark.parametrize("value", [float("nan"), -200.0, 200.0])
def test_rejects_init_log_std_unrepresentable_in_dtype(value):
    with pytest.raises(ValueError, match="init_log_std"):
        BayesianLinear(4, 3, init_log_std=value, dtype=torch.float32)


def test_rejects_non_bool_bias():
    with pytest.raises(TypeError, match="bias"):
        BayesianLinear(4, 3, bias=1)
