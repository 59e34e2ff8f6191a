import math

import gpytorch
import numpy as np
import pytest
import torch
from scipy import integrate, stats

from probsparse.models.gp.classification import ScaleMixtureGPClassifier, expected_gaussian_kl, inverse_gamma_kl

D = torch.float64


def test_expected_gaussian_kl_matches_monte_carlo_over_the_variance():
    g = torch.Generator().manual_seed(0)
    M = 4
    B = torch.randn(M, M, generator=g, dtype=D)
    K = B @ B.T + M * torch.eye(M, dtype=D)
    S = torch.tril(torch.randn(M, M, generator=g, dtype=D)) * 0.3 + torch.eye(M, dtype=D)
    m = torch.randn(M, generator=g, dtype=D)
    alpha, beta = torch.tensor(3.0, dtype=D), torch.tensor(2.5, dtype=D)
    torch.manual_seed(1)
    s2 = beta / torch.distributions.Gamma(alpha, 1.0).sample((20000,))
    q = torch.distributions.MultivariateNormal(m, scale_tril=S)
    p = torch.distributions.MultivariateNormal(torch.zeros(M, dtype=D), covariance_matrix=s2.view(-1, 1, 1) * K)
    mc = torch.distributions.kl_divergence(q, p)
    value = expected_gaussian_kl(m, S, torch.linalg.cholesky(K), alpha, beta).item()
    assert value == pytest.approx(mc.mean().item(), abs=4 * mc.std().item() / math.sqrt(len(mc)))


def test_inverse_gamma_kl_matches_numerical_integral():
    alpha, beta, a, b = 3.0, 1.5, 2.0, 2.5
    q, p = stats.invgamma(alpha, scale=beta), stats.invgamma(a, scale=b)
    ref = integrate.quad(lambda s: q.pdf(s) * (q.logpdf(s) - p.logpdf(s)), 0, np.inf, limit=200)[0]
    t = [torch.tensor(v, dtype=D) for v in (alpha, beta, a, b)]
    assert inverse_gamma_kl(*t).item() == pytest.approx(ref, rel=1e-6)


def test_concentrated_variance_posterior_gives_the_gaussian_kl():
    g = torch.Generator().manual_seed(2)
    M = 3
    K = torch.eye(M, dtype=D) + 0.3
    S = torch.eye(M, dtype=D) * 0.5
    m = torch.randn(M, generator=g, dtype=D)
    v = 1.7
    big = torch.tensor(1e9, dtype=D)
    q = torch.distributions.MultivariateNormal(m, scale_tril=S)
    p = torch.distributions.MultivariateNormal(torch.zeros(M, dtype=D), covariance_matrix=v * K)
    ref = torch.distributions.kl_divergence(q, p).item()
    assert expected_gaussian_kl(m, S, torch.linalg.cholesky(K), big, big * v).item() == pytest.approx(ref, rel=1e-6)


def blobs(n_per=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]], dtype=D)
    x = torch.cat([c + 0.5 * torch.randn(n_per, 2, generator=g, dtype=D) for c in centres])
    y = torch.arange(3).repeat_interleave(n_per)
    return x, y


@pytest.mark.parametrize("mixture", [True, False])
def test_fit_classifies_and_is_less_certain_far_from_the_data(mixture):
    x, y = blobs()
    kernel = gpytorch.kernels.RBFKernel()
    clf = ScaleMixtureGPClassifier(x, y, kernel, num_inducing=15, mixture=mixture, num_samples=4)
    clf.fit(num_steps=150, lr=0.05, batch_size=None)
    acc = (clf.predict_proba(x).argmax(-1) == y).double().mean().item()
    assert acc > 0.95
    far = torch.tensor([[8.0, 8.0], [-9.0, 7.0], [0.0, -10.0]], dtype=D)
    assert clf.predictive_entropy(far).min() > clf.predictive_entropy(x).mean()
    assert clf.losses_[-1] < clf.losses_[0]
    probs = clf.predict_proba(far)
    assert torch.allclose(probs.sum(-1), torch.ones(3, dtype=D))


def test_bad_inputs_raise():
    x, y = blobs(n_per=5)
    k = gpytorch.kernels.RBFKernel()
    with pytest.raises(TypeError, match="integer class labels"):
        ScaleMixtureGPClassifier(x, y.double(), k)
    with pytest.raises(ValueError, match="labels < num_classes"):
        ScaleMixtureGPClassifier(x, y, k, num_classes=2)
    with pytest.raises(ValueError, match="a must be > 0"):
        ScaleMixtureGPClassifier(x, y, k, a=0.0)
    with pytest.raises(ValueError, match="b must be > 0"):
        ScaleMixtureGPClassifier(x, y, k, b=-2.0)
    with pytest.raises(ValueError, match=r"train_y must have shape \(15,\)"):
        ScaleMixtureGPClassifier(x, y[:-1], k)
    x_bad = x.clone()
    x_bad[0, 0] = math.nan
    with pytest.raises(ValueError, match="train_x contains NaN"):
        ScaleMixtureGPClassifier(x_bad, y, k)


def test_fit_reports_convergence_through_a_smoothed_test_and_decays_the_rate():
    from probsparse.models.gp._training import relative_change

    x, y = blobs(n_per=20, seed=1)
    clf = ScaleMixtureGPClassifier(x, y, gpytorch.kernels.RBFKernel(), num_inducing=8, num_samples=4)
    clf.fit(num_steps=400, lr=0.05, batch_size=16, tol=1e-2)
    # minibatch Monte Carlo losses: the verdict is the least-squares line through the last 10 %
    assert clf.relative_change_ == relative_change(clf.losses_, smooth=True)
    assert clf.converged_ == (clf.relative_change_ < 1e-2)
    assert clf.converged_ and len(clf.losses_) <= 400
    short = ScaleMixtureGPClassifier(x, y, gpytorch.kernels.RBFKernel(), num_inducing=8, num_samples=4)
    short.fit(num_steps=30, lr=0.05, batch_size=16, tol=1e-2)
    assert len(short.losses_) == 30 and short.losses_.stop_reason == "budget"
    with pytest.raises(ValueError, match="schedule"):
        short.fit(num_steps=5, schedule="exponential")
