"""Replace Bayesian layers by their posterior-mean deterministic counterparts.

The exported network is built only from :mod:`torch.nn` layers, so it runs (and its state dict loads)
without probsparse. Supporting a new Bayesian layer type means adding one entry to ``_CONVERTERS``; the
layer itself supplies its posterior-mean weights through ``mean_parameters()``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from probsparse.nn.conv import BayesianConv2d
from probsparse.nn.linear import BayesianLinear

__all__ = ["deterministic_state", "to_deterministic"]


def _load_means(layer, plain: nn.Module) -> nn.Module:
    with torch.no_grad():
        for name, value in layer.mean_parameters().items():
            getattr(plain, name).copy_(value)
    plain.train(layer.training)
    return plain


def _linear_from_bayesian(layer: BayesianLinear) -> nn.Linear:
    weight = layer.mean_parameters()["weight"]
    linear = nn.Linear(
        layer.in_features, layer.out_features, bias=layer.has_bias, device=weight.device, dtype=weight.dtype
    )
    return _load_means(layer, linear)


def _conv_from_bayesian(layer: BayesianConv2d) -> nn.Conv2d:
    weight = layer.mean_parameters()["weight"]
    conv = nn.Conv2d(
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        layer.stride,
        layer.padding,
        layer.dilation,
        layer.groups,
        bias=layer.has_bias,
        device=weight.device,
        dtype=weight.dtype,
    )
    return _load_means(layer, conv)


# Bayesian layer type -> builder of its deterministic counterpart. Looked up along the MRO, so subclasses
# (e.g. sparsity-prior variants of BayesianLinear) are covered by their base class's entry unless they
# register their own.
_CONVERTERS: dict[type[nn.Module], Callable[[nn.Module], nn.Module]] = {
    BayesianLinear: _linear_from_bayesian,
    BayesianConv2d: _conv_from_bayesian,
}


def _converter_for(module: nn.Module) -> Callable[[nn.Module], nn.Module] | None:
    for cls in type(module).__mro__:
        if cls in _CONVERTERS:
            return _CONVERTERS[cls]
    return None


def _bayesian_layers(module: nn.Module) -> dict[str, nn.Module]:
    """Qualified name -> Bayesian layer, outermost first; layers inside a Bayesian layer are skipped."""
    found: dict[str, nn.Module] = {}
    for name, sub in module.named_modules():
        if any(_is_within(name, outer) for outer in found):
            continue
        if _converter_for(sub) is not None:
            found[name] = sub
    return found


def _is_within(key: str, prefix: str) -> bool:
    """Whether the dotted ``key`` lies under the module ``prefix`` ("" is the root, containing everything)."""
    return prefix == "" or key == prefix or key.startswith(prefix + ".")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def deterministic_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """State dict of the posterior-mean network, keyed as :func:`to_deterministic` ``(module)`` would be.

    Every Bayesian layer at qualified name ``n`` contributes ``n.weight`` (its posterior mean
    :math:`E[W]`, from ``mean_parameters()``) and, if it has a bias, ``n.bias`` in place of its variational
    parameters. Every other parameter and buffer is
    passed through under its usual key, so the result loads with ``strict=True`` into the same architecture
    built from :class:`torch.nn.Linear` / :class:`torch.nn.Conv2d`.

    Parameters
    ----------
    module : torch.nn.Module
        A network containing Bayesian layers (or a single Bayesian layer, giving keys ``weight``/``bias``).

    Returns
    -------
    dict of str to torch.Tensor
        Detached copies, in ``module.state_dict()`` order; editing them does not touch ``module``.

    Examples
    --------
    >>> from torch import nn
    >>> from probsparse.nn import BayesianLinear
    >>> net = nn.Sequential(BayesianLinear(4, 8), nn.ReLU(), BayesianLinear(8, 2))
    >>> list(deterministic_state(net))
    ['0.weight', '0.bias', '2.weight', '2.bias']
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    layers = _bayesian_layers(module)
    state: dict[str, torch.Tensor] = {}
    emitted: set[str] = set()
    for key, value in module.state_dict().items():
        owner = next((name for name in layers if _is_within(key, name)), None)
        if owner is None:
            state[key] = value.detach().clone()
        elif owner not in emitted:
            # Emitted at the position of the layer's first entry, so the order matches the deterministic
            # module's own state_dict.
            emitted.add(owner)
            for leaf, tensor in _converter_for(layers[owner])(layers[owner]).state_dict().items():
                state[_join(owner, leaf)] = tensor.detach().clone()
    return state


def to_deterministic(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every Bayesian layer replaced by its posterior-mean ``torch.nn`` layer.

    :class:`~probsparse.nn.BayesianLinear` becomes :class:`torch.nn.Linear` and
    :class:`~probsparse.nn.BayesianConv2d` :class:`torch.nn.Conv2d`, holding the posterior means (same dtype,
    device and training flag), so that ``to_deterministic(net)(x)`` equals the Bayesian network's output
    under :func:`probsparse.nn.posterior_mean`.

    Parameters
    ----------
    module : torch.nn.Module
        The Bayesian network; left unchanged. If it is itself a Bayesian layer, its replacement is
        returned.

    Returns
    -------
    torch.nn.Module
        A deep copy holding no probsparse layers (containers and other layers are copied as they are).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    converter = _converter_for(module)
    if converter is not None:
        return converter(module)
    result = copy.deepcopy(module)
    for name, layer in _bayesian_layers(result).items():
        parent_name, _, child_name = name.rpartition(".")
        parent = result.get_submodule(parent_name)
        setattr(parent, child_name, _converter_for(layer)(layer))
    return result
