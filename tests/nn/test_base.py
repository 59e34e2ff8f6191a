"""The layers' factored forward pass (group scales applied to inputs / outputs) against the plain one."""

import pytest
import torch

from probsparse.nn import BayesianConv2d, BayesianLinear
from probsparse.priors import GroupHorseshoe, Horseshoe, Normal

DTYPE = torch.float64


def _moments_by_weights(layer, x, factors):
    """Output mean and variance with every scale folded into the weight moments (the reference form)."""
    mean_w, var_w, in_scale, out_scale = factors
    for scale in (in_scale, out_scale):
        if scale is not None:
            mean_w, var_w = scale * mean_w, scale.square() * var_w
    bias_var = None if layer.bias_log_std is None else layer.bias_std.square()
    return layer._affine(x, mean_w, layer.bias_mean), layer._affine(x.square(), var_w, bias_var)


def _forward_moments(layer, x, factors, monkeypatch):
    """Mean and variance the layer's forward uses, read off by replacing its noise with 0 and then 1."""
    monkeypatch.setattr(layer.weight, "sample_factors", lambda: factors)
    monkeypatch.setattr(torch, "randn_like", torch.zeros_like)
    mean = layer(x)
    monkeypatch.setattr(torch, "randn_like", torch.ones_like)
    std = layer(x) - mean
    monkeypatch.undo()
    return mean, std.square()


@pytest.mark.parametrize("prior", [Normal(0.7), Horseshoe(0.5), GroupHorseshoe(groups="input"), GroupHorseshoe(groups="output")])
@pytest.mark.parametrize("input_requires_grad", [False, True])
def test_linear_factored_forward_equals_folded_weights(prior, input_requires_grad, monkeypatch):
    layer = BayesianLinear(5, 3, prior=prior, dtype=DTYPE)
    x = torch.randn(7, 5, dtype=DTYPE, requires_grad=input_requires_grad)
    factors = layer.weight.sample_factors()
    mean, var = _forward_moments(layer, x, factors, monkeypatch)
    ref_mean, ref_var = _moments_by_weights(layer, x, factors)
    torch.testing.assert_close(mean, ref_mean)
    torch.testing.assert_close(var, ref_var)


@pytest.mark.parametrize("groups", ["input", "channel"])
@pytest.mark.parametrize("conv_groups", [1, 2])
def test_conv_factored_forward_equals_folded_weights(groups, conv_groups, monkeypatch):
    layer = BayesianConv2d(4, 6, 3, padding=1, groups=conv_groups, prior=GroupHorseshoe(groups=groups), dtype=DTYPE)
    x = torch.randn(2, 4, 5, 5, dtype=DTYPE, requires_grad=True)
    factors = layer.weight.sample_factors()
    mean, var = _forward_moments(layer, x, factors, monkeypatch)
    ref_mean, ref_var = _moments_by_weights(layer, x, factors)
    torch.testing.assert_close(mean, ref_mean)
    torch.testing.assert_close(var, ref_var)


def test_factored_scales_keep_their_gradients():
    layer = BayesianLinear(5, 3, prior=GroupHorseshoe(groups="input"), dtype=DTYPE)
    x = torch.randn(7, 5, dtype=DTYPE)
    layer(x).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())
    assert layer.weight.scale_loc["lambda"].grad.abs().sum() > 0
