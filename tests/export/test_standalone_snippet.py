"""The standalone loader in docs/exported_networks.md runs a saved artefact with torch and the standard library."""

import re
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from probsparse.export import artefact
from probsparse.export.artefact import load, save
from probsparse.export.shrink import IndexSelect
from probsparse.export.sparse_linear import SparseLinear

DOC = Path(__file__).resolve().parents[2] / "docs" / "exported_networks.md"


def _snippet() -> str:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Standalone loader", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the Standalone loader section must hold exactly one python block"
    return blocks[0]


def _load_exported(monkeypatch):
    """Execute the snippet with probsparse made unimportable; return its load_exported function."""
    # `import probsparse` / `import safetensors` now raise ImportError: the snippet needs torch alone.
    monkeypatch.setitem(sys.modules, "probsparse", None)
    monkeypatch.setitem(sys.modules, "safetensors", None)
    namespace: dict = {"__name__": "standalone_snippet"}
    exec(compile(_snippet(), str(DOC), "exec"), namespace)
    return namespace["load_exported"]


def _network_with_every_layer_type():
    """Input (1, 6, 6): conv -> pools -> flatten (27) -> index select (6) -> every activation -> CSR -> softmax."""
    gen = torch.Generator().manual_seed(0)
    layers = [
        nn.Conv2d(1, 3, 3, padding=1, padding_mode="replicate"),
        nn.MaxPool2d(2),
        nn.AvgPool2d(1, count_include_pad=False),
        nn.Flatten(1, -1),
        IndexSelect(torch.tensor([0, 2, 3, 5, 7, 8]), in_features=27),
        nn.Linear(6, 5),
        nn.ReLU(),
        nn.Linear(5, 5, bias=False),
        nn.ReLU6(),
        nn.Tanh(),
        nn.Sigmoid(),
        nn.SiLU(),
        nn.Identity(),
        nn.LeakyReLU(0.2),
        nn.ELU(0.7),
        nn.GELU("tanh"),
        nn.Softplus(2.0, 15.0),
    ]
    weight = torch.randn(4, 5, generator=gen) * (torch.rand(4, 5, generator=gen) < 0.5)
    layers += [SparseLinear.from_dense(weight, torch.randn(4, generator=gen)), nn.Softmax(-1), nn.LogSoftmax(-1)]
    net = nn.Sequential(*layers)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return net.eval()


def test_snippet_covers_every_registered_layer_type():
    net = _network_with_every_layer_type()
    assert {artefact.layer_spec(m)["type"] for m in net} == set(artefact._TYPES)
    for kind in artefact._TYPES:
        assert f'"{kind}"' in _snippet(), f"the standalone loader does not handle {kind!r}"


def test_snippet_runs_the_artefact_without_probsparse(tmp_path, monkeypatch):
    net = _network_with_every_layer_type()
    folder = save(net, tmp_path / "exported")
    x = torch.randn(7, 1, 6, 6)
    with torch.inference_mode():
        expected = load(folder)(x)
        direct = net(x)

    load_exported = _load_exported(monkeypatch)
    standalone = load_exported(folder)
    assert not any(type(m).__module__.startswith("probsparse") for m in standalone.modules())
    assert not standalone.training
    with torch.inference_mode():
        got = standalone(x)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got, direct, rtol=1e-6, atol=1e-6)


def test_snippet_checks_the_sha256(tmp_path, monkeypatch):
    folder = save(_network_with_every_layer_type(), tmp_path)
    data = bytearray((folder / "weights.safetensors").read_bytes())
    data[-1] ^= 0x01
    (folder / "weights.safetensors").write_bytes(bytes(data))
    load_exported = _load_exported(monkeypatch)
    with pytest.raises(ValueError, match="sha256"):
        load_exported(folder)


@pytest.mark.parametrize(
    "dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.bool]
)
def test_snippet_reads_safetensors_like_the_library(tmp_path, monkeypatch, dtype):
    from safetensors.torch import save as safetensors_save

    tensors = {
        "a": (torch.arange(12).reshape(3, 4) % 3).to(dtype),
        "scalar": torch.tensor(5).to(dtype),
        "empty": torch.zeros(0, 2, dtype=dtype),
    }
    data = safetensors_save(tensors, metadata={"note": "x"})
    monkeypatch.setitem(sys.modules, "safetensors", None)
    namespace: dict = {"__name__": "standalone_snippet"}
    exec(compile(_snippet(), str(DOC), "exec"), namespace)
    got = namespace["read_safetensors"](data)
    assert set(got) == set(tensors)
    for name, tensor in tensors.items():
        assert got[name].dtype == dtype and got[name].shape == tensor.shape
        assert torch.equal(got[name], tensor)
