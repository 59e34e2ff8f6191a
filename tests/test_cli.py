import pytest

from probsparse.cli import main


def test_demo_prints_a_comparison_and_the_posterior(capsys):
    assert main(["sbl-demo", "--distractors", "5", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "10 clinical features + 5 random distractors" in out
    for row in ("SBLRegressor (evidence)", "sklearn ARDRegression", "posterior of the features"):
        assert row in out
    # bmi and s5 are the strongest predictors of disease progression in this data set
    assert "bmi" in out and "s5" in out


@pytest.mark.parametrize("engine", ["mackay", "em"])
def test_demo_with_other_engines(engine, capsys):
    assert main(["sbl-demo", "--engine", engine, "--distractors", "3"]) == 0
    assert "SBLRegressor (evidence)" in capsys.readouterr().out


def test_demo_rejects_negative_distractors():
    with pytest.raises(SystemExit):
        main(["sbl-demo", "--distractors", "-1"])


def test_demo_trains_prunes_exports_and_says_where(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["demo", "--epochs", "3", "--hidden", "32", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert f"exported network: {out / 'network'}" in text
    assert "weights kept" in text and "latency batch 256" in text
    for name in ("report.md", "report.json", "sparsity.png", "accuracy_vs_kept.png", "network/manifest.json"):
        assert (out / name).is_file(), name


def test_compress_rejects_an_unknown_prior():
    with pytest.raises(SystemExit):
        main(["compress", "--prior", "laplace"])
