r"""The exported artefact: a shrunk network saved as safetensors weights plus a JSON manifest that rebuilds it.

:func:`save` writes, through the same writer as :func:`probsparse.export.save_network`, a directory with
``weights.safetensors`` and ``manifest.json``. Besides the format, library version, sha256 of the weights
and the tensor table, the manifest holds

* ``architecture``: ``{"kind": "sequential", "layers": [...]}``, one JSON object per layer giving its type
  and constructor arguments (e.g. ``{"type": "linear", "in_features": 784, "out_features": 212,
  "bias": true}``); tensors are stored under ``torch.nn.Sequential`` state-dict names (``"1.weight"``), so
  the network rebuilds with ``torch`` alone (see ``docs/exported_networks.md``);
* ``sparsity``: per weight-bearing layer, its weight shape, number of weights and of non-zeros;
* ``pruning`` and ``prior``: the rule and prior used (JSON, as given), and ``metadata``: anything else.

:func:`load` checks the sha256 and manifest, rebuilds the module from the architecture, checks the tensors
and the recorded sparsity against it, and only then returns the module. Nothing is unpickled.

Supported layer types: ``linear``, ``index_select`` (:class:`~probsparse.export.shrink.IndexSelect`),
``sparse_linear`` (:class:`~probsparse.export.sparse_linear.SparseLinear`: CSR ``values``, ``col_indices``,
``crow_indices``, optional ``bias``), ``conv2d``, ``max_pool2d``, ``avg_pool2d``, ``flatten``, the
elementwise activations of :data:`~probsparse.export.shrink.ELEMENTWISE`, ``softmax`` and ``log_softmax``.
A new layer type is one :func:`register_layer` call.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from probsparse.export.io import MANIFEST_FILE, _write, load_network
from probsparse.export.pruning import PruningReport, PruningRule
from probsparse.export.shrink import IndexSelect
from probsparse.export.sparse_linear import SparseLinear

__all__ = ["ARCHITECTURE_KIND", "ArtefactError", "layer_spec", "load", "register_layer", "save"]

ARCHITECTURE_KIND = "sequential"


class ArtefactError(ValueError):
    """A saved network's manifest does not describe its weights (or is not a saved module)."""


@dataclass(frozen=True)
class _LayerType:
    cls: type[nn.Module]
    to_spec: Callable[[nn.Module], dict[str, Any]]
    build: Callable[[dict[str, Any], dict[str, torch.Tensor]], nn.Module]
    # The layer's weight matrix as a dense tensor, for the sparsity table (None: a layer without weights).
    weight: Callable[[nn.Module], torch.Tensor] | None = None


_TYPES: dict[str, _LayerType] = {}


def register_layer(
    name: str,
    cls: type[nn.Module],
    to_spec: Callable[[nn.Module], dict[str, Any]],
    build: Callable[[dict[str, Any], dict[str, torch.Tensor]], nn.Module],
    *,
    weight: Callable[[nn.Module], torch.Tensor] | None = None,
) -> None:
    """Teach :func:`save` / :func:`load` a layer type.

    Parameters
    ----------
    name : str
        The ``"type"`` written to the manifest.
    cls : type
        The module class (matched exactly, not through subclasses).
    to_spec : callable
        ``module -> dict`` of JSON constructor arguments (without ``"type"``).
    build : callable
        ``(spec, tensors) -> module`` building an instance whose ``state_dict()`` has the names and shapes
        of ``tensors`` (the layer's tensors, keys without the layer prefix); values are loaded afterwards.
    weight : callable, optional
        ``module -> dense weight matrix``, whose zeros count as pruned weights in the sparsity table.
    """
    if name in _TYPES and _TYPES[name].cls is not cls:
        raise ValueError(f"layer type {name!r} is already registered for {_TYPES[name].cls.__name__}")
    _TYPES[name] = _LayerType(cls, to_spec, build, weight)


def _no_args(cls):
    return lambda module: {}, lambda spec, tensors: cls()


