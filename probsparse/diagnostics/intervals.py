"""Equal-tailed posterior intervals from draws, and what they say about the support and the truth."""

from __future__ import annotations

import numpy as np

from probsparse._validation import check_positive_int, check_positive_real

__all__ = ["credible_interval", "interval_coverage", "interval_excludes_zero"]


def _check_draws(draws, sample_ndim, name: str = "draws") -> tuple[np.ndarray, int]:
    """``draws`` as a finite float array with at least ``sample_ndim`` axes and at least one draw."""
    sample_ndim = check_positive_int(sample_ndim, "sample_ndim")
    if sample_ndim > 2:
        raise ValueError(f"sample_ndim must be 1 (draw) or 2 (chain, draw), got {sample_ndim}")
    if hasattr(draws, "detach") and hasattr(draws, "cpu"):
        draws = draws.detach().cpu().numpy()
    array = np.asarray(draws)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if array.ndim < sample_ndim:
        raise ValueError(
            f"{name} must have {sample_ndim} leading sample axis/axes "
            f"({'(chain, draw)' if sample_ndim == 2 else '(draw,)'}), got shape {array.shape}"
        )
    if any(s == 0 for s in array.shape[:sample_ndim]):
        raise ValueError(f"{name} has no draws: shape {array.shape}")
    array = array.astype(np.float64, copy=False)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values; all entries must be finite")
    return array.reshape((-1, *array.shape[sample_ndim:])), sample_ndim


def _check_prob(prob) -> float:
    prob = check_positive_real(prob, "prob")
    if prob >= 1:
        raise ValueError(f"prob must lie in (0, 1), got {prob}")
    return prob


def credible_interval(draws, prob: float = 0.9, *, sample_ndim: int = 1) -> tuple[np.ndarray, np.ndarray]:
    r"""Equal-tailed credible interval of every coordinate from posterior draws.

    .. math::

        [\ell_j, u_j] = \big[\hat F_j^{-1}(\tfrac{1 - p}{2}),\; \hat F_j^{-1}(\tfrac{1 + p}{2})\big],

    with :math:`\hat F_j` the empirical distribution of the draws of coordinate :math:`j` (NumPy's default
    linear interpolation between order statistics) and :math:`p` = ``prob``.

    Parameters
    ----------
    draws : array_like of shape (n_draws, \*shape) or (n_chains, n_draws, \*shape)
        Posterior draws; finite.
    prob : float, default=0.9
        Probability mass inside the interval, in (0, 1).
    sample_ndim : {1, 2}, default=1
        Number of leading sample axes: 1 for ``(draw,)`` (variational draws), 2 for ``(chain, draw)``
        (MCMC, or an ArviZ ``posterior`` variable); the chains are pooled.

    Returns
    -------
    lower, upper : ndarray of shape ``shape``

    Examples
    --------
    >>> import numpy as np
    >>> lower, upper = credible_interval(np.arange(101.0)[:, None], prob=0.9)
    >>> lower, upper
    (array([5.]), array([95.]))
    """
    flat, _ = _check_draws(draws, sample_ndim)
    prob = _check_prob(prob)
    lower, upper = np.quantile(flat, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
    return lower, upper


def interval_excludes_zero(draws, prob: float = 0.9, *, sample_ndim: int = 1) -> np.ndarray:
    r"""Support estimate: the coordinates whose equal-tailed ``prob`` interval excludes zero.

    .. math::

        \hat s_j = \mathbb 1[\ell_j > 0 \;\text{or}\; u_j < 0]

    with :math:`[\ell_j, u_j]` from :func:`credible_interval`.

    Parameters
    ----------
    draws : array_like of shape (n_draws, \*shape) or (n_chains, n_draws, \*shape)
    prob : float, default=0.9
    sample_ndim : {1, 2}, default=1

    Returns
    -------
    ndarray of bool, shape ``shape``

    Examples
    --------
    >>> import numpy as np
    >>> draws = np.stack([np.linspace(1.0, 2.0, 50), np.linspace(-1.0, 1.0, 50)], axis=1)
    >>> interval_excludes_zero(draws)
    array([ True, False])
    """
    lower, upper = credible_interval(draws, prob, sample_ndim=sample_ndim)
    return (lower > 0) | (upper < 0)


def interval_coverage(draws, truth, prob: float = 0.9, *, sample_ndim: int = 1, mask=None) -> float:
    r"""Fraction of true values that lie inside their equal-tailed ``prob`` posterior interval.

    .. math::

        \mathrm{coverage} = \frac{1}{|M|} \sum_{j \in M} \mathbb 1[\ell_j \le w^\star_j \le u_j],

    over the coordinates :math:`M` selected by ``mask`` (all of them by default). For a calibrated
    posterior the expected coverage is ``prob``.

    Parameters
    ----------
    draws : array_like of shape (n_draws, \*shape) or (n_chains, n_draws, \*shape)
    truth : array_like of shape ``shape``
        The true values :math:`w^\star`.
    prob : float, default=0.9
    sample_ndim : {1, 2}, default=1
    mask : array_like of bool, shape ``shape``, optional
        Coordinates to count (e.g. the true support); at least one must be selected.

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    >>> import numpy as np
    >>> draws = np.linspace(-1.0, 1.0, 101)[:, None] + np.array([0.0, 5.0])
    >>> interval_coverage(draws, np.array([0.5, 0.0]))
    0.5
    """
    lower, upper = credible_interval(draws, prob, sample_ndim=sample_ndim)
    truth = np.asarray(truth)
    if truth.dtype.kind not in "fiu":
        raise TypeError(f"truth must hold real numbers, got dtype {truth.dtype}")
    if truth.shape != lower.shape:
        raise ValueError(f"truth must have the shape of one draw, {lower.shape}, got {truth.shape}")
    if not np.all(np.isfinite(truth)):
        raise ValueError("truth contains NaN or infinite values; all entries must be finite")
    inside = (lower <= truth) & (truth <= upper)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != lower.shape:
            raise ValueError(f"mask must be a boolean array of shape {lower.shape}, got {mask.dtype} {mask.shape}")
        if not mask.any():
            raise ValueError("mask selects no coordinate: the coverage is undefined")
        inside = inside[mask]
    return float(np.mean(inside))
