"""The layers' factored forward pass (group scales drawn per example and applied to inputs / outputs) against
folding each example's scales into the weights."""

import pytest
import torch

from probsparse.nn import BayesianConv2d, BayesianLinear
from probsparse.priors import GroupHorseshoe, Horseshoe, Normal

DTYPE = torch.float64


def _moments_by_weights(layer, x, factors):
    """Output mean and variance with every scale folded into the weight moments, one example at a time
    (scales drawn per example carry the batch dims in front of the weight's)."""
    mean_w, var_w, in_scale, out_scale = factors
    bias_var = None if layer.bias_log_std is None else layer.bias_std.square()
    means, variances = [], []
    for b in range(x.shape[0]):
        m, v = mean_w, var_w
        for scale in (in_scale, out_scale):
            if scale is not None:
                s = scale[b] if scale.dim() > mean_w.dim() else scale
                m, v = s * m, s.square() * v
        means.append(layer._affine(x[b : b + 1], m, layer.bias_mean))
        variances.append(layer._affine(x[b : b + 1].square(), v, bias_var))
    return torch.cat(means), torch.cat(variances)


def _forward_moments(layer, x, factors, monkeypatch):
    """Mean and variance the layer's forward uses, read off by replacing its noise with 0 and then 1."""
    monkeypatch.setattr(layer.weight, "sample_factors", lambda *args, **kwargs: factors)
    monkeypatch.setattr(torch, "randn_like", torch.zeros_like)
    mean = layer(x)
    monkeypatch.setattr(torch, "randn_like", torch.ones_like)
    std = layer(x) - mean
    monkeypatch.undo()
    return mean, std.square()


@pytest.mark.parametrize(
    "prior", [Normal(0.7), Horseshoe(0.5), GroupHorseshoe(groups="input"), GroupHorseshoe(groups="output")]
)
@pytest.mark.parametrize("input_requires_grad", [False, True])
def test_linear_factored_forward_equals_folded_weights(prior, input_requires_grad, monkeypatch):
    layer = BayesianLinear(5, 3, prior=prior, dtype=DTYPE)
    x = torch.randn(7, 5, dtype=DTYPE, requires_grad=input_requires_grad)
    # Scales are drawn per example for a hidden layer's input, once per call for a data input.
    factors = layer.weight.sample_factors(layer._batch_shape(x) if input_requires_grad else ())
    mean, var = _forward_moments(layer, x, factors, monkeypatch)
    ref_mean, ref_var = _moments_by_weights(layer, x, factors)
    torch.testing.assert_close(mean, ref_mean)
    torch.testing.assert_close(var, ref_var)


@pytest.mark.parametrize("groups", ["input", "channel"])
@pytest.mark.parametrize("conv_groups", [1, 2])
def test_conv_factored_forward_equals_folded_weights(groups, conv_groups, monkeypatch):
    layer = BayesianConv2d(4, 6, 3, padding=1, groups=conv_groups, prior=GroupHorseshoe(groups=groups), dtype=DTYPE)
    x = torch.randn(2, 4, 5, 5, dtype=DTYPE, requires_grad=True)
    factors = layer.weight.sample_factors(layer._batch_shape(x))
    mean, var = _forward_moments(layer, x, factors, monkeypatch)
    ref_mean, ref_var = _moments_by_weights(layer, x, factors)
    torch.testing.assert_close(mean, ref_mean)
    torch.testing.assert_close(var, ref_var)


def test_factored_scales_keep_their_gradients():
    layer = BayesianLinear(5, 3, prior=GroupHorseshoe(groups="input"), dtype=DTYPE)
    x = torch.randn(7, 5, dtype=DTYPE)
    layer(x).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())
    assert layer.weight.scales.loc.grad.abs().sum() > 0
