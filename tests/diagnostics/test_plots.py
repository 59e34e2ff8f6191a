"""The figures: returned (never shown), drawn without pyplot, with the artists they promise."""

import matplotlib
import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from probsparse.diagnostics.plots import plot_reliability, plot_score_histogram, plot_shrinkage


@pytest.fixture(autouse=True)
def _agg_backend():
    matplotlib.use("Agg")


def _render(fig):
    """Draw the figure to a buffer: catches artists that fail only at draw time."""
    fig.canvas.draw()


def test_shrinkage_plot(rng):
    truth = np.array([0.0, 2.0, 0.0, -1.5, 0.0])
    draws = truth + 0.3 * rng.standard_normal((500, 5))
    fig = plot_shrinkage(draws, truth=truth, label="w")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    containers = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(containers) == 2
    # First container: the intervals that exclude zero, i.e. the two nonzero coefficients.
    excluding = containers[0].lines[0].get_xdata()
    np.testing.assert_array_equal(excluding, [1, 3])
    np.testing.assert_allclose(containers[0].lines[0].get_ydata(), draws.mean(0)[[1, 3]])
    truth_lines = [line for line in ax.lines if line.get_label() == "truth"]
    assert len(truth_lines) == 1
    np.testing.assert_array_equal(truth_lines[0].get_ydata(), truth)
    _render(fig)


def test_shrinkage_plot_on_given_axes_and_chains(rng):
    fig = Figure()
    ax = fig.add_subplot()
    out = plot_shrinkage(rng.uniform(size=(2, 100, 4)), sample_ndim=2, label="kappa", ax=ax)
    assert out is fig and "kappa" in ax.get_ylabel()
    with pytest.raises(ValueError, match="truth must have shape"):
        plot_shrinkage(rng.standard_normal((10, 4)), truth=np.zeros(3))
    with pytest.raises(ValueError, match="vectors"):
        plot_shrinkage(rng.standard_normal((10, 2, 2)))
    with pytest.raises(TypeError, match="Axes"):
        plot_shrinkage(rng.standard_normal((10, 2)), ax="not an axes")


def test_reliability_plot(rng):
    logits = rng.standard_normal((400, 3))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 3, 400)
    fig = plot_reliability(probs, labels, n_bins=10)
    ax = fig.axes[0]
    assert len(ax.patches) == 10
    from probsparse.diagnostics.calibration import reliability_diagram

    diagram = reliability_diagram(probs, labels, 10)
    heights = np.array([p.get_height() for p in ax.patches])
    np.testing.assert_allclose(heights, np.nan_to_num(diagram.accuracy))
    assert f"{100 * diagram.ece:.2f}%" in ax.get_title()
    _render(fig)


def test_score_histogram(rng):
    scores = np.concatenate([rng.normal(-5, 1, 300), rng.normal(6, 1, 200)])
    fig = plot_score_histogram(scores, threshold=3.0, bins=20)
    ax = fig.axes[0]
    assert len(ax.patches) == 20
    assert sum(p.get_height() for p in ax.patches) == 500
    vertical = [line for line in ax.lines if np.all(np.asarray(line.get_xdata()) == 3.0)]
    assert len(vertical) == 1
    assert f"{int(np.sum(scores < 3.0))} of 500" in vertical[0].get_label()
    no_line = plot_score_histogram(scores, bins=5)
    assert len(no_line.axes[0].lines) == 0
    with pytest.raises(ValueError, match="empty"):
        plot_score_histogram(np.array([]))
    with pytest.raises(ValueError, match="NaN"):
        plot_score_histogram(np.array([1.0, np.nan]))
    _render(fig)


def test_figures_are_not_registered_with_pyplot(rng):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot_score_histogram(rng.standard_normal(10))
    assert plt.get_fignums() == before