for _name, _cls in [
    ("relu", nn.ReLU),
    ("relu6", nn.ReLU6),
    ("tanh", nn.Tanh),
    ("sigmoid", nn.Sigmoid),
    ("silu", nn.SiLU),
    ("identity", nn.Identity),
]:
    register_layer(_name, _cls, *_no_args(_cls))
register_layer(
    "leaky_relu",
    nn.LeakyReLU,
    lambda m: {"negative_slope": m.negative_slope},
    lambda s, t: nn.LeakyReLU(float(s["negative_slope"])),
)
register_layer("elu", nn.ELU, lambda m: {"alpha": m.alpha}, lambda s, t: nn.ELU(float(s["alpha"])))
register_layer("gelu", nn.GELU, lambda m: {"approximate": m.approximate}, lambda s, t: nn.GELU(str(s["approximate"])))
register_layer(
    "softplus",
    nn.Softplus,
    lambda m: {"beta": m.beta, "threshold": m.threshold},
    lambda s, t: nn.Softplus(float(s["beta"]), float(s["threshold"])),
)
register_layer("softmax", nn.Softmax, lambda m: {"dim": m.dim}, lambda s, t: nn.Softmax(int(s["dim"])))
register_layer("log_softmax", nn.LogSoftmax, lambda m: {"dim": m.dim}, lambda s, t: nn.LogSoftmax(int(s["dim"])))
register_layer(
    "flatten",
    nn.Flatten,
    lambda m: {"start_dim": m.start_dim, "end_dim": m.end_dim},
    lambda s, t: nn.Flatten(int(s["start_dim"]), int(s["end_dim"])),
)
register_layer(
    "linear",
    nn.Linear,
    lambda m: {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None},
    lambda s, t: nn.Linear(
        int(s["in_features"]), int(s["out_features"]), bias=bool(s["bias"]), dtype=t["weight"].dtype
    ),
    weight=lambda m: m.weight.detach(),
)
register_layer(
    "index_select",
    IndexSelect,
    lambda m: {"in_features": m.in_features, "out_features": int(m.index.numel())},
    lambda s, t: IndexSelect(t["index"], int(s["in_features"])),
)


def _json_tuple(value):
    return list(value) if isinstance(value, tuple | list) else value


def _tuple(value):
    return tuple(int(v) for v in value) if isinstance(value, list) else value


register_layer(
    "conv2d",
    nn.Conv2d,
    lambda m: {
        "in_channels": m.in_channels,
        "out_channels": m.out_channels,
        "kernel_size": _json_tuple(m.kernel_size),
        "stride": _json_tuple(m.stride),
        "padding": _json_tuple(m.padding),
        "dilation": _json_tuple(m.dilation),
        "groups": m.groups,
        "bias": m.bias is not None,
        "padding_mode": m.padding_mode,
    },
    lambda s, t: nn.Conv2d(
        int(s["in_channels"]),
        int(s["out_channels"]),
        _tuple(s["kernel_size"]),
        stride=_tuple(s["stride"]),
        padding=_tuple(s["padding"]),
        dilation=_tuple(s["dilation"]),
        groups=int(s["groups"]),
        bias=bool(s["bias"]),
        padding_mode=str(s["padding_mode"]),
        dtype=t["weight"].dtype,
    ),
    weight=lambda m: m.weight.detach(),
)
register_layer(
    "max_pool2d",
    nn.MaxPool2d,
    lambda m: {
        "kernel_size": _json_tuple(m.kernel_size),
        "stride": _json_tuple(m.stride),
        "padding": _json_tuple(m.padding),
        "dilation": _json_tuple(m.dilation),
        "ceil_mode": m.ceil_mode,
    },
    lambda s, t: nn.MaxPool2d(
        _tuple(s["kernel_size"]),
        _tuple(s["stride"]),
        _tuple(s["padding"]),
        _tuple(s["dilation"]),
        ceil_mode=bool(s["ceil_mode"]),
    ),
)
register_layer(
    "avg_pool2d",
    nn.AvgPool2d,
    lambda m: {
        "kernel_size": _json_tuple(m.kernel_size),
        "stride": _json_tuple(m.stride),
        "padding": _json_tuple(m.padding),
        "ceil_mode": m.ceil_mode,
        "count_include_pad": m.count_include_pad,
        "divisor_override": m.divisor_override,
    },
    lambda s, t: nn.AvgPool2d(
        _tuple(s["kernel_size"]),
        _tuple(s["stride"]),
        _tuple(s["padding"]),
        ceil_mode=bool(s["ceil_mode"]),
        count_include_pad=bool(s["count_include_pad"]),
        divisor_override=s["divisor_override"],
    ),
)
register_layer(
    "sparse_linear",
    SparseLinear,
    lambda m: {"in_features": m.in_features, "out_features": m.out_features, "nnz": m.nnz, "bias": m.bias is not None},
    lambda s, t: SparseLinear(t["values"], t["col_indices"], t["crow_indices"], int(s["in_features"]), t.get("bias")),
    weight=lambda m: m.weight_dense(),
)


