"""Tests for probsparse.export.pruning: rules -> keep-masks, budgets, reports and errors."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from probsparse.export.pruning import PruningError, PruningRule, masks_from_scores, prune, scores_of


def _scores(shapes=None, seed=0):
    """Scores of a few layers computed from random means/stds as a Gaussian layer would (float64)."""
    shapes = shapes or {"fc1": (6, 5), "fc2": (4, 6), "out": (3, 4)}
    gen = torch.Generator().manual_seed(seed)
    table = {}
    for name, shape in shapes.items():
        mean = torch.randn(shape, generator=gen, dtype=torch.float64)
        std = torch.rand(shape, generator=gen, dtype=torch.float64) * 1.5 + 0.05
        table[name] = {
            "mean": mean,
            "std": std,
            "snr": mean.abs() / std,
            "log_alpha": torch.log(std**2 / mean**2),
            "inclusion_prob": torch.rand(shape, generator=gen, dtype=torch.float64),
        }
    return table


# ------------------------------------------------------------------------------------------ thresholds


def test_log_alpha_threshold_prunes_at_or_above():
    scores = _scores()
    masks, report = masks_from_scores(scores, PruningRule("log_alpha", threshold=0.5))
    for name, table in scores.items():
        expected = (np.log(table["std"].numpy() ** 2) - np.log(table["mean"].numpy() ** 2)) < 0.5
        np.testing.assert_array_equal(masks[name].numpy(), expected)
        assert masks[name].dtype == torch.bool
    assert report.n_kept == sum(int(m.sum()) for m in masks.values())


def test_log_alpha_and_snr_thresholds_agree():
    # log alpha = -2 log snr, so "log alpha < t" keeps the same weights as "snr >= exp(-t / 2)" (no ties here).
    scores = _scores()
    for t in (-1.0, 0.0, 1.5):
        by_alpha, _ = masks_from_scores(scores, PruningRule("log_alpha", threshold=t))
        by_snr, _ = masks_from_scores(scores, PruningRule("snr", threshold=math.exp(-t / 2)))
        for name in scores:
            torch.testing.assert_close(by_alpha[name], by_snr[name], rtol=0, atol=0)


def test_boundary_values():
    scores = {"a": {"log_alpha": torch.tensor([3.0, 2.999, -1.0]), "snr": torch.tensor([1.0, 0.999, 5.0])}}
    m, _ = masks_from_scores(scores, PruningRule("log_alpha", threshold=3.0))
    assert m["a"].tolist() == [False, True, True]
    m, _ = masks_from_scores(scores, PruningRule("snr", threshold=1.0))
    assert m["a"].tolist() == [True, False, True]


@pytest.mark.parametrize("level", [0.5, 0.9, 0.99])
def test_credible_interval_matches_scipy(level):
    scores = _scores()
    masks, report = masks_from_scores(scores, PruningRule("credible_interval", threshold=level))
    for name, table in scores.items():
        lo, hi = stats.norm.interval(level, loc=table["mean"].numpy(), scale=table["std"].numpy())
        np.testing.assert_array_equal(masks[name].numpy(), (lo > 0) | (hi < 0))
        assert 0 < masks[name].sum() < masks[name].numel()
    assert report.layers[0].threshold == level


def test_credible_interval_with_zero_std():
    scores = {"a": {"mean": torch.tensor([0.0, 0.3, -2.0]), "std": torch.tensor([0.0, 0.0, 1.0])}}
    masks, _ = masks_from_scores(scores, PruningRule("credible_interval", threshold=0.95))
    assert masks["a"].tolist() == [False, True, True]  # a point mass at 0 is pruned, at 0.3 kept


def test_inclusion_probability_and_folded_snr():
    scores = _scores()
    masks, _ = masks_from_scores(scores, PruningRule("inclusion_prob", threshold=0.5))
    for name, table in scores.items():
        torch.testing.assert_close(masks[name], table["inclusion_prob"] >= 0.5, rtol=0, atol=0)
    folded = {"l": {"folded_snr": torch.tensor([[0.1, 2.0], [3.0, 0.9]])}}
    masks, _ = masks_from_scores(folded, PruningRule("folded_snr", threshold=1.0))
    assert masks["l"].tolist() == [[False, True], [True, False]]


def test_per_layer_thresholds():
    scores = _scores()
    thresholds = {"fc1": -0.5, "fc2": 0.5, "out": 2.0}
    masks, report = masks_from_scores(scores, PruningRule("log_alpha", threshold=thresholds))
    for name, t in thresholds.items():
        torch.testing.assert_close(masks[name], scores[name]["log_alpha"] < t, rtol=0, atol=0)
    assert [d.threshold for d in report.layers] == [-0.5, 0.5, 2.0]


@pytest.mark.parametrize(
    ("thresholds", "match"),
    [({"fc1": 0.0, "fc2": 0.0}, r"missing \['out'\]"), ({"fc1": 0, "fc2": 0, "out": 0, "x": 0}, r"unknown \['x'\]")],
)
def test_per_layer_thresholds_must_name_every_layer(thresholds, match):
    with pytest.raises(ValueError, match=match):
        masks_from_scores(_scores(), PruningRule("log_alpha", threshold=thresholds))


# ------------------------------------------------------------------------------------------ budgets


@pytest.mark.parametrize("score", ["log_alpha", "snr", "inclusion_prob"])
@pytest.mark.parametrize("fraction", [0.2, 0.5, 1.0])
def test_global_budget_keeps_the_best_scored_weights_of_all_layers(score, fraction):
    scores = _scores()
    masks, report = masks_from_scores(scores, PruningRule(score, keep_fraction=fraction))
    sign = -1.0 if score == "log_alpha" else 1.0
    flat = np.concatenate([sign * scores[n][score].numpy().ravel() for n in scores])
    kept = np.concatenate([masks[n].numpy().ravel() for n in scores])
    k = math.ceil(fraction * flat.size)
    assert kept.sum() == k == report.n_kept
    # Naive reference: the k largest keys (no ties in random data).
    np.testing.assert_array_equal(kept, np.isin(np.arange(flat.size), np.argsort(-flat)[:k]))
    for decision, name in zip(report.layers, scores, strict=True):
        if decision.n_kept:
            worst = scores[name][score][masks[name]]
            assert decision.threshold == (worst.max() if score == "log_alpha" else worst.min()).item()


def test_global_budget_that_empties_a_layer_names_it():
    scores = _scores()
    scores["fc2"]["snr"] = scores["fc2"]["snr"] * 1e-6  # fc2 ranks below everything else
    with pytest.raises(PruningError, match="layer 'fc2'"):
        masks_from_scores(scores, PruningRule("snr", keep_fraction=0.3))


def test_per_layer_budget():
    scores = _scores()
    masks, report = masks_from_scores(scores, PruningRule("snr", keep_fraction=0.25, per_layer=True))
    for name, table in scores.items():
        n = table["snr"].numel()
        k = math.ceil(0.25 * n)
        assert int(masks[name].sum()) == k
        assert table["snr"][masks[name]].min() > table["snr"][~masks[name]].max()
    fractions = {"fc1": 0.1, "fc2": 0.5, "out": 1.0}
    masks, report = masks_from_scores(scores, PruningRule("snr", keep_fraction=fractions))
    assert [d.n_kept for d in report.layers] == [math.ceil(f * scores[n]["snr"].numel()) for n, f in fractions.items()]


def test_budget_ties_are_broken_by_layer_order_then_position():
    scores = {"a": {"snr": torch.ones(2, 2)}, "b": {"snr": torch.ones(4)}}
    masks, report = masks_from_scores(scores, PruningRule("snr", keep_fraction=0.75))
    assert masks["a"].tolist() == [[True, True], [True, True]]
    assert masks["b"].tolist() == [True, True, False, False]
    assert report.n_kept == 6


# ------------------------------------------------------------------------------------------ errors


def test_threshold_that_keeps_nothing_names_the_layer():
    scores = _scores()
    with pytest.raises(PruningError, match=r"keeps no weight of layer 'fc1'"):
        masks_from_scores(scores, PruningRule("log_alpha", threshold={"fc1": -1e9, "fc2": 0.0, "out": 0.0}))


def test_missing_score_names_the_layer_and_lists_what_it_has():
    scores = _scores()
    del scores["fc2"]["inclusion_prob"]
    with pytest.raises(PruningError, match=r"layer 'fc2' has no 'inclusion_prob' score.*'log_alpha'"):
        masks_from_scores(scores, PruningRule("inclusion_prob", threshold=0.5))


@pytest.mark.parametrize(
    ("scores", "error", "match"),
    [
        ({}, ValueError, "non-empty"),
        ({"a": torch.ones(2)}, TypeError, r"scores\['a'\] must be a dict"),
        ({"a": {"snr": torch.tensor([1.0, math.nan])}}, ValueError, "NaN"),
        ({"a": {"snr": torch.tensor([1, 2])}}, TypeError, "floating-point"),
        ({"a": {"snr": torch.zeros(0)}}, ValueError, "empty"),
    ],
)
def test_bad_scores(scores, error, match):
    with pytest.raises(error, match=match):
        masks_from_scores(scores, PruningRule("snr", threshold=1.0))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"score": "magnitude", "threshold": 1.0}, ValueError, "score must be one of"),
        ({"score": "snr"}, ValueError, "exactly one"),
        ({"score": "snr", "threshold": 1.0, "keep_fraction": 0.1}, ValueError, "exactly one"),
        ({"score": "snr", "threshold": math.inf}, ValueError, "finite"),
        ({"score": "snr", "threshold": "1"}, TypeError, "threshold"),
        ({"score": "snr", "keep_fraction": 0.0}, ValueError, r"keep_fraction must lie in \(0, 1\]"),
        ({"score": "snr", "keep_fraction": {"a": 1.5}}, ValueError, r"keep_fraction\['a'\]"),
        ({"score": "credible_interval", "threshold": 1.0}, ValueError, "level"),
        ({"score": "credible_interval", "keep_fraction": 0.1}, ValueError, "score='snr'"),
        ({"score": "snr", "threshold": 1.0, "per_layer": True}, ValueError, "budgets only"),
    ],
)
def test_bad_rules(kwargs, error, match):
    with pytest.raises(error, match=match):
        PruningRule(**kwargs)


def test_rule_must_be_a_rule():
    with pytest.raises(TypeError, match="PruningRule"):
        masks_from_scores(_scores(), "log_alpha=3")


# ------------------------------------------------------------------------------------------ parsing & report


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("log_alpha=3", PruningRule("log_alpha", threshold=3.0)),
        ("snr:threshold=2.5", PruningRule("snr", threshold=2.5)),
        ("snr:keep=0.02", PruningRule("snr", keep_fraction=0.02)),
        ("folded_snr:keep=0.1:per_layer", PruningRule("folded_snr", keep_fraction=0.1, per_layer=True)),
        ("credible_interval:level=0.95", PruningRule("credible_interval", threshold=0.95)),
    ],
)
def test_from_string(text, rule):
    assert PruningRule.from_string(text) == rule


@pytest.mark.parametrize("text", ["", "snr", "snr:keep=abc", "snr:top=3", "nope=1"])
def test_from_string_rejects_garbage(text):
    with pytest.raises(ValueError):
        PruningRule.from_string(text)


def test_report_dict_and_markdown_agree_with_masks():
    scores = _scores()
    masks, report = masks_from_scores(scores, PruningRule("log_alpha", threshold=0.0))
    as_dict = report.to_dict()
    assert as_dict["rule"] == "log_alpha < 0.0"
    assert as_dict["n_weights"] == sum(m.numel() for m in masks.values())
    assert as_dict["n_kept"] == sum(int(m.sum()) for m in masks.values())
    for row, (name, mask) in zip(as_dict["layers"], masks.items(), strict=True):
        assert row["name"] == name and row["shape"] == list(mask.shape)
        assert row["kept_fraction"] == pytest.approx(mask.double().mean().item())
    text = report.to_markdown()
    assert text.count("\n| ") == len(masks) + 1
    assert f"keeps {report.n_kept} of {report.n_weights}" in text


# ------------------------------------------------------------------------------------------ networks


class _Scored(nn.Module):
    """A stand-in Bayesian layer: fixed scores, so prune() can be tested without any inference."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def pruning_scores(self):
        return dict(self.table)


def test_prune_collects_scores_by_qualified_name():
    scores = _scores()
    net = nn.Sequential(
        nn.Flatten(), _Scored(scores["fc1"]), nn.ReLU(), nn.Sequential(_Scored(scores["fc2"]), _Scored(scores["out"]))
    )
    assert list(scores_of(net)) == ["1", "3.0", "3.1"]
    masks, report = prune(net, PruningRule("snr", threshold=0.7))
    expected, _ = masks_from_scores(
        dict(zip(["1", "3.0", "3.1"], scores.values(), strict=True)), PruningRule("snr", threshold=0.7)
    )
    assert list(masks) == ["1", "3.0", "3.1"]
    for name in masks:
        torch.testing.assert_close(masks[name], expected[name], rtol=0, atol=0)
    assert [d.name for d in report.layers] == ["1", "3.0", "3.1"]


def test_prune_without_scored_layers_is_an_error():
    with pytest.raises(PruningError, match="no layer with pruning_scores"):
        prune(nn.Sequential(nn.Linear(2, 2)), PruningRule("snr", threshold=1.0))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        scores_of({"fc": {}})
