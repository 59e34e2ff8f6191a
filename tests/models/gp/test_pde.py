import math

import pytest
import torch

from probsparse.models.gp.kronecker_grid import KroneckerGridCovariance
from probsparse.models.gp.pde import (
    GPPDESolver,
    PDEOperator,
    PDEProblem,
    advection,
    allen_cahn_1d,
    make_kernel,
    poisson_1d,
    poisson_2d,
    source_from_solution,
)


def _sin3(X):
    return torch.sin(3 * X[:, 0])


def _rel_err(pred, truth):
    return float((pred - truth).norm() / truth.norm())


def test_operator_rejects_unsupported_terms_and_bad_specs():
    with pytest.raises(ValueError, match=r"unsupported operator term \(3,\)"):
        PDEOperator(1, {(3,): 1.0})
    with pytest.raises(ValueError, match="tuple of 2 derivative orders"):
        PDEOperator(2, {(2,): 1.0})
    with pytest.raises(ValueError, match="non-empty mapping"):
        PDEOperator(1, {})
    with pytest.raises(ValueError, match="coefficient of term"):
        PDEOperator(1, {(2,): float("inf")})
    with pytest.raises(ValueError, match="given together"):
        PDEOperator(1, {(2,): 1.0}, nonlinearity=torch.sin)
    with pytest.raises(ValueError, match="low < high"):
        poisson_1d(_sin3, domain=(1.0, 0.0))
    with pytest.raises(TypeError, match="solution must be callable"):
        poisson_1d(3.0)


def test_sources_from_solutions_match_closed_forms():
    X = torch.rand(7, 2, dtype=torch.float64)
    p = poisson_2d(lambda X: torch.sin(2 * X[:, 0]) * torch.cos(3 * X[:, 1]))
    want = -13 * torch.sin(2 * X[:, 0]) * torch.cos(3 * X[:, 1])
    torch.testing.assert_close(p.source(X), want)
    ac = allen_cahn_1d(_sin3)
    u = _sin3(X)
    torch.testing.assert_close(ac.source(X), -9 * u + u * (u**2 - 1))
    adv = advection(beta=5.0)
    torch.testing.assert_close(adv.source(X), torch.zeros(7, dtype=torch.float64), atol=1e-12, rtol=0)
    mixed = source_from_solution(PDEOperator(2, {(1, 1): 2.0}), lambda X: X[:, 0] ** 2 * X[:, 1] ** 3)
    torch.testing.assert_close(mixed(X), 2 * 6 * X[:, 0] * X[:, 1] ** 2)


def test_recovers_a_low_frequency_solution_to_1e6():
    p = poisson_1d(_sin3, domain=(0.0, 1.0))
    s = GPPDESolver(p, 30, num_mixtures=4, freq_scale=2.0, jitter=1e-12)
    hist = s.fit(30, lbfgs_steps=60)
    xt = torch.linspace(0, 1, 300, dtype=torch.float64)[:, None]
    assert _rel_err(s.predict(xt), _sin3(xt)) < 1e-6
    assert hist.steps > 0 and hist.records[-1]["phase"] == "final"
    torch.testing.assert_close(s.predict_grid([xt[:, 0]]), s.predict(xt))


def _manufactured_2d():
    def sol(X):
        return torch.sin(2 * math.pi * X[:, 0]) * torch.cos(4 * math.pi * X[:, 1])

    return sol, poisson_2d(sol, domain=((0.0, 1.0), (0.0, 1.0)))


@pytest.mark.parametrize("kernel", ["gaussian", "student_t"])
def test_exact_grid_values_of_a_manufactured_2d_solution_give_a_zero_residual(kernel):
    # One component per dimension at the solution's own frequencies with a very long envelope: the GP
    # derivative operators are then exact on these trigonometric functions, up to the jitter.
    sol, p = _manufactured_2d()
    s = GPPDESolver(p, (12, 14), kernel=kernel, num_mixtures=1, lengthscale=1e3, update="adam")
    with torch.no_grad():
        s.components[0].kernel.mixture_means.copy_(torch.tensor([[1.0], [2.0]]))
        s.components[0].values.copy_(sol(s.grid_points()).reshape(12, 14))
        _, exact = s.loss()
        s.components[0].values.add_(1e-3 * torch.randn(12, 14, dtype=torch.float64))
        _, perturbed = s.loss()
    assert float(exact) < 1e-6
    assert float(perturbed) > 100 * float(exact)


