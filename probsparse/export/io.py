"""Save and load exported networks as a directory of safetensors weights plus a JSON manifest.

Layout of a saved network ``path/``::

    path/
      weights.safetensors   # the tensors (safetensors: a JSON header + raw little-endian buffers)
      manifest.json         # format, versions, sha256 of weights.safetensors, names/shapes/dtypes, metadata

Loading never unpickles anything: the manifest is JSON and the weights go through the safetensors
parser, which only reads a header and raw buffers. The sha256 check catches a truncated, corrupted or
swapped weights file before it is parsed; it is an integrity check, not a signature (whoever can write
the weights can also rewrite the manifest).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _safetensors_load
from safetensors.torch import save_file as _safetensors_save_file

from probsparse._version import __version__

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "MANIFEST_FILE", "WEIGHTS_FILE", "load_network", "save_network"]

FORMAT_NAME = "probsparse-network"
FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "manifest.json"

# safetensors keeps its own header under this key; a tensor of that name would be ambiguous.
_RESERVED_NAMES = frozenset({"__metadata__"})
# Top-level manifest entries written by every save; richer savers add their own sections beside them.
_MANIFEST_KEYS = frozenset({"format", "format_version", "probsparse_version", "sha256", "tensors", "metadata"})


def save_network(
    state: Mapping[str, torch.Tensor], path: str | os.PathLike, *, metadata: dict[str, Any] | None = None
) -> Path:
    """Write a network's tensors and a manifest to the directory ``path``.

    Parameters
    ----------
    state : mapping of str to torch.Tensor
        Tensor name (e.g. ``"fc1.weight"``) to dense tensor of any shape and dtype. Typically
        :func:`probsparse.export.deterministic_state` or ``module.state_dict()``. Tensors are copied to
        contiguous CPU memory before writing, so views, transposes and tensors sharing storage are fine.
    path : str or path-like
        Directory to write; created if missing. Existing ``weights.safetensors`` / ``manifest.json`` in it
        are replaced; other files are left alone.
    metadata : dict, optional
        JSON-serialisable free-form information (training settings, pruning report, ...), stored in the
        manifest under ``"metadata"``.

    Returns
    -------
    pathlib.Path
        The directory written.

    Notes
    -----
    The manifest holds ``{"format": "probsparse-network", "format_version": 1, "probsparse_version",
    "sha256", "tensors": {name: {"shape": [...], "dtype": "float32"}}, "metadata": {...}}``, tensors in the
    order of ``state``. Both files are first written under temporary names and then renamed, the manifest
    last, so an interrupted save leaves either the old pair or a sha256 mismatch, never a silent mix.

    Examples
    --------
    >>> import tempfile, torch
    >>> d = tempfile.mkdtemp()
    >>> _ = save_network({"fc.weight": torch.ones(2, 3)}, d, metadata={"note": "demo"})
    >>> state, manifest = load_network(d)
    >>> state["fc.weight"].shape, manifest["metadata"]
    (torch.Size([2, 3]), {'note': 'demo'})
    """
    return _write(state, path, metadata=metadata, sections={})


def _json_ready(value: Any, name: str) -> Any:
    """A JSON round-trip copy of ``value``; TypeError naming ``name`` if it is not plain finite JSON."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be JSON-serialisable (finite numbers, str keys): {exc}") from exc


def _write(
    state: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    metadata: dict[str, Any] | None,
    sections: dict[str, Any],
) -> Path:
    """Write weights + manifest; ``sections`` become extra top-level manifest entries (e.g. an architecture)."""
    tensors = _checked_state(state)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    metadata_json = _json_ready(metadata, "metadata")
    clash = sorted(set(sections) & _MANIFEST_KEYS)
    if clash:
        raise ValueError(f"manifest sections {clash} are reserved by the format")
    sections_json = {key: _json_ready(value, f"manifest section {key!r}") for key, value in sections.items()}

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"path must be a directory (a saved network is a folder), got file {path}")
    path.mkdir(parents=True, exist_ok=True)
    weights_path = path / WEIGHTS_FILE
    manifest_path = path / MANIFEST_FILE
    weights_tmp = path / (WEIGHTS_FILE + ".tmp")
    manifest_tmp = path / (MANIFEST_FILE + ".tmp")

    try:
        _safetensors_save_file(tensors, weights_tmp)
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "probsparse_version": __version__,
            "sha256": _sha256_of_file(weights_tmp),
            "tensors": {name: _describe(t) for name, t in tensors.items()},
            "metadata": metadata_json,
            **sections_json,
        }
        manifest_tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.replace(weights_tmp, weights_path)
        os.replace(manifest_tmp, manifest_path)
    finally:
        weights_tmp.unlink(missing_ok=True)
        manifest_tmp.unlink(missing_ok=True)
    return path


