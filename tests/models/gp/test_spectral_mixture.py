import math

import gpytorch
import pytest
import torch

from probsparse.models.gp.spectral_mixture import (
    GaussianSpectralMixtureKernel,
    StudentTSpectralMixtureKernel,
    gaussian_envelope,
    matern52_envelope,
)

KERNELS = [GaussianSpectralMixtureKernel, StudentTSpectralMixtureKernel]


@pytest.fixture(autouse=True)
def _float64():
    """The kernels are checked in float64 (their parameters take the default dtype)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _kernel(cls, num_dims=1, q=3):
    g = torch.Generator().manual_seed(3)
    return cls(
        q,
        num_dims,
        mixture_means=torch.rand(num_dims, q, generator=g) * 3,
        mixture_lengthscales=0.3 + torch.rand(num_dims, q, generator=g),
        mixture_weights=0.2 + torch.rand(num_dims, q, generator=g),
    )


@pytest.mark.parametrize("envelope", [gaussian_envelope, matern52_envelope])
def test_envelope_derivatives_match_autograd(envelope):
    # Includes points on both sides of 0 and 0 itself (where |tau| is not differentiable for Matérn).
    tau = torch.tensor([-1.3, -0.2, -1e-3, 0.0, 1e-3, 0.4, 2.0], requires_grad=True)
    ell = torch.tensor(0.7)
    e0 = envelope(tau, ell, 0)
    (d1,) = torch.autograd.grad(e0.sum(), tau, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), tau)
    torch.testing.assert_close(envelope(tau, ell, 1), d1, rtol=1e-10, atol=1e-12)
    # Autograd of |tau| at exactly 0 gives a zero subgradient for the Matérn envelope: compare away from 0.
    mask = tau.detach() != 0
    torch.testing.assert_close(envelope(tau, ell, 2)[mask], d2[mask], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="order"):
        envelope(tau, ell, 3)


def test_matern_second_derivative_at_zero_is_the_limit():
    ell = torch.tensor(0.5)
    h = 1e-4
    at0 = matern52_envelope(torch.tensor(0.0), ell, 2)
    fd = (
        matern52_envelope(torch.tensor(h), ell, 0)
        - 2 * matern52_envelope(torch.tensor(0.0), ell, 0)
        + matern52_envelope(torch.tensor(-h), ell, 0)
    ) / h**2
    assert float(at0) == pytest.approx(-5.0 / (3.0 * 0.25))
    assert float(at0) == pytest.approx(float(fd), rel=1e-5)


@pytest.mark.parametrize("cls", KERNELS)
def test_factor_derivatives_match_autograd(cls):
    k = _kernel(cls, num_dims=2)
    tau = torch.linspace(-2.0, 2.0, 17).requires_grad_()  # contains 0
    for j in range(2):
        f0 = k.factor(j, tau, 0)
        (d1,) = torch.autograd.grad(f0.sum(), tau, create_graph=True)
        (d2,) = torch.autograd.grad(d1.sum(), tau)
        torch.testing.assert_close(k.factor(j, tau, 1), d1, rtol=1e-9, atol=1e-10)
        mask = tau.detach() != 0
        torch.testing.assert_close(k.factor(j, tau, 2)[mask], d2[mask], rtol=1e-9, atol=1e-10)


ORDER_PAIRS = [
    ((0, 0), (0, 0)),
    ((1, 0), (0, 0)),
    ((0, 0), (0, 1)),
    ((2, 0), (0, 0)),
    ((0, 2), (0, 0)),
    ((1, 0), (1, 0)),
    ((1, 1), (0, 0)),
    ((1, 0), (0, 1)),
    ((0, 0), (2, 0)),
    ((2, 1), (0, 1)),
]


@pytest.mark.parametrize("cls", KERNELS)
@pytest.mark.parametrize("orders", ORDER_PAIRS, ids=str)
def test_derivative_cross_covariance_matches_autograd(cls, orders):
    a, b = orders
    k = _kernel(cls, num_dims=2)
    g = torch.Generator().manual_seed(1)
    x1 = torch.rand(3, 2, generator=g, dtype=torch.float64)
    x2 = torch.rand(4, 2, generator=g, dtype=torch.float64)
    got = k.derivative_covariance(x1, x2, a, b)
    want = torch.empty(3, 4, dtype=torch.float64)
    for i in range(3):
        for m in range(4):
            p = x1[i].clone().requires_grad_()
            r = x2[m].clone().requires_grad_()
            val = k.forward(p[None], r[None])[0, 0]
            for var, ords in ((p, a), (r, b)):
                for dim, order in enumerate(ords):
                    for _ in range(order):
                        (grad,) = torch.autograd.grad(val, var, create_graph=True)
                        val = grad[dim]
            want[i, m] = val.detach()
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_gaussian_mixture_matches_gpytorch_spectral_mixture_kernel():
    q = 3
    mu = torch.tensor([0.5, 1.5, 4.0])
    sigma = torch.tensor([0.3, 0.8, 0.2])  # gpytorch's mixture scales (spectral standard deviations)
    w = torch.tensor([0.2, 0.5, 0.3])
    ref = gpytorch.kernels.SpectralMixtureKernel(num_mixtures=q, ard_num_dims=1)
    ref.mixture_means = mu.reshape(q, 1, 1)
    ref.mixture_scales = sigma.reshape(q, 1, 1)
    ref.mixture_weights = w
    ours = GaussianSpectralMixtureKernel(
        q, mixture_means=mu, mixture_lengthscales=1.0 / (2 * math.pi * sigma), mixture_weights=w
    )
    x = torch.linspace(-1.0, 2.0, 9).unsqueeze(-1)
    torch.testing.assert_close(ours(x, x).to_dense(), ref(x, x).to_dense(), rtol=1e-10, atol=1e-12)


def test_student_t_mixture_with_zero_frequency_is_matern52():
    ours = StudentTSpectralMixtureKernel(1, mixture_means=0.0, mixture_lengthscales=0.4, mixture_weights=1.0)
    ref = gpytorch.kernels.MaternKernel(nu=2.5)
    ref.lengthscale = 0.4
    x = torch.rand(6, 1)
    torch.testing.assert_close(ours(x, x).to_dense(), ref(x, x).to_dense(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", KERNELS)
def test_kernel_is_a_product_over_dimensions_and_positive_semidefinite(cls):
    k = _kernel(cls, num_dims=2)
    x = torch.rand(30, 2)
    K = k(x, x).to_dense()
    k0 = k.factor(0, x[:, 0, None] - x[None, :, 0]) * k.factor(1, x[:, 1, None] - x[None, :, 1])
    torch.testing.assert_close(K, k0)
    assert torch.linalg.eigvalsh(K).min() > -1e-10 * K.diagonal().max()
    torch.testing.assert_close(k(x, x, diag=True), K.diagonal())


@pytest.mark.parametrize("cls", KERNELS)
def test_spectrum_integrates_to_the_variance(cls):
    k = _kernel(cls, num_dims=1)
    s = torch.linspace(-200.0, 200.0, 400001)
    with torch.no_grad():
        dens = k.spectrum(0, s)
        total = torch.trapezoid(dens, s)
        assert float(total) == pytest.approx(float(k.factor(0, torch.tensor(0.0))), rel=2e-4)
    assert (dens >= 0).all()


def test_weights_live_in_the_log_domain_and_active_components_are_counted():
    k = StudentTSpectralMixtureKernel(4, mixture_weights=[1.0, 1e-5, 0.5, 1e-2])
    torch.testing.assert_close(
        k.log_weights.detach(), torch.tensor([[0.0, math.log(1e-5), math.log(0.5), math.log(1e-2)]])
    )
    assert k.num_active_components() == [3]
    assert k.num_active_components(threshold=0.1) == [2]
    k.mixture_weights = torch.tensor([1.0, 1.0, 1.0, 1.0])
    assert k.num_active_components() == [4]


def test_explicit_weight_prior_is_registered():
    prior = gpytorch.priors.HorseshoePrior(0.1)
    k = GaussianSpectralMixtureKernel(3, mixture_weights_prior=prior)
    names = [name for name, *_ in k.named_priors()]
    assert names == ["mixture_weights_prior"]
    _, module, p, closure, _ = next(iter(k.named_priors()))
    assert closure(module).shape == (1, 3)
    assert torch.isfinite(p.log_prob(closure(module))).all()


def test_frozen_means_for_the_baselines():
    k = GaussianSpectralMixtureKernel(1, mixture_means=0.0, learn_means=False)
    assert not k.mixture_means.requires_grad
    assert k.log_weights.requires_grad


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="mixture_lengthscales must be > 0"):
        StudentTSpectralMixtureKernel(2, mixture_lengthscales=[1.0, -1.0])
    with pytest.raises(ValueError, match="mixture_means must broadcast"):
        StudentTSpectralMixtureKernel(2, mixture_means=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="mixture_weights must be finite"):
        StudentTSpectralMixtureKernel(2, mixture_weights=[1.0, float("nan")])
    with pytest.raises(ValueError, match="num_mixtures must be >= 1"):
        StudentTSpectralMixtureKernel(0)
    with pytest.raises(TypeError, match="mixture_weights_prior"):
        StudentTSpectralMixtureKernel(2, mixture_weights_prior="horseshoe")
    k = StudentTSpectralMixtureKernel(2, num_dims=2)
    x = torch.rand(3, 2)
    with pytest.raises(ValueError, match="at most 2"):
        k.derivative_covariance(x, x, [2, 0], [1, 0])
    with pytest.raises(ValueError, match="orders1 must have one entry per dimension"):
        k.derivative_covariance(x, x, [1], None)
    with pytest.raises(ValueError, match=r"x2 must have shape \(n, 2\)"):
        k.derivative_covariance(x, torch.rand(3, 1))
    with pytest.raises(ValueError, match="order"):
        k.factor(0, torch.zeros(2), 3)
