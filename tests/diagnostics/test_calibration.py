"""Predictive NLL, accuracy, ECE and the reliability data against sklearn and a float64 naive loop."""

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, log_loss

from probsparse.diagnostics.calibration import (
    accuracy,
    expected_calibration_error,
    predictive_nll,
    predictive_probabilities,
    reliability_diagram,
)


def _random_problem(rng, n=500, n_classes=4, dtype=np.float64):
    logits = 2.0 * rng.standard_normal((n, n_classes))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, n_classes, size=n)
    return probs.astype(dtype), labels


def _naive_ece(probs, labels, n_bins):
    """Guo et al. (2017) ECE with an explicit loop over bins (lo, hi] in float64."""
    probs = np.asarray(probs, dtype=np.float64)
    n = probs.shape[0]
    total = 0.0
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    for b in range(n_bins):
        lo, hi = edges[b], edges[b + 1]
        members = []
        for i in range(n):
            c = max(probs[i])
            if (lo < c <= hi) or (b == 0 and c == 0.0):
                members.append(i)
        if not members:
            continue
        acc = sum(int(np.argmax(probs[i]) == labels[i]) for i in members) / len(members)
        conf = sum(max(probs[i]) for i in members) / len(members)
        total += len(members) / n * abs(acc - conf)
    return total


@pytest.mark.parametrize("n_bins", [1, 5, 15])
def test_ece_matches_naive_loop(rng, n_bins):
    probs, labels = _random_problem(rng)
    assert expected_calibration_error(probs, labels, n_bins) == pytest.approx(
        _naive_ece(probs, labels, n_bins), abs=1e-12
    )


def test_ece_with_confidences_on_bin_edges():
    # Confidences 0.5, 0.6, 0.8 and 1.0 sit exactly on edges of 5 bins; each belongs to the bin it closes.
    probs = np.array([[0.5, 0.5], [0.6, 0.4], [0.2, 0.8], [1.0, 0.0], [0.3, 0.7]])
    labels = np.array([1, 0, 0, 0, 1])
    diagram = reliability_diagram(probs, labels, n_bins=5)
    assert diagram.counts.tolist() == [0, 0, 2, 2, 1]
    assert diagram.ece == pytest.approx(_naive_ece(probs, labels, 5), abs=1e-12)


def test_reliability_diagram_bins_are_consistent(rng):
    probs, labels = _random_problem(rng, n=300)
    diagram = reliability_diagram(probs, labels, n_bins=10)
    assert diagram.counts.sum() == 300
    filled = diagram.counts > 0
    assert np.all(np.isnan(diagram.accuracy[~filled])) and np.all(np.isnan(diagram.confidence[~filled]))
    # Bin confidences lie inside their bins; the count-weighted accuracy is the overall accuracy.
    edges = diagram.bin_edges
    assert np.all(diagram.confidence[filled] > edges[:-1][filled])
    assert np.all(diagram.confidence[filled] <= edges[1:][filled])
    overall = np.sum(diagram.accuracy[filled] * diagram.counts[filled]) / 300
    assert overall == pytest.approx(accuracy(probs, labels))


def test_perfectly_calibrated_predictions_have_small_ece(rng):
    # Labels drawn from the predicted probabilities: calibrated by construction, ECE -> 0 as n grows.
    probs, _ = _random_problem(rng, n=20000, n_classes=3)
    labels = np.array([rng.choice(3, p=p) for p in probs])
    assert expected_calibration_error(probs, labels, 10) < 0.02
    # Overconfident predictions: sharpen the same probabilities; the ECE grows well beyond that.
    sharp = probs**4 / (probs**4).sum(axis=1, keepdims=True)
    assert expected_calibration_error(sharp, labels, 10) > 0.1


def test_nll_matches_sklearn_log_loss(rng):
    probs, labels = _random_problem(rng, n_classes=5)
    assert predictive_nll(probs, labels) == pytest.approx(log_loss(labels, probs, labels=range(5)), rel=1e-12)


def test_nll_float32_and_torch_inputs(rng):
    probs, labels = _random_problem(rng, dtype=np.float32)
    p64 = probs.astype(np.float64)
    expected = log_loss(labels, p64 / p64.sum(axis=1, keepdims=True), labels=range(4))
    assert predictive_nll(torch.from_numpy(probs), torch.from_numpy(labels)) == pytest.approx(expected, rel=1e-5)


def test_nll_of_zero_probability_is_infinite():
    assert predictive_nll(np.array([[1.0, 0.0]]), np.array([1])) == np.inf


def test_accuracy_matches_sklearn(rng):
    probs, labels = _random_problem(rng)
    assert accuracy(probs, labels) == pytest.approx(accuracy_score(labels, probs.argmax(axis=1)))


def test_predictive_probabilities_average_softmax(rng):
    logits = 3.0 * rng.standard_normal((7, 20, 4))
    expected = torch.softmax(torch.from_numpy(logits), dim=-1).mean(0).numpy()
    np.testing.assert_allclose(predictive_probabilities(logits), expected, rtol=1e-12)
    # Large logits do not overflow.
    big = predictive_probabilities(logits + 1000.0)
    np.testing.assert_allclose(big, expected, rtol=1e-10)


@pytest.mark.parametrize(
    "probs, labels, error, match",
    [
        (np.array([[0.5, 0.5]]), np.array([0.0]), TypeError, "labels must hold integer"),
        (np.array([[1, 0]]), np.array([0]), TypeError, "probs must hold floating"),
        (np.array([0.5, 0.5]), np.array([0]), ValueError, r"shape \(n, n_classes\)"),
        (np.array([[1.0]]), np.array([0]), ValueError, "n_classes >= 2"),
        (np.zeros((0, 2)), np.zeros(0, dtype=int), ValueError, "empty"),
        (np.array([[np.nan, 1.0]]), np.array([0]), ValueError, "NaN"),
        (np.array([[1.2, -0.2]]), np.array([0]), ValueError, r"\[0, 1\]"),
        (np.array([[0.5, 0.4]]), np.array([0]), ValueError, "sum to 1"),
        (np.array([[0.5, 0.5]]), np.array([0, 1]), ValueError, "labels must have shape"),
        (np.array([[0.5, 0.5]]), np.array([2]), ValueError, r"labels must lie in \[0, 2\)"),
    ],
)
def test_bad_input(probs, labels, error, match):
    for fn in (predictive_nll, accuracy, expected_calibration_error):
        with pytest.raises(error, match=match):
            fn(probs, labels)


def test_bad_bins_and_logits():
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(np.array([[0.5, 0.5]]), np.array([0]), n_bins=0)
    with pytest.raises(ValueError, match="logits must have shape"):
        predictive_probabilities(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="logits contains NaN"):
        predictive_probabilities(np.full((1, 1, 2), np.inf))