def load_network(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a network written by :func:`save_network`, checking it against its manifest.

    Parameters
    ----------
    path : str or path-like
        The directory given to :func:`save_network`.

    Returns
    -------
    state : dict of str to torch.Tensor
        CPU tensors, in manifest order; ready for ``module.load_state_dict(state)``.
    manifest : dict
        The parsed ``manifest.json``.

    Raises
    ------
    FileNotFoundError
        ``manifest.json`` or ``weights.safetensors`` is missing.
    ValueError
        The manifest is not JSON or not a ``probsparse-network`` manifest of a supported version; the sha256
        of ``weights.safetensors`` differs from the manifest's; the file is not valid safetensors; or its
        tensor names, shapes or dtypes differ from the manifest's.

    Notes
    -----
    The weights file is read into memory once and the same bytes are hashed and parsed, so the tensors
    returned are exactly the bytes that passed the sha256 check.
    """
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    weights_path = path / WEIGHTS_FILE
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no {MANIFEST_FILE} in {path}: not a saved probsparse network")
    manifest = _read_manifest(manifest_path)

    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path} is missing (listed by {manifest_path})")
    data = weights_path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest["sha256"].lower():
        raise ValueError(
            f"sha256 mismatch for {weights_path}: manifest says {manifest['sha256']}, file has {digest}; "
            "the weights file is corrupted or does not belong to this manifest"
        )
    try:
        state = _safetensors_load(data)
    except SafetensorError as exc:
        raise ValueError(f"{weights_path} is not a valid safetensors file: {exc}") from exc

    expected = manifest["tensors"]
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    if missing or unexpected:
        raise ValueError(
            f"{weights_path} and {manifest_path} list different tensors: "
            f"missing from the weights {missing}, not in the manifest {unexpected}"
        )
    for name, spec in expected.items():
        found = _describe(state[name])
        if found != {"shape": spec.get("shape"), "dtype": spec.get("dtype")}:
            raise ValueError(
                f"tensor {name!r} in {weights_path} has shape {found['shape']} and dtype {found['dtype']}, "
                f"but {manifest_path} says shape {spec.get('shape')} and dtype {spec.get('dtype')}"
            )
    return {name: state[name] for name in expected}, manifest


def _checked_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Validate ``state`` and return independent contiguous CPU copies, in order."""
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping of names to tensors, got {type(state).__name__}")
    if len(state) == 0:
        raise ValueError("state has no tensors: nothing to save")
    tensors = {}
    for name, tensor in state.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"state keys must be non-empty strings, got {name!r}")
        if name in _RESERVED_NAMES:
            raise ValueError(f"tensor name {name!r} is reserved by the safetensors format")
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"state[{name!r}] must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.layout != torch.strided:
            raise ValueError(
                f"state[{name!r}] has layout {tensor.layout}; only dense tensors can be saved "
                "(store sparse layers as their index and value arrays)"
            )
        # A fresh contiguous copy: safetensors refuses non-contiguous tensors and tensors sharing storage
        # (views, tied weights), and the copy also decouples the file from later in-place edits.
        tensors[name] = tensor.detach().to("cpu").clone(memory_format=torch.contiguous_format)
    return tensors


def _describe(tensor: torch.Tensor) -> dict[str, Any]:
    """Manifest entry of a tensor: shape as a list of ints and dtype without the ``torch.`` prefix."""
    return {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch.")}


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_manifest(manifest_path: Path) -> dict[str, Any]:
    """Parse and validate the manifest's top-level structure; raise ValueError naming the file."""
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{manifest_path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ValueError(f"{manifest_path} must hold a JSON object, got {type(manifest).__name__}")
    fmt = manifest.get("format")
    if fmt != FORMAT_NAME:
        raise ValueError(f"{manifest_path} has format {fmt!r}, expected {FORMAT_NAME!r}")
    version = manifest.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"{manifest_path} has format_version {version!r}, expected an integer")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{manifest_path} has format_version {version}, newer than the {FORMAT_VERSION} this probsparse "
            f"({__version__}) reads; upgrade probsparse"
        )
    if version < 1:
        raise ValueError(f"{manifest_path} has format_version {version}; versions start at 1")
    sha = manifest.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64:
        raise ValueError(f"{manifest_path} has no valid sha256 entry (64 hex characters), got {sha!r}")
    tensors = manifest.get("tensors")
    if not isinstance(tensors, dict) or not all(isinstance(spec, dict) for spec in tensors.values()):
        raise ValueError(f"{manifest_path} must map 'tensors' to {{name: {{'shape', 'dtype'}}}}")
    if not isinstance(manifest.get("metadata", {}), dict):
        raise ValueError(f"{manifest_path} has a 'metadata' entry that is not an object")
    return manifest
