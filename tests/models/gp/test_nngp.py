import math

import numpy as np
import pytest
import torch
from scipy import integrate, special

from probsparse.models.gp.nngp import ErfNNGPKernel, ReLUNNGPKernel, erf_expectation, relu_expectation

PHI = {ReLUNNGPKernel: torch.relu, ErfNNGPKernel: torch.erf}


def wide_network_covariance(phi, x, depth, sw, sb, width, n_nets, seed):
    """Monte Carlo of the last hidden pre-activation covariance over random wide networks (float64)."""
    gen = torch.Generator().manual_seed(seed)
    n, d = x.shape
    acc = torch.zeros(n, n, dtype=torch.float64)
    for _ in range(n_nets):
        w = torch.randn(d, width, generator=gen, dtype=torch.float64) * math.sqrt(sw / d)
        b = torch.randn(width, generator=gen, dtype=torch.float64) * math.sqrt(sb)
        h = x @ w + b
        for _ in range(depth):
            w = torch.randn(width, width, generator=gen, dtype=torch.float64) * math.sqrt(sw / width)
            b = torch.randn(width, generator=gen, dtype=torch.float64) * math.sqrt(sb)
            h = phi(h) @ w + b
        acc += h @ h.T / width
    return acc / n_nets


@pytest.mark.parametrize("cls", [ReLUNNGPKernel, ErfNNGPKernel])
@pytest.mark.parametrize("depth", [1, 3])
def test_kernel_matches_wide_network_monte_carlo(cls, depth):
    x = torch.randn(6, 3, dtype=torch.float64) * 1.5
    sw, sb = 1.7, 0.2
    kernel = cls(depth=depth, weight_variance=sw, bias_variance=sb).double()
    exact = kernel(x, x).to_dense().detach()
    mc = wide_network_covariance(PHI[cls], x, depth, sw, sb, width=1500, n_nets=4, seed=depth)
    scale = exact.diag().max()
    # MC standard error ~ scale * sqrt(2 / (width * n_nets)) ~ 0.02 * scale; finite-width bias is O(1/width).
    assert torch.allclose(mc, exact, atol=0.08 * scale.item())
    # and the MC is informative: a kernel with a different depth is rejected at the same tolerance
    other = cls(depth=depth + 2, weight_variance=sw, bias_variance=sb).double()(x, x).to_dense().detach()
    if cls is ReLUNNGPKernel:
        assert (mc - other).abs().max() > 0.08 * scale


def test_expectations_against_numerical_gaussian_integrals():
    k11, k22, k12 = 1.3, 0.7, 0.5
    cov = np.array([[k11, k12], [k12, k22]])
    chol = np.linalg.cholesky(cov)

    def integral(phi):
        def integrand(z2, z1):
            u, v = chol @ np.array([z1, z2])
            return phi(u) * phi(v) * np.exp(-(z1**2 + z2**2) / 2) / (2 * np.pi)

        return integrate.dblquad(integrand, -9, 9, -9, 9, epsabs=1e-10)[0]

    t = [torch.tensor(v, dtype=torch.float64) for v in (k11, k22, k12)]
    assert relu_expectation(*t).item() == pytest.approx(integral(lambda s: max(s, 0.0)), rel=1e-6)
    assert erf_expectation(*t).item() == pytest.approx(integral(special.erf), rel=1e-6)


@pytest.mark.parametrize("cls", [ReLUNNGPKernel, ErfNNGPKernel])
def test_diag_batch_and_cross_shapes_agree_with_full_matrix(cls):
    batch = torch.Size([2])
    kernel = cls(depth=2, batch_shape=batch).double()
    with torch.no_grad():
        kernel.weight_variance = torch.tensor([1.0, 2.5], dtype=torch.float64).view(2, 1, 1)
    x1 = torch.randn(2, 5, 3, dtype=torch.float64)
    x2 = torch.randn(2, 4, 3, dtype=torch.float64)
    full = kernel(x1, x1).to_dense()
    assert torch.allclose(kernel(x1, diag=True), full.diagonal(dim1=-2, dim2=-1))
    cross = kernel(x1, x2).to_dense()
    assert cross.shape == (2, 5, 4)
    for i in range(2):
        single = cls(depth=2, weight_variance=[1.0, 2.5][i]).double()
        assert torch.allclose(single(x1[i], x2[i]).to_dense(), cross[i])
    assert torch.allclose(full, full.transpose(-1, -2))
    assert torch.linalg.eigvalsh(full).min() > -1e-10


def test_relu_depth_one_is_the_arc_cosine_formula_by_hand():
    x = torch.randn(4, 2, dtype=torch.float64)
    sw, sb = 2.0, 0.3
    k = ReLUNNGPKernel(depth=1, weight_variance=sw, bias_variance=sb).double()(x, x).to_dense()
    k0 = sb + sw * x @ x.T / 2
    n = torch.sqrt(torch.outer(k0.diag(), k0.diag()))
    theta = torch.arccos((k0 / n).clamp(-1, 1))
    ref = sb + sw * n / (2 * math.pi) * (torch.sin(theta) + (math.pi - theta) * torch.cos(theta))
    assert torch.allclose(k, ref, atol=1e-5)


