"""SparseLinear against dense float64 matmuls and torch.nn.Linear; choose_layer on clear-cut cases."""

from __future__ import annotations

import copy
import io
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from probsparse.export.sparse_linear import LayerChoice, SparseLinear, choose_layer, sparsify


def masked_layer(out_features, in_features, density, seed, *, bias=True):
    generator = torch.Generator().manual_seed(seed)
    linear = nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(out_features, in_features, generator=generator))
        if bias:
            linear.bias.copy_(torch.randn(out_features, generator=generator))
    mask = torch.rand(out_features, in_features, generator=generator) < density
    return linear, mask


def reference(linear, mask, x):
    """float64 ``x @ (W * mask).T + b``, and the float32 rounding bound of each output."""
    w = (linear.weight.detach() * mask).double()
    x64 = x.double()
    ref = x64 @ w.T
    scale = x64.abs() @ w.abs().T
    if linear.bias is not None:
        ref = ref + linear.bias.detach().double()
        scale = scale + linear.bias.detach().double().abs()
    return ref, 8 * torch.finfo(torch.float32).eps * (scale + 1.0)


def assert_matches(y, linear, mask, x):
    ref, tol = reference(linear, mask, x)
    assert y.dtype == torch.float32 and y.shape == ref.shape
    assert bool(((y.double() - ref).abs() <= tol).all())


@pytest.mark.parametrize("shape", [(1, 37), (5, 37), (300, 37), (0, 37), (37,), (2, 3, 37)])
def test_forward_matches_float64_masked_matmul(shape):
    linear, mask = masked_layer(23, 37, 0.2, seed=1)
    layer = SparseLinear.from_linear(linear, mask)
    x = torch.randn(*shape)
    with torch.no_grad():
        y = layer(x)
    assert y.shape == (*shape[:-1], 23)
    assert_matches(y, linear, mask, x)


def test_default_mask_keeps_the_non_zero_weights_and_a_masked_in_zero_is_stored():
    weight = torch.tensor([[0.0, 1.5, 0.0, -2.0], [0.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0]])
    layer = SparseLinear.from_dense(weight)
    assert layer.nnz == 3 and layer.out_features == 3 and layer.in_features == 4
    assert layer.density == pytest.approx(3 / 12)
    assert layer.crow_indices.tolist() == [0, 2, 2, 3] and layer.col_indices.tolist() == [1, 3, 0]
    mask = weight != 0
    mask[1, 2] = True
    assert SparseLinear.from_dense(weight, mask=mask).nnz == 4
    assert layer.bias is None


def test_to_dense_round_trips_the_masked_weight_and_the_output():
    linear, mask = masked_layer(9, 14, 0.3, seed=2)
    layer = SparseLinear.from_linear(linear, mask)
    dense = layer.to_dense()
    assert isinstance(dense, nn.Linear)
    torch.testing.assert_close(dense.weight.detach(), linear.weight.detach() * mask, rtol=0, atol=0)
    torch.testing.assert_close(dense.bias.detach(), linear.bias.detach(), rtol=0, atol=0)
    x = torch.randn(6, 14)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), dense(x), rtol=1e-5, atol=1e-5)


def test_float64_weights_are_stored_as_float32():
    linear, mask = masked_layer(4, 6, 0.5, seed=3)
    layer = SparseLinear.from_linear(copy.deepcopy(linear).double(), mask)
    assert layer.values.dtype == torch.float32 and layer.bias.dtype == torch.float32
    x = torch.randn(3, 6)
    with torch.no_grad():
        assert_matches(layer(x), linear, mask, x)


def test_non_contiguous_input_and_inference_mode():
    linear, mask = masked_layer(8, 10, 0.4, seed=4)
    layer = SparseLinear.from_linear(linear, mask)
    x = torch.randn(10, 5).T  # (5, 10), not contiguous
    with torch.inference_mode():
        y = layer(x)
    assert_matches(y, linear, mask, x)


def test_a_network_of_sparse_layers_runs_under_no_grad():
    l1, m1 = masked_layer(16, 12, 0.3, seed=5)
    l2, m2 = masked_layer(3, 16, 0.3, seed=6)
    net = nn.Sequential(SparseLinear.from_linear(l1, m1), nn.ReLU(), SparseLinear.from_linear(l2, m2))
    ref = nn.Sequential(net[0].to_dense(), nn.ReLU(), net[2].to_dense())
    x = torch.randn(7, 12)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x), rtol=1e-5, atol=1e-5)


