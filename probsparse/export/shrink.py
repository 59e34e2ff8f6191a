r"""Structured shrink: physically remove the neurons and input features that pruning has cut off.

A chain of linear layers with elementwise activations computes :math:`h_\ell = \phi_\ell(W_\ell h_{\ell-1}
+ b_\ell)`. After pruning, :math:`W_\ell` holds the posterior means times the keep-masks. Two kinds of hidden
neuron can then be removed without changing the output:

* a neuron :math:`j` of layer :math:`\ell` with **no kept incoming weight** outputs the constant
  :math:`c_j = \phi_\ell(b_{\ell,j})`; its effect on the next layer is folded into the next bias,
  :math:`b_{\ell+1} \leftarrow b_{\ell+1} + W_{\ell+1,:j}\, c_j`, and the neuron is removed;
* a neuron with **no kept outgoing weight** does not reach the output and is removed with its row.

Input features (pixels) with no kept outgoing weight are dropped by an :class:`IndexSelect` layer at the
front of the exported network. Removing neurons can orphan others, so both passes repeat until nothing
changes. The network's outputs are never removed.

In conv networks the units are channels: a channel with no kept filter weight is the constant map
:math:`\phi(b_c)`, folded into the next layer's bias (summed over the kernel, or over the channel's block of
features after ``Flatten``) only where that is exact: the next layer is the linear layer after ``Flatten``
or a conv without zero padding, and no zero-padded average pooling lies in between. Elsewhere it is kept.

:func:`shrink_linear_chain` does this on plain tensors; :func:`shrink` parses a ``torch.nn.Sequential``
(nested ``Sequential`` containers are flattened), reads posterior means through ``mean_parameters()`` (or
the parameters of a plain ``nn.Linear``) and builds a plain ``torch.nn.Sequential``.
:func:`masked_network` builds the unshrunk reference: the posterior-mean network with pruned weights
zeroed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from probsparse._validation import check_positive_int
from probsparse.export.deterministic import to_deterministic

__all__ = [
    "ELEMENTWISE",
    "IndexSelect",
    "ShrinkError",
    "ShrunkChain",
    "UnsupportedLayerError",
    "masked_network",
    "measured_layer_factory",
    "shrink",
    "shrink_linear_chain",
]

# Activations applied entry by entry: a neuron's output depends on its own pre-activation only, so a
# neuron can be removed (or folded into a constant) without touching its neighbours.
ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Identity,
)
# Inference-time no-ops, left out of the exported network.
_DROPPED: tuple[type[nn.Module], ...] = (nn.Dropout,)
# Normalisations over the output vector: allowed after the last linear layer only, whose outputs are kept.
_TERMINAL: tuple[type[nn.Module], ...] = (nn.Softmax, nn.LogSoftmax)


class ShrinkError(ValueError):
    """The pruned network cannot be shrunk into a working network (e.g. a whole layer is cut off)."""


class UnsupportedLayerError(TypeError):
    """The network holds layers that structured shrink does not know; the message lists them."""


class IndexSelect(nn.Module):
    r"""Keep the input features listed in ``index``: :math:`y = x_{[\ldots,\, \text{index}]}`.

    The first layer of a shrunk network when pruning cut off some input features (pixels).

    Parameters
    ----------
    index : torch.Tensor of shape (n_kept,)
        Integer positions, in the last dimension of the input, of the features to keep (stored as int64).
    in_features : int
        Size of the last input dimension the index refers to (recorded for the manifest).

    Examples
    --------
    >>> import torch
    >>> IndexSelect(torch.tensor([0, 2]), in_features=3)(torch.tensor([[1.0, 2.0, 3.0]]))
    tensor([[1., 3.]])
    """

    def __init__(self, index: torch.Tensor, in_features: int) -> None:
        super().__init__()
        if not isinstance(index, torch.Tensor) or index.ndim != 1 or index.is_floating_point():
            raise TypeError("index must be a 1-D integer torch.Tensor")
        if index.numel() == 0 or int(index.min()) < 0 or int(index.max()) >= in_features:
            raise ValueError(f"index must be non-empty with entries in [0, {in_features}), got {index.tolist()}")
        self.in_features = int(in_features)
        self.register_buffer("index", index.to(torch.int64).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(-1, self.index)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.index.numel()}"


@dataclass
class ShrunkChain:
    """Result of :func:`shrink_linear_chain`.

    Attributes
    ----------
    weights : list of torch.Tensor
        Shrunk masked weights: (kept units of layer l, kept input features of layer l[, kh, kw]).
    biases : list of torch.Tensor or None
        Shrunk biases with the constants of removed neurons folded in (``None`` only where the layer had
        no bias and nothing was folded into it).
    input_index : torch.Tensor
        int64 positions of the kept input units (features; channels for a conv-first chain, all kept).
    neuron_index : list of torch.Tensor
        int64 positions of the kept units (neurons or channels) of every layer; the last keeps all.
    """

    weights: list[torch.Tensor]
    biases: list[torch.Tensor | None]
    input_index: torch.Tensor
    neuron_index: list[torch.Tensor]


def _check_chain(weights, biases, masks, blocks, names) -> None:
    for i, (w, b, m) in enumerate(zip(weights, biases, masks, strict=True)):
        if w.ndim not in (2, 4) or m.shape != w.shape or m.dtype != torch.bool:
            raise ValueError(
                f"{names[i]}: weight must be 2-D (linear) or 4-D (conv) and its mask a bool tensor of the same "
                f"shape, got weight {tuple(w.shape)} and mask {tuple(m.shape)} ({m.dtype})"
            )
        if b is not None and b.shape != (w.shape[0],):
            raise ValueError(f"{names[i]}: bias shape {tuple(b.shape)} does not match weight {tuple(w.shape)}")
        if w.shape[1] % blocks[i]:
            raise ValueError(f"{names[i]}: {w.shape[1]} inputs do not split into blocks of {blocks[i]}")
        if i and w.shape[1] // blocks[i] != weights[i - 1].shape[0]:
            raise ValueError(
                f"{names[i]} takes {w.shape[1] // blocks[i]} input units but {names[i - 1]} has "
                f"{weights[i - 1].shape[0]} outputs"
            )


def _shrink_chain(
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor | None],
    masks: Sequence[torch.Tensor],
    constants: Sequence[Callable[[torch.Tensor], torch.Tensor] | None],
    *,
    blocks: Sequence[int],
    absorbs: Sequence[bool],
    inputs_removable: bool,
    names: Sequence[str],
) -> ShrunkChain:
    """The shrink on units: neurons of linear layers, channels of conv layers (see :func:`shrink_linear_chain`).

    ``constants[l]`` maps the biases of layer l's constant units to their values after the operations that
    follow the layer (None: those operations do not keep a constant constant, so nothing is folded);
    ``blocks[l]`` is the number of input features per input unit of layer l (a Linear after Flatten of C conv
    channels has H*W); ``absorbs[l]`` whether a constant input unit of layer l can be folded into its bias
    (a conv with zero padding cannot: at the border it sees fewer taps of the constant).
    """
    n = len(weights)
    _check_chain(weights, biases, masks, blocks, names)

    def units(tensor: torch.Tensor, layer: int) -> torch.Tensor:
        # (out, in, ...) -> (out, in_units, features of one unit)
        return tensor.reshape(tensor.shape[0], tensor.shape[1] // blocks[layer], -1)

    w = [torch.where(m, wt.detach(), torch.zeros_like(wt)) for wt, m in zip(weights, masks, strict=True)]
    conn = [units(m, i).any(-1) for i, m in enumerate(masks)]
    b = [None if bt is None else bt.detach().clone() for bt in biases]
    inputs_alive = torch.ones(conn[0].shape[1], dtype=torch.bool)
    alive = [torch.ones(wt.shape[0], dtype=torch.bool) for wt in w]

    changed = True
    while changed:
        changed = False
        # Forward: units whose kept inputs are all gone output a constant; fold it into the next bias.
        for layer in range(n - 1):
            if constants[layer] is None or not absorbs[layer + 1]:
                continue
            incoming = inputs_alive if layer == 0 else alive[layer - 1]
            constant = alive[layer] & ~conn[layer][:, incoming].any(dim=1)
            if constant.any():
                pre = b[layer][constant] if b[layer] is not None else w[layer].new_zeros(int(constant.sum()))
                with torch.no_grad():
                    value = constants[layer](pre)
                if b[layer + 1] is None:
                    b[layer + 1] = w[layer + 1].new_zeros(w[layer + 1].shape[0])
                b[layer + 1] = b[layer + 1] + units(w[layer + 1], layer + 1)[:, constant].sum(-1) @ value
                alive[layer] &= ~constant
                changed = True
        # Backward: units (and inputs) whose kept outgoing weights all lead to removed units are unused.
        for layer in range(n - 1, -1, -1):
            used = conn[layer][alive[layer]].any(dim=0)
            if layer == 0 and not inputs_removable:
                continue
            below = inputs_alive if layer == 0 else alive[layer - 1]
            if (below & ~used).any():
                below &= used
                changed = True

    dead = [names[layer] for layer in range(n - 1) if not alive[layer].any()]
    if dead:
        raise ShrinkError(
            f"after structured shrink no neuron or channel of {', '.join(dead)} is left (each has all its incoming "
            "or all its outgoing weights pruned); the exported network would have a dead layer"
        )
    if not inputs_alive.any():
        raise ShrinkError(f"every input feature of {names[0]} is pruned away; the network would be constant")

    input_index = inputs_alive.nonzero().reshape(-1)
    neuron_index = [a.nonzero().reshape(-1) for a in alive]
    out_w, out_b = [], []
    for layer in range(n):
        cols = input_index if layer == 0 else neuron_index[layer - 1]
        rows = neuron_index[layer]
        kept = w[layer][rows]
        if kept.ndim == 2:
            kept = units(kept, layer)[:, cols].reshape(len(rows), -1)
        else:
            kept = kept[:, cols]
        out_w.append(kept.contiguous())
        out_b.append(None if b[layer] is None else b[layer][rows].contiguous())
    return ShrunkChain(out_w, out_b, input_index, neuron_index)


def shrink_linear_chain(
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor | None],
    masks: Sequence[torch.Tensor],
    activations: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    *,
    names: Sequence[str] | None = None,
) -> ShrunkChain:
    r"""Remove the neurons and inputs of a masked linear chain that cannot affect its output.

    The chain computes :math:`h_\ell = \phi_\ell((W_\ell \odot M_\ell) h_{\ell-1} + b_\ell)` for
    :math:`\ell = 1..L` (no :math:`\phi_L`); see the module docstring for the rules.

    Parameters
    ----------
    weights : sequence of torch.Tensor
        :math:`W_\ell` of shape (out_l, in_l), with in_{l+1} = out_l.
    biases : sequence of torch.Tensor or None
        :math:`b_\ell` of shape (out_l,), or None.
    masks : sequence of torch.Tensor
        Boolean keep-masks :math:`M_\ell` shaped like the weights.
    activations : sequence of callables
        The L - 1 elementwise maps :math:`\phi_\ell` between layers (applied to constant neurons).
    names : sequence of str, optional
        Layer names used in error messages.

    Returns
    -------
    ShrunkChain

    Raises
    ------
    ShrinkError
        Every input feature, or every neuron of some hidden layer, is removed.

    Examples
    --------
    >>> import torch
    >>> w1, w2 = torch.ones(3, 2), torch.ones(1, 3)
    >>> m1 = torch.tensor([[True, False], [False, False], [True, False]])  # neuron 1 has no input
    >>> m2 = torch.ones(1, 3, dtype=torch.bool)
    >>> out = shrink_linear_chain([w1, w2], [torch.zeros(3), torch.zeros(1)], [m1, m2], [torch.relu])
    >>> out.input_index.tolist(), out.neuron_index[0].tolist(), out.weights[1].shape
    ([0], [0, 2], torch.Size([1, 2]))
    """
    n = len(weights)
    names = list(names) if names is not None else [f"layer {i}" for i in range(n)]
    if not (len(biases) == len(masks) == len(names) == n) or len(activations) != n - 1 or n == 0:
        raise ValueError(
            f"need matching, non-empty weights/biases/masks/names and one activation fewer: got {len(weights)} "
            f"weights, {len(biases)} biases, {len(masks)} masks, {len(names)} names, {len(activations)} activations"
        )
    if any(w.ndim != 2 for w in weights):
        raise ValueError("shrink_linear_chain takes 2-D weights; conv chains go through shrink()")
    return _shrink_chain(
        weights,
        biases,
        masks,
        list(activations),
        blocks=[1] * n,
        absorbs=[True] * n,
        inputs_removable=True,
        names=names,
    )


# ------------------------------------------------------------------------------------------ module parsing


def _is_affine(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear | nn.Conv2d):
        return True
    return callable(getattr(module, "mean_parameters", None)) and (
        hasattr(module, "in_features") or hasattr(module, "kernel_size")
    )


def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) or hasattr(module, "kernel_size")


def _flat_chain(network: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of the chain, nested Sequentials flattened; a lone layer is a chain of one."""
    if not isinstance(network, nn.Module):
        raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}")
    if not isinstance(network, nn.Sequential):
        return [("", network)]
    chain: list[tuple[str, nn.Module]] = []

    def walk(seq: nn.Sequential, prefix: str) -> None:
        for name, child in seq.named_children():
            qualified = f"{prefix}.{name}" if prefix else name
            if isinstance(child, nn.Sequential):
                walk(child, qualified)
            else:
                chain.append((qualified, child))

    walk(network, "")
    return chain


