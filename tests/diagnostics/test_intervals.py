"""Equal-tailed intervals, the support they imply, and coverage of the truth."""

import numpy as np
import pytest

from probsparse.diagnostics.intervals import credible_interval, interval_coverage, interval_excludes_zero


def test_interval_matches_numpy_quantiles_and_pools_chains(rng):
    draws = rng.standard_normal((2, 300, 4)) + np.arange(4)
    lower, upper = credible_interval(draws, 0.8, sample_ndim=2)
    flat = draws.reshape(600, 4)
    np.testing.assert_allclose(lower, np.quantile(flat, 0.1, axis=0))
    np.testing.assert_allclose(upper, np.quantile(flat, 0.9, axis=0))


def test_gaussian_interval_close_to_closed_form(rng):
    draws = 2.0 + 0.5 * rng.standard_normal((200000, 1))
    lower, upper = credible_interval(draws, 0.9)
    z = 1.6448536269514722  # the 95% standard normal quantile
    np.testing.assert_allclose([lower[0], upper[0]], [2.0 - 0.5 * z, 2.0 + 0.5 * z], atol=0.01)


def test_excludes_zero_and_coverage(rng):
    truth = np.array([1.0, 0.0, -2.0, 0.0])
    draws = truth + 0.2 * rng.standard_normal((4000, 4))
    np.testing.assert_array_equal(interval_excludes_zero(draws), truth != 0)
    assert interval_coverage(draws, truth) == 1.0
    shifted = truth + np.array([0.0, 1.0, 0.0, 0.0])  # one value far outside its interval
    assert interval_coverage(draws, shifted) == 0.75
    assert interval_coverage(draws, shifted, mask=truth == 0) == 0.5


def test_coverage_of_calibrated_draws_is_nominal(rng):
    # Truth drawn from the same distribution as the posterior draws: coverage ~ prob over many coordinates.
    d = 2000
    mean = rng.standard_normal(d)
    truth = mean + rng.standard_normal(d)
    draws = mean + rng.standard_normal((1000, d))
    # Binomial sd of the coverage is sqrt(0.09 / d) ~ 0.007; the tolerance is about 3.5 of those.
    assert interval_coverage(draws, truth, prob=0.9) == pytest.approx(0.9, abs=0.025)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: credible_interval(np.zeros(3), sample_ndim=2), ValueError, "leading sample"),
        (lambda: credible_interval(np.zeros((0, 3))), ValueError, "no draws"),
        (lambda: credible_interval(np.array([[np.nan]])), ValueError, "NaN"),
        (lambda: credible_interval(np.zeros((3, 2)), prob=1.0), ValueError, "prob must lie"),
        (lambda: credible_interval(np.zeros((3, 2)), sample_ndim=3), ValueError, "sample_ndim"),
        (lambda: credible_interval(np.array([["a"]])), TypeError, "real numbers"),
        (lambda: interval_coverage(np.zeros((3, 2)), np.zeros(3)), ValueError, "shape of one draw"),
        (lambda: interval_coverage(np.zeros((3, 2)), np.zeros(2), mask=np.zeros(2, bool)), ValueError, "no coord"),
        (lambda: interval_coverage(np.zeros((3, 2)), np.zeros(2), mask=np.zeros(2)), ValueError, "boolean"),
        (lambda: interval_coverage(np.zeros((3, 2)), np.array([0.0, np.inf])), ValueError, "truth contains"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
