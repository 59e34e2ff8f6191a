import json

import pytest

from benchmarks import harness
from benchmarks.__main__ import available, main


def test_time_call_returns_median_of_repeats_and_last_result():
    calls = []

    def fn():
        calls.append(1)
        return len(calls)

    out = harness.time_call(fn, repeats=4, warmup=2)
    assert out["repeats"] == 4 and len(calls) == 6 and out["result"] == 6
    assert 0 <= out["min_s"] <= out["median_s"]


def test_format_table_aligns_all_columns():
    text = harness.format_table([{"a": 1.23456, "b": "x"}, {"a": 2.0, "c": None}])
    lines = text.splitlines()
    assert lines[0].split() == ["a", "b", "c"] and "1.235" in lines[2]


def test_write_result_rejects_values_json_cannot_store(tmp_path):
    with pytest.raises(TypeError, match="JSON cannot store"):
        harness.write_result("x", True, harness.BenchmarkResult(rows=[{"v": object()}]), tmp_path)
    with pytest.raises(ValueError):
        harness.write_result("x", True, harness.BenchmarkResult(rows=[{"v": float("nan")}]), tmp_path)


def test_harness_benchmark_writes_valid_json(tmp_path, capsys):
    assert "harness" in available()
    assert main(["harness", "--quick", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "harness.json").read_text())
    assert payload["benchmark"] == "harness" and payload["quick"] is True
    assert set(payload) >= {"machine", "rows", "summary"}
    assert payload["machine"]["libraries"]["numpy"]
    assert payload["summary"]["dgemm_gflops_largest"] > 0
    assert "dgemm 512" in capsys.readouterr().out
