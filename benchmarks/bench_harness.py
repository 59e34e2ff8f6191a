"""Self-check of the harness: timer overhead, and a float64 matrix product whose rate is known roughly.

It tells whether a machine's figures are comparable with earlier runs (single-threaded dgemm rate) and how
stable its timings are (min / median spread), before any probsparse benchmark is read.
"""

from __future__ import annotations

import numpy as np

from .harness import BenchmarkResult, time_call


def run(quick: bool) -> BenchmarkResult:
    rows = []
    empty = time_call(lambda: None, repeats=1000, warmup=10)
    rows.append(
        {
            "case": "empty call",
            "median_s": empty["median_s"],
            "spread": empty["median_s"] / max(empty["min_s"], 1e-12),
        }
    )
    rng = np.random.default_rng(0)
    for n in (256, 512) if quick else (256, 512, 1024):
        a = rng.standard_normal((n, n))
        b = rng.standard_normal((n, n))
        t = time_call(lambda a=a, b=b: a @ b, repeats=7, warmup=2, min_time=0.2)
        rows.append(
            {
                "case": f"dgemm {n}",
                "median_s": t["median_s"],
                "gflops": 2 * n**3 / t["median_s"] / 1e9,
                "spread": t["median_s"] / t["min_s"],
            }
        )
    return BenchmarkResult(
        rows=rows,
        summary={
            "timer_overhead_s": empty["median_s"],
            "dgemm_gflops_largest": rows[-1]["gflops"],
            "timing_spread_largest": rows[-1]["spread"],
        },
    )
