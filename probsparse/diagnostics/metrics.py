"""Metrics of sparse recovery: NMSE and support precision / recall / F1."""

from __future__ import annotations

import numpy as np


def nmse_db(estimate, truth) -> float:
    r"""Normalised mean squared error in dB, :math:`10 \log_{10}(\|\hat w - w\|^2 / \|w\|^2)`.

    ``estimate`` and ``truth`` have the same shape (real or complex); ``truth`` must not be all zeros.
    """
    estimate = np.asarray(estimate)
    truth = np.asarray(truth)
    if estimate.shape != truth.shape:
        raise ValueError(
            f"estimate and truth must have the same shape, got {estimate.shape} and {truth.shape}"
        )
    ref = float(np.sum(np.abs(truth) ** 2))
    if ref == 0.0:
        raise ValueError("truth is all zeros: the NMSE is undefined")
    err = float(np.sum(np.abs(estimate - truth) ** 2))
    return 10.0 * np.log10(err / ref) if err > 0 else -np.inf


def support_scores(estimated, true) -> dict:
    """Precision, recall and F1 of an estimated support against the true one (boolean masks, same shape).

    An empty estimated support has precision 1 (it claims nothing false); an empty true support has
    recall 1. F1 is the harmonic mean (0 when both are 0).
    """
    estimated = np.asarray(estimated, dtype=bool)
    true = np.asarray(true, dtype=bool)
    if estimated.shape != true.shape:
        raise ValueError(
            f"estimated and true must have the same shape, got {estimated.shape} and {true.shape}"
        )
    tp = int(np.sum(estimated & true))
    precision = tp / int(estimated.sum()) if estimated.any() else 1.0
    recall = tp / int(true.sum()) if true.any() else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "true_positives": tp,
        "false_positives": int(np.sum(estimated & ~true)),
        "false_negatives": int(np.sum(~estimated & true)),
    }
