"""Whole-network helpers: turn a torch network Bayesian, find its Bayesian layers, sum their KL, freeze to means."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable, Iterator, Mapping

import torch
from torch import nn

from probsparse.nn.base import BayesianLayer
from probsparse.nn.conv import BayesianConv2d
from probsparse.nn.linear import BayesianLinear
from probsparse.priors.base import WeightPrior

__all__ = ["bayesian_layers", "bayesianize", "kl_divergence", "kl_modules", "posterior_mean"]

# Deterministic layer type -> constructor of its Bayesian version starting at the layer's weights.
_BAYESIAN_VERSIONS: dict[type[nn.Module], Callable[..., BayesianLayer]] = {
    nn.Linear: BayesianLinear.from_linear,
    nn.Conv2d: BayesianConv2d.from_conv,
}


def bayesian_layers(module: nn.Module) -> dict[str, BayesianLayer]:
    """Qualified name -> Bayesian layer, for every Bayesian layer in ``module`` (``""`` if it is one)."""
    return {name: sub for name, sub in module.named_modules() if isinstance(sub, BayesianLayer)}


def kl_modules(module: nn.Module) -> dict[str, nn.Module]:
    """The outermost submodules of ``module`` (itself included) that have a ``kl_divergence()`` method.

    This is the protocol the objectives use: any module with ``kl_divergence()`` counts, not only
    :class:`BayesianLayer`, and it accounts for its whole subtree, so a container that sums its children's KLs
    is not counted twice.

    Examples
    --------
    >>> net = torch.nn.Sequential(BayesianLinear(3, 4), torch.nn.ReLU(), BayesianLinear(4, 2))
    >>> list(kl_modules(net))
    ['0', '2']
    """
    found: dict[str, nn.Module] = {}

    def visit(prefix: str, sub: nn.Module) -> None:
        if callable(getattr(sub, "kl_divergence", None)):
            found[prefix] = sub
            return
        for name, child in sub.named_children():
            visit(f"{prefix}.{name}" if prefix else name, child)

    visit("", module)
    return found


def kl_divergence(module: nn.Module, forward_terms: Mapping[int, torch.Tensor] | None = None) -> torch.Tensor:
    """Sum of ``kl_divergence()`` over :func:`kl_modules` ``(module)``, shape () (not scaled by N).

    ``forward_terms`` holds KLs already computed by the layers' forward passes (from
    :func:`~probsparse.nn.base.kl_in_forward`, keyed by ``id(layer)``); they stand in for those layers' calls.

    Raises
    ------
    ValueError
        If ``module`` has no Bayesian layer, or a layer's KL is not a scalar tensor.
    """
    layers = kl_modules(module)
    if not layers:
        raise ValueError(
            f"{type(module).__name__} has no Bayesian layer (no Bayesian layers found: no submodule has a "
            "kl_divergence() method)"
        )
    total = None
    forward_terms = forward_terms or {}
    for name, layer in layers.items():
        kl = forward_terms[id(layer)] if id(layer) in forward_terms else layer.kl_divergence()
        if not torch.is_tensor(kl) or kl.shape != ():
            shape = tuple(kl.shape) if torch.is_tensor(kl) else type(kl).__name__
            raise ValueError(f"kl_divergence() of layer {name!r} must return a tensor of shape (), got {shape}")
        total = kl if total is None else total + kl
    return total


@contextlib.contextmanager
def posterior_mean(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block every layer of ``module`` with a boolean ``sampling`` switch (every Bayesian layer)
    computes its posterior-mean output; the switches are restored on exit.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(BayesianLinear(3, 2), torch.nn.ReLU(), BayesianLinear(2, 1))
    >>> x = torch.randn(5, 3)
    >>> with posterior_mean(net):
    ...     same = torch.equal(net(x), net(x))
    >>> same
    True
    """
    layers = [m for m in module.modules() if isinstance(getattr(m, "sampling", None), bool)]
    previous = [layer.sampling for layer in layers]
    for layer in layers:
        layer.sampling = False
    try:
        yield module
    finally:
        for layer, flag in zip(layers, previous, strict=True):
            layer.sampling = flag