def test_kronecker_derivatives_equal_the_dense_derivative_covariance():
    sol, p = _manufactured_2d()
    s = GPPDESolver(p, (6, 5), kernel="gaussian", num_mixtures=2, lengthscale=0.2, jitter=1e-12, update="adam")
    comp = s.components[0]
    U = torch.randn(6, 5, dtype=torch.float64)
    with torch.no_grad():
        mats = s._factors(comp)
        cov = KroneckerGridCovariance([m[0] for m in mats])
        ours = s._linear_part(cov, mats, U).reshape(-1)
        X = s.grid_points()
        k = comp.kernel
        C = k.derivative_covariance(X, X) + 0 * torch.eye(30)
        alpha = torch.linalg.solve(cov.to_dense(), U.reshape(-1))
        dense = (k.derivative_covariance(X, X, (2, 0)) + k.derivative_covariance(X, X, (0, 2))) @ alpha
    assert C.shape == (30, 30)
    torch.testing.assert_close(ours, dense, rtol=1e-6, atol=1e-6 * float(dense.abs().max()))


def test_allen_cahn_gauss_newton_solves_a_nonlinear_problem():
    p = allen_cahn_1d(_sin3, domain=(0.0, 1.0))
    s = GPPDESolver(p, 30, num_mixtures=4, freq_scale=2.0, jitter=1e-12)
    s.fit(20, lbfgs_steps=40)
    xt = torch.linspace(0, 1, 200, dtype=torch.float64)[:, None]
    assert _rel_err(s.predict(xt), _sin3(xt)) < 1e-5


def test_adam_update_of_the_grid_values_lowers_the_loss_and_learned_precisions_move():
    p = poisson_1d(_sin3, domain=(0.0, 1.0))
    s = GPPDESolver(p, 20, num_mixtures=3, freq_scale=2.0, update="adam", learn_precisions=True,
                    residual_precision=1.0, boundary_precision=1.0)
    with torch.no_grad():
        before, _ = s.loss()
    tau0 = float(s.log_residual_precision.detach())
    hist = s.fit(150, lr=5e-2, lr_final=1e-2, log_every=10)
    assert hist.records[-1]["loss"] < float(before) - 1.0
    assert float(s.log_residual_precision.detach()) != tau0
    assert s.components[0].values.requires_grad


def test_extra_gp_adds_a_second_component_that_is_summed():
    p = poisson_1d(lambda X: torch.sin(X[:, 0]) + 0.1 * torch.sin(20 * X[:, 0]), domain=(0.0, 1.0))
    s = GPPDESolver(p, 40, num_mixtures=4, freq_init="spectrum", extra_gp=True)
    hist = s.fit(10, lbfgs_steps=15, extra_steps=10)
    assert len(s.components) == 2 and s.components[0].frozen
    assert any(r["phase"].startswith("extra_") for r in hist.records)
    xt = torch.linspace(0, 1, 50, dtype=torch.float64)[:, None]
    truth = p.solution(xt)
    assert _rel_err(s.predict(xt), truth) < 1e-2
    torch.testing.assert_close(s.grid_solution(), s.components[0].values + s.components[1].values)


def test_spectrum_initialisation_finds_the_source_frequency_and_the_baselines_are_single_components():
    p = poisson_1d(lambda X: torch.sin(100 * X[:, 0]))
    s = GPPDESolver(p, 400, num_mixtures=6, freq_init="spectrum", freq_scale=20.0)
    means = s.components[0].kernel.mixture_means.detach()[0]
    assert abs(float(means[0]) - 100 / (2 * math.pi)) < 0.05
    se = GPPDESolver(p, 400, kernel="se")
    assert se.components[0].kernel.num_mixtures == 1
    assert not se.components[0].kernel.mixture_means.requires_grad
    assert make_kernel("matern", 2, 1, None, 0.1).num_dims == 2


def test_stops_on_the_residual_tolerance_and_on_time():
    p = poisson_1d(_sin3, domain=(0.0, 1.0))
    s = GPPDESolver(p, 20, num_mixtures=3, freq_scale=2.0)
    assert s.fit(50, tol=1e30).stop_reason == "tolerance"
    s2 = GPPDESolver(p, 20, num_mixtures=3, freq_scale=2.0)
    assert s2.fit(100000, max_time=0.5).stop_reason == "time"


def test_nyquist_warning_names_the_numbers():
    p = poisson_1d(lambda X: torch.sin(100 * X[:, 0]))
    msg = r"Nyquist.*40 points on \[0, 6.28319\].*resolve up to 3.104.*reach 20; use at least 253 points"
    with pytest.warns(UserWarning, match=msg):
        GPPDESolver(p, 40, freq_scale=20.0)