def _describe_unsupported(items: list[tuple[str, nn.Module]]) -> str:
    return ", ".join(f"{name or '<network>'} ({type(module).__name__})" for name, module in items)


def _affine_params(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(module, nn.Linear | nn.Conv2d):
        return module.weight.detach(), None if module.bias is None else module.bias.detach()
    params = module.mean_parameters()
    return params["weight"].detach(), params.get("bias")


def _keeps_constants(module: nn.Module) -> bool:
    """Whether a per-channel pooling maps a constant map to the same constant everywhere."""
    if isinstance(module, nn.MaxPool2d):
        return True  # padding is -inf, so every window's maximum is the constant
    return not module.ceil_mode and (not module.count_include_pad or _all_zero(module.padding))


def _all_zero(padding) -> bool:
    if isinstance(padding, str):
        return padding == "valid"
    return all(p == 0 for p in (padding if isinstance(padding, tuple | list) else (padding,)))


def _conv_absorbs_constants(module: nn.Module) -> bool:
    """A constant input channel adds the same amount at every output position: no zero padding involved."""
    return getattr(module, "padding_mode", "zeros") != "zeros" or _all_zero(module.padding)


@dataclass
class _Stage:
    """One weight-bearing layer and everything that follows it up to the next one."""

    name: str
    module: nn.Module
    tail: list[nn.Module]  # modules after the layer, in order (activations, pools, Flatten); Dropout dropped
    block: int = 1


@dataclass
class _Parsed:
    prefix: list[nn.Module]  # modules before the first weight-bearing layer
    stages: list[_Stage]
    terminal: list[nn.Module]  # Softmax / LogSoftmax at the end


_POOLS = (nn.MaxPool2d, nn.AvgPool2d)
_SUPPORTED = ELEMENTWISE + _DROPPED + _TERMINAL + _POOLS + (nn.Flatten,)


def _parse(network: nn.Module) -> _Parsed:
    chain = _flat_chain(network)
    unsupported = [(name, m) for name, m in chain if not (_is_affine(m) or isinstance(m, _SUPPORTED))]
    unsupported += [(name, m) for name, m in chain if _is_affine(m) and _is_conv(m) and m.groups != 1]
    if unsupported:
        raise UnsupportedLayerError(
            f"structured shrink does not support these layers: {_describe_unsupported(unsupported)}. Supported: "
            "a torch.nn.Sequential of linear and Conv2d layers (Bayesian or torch.nn, groups=1), elementwise "
            f"activations ({', '.join(c.__name__ for c in ELEMENTWISE)}), MaxPool2d / AvgPool2d after convs, "
            "Dropout, one Flatten (first, or between the convs and the linear layers) and a final "
            "Softmax/LogSoftmax"
        )
    parsed = _Parsed([], [], [])
    flattened = False
    for name, module in chain:
        where = f"{type(module).__name__} at {name!r}"
        if parsed.terminal:
            raise UnsupportedLayerError(f"{where} comes after a final Softmax/LogSoftmax")
        last = parsed.stages[-1].module if parsed.stages else None
        if _is_affine(module):
            if _is_conv(module) and (flattened or (last is not None and not _is_conv(last))):
                raise UnsupportedLayerError(f"{where} comes after a Flatten or a linear layer")
            if not _is_conv(module) and last is not None and _is_conv(last) and not flattened:
                raise UnsupportedLayerError(f"{where} follows a conv layer without a Flatten in between")
            parsed.stages.append(_Stage(name, module, []))
        elif isinstance(module, _DROPPED):
            continue
        elif isinstance(module, nn.Flatten):
            if flattened or module.start_dim != 1 or module.end_dim != -1 or (last is not None and not _is_conv(last)):
                raise UnsupportedLayerError(
                    f"{where} must be Flatten(1, -1), once, before the first linear layer (and after the convs)"
                )
            flattened = True
            (parsed.stages[-1].tail if parsed.stages else parsed.prefix).append(module)
        elif isinstance(module, _TERMINAL):
            if module.dim not in (-1, 1):
                raise UnsupportedLayerError(f"{where} must act on dim -1 (or 1)")
            parsed.terminal.append(module)
        elif isinstance(module, _POOLS) and (flattened or (last is not None and not _is_conv(last))):
            raise UnsupportedLayerError(f"{where} must come before the Flatten")
        else:
            (parsed.stages[-1].tail if parsed.stages else parsed.prefix).append(module)
    if not parsed.stages:
        raise UnsupportedLayerError("the network has no linear or conv layer to shrink")
    for previous, stage in zip(parsed.stages, parsed.stages[1:], strict=False):
        if _is_conv(previous.module) and not _is_conv(stage.module):
            channels = previous.module.out_channels
            if stage.module.in_features % channels:
                raise UnsupportedLayerError(
                    f"linear layer {stage.name!r} takes {stage.module.in_features} features, not a multiple of the "
                    f"{channels} channels of conv layer {previous.name!r}"
                )
            stage.block = stage.module.in_features // channels
    return parsed


def _constant_map(tail: list[nn.Module]) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Values of constant units after ``tail``, or None when a pooling there does not keep constants."""
    modules = []
    for module in tail:
        if isinstance(module, _POOLS):
            if not _keeps_constants(module):
                return None
            continue
        if isinstance(module, nn.Flatten):
            continue
        modules.append(module)

    def apply(x: torch.Tensor) -> torch.Tensor:
        for module in modules:
            x = module(x)
        return x

    return apply


def _check_masks(masks: Mapping[str, torch.Tensor], stages: list[_Stage]) -> None:
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a mapping of layer name -> bool tensor, got {type(masks).__name__}")
    names = [stage.name for stage in stages]
    unknown = [key for key in masks if key not in names]
    if unknown:
        raise ValueError(
            f"masks name layers that are not linear or conv layers of the network: {unknown}; layers: {names}"
        )


def _dense_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def _dense_conv(like: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Conv2d:
    conv = nn.Conv2d(
        weight.shape[1],
        weight.shape[0],
        tuple(weight.shape[2:]),
        stride=like.stride,
        padding=like.padding,
        dilation=like.dilation,
        bias=bias is not None,
        padding_mode=getattr(like, "padding_mode", "zeros"),
        dtype=weight.dtype,
    )
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


def measured_layer_factory(
    batch_size: int = 256, *, repeats: int = 30
) -> Callable[[torch.Tensor, torch.Tensor | None], nn.Module]:
    """A ``layer_factory`` for :func:`shrink` that keeps, per layer, the faster of dense and CSR storage.

    Each shrunk layer is built as a float32 ``nn.Linear`` holding its masked weight and handed to
    :func:`probsparse.export.sparse_linear.choose_layer`, which times it dense and as
    :class:`~probsparse.export.sparse_linear.SparseLinear` (non-zero weights only) at ``batch_size`` on this
    machine and returns the faster.

    Parameters
    ----------
    batch_size : int, default 256
        Batch size the exported network will mostly see.
    repeats : int, default 30
        Timed calls per candidate.
    """
    from probsparse.export.sparse_linear import choose_layer

    batch_size = check_positive_int(batch_size, "batch_size")
    repeats = check_positive_int(repeats, "repeats")

    def build(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
        dense = _dense_linear(weight.to(torch.float32), None if bias is None else bias.to(torch.float32))
        return choose_layer(dense, batch_size=batch_size, repeats=repeats).module

    return build


def shrink(
    network: nn.Module,
    masks: Mapping[str, torch.Tensor],
    *,
    dtype: torch.dtype | None = None,
    layer_factory: Callable[[torch.Tensor, torch.Tensor | None], nn.Module] | None = None,
) -> nn.Sequential:
    """Shrink a pruned sequential network into a smaller plain ``torch.nn.Sequential``.

    Neurons of linear layers and channels of conv layers are the units removed. A conv channel with no kept
    filter weight outputs the constant map :math:`\\phi(b)`, folded into the next layer's bias when that
    layer is a linear one (after Flatten) or a conv without zero padding; otherwise it is kept.

    Parameters
    ----------
    network : torch.nn.Sequential
        Linear and ``Conv2d`` layers (Bayesian layers with ``mean_parameters()``, or ``torch.nn``; convs with
        ``groups=1``) with elementwise activations between them, ``MaxPool2d`` / ``AvgPool2d`` after convs,
        one ``Flatten(1, -1)`` (leading, or between the convs and the linear layers) and optionally a final
        ``Softmax``/``LogSoftmax``; ``Dropout`` is dropped. Left unchanged.
    masks : mapping of str to torch.Tensor
        Qualified layer name -> boolean keep-mask shaped like the weight, e.g. from
        :func:`probsparse.export.prune`. A layer without a mask keeps all its weights.
    dtype : torch.dtype, optional
        dtype of the exported weights (default: that of the posterior means).
    layer_factory : callable, optional
        ``(weight, bias) -> nn.Module`` building each exported linear layer from its shrunk masked weight
        (out, in) and bias; the default is a dense ``nn.Linear``. :func:`measured_layer_factory` picks
        dense or CSR (:class:`~probsparse.export.sparse_linear.SparseLinear`) per layer by measured speed.
        Conv layers stay dense ``nn.Conv2d`` (there is no sparse conv kernel).

    Returns
    -------
    torch.nn.Sequential
        ``[Flatten], [IndexSelect], Linear, act, ..., Linear, [Softmax]`` (with the convs and pools first for
        conv networks), in eval mode. Its output equals that of :func:`masked_network` up to floating-point
        rounding. Input features are dropped (``IndexSelect``) only when the first layer is linear.

    Raises
    ------
    UnsupportedLayerError
        The network holds other layer types (all are listed), or they are in an unsupported order.
    ShrinkError
        A layer would be left without neurons or channels.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> keep = {"0": torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)}
    >>> small = shrink(net, keep)
    >>> small
    Sequential(
      (0): IndexSelect(in_features=4, out_features=2)
      (1): Linear(in_features=2, out_features=2, bias=True)
      (2): ReLU()
      (3): Linear(in_features=2, out_features=2, bias=True)
    )
    >>> x = torch.randn(5, 4)
    >>> torch.allclose(small(x), masked_network(net, keep)(x), atol=1e-6)
    True
    """
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype or None, got {dtype!r}")
    parsed = _parse(network)
    _check_masks(masks, parsed.stages)
    weights, biases, keep, names = [], [], [], []
    for stage in parsed.stages:
        weight, bias = _affine_params(stage.module)
        mask = masks.get(stage.name)
        if mask is None:
            mask = torch.ones_like(weight, dtype=torch.bool)
        elif not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != weight.shape:
            raise ValueError(
                f"masks[{stage.name!r}] must be a bool tensor of the weight's shape {tuple(weight.shape)}, got "
                f"{getattr(mask, 'dtype', type(mask).__name__)} {tuple(getattr(mask, 'shape', ()))}"
            )
        if dtype is not None:
            weight = weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        weights.append(weight)
        biases.append(bias)
        keep.append(mask.to(weight.device))
        names.append(f"layer {stage.name!r}" if stage.name else "the layer")

    tails = [[copy.deepcopy(m).eval() for m in stage.tail] for stage in parsed.stages]
    first_is_linear = not _is_conv(parsed.stages[0].module)
    result = _shrink_chain(
        weights,
        biases,
        keep,
        [_constant_map(tail) for tail in tails[:-1]],
        blocks=[stage.block for stage in parsed.stages],
        absorbs=[not _is_conv(s.module) or _conv_absorbs_constants(s.module) for s in parsed.stages],
        inputs_removable=first_is_linear,
        names=names,
    )
    build = layer_factory or _dense_linear

    layers: list[nn.Module] = [copy.deepcopy(m).eval() for m in parsed.prefix]
    n_inputs = weights[0].shape[1]
    if first_is_linear and result.input_index.numel() < n_inputs:
        layers.append(IndexSelect(result.input_index, n_inputs))
    for stage, weight, bias, tail in zip(parsed.stages, result.weights, result.biases, tails, strict=True):
        layers.append(_dense_conv(stage.module, weight, bias) if weight.ndim == 4 else build(weight, bias))
        layers.extend(tail)
    layers.extend(copy.deepcopy(m) for m in parsed.terminal)
    return nn.Sequential(*layers).eval()


def masked_network(network: nn.Module, masks: Mapping[str, torch.Tensor], *, dtype: torch.dtype | None = None):
    """The posterior-mean network with every pruned weight set to zero (same architecture, no shrink).

    The reference that :func:`shrink` must reproduce, and the "pruned" network whose accuracy the export
    report quotes. Works on any network :func:`probsparse.export.to_deterministic` converts.

    Parameters
    ----------
    network : torch.nn.Module
    masks : mapping of str to torch.Tensor
        Qualified layer name -> boolean keep-mask shaped like that layer's weight.
    dtype : torch.dtype, optional
        Convert the result to this dtype.

    Returns
    -------
    torch.nn.Module
        A deterministic copy in eval mode.
    """
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a mapping of layer name -> bool tensor, got {type(masks).__name__}")
    plain = to_deterministic(network)
    for name, mask in masks.items():
        try:
            layer = plain.get_submodule(name)
        except AttributeError:
            raise ValueError(f"masks name a layer {name!r} that the network does not have") from None
        weight = getattr(layer, "weight", None)
        if not isinstance(weight, torch.Tensor) or not isinstance(mask, torch.Tensor) or mask.shape != weight.shape:
            raise ValueError(f"masks[{name!r}] must be a tensor shaped like the weight of layer {name!r}")
        with torch.no_grad():
            weight.mul_(mask.to(weight.dtype))
    if dtype is not None:
        plain = plain.to(dtype)
    return plain.eval()
