"""BayesianLinear: KL, local-reparameterisation moments against sampled weights, mean forward, scores, gradients."""

import math

import pytest
import torch
from torch.distributions import Normal as TorchNormal
from torch.distributions import kl_divergence

from probsparse.nn import BayesianLinear, posterior_mean
from probsparse.priors import (
    ARD,
    GroupHorseshoe,
    GroupNormalJeffreys,
    Horseshoe,
    LogUniform,
    Normal,
    RegularizedHorseshoe,
    SpikeAndSlab,
)
from tests.nn.sampling import draws_scales_per_example, per_example_weights

DTYPE = torch.float64

PRIORS = [
    Normal(0.7),
    Horseshoe(0.5),
    GroupHorseshoe(groups="input"),
    GroupHorseshoe(groups="output"),
    RegularizedHorseshoe(0.5, slab_scale=1.0, groups="input"),
    ARD(precision_prior=(2.0, 1.0)),
    ARD(),
    SpikeAndSlab(slab_scale=1.0, spike_scale=0.05, inclusion_prior=0.3),
    LogUniform(),
    GroupNormalJeffreys(),
]


def _layer(prior=None, in_features=4, out_features=3, *, bias=True, std=0.4, seed=1):
    """A float64 layer whose parameters all differ from their (uniform) initial values."""
    layer = BayesianLinear(
        in_features, out_features, prior=prior or Normal(0.7), bias=bias, init_log_std=math.log(std), dtype=DTYPE
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in layer.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=gen, dtype=DTYPE))
    return layer


def _bias_kl(layer):
    q = TorchNormal(layer.bias_mean, layer.bias_std)
    return kl_divergence(q, TorchNormal(torch.zeros((), dtype=DTYPE), layer.bias_prior_scale)).sum()


# ---------------------------------------------------------------------------------------------- KL


def _normal_posterior_and_prior(layer):
    """torch.distributions q and p of all weights and biases of a Normal-prior layer, flattened."""
    # w = scale * theta; theta may be stored in other units (family.unit), with prior N(0, 1) in its own.
    scale = layer.prior.scale / getattr(layer.weight, "unit", 1.0)
    means = [scale * layer.weight.theta.mean.reshape(-1)]
    stds = [scale * layer.weight.theta.std.reshape(-1)]
    prior_stds = [torch.full((layer.weight.shape.numel(),), layer.prior.scale, dtype=DTYPE)]
    if layer.bias_mean is not None:
        means.append(layer.bias_mean)
        stds.append(layer.bias_std)
        prior_stds.append(torch.full_like(layer.bias_mean, layer.bias_prior_scale))
    loc = torch.cat(means)
    return TorchNormal(loc, torch.cat(stds)), TorchNormal(torch.zeros_like(loc), torch.cat(prior_stds))


@pytest.mark.parametrize("bias", [True, False])
def test_kl_matches_torch_distributions(bias):
    layer = _layer(bias=bias)
    q, p = _normal_posterior_and_prior(layer)
    torch.testing.assert_close(layer.kl_divergence(), kl_divergence(q, p).sum(), rtol=1e-12, atol=1e-12)
    assert layer.kl_divergence().shape == ()


