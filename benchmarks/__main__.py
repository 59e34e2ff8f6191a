"""Command line of the benchmark harness: ``python -m benchmarks NAME|all [--quick] [--out DIR]``."""

from __future__ import annotations

import os

# Benchmarks are measured single-threaded (stable, comparable figures); this must happen before NumPy,
# torch or Numba start their thread pools. The library itself never does this.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import importlib  # noqa: E402
import pkgutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from .harness import format_table, write_result  # noqa: E402

_PREFIX = "bench_"


def available() -> list[str]:
    """Names of the benchmarks found in this package (modules ``bench_<name>.py``)."""
    here = Path(__file__).parent
    return sorted(
        m.name[len(_PREFIX) :] for m in pkgutil.iter_modules([str(here)]) if m.name.startswith(_PREFIX)
    )


def run_one(name: str, quick: bool, out_dir: Path) -> Path:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    module = importlib.import_module(f"benchmarks.{_PREFIX}{name}")
    start = time.perf_counter()
    result = module.run(quick=quick)
    elapsed = time.perf_counter() - start
    result.summary.setdefault("wall_s", elapsed)
    print(f"== {name} ({'quick' if quick else 'full'}, {elapsed:.1f} s)")
    print(format_table(result.rows))
    print(
        "summary:",
        ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.summary.items()),
    )
    path = write_result(name, quick, result, out_dir)
    print(f"wrote {path}\n")
    return path


def main(argv: list[str] | None = None) -> int:
    names = available()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("name", choices=names + ["all"], help="benchmark to run, or 'all'")
    parser.add_argument("--quick", action="store_true", help="small sizes, one seed (under 60 s each)")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results", help="folder for <name>.json"
    )
    args = parser.parse_args(argv)
    for name in names if args.name == "all" else [args.name]:
        run_one(name, args.quick, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
