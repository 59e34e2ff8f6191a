"""Export a fitted Bayesian network as a plain, portable one.

- :func:`to_deterministic` / :func:`deterministic_state`: replace Bayesian layers by ``torch.nn`` layers
  holding the posterior means.
- :func:`save_network` / :func:`load_network`: a directory with ``weights.safetensors`` and a JSON
  ``manifest.json`` (format, versions, sha256, tensor names/shapes/dtypes, metadata). Loading never
  unpickles.
"""

from probsparse.export.deterministic import deterministic_state, to_deterministic
from probsparse.export.io import load_network, save_network

__all__ = ["deterministic_state", "load_network", "save_network", "to_deterministic"]
