"""Export a fitted Bayesian network as a smaller, plain, portable one.

- :func:`prune` / :class:`PruningRule`: pruning decisions from the layers' ``pruning_scores()`` (log α, SNR,
  folded SNR, inclusion probability, credible interval; thresholds or budgets, global or per layer).
- :func:`shrink`: structured removal of neurons, conv channels and input pixels, returning a plain
  ``torch.nn.Sequential`` (dense or CSR ``SparseLinear`` layers, chosen by measured speed with
  :func:`measured_layer_factory`).
- :func:`save` / :func:`load`: safetensors weights + a JSON manifest (architecture, sparsity, prior, pruning rule,
  version, sha256); loading verifies and never unpickles. :func:`to_onnx` for ONNX Runtime.
- :func:`compression_report` / :func:`pruning_curve`: parameters, non-zeros, FLOPs, size, latency, accuracy.
- :func:`to_deterministic` / :func:`deterministic_state`: Bayesian layers → posterior-mean ``torch.nn`` layers;
  :func:`save_network` / :func:`load_network`: a state dict with a manifest.
"""

from probsparse.export.artefact import ArtefactError, load, register_layer, save
from probsparse.export.deterministic import deterministic_state, to_deterministic
from probsparse.export.io import load_network, save_network
from probsparse.export.onnx import OnnxExport, to_onnx
from probsparse.export.pruning import PruningError, PruningReport, PruningRule, masks_from_scores, prune, scores_of
from probsparse.export.report import CompressionReport, compression_report, measure_latency, pruning_curve
from probsparse.export.shrink import (
    IndexSelect,
    ShrinkError,
    UnsupportedLayerError,
    masked_network,
    measured_layer_factory,
    shrink,
    shrink_linear_chain,
)
from probsparse.export.sparse_linear import LayerChoice, SparseLinear, choose_layer, sparsify

__all__ = [
    "ArtefactError",
    "CompressionReport",
    "IndexSelect",
    "LayerChoice",
    "OnnxExport",
    "PruningError",
    "PruningReport",
    "PruningRule",
    "ShrinkError",
    "SparseLinear",
    "UnsupportedLayerError",
    "choose_layer",
    "compression_report",
    "deterministic_state",
    "load",
    "load_network",
    "masked_network",
    "masks_from_scores",
    "measure_latency",
    "measured_layer_factory",
    "prune",
    "pruning_curve",
    "register_layer",
    "save",
    "save_network",
    "scores_of",
    "shrink",
    "shrink_linear_chain",
    "sparsify",
    "to_deterministic",
    "to_onnx",
]
