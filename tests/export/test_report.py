"""Tests for probsparse.export.report: counts, sizes, latency and accuracy of an export."""

import json

import pytest
import torch
from torch import nn

from probsparse.export.artefact import save
from probsparse.export.io import save_network
from probsparse.export.report import compression_report, measure_latency, pruning_curve, weighted_layers
from probsparse.export.shrink import masked_network, shrink
from probsparse.export.sparse_linear import SparseLinear
from probsparse.nn import BayesianLinear, posterior_mean


def _case(seed=0):
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    masks = {
        "0": torch.rand(16, 20, generator=gen) < 0.15,
        "2": torch.rand(12, 16, generator=gen) < 0.3,
        "4": torch.rand(4, 12, generator=gen) < 0.6,
    }
    for m in masks.values():
        m[0, 0] = True
    return net, masks, shrink(net, masks)


def test_counts_match_the_weights():
    net, masks, small = _case()
    rep = compression_report(net, small, input_shape=(20,), batch_sizes=())
    small_linears = [m for m in small if isinstance(m, nn.Linear)]
    assert [(c.shape_original, c.shape_exported) for c in rep.layers] == [
        (tuple(a.weight.shape), tuple(b.weight.shape))
        for a, b in zip([net[0], net[2], net[4]], small_linears, strict=True)
    ]
    assert rep.n_weights_original == 20 * 16 + 16 * 12 + 12 * 4 == rep.macs_original
    assert rep.n_params_original == sum(p.numel() for p in net.parameters())
    assert rep.n_params_exported == sum(p.numel() for p in small.parameters())
    # Shrinking never removes a kept weight that can reach the output, so non-zeros <= kept mask entries.
    assert rep.n_nonzero == sum(int((m.weight != 0).sum()) for m in small_linears) == rep.macs_sparse
    assert rep.n_nonzero <= sum(int(m.sum()) for m in masks.values())
    assert rep.macs_exported == sum(m.weight.numel() for m in small_linears)
    assert rep.compression_ratio == pytest.approx(rep.n_weights_original / rep.n_nonzero)
    assert rep.kept_weight_fraction == pytest.approx(rep.n_nonzero / rep.n_weights_original)
    assert rep.input_features == 20 and rep.input_features_kept == small[0].index.numel() < 20
    assert rep.hidden_widths == {
        "original": [16, 12],
        "exported": [small_linears[0].out_features, small_linears[1].out_features],
    }
    assert rep.size_original_bytes is None and rep.latency_s == {} and rep.accuracy == {}


def test_accuracy_of_every_network_given():
    net, masks, small = _case(1)
    x = torch.randn(200, 20)
    with torch.no_grad():
        y = net(x).argmax(-1)
        y[::3] = (y[::3] + 1) % 4  # the dense network gets exactly two thirds right
        pruned = masked_network(net, masks)
        want_pruned = (pruned(x).argmax(-1) == y).double().mean().item()
    rep = compression_report(net, small, pruned=pruned, data=(x, y), batch_sizes=())
    assert rep.accuracy["original"] == pytest.approx(1 - 67 / 200)
    assert rep.accuracy["pruned"] == pytest.approx(want_pruned)
    assert rep.accuracy["exported"] == pytest.approx(want_pruned)  # shrink is exact

    def neg_mse(out, target):
        return -float(((out.argmax(-1) - target).double() ** 2).mean())

    rep = compression_report(net, small, data=(x, y), metric=neg_mse, batch_sizes=())
    assert rep.accuracy["original"] == pytest.approx(neg_mse(net(x), y))


def test_sizes_on_disk(tmp_path):
    net, _, small = _case()
    folder = save(small, tmp_path / "exported")
    rep = compression_report(net, small, input_shape=(20,), artefact=folder, batch_sizes=())
    assert rep.size_exported_bytes == sum(p.stat().st_size for p in folder.iterdir())
    reference = save_network(net.state_dict(), tmp_path / "dense")
    assert rep.size_original_bytes == sum(p.stat().st_size for p in reference.iterdir())
    with pytest.raises(FileNotFoundError, match="saved network folder"):
        compression_report(net, small, input_shape=(20,), artefact=tmp_path / "nowhere", batch_sizes=())


def test_latency_is_measured_per_batch_size_on_one_thread():
    net, _, small = _case()
    threads = torch.get_num_threads()
    rep = compression_report(net, small, input_shape=(20,), batch_sizes=(1, 8), repeats=3)
    assert torch.get_num_threads() == threads
    assert set(rep.latency_s) == {1, 8}
    for row in rep.latency_s.values():
        assert row["original"] > 0 and row["exported"] > 0
        assert row["ratio"] == pytest.approx(row["original"] / row["exported"])
    assert rep.load_average is not None and rep.load_average >= 0


def test_measure_latency_restores_threads_and_validates():
    torch.set_num_threads(1)
    calls = []

    class Probe(nn.Module):
        def forward(self, x):
            calls.append(torch.get_num_threads())
            return x

    assert measure_latency(Probe(), torch.ones(1), repeats=4, warmup=2) >= 0
    assert calls == [1] * 6
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(Probe(), torch.ones(1), repeats=0)


