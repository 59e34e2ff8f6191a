"""Tests for probsparse.export.save_network / load_network (safetensors + JSON manifest, no pickle)."""

import hashlib
import json
import pickle

import pytest
import torch

from probsparse._version import __version__
from probsparse.export import load_network, save_network
from probsparse.export.io import MANIFEST_FILE, WEIGHTS_FILE


def _state(dtype):
    gen = torch.Generator().manual_seed(3)
    return {
        "fc1.weight": torch.randn(8, 4, generator=gen, dtype=dtype),
        "fc1.bias": torch.randn(8, generator=gen, dtype=dtype),
        "fc2.weight": torch.randn(2, 8, generator=gen, dtype=dtype),
        "bn.num_batches_tracked": torch.tensor(7),  # 0-d int64, as BatchNorm stores it
        "mask": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3, dtype=dtype),
    }


def _assert_same_state(got, want):
    assert list(got) == list(want)
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype, name
        assert got[name].shape == tensor.shape, name
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=0)


def _rewrite_manifest(path, **changes):
    manifest_path = path / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    manifest.update(changes)
    manifest_path.write_text(json.dumps(manifest))
    return manifest


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_names_shapes_dtypes_values(tmp_path, dtype):
    state = _state(dtype)
    returned = save_network(state, tmp_path / "net", metadata={"epochs": 3, "layers": ["fc1", "fc2"]})
    assert returned == tmp_path / "net"
    loaded, manifest = load_network(tmp_path / "net")
    _assert_same_state(loaded, state)

    assert manifest["format"] == "probsparse-network"
    assert manifest["format_version"] == 1
    assert manifest["probsparse_version"] == __version__
    assert manifest["metadata"] == {"epochs": 3, "layers": ["fc1", "fc2"]}
    weights = (tmp_path / "net" / WEIGHTS_FILE).read_bytes()
    assert manifest["sha256"] == hashlib.sha256(weights).hexdigest()
    dtype_name = str(dtype).removeprefix("torch.")
    assert manifest["tensors"]["fc1.weight"] == {"shape": [8, 4], "dtype": dtype_name}
    assert manifest["tensors"]["bn.num_batches_tracked"] == {"shape": [], "dtype": "int64"}
    assert manifest["tensors"]["mask"] == {"shape": [3], "dtype": "bool"}


def test_metadata_defaults_to_empty_and_files_are_only_weights_and_manifest(tmp_path):
    save_network({"w": torch.ones(2)}, tmp_path)
    _, manifest = load_network(tmp_path)
    assert manifest["metadata"] == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([MANIFEST_FILE, WEIGHTS_FILE])


def test_views_transposes_and_shared_storage_are_saved_by_value(tmp_path):
    base = torch.arange(12.0).reshape(3, 4)
    state = {"w": base, "w_t": base.T, "row": base[1], "tied": base}
    save_network(state, tmp_path)
    loaded, _ = load_network(tmp_path)
    _assert_same_state(loaded, {k: v.contiguous() for k, v in state.items()})


def test_saving_again_overwrites(tmp_path):
    save_network({"w": torch.zeros(2)}, tmp_path)
    save_network({"v": torch.ones(3)}, tmp_path)
    loaded, _ = load_network(tmp_path)
    _assert_same_state(loaded, {"v": torch.ones(3)})


# ------------------------------------------------------------------------------------------ integrity


def test_tampered_weights_raise_sha256_error(tmp_path):
    save_network(_state(torch.float32), tmp_path)
    weights_path = tmp_path / WEIGHTS_FILE
    data = bytearray(weights_path.read_bytes())
    data[-1] ^= 0x01  # flip one bit of the last tensor's payload: still valid safetensors
    weights_path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"sha256.*weights\.safetensors"):
        load_network(tmp_path)


