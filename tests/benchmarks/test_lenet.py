"""The LeNet pieces of the svi and export benchmarks, at small sizes."""

import math

from benchmarks import lenet


def test_throughput_part_reports_every_ratio(monkeypatch):
    monkeypatch.setattr(lenet, "step_time_autonormal", lambda **kw: 0.004)  # Pyro's network is timed elsewhere
    rows, summary = lenet.throughput_part(quick=True)
    assert {r["network"] for r in rows} >= {
        "torch (fused Adam)",
        "pyro AutoNormal",
        "probsparse group_horseshoe_centred",
        "probsparse group_horseshoe_mnist",
    }
    for key in (
        "step_ratio_vs_torch",
        "step_ratio_vs_torch_default_adam",
        "step_ratio_vs_autonormal",
        "step_ratio_vs_torch_mnist_network",
    ):
        assert math.isfinite(summary[key]) and summary[key] > 0
    torch_row = next(r for r in rows if r["network"] == "torch (fused Adam)")
    assert torch_row["ratio_vs_torch"] == 1.0


def test_autonormal_step_runs():
    assert lenet.step_time_autonormal(batch_size=8, n_steps=2) > 0


def test_export_end_to_end_on_digits():
    row = lenet.export_end_to_end(
        "digits", prior="sparse-vd", rule="log_alpha:keep=0.3", epochs=3, lr=1e-2, hidden=(32,)
    )
    assert row["exported_error_pct"] == row["pruned_error_pct"]
    assert 29.0 <= row["kept_weight_pct"] <= 31.0
    assert len(row["hidden_widths"]) == 1 and row["hidden_widths"][0] <= 32