def test_buffers_are_in_the_state_dict_and_load_into_a_twin():
    linear, mask = masked_layer(5, 8, 0.5, seed=7)
    layer = SparseLinear.from_linear(linear, mask)
    assert set(layer.state_dict()) == {"values", "col_indices", "crow_indices", "bias"}
    twin = SparseLinear.from_linear(nn.Linear(8, 5), mask)  # same sparsity pattern, other values
    x = torch.randn(4, 8)
    with torch.no_grad():
        twin(x)  # fills the twin's cache before its buffers are overwritten in place
        twin.load_state_dict(layer.state_dict())
        torch.testing.assert_close(twin(x), layer(x), rtol=0, atol=0)


def test_in_place_buffer_changes_are_seen_and_copies_are_independent():
    linear, mask = masked_layer(6, 9, 0.5, seed=8)
    layer = SparseLinear.from_linear(linear, mask)
    x = torch.randn(3, 9)
    with torch.no_grad():
        before = layer(x)
        clone = copy.deepcopy(layer)
        pickled = pickle.loads(pickle.dumps(layer))
        layer.values.mul_(2.0)
        after = layer(x)
        torch.testing.assert_close(after - layer.bias, 2 * (before - layer.bias), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(clone(x), before, rtol=0, atol=0)
        torch.testing.assert_close(pickled(x), before, rtol=0, atol=0)


def test_torch_save_and_load_round_trip():
    linear, mask = masked_layer(6, 9, 0.5, seed=9)
    layer = SparseLinear.from_linear(linear, mask)
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    twin = SparseLinear(state["values"], state["col_indices"], state["crow_indices"], 9, state["bias"])
    x = torch.randn(2, 9)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), layer(x), rtol=0, atol=0)


def test_parallel_layer_equals_the_serial_one():
    linear, mask = masked_layer(11, 13, 0.4, seed=10)
    serial = SparseLinear.from_linear(linear, mask)
    parallel = SparseLinear.from_linear(linear, mask, parallel=True)
    x = torch.randn(40, 13)
    with torch.no_grad():
        torch.testing.assert_close(parallel(x), serial(x), rtol=1e-6, atol=1e-6)


def test_forward_rejects_bad_input():
    linear, mask = masked_layer(4, 6, 0.5, seed=11)
    layer = SparseLinear.from_linear(linear, mask)
    with pytest.raises(TypeError, match="float32 input, got torch.float64"):
        layer(torch.randn(2, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 6\), got \(2, 5\)"):
        layer(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 6\), got \(\)"):
        layer(torch.tensor(1.0))
    x = torch.randn(2, 6, requires_grad=True)
    with pytest.raises(RuntimeError, match="inference-only"):
        layer(x)
    with torch.no_grad():
        assert_matches(layer(x), linear, mask, x.detach())


def test_buffers_moved_to_another_dtype_make_forward_raise():
    linear, mask = masked_layer(4, 6, 0.5, seed=12)
    layer = SparseLinear.from_linear(linear, mask)
    with torch.no_grad():
        layer(torch.randn(1, 6))
        layer.double()
        with pytest.raises(TypeError, match="buffer values must stay a contiguous torch.float32"):
            layer(torch.randn(1, 6))


def test_constructor_rejects_bad_arrays():
    values = torch.tensor([1.0, 2.0])
    cols = torch.tensor([0, 2], dtype=torch.int32)
    crow = torch.tensor([0, 1, 2], dtype=torch.int32)
    with pytest.raises(TypeError, match="col_indices must have dtype torch.int32"):
        SparseLinear(values, cols.long(), crow, 3)
    with pytest.raises(TypeError, match="values must have dtype torch.float32"):
        SparseLinear(values.double(), cols, crow, 3)
    with pytest.raises(TypeError, match="crow_indices must be a torch.Tensor"):
        SparseLinear(values, cols, [0, 1, 2], 3)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 2\)"):
        SparseLinear(values, cols, crow, 2)
    with pytest.raises(ValueError, match="in_features must be >= 1"):
        SparseLinear(values, cols, crow, 0)
    with pytest.raises(ValueError, match=r"bias must have shape \(2,\)"):
        SparseLinear(values, cols, crow, 3, torch.zeros(3))
    with pytest.raises(ValueError, match="bias contains NaN"):
        SparseLinear(values, cols, crow, 3, torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match="data contains NaN"):
        SparseLinear(torch.tensor([1.0, float("inf")]), cols, crow, 3)


