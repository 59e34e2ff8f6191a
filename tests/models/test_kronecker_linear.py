import numpy as np
import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal

from probsparse.inference.sbl import kronecker_posterior
from probsparse.models import KroneckerSparseLinearModel
from probsparse.models.kronecker_linear import kron_matvec_torch
from probsparse.priors import KroneckerARDPrior


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _problem(rng):
    factors = [rng.standard_normal((3, 4)), rng.standard_normal((4, 3))]
    gammas = [rng.uniform(0.5, 2.0, 4), rng.uniform(0.5, 2.0, 3)]
    return factors, gammas


def test_kron_matvec_torch_with_batch_axes(rng):
    factors = [rng.standard_normal((3, 4)), rng.standard_normal((2, 3)), rng.standard_normal((2, 2))]
    H = np.kron(np.kron(factors[0], factors[1]), factors[2])
    x = rng.standard_normal((5, 1, 24))
    out = kron_matvec_torch([torch.from_numpy(A) for A in factors], torch.from_numpy(x))
    assert out.shape == (5, 1, 12)
    assert np.allclose(out.numpy(), x @ H.T)


def test_prior_predictive_covariance_is_the_kronecker_model(rng):
    factors, gammas = _problem(rng)
    model = KroneckerSparseLinearModel((4, 3), prior=KroneckerARDPrior((4, 3), gammas), noise_var=0.3)
    with pyro.plate("draws", 40000, dim=-2):
        y = model([torch.from_numpy(A) for A in factors])
    H = np.kron(factors[0], factors[1])
    expected = (H * np.kron(gammas[0], gammas[1])) @ H.T + 0.3 * np.eye(12)
    emp = np.cov(y.reshape(-1, 12).numpy().T)
    assert np.allclose(emp, expected, atol=0.06 * np.abs(expected).max())


@pytest.mark.slow
def test_svi_matches_the_kronecker_posterior(rng):
    factors = [rng.standard_normal((5, 4)), rng.standard_normal((4, 3))]
    gammas = [rng.uniform(0.5, 2.0, 4), rng.uniform(0.5, 2.0, 3)]
    x_true = rng.standard_normal(12)
    y = np.kron(factors[0], factors[1]) @ x_true + 0.3 * rng.standard_normal(20)
    model = KroneckerSparseLinearModel((4, 3), prior=KroneckerARDPrior((4, 3), gammas), noise_var=0.09)
    mean, var, _ = kronecker_posterior(factors, y, gammas, 0.09)
    args = ([torch.from_numpy(A) for A in factors], torch.from_numpy(y))
    guide = AutoMultivariateNormal(model)
    svi = SVI(model, guide, pyro.optim.ClippedAdam({"lr": 0.02, "lrd": 0.999}), Trace_ELBO())
    for _ in range(2500):
        svi.step(*args)
    draws = pyro.infer.Predictive(model, guide=guide, num_samples=4000, return_sites=["x"])(*args)["x"]
    draws = draws.reshape(-1, 12).numpy()
    assert np.allclose(draws.mean(0), mean, atol=0.25 * np.sqrt(var).max())
    assert np.allclose(draws.std(0), np.sqrt(var), rtol=0.2)


def test_validation():
    with pytest.raises(ValueError, match="at least 2"):
        KroneckerARDPrior((4,))
    with pytest.raises(ValueError, match="variances\\[1\\]"):
        KroneckerARDPrior((2, 3), [np.ones(2), np.ones(2)])
    with pytest.raises(ValueError, match="> 0"):
        KroneckerARDPrior((2, 2), [np.ones(2), np.zeros(2)])
    model = KroneckerSparseLinearModel((2, 2), noise_var=1.0)
    with pytest.raises(ValueError, match="factors\\[1\\] must have shape"):
        model([torch.ones(2, 2), torch.ones(2, 3)])
    with pytest.raises(ValueError, match="prod"):
        model([torch.ones(2, 2), torch.ones(2, 2)], torch.ones(5))
    with pytest.raises(ValueError, match="dims"):
        KroneckerSparseLinearModel((2, 2), prior=KroneckerARDPrior((2, 3)))
    prior = KroneckerARDPrior((2, 3))
    assert prior.is_type2 and list(prior.site_names("x")) == ["x_gamma_0", "x_gamma_1", "x_gamma", "x_raw", "x"]
