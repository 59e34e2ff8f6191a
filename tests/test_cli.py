import pytest

from probsparse.cli import main


def test_demo_prints_a_comparison_and_the_posterior(capsys):
    assert main(["demo", "--distractors", "5", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "10 clinical features + 5 random distractors" in out
    for row in ("SBLRegressor (evidence)", "sklearn ARDRegression", "posterior of the features"):
        assert row in out
    # bmi and s5 are the strongest predictors of disease progression in this data set
    assert "bmi" in out and "s5" in out


@pytest.mark.parametrize("engine", ["mackay", "em"])
def test_demo_with_other_engines(engine, capsys):
    assert main(["demo", "--engine", engine, "--distractors", "3"]) == 0
    assert "SBLRegressor (evidence)" in capsys.readouterr().out


def test_demo_rejects_negative_distractors():
    with pytest.raises(SystemExit):
        main(["demo", "--distractors", "-1"])
