import math

import torch

from benchmarks import bench_gp_pde
from probsparse.models.gp.pde import poisson_1d

KEYS = {
    "err_poisson1d_sin100",
    "err_poisson1d_multiscale",
    "err_allencahn1d",
    "err_poisson2d",
    "err_advection",
    "time_s_poisson1d_sin100",
    "err_ratio_se_over_stm_poisson1d_sin100",
}


def test_quick_run_on_a_tiny_problem_gives_the_summary_keys(monkeypatch):
    def tiny_cases():
        def sin3(X):
            return torch.sin(3 * X[:, 0])

        return {
            "poisson1d_sin100": (lambda: poisson_1d(sin3, domain=(0.0, 1.0)), 24,
                                 {"num_mixtures": 4, "freq_init": "spectrum", "jitter": 1e-10},
                                 {"adam_steps": 0, "lbfgs_steps": 20}),
        }

    monkeypatch.setattr(bench_gp_pde, "_cases", tiny_cases)
    monkeypatch.setattr(bench_gp_pde, "BASELINE_FIT", {"adam_steps": 5, "lbfgs_steps": 10})
    monkeypatch.setattr(bench_gp_pde, "QUICK_BUDGETS", {"poisson1d_sin100": {"student_t": 20.0, "se": 10.0}})
    monkeypatch.setattr(bench_gp_pde, "TEST_POINTS", 50)
    result = bench_gp_pde.run(quick=True)
    assert set(result.summary) == KEYS
    s = result.summary
    assert s["err_poisson2d"] is None and s["err_advection"] is None
    assert 0 < s["err_poisson1d_sin100"] < 1e-3
    assert s["time_s_poisson1d_sin100"] > 0
    stm, se = result.rows
    assert (stm["kernel"], se["kernel"]) == ("student_t", "se")
    assert math.isclose(s["err_ratio_se_over_stm_poisson1d_sin100"], se["rel_l2"] / stm["rel_l2"])
    assert stm["err_min_checkpoint"] <= stm["rel_l2"] + 1e-15
    assert stm["steps"] > 0 and stm["update"] == "newton"


def test_unknown_cases_are_rejected():
    import pytest

    with pytest.raises(ValueError, match="unknown case"):
        bench_gp_pde.run(quick=False, cases=["poisson3d"])