def test_from_dense_rejects_bad_weights_and_masks():
    with pytest.raises(ValueError, match="weight contains NaN"):
        SparseLinear.from_dense(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(TypeError, match="floating-point"):
        SparseLinear.from_dense(torch.ones(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="2-D with both sizes >= 1"):
        SparseLinear.from_dense(torch.ones(3))
    with pytest.raises(ValueError, match="2-D with both sizes >= 1"):
        SparseLinear.from_dense(torch.ones(0, 3))
    with pytest.raises(TypeError, match="mask must be a bool"):
        SparseLinear.from_dense(torch.ones(2, 2), mask=torch.ones(2, 2))
    with pytest.raises(ValueError, match="mask must have the shape of weight"):
        SparseLinear.from_dense(torch.ones(2, 2), mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="linear must be a torch.nn.Linear"):
        SparseLinear.from_linear(nn.Conv1d(1, 1, 1))


def test_choose_layer_returns_a_module_equal_to_the_masked_layer():
    linear, mask = masked_layer(20, 30, 0.1, seed=13)
    choice = choose_layer(linear, mask, batch_size=4, repeats=5)
    assert isinstance(choice, LayerChoice)
    assert choice.kind == ("sparse" if choice.sparse_s < choice.dense_s else "dense")
    assert isinstance(choice.module, SparseLinear if choice.kind == "sparse" else nn.Linear)
    assert choice.density == pytest.approx(mask.float().mean().item())
    x = torch.randn(4, 30)
    with torch.no_grad():
        assert_matches(choice.module(x), linear, mask, x)


def test_choose_layer_picks_sparse_for_a_nearly_empty_layer_and_dense_for_a_full_one():
    # Clear-cut on any machine: ~0.05 % density (hundreds of times fewer multiply-adds), and 100 % density
    # at batch 256, where the sparse kernel does the same work as BLAS with index indirection on top.
    empty_ish, mask = masked_layer(512, 512, 0.0005, seed=14)
    assert choose_layer(empty_ish, mask, batch_size=64, repeats=10).kind == "sparse"
    full, _ = masked_layer(300, 784, 1.0, seed=15)
    assert choose_layer(full, batch_size=256, repeats=20).kind == "dense"


def test_choose_layer_rejects_bad_arguments():
    with pytest.raises(TypeError, match="linear must be a torch.nn.Linear"):
        choose_layer(nn.ReLU())
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        choose_layer(nn.Linear(3, 2), batch_size=0)
    with pytest.raises(TypeError, match="repeats must be an integer"):
        choose_layer(nn.Linear(3, 2), repeats=2.5)


def test_sparsify_replaces_each_named_layer_by_the_faster_form_and_keeps_the_output():
    big, big_mask = masked_layer(512, 512, 0.0005, seed=16)
    full, _ = masked_layer(300, 512, 1.0, seed=17)
    small, small_mask = masked_layer(10, 300, 0.2, seed=18)
    net = nn.Sequential(big, nn.ReLU(), full, nn.ReLU(), small).eval()
    fast, choices = sparsify(net, {"0": big_mask, "2": None, "4": small_mask}, batch_size=256, repeats=20)
    assert list(choices) == ["0", "2", "4"]
    assert choices["0"].kind == "sparse" and isinstance(fast[0], SparseLinear)
    assert choices["2"].kind == "dense" and type(fast[2]) is nn.Linear
    assert not fast.training and isinstance(net[0], nn.Linear)  # the original is untouched
    masked = nn.Sequential(
        SparseLinear.from_linear(big, big_mask).to_dense(),
        nn.ReLU(),
        full,
        nn.ReLU(),
        SparseLinear.from_linear(small, small_mask).to_dense(),
    )
    x = torch.randn(5, 512)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), masked(x), rtol=1e-4, atol=1e-4)


def test_sparsify_defaults_to_every_linear_layer_and_handles_a_bare_layer():
    net = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 2))
    _, choices = sparsify(net, batch_size=2, repeats=2)
    assert list(choices) == ["0", "2"]
    layer = nn.Linear(4, 3)
    replaced, choices = sparsify(layer, {"": torch.ones(3, 4, dtype=torch.bool)}, repeats=2)
    assert list(choices) == [""] and replaced is choices[""].module


def test_sparsify_lists_names_that_are_not_linear_layers():
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU())
    with pytest.raises(ValueError, match="not nn.Linear layers of module: 1, 7"):
        sparsify(net, {"1": None, "7": None})
    with pytest.raises(TypeError, match="masks must be a dict"):
        sparsify(net, [torch.ones(5, 6, dtype=torch.bool)])
    with pytest.raises(TypeError, match="module must be a torch.nn.Module"):
        sparsify("net")


def test_extra_repr_and_dense_weight():
    weight = torch.tensor([[0.0, 2.0], [0.0, 0.0]])
    layer = SparseLinear.from_dense(weight, bias=torch.tensor([1.0, 2.0]))
    assert "nnz=1" in repr(layer) and "bias=True" in repr(layer)
    np.testing.assert_array_equal(layer.weight_dense().numpy(), weight.numpy())