def _resolve_prior(prior, name: str, layer: nn.Module) -> WeightPrior | None:
    if isinstance(prior, WeightPrior) or prior is None:
        return prior
    if isinstance(prior, Mapping):
        return prior.get(name)
    if callable(prior):
        return prior(name, layer)
    raise TypeError(f"prior must be a WeightPrior, a mapping of layer names to priors or a callable, got {prior!r}")


def _skipped(name: str, layer: nn.Module, skip: Iterable) -> bool:
    return any(
        (isinstance(s, str) and (name == s or name.startswith(s + ".")))
        or (isinstance(s, type) and isinstance(layer, s))
        for s in skip
    )


def bayesianize(module: nn.Module, prior=None, *, skip: Iterable = (), **layer_kwargs) -> nn.Module:
    """A copy of ``module`` with every ``nn.Linear`` and ``nn.Conv2d`` replaced by its Bayesian version.

    The posterior means start at the layer's current weights, so a pre-trained network starts where it
    was. Layers are matched by type exactly (``nn.Linear`` subclasses are not silently converted).

    Parameters
    ----------
    module : torch.nn.Module
        The deterministic network; left unchanged.
    prior : WeightPrior, mapping or callable, optional
        One prior for every layer, a mapping from qualified layer names to priors (a layer missing from it
        stays deterministic), or a callable ``(name, layer) -> prior or None``. ``None``: ``Normal(1.0)``.
    skip : iterable of str or type, default=()
        Layer names (a name covers its children) or types to leave deterministic. Modules with parameters
        of any type other than ``nn.Linear`` / ``nn.Conv2d`` must be listed here (e.g. ``nn.BatchNorm2d``),
        so that nothing is left deterministic by accident.
    **layer_kwargs
        Passed to every Bayesian layer (``init_log_std``, ``bias_prior_scale``).

    Returns
    -------
    torch.nn.Module

    Raises
    ------
    TypeError
        Listing the modules that own parameters, are not convertible and are not skipped.

    Examples
    --------
    >>> from probsparse.priors import GroupHorseshoe
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> bnet = bayesianize(net, GroupHorseshoe(groups="input"))
    >>> sorted(bayesian_layers(bnet))
    ['0', '2']
    """
    skip = tuple(skip)
    result = copy.deepcopy(module)
    unknown = []
    replacements = {}
    bayesian = []  # Bayesian layers already there: kept, and their own submodules (weight families) not inspected
    for name, layer in result.named_modules():
        inside = (*replacements, *bayesian)
        if any(done == "" or name.startswith(done + ".") for done in inside) or _skipped(name, layer, skip):
            continue
        if type(layer) in _BAYESIAN_VERSIONS:
            replacements[name] = layer
        elif isinstance(layer, BayesianLayer):
            bayesian.append(name)
        elif any(True for _ in layer.parameters(recurse=False)):
            unknown.append(f"{name or '<root>'} ({type(layer).__name__})")
    if unknown:
        raise TypeError(
            "bayesianize converts nn.Linear and nn.Conv2d only; these modules own parameters and are neither "
            f"convertible nor skipped: {', '.join(unknown)}. Pass them in skip= to keep them deterministic."
        )
    for name, layer in replacements.items():
        layer_prior = _resolve_prior(prior, name, layer) if prior is not None else None
        if prior is not None and layer_prior is None and not isinstance(prior, WeightPrior):
            continue
        new = _BAYESIAN_VERSIONS[type(layer)](layer, prior=layer_prior, **layer_kwargs)
        if name == "":
            return new
        parent_name, _, attr = name.rpartition(".")
        setattr(result.get_submodule(parent_name) if parent_name else result, attr, new)
    return result
