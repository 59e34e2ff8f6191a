"""Matplotlib figures of a sparse posterior: shrinkage, calibration and pruning-score histograms.

Every function draws on a given ``ax`` or, without one, on a new :class:`matplotlib.figure.Figure` made
directly (not through ``pyplot``), so no GUI backend is touched, no global figure list grows, and nothing is
shown: the caller saves or displays the returned figure. ``matplotlib`` is imported on first use.
"""

from __future__ import annotations

import numpy as np

from .calibration import reliability_diagram
from .intervals import _check_draws, _check_prob

__all__ = ["plot_reliability", "plot_score_histogram", "plot_shrinkage"]


def _axes(ax, figsize):
    """``(figure, axes)``: the figure of ``ax``, or a new pyplot-free figure with one axes."""
    if ax is not None:
        from matplotlib.axes import Axes

        if not isinstance(ax, Axes):
            raise TypeError(f"ax must be a matplotlib Axes, got {type(ax).__name__}")
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def plot_shrinkage(
    draws,
    *,
    truth=None,
    prob: float = 0.9,
    sample_ndim: int = 1,
    label: str = "w",
    reference: float = 0.0,
    ax=None,
):
    r"""Posterior mean and equal-tailed interval of every coordinate against its index.

    Coordinates whose interval excludes ``reference`` are drawn in colour C0, the others in grey; with
    ``truth``, the true values are overlaid as black crosses. Pass weight draws for a coefficient plot, or
    draws of the shrinkage factor :math:`\kappa` (``label="kappa", reference=0.5``: an interval below 1/2
    marks a kept coefficient) for a shrinkage-profile plot.

    Parameters
    ----------
    draws : array_like of shape (n_draws, d) or (n_chains, n_draws, d)
        Posterior draws of a vector; finite.
    truth : array_like of shape (d,), optional
        True values to overlay.
    prob : float, default=0.9
        Mass of the intervals.
    sample_ndim : {1, 2}, default=1
        Leading sample axes (2 for ``(chain, draw)``).
    label : str, default="w"
        Name of the quantity, used on the y axis.
    reference : float, default=0.0
        Value the intervals are compared with (and drawn as a horizontal line).
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure is made when omitted.

    Returns
    -------
    matplotlib.figure.Figure
        Its axes hold two errorbar containers (excluding / including ``reference``) and, with ``truth``, one line of
        crosses labelled ``"truth"``.

    Examples
    --------
    >>> import numpy as np
    >>> fig = plot_shrinkage(np.random.default_rng(0).normal(size=(200, 5)) + np.arange(5))
    >>> len(fig.axes[0].containers)
    2
    """
    flat, _ = _check_draws(draws, sample_ndim)
    prob = _check_prob(prob)
    if flat.ndim != 2:
        raise ValueError(f"draws must hold vectors, shape (n_draws, d) or (n_chains, n_draws, d); got {flat.shape}")
    d = flat.shape[1]
    mean = flat.mean(axis=0)
    lower, upper = np.quantile(flat, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
    if truth is not None:
        truth = np.asarray(truth, dtype=np.float64)
        if truth.shape != (d,):
            raise ValueError(f"truth must have shape ({d},), got {truth.shape}")
    from probsparse._validation import check_finite_real

    reference = check_finite_real(reference, "reference")
    excludes = (lower > reference) | (upper < reference)
    fig, ax = _axes(ax, (8, 3.5))
    index = np.arange(d)
    pct = f"{100 * prob:g}%"
    groups = ((excludes, "C0", f"{pct} interval excludes {reference:g}"), (~excludes, "0.6", f"includes {reference:g}"))
    for mask, colour, name in groups:
        ax.errorbar(
            index[mask],
            mean[mask],
            yerr=np.stack([mean[mask] - lower[mask], upper[mask] - mean[mask]]),
            fmt="o",
            ms=3,
            lw=1,
            color=colour,
            label=name,
        )
    if truth is not None:
        ax.plot(index, truth, "x", color="k", ms=5, label="truth")
    ax.axhline(reference, color="k", lw=0.5)
    ax.set(xlabel="index", ylabel=f"{label} (mean, {pct} interval)")
    ax.legend(loc="best", fontsize="small")
    return fig


def plot_reliability(probs, labels, *, n_bins: int = 15, ax=None):
    r"""Reliability diagram: accuracy against mean confidence per equal-width confidence bin.

    Bars show each bin's accuracy at the bin's position; the diagonal is perfect calibration; the title
    gives the expected calibration error (:func:`~probsparse.diagnostics.calibration.reliability_diagram`).

    Parameters
    ----------
    probs : array_like of shape (n, n_classes)
        Predictive class probabilities, rows summing to one.
    labels : array_like of int, shape (n,)
    n_bins : int, default=15
    ax : matplotlib.axes.Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
        Its axes hold ``n_bins`` bar patches (zero height for empty bins), the diagonal line and the
        per-bin mean-confidence markers.

    Examples
    --------
    >>> import numpy as np
    >>> fig = plot_reliability(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 0]), n_bins=5)
    >>> len(fig.axes[0].patches)
    5
    """
    diagram = reliability_diagram(probs, labels, n_bins)
    fig, ax = _axes(ax, (4.5, 4.5))
    edges = diagram.bin_edges
    width = np.diff(edges)
    ax.bar(
        edges[:-1],
        np.nan_to_num(diagram.accuracy),
        width=width,
        align="edge",
        edgecolor="k",
        color="C0",
        alpha=0.7,
        label="accuracy",
    )
    ax.plot([0, 1], [0, 1], "--", color="0.4", label="perfect calibration")
    filled = diagram.counts > 0
    ax.plot(diagram.confidence[filled], diagram.accuracy[filled], "o", color="C3", ms=4, label="bin (conf, acc)")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="confidence (top-class probability)",
        ylabel="accuracy",
        title=f"ECE = {100 * diagram.ece:.2f}%",
    )
    ax.legend(loc="upper left", fontsize="small")
    return fig


