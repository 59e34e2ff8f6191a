"""Posterior inclusion probabilities and horseshoe shrinkage factors.

Three routes to "how likely is this weight to matter":

* from posterior draws, :func:`inclusion_probabilities`: the fraction of draws with :math:`|w| > t`;
* from a Gaussian marginal :math:`\\mathcal N(m, s^2)` (a mean-field posterior),
  :func:`gaussian_inclusion_probabilities`: the same probability in closed form;
* from a Bayesian layer, :func:`layer_inclusion_probabilities`: its ``pruning_scores()["inclusion_prob"]``
  when its prior defines one (spike-and-slab), else the Gaussian form on its ``"mean"`` / ``"std"`` scores.

The shrinkage factor :math:`\\kappa \\in (0, 1)` of a scale-mixture prior says how much of the data's
evidence for a coefficient the prior cancels (0: none, the coefficient is a signal; 1: all, it is noise):
:func:`regression_shrinkage_factor` computes it for a linear model and :func:`shrinkage_summary`
summarises its draws.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.special import ndtr

from probsparse._validation import check_finite_real

from .intervals import _check_draws, _check_prob

__all__ = [
    "gaussian_inclusion_probabilities",
    "inclusion_probabilities",
    "layer_inclusion_probabilities",
    "regression_shrinkage_factor",
    "shrinkage_summary",
]


def _check_threshold(threshold) -> float:
    threshold = check_finite_real(threshold, "threshold")
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    return threshold


def _real_array(value, name: str) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values; all entries must be finite")
    return array


def inclusion_probabilities(draws, threshold: float = 0.0, *, sample_ndim: int = 1) -> np.ndarray:
    r"""Posterior probability that each coordinate exceeds ``threshold`` in magnitude, from draws.

    .. math::

        \hat\pi_j = \frac1S \sum_{s=1}^S \mathbb 1\big[|w_j^{(s)}| > t\big].

    With ``threshold=0`` this is the fraction of draws in which the coordinate is not exactly zero (for a
    sampled spike-and-slab). For continuous shrinkage priors pick :math:`t` as the smallest effect that
    matters in the problem's units.

    Parameters
    ----------
    draws : array_like of shape (n_draws, \*shape) or (n_chains, n_draws, \*shape)
        Posterior draws; finite.
    threshold : float, default=0.0
        :math:`t \ge 0`.
    sample_ndim : {1, 2}, default=1
        Leading sample axes: 1 for ``(draw,)``, 2 for ``(chain, draw)`` (chains pooled).

    Returns
    -------
    ndarray of shape ``shape``, values in [0, 1]

    Examples
    --------
    >>> import numpy as np
    >>> inclusion_probabilities(np.array([[0.0, 2.0], [0.5, -3.0], [-1.5, 0.1], [2.0, 4.0]]), threshold=1.0)
    array([0.5 , 0.75])
    """
    flat, _ = _check_draws(draws, sample_ndim)
    threshold = _check_threshold(threshold)
    return np.mean(np.abs(flat) > threshold, axis=0)


def gaussian_inclusion_probabilities(mean, std, threshold: float) -> np.ndarray:
    r"""Probability that :math:`|w| > t` under a Gaussian marginal :math:`w \sim \mathcal N(m, s^2)`.

    .. math::

        P(|w| > t) = \Phi\!\Big(\frac{m - t}{s}\Big) + \Phi\!\Big(\frac{-m - t}{s}\Big),

    with :math:`\Phi` the standard normal CDF; where :math:`s = 0` it is :math:`\mathbb 1[|m| > t]`.

    Parameters
    ----------
    mean : array_like
        Posterior means :math:`m`; finite.
    std : array_like, broadcastable with ``mean``
        Posterior standard deviations :math:`s \ge 0`; finite.
    threshold : float
        :math:`t \ge 0`.

    Returns
    -------
    ndarray of the broadcast shape, values in [0, 1]

    Examples
    --------
    >>> import numpy as np
    >>> gaussian_inclusion_probabilities(np.array([0.0, 3.0]), np.array([1.0, 1.0]), 1.0).round(4)
    array([0.3173, 0.9773])
    """
    mean = _real_array(mean, "mean")
    std = _real_array(std, "std")
    threshold = _check_threshold(threshold)
    if np.any(std < 0):
        raise ValueError(f"std must be >= 0, got a minimum of {std.min()}")
    try:
        mean, std = np.broadcast_arrays(mean, std)
    except ValueError:
        raise ValueError(f"mean and std must broadcast together, got shapes {mean.shape} and {std.shape}") from None
    safe = np.where(std > 0, std, 1.0)
    tail = ndtr((mean - threshold) / safe) + ndtr((-mean - threshold) / safe)
    return np.where(std > 0, np.clip(tail, 0.0, 1.0), (np.abs(mean) > threshold).astype(np.float64))


def layer_inclusion_probabilities(layer, threshold: float | None = None) -> np.ndarray:
    r"""Posterior inclusion probabilities of a Bayesian layer's weights.

    With ``threshold=None`` the layer's own ``pruning_scores()["inclusion_prob"]`` (spike-and-slab priors
    define it) is returned. With a ``threshold`` :math:`t`, the Gaussian marginal of each weight
    (``"mean"`` and ``"std"`` scores) gives :math:`P(|w| > t)` by :func:`gaussian_inclusion_probabilities`.

    Parameters
    ----------
    layer : Bayesian layer or mapping
        An object with a ``pruning_scores()`` method (the probsparse layer protocol), or the dict it
        returns (str -> tensor or ndarray shaped like the weight).
    threshold : float, optional
        :math:`t \ge 0`; required when the layer has no ``"inclusion_prob"`` score.

    Returns
    -------
    ndarray of the weight's shape, values in [0, 1]

    Raises
    ------
    ValueError
        When ``threshold`` is None and the layer defines no ``"inclusion_prob"``, or a needed score is
        missing.

    Examples
    --------
    >>> import numpy as np
    >>> layer_inclusion_probabilities({"inclusion_prob": np.array([[0.2, 0.9]])})
    array([[0.2, 0.9]])
    >>> scores = {"mean": np.array([0.0, 3.0]), "std": np.array([1.0, 1.0])}
    >>> layer_inclusion_probabilities(scores, threshold=1.0).round(4)
    array([0.3173, 0.9773])
    """
    if isinstance(layer, Mapping):
        scores = layer
    elif callable(getattr(layer, "pruning_scores", None)):
        scores = layer.pruning_scores()
        if not isinstance(scores, Mapping):
            raise TypeError(f"layer.pruning_scores() must return a dict, got {type(scores).__name__}")
    else:
        raise TypeError(f"layer must have a pruning_scores() method or be a dict of scores, got {type(layer).__name__}")
    if threshold is None:
        if "inclusion_prob" not in scores:
            raise ValueError(
                f"the layer's prior defines no 'inclusion_prob' score (scores: {sorted(scores)}); pass a "
                "threshold to use P(|w| > threshold) under the Gaussian marginal of each weight"
            )
        probs = _real_array(scores["inclusion_prob"], "pruning_scores()['inclusion_prob']")
        if probs.size and (probs.min() < 0 or probs.max() > 1):
            raise ValueError("pruning_scores()['inclusion_prob'] must lie in [0, 1]")
        return probs
    missing = [key for key in ("mean", "std") if key not in scores]
    if missing:
        raise ValueError(f"pruning_scores() lacks {missing}, needed for the Gaussian inclusion probability")
    return gaussian_inclusion_probabilities(scores["mean"], scores["std"], threshold)


def regression_shrinkage_factor(X, noise_scale, weight_scale) -> np.ndarray:
    r"""Shrinkage factor of each coefficient of a linear model with a Gaussian scale-mixture prior.

    For :math:`y = X w + \varepsilon`, :math:`\varepsilon \sim \mathcal N(0, \sigma^2 I)` and
    :math:`w_j \mid s_j \sim \mathcal N(0, s_j^2)` (horseshoe: :math:`s_j = \tau\lambda_j`; regularised
    horseshoe: :math:`s_j = \tau\tilde\lambda_j`),

    .. math::

        \kappa_j = \frac{1}{1 + \sigma^{-2}\, \|x_j\|^2\, s_j^2}.

    For orthogonal columns the conditional posterior mean is exactly
    :math:`\mathbb E[w_j \mid s, \sigma, y] = (1 - \kappa_j)\, \hat w_j^{\mathrm{LS}}`, so
    :math:`\kappa_j \to 0` means no shrinkage and :math:`\kappa_j \to 1` total shrinkage. Computed per draw
    of :math:`(\sigma, s)`.

    Parameters
    ----------
    X : array_like of shape (n, d)
        Design matrix.
    noise_scale : float or array_like of shape (n_draws,)
        Noise standard deviation :math:`\sigma > 0` (one value, or one per draw).
    weight_scale : array_like of shape (d,) or (n_draws, d)
        Prior scales :math:`s_j \ge 0` (one vector, or one per draw).

    Returns
    -------
    ndarray of shape (d,) or (n_draws, d)

    References
    ----------
    Piironen and Vehtari, "Sparsity information and regularization in the horseshoe and other shrinkage
    priors", Electronic Journal of Statistics 11(2), 2017, eq. (2.4): their :math:`n s_j^2` (columns of
    variance :math:`s_j^2`) is our :math:`\|x_j\|^2`, so the two agree for centred columns.

    Examples
    --------
    >>> import numpy as np
    >>> regression_shrinkage_factor(np.eye(2), 1.0, np.array([0.0, 3.0]))
    array([1. , 0.1])
    """
    X = _real_array(X, "X")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n, d), got shape {X.shape}")
    sigma = _real_array(noise_scale, "noise_scale")
    scale = _real_array(weight_scale, "weight_scale")
    if np.any(sigma <= 0):
        raise ValueError(f"noise_scale must be > 0, got a minimum of {sigma.min()}")
    if np.any(scale < 0):
        raise ValueError(f"weight_scale must be >= 0, got a minimum of {scale.min()}")
    d = X.shape[1]
    if scale.ndim not in (1, 2) or scale.shape[-1] != d:
        raise ValueError(f"weight_scale must have shape ({d},) or (n_draws, {d}), got {scale.shape}")
    if sigma.ndim == 1 and scale.ndim == 2 and sigma.shape[0] == scale.shape[0]:
        sigma = sigma[:, np.newaxis]
    elif sigma.ndim != 0:
        raise ValueError(
            f"noise_scale must be a scalar, or of shape (n_draws,) = ({scale.shape[0] if scale.ndim == 2 else '?'},) "
            f"with a 2-D weight_scale; got shape {sigma.shape} with weight_scale of shape {scale.shape}"
        )
    col_norm2 = np.einsum("ij,ij->j", X, X)
    return 1.0 / (1.0 + col_norm2 * scale**2 / sigma**2)


def shrinkage_summary(kappa_draws, prob: float = 0.9, *, sample_ndim: int = 1) -> dict[str, np.ndarray]:
    r"""Posterior summary of shrinkage factors :math:`\kappa_j \in [0, 1]` from their draws.

    Parameters
    ----------
    kappa_draws : array_like of shape (n_draws, \*shape) or (n_chains, n_draws, \*shape)
        Draws of :math:`\kappa`, e.g. the ``"<name>_kappa"`` site of a horseshoe prior, or
        :func:`regression_shrinkage_factor` of draws of the scales.
    prob : float, default=0.9
        Mass of the equal-tailed interval.
    sample_ndim : {1, 2}, default=1

    Returns
    -------
    dict of {str : ndarray of shape ``shape``}
        ``"mean"``, ``"median"``, ``"lower"``, ``"upper"`` (the interval), and ``"prob_signal"``
        :math:`= P(\kappa_j < 1/2)`, the posterior probability that the coefficient is shrunk by less than
        half (Carvalho, Polson and Scott 2010 read :math:`1 - \kappa_j` as the weight on the signal).

    Examples
    --------
    >>> import numpy as np
    >>> summary = shrinkage_summary(np.array([[0.1, 0.9], [0.2, 0.95], [0.3, 0.6]]))
    >>> summary["prob_signal"]
    array([1., 0.])
    """
    flat, _ = _check_draws(kappa_draws, sample_ndim, "kappa_draws")
    prob = _check_prob(prob)
    if flat.size and (flat.min() < 0 or flat.max() > 1):
        raise ValueError(f"kappa_draws must lie in [0, 1], got values in [{flat.min():.3g}, {flat.max():.3g}]")
    lower, median, upper = np.quantile(flat, [(1 - prob) / 2, 0.5, (1 + prob) / 2], axis=0)
    return {
        "mean": flat.mean(axis=0),
        "median": median,
        "lower": lower,
        "upper": upper,
        "prob_signal": np.mean(flat < 0.5, axis=0),
    }
