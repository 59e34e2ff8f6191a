"""Exported sparse networks: kernel speed (part 1); end-to-end parts are added to ``FULL_ONLY_PARTS``.

Part 1, kernel speed. One 784 -> 300 float32 layer (LeNet-300-100's first layer) with a random mask at
densities 1, 2, 5, 10, 25 % (quick: 5 %), batch 1 and 256, one thread. Methods, all computing
``x @ (W * mask).T + b`` from a float32 ``x`` of shape (batch, 784):

* ``probsparse``: :class:`probsparse.export.SparseLinear` called as a module under ``torch.no_grad`` (what a
  user pays, torch-side call overhead included);
* ``probsparse_kernel``: the same Numba kernel called on NumPy arrays (no torch, no checks);
* ``torch_dense``: :class:`torch.nn.Linear` holding the masked weight;
* ``torch_csr``: ``torch.addmm(b, W_csr, x.T).T`` with ``W_csr`` a ``torch.sparse_csr_tensor`` (the fastest of
  the torch CSR spellings measured: ``addmm``, ``@``, ``torch.sparse.mm``, ``F.linear``);
* ``scipy_csr``: ``(W_csr @ X.T).T + b`` with a ``scipy.sparse.csr_matrix`` on NumPy arrays.

Times are medians over interleaved rounds (every method once per round, each round a few calls, the order
rotated from round to round), so that a load spike from the other processes on the machine hits every method
alike; ``best_us`` is the fastest round
of a second, shorter pass (the ``*_best`` summary ratios use it). Every method's output is checked
against a float64 reference before timing.

Memory-traffic floor: the bytes a kernel must move at least, values (4 nnz) + column indices (4 nnz) + row
pointers (4 (N + 1)) + bias (4 N) + input (4 B K) + output (4 B N), divided by the bandwidth of a NumPy copy of
a buffer of the same size (so it is measured at the same cache level; a copy moves each byte twice, read and
write). ``fraction_of_floor`` = floor time / measured time (1 = as fast as moving the data).
"""

from __future__ import annotations

import os
import statistics
import time
import warnings

import numpy as np
import scipy.sparse as sp
import torch

from probsparse.export.sparse_linear import SparseLinear
from probsparse.kernels.sparse_matmul import csr_linear_unchecked

from .harness import BenchmarkResult

IN_FEATURES, OUT_FEATURES = 784, 300
DENSITIES = [0.01, 0.02, 0.05, 0.10, 0.25]
BATCHES = [1, 256]
QUICK_DENSITIES = [0.05]
METHODS = ["probsparse", "probsparse_kernel", "torch_dense", "torch_csr", "scipy_csr"]
ROUNDS = 150
ROUND_SECONDS = 1e-3  # each method runs about this long per round (several calls when a call is short)


