r"""Pruning decisions: which posterior-mean weights of a Bayesian network survive export.

Every Bayesian layer scores its weights through ``pruning_scores()`` (a dict of tensors shaped like the
weight: ``mean``, ``std``, ``snr``, ``log_alpha``, ``folded_snr`` and, for spike-and-slab priors,
``inclusion_prob``). A :class:`PruningRule` turns those scores into one boolean keep-mask per layer, either
by a threshold (one for all layers, or one per layer) or by a budget (keep the top fraction, globally or in
each layer). :func:`masks_from_scores` works on plain tensors; :func:`prune` collects the scores of a
network's layers and calls it. Both return the masks and a :class:`PruningReport` of what the rule keeps.

A rule that keeps no weight of a layer raises :class:`PruningError` naming the layer: an exported network
with a dead layer would output a constant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from probsparse._validation import check_finite_real

__all__ = ["SCORES", "PruningError", "PruningReport", "PruningRule", "masks_from_scores", "prune", "scores_of"]

# Score name -> whether a larger score means "more worth keeping". Sparse VD prunes when log alpha is large
# (the posterior is mostly noise), every other score keeps when it is large.
SCORES: dict[str, bool] = {
    "log_alpha": False,
    "snr": True,
    "folded_snr": True,
    "inclusion_prob": True,
    "credible_interval": True,
}

# Score that ranks weights under a budget; the credible-interval rule ranks like the SNR (its test is
# |mean| / std > z), so it has no budget form of its own.
_SOURCE = {"credible_interval": ("mean", "std")}


class PruningError(ValueError):
    """A pruning rule or its scores cannot give a usable network (e.g. a layer keeps no weight)."""


@dataclass(frozen=True)
class PruningRule:
    r"""A rule mapping per-weight scores to keep-masks.

    With a threshold :math:`t_\ell` for layer :math:`\ell` the mask of weight :math:`w_{\ell,k}` with score
    :math:`s_{\ell,k}` is

    .. math::

        m_{\ell,k} = \begin{cases}
            [\, s_{\ell,k} < t_\ell \,] & \text{score} = \log\alpha \quad (\alpha = \sigma^2/\mu^2)\\
            [\, |\mu_{\ell,k}| > z_\ell\,\sigma_{\ell,k} \,],\ z_\ell = \Phi^{-1}\!\big(\tfrac{1+t_\ell}{2}\big)
                & \text{score} = \text{credible\_interval}\ (t_\ell = \text{level})\\
            [\, s_{\ell,k} \ge t_\ell \,] & \text{otherwise (snr, folded\_snr, inclusion\_prob)},
        \end{cases}

    i.e. ``log_alpha`` prunes at or above its threshold, the credible-interval rule keeps a weight whose
    central interval at ``level`` excludes zero, and the other scores keep at or above theirs. With a budget
    :math:`f` the :math:`\lceil f n\rceil` best-scored weights are kept, :math:`n` being the number of
    weights of all layers (``per_layer=False``) or of each layer (``per_layer=True``, or ``keep_fraction``
    given per layer); ties are broken by layer order, then by flat index.

    Parameters
    ----------
    score : {"log_alpha", "snr", "folded_snr", "inclusion_prob", "credible_interval"}
        Which entry of ``pruning_scores()`` to use (``credible_interval`` reads ``mean`` and ``std``).
    threshold : float or mapping of str to float, optional
        Threshold (for ``credible_interval``: the level, in (0, 1)), one value or one per layer name.
    keep_fraction : float or mapping of str to float, optional
        Budget in (0, 1]: the fraction of weights to keep. Exactly one of ``threshold`` and
        ``keep_fraction`` is given.
    per_layer : bool, default False
        With a single ``keep_fraction``, apply it in every layer instead of across all layers.

    Examples
    --------
    >>> PruningRule("log_alpha", threshold=3.0).describe()
    'log_alpha < 3.0'
    >>> PruningRule.from_string("snr:keep=0.05:per_layer").describe()
    'snr: top 5% per layer'
    """

    score: str
    threshold: float | Mapping[str, float] | None = None
    keep_fraction: float | Mapping[str, float] | None = None
    per_layer: bool = False

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {sorted(SCORES)}, got {self.score!r}")
        if (self.threshold is None) == (self.keep_fraction is None):
            raise ValueError("give exactly one of threshold and keep_fraction")
        if not isinstance(self.per_layer, bool):
            raise TypeError(f"per_layer must be a bool, got {type(self.per_layer).__name__}")
        if self.threshold is not None:
            _check_values(self.threshold, "threshold", _level if self.score == "credible_interval" else None)
        else:
            if self.score == "credible_interval":
                raise ValueError("credible_interval takes a level (threshold=); for a budget use score='snr'")
            _check_values(self.keep_fraction, "keep_fraction", _fraction)
            if self.per_layer and isinstance(self.keep_fraction, Mapping):
                raise ValueError("per_layer=True is implied by a keep_fraction mapping; leave it False")
        if self.per_layer and self.keep_fraction is None:
            raise ValueError("per_layer applies to keep_fraction budgets only")

    @property
    def is_budget(self) -> bool:
        return self.keep_fraction is not None

    def describe(self) -> str:
        """One-line human-readable form, stored in reports and manifests."""
        if self.is_budget:
            if isinstance(self.keep_fraction, Mapping):
                return f"{self.score}: top fraction per layer {dict(self.keep_fraction)}"
            scope = "per layer" if self.per_layer else "of all layers"
            return f"{self.score}: top {100 * self.keep_fraction:g}% {scope}"
        if self.score == "credible_interval":
            return f"{self.threshold!s}-credible interval excludes 0"
        op = "<" if self.score == "log_alpha" else ">="
        value = dict(self.threshold) if isinstance(self.threshold, Mapping) else self.threshold
        return f"{self.score} {op} {value}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (mappings become plain dicts)."""
        out = asdict(self)
        for key in ("threshold", "keep_fraction"):
            if isinstance(out[key], Mapping):
                out[key] = dict(out[key])
        return out

    @classmethod
    def from_string(cls, text: str) -> PruningRule:
        """Parse ``"<score>:threshold=<t>"``, ``"<score>:keep=<f>[:per_layer]"`` or ``"credible_interval:level=<l>"``.

        The short form ``"<score>=<t>"`` means a threshold. Meant for command lines.
        """
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"rule must be a non-empty string such as 'log_alpha:threshold=3', got {text!r}")
        parts = [p.strip() for p in text.strip().split(":")]
        head = parts[0]
        if "=" in head and len(parts) == 1:
            name, value = head.split("=", 1)
            return cls(name.strip(), threshold=_parse_float(value, text))
        kwargs: dict[str, Any] = {}
        for part in parts[1:]:
            if part == "per_layer":
                kwargs["per_layer"] = True
                continue
            key, sep, value = part.partition("=")
            key = {"level": "threshold", "t": "threshold", "keep": "keep_fraction"}.get(key, key)
            if not sep or key not in ("threshold", "keep_fraction"):
                raise ValueError(f"cannot parse {part!r} in rule {text!r}; expected threshold=, keep= or level=")
            kwargs[key] = _parse_float(value, text)
        return cls(head, **kwargs)


