"""The optimisation loop shared by the GP models here, and its convergence verdict."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from ..._validation import check_positive_int, check_positive_real

__all__ = ["adam_fit", "relative_change"]


def relative_change(losses: list[float], fraction: float = 0.1) -> float:
    r"""Relative change of the loss over the last ``fraction`` of the iterations.

    .. math::

        \frac{|\bar L_{\text{start}} - \bar L_{\text{end}}|}{\max(|\bar L_{\text{end}}|, 1)},

    where the two means are over windows of ``max(1, T/40)`` steps at the start and the end of the last
    ``fraction`` of the ``T`` losses (windows smooth stochastic objectives; a deterministic loss uses
    one-step windows for short runs). Returns ``inf`` for fewer than two losses.

    Examples
    --------
    >>> relative_change([10.0] * 50 + [2.0] * 50)
    0.0
    """
    n = len(losses)
    if n < 2:
        return float("inf")
    start = min(int(n * (1 - fraction)), n - 2)
    w = max(1, n // 40)
    first = losses[start : start + w]
    last = losses[-w:]
    a, b = sum(first) / len(first), sum(last) / len(last)
    return abs(a - b) / max(abs(b), 1.0)


def adam_fit(
    loss_fn: Callable[[], torch.Tensor], params: Iterable[torch.nn.Parameter], num_steps: int, lr: float
) -> list[float]:
    """Minimise ``loss_fn()`` with Adam for ``num_steps`` steps; return the per-step losses."""
    num_steps = check_positive_int(num_steps, "num_steps")
    lr = check_positive_real(lr, "lr")
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(num_steps):
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        if value != value:  # NaN: stop at once rather than optimise garbage
            raise FloatingPointError(f"the loss became NaN after {len(losses)} steps; lower lr")
        losses.append(value)
    return losses
