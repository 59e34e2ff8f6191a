import math

import pytest
import torch

from probsparse.models.gp.kronecker_grid import (
    KroneckerGridCovariance,
    apply_along_axes,
    toeplitz_from_offsets,
    uniform_offsets,
)
from probsparse.models.gp.spectral_mixture import StudentTSpectralMixtureKernel


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _spd(n, seed, cond=10.0):
    g = torch.Generator().manual_seed(seed)
    Qm, _ = torch.linalg.qr(torch.randn(n, n, generator=g))
    evals = torch.logspace(0, -math.log10(cond), n)
    return Qm @ torch.diag(evals) @ Qm.T


def _spectral_factor(n, seed):
    # A realistic ill-conditioned factor: a high-frequency spectral-mixture kernel plus jitter 1e-6.
    k = StudentTSpectralMixtureKernel(5, mixture_means=torch.linspace(0, 2, 5), mixture_lengthscales=1.0)
    x = torch.linspace(0, 1, n).unsqueeze(-1)
    with torch.no_grad():
        return k(x, x).to_dense() + 1e-6 * torch.eye(n)


SHAPES = [(5,), (4, 3), (3, 4, 2)]


@pytest.mark.parametrize("method", ["cholesky", "eigh"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_solve_logdet_matmul_match_the_dense_matrix(shape, method):
    factors = [_spd(n, seed=i, cond=100.0) for i, n in enumerate(shape)]
    cov = KroneckerGridCovariance(factors, method=method)
    dense = cov.to_dense()
    U = torch.randn(*shape)
    v = U.reshape(-1)
    torch.testing.assert_close(cov.solve(U).reshape(-1), torch.linalg.solve(dense, v), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(cov.solve(v), torch.linalg.solve(dense, v), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(cov.matmul(U).reshape(-1), dense @ v)
    torch.testing.assert_close(cov.logdet(), torch.logdet(dense), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(cov.inv_quad(U), v @ torch.linalg.solve(dense, v), rtol=1e-9, atol=1e-10)
    ref = torch.distributions.MultivariateNormal(torch.zeros(dense.shape[0]), covariance_matrix=dense)
    torch.testing.assert_close(cov.log_prob(U), ref.log_prob(v), rtol=1e-9, atol=1e-9)
    assert cov.num_points == dense.shape[0] and cov.grid_shape == shape


def test_nearly_singular_spectral_factors_keep_an_accurate_logdet():
    factors = [_spectral_factor(30, 0), _spectral_factor(25, 1)]
    cov = KroneckerGridCovariance(factors)
    dense = cov.to_dense()
    evals = torch.linalg.eigvalsh(dense)
    assert evals.min() < 1e-10  # products of the factors' jitter-sized eigenvalues
    # The dense log-determinant carries its own rounding error (~1e-7 relative at this conditioning).
    torch.testing.assert_close(cov.logdet(), torch.logdet(dense), rtol=1e-6, atol=0.0)
    # linear_operator clamps the eigenvalues of the product at 1e-7: thousands of nats off here.
    assert float(cov.as_linear_operator().logdet() - cov.logdet()) > 100.0
    torch.testing.assert_close(
        KroneckerGridCovariance(factors, method="eigh").logdet(), cov.logdet(), rtol=1e-8, atol=1e-8
    )


def test_gradients_of_the_gaussian_log_density_match_the_dense_one():
    A = _spd(4, 0, cond=5.0).requires_grad_()
    B = _spd(3, 1, cond=5.0).requires_grad_()
    U = torch.randn(4, 3)
    KroneckerGridCovariance([A, B]).log_prob(U).backward()
    gA, gB = A.grad.clone(), B.grad.clone()
    A.grad = B.grad = None
    dense = torch.kron(A, B)
    torch.distributions.MultivariateNormal(torch.zeros(12), covariance_matrix=dense).log_prob(U.reshape(-1)).backward()
    torch.testing.assert_close(gA, A.grad)
    torch.testing.assert_close(gB, B.grad)


def test_linear_operator_view_has_the_same_vectorisation():
    factors = [_spd(3, 0), _spd(4, 1)]
    cov = KroneckerGridCovariance(factors)
    v = torch.randn(12)
    torch.testing.assert_close(cov.as_linear_operator() @ v, cov.matmul(v))


def test_apply_along_axes_with_identities_and_rectangular_factors():
    A, C = torch.randn(2, 3), torch.randn(5, 4)
    U = torch.randn(3, 6, 4)
    want = torch.kron(torch.kron(A, torch.eye(6)), C) @ U.reshape(-1)
    torch.testing.assert_close(apply_along_axes([A, None, C], U).reshape(-1), want)
    with pytest.raises(ValueError, match="3 axes but 2 matrices"):
        apply_along_axes([A, C], U)


def test_toeplitz_from_offsets_equals_the_direct_kernel_matrix():
    k = StudentTSpectralMixtureKernel(3, mixture_means=[0.0, 2.0, 5.0], mixture_lengthscales=0.5)
    n, h = 7, 0.13
    x = torch.arange(n) * h
    with torch.no_grad():
        for order in (0, 1, 2):
            direct = k.factor(0, x[:, None] - x[None, :], order)
            fast = toeplitz_from_offsets(k.factor(0, uniform_offsets(n, h), order))
            torch.testing.assert_close(fast, direct, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="odd length"):
        toeplitz_from_offsets(torch.zeros(4))


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"factors\[1\] is not positive definite"):
        KroneckerGridCovariance([torch.eye(2), -torch.eye(2)])
    with pytest.raises(ValueError, match=r"factors\[0\] is not positive definite \(smallest eigenvalue"):
        KroneckerGridCovariance([torch.zeros(2, 2)], method="eigh")
    with pytest.raises(ValueError, match="square"):
        KroneckerGridCovariance([torch.zeros(2, 3)])
    with pytest.raises(ValueError, match="NaN"):
        KroneckerGridCovariance([torch.full((2, 2), float("nan"))])
    with pytest.raises(TypeError, match="share one dtype"):
        KroneckerGridCovariance([torch.eye(2), torch.eye(2, dtype=torch.float32)])
    with pytest.raises(ValueError, match="empty"):
        KroneckerGridCovariance([])
    with pytest.raises(ValueError, match="method"):
        KroneckerGridCovariance([torch.eye(2)], method="lu")
    cov = KroneckerGridCovariance([torch.eye(2), torch.eye(3)])
    with pytest.raises(ValueError, match=r"grid shape \(2, 3\)"):
        cov.solve(torch.zeros(3, 2))


def test_sylvester_solve_matches_the_kronecker_sum_system_and_its_gradients_are_exact():
    from probsparse.models.gp.kronecker_grid import sylvester_solve

    g = torch.Generator().manual_seed(0)
    A = (torch.randn(5, 5, generator=g) + 4 * torch.eye(5)).requires_grad_()
    B = (torch.randn(4, 4, generator=g) + 4 * torch.eye(4)).requires_grad_()
    Q = torch.randn(5, 4, generator=g).requires_grad_()
    X = sylvester_solve(A, B, Q)
    dense = torch.kron(A, torch.eye(4)) + torch.kron(torch.eye(5), B.T.contiguous())
    torch.testing.assert_close(X.reshape(-1), torch.linalg.solve(dense, Q.reshape(-1)))
    assert torch.autograd.gradcheck(sylvester_solve, (A, B, Q))
    with pytest.raises(ValueError, match="Q must have shape"):
        sylvester_solve(A, B, torch.zeros(4, 5))
