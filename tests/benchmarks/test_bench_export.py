import math

import numpy as np
import pytest
import torch

from benchmarks import bench_export
from probsparse.export.sparse_linear import SparseLinear


def test_quick_run_on_a_small_layer_gives_rows_and_the_summary_keys(monkeypatch):
    monkeypatch.setattr(bench_export, "IN_FEATURES", 40)
    monkeypatch.setattr(bench_export, "OUT_FEATURES", 30)
    monkeypatch.setattr(bench_export, "BATCHES", [1, 9])
    monkeypatch.setattr(bench_export, "ROUNDS", 3)
    monkeypatch.setattr(bench_export, "ROUND_SECONDS", 1e-4)
    rows, _ = bench_export.kernel_speed([0.05], [1, 9], rounds=3)
    assert {(r["batch"], r["method"]) for r in rows} == {(b, m) for b in (1, 9) for m in bench_export.METHODS}
    for r in rows:
        assert r["time_us"] > 0 and r["floor_us"] > 0 and r["fraction_of_floor"] > 0
        assert r["speedup_vs_dense"] == pytest.approx(
            next(q["time_us"] for q in rows if (q["batch"], q["method"]) == (r["batch"], "torch_dense")) / r["time_us"]
        )
        assert r["max_err_ulps"] <= 64
    monkeypatch.setattr(bench_export, "BATCHES", [1, 256])
    result = bench_export.run(quick=True)
    for key in ("speedup_vs_dense_b256_d5", "speedup_vs_scipy_b256_d5", "speedup_vs_dense_b1_d5"):
        assert math.isfinite(result.summary[key]) and result.summary[key] > 0
    assert 0 < result.summary["kernel_fraction_of_floor_b1_d5"]
    assert result.summary["dram_copy_bandwidth_gbs"] > 0
    assert {r["density"] for r in result.rows} == {0.05}


def test_traffic_bytes_counts_every_array_a_forward_touches():
    layer = SparseLinear.from_dense(torch.randn(30, 40) * (torch.rand(30, 40) < 0.1), bias=torch.randn(30))
    x = torch.randn(7, 40)
    with torch.no_grad():
        y = layer(x)
    arrays = [layer.values, layer.col_indices, layer.crow_indices, layer.bias, x, y]
    expected = sum(t.numel() * t.element_size() for t in arrays)
    assert bench_export.traffic_bytes(layer.nnz, 7, 40, 30) == expected


def test_output_check_rejects_a_wrong_method():
    linear, mask = bench_export._layer(0.05, seed=0)
    x = torch.randn(3, bench_export.IN_FEATURES)
    with torch.no_grad():
        fns = bench_export._methods(linear, mask, x)
        assert bench_export._check_outputs(fns, linear, x) <= 64
        fns["broken"] = lambda: np.zeros((3, bench_export.OUT_FEATURES), np.float32)
        with pytest.raises(AssertionError, match="broken differs from the float64 reference"):
            bench_export._check_outputs(fns, linear, x)


def test_copy_bandwidth_is_positive():
    assert bench_export.copy_bandwidth(1 << 16, rounds=3) > 0
