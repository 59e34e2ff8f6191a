"""Inclusion probabilities (draws, Gaussian closed form, layer scores) and shrinkage factors."""

import numpy as np
import pytest
import torch
from scipy import stats

from probsparse.diagnostics.inclusion import (
    gaussian_inclusion_probabilities,
    inclusion_probabilities,
    layer_inclusion_probabilities,
    regression_shrinkage_factor,
    shrinkage_summary,
)


def test_inclusion_from_known_draws():
    draws = np.array([[0.0, 2.0, -0.3], [0.5, -3.0, 0.0], [-1.5, 0.1, 0.0], [2.0, 4.0, 0.0]])
    np.testing.assert_allclose(inclusion_probabilities(draws, 1.0), [0.5, 0.75, 0.0])
    # threshold 0 counts the draws that are not exactly zero (a sampled spike-and-slab).
    np.testing.assert_allclose(inclusion_probabilities(draws), [0.75, 1.0, 0.25])
    # (chain, draw) layout pools the chains.
    np.testing.assert_allclose(inclusion_probabilities(draws.reshape(2, 2, 3), 1.0, sample_ndim=2), [0.5, 0.75, 0.0])


def test_gaussian_inclusion_matches_scipy_and_monte_carlo(rng):
    mean = np.array([-2.0, -0.3, 0.0, 0.4, 1.5])
    std = np.array([0.5, 1.0, 0.2, 0.1, 2.0])
    t = 0.5
    expected = stats.norm.sf(t, mean, std) + stats.norm.cdf(-t, mean, std)
    got = gaussian_inclusion_probabilities(mean, std, t)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    draws = mean + std * rng.standard_normal((200000, 5))
    np.testing.assert_allclose(got, inclusion_probabilities(draws, t), atol=5e-3)


def test_gaussian_inclusion_zero_std_and_broadcasting():
    got = gaussian_inclusion_probabilities(np.array([[0.2], [0.8]]), np.array([0.0, 1.0]), 0.5)
    assert got.shape == (2, 2)
    assert got[0, 0] == 0.0 and got[1, 0] == 1.0
    assert got[0, 1] == pytest.approx(stats.norm.sf(0.5, 0.2, 1.0) + stats.norm.cdf(-0.5, 0.2, 1.0))


class _Layer:
    def __init__(self, scores):
        self._scores = scores

    def pruning_scores(self):
        return self._scores


def test_layer_inclusion_uses_the_layer_score_or_the_gaussian_marginal():
    mean = torch.tensor([[0.0, 3.0], [-1.0, 0.2]])
    std = torch.tensor([[1.0, 1.0], [0.5, 0.1]])
    spike = _Layer({"mean": mean, "std": std, "inclusion_prob": torch.tensor([[0.1, 0.9], [0.6, 0.3]])})
    np.testing.assert_allclose(layer_inclusion_probabilities(spike), [[0.1, 0.9], [0.6, 0.3]], rtol=1e-6)
    plain = _Layer({"mean": mean, "std": std})
    expected = gaussian_inclusion_probabilities(mean.numpy(), std.numpy(), 0.5)
    np.testing.assert_allclose(layer_inclusion_probabilities(plain, threshold=0.5), expected)
    np.testing.assert_allclose(layer_inclusion_probabilities(spike, threshold=0.5), expected)
    with pytest.raises(ValueError, match="defines no 'inclusion_prob'"):
        layer_inclusion_probabilities(plain)
    with pytest.raises(ValueError, match="lacks"):
        layer_inclusion_probabilities({"mean": mean}, threshold=0.5)
    with pytest.raises(TypeError, match="pruning_scores"):
        layer_inclusion_probabilities(object())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        layer_inclusion_probabilities({"inclusion_prob": np.array([1.5])})


def test_regression_shrinkage_factor_gives_the_conditional_posterior_mean(rng):
    # Orthogonal columns with different norms: E[w | s, sigma, y] = (1 - kappa) * least squares, exactly.
    n, d = 30, 5
    q, _ = np.linalg.qr(rng.standard_normal((n, d)))
    X = q * np.array([0.5, 1.0, 2.0, 3.0, 4.0])
    y = rng.standard_normal(n)
    sigma, s = 0.7, np.array([0.1, 0.5, 1.0, 2.0, 0.05])
    precision = X.T @ X / sigma**2 + np.diag(1 / s**2)
    post_mean = np.linalg.solve(precision, X.T @ y / sigma**2)
    least_squares = np.linalg.solve(X.T @ X, X.T @ y)
    kappa = regression_shrinkage_factor(X, sigma, s)
    np.testing.assert_allclose(post_mean, (1 - kappa) * least_squares, rtol=1e-10)


def test_regression_shrinkage_factor_per_draw(rng):
    X = rng.standard_normal((10, 3))
    sigma = np.array([0.5, 1.0])
    scales = np.array([[1.0, 0.0, 2.0], [0.3, 1.0, 1.0]])
    got = regression_shrinkage_factor(X, sigma, scales)
    for i in range(2):
        np.testing.assert_allclose(got[i], regression_shrinkage_factor(X, sigma[i], scales[i]))
    assert got[0, 1] == 1.0
    with pytest.raises(ValueError, match="noise_scale must be > 0"):
        regression_shrinkage_factor(X, 0.0, scales[0])
    with pytest.raises(ValueError, match="weight_scale must have shape"):
        regression_shrinkage_factor(X, 1.0, np.ones(4))
    with pytest.raises(ValueError, match="noise_scale must be a scalar"):
        regression_shrinkage_factor(X, np.ones(3), scales)
    with pytest.raises(ValueError, match="weight_scale must be >= 0"):
        regression_shrinkage_factor(X, 1.0, -np.ones(3))


def test_shrinkage_summary_of_beta_half_half_draws(rng):
    # The horseshoe's kappa is Beta(1/2, 1/2) when tau = 1: mean 1/2, P(kappa < 1/2) = 1/2, arcsine quantiles.
    draws = rng.beta(0.5, 0.5, size=(100000, 2))
    summary = shrinkage_summary(draws, prob=0.9)
    np.testing.assert_allclose(summary["mean"], 0.5, atol=0.01)
    np.testing.assert_allclose(summary["prob_signal"], 0.5, atol=0.01)
    np.testing.assert_allclose(summary["lower"], stats.beta.ppf(0.05, 0.5, 0.5), atol=0.002)
    np.testing.assert_allclose(summary["upper"], stats.beta.ppf(0.95, 0.5, 0.5), atol=0.002)
    np.testing.assert_allclose(summary["median"], 0.5, atol=0.01)
    with pytest.raises(ValueError, match=r"kappa_draws must lie in \[0, 1\]"):
        shrinkage_summary(draws + 1.0)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: inclusion_probabilities(np.zeros((3, 2)), -1.0), "threshold must be >= 0"),
        (lambda: inclusion_probabilities(np.zeros((3, 2)), np.nan), "threshold must be finite"),
        (lambda: inclusion_probabilities(np.array([[np.inf]])), "NaN"),
        (lambda: gaussian_inclusion_probabilities([0.0], [-1.0], 0.1), "std must be >= 0"),
        (lambda: gaussian_inclusion_probabilities([0.0, 1.0], [1.0, 1.0, 1.0], 0.1), "broadcast"),
        (lambda: gaussian_inclusion_probabilities([np.nan], [1.0], 0.1), "mean contains NaN"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
