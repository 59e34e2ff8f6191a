"""Posterior diagnostics: ArviZ conversion, recovery and predictive metrics, inclusion, intervals, plots.

``arviz`` and ``matplotlib`` are imported only when a function that needs them runs.
"""

from .arviz import (
    gaussian_posterior_to_inference_data,
    samples_to_inference_data,
    variational_draws_to_inference_data,
)
from .calibration import (
    ReliabilityDiagram,
    accuracy,
    expected_calibration_error,
    predictive_nll,
    predictive_probabilities,
    reliability_diagram,
)
from .inclusion import (
    gaussian_inclusion_probabilities,
    inclusion_probabilities,
    layer_inclusion_probabilities,
    regression_shrinkage_factor,
    shrinkage_summary,
)
from .intervals import credible_interval, interval_coverage, interval_excludes_zero
from .metrics import nmse_db, support_scores
from .plots import plot_reliability, plot_score_histogram, plot_shrinkage

__all__ = [
    "ReliabilityDiagram",
    "accuracy",
    "credible_interval",
    "expected_calibration_error",
    "gaussian_inclusion_probabilities",
    "gaussian_posterior_to_inference_data",
    "inclusion_probabilities",
    "interval_coverage",
    "interval_excludes_zero",
    "layer_inclusion_probabilities",
    "nmse_db",
    "plot_reliability",
    "plot_score_histogram",
    "plot_shrinkage",
    "predictive_nll",
    "predictive_probabilities",
    "regression_shrinkage_factor",
    "reliability_diagram",
    "samples_to_inference_data",
    "shrinkage_summary",
    "support_scores",
    "variational_draws_to_inference_data",
]