def test_bayesian_original_is_read_through_its_posterior_means():
    bayes = nn.Sequential(BayesianLinear(5, 4), nn.ReLU(), BayesianLinear(4, 2))
    masks = {"0": torch.ones(4, 5, dtype=torch.bool), "2": torch.ones(2, 4, dtype=torch.bool)}
    masks["0"][:, 2] = False
    small = shrink(bayes, masks)
    x = torch.randn(30, 5)
    y = torch.randint(0, 2, (30,))
    rep = compression_report(bayes, small, pruned=masked_network(bayes, masks), data=(x, y), batch_sizes=())
    assert rep.n_weights_original == 5 * 4 + 4 * 2
    assert rep.input_features_kept == 4
    with torch.no_grad(), posterior_mean(bayes):
        mean_out = bayes(x)
    assert rep.accuracy["original"] == pytest.approx((mean_out.argmax(-1) == y).double().mean().item())


def test_report_serialises_and_prints():
    net, _, small = _case()
    rep = compression_report(net, small, input_shape=(20,), batch_sizes=(1,), repeats=2)
    as_dict = json.loads(json.dumps(rep.to_dict()))
    assert as_dict["n_nonzero"] == rep.n_nonzero and as_dict["latency_s"]["1"] == rep.latency_s[1]
    assert as_dict["layers"][0]["shape_exported"] == list(rep.layers[0].shape_exported)
    text = rep.to_markdown()
    assert f"non-zero weights {rep.n_nonzero} of {rep.n_weights_original}" in text
    assert "latency, batch 1" in text and text.count("\n| ") == len(rep.layers)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"exported": nn.Sequential(nn.Linear(20, 4))}, ValueError, "3 linear/conv layers and exported has 1"),
        ({"data": (torch.randn(3, 20), torch.zeros(2))}, ValueError, "same number of rows"),
        ({"data": torch.randn(3, 20)}, TypeError, "pair"),
        ({"batch_sizes": (1,)}, ValueError, "input_shape"),
        ({"batch_sizes": (0,), "input_shape": (20,)}, ValueError, "batch size"),
        ({"original": "net"}, TypeError, "torch.nn.Module"),
    ],
)
def test_bad_input(kwargs, error, match):
    net, _, small = _case()
    args = {"original": net, "exported": small, "batch_sizes": ()}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        compression_report(args.pop("original"), args.pop("exported"), **args)


def test_weighted_layers_finds_dense_and_densifiable_layers():
    class CSRish(nn.Module):
        in_features, out_features = 3, 2

        def to_dense(self):
            return torch.eye(2, 3)

    net = nn.Sequential(nn.Linear(3, 3), CSRish(), nn.ReLU())
    assert [name for name, _ in weighted_layers(net)] == ["0", "1"]


def test_csr_layers_are_counted_through_their_dense_weight():
    net, _, small = _case()
    small[3] = SparseLinear.from_dense(small[3].weight, small[3].bias)
    rep = compression_report(net, small, input_shape=(20,), batch_sizes=(4,), repeats=2)
    assert rep.layers[1].n_nonzero == small[3].nnz
    assert rep.layers[1].shape_exported == (small[3].out_features, small[3].in_features)
    assert rep.n_params_exported == sum(p.numel() for p in small.parameters()) + small[3].nnz + small[3].out_features


def test_conv_work_is_counted_per_output_position():
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 9, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    masks = {"0": torch.ones(4, 1, 3, 3, dtype=torch.bool), "4": torch.rand(3, 36, generator=gen) < 0.5}
    masks["0"][2, 0, 1] = False
    masks["4"][:, 9:18] = False  # channel 1 feeds nothing
    small = shrink(net, masks)
    rep = compression_report(net, small, input_shape=(1, 8, 8), batch_sizes=())
    conv = rep.layers[0]
    assert conv.shape_original == (4, 1, 3, 3) and conv.shape_exported == (3, 1, 3, 3)
    assert conv.macs_original == 36 * 36 and conv.macs_exported == 27 * 36  # 6x6 output positions
    assert conv.macs_sparse == (27 - 3) * 36
    assert rep.layers[1].macs_original == 108 and rep.layers[1].shape_exported == (3, 27)
    assert rep.n_weights_original == 36 + 108
    assert rep.input_features == rep.input_features_kept == 1
    assert rep.hidden_widths == {"original": [4], "exported": [3]}
    with pytest.raises(ValueError, match="input_shape"):
        compression_report(net, small, batch_sizes=())


def test_pruning_curve_matches_pruning_and_masking_by_hand():
    from probsparse.export.pruning import PruningRule, prune

    torch.manual_seed(0)
    net = nn.Sequential(BayesianLinear(6, 10), nn.ReLU(), BayesianLinear(10, 3))
    x, y = torch.randn(50, 6), torch.randint(0, 3, (50,))
    fractions = [0.01, 0.2, 0.6, 1.0]
    rows = pruning_curve(net, "log_alpha", fractions, (x, y))
    assert [row["keep_fraction"] for row in rows] == fractions
    assert "keeps no weight of layer" in rows[0]["error"]  # 1 % of 90 weights: one layer is emptied
    for fraction, row in zip(fractions[1:], rows[1:], strict=True):
        masks, report = prune(net, PruningRule("log_alpha", keep_fraction=fraction))
        with torch.no_grad():
            expected = (masked_network(net, masks)(x).argmax(-1) == y).double().mean().item()
        assert row["n_kept"] == report.n_kept and row["accuracy"] == pytest.approx(expected)
    with torch.no_grad(), posterior_mean(net):
        assert rows[-1]["accuracy"] == pytest.approx((net(x).argmax(-1) == y).double().mean().item())
    per_layer = pruning_curve(net, "snr", [0.1], (x, y), per_layer=True)
    assert per_layer[0]["n_kept"] == 6 + 3  # ceil(0.1 * 60) + ceil(0.1 * 30)
    with pytest.raises(ValueError, match="fractions"):
        pruning_curve(net, "snr", [], (x, y))
