"""Smoke tests: every tutorial script runs to the end on its small problem."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("*/*.py"))


@pytest.mark.parametrize("script", TUTORIALS, ids=[p.parent.name for p in TUTORIALS])
def test_tutorial_runs(script, tmp_path):
    env = {
        **os.environ,
        "PROBSPARSE_SMOKE": "1",
        "MPLBACKEND": "Agg",
        "PYTHONWARNINGS": "error::DeprecationWarning:probsparse",
    }
    result = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert any(tmp_path.iterdir()), "the tutorial wrote no figure"


def test_tutorials_are_found():
    assert TUTORIALS, "no tutorial scripts found"
