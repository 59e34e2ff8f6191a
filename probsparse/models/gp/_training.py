r"""The optimisation loops shared by the GP models here, their stopping rule and the convergence verdict.

Convergence (the same rule decides when a fit stops early and what ``converged_`` reports): with losses
:math:`L_1, \dots, L_T` and the last 10 % of them, :math:`L_{s}, \dots, L_T` (:math:`s = \lfloor 0.9 T\rfloor`,
and at least the last ``MIN_WINDOW`` = 10 of them), the fit has converged when

.. math::

    \rho < \mathrm{tol}, \qquad
    \rho = \frac{\max_{t \ge s} L_t - \min_{t \ge s} L_t}{\max(|L_T|, 1)} \;\text{(deterministic)}, \quad
    \rho = \frac{|\hat L_{s} - \hat L_{T}|}{\max(|\hat L_T|, 1)} \;\text{(stochastic)},

where a deterministic objective (full-batch, closed-form or quadrature expectations) is judged by the spread
of its window, and a stochastic one (Monte Carlo or minibatch estimates) by the least-squares straight line
:math:`\hat L` through the losses of the window, evaluated at its two ends, so that the estimation noise of
single steps is averaged out but a remaining drift is not.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from ..._validation import check_positive_int, check_positive_real

__all__ = ["Losses", "fit_loop", "relative_change", "OPTIMIZERS", "SCHEDULES"]

OPTIMIZERS = ("adam", "lbfgs")
SCHEDULES = ("constant", "cosine")
_INFEASIBLE = 1e30
MIN_WINDOW = 10


class Losses(list):
    """Per-iteration losses (a list) with ``stop_reason``: "converged", "stalled", "infeasible" or "budget"."""

    stop_reason = "budget"
    switched_at = None


def relative_change(
    losses: list[float], fraction: float = 0.1, *, smooth: bool = False, min_window: int = MIN_WINDOW
) -> float:
    r"""Relative change of the loss over the last ``fraction`` of the iterations.

    .. math::

        \rho = \frac{\max_{s \le t \le T} L_t - \min_{s \le t \le T} L_t}{\max(|L_T|, 1)}
        \quad (\texttt{smooth=False}), \qquad
        \rho = \frac{|\hat L_{s} - \hat L_{T}|}{\max(|\hat L_T|, 1)} \quad (\texttt{smooth=True}),

    with :math:`s = \max(\min(\lfloor (1 - \text{fraction})\, T \rfloor, T - \texttt{min\_window}), 0)`. For
    deterministic objectives (``smooth=False``) the spread of the window bounds the change between any two of
    its iterates (an oscillating optimiser cannot pass by chance); for stochastic objectives
    (``smooth=True``) :math:`\hat L` is the ordinary least-squares line fitted to :math:`L_s, \dots, L_T`, so
    the estimation noise of single steps averages out but a drift does not (the fitted change
    :math:`|\text{slope}| \cdot (T - s)`). The window covers at least ``min_window``
    iterations (all of them for shorter runs), so that a short run cannot pass on a few flat steps.
    Returns ``inf`` for fewer than two losses or non-finite losses.

    Parameters
    ----------
    losses : sequence of float
        Per-iteration losses, length :math:`T`.
    fraction : float
        Window as a fraction of the iterations, in (0, 1].
    smooth : bool
        Fit a line through the window instead of taking its spread (max - min).
    min_window : int
        Smallest window, in iterations (default 10).

    Returns
    -------
    float
        :math:`\rho \ge 0`.

    Examples
    --------
    >>> relative_change([10.0] * 50 + [2.0] * 50)
    0.0
    >>> round(relative_change([4.0, 3.0, 2.5, 1.0], smooth=True), 6)  # all 4 in the window; line 4.05 -> 1.2
    2.375
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n = len(losses)
    if n < 2:
        return float("inf")
    min_window = check_positive_int(min_window, "min_window")
    start = max(min(int(n * (1 - fraction)), n - max(min_window, 2)), 0)
    window = [float(v) for v in losses[start:]]
    if not all(math.isfinite(v) for v in window):
        return float("inf")
    if not smooth:
        # the spread of the window, not just its end points, which an oscillating optimiser can make
        # equal by chance
        return (max(window) - min(window)) / max(abs(window[-1]), 1.0)
    m = len(window)
    tbar = (m - 1) / 2
    lbar = sum(window) / m
    sxx = sum((t - tbar) ** 2 for t in range(m))
    slope = sum((t - tbar) * (v - lbar) for t, v in enumerate(window)) / sxx
    first, last = lbar - slope * tbar, lbar + slope * tbar
    return abs(first - last) / max(abs(last), 1.0)