def _interleaved(fns: dict, rounds: int, *, best: bool = False) -> dict:
    """Median (or, with ``best``, smallest) seconds per call of each function, over ``rounds`` rounds that run
    every function in turn."""
    inner = {}
    for name, fn in fns.items():
        fn()  # warm-up (compiles the kernels, fills caches)
        start = time.perf_counter()
        fn()
        one = max(time.perf_counter() - start, 1e-7)
        inner[name] = max(1, min(1000, int(ROUND_SECONDS / one)))
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        # Rotate the order, so that no method always runs first, on caches the previous one left cold.
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, n = fns[name], inner[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            times[name].append((time.perf_counter() - start) / n)
    pick = min if best else statistics.median
    return {name: pick(t) for name, t in times.items()}


def copy_bandwidth(n_bytes: int, rounds: int = 30) -> float:
    """Bytes per second moved (read + write) by ``np.copyto`` on a buffer of ``n_bytes``."""
    n = max(1, n_bytes // 4)
    src = np.ones(n, dtype=np.float32)
    dst = np.empty_like(src)
    seconds = _interleaved({"copy": lambda: np.copyto(dst, src)}, rounds)["copy"]
    return 2 * 4 * n / seconds


def traffic_bytes(nnz: int, batch: int, n_in: int = IN_FEATURES, n_out: int = OUT_FEATURES) -> int:
    """Bytes a CSR layer's forward must read or write at least (see the module docstring)."""
    return 4 * (2 * nnz + (n_out + 1) + n_out + batch * n_in + batch * n_out)


def _layer(density: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    linear = torch.nn.Linear(IN_FEATURES, OUT_FEATURES)
    mask = torch.rand(OUT_FEATURES, IN_FEATURES, generator=generator) < density
    with torch.no_grad():
        linear.weight.copy_(torch.randn(OUT_FEATURES, IN_FEATURES, generator=generator) * mask)
        linear.bias.copy_(torch.randn(OUT_FEATURES, generator=generator))
    return linear, mask


def _methods(linear: torch.nn.Linear, mask: torch.Tensor, x: torch.Tensor) -> dict:
    sparse = SparseLinear.from_linear(linear, mask)
    indptr, indices, data, bias = sparse._refresh_arrays()[4]
    X = x.numpy()
    out = np.empty((X.shape[0], OUT_FEATURES), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Sparse CSR tensor support is in beta state"
        w_csr = linear.weight.detach().to_sparse_csr()
    bias_col = linear.bias.detach().unsqueeze(1)
    w_scipy = sp.csr_matrix((data, indices, indptr), shape=(OUT_FEATURES, IN_FEATURES))
    chunk = sparse._chunk

    def kernel():
        csr_linear_unchecked(indptr, indices, data, bias, X, out, chunk)
        return out

    return {
        "probsparse": lambda: sparse(x),
        "probsparse_kernel": kernel,
        "torch_dense": lambda: linear(x),
        "torch_csr": lambda: torch.addmm(bias_col, w_csr, x.T).T,
        "scipy_csr": lambda: (w_scipy @ X.T).T + bias,
    }


def _check_outputs(fns: dict, linear: torch.nn.Linear, x: torch.Tensor) -> float:
    """Largest error of any method against the float64 product, relative to float32 rounding; raise if off."""
    w = linear.weight.detach().double()
    ref = x.double() @ w.T + linear.bias.detach().double()
    scale = x.double().abs() @ w.abs().T + linear.bias.detach().double().abs() + 1.0
    worst = 0.0
    for name, fn in fns.items():
        got = torch.as_tensor(np.asarray(fn())).double()
        err = float(((got - ref).abs() / (np.finfo(np.float32).eps * scale)).max())
        if not err <= 64:
            raise AssertionError(f"{name} differs from the float64 reference by {err:.3g} float32 ulps of scale")
        worst = max(worst, err)
    return worst


def kernel_speed(densities: list[float], batches: list[int], rounds: int | None = None) -> tuple[list[dict], dict]:
    """Part 1: rows (one per density, batch and method) and the speed-up summary at 5 % density."""
    rounds = ROUNDS if rounds is None else rounds
    rows = []
    for density in densities:
        linear, mask = _layer(density, seed=int(density * 1000))
        nnz = int(mask.sum())
        for batch in batches:
            x = torch.randn(batch, IN_FEATURES, generator=torch.Generator().manual_seed(batch))
            with torch.no_grad():
                fns = _methods(linear, mask, x)
                ulps = _check_outputs(fns, linear, x)
                times = _interleaved(fns, rounds)
                best = _interleaved(fns, max(3, rounds // 3), best=True)
            n_bytes = traffic_bytes(nnz, batch)
            bandwidth = copy_bandwidth(n_bytes)
            floor_s = n_bytes / bandwidth
            for method in METHODS:
                rows.append(
                    {
                        "part": "kernel_speed",
                        "density": density,
                        "nnz": nnz,
                        "batch": batch,
                        "method": method,
                        "time_us": times[method] * 1e6,
                        "best_us": best[method] * 1e6,
                        "speedup_vs_dense": times["torch_dense"] / times[method],
                        "traffic_kb": n_bytes / 1e3,
                        "copy_bandwidth_gbs": bandwidth / 1e9,
                        "floor_us": floor_s * 1e6,
                        "fraction_of_floor": floor_s / times[method],
                        "max_err_ulps": ulps,
                    }
                )
    return rows, _kernel_summary(rows)


def _kernel_summary(rows: list[dict]) -> dict:
    """Speed-ups and floor fractions at 5 % density, for the batches (1, 256) that were measured."""
    at = {(r["method"], r["batch"]): r for r in rows if r["density"] == 0.05}

    def ratio(other: str, batch: int, key: str = "time_us") -> float:
        return at[(other, batch)][key] / at[("probsparse", batch)][key]

    summary = {}
    batches = [b for b in (1, 256) if ("probsparse", b) in at]
    for batch in batches:
        summary[f"speedup_vs_dense_b{batch}_d5"] = ratio("torch_dense", batch)
        summary[f"speedup_vs_scipy_b{batch}_d5"] = ratio("scipy_csr", batch)
        summary[f"speedup_vs_torch_csr_b{batch}_d5"] = ratio("torch_csr", batch)
        # From the fastest round of each method: less sensitive to other processes on a shared machine.
        summary[f"speedup_vs_dense_b{batch}_d5_best"] = ratio("torch_dense", batch, "best_us")
        summary[f"speedup_vs_scipy_b{batch}_d5_best"] = ratio("scipy_csr", batch, "best_us")
        summary[f"kernel_fraction_of_floor_b{batch}_d5"] = at[("probsparse_kernel", batch)]["fraction_of_floor"]
        summary[f"torch_call_overhead_us_b{batch}_d5"] = (
            at[("probsparse", batch)]["time_us"] - at[("probsparse_kernel", batch)]["time_us"]
        )
    return summary


# Part 2 (full mode): MNIST LeNet-300-100 trained under each prior, pruned by its rule, exported and measured.
# (prior name of probsparse.compress.PRIORS, pruning rule, epochs, learning rate); the first row is the headline.
# The headline keeps the budget the target names (2 % of the weights, lowest log alpha first), not a threshold
# tuned on the test set.
MNIST_CASES = [
    ("sparse-vd", "log_alpha:keep=0.02", 60, 1e-3),
    ("group-horseshoe", "snr:keep=0.02", 20, 2e-3),
]


def mnist_end_to_end() -> tuple[list[dict], dict]:
    """Test error of the Bayesian, pruned and exported LeNet-300-100, kept weights, widths, pixels, latency."""
    from .lenet import export_end_to_end

    rows = []
    for prior, rule, epochs, lr in MNIST_CASES:
        row = export_end_to_end("mnist", prior=prior, rule=rule, epochs=epochs, lr=lr)
        rows.append({"part": "mnist_lenet_300_100", "prior": prior, "rule": rule, **row})
    head = rows[0]
    summary = {
        "mnist_error_pct_exported": head["exported_error_pct"],
        "kept_weight_pct": head["kept_weight_pct"],
        "latency_ratio_b256": head["latency_ratio_b256"],
        "mnist_error_gap_exported_vs_pruned": head["exported_error_pct"] - head["pruned_error_pct"],
    }
    return rows, summary


# Parts measured only in full mode: functions returning (rows, summary), run after part 1.
FULL_ONLY_PARTS: list = [mnist_end_to_end]


def run(quick: bool) -> BenchmarkResult:
    load_start = os.getloadavg()[0]
    rows, summary = kernel_speed(QUICK_DENSITIES if quick else DENSITIES, BATCHES)
    if not quick:
        for part in FULL_ONLY_PARTS:
            part_rows, part_summary = part()
            rows += part_rows
            summary.update(part_summary)
    summary["dram_copy_bandwidth_gbs"] = copy_bandwidth(64 << 20, rounds=5) / 1e9
    summary["load_1min_start"] = load_start
    summary["load_1min_end"] = os.getloadavg()[0]
    return BenchmarkResult(rows=rows, summary=summary)
