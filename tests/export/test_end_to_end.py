"""Prune -> shrink -> save -> load -> report through real Bayesian layers (probsparse.nn.BayesianLinear)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from probsparse.export.artefact import load, save
from probsparse.export.pruning import PruningError, PruningRule, prune
from probsparse.export.report import compression_report
from probsparse.export.shrink import masked_network, shrink
from probsparse.nn import BayesianLinear, kl_divergence, posterior_mean
from probsparse.priors import GroupNormalJeffreys, LogUniform, SpikeAndSlab


def _data(n=600, seed=0):
    """4x4 "images" whose class depends on the first four pixels only: the other twelve are noise."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, 4, generator=gen)
    y = (x[:, 0, :2].sum(-1) > 0).long() + 2 * (x[:, 0, 2:].sum(-1) > 0).long()
    return x, y


def _trained(prior, steps=200, kl_weight=0.4):
    # The KL is down-weighted so that on 600 examples sparse VD prunes about three quarters of the weights
    # and keeps the task learnt; at full weight it collapses the network to one hidden unit.
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Flatten(),
        BayesianLinear(16, 24, prior=prior),
        nn.ReLU(),
        BayesianLinear(24, 16, prior=prior),
        nn.ReLU(),
        BayesianLinear(16, 4, prior=prior),
    )
    x, y = _data()
    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y) + kl_weight * kl_divergence(net) / x.shape[0]
        loss.backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def sparse_vd_net():
    return _trained(LogUniform())


def test_sparse_vd_pipeline(sparse_vd_net, tmp_path):
    net = sparse_vd_net
    rule = PruningRule("log_alpha", threshold=3.0)
    masks, pruning_report = prune(net, rule)
    assert list(masks) == ["1", "3", "5"]
    for name, mask in masks.items():
        torch.testing.assert_close(mask, net.get_submodule(name).pruning_scores()["log_alpha"] < 3.0, rtol=0, atol=0)

    small = shrink(net, masks, dtype=torch.float32)
    x, y = _data(300, seed=1)
    # Reference written out from the layers' posterior means and the masks.
    means = [net.get_submodule(n).mean_parameters() for n in masks]
    h = x.flatten(1)
    for i, (p, m) in enumerate(zip(means, masks.values(), strict=True)):
        h = h @ (p["weight"] * m).T + p["bias"]
        h = torch.relu(h) if i < 2 else h
    with torch.no_grad():
        torch.testing.assert_close(small(x), h, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(masked_network(net, masks)(x), h, rtol=1e-5, atol=1e-5)

    folder = save(small, tmp_path / "exported", pruning=rule, prior=net[1].prior)
    loaded, manifest = load(folder, with_manifest=True)
    with torch.no_grad():
        assert torch.equal(loaded(x), small(x))
    assert manifest["prior"]["class"] == "LogUniform" and "LogUniform" in manifest["prior"]["repr"]
    assert manifest["pruning"]["description"] == "log_alpha < 3.0"

    rep = compression_report(
        net, loaded, pruned=masked_network(net, masks), data=(x, y), artefact=folder, batch_sizes=(1,), repeats=3
    )
    assert rep.n_nonzero <= pruning_report.n_kept
    assert rep.accuracy["exported"] == pytest.approx(rep.accuracy["pruned"])
    with torch.no_grad(), posterior_mean(net):
        dense_acc = (net(x).argmax(-1) == y).double().mean().item()
    assert rep.accuracy["original"] == pytest.approx(dense_acc)
    # The task is learnable, sparse VD keeps it learnt after pruning, and the shrink removes neurons.
    assert rep.accuracy["exported"] > 0.8
    assert sum(rep.hidden_widths["exported"]) < sum(rep.hidden_widths["original"])


def test_spike_and_slab_inclusion_probabilities():
    net = _trained(SpikeAndSlab(), steps=5)
    masks, report = prune(net, PruningRule("inclusion_prob", threshold=0.05))
    for name, mask in masks.items():
        expected = net.get_submodule(name).pruning_scores()["inclusion_prob"] >= 0.05
        torch.testing.assert_close(mask, expected, rtol=0, atol=0)
    small = shrink(net, masks)
    x, _ = _data(20)
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked_network(net, masks)(x), rtol=1e-5, atol=1e-6)


def test_a_network_without_the_score_is_named(sparse_vd_net):
    with pytest.raises(PruningError, match="layer '1' has no 'inclusion_prob' score"):
        prune(sparse_vd_net, PruningRule("inclusion_prob", threshold=0.5))


def test_group_log_alpha_prunes_whole_input_neurons():
    torch.manual_seed(0)
    net = nn.Sequential(
        BayesianLinear(8, 6, prior=GroupNormalJeffreys(groups="input")),
        nn.ReLU(),
        BayesianLinear(6, 2, prior=GroupNormalJeffreys(groups="input")),
    )
    with torch.no_grad():
        for layer in (net[0], net[2]):
            layer.weight.z_log_var.copy_(torch.linspace(-6.0, 2.0, layer.weight.z_log_var.numel()))
    masks, _ = prune(net, PruningRule("log_alpha", threshold=-1.0))
    group_alpha = net[0].pruning_scores()["log_alpha"][0]
    torch.testing.assert_close(masks["0"], (group_alpha < -1.0).expand(6, 8), rtol=0, atol=0)  # whole columns
    small = shrink(net, masks)
    assert small[0].index.tolist() == torch.nonzero(group_alpha < -1.0).reshape(-1).tolist()
    assert small[1].out_features == int((net[2].pruning_scores()["log_alpha"][0] < -1.0).sum())
    x = torch.randn(10, 8)
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked_network(net, masks)(x), rtol=1e-5, atol=1e-6)


def test_bayesian_conv_network_prunes_and_shrinks_by_channel():
    from probsparse.nn import BayesianConv2d
    from probsparse.priors import GroupHorseshoe

    torch.manual_seed(0)
    net = nn.Sequential(
        BayesianConv2d(1, 6, 3, prior=GroupHorseshoe(groups="output")),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        BayesianLinear(6 * 9, 4, prior=LogUniform()),
    )
    masks, report = prune(net, PruningRule("snr", keep_fraction=0.3, per_layer=True))
    assert list(masks) == ["0", "4"] and masks["0"].shape == (6, 1, 3, 3)
    small = shrink(net, masks)
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked_network(net, masks)(x), rtol=1e-5, atol=1e-6)
    # A channel survives only if one of its filter weights is kept and the linear layer reads it.
    kept = masks["0"].flatten(1).any(1) & masks["4"].reshape(4, 6, 9).any(-1).any(0)
    assert small[0].out_channels == int(kept.sum())
