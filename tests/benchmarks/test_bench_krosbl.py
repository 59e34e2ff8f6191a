import math

import numpy as np
import pytest

from benchmarks import bench_krosbl
from probsparse.datasets import make_kronecker_sparse


def test_run_trial_returns_sane_metrics_for_every_algorithm():
    p = make_kronecker_sparse((8, 8, 8), (5, 6, 8), 2, 25.0, seed=1)
    out = bench_krosbl.run_trial(p)
    assert [r["algorithm"] for r in out] == list(bench_krosbl.ALGORITHMS)
    for r in out:
        assert r["nmse"] >= 0 and math.isfinite(r["nmse"])
        assert r["nmse_db"] == pytest.approx(10 * math.log10(r["nmse"]))
        assert 0.0 <= r["srr"] <= 1.0
        assert r["time_s"] >= 0 and r["n_iter"] >= 0
    by = {r["algorithm"]: r for r in out}
    # The oracle least squares beats the noise level (NMSE well below 1/SNR) on this easy draw,
    # and the Kronecker SBL estimate is close to it.
    assert by["oracle_ls"]["nmse_db"] < -25.0
    assert by["svd_krosbl"]["nmse_db"] < -15.0
    assert by["oracle_ls"]["srr"] > 0.8


def test_run_trial_subset_skips_the_dense_dictionary_and_rejects_unknown_names():
    p = make_kronecker_sparse((6, 6, 6), (4, 5, 6), 2, 20.0, seed=0)
    out = bench_krosbl.run_trial(p, ["oracle_ls", "komp_true_k"])
    assert [r["algorithm"] for r in out] == ["oracle_ls", "komp_true_k"]
    with pytest.raises(ValueError, match="unknown"):
        bench_krosbl.run_trial(p, ["nope"])


def test_srr_is_the_jaccard_index_of_the_thresholded_support():
    truth = np.array([True, True, False, False])
    assert bench_krosbl.srr(np.array([1.0, 0.5, 0.0, 0.0]), truth) == 1.0
    assert bench_krosbl.srr(np.array([1.0, 1e-4, 0.2, 0.0]), truth) == pytest.approx(1 / 3)
    assert bench_krosbl.srr(np.zeros(4), truth) == 0.0


def test_quick_run_on_a_shrunken_set_up_gives_the_summary_keys(monkeypatch):
    monkeypatch.setattr(bench_krosbl, "DIMS", (6, 6, 6))
    monkeypatch.setattr(bench_krosbl, "MEASUREMENTS", (4, 5, 6))
    monkeypatch.setattr(bench_krosbl, "QUICK_TRIALS", 1)
    monkeypatch.setattr(bench_krosbl, "LARGE_DIMS", (8, 8, 8))
    monkeypatch.setattr(bench_krosbl, "LARGE_MEASUREMENTS", (5, 6, 7))
    result = bench_krosbl.run(quick=True)
    s = result.summary
    for key in ("svd", "am", "csbl", "oracle"):
        assert math.isfinite(s[f"nmse_db_{key}_25db"]) and math.isfinite(s[f"nmse_db_{key}_25db_median"])
    assert s["speedup_svd_vs_csbl_25db"] > 0
    assert 0 <= s["srr_svd_25db"] <= 1 and 0 <= s["srr_am_25db"] <= 1
    assert s["large_dense_h_gb"] == pytest.approx(5 * 6 * 7 * 8**3 * 8 / 1e9)
    assert {r["snr_db"] for r in result.rows} == {15.0, 25.0}