def test_kl_gradient_matches_torch_distributions():
    layer = _layer()
    params = list(layer.parameters())
    ours = torch.autograd.grad(layer.kl_divergence(), params)
    q, p = _normal_posterior_and_prior(layer)
    reference = torch.autograd.grad(kl_divergence(q, p).sum(), params)
    for got, want in zip(ours, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_kl_matches_monte_carlo_estimate():
    layer = _layer()
    q, p = _normal_posterior_and_prior(layer)
    n_draws = 200_000
    with torch.no_grad():
        w = q.sample((n_draws,))
        log_ratio = (q.log_prob(w) - p.log_prob(w)).sum(-1)
        estimate, std_error = log_ratio.mean(), log_ratio.std() / math.sqrt(n_draws)
        exact = layer.kl_divergence()
    # Sharp enough to catch a wrong term (e.g. a missing 1/2 or log).
    assert 5 * std_error < 0.02 * exact
    assert abs(estimate - exact) < 5 * std_error


def test_kl_is_zero_when_posterior_equals_prior():
    layer = BayesianLinear(3, 2, prior=Normal(0.3), bias_prior_scale=2.0, init_log_std=0.0, dtype=DTYPE)
    with torch.no_grad():
        layer.weight.theta.mean.zero_()
        layer.bias_mean.zero_()
        layer.bias_log_std.fill_(math.log(2.0))
    torch.testing.assert_close(layer.kl_divergence(), torch.zeros((), dtype=DTYPE), rtol=0, atol=1e-12)


@pytest.mark.parametrize("prior", PRIORS, ids=repr)
def test_kl_is_the_weight_family_kl_plus_the_bias_kl(prior):
    layer = _layer(prior)
    torch.testing.assert_close(layer.kl_divergence(), layer.weight.kl() + _bias_kl(layer), rtol=1e-12, atol=1e-12)
    no_bias = _layer(prior, bias=False)
    torch.testing.assert_close(no_bias.kl_divergence(), no_bias.weight.kl(), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ forward


def _sampled_weights(layer, mean, var, n_draws, gen):
    """Explicit weight matrices given one scale draw: the family's conditional law, element by element."""
    shape = (n_draws, *mean.shape)
    eps = torch.randn(shape, generator=gen, dtype=DTYPE)
    if isinstance(layer.prior, SpikeAndSlab):
        # Spike-and-slab weights are a two-component mixture: draw the indicator, then the component.
        family = layer.weight
        phi = torch.sigmoid(family.inclusion_logit)
        xi = torch.rand(shape, generator=gen, dtype=DTYPE) < phi
        return torch.where(xi, family.theta.mean + family.theta.std * eps, layer.prior.spike_scale * eps)
    return mean + var.sqrt() * eps


@pytest.mark.parametrize("input_requires_grad", [False, True], ids=["data_input", "hidden_input"])
@pytest.mark.parametrize("prior", PRIORS, ids=repr)
def test_local_reparameterisation_matches_moments_of_sampled_weights(prior, input_requires_grad):
    layer = _layer(prior)
    x = torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.3, 0.3, -1.5, 2.0]], dtype=DTYPE)
    n_draws = 100_000
    # Per-weight scale variables are drawn once per call: fix that draw with the seed, read the weight moments
    # it gives, and run the layer from the same seed on n_draws copies of the batch. An input that needs
    # gradients (a hidden layer's) takes another code path for input-side scales.
    torch.manual_seed(17)
    mean_w, var_w = (t.detach() for t in layer.weight.sample_moments())
    torch.manual_seed(17)
    lrt = layer(x.expand(n_draws, *x.shape).clone().requires_grad_(input_requires_grad)).detach()
    with torch.no_grad():
        # Reference: whole weight matrices and biases sampled and applied.
        gen = torch.Generator().manual_seed(3)
        w = _sampled_weights(layer, mean_w, var_w, n_draws, gen)
        b = layer.bias_mean + layer.bias_std * torch.randn(n_draws, 3, generator=gen, dtype=DTYPE)
        sampled = torch.einsum("bi,noi->nbo", x, w) + b[:, None, :]
        exact_mean = x @ mean_w.T + layer.bias_mean
        exact_var = x.square() @ var_w.T + layer.bias_std.square()

    if draws_scales_per_example(layer.weight) and input_requires_grad:
        # Group scales are drawn per example: the reference draws them per copy too, and the two samples are
        # compared with each other (the scale mixture's moments couple the weights of a group).
        with torch.no_grad():
            w = per_example_weights(layer.weight, n_draws, gen)
            sampled = torch.einsum("bi,noi->nbo", x, w) + b[:, None, :]
        exact_mean, exact_var = sampled.mean(0), sampled.var(0)
        mean_tol = 5 * (2 * exact_var / n_draws).sqrt()
        var_tol = 5 * math.sqrt(2 / n_draws) * exact_var * 3  # heavier tails of a scale mixture
        assert torch.all((lrt.mean(0) - exact_mean).abs() < mean_tol)
        assert torch.all((lrt.var(0) - exact_var).abs() < var_tol)
        return
    assert lrt.shape == sampled.shape == (n_draws, 2, 3)
    # Standard errors of a sample mean and of a sample variance (Gaussian: sqrt(2 / n) var; the spike-and-slab
    # outputs are not Gaussian, so allow their heavier tails a factor 2), 5 of them.
    mean_tol = 5 * (exact_var / n_draws).sqrt()
    var_tol = 5 * math.sqrt(2 / n_draws) * exact_var * (2 if isinstance(prior, SpikeAndSlab) else 1)
    for draws in (lrt, sampled):
        assert torch.all((draws.mean(0) - exact_mean).abs() < mean_tol)
        assert torch.all((draws.var(0) - exact_var).abs() < var_tol)


def test_sample_moments_differ_between_calls_for_random_scales():
    layer = _layer(Horseshoe(0.5))
    first, second = layer.weight.sample_moments()[0], layer.weight.sample_moments()[0]
    assert not torch.allclose(first, second)