def plot_score_histogram(scores, threshold: float | None = None, *, bins: int = 50, label: str = "log alpha", ax=None):
    r"""Histogram of pruning scores (e.g. :math:`\log\alpha`, SNR) with the pruning threshold marked.

    A well-separated, two-mode histogram with the threshold in the gap is the usual sign that the
    threshold is not a sensitive choice (Molchanov et al. 2017 used :math:`\log\alpha = 3`).

    Parameters
    ----------
    scores : array_like
        Scores of any shape (flattened); finite, at least one.
    threshold : float, optional
        Drawn as a vertical red line.
    bins : int, default=50
    label : str, default="log alpha"
        Name of the score, on the x axis.
    ax : matplotlib.axes.Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
        Its axes hold ``bins`` histogram patches and, with ``threshold``, one vertical line.

    Examples
    --------
    >>> import numpy as np
    >>> fig = plot_score_histogram(np.linspace(-8.0, 8.0, 100), threshold=3.0, bins=10)
    >>> len(fig.axes[0].patches), len(fig.axes[0].lines)
    (10, 1)
    """
    from probsparse._validation import check_finite_real, check_positive_int

    bins = check_positive_int(bins, "bins")
    if hasattr(scores, "detach") and hasattr(scores, "cpu"):
        scores = scores.detach().cpu().numpy()
    values = np.asarray(scores)
    if values.dtype.kind not in "fiu":
        raise TypeError(f"scores must hold real numbers, got dtype {values.dtype}")
    values = values.astype(np.float64).ravel()
    if values.size == 0:
        raise ValueError("scores is empty: at least one score is needed")
    if not np.all(np.isfinite(values)):
        raise ValueError("scores contains NaN or infinite values; all entries must be finite")
    fig, ax = _axes(ax, (5, 3.5))
    ax.hist(values, bins=bins, color="C0", alpha=0.8)
    if threshold is not None:
        threshold = check_finite_real(threshold, "threshold")
        kept = int(np.sum(values < threshold))
        ax.axvline(threshold, color="C3", lw=1.5, label=f"threshold {threshold:g} ({kept} of {values.size} below)")
        ax.legend(loc="best", fontsize="small")
    ax.set(xlabel=label, ylabel="count")
    return fig
