"""Tests for probsparse.export.shrink: structured removal of pruned neurons and inputs."""

import pytest
import torch
from torch import nn

from probsparse.export.shrink import (
    IndexSelect,
    ShrinkError,
    UnsupportedLayerError,
    masked_network,
    measured_layer_factory,
    shrink,
    shrink_linear_chain,
)
from probsparse.export.sparse_linear import SparseLinear
from probsparse.nn import BayesianLinear


def _randomise(net, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return net.eval()


def _naive_forward(x, layers, masks, acts):
    """Reference: the masked chain in float64, written out by hand."""
    h = x.double()
    for i, (lin, mask) in enumerate(zip(layers, masks, strict=True)):
        h = h @ (lin.weight.double() * mask.double()).T + (0 if lin.bias is None else lin.bias.double())
        if i < len(acts):
            h = acts[i](h)
    return h


def _designed():
    """Flatten -> 6 -> 5 -> 4 -> 3 with masks that exercise every removal rule, including cascades."""
    net = _randomise(
        nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    )
    with torch.no_grad():
        net[1].bias[1] = 0.7  # the constant neuron outputs relu(0.7) != 0, so its fold matters
    m1 = torch.ones(5, 6, dtype=torch.bool)
    m1[:, 5] = False  # input 5 feeds nothing
    m1[:, 4] = False
    m1[3, :] = False
    m1[3, 4] = True  # input 4 feeds only hidden neuron 3 ...
    m1[1, :] = False  # hidden neuron 1 has no input: constant relu(b)
    m2 = torch.ones(4, 5, dtype=torch.bool)
    m2[:, 3] = False  # ... and hidden neuron 3 feeds nothing, so input 4 goes too
    m2[2, :] = False
    m2[2, 1] = True  # second-layer neuron 2 reads only the constant neuron: constant in turn
    m3 = torch.ones(3, 4, dtype=torch.bool)
    return net, {"1": m1, "3": m2, "5": m3}


def test_designed_case_removes_what_it_should_and_keeps_outputs():
    net, masks = _designed()
    small = shrink(net, masks)
    assert [type(m) for m in small] == [nn.Flatten, IndexSelect, nn.Linear, nn.ReLU, nn.Linear, nn.Tanh, nn.Linear]
    assert small[1].index.tolist() == [0, 1, 2, 3]
    assert [(m.in_features, m.out_features) for m in small if isinstance(m, nn.Linear)] == [(4, 3), (3, 3), (3, 3)]
    assert not small.training

    x = torch.randn(7, 2, 3, dtype=torch.float64)
    expected = _naive_forward(x.flatten(1), [net[1], net[3], net[5]], list(masks.values()), [torch.relu, torch.tanh])
    with torch.no_grad():
        torch.testing.assert_close(small(x), expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(masked_network(net, masks)(x), expected, rtol=1e-12, atol=1e-12)
    # The folds are load-bearing: dropping the constants' contributions changes the output.
    chain = shrink_linear_chain(
        [net[1].weight, net[3].weight, net[5].weight],
        [net[1].bias, net[3].bias, net[5].bias],
        list(masks.values()),
        [torch.relu, torch.tanh],
    )
    assert not torch.allclose(chain.biases[1], net[3].bias[chain.neuron_index[1]])
    assert not torch.allclose(chain.biases[2], net[5].bias)


@pytest.mark.parametrize("seed", range(6))
def test_random_masks_equivalence_and_minimality(seed):
    gen = torch.Generator().manual_seed(seed)
    widths = [int(w) for w in torch.randint(3, 12, (4,), generator=gen)]
    acts = [nn.ReLU(), nn.Sigmoid(), nn.GELU()]
    modules = []
    for i in range(3):
        modules.append(nn.Linear(widths[i], widths[i + 1], dtype=torch.float64))
        if i < 2:
            modules.append(acts[i])
    net = _randomise(nn.Sequential(*modules), seed)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    masks = {str(i): torch.rand(m.weight.shape, generator=gen) < 0.45 for i, m in zip((0, 2, 4), linears, strict=True)}
    for mask in masks.values():
        mask[0, 0] = True  # keep one path through every layer so no layer is dead
    small = shrink(net, masks)  # these seeds leave every layer alive; dead layers have their own test
    x = torch.randn(20, widths[0], dtype=torch.float64)
    expected = _naive_forward(x, linears, list(masks.values()), [torch.relu, torch.sigmoid])
    with torch.no_grad():
        torch.testing.assert_close(small(x), expected, rtol=1e-12, atol=1e-12)

    # Minimality: every kept input and hidden neuron has a kept (non-zero) outgoing weight, and every kept
    # hidden neuron a kept incoming weight.
    kept = [m.weight for m in small if isinstance(m, nn.Linear)]
    for i, w in enumerate(kept):
        assert (w != 0).any(dim=0).all(), f"layer {i} has an unused input"
        if i < len(kept) - 1:
            assert (w != 0).any(dim=1).all(), f"layer {i} has a neuron with no input"
    assert kept[-1].shape[0] == widths[-1]

    # float32 export of the same network equals the float32 masked network to float32 precision.
    small32 = shrink(net, masks, dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in small32.parameters())
    with torch.no_grad():
        torch.testing.assert_close(
            small32(x.float()), masked_network(net, masks, dtype=torch.float32)(x.float()), rtol=1e-5, atol=1e-6
        )


def test_dropout_removed_softmax_kept_and_missing_bias_created():
    net = _randomise(
        nn.Sequential(
            nn.Linear(4, 5, bias=False), nn.Sigmoid(), nn.Dropout(0.5), nn.Linear(5, 3, bias=False), nn.LogSoftmax(-1)
        ).double()
    )
    m0 = torch.ones(5, 4, dtype=torch.bool)
    m0[2] = False  # constant sigmoid(0) = 0.5: the next layer needs a bias to carry it
    small = shrink(net, {"0": m0})
    assert [type(m) for m in small] == [nn.Linear, nn.Sigmoid, nn.Linear, nn.LogSoftmax]
    assert small[0].bias is None and small[2].bias is not None
    torch.testing.assert_close(small[2].bias, 0.5 * net[3].weight[:, 2])
    x = torch.randn(6, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked_network(net, {"0": m0})(x), rtol=1e-12, atol=1e-12)


def test_nested_sequentials_and_unmasked_layers():
    net = _randomise(nn.Sequential(nn.Sequential(nn.Linear(3, 4), nn.ReLU()), nn.Linear(4, 2)).double())
    m = torch.ones(4, 3, dtype=torch.bool)
    m[:, 1] = False
    small = shrink(net, {"0.0": m})
    assert small[0].index.tolist() == [0, 2]
    x = torch.randn(5, 3, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked_network(net, {"0.0": m})(x), rtol=1e-12, atol=1e-12)


def test_layer_factory_is_used_for_every_linear_layer():
    net, masks = _designed()
    seen = []

    def factory(weight, bias):
        seen.append(tuple(weight.shape))
        layer = nn.Linear(weight.shape[1], weight.shape[0], dtype=weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)
        return layer

    shrink(net, masks, layer_factory=factory)
    assert seen == [(3, 4), (3, 3), (3, 3)]


def test_bayesian_layers_are_read_through_their_posterior_means():
    net = nn.Sequential(BayesianLinear(6, 5, dtype=torch.float64), nn.ReLU(), BayesianLinear(5, 3, dtype=torch.float64))
    _randomise(net)
    gen = torch.Generator().manual_seed(1)
    masks = {"0": torch.rand(5, 6, generator=gen) < 0.5, "2": torch.rand(3, 5, generator=gen) < 0.6}
    masks["0"][:, 0] = True
    small = shrink(net, masks)
    assert not any(isinstance(m, BayesianLinear) for m in small)
    x = torch.randn(8, 6, dtype=torch.float64)
    means = [net[0].mean_parameters(), net[2].mean_parameters()]
    h = torch.relu(x @ (means[0]["weight"] * masks["0"]).T + means[0]["bias"])
    expected = h @ (means[1]["weight"] * masks["2"]).T + means[1]["bias"]
    with torch.no_grad():
        torch.testing.assert_close(small(x), expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(masked_network(net, masks)(x), expected, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------ errors


def test_unknown_layer_types_are_all_listed():
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Sequential(nn.LayerNorm(4)), nn.Linear(4, 2))
    with pytest.raises(UnsupportedLayerError, match=r"1 \(BatchNorm1d\), 2\.0 \(LayerNorm\)"):
        shrink(net, {})

    class Custom(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(UnsupportedLayerError, match=r"<network> \(Custom\)"):
        shrink(Custom(), {})


@pytest.mark.parametrize(
    ("net", "match"),
    [
        (nn.Sequential(nn.Linear(2, 2), nn.Flatten(), nn.Linear(2, 2)), "Flatten"),
        (nn.Sequential(nn.Flatten(0), nn.Linear(2, 2)), "Flatten"),
        (nn.Sequential(nn.Linear(2, 2), nn.Softmax(-1), nn.Linear(2, 2)), "after a final Softmax"),
        (nn.Sequential(nn.Linear(2, 2), nn.Softmax(0)), "dim -1"),
        (nn.Sequential(nn.Linear(2, 2), nn.Softmax(-1), nn.ReLU()), "after a final"),
        (nn.Sequential(nn.ReLU()), "no linear or conv layer"),
    ],
)
def test_unsupported_orders(net, match):
    with pytest.raises(UnsupportedLayerError, match=match):
        shrink(net, {})


def test_a_layer_left_without_neurons_is_named():
    net = _randomise(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)))
    m2 = torch.zeros(4, 4, dtype=torch.bool)
    m2[:, 0] = True
    m0 = torch.ones(4, 3, dtype=torch.bool)
    m0[0] = False  # the only neuron layer "2" reads is constant, so all of layer "2" is constant
    with pytest.raises(ShrinkError, match="no neuron or channel of layer '0', layer '2' is left"):
        shrink(net, {"0": m0, "2": m2})


def test_all_inputs_pruned_is_an_error():
    net = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(ShrinkError, match="every input feature"):
        shrink(net, {"0": torch.zeros(2, 3, dtype=torch.bool)})


@pytest.mark.parametrize(
    ("masks", "error", "match"),
    [
        ({"0": torch.ones(2, 3)}, ValueError, r"masks\['0'\] must be a bool tensor"),
        ({"0": torch.ones(3, 2, dtype=torch.bool)}, ValueError, r"masks\['0'\]"),
        ({"5": torch.ones(2, 3, dtype=torch.bool)}, ValueError, r"not linear or conv layers.*\['5'\]"),
        ([torch.ones(2, 3, dtype=torch.bool)], TypeError, "mapping"),
    ],
)
def test_bad_masks(masks, error, match):
    with pytest.raises(error, match=match):
        shrink(nn.Sequential(nn.Linear(3, 2)), masks)


def test_masked_network_rejects_unknown_layers():
    with pytest.raises(ValueError, match="'7'"):
        masked_network(nn.Sequential(nn.Linear(3, 2)), {"7": torch.ones(2, 3, dtype=torch.bool)})


def test_index_select_validation():
    with pytest.raises(TypeError, match="integer"):
        IndexSelect(torch.tensor([0.0]), 3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        IndexSelect(torch.tensor([0, 3]), 3)


def test_chain_argument_validation():
    w = torch.ones(2, 3)
    with pytest.raises(ValueError, match="one activation fewer"):
        shrink_linear_chain([w], [None], [w.bool()], [torch.relu])
    with pytest.raises(ValueError, match="takes 3 input units"):
        shrink_linear_chain([w, w], [None, None], [w.bool(), w.bool()], [torch.relu])


def test_measured_layer_factory_picks_dense_or_csr_and_stays_equivalent():
    net, masks = _designed()
    small = shrink(net, masks, layer_factory=measured_layer_factory(batch_size=8, repeats=2))
    kinds = [type(m) for m in small if isinstance(m, nn.Linear | SparseLinear)]
    assert len(kinds) == 3
    x = torch.randn(8, 2, 3, dtype=torch.float32)
    with torch.no_grad():
        reference = masked_network(net, masks, dtype=torch.float32)(x)
        torch.testing.assert_close(small(x), reference, rtol=1e-5, atol=1e-6)
    for layer in small:
        if isinstance(layer, SparseLinear):
            assert layer.nnz == int((layer.weight_dense() != 0).sum())


# ------------------------------------------------------------------------------------------ conv channels


def _conv_net():
    """(2, 12, 12) -> conv 3x3 (4 ch) -> pool -> conv 3x3 pad 1 (5 ch) -> flatten (125) -> 6 -> 3."""
    return _randomise(
        nn.Sequential(
            nn.Conv2d(2, 4, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 5, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(125, 6),
            nn.ReLU(),
            nn.Linear(6, 3),
        ).double()
    )


def test_conv_channels_are_removed_and_constants_folded_where_exact():
    net = _conv_net()
    with torch.no_grad():
        net[0].bias[1] = 0.5
        net[3].bias[0] = 0.8
        net[6].bias[2] = 0.3
    m0 = torch.ones(4, 2, 3, 3, dtype=torch.bool)
    m0[1] = False  # conv1 channel 1 is constant, but conv2 zero-pads: not foldable, so it stays
    m3 = torch.ones(5, 4, 3, 3, dtype=torch.bool)
    m3[:, 3] = False  # conv1 channel 3 feeds nothing: removed
    m3[0] = False  # conv2 channel 0 is constant and the next layer is linear: folded
    m6 = torch.ones(6, 125, dtype=torch.bool)
    m6[:, 100:] = False  # conv2 channel 4 feeds nothing: removed
    m6[2] = False  # hidden neuron 2 is constant: folded
    masks = {"0": m0, "3": m3, "6": m6}
    small = shrink(net, masks)
    convs = [m for m in small if isinstance(m, nn.Conv2d)]
    linears = [m for m in small if isinstance(m, nn.Linear)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(2, 3), (3, 3)]
    assert convs[1].padding == (1, 1)
    assert [(m.in_features, m.out_features) for m in linears] == [(75, 5), (5, 3)]
    assert not any(isinstance(m, IndexSelect) for m in small)
    x = torch.randn(6, 2, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked_network(net, masks)(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("pool", "padding", "folded"),
    [
        (nn.AvgPool2d(2), 0, True),
        (nn.AvgPool2d(3, stride=1, padding=1), 0, False),  # zero-padded average: a constant map is not constant
        (nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), 0, True),
        (nn.MaxPool2d(3, stride=1, padding=1), 0, True),
        (nn.Identity(), 1, False),  # the next conv zero-pads
    ],
)
def test_constant_channels_fold_only_when_exact(pool, padding, folded):
    net = _randomise(
        nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), pool, nn.Conv2d(3, 2, 3, padding=padding), nn.Flatten()).double()
    )
    m0 = torch.ones(3, 1, 3, 3, dtype=torch.bool)
    m0[2] = False
    small = shrink(net, {"0": m0})
    assert small[0].out_channels == (2 if folded else 3)
    x = torch.randn(4, 1, 10, 10, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked_network(net, {"0": m0})(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_random_conv_masks_are_equivalent(seed):
    net = _conv_net()
    gen = torch.Generator().manual_seed(seed)
    masks = {name: torch.rand(net.get_submodule(name).weight.shape, generator=gen) < 0.3 for name in ("0", "3", "6")}
    # Cut whole filters and whole channel blocks at random too, so that every removal rule gets exercised.
    masks["0"][torch.rand(4, generator=gen) < 0.3] = False
    masks["3"][torch.rand(5, generator=gen) < 0.3] = False
    masks["3"][:, torch.rand(4, generator=gen) < 0.3] = False
    for channel in range(5):
        if torch.rand(1, generator=gen) < 0.3:
            masks["6"][:, 25 * channel : 25 * (channel + 1)] = False
    small = shrink(net, masks)
    assert sum(m.out_channels for m in small if isinstance(m, nn.Conv2d)) < 9
    x = torch.randn(3, 2, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked_network(net, masks)(x), rtol=1e-12, atol=1e-12)


def test_bayesian_conv_network():
    from probsparse.nn import BayesianConv2d

    net = nn.Sequential(
        BayesianConv2d(1, 4, 3, dtype=torch.float64),
        nn.ReLU(),
        nn.Flatten(),
        BayesianLinear(4 * 36, 2, dtype=torch.float64),
    )
    _randomise(net)
    masks = {"0": torch.ones(4, 1, 3, 3, dtype=torch.bool), "3": torch.ones(2, 144, dtype=torch.bool)}
    masks["0"][1] = False
    masks["3"][:, 72:108] = False  # channel 2 feeds nothing
    small = shrink(net, masks)
    assert type(small[0]) is nn.Conv2d and small[0].out_channels == 2
    assert small[3].in_features == 72
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked_network(net, masks)(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("net", "match"),
    [
        (nn.Sequential(nn.Conv2d(2, 2, 1, groups=2)), r"0 \(Conv2d\)"),
        (nn.Sequential(nn.Linear(2, 2), nn.Conv2d(2, 2, 1)), "after a Flatten or a linear"),
        (nn.Sequential(nn.Conv2d(1, 2, 1), nn.Linear(2, 2)), "without a Flatten"),
        (nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten(), nn.MaxPool2d(2), nn.Linear(8, 2)), "before the Flatten"),
        (nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten(), nn.Linear(9, 2)), "not a multiple of the 2 channels"),
        (nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten(), nn.Flatten()), "once"),
    ],
)
def test_unsupported_conv_arrangements(net, match):
    with pytest.raises(UnsupportedLayerError, match=match):
        shrink(net, {})


def test_bad_dtype_and_factory_arguments():
    net, masks = _designed()
    with pytest.raises(TypeError, match="dtype"):
        shrink(net, masks, dtype=torch.int64)
    with pytest.raises(ValueError, match="batch_size"):
        measured_layer_factory(batch_size=0)