def test_noise_is_drawn_per_example():
    layer = _layer()
    x = torch.ones(2, 4, dtype=DTYPE)  # two identical rows
    out = layer(x)
    assert not torch.allclose(out[0], out[1])
    assert not torch.allclose(layer(x), layer(x))


@pytest.mark.parametrize("prior", PRIORS, ids=repr)
def test_mean_forward_is_x_times_mean_weights_plus_bias(prior):
    layer = _layer(prior)
    x = torch.randn(5, 4, dtype=DTYPE)
    params = layer.mean_parameters()
    mean, _ = layer.weight.posterior_moments()
    torch.testing.assert_close(params["weight"], mean, rtol=1e-12, atol=1e-14)
    layer.sampling = False
    expected = x @ params["weight"].T + params["bias"]
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer(x), layer(x), rtol=0, atol=0)


def test_mean_forward_without_bias():
    layer = _layer(bias=False)
    x = torch.randn(5, 4, dtype=DTYPE)
    with posterior_mean(layer):
        torch.testing.assert_close(layer(x), x @ layer.mean_parameters()["weight"].T)
    assert layer.sampling is True


@pytest.mark.parametrize("batch_shape", [(), (5,), (2, 3)])
def test_forward_keeps_leading_dimensions(batch_shape):
    layer = _layer(GroupHorseshoe(groups="input"))
    x = torch.randn(*batch_shape, 4, dtype=DTYPE)
    assert layer(x).shape == (*batch_shape, 3)
    with posterior_mean(layer):
        assert layer(x).shape == (*batch_shape, 3)


@pytest.mark.parametrize("prior", PRIORS, ids=repr)
def test_float32_layer(prior):
    layer = BayesianLinear(4, 3, prior=prior, dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in layer.parameters())
    x = torch.randn(2, 4, dtype=torch.float32)
    out = layer(x)
    assert out.dtype == torch.float32 and torch.all(torch.isfinite(out))
    kl = layer.kl_divergence()
    assert kl.dtype == torch.float32 and torch.isfinite(kl)
    assert all(v.dtype == torch.float32 for v in layer.pruning_scores().values())


# ------------------------------------------------------------------------------------------ gradients


@pytest.mark.parametrize("prior", PRIORS, ids=repr)
def test_gradient_reaches_every_parameter(prior):
    layer = _layer(prior)
    x = torch.randn(8, 4, dtype=DTYPE)
    loss = layer(x).square().sum() + layer.kl_divergence()
    loss.backward()
    names = {name for name, _ in layer.named_parameters()}
    assert {"bias_mean", "bias_log_std"} <= names and len(names) > 3
    for name, param in layer.named_parameters():
        assert param.grad is not None, name
        assert torch.all(torch.isfinite(param.grad)), name
        assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("prior", [Normal(), Horseshoe(), GroupHorseshoe(groups="output"), LogUniform()], ids=repr)
def test_zero_input_row_without_bias_gives_finite_gradients(prior):
    # The output variance of an all-zero row is exactly 0 here; a plain sqrt would give NaN gradients.
    layer = _layer(prior, bias=False)
    x = torch.randn(3, 4, dtype=DTYPE)
    x[1] = 0.0
    out = layer(x)
    # Up to the sqrt(finfo.tiny) floor on the standard deviation.
    torch.testing.assert_close(out[1], torch.zeros(3, dtype=DTYPE), rtol=0, atol=1e-100)
    (out.square().sum() + layer.kl_divergence()).backward()
    for name, param in layer.named_parameters():
        assert torch.all(torch.isfinite(param.grad)), name


# ------------------------------------------------------------------------------------------ scores and init


@pytest.mark.parametrize("prior", PRIORS, ids=repr)
def test_pruning_scores_keys_shapes_and_definitions(prior):
    layer = _layer(prior)
    scores = layer.pruning_scores()
    expected = {"mean", "std", "snr", "log_alpha", "folded_snr"}
    if isinstance(prior, SpikeAndSlab):
        expected.add("inclusion_prob")
    assert set(scores) == expected
    for name, value in scores.items():
        assert value.shape == (3, 4) and value.dtype == DTYPE and not value.requires_grad, name
        assert torch.all(torch.isfinite(value)), name
    mean, var = layer.weight.posterior_moments()
    torch.testing.assert_close(scores["mean"], mean)
    torch.testing.assert_close(scores["std"], var.sqrt())
    torch.testing.assert_close(scores["snr"], mean.abs() / var.sqrt())
    if isinstance(prior, LogUniform):  # the family's own (clipped) log alpha; the group's for GroupNJ
        torch.testing.assert_close(scores["log_alpha"], layer.weight.log_alpha().expand(3, 4))
    else:
        torch.testing.assert_close(scores["log_alpha"], (var / mean.square()).log())
    if isinstance(prior, SpikeAndSlab):
        torch.testing.assert_close(scores["inclusion_prob"], torch.sigmoid(layer.weight.inclusion_logit.detach()))


