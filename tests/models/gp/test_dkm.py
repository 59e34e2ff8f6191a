import math

import pytest
import torch

from probsparse.models.gp.dkm import SparseDKM, gaussian_kl
from probsparse.models.gp.nngp import ReLUNNGPKernel, relu_expectation

D = torch.float64


def relu_map(G, sw, sb):
    g = torch.diagonal(G)
    return sb + sw * relu_expectation(g.unsqueeze(-1), g.unsqueeze(-2), G)


def full_dkm_objective(x, y, grams, sw, sb, c, noise, mean, dof):
    """Naive full DKM objective: exact log-likelihood given G_L minus the per-layer Gram KLs (float64)."""
    n, d = x.shape
    K = sb + sw * x @ x.T / d
    kl = 0.0
    for G in grams:
        K = relu_map(K, sw, sb)
        kl = kl + gaussian_kl(G, K + 1e-6 * torch.eye(n, dtype=D))
        K = G
    Kout = c * relu_map(K, sw, sb)
    lik = torch.distributions.MultivariateNormal(torch.full_like(y, mean), Kout + noise * torch.eye(n, dtype=D))
    return lik.log_prob(y) - dof * kl, Kout


def test_inducing_points_at_the_data_with_optimal_q_equal_the_full_dkm():
    g = torch.Generator().manual_seed(0)
    n, d = 8, 12  # d > n keeps the first-layer Gram full rank, so the 1e-6 jitters stay negligible
    x = torch.randn(n, d, generator=g, dtype=D)
    y = torch.sin(x[:, 0]) + 0.1 * torch.randn(n, generator=g, dtype=D)
    dkm = SparseDKM(x, y, num_layers=2, inducing_points=x, learn_inducing=False, dof=3.0, noise=0.05)
    with torch.no_grad():
        for W in dkm.gram_factors:  # move the Grams away from the NNGP
            W.copy_(torch.eye(n, dtype=D) + 0.2 * torch.randn(n, n, generator=g, dtype=D).tril())
        dkm.log_outputscale.fill_(math.log(1.3))
    grams = dkm.gram_blocks()
    s2, m, c = math.exp(dkm.log_noise.item()), dkm.mean_constant.item(), 1.3
    ref, Kout = full_dkm_objective(x, y, grams, dkm.weight_variance, dkm.bias_variance, c, s2, m, 3.0)
    # optimal whitened q(u) for the Gaussian likelihood
    with torch.no_grad():
        A = Kout + s2 * torch.eye(n, dtype=D)
        post_mean = Kout @ torch.linalg.solve(A, y - m)
        post_cov = Kout - Kout @ torch.linalg.solve(A, Kout)
        L = torch.linalg.cholesky(Kout + 1e-6 * torch.eye(n, dtype=D))
        Li = torch.linalg.inv(L)
        dkm.q_mean.copy_(Li @ post_mean)
        dkm.q_chol.copy_(torch.linalg.cholesky(Li @ post_cov @ Li.T + 1e-12 * torch.eye(n, dtype=D)))
        assert dkm.objective().item() == pytest.approx(ref.item(), abs=2e-3)


def test_whitened_gram_kl_equals_the_gaussian_kl():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 9, generator=g, dtype=D)
    dkm = SparseDKM(x, x[:, 0], num_layers=1, inducing_points=x, learn_inducing=False)
    with torch.no_grad():
        dkm.gram_factors[0].copy_(torch.eye(6, dtype=D) + 0.3 * torch.randn(6, 6, generator=g, dtype=D).tril())
        K0 = dkm.bias_variance + dkm.weight_variance * x @ x.T / 9
        K1 = relu_map(K0, dkm.weight_variance, dkm.bias_variance)
        _, _, _, kls, grams = dkm._propagate(x)
        ref = gaussian_kl(grams[0], K1 + 1e-6 * torch.eye(6, dtype=D)).item()
        # the stored Gram carries its own 1e-6 jitter, which the whitened KL leaves out: O(1e-6) apart
        assert kls[0].item() == pytest.approx(ref, rel=1e-5)


def test_at_initialisation_the_dkm_kernel_is_the_nngp_kernel_everywhere():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(30, 3, generator=g, dtype=D)
    xt = torch.randn(5, 3, generator=g, dtype=D)
    dkm = SparseDKM(x, x[:, 0], num_layers=2, inducing_points=10)
    nngp = ReLUNNGPKernel(depth=3, weight_variance=dkm.weight_variance, bias_variance=dkm.bias_variance).double()
    with torch.no_grad():
        K_ii, K_ti, K_tt, kls, _ = dkm._propagate(xt)
        z = dkm.inducing_points
        assert torch.allclose(K_ti, nngp(xt, z).to_dense(), rtol=1e-4, atol=1e-5)
        assert torch.allclose(K_tt, nngp(xt, diag=True), rtol=1e-4, atol=1e-5)
        assert all(abs(k.item()) < 1e-10 for k in kls)