def _parse_float(value: str, text: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{value!r} in rule {text!r} is not a number") from None


def _level(value: float, name: str) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} is a credible level and must lie in (0, 1), got {value}")


def _fraction(value: float, name: str) -> None:
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must lie in (0, 1], got {value}")


def _check_values(values, name: str, check) -> None:
    items = values.items() if isinstance(values, Mapping) else [(None, values)]
    if isinstance(values, Mapping) and not values:
        raise ValueError(f"{name} mapping is empty")
    for layer, value in items:
        label = name if layer is None else f"{name}[{layer!r}]"
        check_finite_real(value, label)
        if check is not None:
            check(float(value), label)


@dataclass
class LayerDecision:
    """What a rule keeps in one layer (one row of :class:`PruningReport`).

    Attributes
    ----------
    name : str
        Qualified layer name.
    shape : tuple of int
        Weight shape.
    n_weights, n_kept : int
        Number of weights and of kept weights.
    threshold : float or None
        The threshold applied (the level for credible intervals); for a budget, the score of the worst
        weight kept.
    """

    name: str
    shape: tuple[int, ...]
    n_weights: int
    n_kept: int
    threshold: float | None

    @property
    def kept_fraction(self) -> float:
        return self.n_kept / self.n_weights


@dataclass
class PruningReport:
    """What a :class:`PruningRule` keeps, per layer and in total.

    Attributes
    ----------
    rule : str
        :meth:`PruningRule.describe` of the rule applied.
    score : str
        The score used.
    layers : list of LayerDecision
        One entry per layer, in network order.
    """

    rule: str
    score: str
    layers: list[LayerDecision] = field(default_factory=list)

    @property
    def n_weights(self) -> int:
        return sum(layer.n_weights for layer in self.layers)

    @property
    def n_kept(self) -> int:
        return sum(layer.n_kept for layer in self.layers)

    @property
    def kept_fraction(self) -> float:
        return self.n_kept / self.n_weights

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "score": self.score,
            "n_weights": self.n_weights,
            "n_kept": self.n_kept,
            "kept_fraction": self.kept_fraction,
            "layers": [
                {
                    "name": d.name,
                    "shape": list(d.shape),
                    "n_weights": d.n_weights,
                    "n_kept": d.n_kept,
                    "kept_fraction": d.kept_fraction,
                    "threshold": d.threshold,
                }
                for d in self.layers
            ],
        }

    def to_markdown(self) -> str:
        lines = [
            f"Pruning rule: `{self.rule}`: keeps {self.n_kept} of {self.n_weights} weights "
            f"({100 * self.kept_fraction:.2f}%)",
            "",
            "| layer | shape | weights | kept | kept % | threshold |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for d in self.layers:
            threshold = "" if d.threshold is None else f"{d.threshold:.4g}"
            shape = "x".join(str(s) for s in d.shape)
            lines.append(
                f"| {d.name} | {shape} | {d.n_weights} | {d.n_kept} | {100 * d.kept_fraction:.2f} | {threshold} |"
            )
        return "\n".join(lines)


def _layer_scores(scores: Mapping[str, Mapping[str, torch.Tensor]], rule: PruningRule) -> dict[str, torch.Tensor]:
    """Validate the score tensors the rule needs and return layer -> keep-key (larger = keep), float64."""
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError("scores must be a non-empty mapping of layer name -> dict of score tensors")
    keys: dict[str, torch.Tensor] = {}
    needed = _SOURCE.get(rule.score, (rule.score,))
    for layer, table in scores.items():
        if not isinstance(table, Mapping):
            raise TypeError(f"scores[{layer!r}] must be a dict of score tensors, got {type(table).__name__}")
        missing = [n for n in needed if n not in table]
        if missing:
            raise PruningError(
                f"layer {layer!r} has no {missing[0]!r} score (it provides {sorted(table)}); "
                f"rule {rule.describe()!r} cannot be applied to it"
            )
        tensors = []
        for n in needed:
            t = table[n]
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                raise TypeError(f"scores[{layer!r}][{n!r}] must be a floating-point torch.Tensor")
            if t.numel() == 0:
                raise ValueError(f"scores[{layer!r}][{n!r}] is empty")
            if torch.isnan(t).any():
                raise ValueError(f"scores[{layer!r}][{n!r}] contains NaN")
            tensors.append(t.detach().to(torch.float64))
        if len(tensors) == 2:
            mean, std = tensors
            if mean.shape != std.shape:
                raise ValueError(f"scores[{layer!r}]: mean {tuple(mean.shape)} and std {tuple(std.shape)} differ")
            if (std < 0).any():
                raise ValueError(f"scores[{layer!r}]['std'] has negative entries")
            # |mean| / std, with std = 0 giving +inf for a non-zero mean and 0 for a zero mean.
            key = mean.abs() / std
            key = torch.where(torch.isnan(key), torch.zeros_like(key), key)
        else:
            key = tensors[0] if SCORES[rule.score] else -tensors[0]
        keys[str(layer)] = key
    return keys


def _per_layer(values, layers: list[str], name: str) -> dict[str, float]:
    if not isinstance(values, Mapping):
        return {layer: float(values) for layer in layers}
    missing = [layer for layer in layers if layer not in values]
    unknown = [layer for layer in values if layer not in layers]
    if missing or unknown:
        raise ValueError(
            f"{name} per layer must name exactly the layers {layers}; missing {missing}, unknown {unknown}"
        )
    return {layer: float(values[layer]) for layer in layers}


def masks_from_scores(
    scores: Mapping[str, Mapping[str, torch.Tensor]], rule: PruningRule
) -> tuple[dict[str, torch.Tensor], PruningReport]:
    """Keep-masks of every layer under ``rule``, from plain score tensors.

    Parameters
    ----------
    scores : mapping of str to dict of str to torch.Tensor
        Layer name -> that layer's ``pruning_scores()`` (tensors shaped like its weight).
    rule : PruningRule

    Returns
    -------
    masks : dict of str to torch.Tensor
        Layer name -> boolean tensor shaped like the weight, True where the weight is kept.
    report : PruningReport

    Raises
    ------
    PruningError
        A layer lacks the score, or the rule keeps none of a layer's weights (the message names the layer).

    Examples
    --------
    >>> import torch
    >>> scores = {"fc": {"log_alpha": torch.tensor([[-4.0, 5.0], [0.0, 3.0]])}}
    >>> masks, report = masks_from_scores(scores, PruningRule("log_alpha", threshold=3.0))
    >>> masks["fc"]
    tensor([[ True, False],
            [ True, False]])
    >>> report.n_kept
    2
    """
    if not isinstance(rule, PruningRule):
        raise TypeError(f"rule must be a PruningRule, got {type(rule).__name__}")
    keys = _layer_scores(scores, rule)
    layers = list(keys)
    masks: dict[str, torch.Tensor] = {}
    cutoffs: dict[str, float | None] = {}

    if not rule.is_budget:
        thresholds = _per_layer(rule.threshold, layers, "threshold")
        for layer, key in keys.items():
            t = thresholds[layer]
            if rule.score == "credible_interval":
                z = float(torch.special.ndtri(torch.tensor((1.0 + t) / 2.0, dtype=torch.float64)))
                masks[layer] = key > z
            elif rule.score == "log_alpha":
                masks[layer] = key > -t  # key = -log_alpha: keep iff log_alpha < t
            else:
                masks[layer] = key >= t
            cutoffs[layer] = t
    elif isinstance(rule.keep_fraction, Mapping) or rule.per_layer:
        fractions = _per_layer(rule.keep_fraction, layers, "keep_fraction")
        for layer, key in keys.items():
            masks[layer], cutoffs[layer] = _top(key.reshape(-1), fractions[layer])
            masks[layer] = masks[layer].reshape(key.shape)
    else:
        flat = torch.cat([key.reshape(-1) for key in keys.values()])
        keep, _ = _top(flat, float(rule.keep_fraction))
        start = 0
        for layer, key in keys.items():
            part = keep[start : start + key.numel()]
            start += key.numel()
            masks[layer] = part.reshape(key.shape)
            cutoffs[layer] = float(key.reshape(-1)[part].min()) if part.any() else None

    report = PruningReport(rule=rule.describe(), score=rule.score)
    for layer, mask in masks.items():
        n_kept = int(mask.sum())
        if n_kept == 0:
            raise PruningError(
                f"rule {rule.describe()!r} keeps no weight of layer {layer!r} (shape {tuple(mask.shape)}); "
                "the exported layer would be dead. Loosen the threshold or budget for this layer "
                "(thresholds and keep fractions can be given per layer)."
            )
        cutoff = cutoffs[layer]
        if cutoff is not None and rule.is_budget:
            # Report the cutoff on the score's own scale.
            cutoff = cutoff if SCORES[rule.score] else -cutoff
        report.layers.append(LayerDecision(layer, tuple(mask.shape), mask.numel(), n_kept, cutoff))
    return masks, report


def _top(key: torch.Tensor, fraction: float) -> tuple[torch.Tensor, float]:
    """Mask of the ceil(fraction * n) largest entries of the 1-D ``key`` (stable ties) and the smallest kept."""
    k = min(key.numel(), math.ceil(fraction * key.numel() - 1e-9))
    order = torch.sort(key, descending=True, stable=True).indices
    keep = torch.zeros(key.numel(), dtype=torch.bool)
    keep[order[:k]] = True
    return keep, float(key[order[k - 1]]) if k > 0 else math.nan


def scores_of(network: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """``pruning_scores()`` of every layer of ``network`` that has one, keyed by qualified name.

    Layers nested inside a scored layer are skipped (the outer layer speaks for them). A network that is
    itself a scored layer gives the key ``""``.
    """
    if not isinstance(network, nn.Module):
        raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}")
    found: dict[str, dict[str, torch.Tensor]] = {}
    for name, module in network.named_modules():
        if any(name == outer or outer == "" or name.startswith(outer + ".") for outer in found):
            continue
        method = getattr(module, "pruning_scores", None)
        if callable(method):
            found[name] = {k: v.detach() for k, v in method().items()}
    if not found:
        raise PruningError(
            f"{type(network).__name__} has no layer with pruning_scores(); nothing to prune "
            "(is it a Bayesian network from probsparse.nn?)"
        )
    return found


def prune(network: nn.Module, rule: PruningRule) -> tuple[dict[str, torch.Tensor], PruningReport]:
    """Keep-masks of every Bayesian layer of ``network`` under ``rule``; see :func:`masks_from_scores`.

    Returns
    -------
    masks : dict of str to torch.Tensor
        Qualified layer name (as in ``network.named_modules()``) -> boolean keep-mask shaped like the weight.
    report : PruningReport
    """
    return masks_from_scores(scores_of(network), rule)
