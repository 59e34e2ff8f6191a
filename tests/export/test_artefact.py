"""Tests for probsparse.export.artefact: save/load of exported modules with an architecture manifest."""

import hashlib
import json
import pickle

import pytest
import torch
from torch import nn

from probsparse._version import __version__
from probsparse.export.artefact import ArtefactError, load, register_layer, save
from probsparse.export.io import MANIFEST_FILE, WEIGHTS_FILE, save_network
from probsparse.export.pruning import PruningRule, masks_from_scores
from probsparse.export.shrink import IndexSelect, shrink
from probsparse.export.sparse_linear import SparseLinear


def _exported(dtype=torch.float32):
    """A shrunk network with every kind of layer the artefact knows about in the path of the data."""
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(
        nn.Flatten(),
        nn.Linear(12, 8),
        nn.LeakyReLU(0.1),
        nn.Linear(8, 6),
        nn.GELU("tanh"),
        nn.Linear(6, 3),
        nn.LogSoftmax(-1),
    ).to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    scores = {"1": {"snr": torch.rand(8, 12, generator=gen)}, "3": {"snr": torch.rand(6, 8, generator=gen)}}
    scores["1"]["snr"][:, :3] = 0.0  # three pixels feed nothing
    masks, report = masks_from_scores(scores, PruningRule("snr", threshold=0.5))
    return net, masks, report, shrink(net, masks)


def _edit_manifest(folder, edit):
    path = folder / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def test_round_trip_rebuilds_the_same_network(tmp_path):
    _, _, report, small = _exported()
    rule = PruningRule("snr", threshold=0.5)
    folder = save(small, tmp_path / "net", pruning=rule, prior={"name": "log_uniform"}, metadata={"epochs": 2})
    loaded, manifest = load(folder, with_manifest=True)
    assert [type(m) for m in loaded] == [type(m) for m in small]
    assert isinstance(loaded[1], IndexSelect) and loaded[1].index.tolist() == small[1].index.tolist()
    assert not loaded.training
    x = torch.randn(9, 3, 4)
    with torch.no_grad():
        assert torch.equal(loaded(x), small(x))

    assert manifest["probsparse_version"] == __version__
    assert manifest["sha256"] == hashlib.sha256((folder / WEIGHTS_FILE).read_bytes()).hexdigest()
    layers = manifest["architecture"]["layers"]
    assert manifest["architecture"]["kind"] == "sequential"
    assert layers[0] == {"type": "flatten", "start_dim": 1, "end_dim": -1}
    assert layers[1] == {"type": "index_select", "in_features": 12, "out_features": 9}
    assert layers[3] == {"type": "leaky_relu", "negative_slope": 0.1}
    assert layers[5] == {"type": "gelu", "approximate": "tanh"}
    assert layers[-1] == {"type": "log_softmax", "dim": -1}
    linears = {name: m for name, m in small.named_children() if isinstance(m, nn.Linear)}
    assert set(manifest["sparsity"]) == set(linears)
    for name, m in linears.items():
        entry = manifest["sparsity"][name]
        assert entry["n_nonzero"] == int((m.weight != 0).sum()) and entry["n_weights"] == m.weight.numel()
        assert entry["shape"] == list(m.weight.shape)
    assert manifest["pruning"]["description"] == rule.describe() and manifest["pruning"]["threshold"] == 0.5
    assert manifest["prior"] == {"name": "log_uniform"}
    assert manifest["metadata"] == {"epochs": 2}


def test_pruning_report_and_arbitrary_prior_objects_are_recorded(tmp_path):
    _, _, report, small = _exported()

    class LogUniform:
        def __repr__(self):
            return "LogUniform(threshold=3.0)"

    save(small, tmp_path, pruning=report, prior=LogUniform())
    _, manifest = load(tmp_path, with_manifest=True)
    assert manifest["pruning"] == json.loads(json.dumps(report.to_dict()))
    assert manifest["prior"] == {"class": "LogUniform", "repr": "LogUniform(threshold=3.0)"}


