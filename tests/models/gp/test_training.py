import math

import numpy as np
import pytest
import torch

from probsparse.models.gp._training import fit_loop, relative_change

D = torch.float64


def test_relative_change_deterministic_is_the_spread_of_the_last_tenth():
    rng = np.random.default_rng(0)
    losses = list(np.cumsum(rng.standard_normal(300)) + 50.0)
    window = losses[270:]  # last 10 % of 300
    ref = (max(window) - min(window)) / abs(window[-1])
    assert relative_change(losses) == pytest.approx(ref, rel=1e-12)
    # end points equal but the window oscillates: not converged
    wiggle = [1.0] * 90 + [2.0, 3.0, 2.0, 3.0, 2.0, 3.0, 2.0, 3.0, 2.0, 2.0]
    assert relative_change(wiggle) == pytest.approx(1 / 2)


def test_relative_change_smooth_is_the_least_squares_line_over_the_window():
    rng = np.random.default_rng(1)
    t = np.arange(500)
    losses = 3.0 - 1e-3 * t + 0.05 * rng.standard_normal(500)
    slope, intercept = np.polyfit(np.arange(50), losses[450:], 1)
    first, last = intercept, intercept + 49 * slope
    ref = abs(first - last) / max(abs(last), 1.0)
    assert relative_change(list(losses), smooth=True) == pytest.approx(ref, rel=1e-10)
    # noise alone, no drift: the fitted change is far below the spread
    flat = list(2.0 + 0.05 * rng.standard_normal(2000))
    assert relative_change(flat, smooth=True) < 0.2 * relative_change(flat)


def test_relative_change_uses_at_least_min_window_steps_and_rejects_bad_input():
    losses = [5.0, 4.0, 3.0, 2.0, 1.5, 1.2, 1.1, 1.05, 1.04, 1.035, 1.034, 1.034]
    # 10 % of 12 steps is one step (flat); the 10-step minimum window still sees the descent
    assert relative_change(losses) == pytest.approx((3.0 - 1.034) / 1.034)
    assert relative_change(losses, min_window=2) == 0.0
    assert relative_change([1.0]) == math.inf
    assert relative_change([1.0, float("nan")]) == math.inf
    with pytest.raises(ValueError, match="fraction"):
        relative_change(losses, fraction=0.0)


def rosenbrock_problem():
    p = torch.nn.Parameter(torch.tensor([-1.2, 1.0], dtype=D))

    def loss():
        return (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2

    return p, loss


def test_lbfgs_finds_the_rosenbrock_minimum_and_stops_early():
    p, loss = rosenbrock_problem()
    losses = fit_loop(loss, [p], 500, 1.0, optimizer="lbfgs", tol=1e-10, min_steps=20)
    # at the minimum the loss is ~1e-17 and no line search can decrease it further
    assert losses.stop_reason in ("converged", "stalled")
    assert len(losses) < 100
    assert torch.allclose(p.detach(), torch.ones(2, dtype=D), atol=1e-6)
    assert losses[-1] < 1e-12


def test_lbfgs_matches_the_closed_form_optimum_of_a_quadratic():
    A = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]], dtype=D)
    b = torch.tensor([1.0, -2.0, 0.5], dtype=D)
    p = torch.nn.Parameter(torch.zeros(3, dtype=D))
    losses = fit_loop(lambda: 0.5 * p @ A @ p - b @ p + 5.0, [p], 100, 1.0, optimizer="lbfgs", tol=1e-12)
    assert torch.allclose(p.detach(), torch.linalg.solve(A, b), atol=1e-8)
    # solved to machine precision within a few iterations: either the 10-iteration window is flat or
    # the line search can find no decrease at all (a stall, which ends the run before the budget)
    assert losses.stop_reason in ("converged", "stalled") and len(losses) < 100
    assert losses[-1] == pytest.approx(5.0 - 0.5 * (b @ torch.linalg.solve(A, b)).item(), abs=1e-12)


def test_a_fit_that_cannot_converge_in_its_budget_says_so():
    p, loss = rosenbrock_problem()
    losses = fit_loop(loss, [p], 30, 1e-3, tol=1e-8)  # slow Adam on a curved valley
    assert losses.stop_reason == "budget" and len(losses) == 30
    assert relative_change(losses) > 1e-8


def test_cosine_decay_lets_adam_settle_where_a_constant_rate_keeps_oscillating():
    def run(schedule):
        p = torch.nn.Parameter(torch.tensor([3.0, -2.0], dtype=D))
        return fit_loop(lambda: p.abs().sum() + 1.0, [p], 600, 0.2, schedule=schedule), p

    (constant, _), (cosine, p) = run("constant"), run("cosine")
    # at a kink Adam's steps stay ~lr, so at a constant rate the loss keeps jumping by ~lr around the minimum;
    # decayed to lr/100 the jumps shrink accordingly
    assert relative_change(constant) > 0.02
    assert relative_change(cosine) < 0.1 * relative_change(constant)
    assert p.detach().abs().max() < 0.01


def test_lbfgs_backs_off_from_steps_that_leave_the_feasible_region():
    # the loss falls towards x = 1, where a 1x1 "covariance" 1 - x stops being positive definite
    x = torch.nn.Parameter(torch.tensor([0.0], dtype=D))

    def loss():
        chol = torch.linalg.cholesky((1 - x).reshape(1, 1))
        return (x - 2).pow(2).sum() - 1e-3 * torch.log(chol).sum()

    losses = fit_loop(loss, [x], 200, 1.0, optimizer="lbfgs", tol=1e-12, min_steps=20)
    assert all(math.isfinite(v) for v in losses)
    # the barrier's optimum: d/dx [(x-2)^2 - 5e-4 log(1-x)] = 0, i.e. u = 1 - x solves u^2 + u - 2.5e-4 = 0
    ref = 1 - (math.sqrt(1 + 1e-3) - 1) / 2
    assert x.item() == pytest.approx(ref, abs=1e-6)


def test_bad_arguments_raise():
    p = torch.nn.Parameter(torch.zeros(1, dtype=D))
    f = lambda: (p * p).sum()  # noqa: E731
    with pytest.raises(ValueError, match="optimizer"):
        fit_loop(f, [p], 5, 0.1, optimizer="sgd")
    with pytest.raises(ValueError, match="schedule"):
        fit_loop(f, [p], 5, 0.1, schedule="step")
    with pytest.raises(ValueError, match="tol"):
        fit_loop(f, [p], 5, 0.1, tol=0.0)
    with pytest.raises(ValueError, match="no trainable parameters"):
        fit_loop(f, [torch.nn.Parameter(torch.zeros(1), requires_grad=False)], 5, 0.1)
    assert len(fit_loop(f, [p], 7, 0.1)) == 7
