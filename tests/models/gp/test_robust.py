import math

import gpytorch
import pytest
import torch
from scipy import integrate, stats

from probsparse.models.gp.nngp import ReLUNNGPKernel
from probsparse.models.gp.robust import StudentTLikelihoodGP, VariationalGP

D = torch.float64


def data(n=15, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g, dtype=D) * 4 - 2
    y = torch.sin(2 * x[:, 0]) + 0.1 * torch.randn(n, generator=g, dtype=D)
    return x, y


def set_optimal_q(model):
    """Put q(u) at the exact Gaussian posterior of f(Z) (inducing points = training inputs)."""
    x, y = model.train_x, model.train_y
    strategy = model.gp.variational_strategy
    with torch.no_grad():
        K = model.gp.covar_module(x, x).to_dense()
        m = model.gp.mean_module.constant.item()
        s2 = model.likelihood.noise.item()
        A = K + s2 * torch.eye(len(y), dtype=D)
        post_mean = K @ torch.linalg.solve(A, y - m)
        post_cov = K - K @ torch.linalg.solve(A, K)
        L = torch.linalg.cholesky(K + strategy.jitter_val * torch.eye(len(y), dtype=D))
        m_v = torch.linalg.solve_triangular(L, post_mean.unsqueeze(-1), upper=False).squeeze(-1)
        Li = torch.linalg.solve_triangular(L, torch.eye(len(y), dtype=D), upper=False)
        S_v = Li @ post_cov @ Li.T
        q = strategy._variational_distribution
        q.variational_mean.copy_(m_v)
        q.chol_variational_covar.copy_(torch.linalg.cholesky(S_v + 1e-12 * torch.eye(len(y), dtype=D)))
        strategy.variational_params_initialized.fill_(1)  # else the first call resets q(u) to the prior
    return K, m, s2


def test_inducing_points_at_the_data_with_optimal_q_equal_the_exact_gp():
    # 3-D inputs keep K well conditioned, so the strategy's 1e-6 jitter on K_ZZ is negligible
    g = torch.Generator().manual_seed(1)
    x = torch.randn(15, 3, generator=g, dtype=D)
    y = torch.sin(x.sum(-1)) + 0.1 * torch.randn(15, generator=g, dtype=D)
    kernel = gpytorch.kernels.ScaleKernel(ReLUNNGPKernel(depth=2))
    model = VariationalGP(x, y, kernel, likelihood="gaussian", inducing_points=x, learn_inducing=False, noise=0.05)
    K, m, s2 = set_optimal_q(model)
    exact_lml = torch.distributions.MultivariateNormal(
        torch.full_like(y, m), K + s2 * torch.eye(len(y), dtype=D)
    ).log_prob(y)
    model.train()
    with torch.no_grad():
        assert model.elbo().item() == pytest.approx(exact_lml.item(), abs=1e-3)
    xs = torch.randn(7, 3, generator=g, dtype=D)
    pred = model.predict(xs)
    with torch.no_grad():
        Ks = kernel(x, xs).to_dense()
        A = K + s2 * torch.eye(len(y), dtype=D)
        mean = m + Ks.T @ torch.linalg.solve(A, y - m)
        var = kernel(xs, diag=True) - (Ks * torch.linalg.solve(A, Ks)).sum(0)
    assert torch.allclose(pred.mean, mean, atol=1e-4)
    assert torch.allclose(pred.variance, var, atol=1e-4)
    lpd = model.log_predictive_density(xs, mean)
    assert torch.allclose(lpd, -0.5 * torch.log(2 * math.pi * (var + s2)), atol=1e-3)


def test_student_t_predictive_density_matches_numerical_integral():
    x, y = data()
    model = StudentTLikelihoodGP(x, y, gpytorch.kernels.RBFKernel(), inducing_points=6)
    xs = torch.tensor([[0.3], [1.1]], dtype=D)
    z = torch.tensor([0.2, 40.0], dtype=D)  # the second is a far outlier
    lpd = model.log_predictive_density(xs, z)
    f = model.predict(xs)
    nu, s = model.likelihood.deg_free.item(), model.likelihood.noise.sqrt().item()
    for i in range(2):
        mu, sd = f.mean[i].item(), f.stddev[i].item()
        val = integrate.quad(
            lambda t, i=i, mu=mu, sd=sd: stats.norm.pdf(t, mu, sd) * stats.t.pdf(z[i].item(), nu, t, s),
            mu - 12 * sd,
            mu + 12 * sd,
            points=[z[i].item()],
            limit=200,
            epsabs=0,
        )[0]
        assert lpd[i].item() == pytest.approx(math.log(val), abs=1e-6)


def test_student_t_likelihood_discounts_outliers_where_the_gaussian_one_does_not():
    g = torch.Generator().manual_seed(3)
    x = torch.linspace(-2, 2, 60, dtype=D).unsqueeze(-1)
    f = torch.sin(2 * x[:, 0])
    y = f + 0.05 * torch.randn(60, generator=g, dtype=D)
    y[[10, 30, 45]] += torch.tensor([6.0, -7.0, 8.0], dtype=D)
    errors = {}
    for lik in ("student_t", "gaussian"):
        kernel = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())
        model = VariationalGP(x, y, kernel, likelihood=lik, inducing_points=15).fit(num_steps=150, lr=0.08)
        errors[lik] = (model.predict(x).mean - f).pow(2).mean().sqrt().item()
    assert errors["student_t"] < 0.5 * errors["gaussian"]
    assert errors["student_t"] < 0.2


def test_bad_inputs_raise():
    x, y = data()
    k = gpytorch.kernels.RBFKernel()
    with pytest.raises(ValueError, match=r"inducing_points must have shape \(n_inducing, 1\)"):
        VariationalGP(x, y, k, inducing_points=torch.zeros(4, 3, dtype=D))
    with pytest.raises(ValueError, match="likelihood must be"):
        VariationalGP(x, y, k, likelihood="cauchy")
    y_bad = y.clone()
    y_bad[0] = float("nan")
    with pytest.raises(ValueError, match="train_y contains NaN"):
        StudentTLikelihoodGP(x, y_bad, k)
    with pytest.raises(ValueError, match="inducing_points must be >= 1"):
        VariationalGP(x, y, k, inducing_points=0)
    with pytest.raises(ValueError, match="noise must be > 0"):
        VariationalGP(x, y, k, noise=-0.1)
    with pytest.raises(ValueError, match="x has 2 features, expected 1"):
        VariationalGP(x, y, k).predict(torch.zeros(3, 2, dtype=D))


def test_cosine_decay_converges_where_a_constant_rate_keeps_moving():
    x, y = data(n=40, seed=2)
    fits = {}
    for schedule in ("cosine", "constant"):
        kernel = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())
        model = VariationalGP(x, y, kernel, likelihood="student_t", inducing_points=10)
        fits[schedule] = model.fit(num_steps=600, lr=0.1, schedule=schedule, tol=1e-4)
    assert fits["cosine"].converged_ and fits["cosine"].relative_change_ < 1e-4
    assert fits["cosine"].losses_.stop_reason == "converged" and len(fits["cosine"].losses_) <= 600
    # the decayed run ends at least as low as the constant-rate one
    assert fits["cosine"].losses_[-1] <= min(fits["constant"].losses_[-20:]) + 1e-4
    with pytest.raises(ValueError, match="lbfgs"):
        fits["cosine"].fit(num_steps=5, batch_size=8, optimizer="lbfgs")
    with pytest.raises(ValueError, match="schedule"):
        fits["cosine"].fit(num_steps=5, schedule="linear")
