"""The svi benchmark, part 1, at a tiny size: rows, metrics and summary keys."""

import math

import numpy as np
import pytest

from benchmarks import bench_svi
from probsparse.datasets import make_sparse_regression


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(bench_svi, "SIZE", (40, 20, 2))
    monkeypatch.setattr(bench_svi, "SVI_STEPS", 300)
    monkeypatch.setattr(bench_svi, "SVI_DRAWS", 200)
    monkeypatch.setattr(bench_svi, "NUTS_WARMUP", 15)
    monkeypatch.setattr(bench_svi, "NUTS_DRAWS", 15)
    monkeypatch.setattr(bench_svi, "NUTS_MAX_TREE_DEPTH", 3)


def _check_row(row, d):
    assert 0.0 <= row["precision"] <= 1.0 and 0.0 <= row["recall"] <= 1.0 and 0.0 <= row["f1"] <= 1.0
    assert 0.0 <= row["coverage"] <= 1.0 and 0.0 <= row["coverage_support"] <= 1.0
    assert row["width_support"] > 0 and row["noise_scale"] > 0
    assert row["time_s"] > 0 and row["cpu_s"] > 0 and math.isfinite(row["nmse_db"])


def test_quick_mode_runs_svi_once_and_reports_the_summary_keys(tiny, monkeypatch):
    fits = []
    original = bench_svi.fit_svi
    monkeypatch.setattr(bench_svi, "fit_svi", lambda *a, **kw: fits.append(kw["seed"]) or original(*a, **kw))
    rows, summary = bench_svi.run_regression(quick=True)
    assert [(r["design"], r["prior"], r["engine"]) for r in rows] == [("independent", "horseshoe", "svi")]
    assert fits == [0]  # quick mode: one restart
    _check_row(rows[0], 20)
    assert summary["svi_support_f1"] == rows[0]["f1"]
    assert summary["svi_coverage"] == rows[0]["coverage"]
    assert summary["nuts_support_f1"] is None  # not measured in quick mode
    # An easy problem (2 strong coefficients, 40 samples, 20 dB): SVI finds the support.
    assert summary["svi_support_f1"] == 1.0


def test_nuts_trial_and_summary(tiny):
    problem = make_sparse_regression(40, 20, 2, 20.0, seed=0)
    nuts = bench_svi.regression_trial(problem, "regularized_horseshoe", "nuts", seed=0)
    _check_row(nuts, 20)
    assert nuts["divergences"] >= 0
    svi = bench_svi.regression_trial(problem, "regularized_horseshoe", "svi", seed=0, svi_restarts=2)
    assert math.isfinite(svi["svi_final_loss"]) and nuts["svi_final_loss"] is None
    rows = [
        {"design": "independent", "engine": "svi", **svi},
        {"design": "independent", "engine": "nuts", **nuts},
    ]
    summary = bench_svi._regression_summary(rows)
    assert summary["nuts_support_f1"] == nuts["f1"] and summary["svi_support_f1"] == svi["f1"]
    assert summary["svi_width_ratio_vs_nuts"] == pytest.approx(svi["width_support"] / nuts["width_support"])
    assert "svi_support_f1_correlated" not in summary


def test_prior_choice_and_global_scale():
    y = np.random.default_rng(0).standard_normal(50)
    guess = bench_svi.noise_guess(y, 0.5)
    assert guess == pytest.approx(0.5 * np.std(y))
    prior = bench_svi.make_prior("regularized_horseshoe", 200, guess)
    assert prior.global_scale == pytest.approx(10 / 190 * guess)
    assert type(bench_svi.make_prior("horseshoe", 200, guess)).__name__ == "Horseshoe"
    with pytest.raises(ValueError, match="unknown prior"):
        bench_svi.make_prior("laplace", 200, guess)