@pytest.mark.parametrize(
    "layer",
    [
        nn.ReLU(),
        nn.ReLU6(),
        nn.Tanh(),
        nn.Sigmoid(),
        nn.SiLU(),
        nn.Identity(),
        nn.ELU(0.5),
        nn.Softplus(2.0, 10.0),
        nn.Softmax(1),
        nn.Linear(4, 4, bias=False),
    ],
)
def test_every_registered_layer_round_trips(tmp_path, layer):
    net = nn.Sequential(nn.Linear(4, 4, dtype=torch.float64), layer.double())
    save(net, tmp_path)
    loaded = load(tmp_path)
    x = torch.randn(3, 4, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    assert all(p.dtype == torch.float64 for p in loaded.parameters())


# ------------------------------------------------------------------------------------------ bad files


def test_tampered_weights_fail_the_checksum(tmp_path):
    save(_exported()[3], tmp_path)
    data = bytearray((tmp_path / WEIGHTS_FILE).read_bytes())
    data[-2] ^= 0x10
    (tmp_path / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256 mismatch"):
        load(tmp_path)


def _set_layer(i, **changes):
    def edit(manifest):
        manifest["architecture"]["layers"][i].update(changes)

    return edit


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (_set_layer(2, out_features=7), "layer 2"),
        (_set_layer(2, bias=False), "layer 2"),
        (_set_layer(1, out_features=5), "layer 1"),
        (_set_layer(3, type="swish"), r"unknown layer types: layer 3 \('swish'\)"),
        (_set_layer(0, type="conv3d"), r"layer 0 \('conv3d'\)"),
        (
            lambda m: m["architecture"].update(layers=m["architecture"]["layers"][:-2]),
            r"\['6.bias', '6.weight'\] belong",
        ),
        (lambda m: m["architecture"]["layers"].insert(0, {"type": "relu"}), "layer"),
        (lambda m: m["architecture"].update(kind="graph"), "no 'architecture'"),
        (lambda m: m.pop("architecture"), "load_network"),
        (lambda m: m["sparsity"]["2"].update(n_nonzero=1), "sparsity"),
        (lambda m: m.pop("sparsity"), "sparsity"),
        (lambda m: m["architecture"].update(layers=[]), "no layers"),
    ],
)
def test_manifest_that_does_not_match_the_weights_is_rejected(tmp_path, edit, match):
    save(_exported()[3], tmp_path)
    _edit_manifest(tmp_path, edit)
    with pytest.raises(ArtefactError, match=match):
        load(tmp_path)


def test_weights_only_artefact_points_to_load_network(tmp_path):
    save_network({"w": torch.ones(2)}, tmp_path)
    with pytest.raises(ArtefactError, match="load_network"):
        load(tmp_path)


def test_load_never_unpickles(tmp_path, monkeypatch):
    save(_exported()[3], tmp_path)

    def _forbidden(*args, **kwargs):
        raise AssertionError("load must never unpickle")

    for module, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(module, name, _forbidden)
    assert isinstance(load(tmp_path), nn.Sequential)


# ------------------------------------------------------------------------------------------ bad input to save


def test_save_lists_unknown_layer_types(tmp_path):
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Conv1d(1, 1, 1))
    with pytest.raises(TypeError, match=r"1 \(BatchNorm1d\), 3 \(Conv1d\)"):
        save(net, tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("module", "error", "match"),
    [(nn.Linear(2, 2), TypeError, "Sequential"), (nn.Sequential(), ValueError, "empty")],
)
def test_save_rejects_non_sequential_and_empty(tmp_path, module, error, match):
    with pytest.raises(error, match=match):
        save(module, tmp_path)


def test_save_rejects_non_json_metadata(tmp_path):
    with pytest.raises(TypeError, match="metadata"):
        save(nn.Sequential(nn.Linear(2, 2)), tmp_path, metadata={"x": float("nan")})


def test_register_layer_refuses_to_rebind_a_name():
    with pytest.raises(ValueError, match="already registered"):
        register_layer("relu", nn.Tanh, lambda m: {}, lambda s, t: nn.Tanh())


def test_sparse_linear_layers_round_trip(tmp_path):
    _, _, _, small = _exported()
    small[4] = SparseLinear.from_dense(small[4].weight, small[4].bias)  # the middle layer stored as CSR
    save(small, tmp_path)
    loaded, manifest = load(tmp_path, with_manifest=True)
    assert isinstance(loaded[4], SparseLinear)
    spec = manifest["architecture"]["layers"][4]
    assert spec == {
        "type": "sparse_linear",
        "in_features": small[4].in_features,
        "out_features": small[4].out_features,
        "nnz": small[4].nnz,
        "bias": True,
    }
    assert manifest["sparsity"]["4"]["n_nonzero"] == small[4].nnz
    assert set(manifest["tensors"]) >= {"4.values", "4.col_indices", "4.crow_indices", "4.bias"}
    x = torch.randn(5, 3, 4)
    with torch.no_grad():
        assert torch.equal(loaded(x), small(x))

    _edit_manifest(tmp_path, _set_layer(4, nnz=small[4].nnz + 1))
    with pytest.raises(ArtefactError, match="layer 4"):
        load(tmp_path)


@pytest.mark.parametrize(
    "layers",
    [
        [nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2)), nn.MaxPool2d(2, ceil_mode=True)],
        [nn.Conv2d(2, 3, 3, padding="same", bias=False, padding_mode="reflect"), nn.AvgPool2d(2, divisor_override=3)],
        [nn.Conv2d(2, 4, 1, groups=2), nn.AvgPool2d((2, 1), padding=(1, 0), count_include_pad=False)],
    ],
)
def test_conv_and_pool_layers_round_trip(tmp_path, layers):
    net = nn.Sequential(*layers, nn.Flatten()).double()
    with torch.no_grad():
        net[0].weight[0] = 0.0  # one filter pruned away
    save(net, tmp_path)
    loaded, manifest = load(tmp_path, with_manifest=True)
    x = torch.randn(2, 2, 9, 8, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    assert manifest["sparsity"]["0"]["shape"] == list(net[0].weight.shape)
    assert manifest["sparsity"]["0"]["n_nonzero"] == int((net[0].weight != 0).sum())
