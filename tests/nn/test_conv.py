"""BayesianConv2d: local-reparameterisation moments against sampled filters, mean forward, scores, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from probsparse.nn import BayesianConv2d, posterior_mean
from probsparse.priors import (
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


def _conv(prior=None, in_channels=2, out_channels=4, kernel_size=3, *, bias=True, seed=1, **kwargs):
    """A float64 convolution whose parameters all differ from their initial values."""
    conv = BayesianConv2d(
        in_channels, out_channels, kernel_size, prior=prior or Normal(0.7), bias=bias, init_log_std=math.log(0.4),
        dtype=DTYPE, **kwargs,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in conv.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=gen, dtype=DTYPE))
    return conv


CASES = [
    (Normal(0.7), {}),
    (Horseshoe(0.5), {"padding": 1}),
    (GroupHorseshoe(groups="channel"), {"stride": 2, "padding": 1}),
    (GroupHorseshoe(groups="input"), {"dilation": 2}),
    (GroupHorseshoe(groups="input"), {"in_channels": 4, "groups": 2, "padding": (1, 0)}),
    (RegularizedHorseshoe(0.5, groups="channel"), {"groups": 2}),
    (SpikeAndSlab(slab_scale=1.0, spike_scale=0.05, inclusion_prior=0.3), {"padding": 1}),
    (LogUniform(), {}),
    (GroupNormalJeffreys(groups="channel"), {"padding": 1}),
]
IDS = [f"{prior!r}-{kwargs}" for prior, kwargs in CASES]


@pytest.mark.parametrize("input_requires_grad", [False, True], ids=["data_input", "hidden_input"])
@pytest.mark.parametrize("prior, kwargs", CASES, ids=IDS)
def test_local_reparameterisation_matches_moments_of_sampled_filters(prior, kwargs, input_requires_grad):
    kwargs = {"in_channels": 2, **kwargs}
    conv = _conv(prior, out_channels=4, **kwargs)
    x = torch.randn(1, conv.in_channels, 5, 5, dtype=DTYPE)
    x[0, :, 2, :] = 0.0  # a zero row of pixels: patches with few non-zero inputs
    n_draws = 10_000
    groups = conv.groups
    # The per-call scale draw is fixed by the seed (see test_linear), for a data input and a hidden one.
    torch.manual_seed(23)
    mean_w, var_w = (t.detach() for t in conv.weight.sample_moments())
    torch.manual_seed(23)
    lrt = conv(x.expand(n_draws, -1, -1, -1).clone().requires_grad_(input_requires_grad)).detach()
    with torch.no_grad():
        # Reference: n_draws whole filter banks, applied in one grouped convolution (group n * groups + g holds
        # copy n of the input's channel group g).
        gen = torch.Generator().manual_seed(5)
        eps = torch.randn((n_draws, *mean_w.shape), generator=gen, dtype=DTYPE)
        if isinstance(prior, SpikeAndSlab):
            phi = torch.sigmoid(conv.weight.inclusion_logit)
            xi = torch.rand(eps.shape, generator=gen, dtype=DTYPE) < phi
            w = torch.where(xi, conv.weight.theta.mean + conv.weight.theta.std * eps, prior.spike_scale * eps)
        else:
            w = mean_w + var_w.sqrt() * eps
        b = conv.bias_mean + conv.bias_std * torch.randn(n_draws, 4, generator=gen, dtype=DTYPE)
        geometry = {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation}
        sampled = F.conv2d(x.repeat(1, n_draws, 1, 1), w.flatten(0, 1), None, groups=n_draws * groups, **geometry)
        sampled = sampled.reshape(n_draws, 4, *sampled.shape[-2:]) + b[:, :, None, None]
        exact_mean = F.conv2d(x, mean_w, conv.bias_mean, groups=groups, **geometry)[0]
        exact_var = F.conv2d(x.square(), var_w, conv.bias_std.square(), groups=groups, **geometry)[0]

    assert lrt.shape == sampled.shape == (n_draws, *exact_mean.shape)
    if draws_scales_per_example(conv.weight) and input_requires_grad:
        # Group scales are drawn per example (see test_linear): compare with per-copy draws of them.
        with torch.no_grad():
            w = per_example_weights(conv.weight, n_draws, gen)
            sampled = F.conv2d(x.repeat(1, n_draws, 1, 1), w.flatten(0, 1), None, groups=n_draws * groups, **geometry)
            sampled = sampled.reshape(n_draws, 4, *sampled.shape[-2:]) + b[:, :, None, None]
        ref_mean, ref_var = sampled.mean(0), sampled.var(0)
        assert torch.all((lrt.mean(0) - ref_mean).abs() < 5 * (2 * ref_var / n_draws).sqrt() + 1e-12)
        assert torch.all((lrt.var(0) - ref_var).abs() < 15 * math.sqrt(2 / n_draws) * ref_var + 1e-12)
        return
    mean_tol = 5 * (exact_var / n_draws).sqrt()
    var_tol = 5 * math.sqrt(2 / n_draws) * exact_var * (2 if isinstance(prior, SpikeAndSlab) else 1)
    for draws in (lrt, sampled):
        assert torch.all((draws.mean(0) - exact_mean).abs() < mean_tol)
        assert torch.all((draws.var(0) - exact_var).abs() < var_tol)


@pytest.mark.parametrize("prior, kwargs", CASES, ids=IDS)
def test_mean_forward_is_the_convolution_with_mean_filters(prior, kwargs):
    conv = _conv(prior, **kwargs)
    c = conv.in_channels
    x = torch.randn(3, c, 6, 6, dtype=DTYPE)
    params = conv.mean_parameters()
    assert params["weight"].shape == conv.weight.shape == (4, c // conv.groups, 3, 3)
    reference = torch.nn.Conv2d(c, 4, 3, conv.stride, conv.padding, conv.dilation, conv.groups, dtype=DTYPE)
    reference.load_state_dict(params)
    with posterior_mean(conv):
        out = conv(x)
        torch.testing.assert_close(out, reference(x))
        torch.testing.assert_close(conv(x[0]), reference(x[0]))  # unbatched (C, H, W) input
    assert conv.sampling is True


def test_from_conv_keeps_the_geometry_and_starts_at_its_filters():
    source = torch.nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2, dtype=DTYPE)
    conv = BayesianConv2d.from_conv(source, prior=GroupHorseshoe(groups="channel"), init_log_std=-30.0)
    for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"):
        assert getattr(conv, attr) == getattr(source, attr), attr
    params = conv.mean_parameters()
    torch.testing.assert_close(params["weight"], source.weight.detach())
    torch.testing.assert_close(params["bias"], source.bias.detach())
    x = torch.randn(2, 4, 7, 7, dtype=DTYPE)
    with posterior_mean(conv):
        torch.testing.assert_close(conv(x), source(x))
    # With a tiny posterior spread the stochastic forward is the deterministic one, up to that spread.
    torch.testing.assert_close(conv(x), source(x), rtol=0, atol=1e-9)


@pytest.mark.parametrize("prior", [Normal(), GroupHorseshoe(groups="channel"), SpikeAndSlab()], ids=repr)
def test_gradient_reaches_every_parameter(prior):
    conv = _conv(prior, padding=1)
    (conv(torch.randn(2, 2, 5, 5, dtype=DTYPE)).square().sum() + conv.kl_divergence()).backward()
    for name, param in conv.named_parameters():
        assert param.grad is not None and torch.all(torch.isfinite(param.grad)), name
        assert param.grad.abs().sum() > 0, name


def test_zero_input_patch_without_bias_gives_finite_gradients():
    conv = _conv(GroupHorseshoe(groups="input"), bias=False, padding=1)
    x = torch.zeros(1, 2, 6, 6, dtype=DTYPE)
    x[0, :, :2, :2] = torch.randn(2, 2, 2, dtype=DTYPE)  # most output pixels see only zeros
    out = conv(x)
    torch.testing.assert_close(out[0, :, 4:, 4:], torch.zeros(4, 2, 2, dtype=DTYPE), rtol=0, atol=1e-100)
    (out.square().sum() + conv.kl_divergence()).backward()
    for name, param in conv.named_parameters():
        assert torch.all(torch.isfinite(param.grad)), name


@pytest.mark.parametrize("prior", [Normal(), GroupNormalJeffreys(groups="channel"), SpikeAndSlab()], ids=repr)
def test_pruning_scores_are_filter_shaped(prior):
    conv = _conv(prior, out_channels=4, groups=2)
    scores = conv.pruning_scores()
    assert {"mean", "std", "snr", "log_alpha", "folded_snr"} <= set(scores)
    for name, value in scores.items():
        assert value.shape == (4, 1, 3, 3), name
    if isinstance(prior, GroupNormalJeffreys):  # one log alpha per filter, repeated over its entries
        log_alpha = scores["log_alpha"]
        torch.testing.assert_close(log_alpha, log_alpha[:, :1, :1, :1].expand_as(log_alpha), rtol=0, atol=0)


def test_float32_convolution():
    conv = BayesianConv2d(2, 3, 3, prior=GroupHorseshoe(groups="channel"), dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in conv.parameters())
    out = conv(torch.randn(2, 2, 5, 5))
    assert out.dtype == torch.float32 and out.shape == (2, 3, 3, 3)
    assert conv.kl_divergence().dtype == torch.float32


@pytest.mark.parametrize("shape", [(2, 3, 5, 5), (3, 5, 5), (5, 5), (1, 2, 2, 5, 5)], ids=lambda s: f"x{tuple(s)}")
def test_rejects_wrong_input(shape):
    conv = _conv(in_channels=2)
    with pytest.raises(ValueError, match=r"\(batch, 2, height, width\)"):
        conv(torch.randn(shape, dtype=DTYPE))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"in_channels": 0}, ValueError, "in_channels"),
        ({"out_channels": 2.0}, TypeError, "out_channels"),
        ({"padding": "same"}, ValueError, "padding"),
        ({"in_channels": 3, "groups": 2}, ValueError, "groups"),
        ({"prior": "horseshoe"}, TypeError, "WeightPrior"),
        ({"prior": Horseshoe(groups=(4,))}, ValueError, r"shape \(4, 2, 3, 3\)"),
        ({"bias_prior_scale": -1.0}, ValueError, "bias_prior_scale"),
    ],
)
def test_rejects_bad_arguments(kwargs, exc, match):
    args = {"in_channels": 2, "out_channels": 4, "kernel_size": 3, **kwargs}
    with pytest.raises(exc, match=match):
        BayesianConv2d(**args)


def test_from_conv_rejects_non_zero_padding_modes():
    with pytest.raises(ValueError, match="padding"):
        BayesianConv2d.from_conv(torch.nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"))