def test_missing_manifest_is_a_clear_error(tmp_path):
    save_network({"w": torch.ones(2)}, tmp_path)
    (tmp_path / MANIFEST_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        load_network(tmp_path)


def test_missing_weights_is_a_clear_error(tmp_path):
    save_network({"w": torch.ones(2)}, tmp_path)
    (tmp_path / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="weights.safetensors"):
        load_network(tmp_path)


def test_nonexistent_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        load_network(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"format": "something-else"}, "format 'something-else'"),
        ({"format_version": 2}, "format_version 2, newer"),
        ({"format_version": "1"}, "format_version"),
        ({"sha256": None}, "sha256"),
        ({"tensors": []}, "tensors"),
    ],
)
def test_wrong_manifest_content_is_rejected(tmp_path, changes, match):
    save_network({"w": torch.ones(2)}, tmp_path)
    _rewrite_manifest(tmp_path, **changes)
    with pytest.raises(ValueError, match=match):
        load_network(tmp_path)


def test_manifest_that_is_not_json(tmp_path):
    save_network({"w": torch.ones(2)}, tmp_path)
    (tmp_path / MANIFEST_FILE).write_text("format: probsparse-network\n")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_network(tmp_path)


@pytest.mark.parametrize(
    "tensors",
    [
        {"w": {"shape": [3], "dtype": "float32"}},  # wrong shape
        {"w": {"shape": [2], "dtype": "float64"}},  # wrong dtype
        {"v": {"shape": [2], "dtype": "float32"}},  # wrong name
        {"w": {"shape": [2], "dtype": "float32"}, "v": {"shape": [1], "dtype": "float32"}},  # extra
    ],
)
def test_manifest_tensor_table_must_match_the_weights(tmp_path, tensors):
    save_network({"w": torch.ones(2, dtype=torch.float32)}, tmp_path)
    _rewrite_manifest(tmp_path, tensors=tensors)
    with pytest.raises(ValueError, match="weights.safetensors"):
        load_network(tmp_path)


# ------------------------------------------------------------------------------------------ no pickle


class _Payload:
    """Unpickling this object creates ``marker`` (builtins.open in write mode): a visible side effect."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_file_is_never_unpickled(tmp_path, monkeypatch):
    marker = tmp_path / "unpickled"
    data = pickle.dumps({"w": _Payload(marker)})
    # Positive control: the payload really fires when unpickled.
    pickle.loads(data)["w"].close()
    assert marker.exists()
    marker.unlink()

    net = tmp_path / "net"
    save_network({"w": torch.ones(2)}, net)
    (net / WEIGHTS_FILE).write_bytes(data)
    # A matching sha256, so that only the parser stands between the pickle and the caller.
    _rewrite_manifest(net, sha256=hashlib.sha256(data).hexdigest())

    def _forbidden(*args, **kwargs):
        raise AssertionError("load_network must never unpickle")

    for module, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(module, name, _forbidden)
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_network(net)
    assert not marker.exists()


def test_torch_save_file_is_rejected(tmp_path):
    net = tmp_path / "net"
    save_network({"w": torch.ones(2)}, net)
    torch.save({"w": torch.ones(2)}, net / WEIGHTS_FILE)
    data = (net / WEIGHTS_FILE).read_bytes()
    _rewrite_manifest(net, sha256=hashlib.sha256(data).hexdigest())
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_network(net)


# ------------------------------------------------------------------------------------------ save validation


@pytest.mark.parametrize(
    ("state", "error", "match"),
    [
        ([("w", torch.ones(2))], TypeError, "mapping"),
        ({}, ValueError, "no tensors"),
        ({"w": [1.0, 2.0]}, TypeError, r"state\['w'\]"),
        ({1: torch.ones(2)}, TypeError, "keys"),
        ({"__metadata__": torch.ones(2)}, ValueError, "reserved"),
        ({"w": torch.eye(3).to_sparse()}, ValueError, "dense"),
    ],
)
def test_save_rejects_bad_state(tmp_path, state, error, match):
    with pytest.raises(error, match=match):
        save_network(state, tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("metadata", [{"x": object()}, {"x": float("nan")}, ["not", "a", "dict"]])
def test_save_rejects_bad_metadata(tmp_path, metadata):
    with pytest.raises(TypeError, match="metadata"):
        save_network({"w": torch.ones(2)}, tmp_path, metadata=metadata)


def test_save_refuses_a_file_path(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="directory"):
        save_network({"w": torch.ones(2)}, target)
