"""bayesianize, bayesian_layers, kl_divergence and posterior_mean over whole networks."""

import copy

import pytest
import torch
from torch import nn

from probsparse.nn import (
    BayesianConv2d,
    BayesianLinear,
    bayesian_layers,
    bayesianize,
    kl_divergence,
    posterior_mean,
)
from probsparse.nn.families import CentredScaleMixtureFamily
from probsparse.priors import GroupHorseshoe, Horseshoe, Normal, RegularizedHorseshoe, SpikeAndSlab

DTYPE = torch.float64


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, dtype=DTYPE), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5, dtype=DTYPE), nn.ReLU())
        self.out = nn.Linear(5, 2, bias=False, dtype=DTYPE)

    def forward(self, x):
        return self.out(self.head(self.features(x)))


def _x():
    return torch.randn(6, 1, 4, 4, dtype=DTYPE)


@pytest.mark.parametrize(
    "prior",
    [None, Normal(0.5), Horseshoe(0.1), GroupHorseshoe(groups="output"), RegularizedHorseshoe(0.1)],
    ids=repr,
)
def test_converts_linear_and_conv_keeping_the_weights(prior):
    net = SmallNet()
    before = copy.deepcopy(net.state_dict())
    bnet = bayesianize(net, prior, init_log_std=-30.0)
    layers = bayesian_layers(bnet)
    assert set(layers) == {"features.0", "head.1", "out"}
    assert isinstance(layers["features.0"], BayesianConv2d)
    assert isinstance(layers["head.1"], BayesianLinear) and isinstance(layers["out"], BayesianLinear)
    assert not layers["out"].has_bias
    expected_prior = Normal if prior is None else type(prior)
    assert all(type(layer.prior) is expected_prior for layer in layers.values())
    # E[W] equals the source weights (a negligible posterior spread: Monte Carlo over scales is exact here).
    for name, layer in layers.items():
        source = net.get_submodule(name)
        params = layer.mean_parameters()
        torch.testing.assert_close(params["weight"], source.weight.detach(), rtol=1e-10, atol=1e-12)
        if source.bias is not None:
            torch.testing.assert_close(params["bias"], source.bias.detach(), rtol=0, atol=0)
    x = _x()
    with posterior_mean(bnet):
        torch.testing.assert_close(bnet(x), net(x), rtol=1e-9, atol=1e-12)
    # The source network is untouched and shares no parameter with the result.
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert not {id(p) for p in net.parameters()} & {id(p) for p in bnet.parameters()}
    assert all(isinstance(m, nn.Linear | nn.Conv2d) for m in (net.features[0], net.head[1], net.out))


def test_default_init_starts_near_the_source_network():
    net = SmallNet()
    bnet = bayesianize(net, Horseshoe(0.1))
    with torch.no_grad():
        x = _x()
        torch.testing.assert_close(bnet(x), net(x), rtol=0.05, atol=0.05)


def test_skip_by_name_and_by_type():
    net = SmallNet()
    by_name = bayesianize(net, skip=["head"])  # a name covers its children
    assert set(bayesian_layers(by_name)) == {"features.0", "out"}
    assert type(by_name.head[1]) is nn.Linear
    by_type = bayesianize(net, skip=[nn.Conv2d])
    assert set(bayesian_layers(by_type)) == {"head.1", "out"}
    assert type(by_type.features[0]) is nn.Conv2d
    both = bayesianize(net, skip=("out", nn.Conv2d))
    assert set(bayesian_layers(both)) == {"head.1"}


def test_mapping_and_callable_priors():
    net = SmallNet()
    horseshoe, slab = Horseshoe(0.2), SpikeAndSlab()
    mapped = bayesianize(net, {"head.1": horseshoe, "out": slab})
    layers = bayesian_layers(mapped)
    assert set(layers) == {"head.1", "out"}  # a layer missing from the mapping stays deterministic
    assert layers["head.1"].prior is horseshoe and layers["out"].prior is slab
    assert type(mapped.features[0]) is nn.Conv2d

    seen = []

    def choose(name, layer):
        seen.append((name, type(layer)))
        return GroupHorseshoe(groups="channel") if isinstance(layer, nn.Conv2d) else None

    chosen = bayesianize(net, choose)
    assert set(bayesian_layers(chosen)) == {"features.0"}
    assert chosen.features[0].prior.groups == "channel"
    assert sorted(seen) == sorted([("features.0", nn.Conv2d), ("head.1", nn.Linear), ("out", nn.Linear)])


