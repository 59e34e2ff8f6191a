"""Timing, machine description and result files shared by every benchmark."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
_LIBRARIES = ("probsparse", "numpy", "scipy", "numba", "torch", "pyro-ppl", "gpytorch", "scikit-learn")


@dataclass
class BenchmarkResult:
    """Rows of a table (one dict per measured configuration) and the headline figures."""

    rows: list[dict]
    summary: dict = field(default_factory=dict)


def time_call(fn, *, repeats: int = 5, warmup: int = 1, min_time: float = 0.0) -> dict:
    """Median wall time of ``fn()`` in seconds, after ``warmup`` untimed calls.

    Returns ``{"median_s", "min_s", "repeats", "result"}`` where ``result`` is the value of the last call,
    so that accuracy can be measured on the same fit that was timed. ``min_time`` adds repeats until the
    timed calls add up to at least that many seconds (for very fast calls).
    """
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    while len(times) < repeats or sum(times) < min_time:
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        if len(times) >= 1000:
            break
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "repeats": len(times),
        "result": result,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """CPU model, logical cores, thread settings and library versions of this run."""
    versions = {}
    for lib in _LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    threads = {var: os.environ.get(var) for var in THREAD_VARIABLES}
    try:
        import torch

        threads["torch.get_num_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": versions,
    }


def format_table(rows: list[dict]) -> str:
    """A plain-text table of ``rows`` (floats shown with 4 significant digits)."""
    if not rows:
        return "(no rows)"
    columns = list(dict.fromkeys(key for row in rows for key in row))

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    table = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in table]
    return "\n".join(lines)


def write_result(name: str, quick: bool, result: BenchmarkResult, out_dir: Path) -> Path:
    """Write ``out_dir/<name>.json`` with the schema every benchmark shares."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "quick": quick,
        "machine": machine_info(),
        "created_unix": time.time(),
        "rows": result.rows,
        "summary": result.summary,
    }
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, allow_nan=False, default=_json_default) + "\n")
    return path


def _json_default(value):
    # NumPy scalars appear in rows; anything else unknown is a bug in the benchmark, not something to hide.
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
    except ImportError:
        pass
    raise TypeError(f"benchmark result holds a value JSON cannot store: {value!r}")
