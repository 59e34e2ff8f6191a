"""Predictive quality of a classifier: negative log likelihood, accuracy and calibration.

Every function takes the *predictive* class probabilities ``probs`` of shape ``(n, n_classes)`` (rows sum
to one) and the integer labels of shape ``(n,)``. For a Bayesian network the predictive is the average of
the per-draw class probabilities (Bayesian model average); :func:`predictive_probabilities` forms it from
per-draw logits. Binary classifiers pass two columns, ``[1 - p, p]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probsparse._validation import check_positive_int

__all__ = [
    "ReliabilityDiagram",
    "accuracy",
    "expected_calibration_error",
    "predictive_nll",
    "predictive_probabilities",
    "reliability_diagram",
]


def _as_numpy(value, name: str) -> np.ndarray:
    """``value`` as an ndarray; torch tensors are detached and moved to the CPU first."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype == object:
        raise TypeError(f"{name} must be a numeric array, got an object array")
    return array


def _check_probs_labels(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``probs`` (n, C) floating and ``labels`` (n,) int64 in ``[0, C)``."""
    probs = _as_numpy(probs, "probs")
    if probs.dtype.kind != "f":
        raise TypeError(f"probs must hold floating-point probabilities, got dtype {probs.dtype}")
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"probs must have shape (n, n_classes) with n_classes >= 2, got shape {probs.shape}")
    if probs.shape[0] == 0:
        raise ValueError("probs is empty: at least one prediction is needed")
    if not np.all(np.isfinite(probs)):
        raise ValueError("probs contains NaN or infinite values; all entries must be finite")
    if probs.min() < 0 or probs.max() > 1:
        raise ValueError(f"probs must lie in [0, 1], got values in [{probs.min():.3g}, {probs.max():.3g}]")
    # A float32 softmax sums to one within a few ulps per class; anything further off is not a distribution.
    tol = max(1e-6, 100 * probs.shape[1] * float(np.finfo(probs.dtype).eps))
    row_sums = probs.sum(axis=1, dtype=np.float64)
    worst = float(np.max(np.abs(row_sums - 1.0)))
    if worst > tol:
        raise ValueError(f"each row of probs must sum to 1; the worst row sums to 1 {worst:+.3g} (tolerance {tol:.1g})")

    labels = _as_numpy(labels, "labels")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must hold integer class indices, got dtype {labels.dtype}")
    if labels.shape != probs.shape[:1]:
        raise ValueError(f"labels must have shape ({probs.shape[0]},) to match probs, got shape {labels.shape}")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(
            f"labels must lie in [0, {probs.shape[1]}) (the number of classes), "
            f"got values in [{labels.min()}, {labels.max()}]"
        )
    return probs, labels.astype(np.int64, copy=False)


def predictive_probabilities(logits) -> np.ndarray:
    r"""Bayesian model average of class probabilities from per-draw logits.

    .. math::

        \bar p_{ic} = \frac1S \sum_{s=1}^S \operatorname{softmax}(\ell^{(s)}_{i})_c,

    computed in log space (log-sum-exp) so that large logits do not overflow.

    Parameters
    ----------
    logits : array_like of shape (n_draws, n, n_classes)
        Unnormalised log probabilities of each draw of the network (or model); finite.

    Returns
    -------
    ndarray of shape (n, n_classes), float64
        Predictive probabilities; each row sums to one.

    Examples
    --------
    >>> import numpy as np
    >>> predictive_probabilities(np.array([[[0.0, 0.0]], [[0.0, np.log(3.0)]]])).round(3)
    array([[0.375, 0.625]])
    """
    logits = _as_numpy(logits, "logits")
    if logits.dtype.kind not in "fiu":
        raise TypeError(f"logits must hold real numbers, got dtype {logits.dtype}")
    if logits.ndim != 3 or logits.shape[0] == 0 or logits.shape[1] == 0 or logits.shape[2] < 2:
        raise ValueError(
            f"logits must have shape (n_draws, n, n_classes) with n_draws, n >= 1 and n_classes >= 2, "
            f"got shape {logits.shape}"
        )
    logits = logits.astype(np.float64)
    if not np.all(np.isfinite(logits)):
        raise ValueError("logits contains NaN or infinite values; all entries must be finite")
    shifted = logits - logits.max(axis=2, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=2, keepdims=True))
    top = log_p.max(axis=0)
    log_mean = top + np.log(np.exp(log_p - top).mean(axis=0))
    probs = np.exp(log_mean)
    return probs / probs.sum(axis=1, keepdims=True)


def predictive_nll(probs, labels) -> float:
    r"""Mean negative log predictive probability of the true labels, in nats.

    .. math::

        \mathrm{NLL} = -\frac1n \sum_{i=1}^n \log \bar p_{i, y_i}.

    A true class given probability zero makes the NLL infinite; no clipping is applied.

    Parameters
    ----------
    probs : array_like of shape (n, n_classes)
        Predictive class probabilities, rows summing to one.
    labels : array_like of int, shape (n,)
        True classes in ``[0, n_classes)``.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> round(predictive_nll(np.array([[0.5, 0.5], [0.1, 0.9]]), np.array([0, 1])), 4)
    0.3993
    """
    probs, labels = _check_probs_labels(probs, labels)
    p_true = probs[np.arange(labels.shape[0]), labels].astype(np.float64)
    with np.errstate(divide="ignore"):
        return float(-np.mean(np.log(p_true)))


def accuracy(probs, labels) -> float:
    r"""Fraction of predictions whose most probable class is the true one.

    .. math::

        \mathrm{acc} = \frac1n \sum_{i=1}^n \mathbb 1\big[\arg\max_c \bar p_{ic} = y_i\big]

    (ties go to the lowest class index, as ``numpy.argmax`` does).

    Parameters
    ----------
    probs : array_like of shape (n, n_classes)
    labels : array_like of int, shape (n,)

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    >>> import numpy as np
    >>> accuracy(np.array([[0.8, 0.2], [0.6, 0.4]]), np.array([0, 1]))
    0.5
    """
    probs, labels = _check_probs_labels(probs, labels)
    return float(np.mean(probs.argmax(axis=1) == labels))


@dataclass(frozen=True)
class ReliabilityDiagram:
    r"""Per-bin confidence and accuracy of a classifier (the data of a reliability diagram).

    Attributes
    ----------
    bin_edges : ndarray of shape (n_bins + 1,)
        Equal-width edges ``0, 1/B, ..., 1``; bin ``b`` is the interval ``(edges[b], edges[b + 1]]`` (the
        first bin also holds confidence 0).
    counts : ndarray of int, shape (n_bins,)
        Predictions per bin.
    confidence : ndarray of shape (n_bins,)
        Mean top-class probability in each bin (NaN for an empty bin).
    accuracy : ndarray of shape (n_bins,)
        Fraction of correct top-class predictions in each bin (NaN for an empty bin).
    ece : float
        Expected calibration error, :math:`\sum_b \frac{|B_b|}{n} |\mathrm{acc}_b - \mathrm{conf}_b|`.
    """

    bin_edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    ece: float


def reliability_diagram(probs, labels, n_bins: int = 15) -> ReliabilityDiagram:
    r"""Bin predictions by confidence into equal-width bins; per-bin confidence, accuracy and the ECE.

    The confidence of prediction :math:`i` is its top-class probability
    :math:`c_i = \max_k \bar p_{ik}` and it is correct when :math:`\arg\max_k \bar p_{ik} = y_i`. With
    ``B = n_bins`` equal-width bins :math:`B_b = \{i : b/B < c_i \le (b+1)/B\}` (bin 0 also takes
    :math:`c_i = 0`):

    .. math::

        \mathrm{acc}_b = \frac{1}{|B_b|}\sum_{i \in B_b} \mathbb 1[\hat y_i = y_i], \qquad
        \mathrm{conf}_b = \frac{1}{|B_b|}\sum_{i \in B_b} c_i, \qquad
        \mathrm{ECE} = \sum_{b} \frac{|B_b|}{n}\,\big|\mathrm{acc}_b - \mathrm{conf}_b\big|.

    Parameters
    ----------
    probs : array_like of shape (n, n_classes)
        Predictive class probabilities, rows summing to one.
    labels : array_like of int, shape (n,)
    n_bins : int, default=15
        Number of equal-width confidence bins on [0, 1].

    Returns
    -------
    ReliabilityDiagram

    References
    ----------
    Guo, Pleiss, Sun and Weinberger, "On calibration of modern neural networks", ICML 2017, section 2: their
    :math:`M` is ``n_bins``, :math:`B_m` our :math:`B_b`, :math:`\hat p_i` our :math:`c_i`. Naeini, Cooper
    and Hauskrecht, AAAI 2015, introduced the binned ECE.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[0.9, 0.1], [0.75, 0.25], [0.3, 0.7], [0.45, 0.55]])
    >>> diagram = reliability_diagram(probs, np.array([0, 1, 1, 1]), n_bins=5)
    >>> diagram.counts
    array([0, 0, 1, 2, 1])
    >>> round(diagram.ece, 3)
    0.25
    """
    n_bins = check_positive_int(n_bins, "n_bins")
    probs, labels = _check_probs_labels(probs, labels)
    confidence = probs.max(axis=1).astype(np.float64)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # searchsorted(side="left") returns b + 1 for edges[b] < c <= edges[b + 1]; c == 0 would give -1.
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        bin_conf = np.where(counts > 0, conf_sum / counts, np.nan)
        bin_acc = np.where(counts > 0, acc_sum / counts, np.nan)
    ece = float(np.sum(np.abs(acc_sum - conf_sum)) / confidence.shape[0])
    return ReliabilityDiagram(bin_edges=edges, counts=counts, confidence=bin_conf, accuracy=bin_acc, ece=ece)


def expected_calibration_error(probs, labels, n_bins: int = 15) -> float:
    r"""Expected calibration error of the top-class confidence over ``n_bins`` equal-width bins.

    .. math::

        \mathrm{ECE} = \sum_{b=0}^{B-1} \frac{|B_b|}{n}\,\big|\mathrm{acc}_b - \mathrm{conf}_b\big|,

    with the bins, accuracies and confidences of :func:`reliability_diagram` (bin ``b`` holds the
    confidences in ``(b/B, (b+1)/B]``). A fraction in [0, 1]; multiply by 100 for percent.

    Parameters
    ----------
    probs : array_like of shape (n, n_classes)
    labels : array_like of int, shape (n,)
    n_bins : int, default=15

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    >>> import numpy as np
    >>> expected_calibration_error(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1]))
    0.0
    """
    return reliability_diagram(probs, labels, n_bins).ece
