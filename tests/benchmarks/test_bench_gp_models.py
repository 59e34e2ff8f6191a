import math

import numpy as np
import pytest
import torch

from benchmarks import bench_gp_models as bench

SUMMARY_KEYS = (
    "nll_median_tp_syn_t",
    "nll_median_gp_syn_t",
    "rmse_f_tp_syn_t",
    "rmse_f_gp_syn_t",
    "rmse_f_studentlik_syn_t",
    "nll_tp_minus_gp_syn_normal",
    "relevance_f1_horseshoe",
    "relevance_f1_ard",
    "ood_auroc_tp",
    "ood_auroc_gp",
    "dkm_time_ratio_n2000_over_n1000",
)


def test_corrupted_diabetes_keeps_a_clean_test_set_and_corrupts_a_tenth_of_training():
    clean = bench.make_regression("diabetes", 0)
    dirty = bench.make_regression("diabetes-corrupt", 0)
    assert torch.equal(clean["x_test"], dirty["x_test"])
    # both are standardised by their own training median / IQR, so compare after undoing the affine map
    ranks_clean = np.argsort(np.argsort(clean["y_test"].numpy()))
    assert np.array_equal(ranks_clean, np.argsort(np.argsort(dirty["y_test"].numpy())))
    n = len(clean["y_train"])
    # corrupted points are the ones whose standardised value moved by far more than the rescaling can explain
    scale = np.polyfit(clean["y_test"].numpy(), dirty["y_test"].numpy(), 1)
    moved = np.abs(np.polyval(scale, clean["y_train"].numpy()) - dirty["y_train"].numpy()) > 1e-8
    assert moved.sum() == n // 10
    assert clean["f_test"] is None


def test_synthetic_sets_share_the_latent_and_differ_in_noise():
    normal = bench.make_regression("syn-normal", 0, n_syn=80)
    heavy = bench.make_regression("syn-t", 0, n_syn=80)
    assert torch.equal(normal["f_test"], heavy["f_test"])
    r_normal = (normal["y_test"] - normal["f_test"]).abs().max().item()
    assert r_normal < 0.5  # 0.1 sd Gaussian noise
    assert len(normal["y_train"]) == 64 and len(normal["y_test"]) == 8
    with pytest.raises(ValueError, match="unknown dataset"):
        bench.make_regression("boston", 0)


def test_f1_of_selections():
    truth = torch.tensor([True, True, False, False])
    assert bench._f1(torch.tensor([True, True, False, False]), truth) == 1.0
    assert bench._f1(torch.tensor([True, False, True, False]), truth) == pytest.approx(0.5)
    assert bench._f1(torch.zeros(4, dtype=torch.bool), truth) == 0.0


def test_tiny_quick_run_gives_every_summary_key(monkeypatch):
    tiny = dict(bench.QUICK)
    tiny.update(
        datasets=["syn-t"],
        steps=3,
        svgp_steps=3,
        dkm_steps=3,
        n_syn=60,
        fs_n=40,
        fs_steps=3,
        cls_train=60,
        cls_inducing=8,
        cls_steps=3,
    )
    monkeypatch.setattr(bench, "QUICK", tiny)
    monkeypatch.setattr(bench, "DKM_SIZES", (100, 200))
    result = bench.run(quick=True)
    for key in SUMMARY_KEYS:
        assert key in result.summary
    assert result.summary["nll_tp_minus_gp_syn_normal"] is None  # not run in quick mode
    for key in SUMMARY_KEYS:
        if key != "nll_tp_minus_gp_syn_normal":
            assert math.isfinite(result.summary[key]), key
    tasks = {r["task"] for r in result.rows}
    assert tasks == {"regression", "dkm_scaling", "feature_selection", "classification"}
    regression = [r for r in result.rows if r["task"] == "regression"]
    assert {r["model"] for r in regression} == set(bench.MODELS)
    assert all(isinstance(r["converged"], bool) and r["steps"] == 3 for r in regression)
    assert 0 <= result.summary["ood_auroc_tp"] <= 1
