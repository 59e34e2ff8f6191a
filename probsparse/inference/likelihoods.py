"""Observation models for fitting a Bayesian network: per-example negative log-likelihoods of its outputs.

A likelihood turns the network output :math:`f(x_i)` of a minibatch and its targets :math:`y_i` into the
per-example negative log-likelihoods :math:`-\\log p(y_i \\mid f(x_i))`, shape ``(batch,)``;
:func:`~probsparse.inference.fitting.fit` averages them. Learned quantities (the Gaussian noise scale) are
parameters of the likelihood module, optimised and checkpointed with the network.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from probsparse._validation import check_positive_real

__all__ = ["CategoricalLikelihood", "GaussianLikelihood", "as_likelihood"]


class CategoricalLikelihood(nn.Module):
    r"""Categorical observations with the network output as logits.

    .. math::

        -\log p(y_i \mid f_i) = -f_{i, y_i} + \log \sum_{c=1}^{C} e^{f_{ic}},

    for logits :math:`f` of shape ``(batch, C)`` and integer labels :math:`y \in \{0, \dots, C - 1\}` of
    shape ``(batch,)``.

    Examples
    --------
    >>> import torch
    >>> lik = CategoricalLikelihood()
    >>> lik(torch.zeros(2, 4), torch.tensor([0, 3]))   # uniform logits: log 4 each
    tensor([1.3863, 1.3863])
    """

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-example NLL, shape ``(batch,)``; ``output`` (batch, C) logits, ``target`` (batch,) labels."""
        if output.ndim != 2:
            raise ValueError(
                f"categorical likelihood: network output must be (batch, classes) logits, got shape "
                f"{tuple(output.shape)}"
            )
        if target.shape != output.shape[:1]:
            raise ValueError(
                f"categorical likelihood: y must have shape ({output.shape[0]},) to match the network "
                f"output {tuple(output.shape)}, got {tuple(target.shape)}"
            )
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"categorical likelihood: y must hold integer class labels, got dtype {target.dtype}")
        n_classes = output.shape[1]
        lowest, highest = (int(v) for v in target.aminmax()) if target.numel() else (0, 0)
        if lowest < 0 or highest >= n_classes:
            raise ValueError(
                f"categorical likelihood: y holds labels outside [0, {n_classes - 1}] for a network "
                f"with {n_classes} outputs"
            )
        return F.cross_entropy(output, target.long(), reduction="none")

    def extra_repr(self) -> str:
        return "logits"


class GaussianLikelihood(nn.Module):
    r"""Gaussian observations around the network output, with a fixed or learned noise scale.

    .. math::

        -\log p(y_i \mid f_i) = \sum_{k} \Big[ \tfrac12 \log(2\pi\sigma^2)
            + \frac{(y_{ik} - f_{ik})^2}{2\sigma^2} \Big],

    summed over the trailing output dims :math:`k` of one example. The output must have the target's shape,
    or shape ``(batch, 1)`` for targets of shape ``(batch,)`` (never broadcast beyond that: an output of
    ``(batch, 1)`` against ``(batch,)`` targets would otherwise broadcast to ``(batch, batch)``).

    Parameters
    ----------
    scale : float or None, default=None
        Known noise standard deviation :math:`\sigma > 0`. ``None`` learns it, as the parameter
        ``log_scale`` (:math:`\log\sigma`, unconstrained) starting from ``init_scale``.
    init_scale : float, default=1.0
        Starting :math:`\sigma` when learned.

    Attributes
    ----------
    log_scale : torch.nn.Parameter of shape () or None
        Learned :math:`\log\sigma`; ``None`` when the scale is fixed.
    scale : torch.Tensor of shape ()
        The current :math:`\sigma`.

    Examples
    --------
    >>> import torch
    >>> lik = GaussianLikelihood(scale=1.0)
    >>> nll = lik(torch.zeros(3), torch.tensor([0.0, 1.0, -2.0]))
    >>> torch.allclose(nll, 0.5 * torch.log(torch.tensor(2 * torch.pi)) + 0.5 * torch.tensor([0.0, 1.0, 4.0]))
    True
    >>> GaussianLikelihood().log_scale.requires_grad   # learned from log(init_scale) = 0
    True
    """

    def __init__(self, scale: float | None = None, *, init_scale: float = 1.0) -> None:
        super().__init__()
        if scale is None:
            init_scale = check_positive_real(init_scale, "init_scale")
            self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
            self._fixed_scale = None
        else:
            self._fixed_scale = check_positive_real(scale, "scale")
            self.register_parameter("log_scale", None)

    @property
    def scale(self) -> torch.Tensor:
        if self.log_scale is None:
            return torch.tensor(self._fixed_scale)
        return self.log_scale.exp()

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-example NLL, shape ``(batch,)``; ``output`` and ``target`` of matching shapes."""
        if not target.is_floating_point():
            raise TypeError(f"gaussian likelihood: y must be a floating-point tensor, got dtype {target.dtype}")
        if output.ndim == 2 and output.shape[1] == 1 and target.ndim == 1:
            output = output[:, 0]
        if output.shape != target.shape or output.ndim == 0:
            raise ValueError(
                f"gaussian likelihood: network output of shape {tuple(output.shape)} does not match y "
                f"of shape {tuple(target.shape)}"
            )
        if self.log_scale is None:
            log_scale = torch.tensor(math.log(self._fixed_scale), dtype=output.dtype, device=output.device)
        else:
            log_scale = self.log_scale.to(output.dtype)
        per_entry = 0.5 * math.log(2 * math.pi) + log_scale + 0.5 * ((target - output) * torch.exp(-log_scale)) ** 2
        return per_entry.reshape(per_entry.shape[0], -1).sum(-1)

    def extra_repr(self) -> str:
        return "learned scale" if self.log_scale is not None else f"scale={self._fixed_scale}"


_NAMED = {"categorical": CategoricalLikelihood, "gaussian": GaussianLikelihood}


def as_likelihood(likelihood: str | Callable) -> Callable:
    """The likelihood object for ``likelihood``.

    Parameters
    ----------
    likelihood : {"categorical", "gaussian"} or callable
        A name (``"gaussian"`` learns its noise scale), a likelihood module, or any callable
        ``likelihood(output, y) -> tensor of shape (batch,)`` giving per-example negative log-likelihoods.

    Returns
    -------
    callable

    Examples
    --------
    >>> as_likelihood("categorical")
    CategoricalLikelihood(logits)
    """
    if isinstance(likelihood, str):
        if likelihood not in _NAMED:
            raise ValueError(f"likelihood must be one of {sorted(_NAMED)} or a callable, got {likelihood!r}")
        return _NAMED[likelihood]()
    if not callable(likelihood):
        raise TypeError(f"likelihood must be a string or a callable, got {type(likelihood).__name__}")
    return likelihood
