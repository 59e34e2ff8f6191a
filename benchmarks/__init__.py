"""probsparse benchmarks: ``python -m benchmarks NAME [--quick] [--out DIR]`` (NAME may be ``all``).

Each benchmark is a module ``benchmarks/bench_<name>.py`` with a ``run(quick: bool) -> BenchmarkResult``.
The harness (``benchmarks/harness.py``) times with a warm-up and several repeats (median), records the
machine, and writes ``results/<name>.json``. Targets of speed and accuracy live here, not in unit tests.
"""