def test_folded_snr_against_monte_carlo():
    layer = _layer(std=0.5)
    scores = layer.pruning_scores()
    mean, std = scores["mean"], scores["std"]
    assert (mean.abs() / std).min() < 1.0 < (mean.abs() / std).max()  # both regimes of the folded normal
    n = 200_000
    w = mean + std * torch.randn(n, *mean.shape, dtype=DTYPE)
    folded = w.abs().mean(0) / w.abs().std(0)
    torch.testing.assert_close(scores["folded_snr"], folded, rtol=0.01, atol=0)


@pytest.mark.parametrize("init_log_std", [-30.0, -5.0, 0.0, 3.0])
def test_initial_std_is_exp_init_log_std(init_log_std):
    layer = BayesianLinear(4, 3, init_log_std=init_log_std, dtype=DTYPE)  # Normal(1.0) prior by default
    expected = torch.full((3, 4), math.exp(init_log_std), dtype=DTYPE)
    torch.testing.assert_close(layer.pruning_scores()["std"], expected)
    torch.testing.assert_close(layer.bias_std, expected[:, 0])


def test_initial_means_follow_torch_linear():
    torch.manual_seed(4)
    reference = torch.nn.Linear(4, 3, dtype=DTYPE)
    torch.manual_seed(4)
    layer = BayesianLinear(4, 3, prior=Horseshoe(), init_log_std=-30.0, dtype=DTYPE)
    params = layer.mean_parameters()
    torch.testing.assert_close(params["weight"], reference.weight.detach())
    torch.testing.assert_close(params["bias"], reference.bias.detach())


def test_without_bias_has_no_bias_parameters():
    layer = BayesianLinear(4, 3, bias=False)
    assert layer.bias_mean is None and layer.bias_std is None and not layer.has_bias
    assert not any(name.startswith("bias") for name in layer.state_dict())
    assert set(layer.mean_parameters()) == {"weight"}


def test_mean_parameters_are_detached_copies():
    layer = _layer()
    params = layer.mean_parameters()
    assert set(params) == {"weight", "bias"}
    torch.testing.assert_close(params["bias"], layer.bias_mean, rtol=0, atol=0)
    assert not params["weight"].requires_grad and not params["bias"].requires_grad
    params["bias"].zero_()
    assert layer.bias_mean.abs().sum() > 0


def test_attributes_and_repr():
    prior = Horseshoe(0.1)
    layer = BayesianLinear(4, 3, prior=prior)
    assert (layer.in_features, layer.out_features) == (4, 3)
    assert layer.prior is prior and layer.sampling is True
    assert "prior=Horseshoe(global_scale=0.1" in repr(layer)


# ------------------------------------------------------------------------------------------ validation


def test_forward_rejects_wrong_input_width():
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\).*\(5, 3\)"):
        _layer()(torch.randn(5, 3, dtype=DTYPE))


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


@pytest.mark.parametrize("prior", ["horseshoe", 1.0, torch.distributions.Normal(0.0, 1.0)])
def test_rejects_a_prior_that_is_not_a_weight_prior(prior):
    with pytest.raises(TypeError, match="prior must be a probsparse.priors.WeightPrior"):
        BayesianLinear(4, 3, prior=prior)


def test_rejects_group_structure_outside_the_weight():
    with pytest.raises(ValueError, match=r"groups=.*shape \(3, 4\)"):
        BayesianLinear(4, 3, prior=Horseshoe(groups=(2,)))


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_rejects_bad_bias_prior_scale(value):
    with pytest.raises(ValueError, match="bias_prior_scale"):
        BayesianLinear(4, 3, bias_prior_scale=value)


@pytest.mark.parametrize("value", [float("nan"), -200.0, 200.0])
def test_rejects_init_log_std_unrepresentable_in_dtype(value):
    with pytest.raises(ValueError, match="init_log_std"):
        BayesianLinear(4, 3, init_log_std=value, dtype=torch.float32)


def test_rejects_non_bool_bias():
    with pytest.raises(TypeError, match="bias"):
        BayesianLinear(4, 3, bias=1)
