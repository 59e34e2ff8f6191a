"""ONNX export: ONNX Runtime reproduces torch, SparseLinear is densified or refused, bad input is named."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from probsparse.export.onnx import OnnxExport, to_onnx
from probsparse.export.sparse_linear import SparseLinear


def run_onnx(path, x: torch.Tensor) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.numpy()})[0]


def sparse_from(linear: nn.Linear, density: float, seed: int) -> SparseLinear:
    mask = torch.rand(linear.weight.shape, generator=torch.Generator().manual_seed(seed)) < density
    return SparseLinear.from_linear(linear, mask)


def test_plain_network_matches_torch_at_the_traced_and_other_batch_sizes(tmp_path):
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3)
    )
    net.train()  # exported in eval mode; the caller's module keeps its mode
    result = to_onnx(net, tmp_path / "sub" / "net.onnx", torch.randn(5, 3, 4))
    assert isinstance(result, OnnxExport) and result.path.is_file() and result.densified == ()
    assert result.max_abs_diff <= 1e-5
    assert net.training
    net.eval()
    for batch in (1, 17):
        x = torch.randn(batch, 3, 4)
        with torch.no_grad():
            np.testing.assert_allclose(run_onnx(result.path, x), net(x).numpy(), rtol=0, atol=1e-5)


def test_sparse_layers_are_written_dense_and_reproduce_the_sparse_network(tmp_path):
    torch.manual_seed(1)
    net = nn.Sequential(sparse_from(nn.Linear(10, 20), 0.2, 1), nn.ReLU(), nn.Linear(20, 4))
    result = to_onnx(net, tmp_path / "net.onnx", torch.randn(3, 10))
    assert result.densified == ("0",)
    assert isinstance(net[0], SparseLinear)  # the caller's network is untouched
    x = torch.randn(9, 10)
    with torch.no_grad():
        np.testing.assert_allclose(run_onnx(result.path, x), net(x).numpy(), rtol=0, atol=1e-5)


def test_a_sparse_layer_at_the_root_is_exported(tmp_path):
    layer = sparse_from(nn.Linear(6, 5), 0.5, 2)
    result = to_onnx(layer, tmp_path / "layer.onnx", torch.randn(2, 6))
    assert result.densified == ("<root>",)
    x = torch.randn(4, 6)
    with torch.no_grad():
        np.testing.assert_allclose(run_onnx(result.path, x), layer(x).numpy(), rtol=0, atol=1e-5)


def test_sparse_layers_error_mode_lists_the_layers(tmp_path):
    net = nn.Sequential(
        nn.Linear(4, 4), sparse_from(nn.Linear(4, 6), 0.5, 3), nn.ReLU(), sparse_from(nn.Linear(6, 2), 0.5, 4)
    )
    with pytest.raises(ValueError, match="SparseLinear layers.*: 1, 3; pass sparse_layers='densify'"):
        to_onnx(net, tmp_path / "net.onnx", torch.randn(2, 4), sparse_layers="error")
    assert not (tmp_path / "net.onnx").exists()


class _CountingScale(nn.Module):
    """Multiplies by how often it was called: the traced graph then differs from the checked call."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x * float(self.calls)


def test_a_graph_that_does_not_reproduce_torch_raises(tmp_path):
    with pytest.raises(RuntimeError, match="ONNX Runtime output differs from torch"):
        to_onnx(_CountingScale(), tmp_path / "bad.onnx", torch.ones(2, 3))


def test_bayesian_layers_are_refused_with_their_names(tmp_path):
    from probsparse.nn import BayesianLinear

    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), BayesianLinear(4, 2))
    with pytest.raises(TypeError, match=r"Bayesian layers \(2\).*to_deterministic"):
        to_onnx(net, tmp_path / "b.onnx", torch.ones(2, 3))
    assert not (tmp_path / "b.onnx").exists()


class _TwoOutputs(nn.Module):
    def forward(self, x):
        return x, 2 * x


def test_a_module_with_several_outputs_is_refused(tmp_path):
    with pytest.raises(TypeError, match="must return one tensor .* got tuple"):
        to_onnx(_TwoOutputs(), tmp_path / "two.onnx", torch.ones(2, 3))


def test_bad_arguments_are_named(tmp_path):
    net = nn.Linear(3, 2)
    with pytest.raises(TypeError, match="module must be a torch.nn.Module"):
        to_onnx(lambda x: x, tmp_path / "a.onnx", torch.randn(2, 3))
    with pytest.raises(TypeError, match="example_input must be a float32 torch.Tensor, got torch.float64"):
        to_onnx(net, tmp_path / "a.onnx", torch.randn(2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="example_input must be a float32 torch.Tensor, got ndarray"):
        to_onnx(net, tmp_path / "a.onnx", np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="batch dimension of size >= 1"):
        to_onnx(net, tmp_path / "a.onnx", torch.randn(0, 3))
    with pytest.raises(ValueError, match="sparse_layers must be one of"):
        to_onnx(net, tmp_path / "a.onnx", torch.randn(2, 3), sparse_layers="keep")
    with pytest.raises(ValueError, match="atol must be a finite number >= 0"):
        to_onnx(net, tmp_path / "a.onnx", torch.randn(2, 3), atol=-1.0)