def _type_of(module: nn.Module) -> str | None:
    return next((name for name, entry in _TYPES.items() if type(module) is entry.cls), None)


def layer_spec(module: nn.Module) -> dict[str, Any]:
    """The manifest entry of one layer: ``{"type": ..., **constructor arguments}``."""
    name = _type_of(module)
    if name is None:
        raise TypeError(f"no manifest layer type for {type(module).__name__}; known: {sorted(_TYPES)}")
    return {"type": name, **_TYPES[name].to_spec(module)}


def _describe_value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, PruningRule):
        return {**value.to_dict(), "description": value.describe()}
    if isinstance(value, PruningReport):
        return value.to_dict()
    if isinstance(value, str | int | float | bool | dict | list):
        return value
    # Prior objects: their repr gives their settings (the layer protocol's contract).
    return {"class": type(value).__name__, "repr": repr(value)}


def save(
    module: nn.Module,
    path: str | os.PathLike,
    *,
    pruning: PruningRule | PruningReport | dict | str | None = None,
    prior: Any = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Save an exported ``torch.nn.Sequential`` as weights + a manifest from which :func:`load` rebuilds it.

    Parameters
    ----------
    module : torch.nn.Sequential
        Typically the output of :func:`probsparse.export.shrink`. Every layer must be of a registered type.
    path : str or path-like
        Directory to write (created if missing; an earlier save there is replaced).
    pruning : PruningRule, PruningReport, dict or str, optional
        The pruning rule used (stored under ``"pruning"``).
    prior : object, optional
        The prior used; stored as JSON if it is plain JSON, else as its class name and ``repr``.
    metadata : dict, optional
        Free-form JSON information.

    Returns
    -------
    pathlib.Path
        The directory written.

    Raises
    ------
    TypeError
        ``module`` is not a ``Sequential`` or holds layers of unknown types (all are listed).

    Examples
    --------
    >>> import tempfile, torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    >>> folder = save(net, tempfile.mkdtemp(), pruning="log_alpha < 3")
    >>> again = load(folder)
    >>> x = torch.randn(4, 3)
    >>> torch.equal(again(x), net(x))
    True
    """
    if not isinstance(module, nn.Sequential):
        raise TypeError(f"module must be a torch.nn.Sequential (e.g. from shrink()), got {type(module).__name__}")
    if len(module) == 0:
        raise ValueError("module is an empty Sequential: nothing to save")
    unknown = [f"{name} ({type(m).__name__})" for name, m in module.named_children() if _type_of(m) is None]
    if unknown:
        raise TypeError(
            f"cannot save layers of unknown type: {', '.join(unknown)}; known types: "
            f"{sorted(e.cls.__name__ for e in _TYPES.values())} (register others with register_layer)"
        )
    layers, sparsity = [], {}
    for name, child in module.named_children():
        layers.append(layer_spec(child))
        weight_of = _TYPES[_type_of(child)].weight
        if weight_of is not None:
            sparsity[name] = _sparsity_entry(weight_of(child))
    state = module.state_dict()
    sections = {
        "architecture": {"kind": ARCHITECTURE_KIND, "layers": layers},
        "sparsity": sparsity,
        "pruning": _describe_value(pruning),
        "prior": _describe_value(prior),
    }
    return _write(state, path, metadata=metadata, sections=sections)


def _sparsity_entry(weight: torch.Tensor) -> dict[str, Any]:
    n_nonzero = int(torch.count_nonzero(weight))
    return {
        "shape": list(weight.shape),
        "n_weights": weight.numel(),
        "n_nonzero": n_nonzero,
        "density": n_nonzero / weight.numel() if weight.numel() else 0.0,
    }


def load(path: str | os.PathLike, *, with_manifest: bool = False):
    """Rebuild a network written by :func:`save`, after checking weights and manifest against each other.

    Parameters
    ----------
    path : str or path-like
        The directory given to :func:`save`.
    with_manifest : bool, default False
        Also return the parsed manifest.

    Returns
    -------
    torch.nn.Sequential or (torch.nn.Sequential, dict)
        The network in eval mode (and the manifest).

    Raises
    ------
    FileNotFoundError
        The manifest or weights file is missing.
    ValueError
        Checksum mismatch, malformed manifest (see :func:`probsparse.export.load_network`), or an
        :class:`ArtefactError`: no architecture, unknown layer types (listed), tensors that do not fit the
        architecture, or a sparsity table that disagrees with the weights. Nothing is returned then.
    """
    state, manifest = load_network(path)
    manifest_path = Path(path) / MANIFEST_FILE
    arch = manifest.get("architecture")
    if not isinstance(arch, dict) or arch.get("kind") != ARCHITECTURE_KIND or not isinstance(arch.get("layers"), list):
        raise ArtefactError(
            f"{manifest_path} has no 'architecture' of kind {ARCHITECTURE_KIND!r} with a 'layers' list; it holds "
            "weights only (saved with save_network?): read it with probsparse.export.load_network"
        )
    specs = arch["layers"]
    bad = [i for i, spec in enumerate(specs) if not isinstance(spec, dict) or spec.get("type") not in _TYPES]
    if bad:
        listed = ", ".join(
            f"layer {i} ({specs[i].get('type') if isinstance(specs[i], dict) else specs[i]!r})" for i in bad
        )
        raise ArtefactError(f"{manifest_path} lists unknown layer types: {listed}; known: {sorted(_TYPES)}")
    if not specs:
        raise ArtefactError(f"{manifest_path} lists no layers")

    layers = []
    claimed: set[str] = set()
    for i, spec in enumerate(specs):
        prefix = f"{i}."
        own = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
        claimed.update(prefix + key for key in own)
        try:
            layer = _TYPES[spec["type"]].build(spec, own)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtefactError(f"{manifest_path}: layer {i} {spec} cannot be built from its tensors: {exc!r}") from exc
        expected = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
        found = {k: tuple(v.shape) for k, v in own.items()}
        if expected != found:
            raise ArtefactError(
                f"{manifest_path}: layer {i} {spec} needs tensors {expected} but the weights hold {found}"
            )
        if layer_spec(layer) != spec:
            raise ArtefactError(
                f"{manifest_path}: layer {i} is described as {spec} but its tensors give {layer_spec(layer)}"
            )
        layer.load_state_dict(own, strict=True)
        layers.append(layer)
    stray = sorted(set(state) - claimed)
    if stray:
        raise ArtefactError(f"{manifest_path}: tensors {stray} belong to no layer of the architecture")

    module = nn.Sequential(*layers).eval()
    recorded = manifest.get("sparsity")
    if not isinstance(recorded, dict):
        raise ArtefactError(f"{manifest_path} has no 'sparsity' table")
    actual = {
        name: _sparsity_entry(_TYPES[_type_of(child)].weight(child))
        for name, child in module.named_children()
        if _TYPES[_type_of(child)].weight is not None
    }
    if recorded != actual:
        raise ArtefactError(f"{manifest_path}: the 'sparsity' table {recorded} does not match the weights {actual}")
    return (module, manifest) if with_manifest else module
