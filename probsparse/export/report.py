r"""What export bought: size, work, speed and accuracy of the exported network against the dense original.

For a chain of linear and conv layers :math:`\ell = 1..L` with weights :math:`W_\ell` (:math:`|W_\ell|`
entries) applied at :math:`P_\ell` output positions (1 for a linear layer, :math:`H_\ell W_\ell` for a conv)
the report counts, per example,

.. math::

    \text{MAC}_\text{dense} = \sum_\ell P_\ell |W_\ell|, \qquad
    \text{MAC}_\text{shrunk} = \sum_\ell P'_\ell |W'_\ell|, \qquad
    \text{MAC}_\text{sparse} = \sum_\ell P'_\ell \operatorname{nnz}(W'_\ell),

(multiply-adds of the original dense network, of the shrunk network run densely, and of the shrunk network
run on its non-zeros only, as a CSR kernel does), and the compression ratio
:math:`\sum_\ell |W_\ell| / \sum_\ell \operatorname{nnz}(W'_\ell)` over weights (biases excluded, as in
the Sparse VD and Bayesian-compression papers). Latency is the median wall time of repeated forward
passes on one thread; accuracy is the fraction of argmax predictions equal to the labels (or any metric
given).
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from probsparse._validation import check_positive_int
from probsparse.export.deterministic import to_deterministic
from probsparse.export.io import save_network
from probsparse.export.shrink import IndexSelect

__all__ = [
    "CompressionReport",
    "LayerCount",
    "compression_report",
    "measure_latency",
    "pruning_curve",
    "weighted_layers",
]


@dataclass
class LayerCount:
    """Sizes of one linear or conv layer before and after export.

    Attributes
    ----------
    name : str
        Name of the layer in the exported network.
    shape_original, shape_exported : tuple of int
        Weight shape, (out, in) or (out, in, kh, kw), before and after structured shrink.
    n_nonzero : int
        Non-zero weights of the exported layer.
    macs_original, macs_exported, macs_sparse : int
        Multiply-adds per example: original dense, shrunk dense, shrunk non-zeros only.
    """

    name: str
    shape_original: tuple[int, int]
    shape_exported: tuple[int, int]
    n_nonzero: int
    macs_original: int
    macs_exported: int
    macs_sparse: int


@dataclass
class CompressionReport:
    """Parameters, non-zeros, work, size on disk, latency and accuracy of an export.

    Attributes
    ----------
    layers : list of LayerCount
    n_params_original, n_params_exported : int
        Floating-point parameters (weights and biases) of the dense original and of the exported network.
    n_weights_original, n_nonzero : int
        Weights of the original linear layers; non-zero weights of the exported ones.
    compression_ratio : float
        ``n_weights_original / n_nonzero``.
    macs_original, macs_exported, macs_sparse : int
        Multiply-adds per example (see the module docstring).
    input_features, input_features_kept : int
        Input features (input channels for a conv-first network) before and after the exported network's
        input selection.
    size_original_bytes, size_exported_bytes : int or None
        Bytes on disk (weights + manifest) of the saved original and of the exported artefact.
    latency_s : dict
        ``{batch_size: {"original": s, "exported": s, "ratio": original / exported}}``, median seconds.
    accuracy : dict
        ``{"original": ..., "pruned": ..., "exported": ...}`` for the networks evaluated (absent ones omitted).
    load_average : float or None
        1-minute load average when the latencies were measured (context for the timings).
    """

    layers: list[LayerCount]
    n_params_original: int
    n_params_exported: int
    n_weights_original: int
    n_nonzero: int
    compression_ratio: float
    macs_original: int
    macs_exported: int
    macs_sparse: int
    input_features: int
    input_features_kept: int
    size_original_bytes: int | None = None
    size_exported_bytes: int | None = None
    latency_s: dict[int, dict[str, float]] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    load_average: float | None = None

    @property
    def kept_weight_fraction(self) -> float:
        return self.n_nonzero / self.n_weights_original

    @property
    def hidden_widths(self) -> dict[str, list[int]]:
        """Hidden-layer widths, ``{"original": [...], "exported": [...]}``."""
        return {
            "original": [layer.shape_original[0] for layer in self.layers[:-1]],
            "exported": [layer.shape_exported[0] for layer in self.layers[:-1]],
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (batch sizes become string keys)."""
        out = asdict(self)
        out["layers"] = [
            {**row, "shape_original": list(row["shape_original"]), "shape_exported": list(row["shape_exported"])}
            for row in out["layers"]
        ]
        out["latency_s"] = {str(k): v for k, v in self.latency_s.items()}
        out["kept_weight_fraction"] = self.kept_weight_fraction
        out["hidden_widths"] = self.hidden_widths
        return out

    def to_markdown(self) -> str:
        widths = self.hidden_widths
        lines = [
            "| layer | original | exported | non-zeros | MACs original | MACs exported | MACs sparse |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for c in self.layers:
            lines.append(
                f"| {c.name} | {c.shape_original[1]}->{c.shape_original[0]} | "
                f"{c.shape_exported[1]}->{c.shape_exported[0]} | {c.n_nonzero} | {c.macs_original} | "
                f"{c.macs_exported} | {c.macs_sparse} |"
            )
        lines += [
            "",
            f"- parameters: {self.n_params_original} -> {self.n_params_exported} stored; non-zero weights "
            f"{self.n_nonzero} of {self.n_weights_original} ({100 * self.kept_weight_fraction:.2f}%), "
            f"compression ratio {self.compression_ratio:.1f}x",
            f"- input features kept: {self.input_features_kept} of {self.input_features}; hidden widths "
            f"{widths['original']} -> {widths['exported']}",
            f"- multiply-adds per example: {self.macs_original} dense -> {self.macs_exported} shrunk "
            f"({self.macs_sparse} non-zero)",
        ]
        if self.size_original_bytes is not None and self.size_exported_bytes is not None:
            lines.append(f"- size on disk: {self.size_original_bytes} B -> {self.size_exported_bytes} B")
        for batch, row in self.latency_s.items():
            lines.append(
                f"- latency, batch {batch}: {1e6 * row['original']:.1f} us -> {1e6 * row['exported']:.1f} us "
                f"(speed-up {row['ratio']:.2f}x; median, 1 thread"
                + (f", load {self.load_average:.2f})" if self.load_average is not None else ")")
            )
        if self.accuracy:
            lines.append("- accuracy: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in self.accuracy.items()))
        return "\n".join(lines)


def weighted_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The weight-bearing layers of ``module`` in order: ``nn.Conv2d``, ``nn.Linear`` and anything with
    ``in_features``, ``out_features`` and a dense ``weight`` or a ``weight_dense()`` / ``to_dense()`` (a CSR
    layer)."""
    found = []
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Linear | nn.Conv2d) or (
            hasattr(sub, "in_features") and hasattr(sub, "out_features") and (_weight_of(sub) is not None)
        ):
            found.append((name, sub))
    return found


def _positions(module: nn.Module, layers: list[tuple[str, nn.Module]], example: torch.Tensor) -> list[int]:
    """Output positions per example of each layer: H*W for a conv, 1 for a linear layer on (batch, features)."""
    sizes: dict[int, int] = {}

    def record(i: int):
        def hook(mod, args, out):
            # A conv's output is (N, C, H, W); a linear layer's (N, ..., out) has its positions in the middle.
            sizes[i] = math.prod(out.shape[2:]) if isinstance(mod, nn.Conv2d) else math.prod(out.shape[1:-1])

        return hook

    hooks = [layer.register_forward_hook(record(i)) for i, (_, layer) in enumerate(layers)]
    try:
        with torch.inference_mode():
            module(example)
    finally:
        for hook in hooks:
            hook.remove()
    return [sizes[i] for i in range(len(layers))]


def _weight_of(layer: nn.Module) -> torch.Tensor | None:
    """The dense weight matrix of a linear layer (a CSR layer's through ``weight_dense()`` / ``to_dense()``)."""
    weight = getattr(layer, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.ndim in (2, 4):
        return weight.detach()
    for method in ("weight_dense", "to_dense"):
        result = getattr(layer, method, None)
        result = result() if callable(result) else None
        if isinstance(result, nn.Module):
            result = getattr(result, "weight", None)
        if isinstance(result, torch.Tensor) and result.ndim == 2:
            return result.detach()
    return None


def _n_params(module: nn.Module) -> int:
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() for t in tensors if t.is_floating_point())


def measure_latency(module: nn.Module, x: torch.Tensor, *, repeats: int = 30, warmup: int = 3) -> float:
    """Median wall time (seconds) of ``module(x)`` over ``repeats`` runs on one thread, after ``warmup`` runs.

    The torch thread count is set to 1 for the measurement and restored afterwards.

    Examples
    --------
    >>> import torch
    >>> measure_latency(torch.nn.Linear(8, 4), torch.randn(2, 8), repeats=3) > 0
    True
    """
    repeats = check_positive_int(repeats, "repeats")
    warmup = check_positive_int(warmup, "warmup", minimum=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = []
        with torch.inference_mode():
            for _ in range(warmup):
                module(x)
            for _ in range(repeats):
                start = time.perf_counter()
                module(x)
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return statistics.median(times)


def _dtype_of(module: nn.Module, default: torch.dtype) -> torch.dtype:
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), default)


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def _accuracy(output: torch.Tensor, y: torch.Tensor) -> float:
    return float((output.argmax(dim=-1) == y).double().mean())


def compression_report(
    original: nn.Module,
    exported: nn.Module,
    *,
    pruned: nn.Module | None = None,
    data: tuple[torch.Tensor, torch.Tensor] | None = None,
    metric: Callable[[torch.Tensor, torch.Tensor], float] | None = None,
    input_shape: Sequence[int] | None = None,
    artefact: str | os.PathLike | None = None,
    batch_sizes: Sequence[int] = (1, 256),
    repeats: int = 30,
) -> CompressionReport:
    """Compare an exported network with the dense network it came from.

    Parameters
    ----------
    original : torch.nn.Module
        The network before pruning: a Bayesian network (its posterior-mean network is used, through
        :func:`probsparse.export.to_deterministic`) or a dense deterministic one.
    exported : torch.nn.Module
        The exported network (e.g. :func:`probsparse.export.shrink` output, or :func:`probsparse.export.load`).
    pruned : torch.nn.Module, optional
        The masked, unshrunk network (:func:`probsparse.export.masked_network`), to report its accuracy.
    data : (x, y), optional
        Evaluation inputs and labels. Accuracy of every network given is reported when present.
    metric : callable, optional
        ``metric(output, y) -> float``; default: accuracy of ``output.argmax(-1)``.
    input_shape : sequence of int, optional
        Shape of one example, when ``data`` is not given: needed for latency inputs and for conv networks.
    artefact : path, optional
        Folder of the exported network saved with :func:`probsparse.export.save`; its size is reported. The
        original's size is that of its posterior-mean state saved by :func:`probsparse.export.save_network`
        in the exported network's dtype. Without it no sizes are reported.
    batch_sizes : sequence of int, default (1, 256)
        Batch sizes timed; latency is skipped when empty.
    repeats : int, default 30
        Timed repeats per network and batch size (the median is reported).

    Returns
    -------
    CompressionReport

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from probsparse.export.shrink import shrink
    >>> net = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> keep = {"0": torch.rand(4, 6) < 2, "2": torch.tensor([[1, 0, 0, 1], [0, 0, 0, 1]], dtype=torch.bool)}
    >>> rep = compression_report(net, shrink(net, keep), input_shape=(6,), batch_sizes=())
    >>> rep.macs_original, rep.macs_exported, rep.macs_sparse, rep.hidden_widths["exported"]
    (32, 16, 15, [2])
    """
    if not isinstance(original, nn.Module) or not isinstance(exported, nn.Module):
        raise TypeError("original and exported must be torch.nn.Module instances")
    dense = to_deterministic(original).eval()
    exported = exported.eval()
    before, after = weighted_layers(dense), weighted_layers(exported)
    if not before or len(before) != len(after):
        raise ValueError(
            f"original has {len(before)} linear/conv layers and exported has {len(after)}; the report pairs them "
            "in order, so both must be the same chain of layers"
        )
    # Everything is compared in the exported network's dtype (typically float32).
    dtype = _weight_of(after[0][1]).dtype
    dense = dense.to(dtype)

    if data is not None:
        if not isinstance(data, tuple | list) or len(data) != 2:
            raise TypeError(f"data must be a pair (x, y) of tensors, got {type(data).__name__}")
        x, y = data
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or x.shape[0] != y.shape[0]:
            raise ValueError("data must be a pair of tensors (x, y) with the same number of rows")
        example_shape = tuple(x.shape[1:])
    elif input_shape is not None:
        example_shape = tuple(check_positive_int(s, "input_shape entry") for s in input_shape)
    else:
        example_shape = None
    has_conv = any(isinstance(layer, nn.Conv2d) for _, layer in before)
    if example_shape is None and (batch_sizes or has_conv):
        raise ValueError("give data or input_shape: latency inputs and conv work counts need the input's shape")
    if example_shape is not None:
        example = torch.zeros((1, *example_shape), dtype=dtype)
        pos_before, pos_after = _positions(dense, before, example), _positions(exported, after, example)
    else:
        pos_before = pos_after = [1] * len(before)

    counts = []
    for (_, a), (name, b), pa, pb in zip(before, after, pos_before, pos_after, strict=True):
        wa, wb = _weight_of(a), _weight_of(b)
        nnz = int(torch.count_nonzero(wb))
        counts.append(
            LayerCount(name, tuple(wa.shape), tuple(wb.shape), nnz, wa.numel() * pa, wb.numel() * pb, nnz * pb)
        )
    n_weights = sum(math.prod(c.shape_original) for c in counts)
    n_nonzero = sum(c.n_nonzero for c in counts)
    index = next((m for m in exported.modules() if isinstance(m, IndexSelect)), None)
    report = CompressionReport(
        layers=counts,
        n_params_original=_n_params(dense),
        n_params_exported=_n_params(exported),
        n_weights_original=n_weights,
        n_nonzero=n_nonzero,
        compression_ratio=n_weights / n_nonzero if n_nonzero else float("inf"),
        macs_original=sum(c.macs_original for c in counts),
        macs_exported=sum(c.macs_exported for c in counts),
        macs_sparse=sum(c.macs_sparse for c in counts),
        input_features=counts[0].shape_original[1],
        input_features_kept=counts[0].shape_original[1] if index is None else int(index.index.numel()),
    )

    if artefact is not None:
        artefact = Path(artefact)
        if not artefact.is_dir():
            raise FileNotFoundError(f"artefact {artefact} is not a saved network folder")
        report.size_exported_bytes = _dir_size(artefact)
        with tempfile.TemporaryDirectory() as tmp:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in dense.state_dict().items()}
            report.size_original_bytes = _dir_size(save_network(state, tmp))

    if data is not None:
        score = metric or _accuracy
        with torch.inference_mode():
            report.accuracy["original"] = score(dense(x.to(dtype)), y)
            if pruned is not None:
                report.accuracy["pruned"] = score(pruned.eval()(x.to(_dtype_of(pruned, dtype))), y)
            report.accuracy["exported"] = score(exported(x.to(dtype)), y)

    if batch_sizes:
        gen = torch.Generator().manual_seed(0)
        for batch in batch_sizes:
            batch = check_positive_int(batch, "batch size")
            xb = torch.randn((batch, *example_shape), generator=gen, dtype=dtype)
            t_orig = measure_latency(dense, xb, repeats=repeats)
            t_exp = measure_latency(exported, xb, repeats=repeats)
            report.latency_s[batch] = {"original": t_orig, "exported": t_exp, "ratio": t_orig / t_exp}
        report.load_average = os.getloadavg()[0]
    return report


def pruning_curve(
    network: nn.Module,
    score: str,
    fractions: Sequence[float],
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    per_layer: bool = False,
    metric: Callable[[torch.Tensor, torch.Tensor], float] | None = None,
) -> list[dict[str, Any]]:
    r"""Accuracy of the pruned posterior-mean network as a function of the fraction of weights kept.

    For each budget :math:`f` the network keeps its :math:`\lceil f n\rceil` best-scored weights
    (:class:`~probsparse.export.PruningRule` ``(score, keep_fraction=f)``) and is evaluated with the others
    set to zero (:func:`~probsparse.export.masked_network`); the structured shrink does not change outputs,
    so this is also the exported network's accuracy.

    Parameters
    ----------
    network : torch.nn.Module
        The Bayesian network.
    score : str
        A score of :data:`probsparse.export.pruning.SCORES` other than ``credible_interval``.
    fractions : sequence of float
        Budgets in (0, 1].
    data : (x, y)
        Evaluation inputs and labels.
    per_layer : bool, default False
        Apply each budget in every layer instead of across all layers.
    metric : callable, optional
        ``metric(output, y) -> float``; default: accuracy of the argmax.

    Returns
    -------
    list of dict
        One row per budget: ``keep_fraction``, ``n_kept``, ``kept_fraction`` and ``accuracy``, or ``error``
        (the message) when the budget leaves a layer without weights.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from probsparse.nn import BayesianLinear
    >>> net = nn.Sequential(BayesianLinear(4, 8), nn.ReLU(), BayesianLinear(8, 3))
    >>> x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    >>> rows = pruning_curve(net, "snr", [0.5, 1.0], (x, y))
    >>> [row["n_kept"] for row in rows]
    [28, 56]
    """
    from probsparse.export.pruning import PruningError, PruningRule, masks_from_scores, scores_of
    from probsparse.export.shrink import masked_network

    if not isinstance(data, tuple | list) or len(data) != 2:
        raise TypeError(f"data must be a pair (x, y) of tensors, got {type(data).__name__}")
    x, y = data
    if not isinstance(fractions, Sequence) or not fractions:
        raise ValueError("fractions must be a non-empty sequence of budgets in (0, 1]")
    score_fn = metric or _accuracy
    scores = scores_of(network)
    rows = []
    for fraction in fractions:
        rule = PruningRule(score, keep_fraction=fraction, per_layer=per_layer)
        try:
            masks, pruning = masks_from_scores(scores, rule)
        except PruningError as exc:
            rows.append({"keep_fraction": fraction, "error": str(exc)})
            continue
        pruned = masked_network(network, masks)
        with torch.inference_mode():
            value = score_fn(pruned(x.to(_dtype_of(pruned, x.dtype))), y)
        rows.append(
            {
                "keep_fraction": fraction,
                "n_kept": pruning.n_kept,
                "kept_fraction": pruning.kept_fraction,
                "accuracy": value,
            }
        )
    return rows