def test_layer_kwargs_reach_every_layer():
    bnet = bayesianize(SmallNet(), Normal(), bias_prior_scale=3.0, init_log_std=-4.0)
    for layer in bayesian_layers(bnet).values():
        assert layer.bias_prior_scale == 3.0 and layer.init_log_std == -4.0


def test_centred_parameterisation_keeps_the_weights_and_trains():
    net = SmallNet()
    bnet = bayesianize(net, GroupHorseshoe(groups="input"), parameterisation="centred", init_log_std=-30.0)
    layers = bayesian_layers(bnet)
    assert all(isinstance(layer.weight, CentredScaleMixtureFamily) for layer in layers.values())
    x = _x()
    with posterior_mean(bnet):
        torch.testing.assert_close(bnet(x), net(x), rtol=1e-9, atol=1e-12)
    loss = bnet(x).square().sum() + kl_divergence(bnet)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in bnet.parameters())


def test_a_bare_linear_layer_is_converted():
    linear = nn.Linear(3, 2, dtype=DTYPE)
    layer = bayesianize(linear, Horseshoe(), init_log_std=-30.0)
    assert isinstance(layer, BayesianLinear)
    assert set(bayesian_layers(layer)) == {""}
    torch.testing.assert_close(layer.mean_parameters()["weight"], linear.weight.detach(), rtol=1e-10, atol=0)


def test_already_bayesian_layers_are_kept():
    net = nn.Sequential(BayesianLinear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    bnet = bayesianize(net, Horseshoe())
    assert set(bayesian_layers(bnet)) == {"0", "2"}
    assert type(bnet[0].prior) is Normal


def test_unknown_parameterised_layers_are_listed_in_the_error():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return self.gain * x

    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), Scale(), nn.Bilinear(4, 4, 2))
    with pytest.raises(TypeError, match=r"1 \(BatchNorm1d\), 2 \(Scale\), 3 \(Bilinear\).*skip="):
        bayesianize(net)
    # Skipped, they stay deterministic and the rest is converted.
    bnet = bayesianize(net, skip=[nn.BatchNorm1d, "2", nn.Bilinear])
    assert set(bayesian_layers(bnet)) == {"0"}
    # nn.Linear subclasses are not silently converted either.

    class MyLinear(nn.Linear):
        pass

    with pytest.raises(TypeError, match=r"0 \(MyLinear\)"):
        bayesianize(nn.Sequential(MyLinear(2, 2)))


def test_bad_prior_argument():
    with pytest.raises(TypeError, match="prior"):
        bayesianize(SmallNet(), "horseshoe")
    with pytest.raises(TypeError, match="WeightPrior"):
        bayesianize(SmallNet(), {"out": 0.5})


def test_kl_divergence_sums_the_layers():
    bnet = bayesianize(SmallNet(), Horseshoe(0.1))
    total = kl_divergence(bnet)
    assert total.shape == ()
    expected = sum(layer.kl_divergence() for layer in bayesian_layers(bnet).values())
    torch.testing.assert_close(total, expected)
    total.backward()
    assert all(p.grad is not None for p in bnet.parameters())


def test_kl_divergence_of_a_network_without_bayesian_layers_raises():
    with pytest.raises(ValueError, match="SmallNet has no Bayesian layer"):
        kl_divergence(SmallNet())


def test_posterior_mean_restores_the_flags():
    bnet = bayesianize(SmallNet(), Horseshoe(0.1))
    layers = bayesian_layers(bnet)
    layers["out"].sampling = False  # a layer already in mean mode stays so
    x = _x()
    with posterior_mean(bnet) as inside:
        assert inside is bnet
        assert not any(layer.sampling for layer in layers.values())
        torch.testing.assert_close(bnet(x), bnet(x), rtol=0, atol=0)
    assert [layer.sampling for layer in layers.values()] == [True, True, False]
    assert not torch.equal(bnet(x), bnet(x))
    with pytest.raises(RuntimeError, match="boom"), posterior_mean(bnet):
        raise RuntimeError("boom")
    assert [layer.sampling for layer in layers.values()] == [True, True, False]
