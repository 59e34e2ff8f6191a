"""Tests for probsparse.export.deterministic_state / to_deterministic."""

import math

import pytest
import torch
from torch import nn

from probsparse.export import deterministic_state, load_network, save_network, to_deterministic
from probsparse.nn import BayesianLinear, posterior_mean

DTYPE = torch.float64


def _randomise(module, seed=0):
    """Move every parameter away from its initial value, so a mix-up between layers or fields would show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=gen, dtype=param.dtype))
    return module


def _bayesian_mlp(dtype=DTYPE):
    net = nn.Sequential(
        BayesianLinear(4, 8, init_log_std=math.log(0.2), dtype=dtype),
        nn.ReLU(),
        BayesianLinear(8, 3, init_log_std=math.log(0.2), dtype=dtype),
    )
    return _randomise(net)


def _mean_forward(net, x):
    """The Bayesian network's posterior-mean output."""
    with posterior_mean(net):
        return net(x)


def _contains_bayesian(module):
    return any(isinstance(m, BayesianLinear) for m in module.modules())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_to_deterministic_reproduces_the_mean_network(dtype):
    net = _bayesian_mlp(dtype)
    x = torch.randn(16, 4, dtype=dtype)
    plain = to_deterministic(net)

    assert isinstance(plain, nn.Sequential)
    assert [type(m) for m in plain] == [nn.Linear, nn.ReLU, nn.Linear]
    assert not _contains_bayesian(plain)
    assert all(p.dtype == dtype for p in plain.parameters())
    with torch.no_grad():
        torch.testing.assert_close(plain(x), _mean_forward(net, x), rtol=0, atol=0)


def test_to_deterministic_leaves_the_original_untouched():
    net = _bayesian_mlp()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    plain = to_deterministic(net)
    assert [type(m) for m in net] == [BayesianLinear, nn.ReLU, BayesianLinear]
    with torch.no_grad():
        plain[0].weight.zero_()
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_deterministic_state_is_the_posterior_means_under_linear_names():
    net = _bayesian_mlp()
    state = deterministic_state(net)
    assert list(state) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    for idx in (0, 2):
        torch.testing.assert_close(state[f"{idx}.weight"], net[idx].weight.theta.mean, rtol=0, atol=0)
        torch.testing.assert_close(state[f"{idx}.bias"], net[idx].bias_mean, rtol=0, atol=0)
    assert not any(t.requires_grad for t in state.values())
    # Copies, not views: editing the export must not edit the posterior.
    state["0.weight"].zero_()
    assert net[0].weight.theta.mean.abs().sum() > 0


def test_deterministic_state_matches_state_dict_of_to_deterministic():
    net = _bayesian_mlp()
    state = deterministic_state(net)
    reference = to_deterministic(net).state_dict()
    assert list(state) == list(reference)
    for key in reference:
        torch.testing.assert_close(state[key], reference[key], rtol=0, atol=0)


def test_save_load_into_a_plain_sequential_reproduces_outputs(tmp_path):
    net = _bayesian_mlp(torch.float32)
    save_network(deterministic_state(net), tmp_path / "mlp", metadata={"architecture": "4-8-3"})
    state, manifest = load_network(tmp_path / "mlp")

    plain = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    plain.load_state_dict(state, strict=True)
    x = torch.randn(16, 4, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), _mean_forward(net, x), rtol=0, atol=0)
    assert manifest["tensors"]["0.weight"] == {"shape": [8, 4], "dtype": "float32"}


class _Net(nn.Module):
    """A custom container mixing Bayesian layers, plain layers with buffers, and nesting."""

    def __init__(self):
        super().__init__()
        self.fc1 = BayesianLinear(4, 6, dtype=DTYPE)
        self.norm = nn.BatchNorm1d(6, dtype=DTYPE)
        self.head = nn.ModuleDict({"out": BayesianLinear(6, 2, bias=False, dtype=DTYPE)})
        self.skip = nn.Linear(4, 2, dtype=DTYPE)

    def forward(self, x):
        # Layers are called with one argument, so the converted copy (nn.Linear has no `sample`) still runs.
        return self.head["out"](torch.relu(self.norm(self.fc1(x)))) + self.skip(x)

    def mean_forward(self, x):
        with posterior_mean(self):
            return self(x)


class _PlainNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 6, dtype=DTYPE)
        self.norm = nn.BatchNorm1d(6, dtype=DTYPE)
        self.head = nn.ModuleDict({"out": nn.Linear(6, 2, bias=False, dtype=DTYPE)})
        self.skip = nn.Linear(4, 2, dtype=DTYPE)

    def forward(self, x):
        return self.head["out"](torch.relu(self.norm(self.fc1(x)))) + self.skip(x)


def test_nested_custom_module_keeps_other_parameters_and_buffers(tmp_path):
    net = _randomise(_Net())
    net.train()
    net(torch.randn(32, 4, dtype=DTYPE))  # populate BatchNorm running statistics
    net.eval()

    state = deterministic_state(net)
    assert set(state) == {
        "fc1.weight",
        "fc1.bias",
        "norm.weight",
        "norm.bias",
        "norm.running_mean",
        "norm.running_var",
        "norm.num_batches_tracked",
        "head.out.weight",
        "skip.weight",
        "skip.bias",
    }
    torch.testing.assert_close(state["norm.running_mean"], net.norm.running_mean, rtol=0, atol=0)

    save_network(state, tmp_path)
    loaded, _ = load_network(tmp_path)
    plain = _PlainNet()
    plain.load_state_dict(loaded, strict=True)
    plain.eval()

    converted = to_deterministic(net)
    assert isinstance(converted.head["out"], nn.Linear) and converted.head["out"].bias is None
    assert not converted.training and not converted.fc1.training
    x = torch.randn(10, 4, dtype=DTYPE)
    with torch.no_grad():
        expected = net.mean_forward(x)
        torch.testing.assert_close(plain(x), expected, rtol=0, atol=0)
        torch.testing.assert_close(converted(x), expected, rtol=0, atol=0)


def test_a_single_bayesian_layer_becomes_a_linear():
    layer = _randomise(BayesianLinear(3, 2, dtype=DTYPE))
    plain = to_deterministic(layer)
    assert type(plain) is nn.Linear
    assert list(deterministic_state(layer)) == ["weight", "bias"]
    x = torch.randn(5, 3, dtype=DTYPE)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), _mean_forward(layer, x), rtol=0, atol=0)


def test_subclass_is_converted_through_its_mean_parameters():
    class _Scaled(BayesianLinear):
        """A layer overriding its posterior mean: the exporter must go through mean_parameters()."""

        def mean_parameters(self):
            params = super().mean_parameters()
            params["weight"] = 2.0 * params["weight"]
            return params

    net = nn.Sequential(_Scaled(3, 2, dtype=DTYPE))
    state = deterministic_state(net)
    torch.testing.assert_close(state["0.weight"], 2.0 * net[0].weight.theta.mean.detach(), rtol=0, atol=0)
    assert type(to_deterministic(net)[0]) is nn.Linear


def test_rejects_non_modules():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        to_deterministic({"weight": torch.ones(2)})
    with pytest.raises(TypeError, match="torch.nn.Module"):
        deterministic_state([BayesianLinear(2, 2)])