def fit_loop(
    loss_fn: Callable[[], torch.Tensor],
    params: Iterable[torch.nn.Parameter],
    num_steps: int,
    lr: float,
    *,
    optimizer: str = "adam",
    schedule: str = "constant",
    tol: float | None = None,
    min_steps: int = 50,
    smooth: bool = False,
    final_lr_fraction: float = 0.01,
    fallback_lr: float | None = None,
) -> list[float]:
    r"""Minimise ``loss_fn()`` for at most ``num_steps`` iterations; return the per-iteration losses.

    .. math::

        \theta_{t+1} = \theta_t - \eta_t\, \mathrm{step}_t, \qquad
        \eta_t = \eta_{\min} + \tfrac12(\eta - \eta_{\min})\big(1 + \cos(\pi t / T)\big)
        \;\; (\texttt{schedule="cosine"}), \quad \eta_{\min} = \texttt{final\_lr\_fraction} \cdot \eta,

    with the Adam step (``optimizer="adam"``), or L-BFGS with a strong-Wolfe line search
    (``optimizer="lbfgs"``, one quasi-Newton iteration per step, ``lr`` the initial trial step, no schedule):
    the method for the exact marginal likelihoods, which are deterministic and have few hyperparameters.

    **Stopping rule.** With ``tol`` given, the loop stops at the first iteration :math:`t \ge` ``min_steps``
    at which :func:`relative_change` (with ``smooth``) of the losses so far is below ``tol`` — the same test
    the models report as ``converged_``, so a fit either stops converged or uses its whole budget. L-BFGS
    also stops when its line search can make no more progress (a stationary point to working precision,
    ``stop_reason="stalled"``) or its last step left the feasible region (``"infeasible"``: the previous
    iterate is restored).
    If that happens before the test passes and ``fallback_lr`` is given, the remaining budget is spent on
    Adam with the cosine schedule from that rate, under the same stopping rule; ``losses.switched_at``
    records the iteration (``None`` if it did not happen). This covers both ways L-BFGS stops short: at
    the optimum to working precision before ten flat iterations could be recorded (small Adam steps then
    leave the loss flat and the test passes on iterations actually run), and at kinks or badly
    conditioned spots where its line search finds no decrease (Adam then goes on descending, and the
    test sees it). Without ``fallback_lr`` a stalled L-BFGS restarts once from steepest descent.

    Parameters
    ----------
    loss_fn : callable
        Returns a 0-d tensor; called once per Adam step, one or more times per L-BFGS step.
    params : iterable of Parameter
        Trainable parameters (those with ``requires_grad``).
    num_steps : int
        Step budget :math:`T`.
    lr : float
        Adam's (initial) learning rate, or L-BFGS's trial step length.
    optimizer : {"adam", "lbfgs"}
    schedule : {"constant", "cosine"}
        Adam's learning-rate schedule over the budget :math:`T`.
    tol : float, optional
        Stopping tolerance; ``None`` runs the whole budget.
    min_steps : int
        Iterations before the stopping rule is applied.
    smooth : bool
        Stochastic objective: the stopping test fits a line through the window (see :func:`relative_change`).
    final_lr_fraction : float
        :math:`\eta_{\min}/\eta` of the cosine schedule, in (0, 1].
    fallback_lr : float, optional
        Adam's initial rate when L-BFGS stops short of the test (see above); ``None``: no fallback.

    Returns
    -------
    Losses
        The loss at each iterate (before its update), length at most ``num_steps``, with ``stop_reason``
        ("converged", "budget", "stalled" or "infeasible") and ``switched_at``.
    """
    num_steps = check_positive_int(num_steps, "num_steps")
    lr = check_positive_real(lr, "lr")
    min_steps = check_positive_int(min_steps, "min_steps")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if tol is not None:
        tol = check_positive_real(tol, "tol")
    if fallback_lr is not None:
        fallback_lr = check_positive_real(fallback_lr, "fallback_lr")
    final_lr_fraction = check_positive_real(final_lr_fraction, "final_lr_fraction")
    if final_lr_fraction > 1:
        raise ValueError(f"final_lr_fraction must be in (0, 1], got {final_lr_fraction}")
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")

    losses = Losses()

    def record(value: float) -> None:
        if value != value:  # NaN: stop at once rather than optimise garbage
            raise FloatingPointError(f"the loss became NaN after {len(losses)} steps; lower lr")
        losses.append(value)

    def done() -> bool:
        return tol is not None and len(losses) >= min_steps and relative_change(losses, smooth=smooth) < tol

    if optimizer == "lbfgs":

        def new_lbfgs():
            return torch.optim.LBFGS(
                params,
                lr=lr,
                max_iter=1,
                # torch caps the line search at max_eval minus the evaluations already made in the call,
                # and its default (5/4 of max_iter) would leave none: allow the usual 25 trial points
                max_eval=26,
                history_size=20,
                line_search_fn="strong_wolfe",
                tolerance_grad=1e-10,
                tolerance_change=1e-14,
            )

        opt = new_lbfgs()
        restarted = False

        def closure():
            opt.zero_grad(set_to_none=True)
            try:
                loss = loss_fn()
            except torch.linalg.LinAlgError:
                # A line-search trial step left the feasible region (a covariance no longer positive
                # definite): report a huge finite loss so the search backtracks; an infinite one would turn
                # its cubic interpolation into NaN.
                return torch.tensor(_INFEASIBLE, dtype=torch.float64)
            if not torch.isfinite(loss):
                return torch.tensor(_INFEASIBLE, dtype=torch.float64)
            loss.backward()
            # at the edge of a variance's range (a softplus near underflow) the value can stay finite while
            # the gradient does not; a NaN direction would wreck the whole quasi-Newton memory
            if not all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params):
                opt.zero_grad(set_to_none=True)
                return torch.tensor(_INFEASIBLE, dtype=torch.float64)
            return loss

        last_good = None
        for _ in range(num_steps):
            before = [p.detach().clone() for p in params]
            value = float(opt.step(closure).detach())
            if value >= _INFEASIBLE:
                if last_good is None:
                    raise FloatingPointError("the loss cannot be evaluated at the initial parameters")
                # the last accepted step left the feasible region (it can happen at the bound of a
                # variance's range): go back to the last good iterate and stop there
                with torch.no_grad():
                    for p, b in zip(params, last_good, strict=True):
                        p.copy_(b)
                losses.stop_reason = "infeasible"
                break
            last_good = before
            record(value)
            if done():
                losses.stop_reason = "converged"
                break
            if all(torch.equal(b, p) for b, p in zip(before, params, strict=True)):
                if restarted or fallback_lr is not None:
                    # no decrease along the gradient either: a stationary point to working precision,
                    # or a kink / ill-conditioning the line search cannot get past
                    losses.stop_reason = "stalled"
                    break
                # the line search found no decrease along the quasi-Newton direction, whose curvature
                # memory can be stale on badly scaled problems: start again from steepest descent once
                opt = new_lbfgs()
                restarted = True
            else:
                restarted = False
        remaining = num_steps - len(losses)
        if losses.stop_reason in ("stalled", "infeasible") and fallback_lr is not None and remaining > 0:
            losses.switched_at = len(losses)
            _adam_loop(losses, loss_fn, params, remaining, fallback_lr, "cosine", final_lr_fraction, record, done)
        return losses

    return _adam_loop(losses, loss_fn, params, num_steps, lr, schedule, final_lr_fraction, record, done)


def _adam_loop(losses, loss_fn, params, num_steps, lr, schedule, final_lr_fraction, record, done):
    """Adam steps appended to ``losses`` until ``done()`` or ``num_steps`` more steps."""
    opt = torch.optim.Adam(params, lr=lr)
    sched = None
    if schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=num_steps, eta_min=final_lr_fraction * lr)
    losses.stop_reason = "budget"
    for _ in range(num_steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        record(float(loss.detach()))
        if done():
            losses.stop_reason = "converged"
            break
    return losses