def test_fit_improves_the_objective_and_predicts():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(120, 2, generator=g, dtype=D)
    f = torch.sin(2 * x[:, 0]) * torch.cos(x[:, 1])
    y = f + 0.1 * torch.randn(120, generator=g, dtype=D)
    dkm = SparseDKM(x, y, num_layers=2, inducing_points=20)
    before = dkm.objective().item()
    dkm.fit(num_steps=150)
    assert dkm.objective().item() > before
    assert dkm.converged_ == (dkm.relative_change_ < 1e-4)
    rmse = (dkm.predict(x).mean - f).pow(2).mean().sqrt().item()
    assert rmse < 0.5 * f.std().item()
    dkm.fit(num_steps=5, batch_size=32)  # minibatch path runs (Adam)
    assert len(dkm.losses_) == 5 and not dkm.converged_
    dkm.fit(num_steps=7, tol=None)  # the timing mode: no stopping rule, never "converged"
    assert len(dkm.losses_) == 7 and not dkm.converged_
    with pytest.raises(ValueError, match="lbfgs"):
        dkm.fit(num_steps=5, batch_size=32, optimizer="lbfgs")


def test_lbfgs_and_long_adam_reach_the_same_objective():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(60, 2, generator=g, dtype=D)
    y = torch.sin(2 * x[:, 0]) + 0.1 * torch.randn(60, generator=g, dtype=D)
    fits = {}
    for opt, kw in (("lbfgs", {}), ("adam", {"lr": 0.01, "num_steps": 6000, "tol": 1e-12})):
        dkm = SparseDKM(x, y, num_layers=1, inducing_points=x[:8].clone(), learn_inducing=False)
        fits[opt] = dkm.fit(**{"num_steps": 400, "optimizer": opt, **kw})
    obj = {k: m.objective().item() / 60 for k, m in fits.items()}
    assert fits["lbfgs"].converged_
    assert obj["lbfgs"] == pytest.approx(obj["adam"], abs=2e-4)


def test_bad_inputs_raise():
    x = torch.randn(10, 2, dtype=D)
    y = x[:, 0]
    with pytest.raises(ValueError, match=r"inducing_points must have shape \(n_inducing, 2\)"):
        SparseDKM(x, y, inducing_points=torch.zeros(3, 5, dtype=D))
    with pytest.raises(ValueError, match="num_layers must be >= 1"):
        SparseDKM(x, y, num_layers=0)
    with pytest.raises(ValueError, match="dof must be > 0"):
        SparseDKM(x, y, dof=0.0)
    with pytest.raises(ValueError, match="weight_variance must be > 0"):
        SparseDKM(x, y, weight_variance=-1.0)
    y_nan = y.clone()
    y_nan[1] = float("nan")
    with pytest.raises(ValueError, match="train_y contains NaN"):
        SparseDKM(x, y_nan)


def test_collapsed_objective_is_the_objective_at_the_optimal_q():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(50, 3, generator=g, dtype=D)
    y = torch.sin(x[:, 0]) + 0.1 * torch.randn(50, generator=g, dtype=D)
    dkm = SparseDKM(x, y, num_layers=2, inducing_points=10, noise=0.05)
    with torch.no_grad():
        for W in dkm.gram_factors:  # away from the NNGP start
            W.add_(0.1 * torch.randn(10, 10, generator=g, dtype=D).tril())
    collapsed = dkm._optimal_q()[0].item()
    assert dkm.objective().item() < collapsed - 1.0  # the initial q(u) = N(0, I) is far from optimal
    dkm.set_optimal_q()
    assert dkm.objective().item() == pytest.approx(collapsed, rel=1e-10)
    # it is the maximum over q: moving the mean or the covariance factor lowers the objective
    for param in (dkm.q_mean, dkm.q_chol):
        with torch.no_grad():
            saved = param.clone()
            param.add_(1e-3 * torch.randn(param.shape, generator=g, dtype=D).tril() if param.dim() == 2 else 1e-3)
            assert dkm.objective().item() < collapsed
            param.copy_(saved)


def test_full_batch_fit_with_fixed_inducing_points_converges():
    g = torch.Generator().manual_seed(8)
    x = torch.randn(150, 3, generator=g, dtype=D)
    y = torch.sin(2 * x[:, 0]) + 0.1 * torch.randn(150, generator=g, dtype=D)
    dkm = SparseDKM(x, y, num_layers=2, inducing_points=20, learn_inducing=False).fit(num_steps=300, tol=1e-4)
    assert dkm.converged_ and len(dkm.losses_) < 300
    # the reported loss is the objective at the q(u) that fit() leaves in place
    assert -dkm.objective().item() / 150 == pytest.approx(dkm.losses_[-1], abs=1e-3)
