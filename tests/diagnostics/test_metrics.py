import numpy as np
import pytest

from probsparse.diagnostics.metrics import nmse_db, support_scores


def test_nmse_db_matches_definition():
    w = np.array([1.0, -2.0, 0.0])
    w_hat = np.array([1.1, -2.0, 0.1])
    assert nmse_db(w_hat, w) == pytest.approx(10 * np.log10(0.02 / 5.0))
    assert nmse_db(w, w) == -np.inf
    assert nmse_db(1j * w + 0.1, 1j * w) == pytest.approx(10 * np.log10(0.03 / 5.0))


def test_nmse_db_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        nmse_db(np.ones(2), np.ones(3))
    with pytest.raises(ValueError, match="all zeros"):
        nmse_db(np.ones(2), np.zeros(2))


def test_support_scores_counts():
    est = np.array([1, 1, 0, 0, 1], dtype=bool)
    true = np.array([1, 0, 1, 0, 1], dtype=bool)
    s = support_scores(est, true)
    assert (s["true_positives"], s["false_positives"], s["false_negatives"]) == (2, 1, 1)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3)
    assert support_scores(np.zeros(3, bool), true[:3])["f1"] == 0.0