def test_hyperparameters_are_learnable_and_gradients_finite():
    kernel = ReLUNNGPKernel(depth=3).double()
    x = torch.randn(7, 2, dtype=torch.float64)
    kernel(x, x).to_dense().sum().backward()
    for p in (kernel.raw_weight_variance, kernel.raw_bias_variance):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"depth": 0}, "depth"),
        ({"depth": 2.0}, "depth"),
        ({"weight_variance": 0.0}, "weight_variance"),
        ({"bias_variance": -1.0}, "bias_variance"),
        ({"weight_variance": float("nan")}, "weight_variance"),
    ],
)
def test_bad_hyperparameters_are_rejected(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ReLUNNGPKernel(**kwargs)


def test_mismatched_feature_dimensions_are_rejected():
    kernel = ErfNNGPKernel().double()
    # GPyTorch's Kernel.__call__ checks this before our forward does (it raises RuntimeError).
    with pytest.raises((ValueError, RuntimeError), match="same number of"):
        kernel(torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)).to_dense()


def autograd_relu_recursion(x1, x2, sw, sb, depth):
    """The recursion written with relu_expectation and differentiated by autograd (the reference)."""
    d = x1.shape[-1]
    k12 = sb + sw * (x1 @ x2.transpose(-1, -2)) / d
    k11 = sb + sw * (x1 * x1).sum(-1, keepdim=True) / d
    k22 = sb + sw * (x2 * x2).sum(-1).unsqueeze(-2) / d
    for _ in range(depth):
        k12 = sb + sw * relu_expectation(k11, k22, k12)
        k11 = sb + sw * relu_expectation(k11, k11, k11)
        k22 = sb + sw * relu_expectation(k22, k22, k22)
    return k12


@pytest.mark.parametrize("n, m, same", [(9, 6, False), (300, 300, True), (7, 7, True)])
def test_fused_relu_kernel_matches_the_autograd_recursion(n, m, same):
    # the hand-written derivatives (and the symmetric block path at n = 300) against autograd of the
    # elementwise formula, to 1e-10 relative; duplicated rows put clamped entries off the diagonal
    g = torch.Generator().manual_seed(n)
    x1 = torch.randn(n, 4, generator=g, dtype=torch.float64) * 1.3
    x1[1] = x1[0]
    x2 = x1 if same else torch.cat([x1[:2], torch.randn(m - 2, 4, generator=g, dtype=torch.float64)])
    weights = torch.randn(n, m, generator=g, dtype=torch.float64)
    depth = 4
    kernel = ReLUNNGPKernel(depth=depth, weight_variance=1.6, bias_variance=0.15).double()
    a = x1.clone().requires_grad_(True)
    b = a if same else x2.clone().requires_grad_(True)
    K = kernel(a, b).to_dense()
    (K * weights).sum().backward()

    sw = kernel.weight_variance.detach().clone().requires_grad_(True)
    sb = kernel.bias_variance.detach().clone().requires_grad_(True)
    ra = x1.clone().requires_grad_(True)
    rb = ra if same else x2.clone().requires_grad_(True)
    ref = autograd_relu_recursion(ra, rb, sw, sb, depth)
    (ref * weights).sum().backward()

    assert (K - ref).abs().max() <= 1e-10 * ref.abs().max()
    # the raw parameters pass through softplus: d/draw = d/dvalue * sigmoid(raw)
    pairs = [
        (kernel.raw_weight_variance.grad, sw.grad * torch.sigmoid(kernel.raw_weight_variance.detach())),
        (kernel.raw_bias_variance.grad, sb.grad * torch.sigmoid(kernel.raw_bias_variance.detach())),
        (a.grad, ra.grad),
    ] + ([] if same else [(b.grad, rb.grad)])
    for got, expected in pairs:
        assert (got - expected).abs().max() <= 1e-10 * expected.abs().max()


def test_fused_relu_recursion_passes_gradcheck():
    from probsparse.models.gp.nngp import _ReLURecursion

    g = torch.Generator().manual_seed(11)
    x1 = torch.randn(5, 3, generator=g, dtype=torch.float64)
    x2 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    inputs = (
        (x1 @ x2.T / 3).requires_grad_(True),
        ((x1 * x1).sum(-1, keepdim=True) / 3).requires_grad_(True),
        ((x2 * x2).sum(-1).unsqueeze(-2) / 3).requires_grad_(True),
        torch.tensor([[1.3]], dtype=torch.float64, requires_grad=True),
        torch.tensor([[0.3]], dtype=torch.float64, requires_grad=True),
    )
    assert torch.autograd.gradcheck(lambda *a: _ReLURecursion.apply(*a, 3), inputs)


def test_batched_fused_kernel_matches_the_autograd_recursion():
    kernel = ReLUNNGPKernel(depth=3, batch_shape=torch.Size([2])).double()
    with torch.no_grad():
        kernel.weight_variance = torch.tensor([1.0, 2.5], dtype=torch.float64).view(2, 1, 1)
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    K = kernel(x, x).to_dense()
    K.sum().backward()
    sw = kernel.weight_variance.detach().clone().requires_grad_(True)
    sb = kernel.bias_variance.detach().clone().requires_grad_(True)
    ref = autograd_relu_recursion(x, x, sw, sb, 3)
    ref.sum().backward()
    assert torch.allclose(K, ref, rtol=1e-10, atol=0)
    # chain rule through the positive constraint: d/draw = d/dsw * sigmoid(raw)
    expected = sw.grad * torch.sigmoid(kernel.raw_weight_variance.detach())
    assert torch.allclose(kernel.raw_weight_variance.grad, expected, rtol=1e-10, atol=0)