def test_bad_inputs_are_named():
    def nan_source(X):
        return torch.full((X.shape[0],), float("nan"), dtype=X.dtype)

    op = PDEOperator(1, {(2,): 1.0})
    bad_src = PDEProblem(op, [(0.0, 1.0)], nan_source, _sin3)
    with pytest.raises(ValueError, match="source values contain 10 NaN"):
        GPPDESolver(bad_src, 10)
    bad_bnd = PDEProblem(op, [(0.0, 1.0)], _sin3, lambda X: X[:, 0] / 0.0)
    with pytest.raises(ValueError, match="boundary values contain"):
        GPPDESolver(bad_bnd, 10)
    p = poisson_1d(_sin3, domain=(0.0, 1.0))
    with pytest.raises(ValueError, match="grid_size"):
        GPPDESolver(p, (10, 10))
    with pytest.raises(ValueError, match="kernel must be one of"):
        GPPDESolver(p, 10, kernel="rbf")
    with pytest.raises(ValueError, match="dense_limit"):
        GPPDESolver(p, 100, update="newton", dense_limit=50)
    with pytest.raises(ValueError, match="freq_init"):
        GPPDESolver(p, 10, freq_init="random")
    with pytest.raises(TypeError, match="PDEProblem"):
        GPPDESolver("poisson", 10)
    s = GPPDESolver(p, 10, freq_scale=1.0)
    with pytest.raises(ValueError, match=r"X must be a tensor of shape \(n, 1\)"):
        s.predict(torch.zeros(3, 2, dtype=torch.float64))


def test_collocation_update_enforces_boundary_and_interior_equations_exactly():
    sol, p = _manufactured_2d()
    s = GPPDESolver(p, (14, 16), kernel="student_t", num_mixtures=3, freq_init="spectrum", update="collocation")
    with torch.no_grad():
        _, rel = s.loss()
    U = s.components[0].values.detach()
    assert float(rel) < 1e-9  # interior residual, relative to the source scale
    truth = sol(s.grid_points()).reshape(14, 16)
    torch.testing.assert_close(U[s.boundary_mask], truth[s.boundary_mask])
    # The same interior equations solved densely.
    comp = s.components[0]
    with torch.no_grad():
        mats = s._factors(comp)
        cov = KroneckerGridCovariance([m[0] for m in mats])
        lin = s._linear_part(cov, mats, U)
    torch.testing.assert_close(lin[1:-1, 1:-1], s.source[1:-1, 1:-1], rtol=1e-8, atol=1e-8 * float(s.source_scale))
    hist = s.fit(0, lbfgs_steps=15)
    xt = [torch.linspace(0, 1, 30, dtype=torch.float64)] * 2
    mesh = torch.meshgrid(*xt, indexing="ij")
    exact = sol(torch.stack([m.reshape(-1) for m in mesh], -1)).reshape(30, 30)
    assert float((s.predict_grid(xt) - exact).norm() / exact.norm()) < 1e-3
    assert hist.steps > 0


def test_collocation_update_refuses_what_it_cannot_solve():
    from probsparse.models.gp.pde import allen_cahn_2d

    p = allen_cahn_2d(lambda X: torch.sin(X[:, 0]) * torch.sin(X[:, 1]))
    with pytest.raises(ValueError, match="collocation.*nonlinearity"):
        GPPDESolver(p, 10, update="collocation", freq_scale=1.0)
    mixed = PDEProblem(PDEOperator(2, {(1, 1): 1.0}), [(0.0, 1.0), (0.0, 1.0)], _sin3, _sin3)
    with pytest.raises(ValueError, match="mixed-derivative"):
        GPPDESolver(mixed, 10, update="collocation", freq_scale=1.0)


def test_explicit_weight_prior_enters_the_loss():
    import gpytorch

    p = poisson_1d(_sin3, domain=(0.0, 1.0))
    plain = GPPDESolver(p, 16, num_mixtures=3, freq_scale=2.0)
    prior = gpytorch.priors.HorseshoePrior(0.1)
    with_prior = GPPDESolver(p, 16, num_mixtures=3, freq_scale=2.0, weights_prior=prior)
    with torch.no_grad():
        a, _ = plain.loss()
        b, _ = with_prior.loss()
        w = with_prior.components[0].kernel.mixture_weights
        want = -prior.log_prob(w).sum() / with_prior.num_points
    torch.testing.assert_close(b - a, want)


def test_auto_update_picks_newton_small_collocation_large_and_adam_otherwise():
    from probsparse.models.gp.pde import allen_cahn_2d

    sol, p = _manufactured_2d()
    assert GPPDESolver(p, 8, num_mixtures=2).update == "newton"
    assert GPPDESolver(p, 8, num_mixtures=2, dense_limit=10).update == "collocation"
    ac = allen_cahn_2d(sol)
    assert GPPDESolver(ac, 8, num_mixtures=2, freq_scale=0.5, dense_limit=10).update == "adam"
    with pytest.raises(TypeError, match="grid_size must be an int or a sequence"):
        GPPDESolver(p, 8.0)
