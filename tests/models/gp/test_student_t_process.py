import math

import gpytorch
import numpy as np
import pyro.distributions as pdist
import pytest
import torch
from scipy import stats

from probsparse.models.gp.nngp import ErfNNGPKernel, ReLUNNGPKernel
from probsparse.models.gp.student_t_process import GaussianProcess, ScaleMixtureProcess, StudentTProcess

D = torch.float64


def data(n=12, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=D)
    y = torch.sin(x.sum(-1)) + 0.1 * torch.randn(n, generator=g, dtype=D)
    return x, y


def covariance(model, x1, x2=None):
    with torch.no_grad():
        return model.covar_module(x1, x1 if x2 is None else x2).to_dense()


def test_marginal_likelihood_matches_scipy_multivariate_t():
    x, y = data()
    tp = StudentTProcess(x, y, ReLUNNGPKernel(depth=2), a=1.7, b=0.6, noise=0.05)
    C = covariance(tp, x) + (tp.noise.item() + 1e-8) * torch.eye(12, dtype=D)
    a, b, m = tp.a.item(), tp.b.item(), tp.mean_constant.item()
    ref = stats.multivariate_t(loc=np.full(12, m), shape=(b / a) * C.numpy(), df=2 * a).logpdf(y.numpy())
    assert tp.log_marginal_likelihood().item() == pytest.approx(ref, rel=1e-10)


def test_predictive_matches_conditional_of_the_joint_multivariate_t():
    x, y = data(n=10)
    xs = torch.randn(3, 2, dtype=D)
    tp = StudentTProcess(x, y, ErfNNGPKernel(depth=2), a=2.5, b=1.3, noise=0.1)
    a, b, m, s = tp.a.item(), tp.b.item(), tp.mean_constant.item(), tp.noise.item()
    # Reference: the joint MVT over (y, f*) conditioned by hand (Roth 2012 / Shah et al. 2014 formulas).
    C = covariance(tp, x).numpy() + (s + 1e-8) * np.eye(10)
    Kxs = covariance(tp, x, xs).numpy()
    Kss = covariance(tp, xs).numpy()
    r = y.numpy() - m
    mu = m + Kxs.T @ np.linalg.solve(C, r)
    sig = Kss - Kxs.T @ np.linalg.solve(C, Kxs)
    nu = 2 * a
    d1 = r @ np.linalg.solve((b / a) * C, r)
    # the model adds a 1e-8 jitter to the conditional covariance before factorising it
    shape = (nu + d1) / (nu + 10) * (b / a) * (sig + 1e-8 * np.eye(3))
    pred = tp.predict(xs, include_noise=False, full_cov=True)
    assert pred.df.item() == pytest.approx(nu + 10)
    assert np.allclose(pred.loc.numpy(), mu, atol=1e-10)
    cov = (pred.scale_tril @ pred.scale_tril.T).numpy()
    assert np.allclose(cov, shape, rtol=1e-8, atol=1e-12)
    z = np.array([0.3, -0.2, 1.0])
    ref = stats.multivariate_t(loc=mu, shape=shape, df=nu + 10).logpdf(z)
    assert pred.log_prob(torch.tensor(z, dtype=D)).item() == pytest.approx(ref, abs=1e-6)
    marg = tp.predict(xs, include_noise=True)
    assert np.allclose(
        marg.scale.numpy() ** 2,
        np.diag(shape) - (nu + d1) / (nu + 10) * (b / a) * 1e-8 + (nu + d1) / (nu + 10) * (b / a) * s,
        rtol=1e-6,
    )
    assert np.allclose(marg.loc.numpy(), mu)


def test_tends_to_the_gp_as_a_and_b_grow_with_fixed_ratio():
    x, y = data(n=15)
    xs = torch.randn(4, 2, dtype=D)
    kernel = ReLUNNGPKernel(depth=2, weight_variance=1.5)
    likelihood = gpytorch.likelihoods.GaussianLikelihood().to(D)
    likelihood.noise = 0.05

    class GP(gpytorch.models.ExactGP):
        def __init__(self):
            super().__init__(x, y, likelihood)
            self.mean_module = gpytorch.means.ConstantMean().to(D)
            self.covar_module = ReLUNNGPKernel(depth=2, weight_variance=1.5).to(D)

        def forward(self, z):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(z), self.covar_module(z))

    gp = GP()
    gp.mean_module.constant.data.fill_(y.median().item())  # the TP's initial constant mean
    gp.eval()
    with torch.no_grad(), gpytorch.settings.fast_computations(False, False, False):
        gp_pred = likelihood(gp(xs))
        gp_lml = torch.distributions.MultivariateNormal(
            y.median().expand(15), covariance(gp, x) + (0.05 + 1e-8) * torch.eye(15, dtype=D)
        ).log_prob(y)
    gaps = []
    for c in (1e1, 1e3, 1e6):
        tp = StudentTProcess(x, y, kernel, a=c, b=c, noise=0.05)
        pred = tp.predict(xs)
        gaps.append(abs(tp.log_marginal_likelihood().item() - gp_lml.item()))
        if c == 1e6:
            assert torch.allclose(pred.loc, gp_pred.mean, atol=1e-6)
            assert torch.allclose(pred.scale**2, gp_pred.variance, rtol=1e-4)
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-4


def test_importance_sampler_with_inverse_gamma_prior_recovers_the_student_t_process():
    x, y = data(n=20)
    a, b = 3.0, 2.0
    tp = StudentTProcess(x, y, ReLUNNGPKernel(depth=2), a=a, b=b, noise=0.1)
    prior = pdist.InverseGamma(torch.tensor(a, dtype=D), torch.tensor(b, dtype=D))
    sm = ScaleMixtureProcess(x, y, ReLUNNGPKernel(depth=2), scale_prior=prior, num_samples=4000, noise=0.1)
    assert sm.log_marginal_likelihood().item() == pytest.approx(tp.log_marginal_likelihood().item(), abs=0.02)
    assert sm.effective_sample_size() > 1000
    xs = torch.randn(5, 2, dtype=D)
    t_pred, m_pred = tp.predict(xs), sm.predict(xs)
    assert torch.allclose(m_pred.mean, t_pred.loc, atol=1e-10)
    assert torch.allclose(m_pred.variance, t_pred.variance, rtol=0.03)
    z = t_pred.loc + 2.5 * t_pred.scale
    assert torch.allclose(m_pred.log_prob(z), t_pred.log_prob(z), atol=0.02)


def test_importance_sampler_matches_quadrature_for_a_lognormal_prior():
    x, y = data(n=8)
    prior = torch.distributions.LogNormal(torch.tensor(0.3, dtype=D), torch.tensor(0.8, dtype=D))
    sm = ScaleMixtureProcess(x, y, ErfNNGPKernel(), scale_prior=prior, num_samples=30000, noise=0.2)
    C = covariance(sm, x).numpy() + (sm.noise.item() + 1e-8) * np.eye(8)
    r = y.numpy() - sm.mean_constant.item()

    def integrand(log_s2):
        s2 = math.exp(log_s2)
        lik = stats.multivariate_normal(np.zeros(8), s2 * C).logpdf(r)
        return math.exp(lik + prior.log_prob(torch.tensor(s2, dtype=D)).item() + log_s2)

    from scipy.integrate import quad

    ref = math.log(quad(integrand, -12, 12, limit=200)[0])
    assert sm.log_marginal_likelihood().item() == pytest.approx(ref, abs=0.01)


def test_fit_increases_the_marginal_likelihood_and_learns_a_b():
    x, y = data(n=30)
    y = y.clone()
    y[:3] += torch.tensor([8.0, -6.0, 10.0], dtype=D)
    tp = StudentTProcess(x, y, ReLUNNGPKernel(depth=2))
    before = tp.log_marginal_likelihood().item()
    a0 = tp.a.item()
    tp.fit(num_steps=150, lr=0.05)
    assert tp.log_marginal_likelihood().item() > before + 1.0
    assert tp.a.item() != a0
    assert len(tp.losses_) <= 150 and isinstance(tp.converged_, bool)


@pytest.mark.parametrize("cls", [GaussianProcess, StudentTProcess])
def test_lbfgs_reaches_the_optimum_of_a_long_adam_run(cls):
    x, y = data(n=25, seed=4)
    # with (a, b) learned the TP's optimum is a -> infinity on near-Gaussian data (its GP limit): fix them
    kw = {"learn_ab": False, "a": 3.0, "b": 2.0} if cls is StudentTProcess else {}
    lbfgs = cls(x, y, gpytorch.kernels.RBFKernel(), **kw).fit(num_steps=200, tol=1e-9)
    assert lbfgs.converged_ and lbfgs.relative_change_ < 1e-9
    assert len(lbfgs.losses_) < 200
    adam = cls(x, y, gpytorch.kernels.RBFKernel(), **kw).fit(num_steps=4000, lr=0.02, optimizer="adam", tol=1e-12)
    loss = lambda m: -m.log_marginal_likelihood().item() / m.n  # noqa: E731
    # L-BFGS is at least as good as 4000 Adam steps, and they agree to Adam's precision
    assert loss(lbfgs) <= loss(adam) + 1e-9
    assert loss(lbfgs) == pytest.approx(loss(adam), abs=1e-5)
    pl, pa = lbfgs.predict(x), adam.predict(x)
    assert torch.allclose(pl.mean, pa.mean, atol=1e-3)
    assert torch.allclose(pl.scale, pa.scale, rtol=1e-2)


def test_a_fit_stopped_by_its_step_budget_is_not_converged():
    x, y = data(n=25, seed=4)
    gp = GaussianProcess(x, y, ReLUNNGPKernel(depth=2)).fit(num_steps=12, lr=0.01, optimizer="adam")
    assert len(gp.losses_) == 12 and gp.losses_.stop_reason == "budget"
    assert not gp.converged_ and gp.relative_change_ > 1e-5
    with pytest.raises(ValueError, match="optimizer"):
        GaussianProcess(x, y, ReLUNNGPKernel()).fit(optimizer="newton")


@pytest.mark.parametrize(
    "kwargs, match",
    [({"a": 0.0}, "a must be"), ({"b": -1.0}, "b must be"), ({"noise": 0.0}, "noise"), ({"a": float("inf")}, "a")],
)
def test_bad_hyperparameters_raise(kwargs, match):
    x, y = data()
    with pytest.raises(ValueError, match=match):
        StudentTProcess(x, y, ReLUNNGPKernel(), **kwargs)


def test_bad_data_raise():
    x, y = data()
    y_nan = y.clone()
    y_nan[2] = float("nan")
    with pytest.raises(ValueError, match="train_y contains NaN"):
        StudentTProcess(x, y_nan, ReLUNNGPKernel())
    with pytest.raises(ValueError, match="train_y has 11 entries"):
        StudentTProcess(x, y[:-1], ReLUNNGPKernel())
    with pytest.raises(TypeError, match="kernel must be"):
        StudentTProcess(x, y, "rbf")
    tp = StudentTProcess(x, y, ReLUNNGPKernel())
    with pytest.raises(ValueError, match="x has 3 features, expected 2"):
        tp.predict(torch.zeros(2, 3, dtype=D))
    with pytest.raises(TypeError, match="dtype"):
        tp.predict(torch.zeros(2, 2, dtype=torch.float32))
    with pytest.raises(ValueError, match="positive support"):
        ScaleMixtureProcess(x, y, ReLUNNGPKernel(), scale_prior=torch.distributions.Normal(0.0, 1.0))


def test_gaussian_process_matches_gpytorch_exact_gp():
    x, y = data(n=14)
    xs = torch.randn(5, 2, dtype=D)
    gp = GaussianProcess(x, y, ReLUNNGPKernel(depth=2), outputscale=1.7, noise=0.04)
    c, s, m = 1.7, 0.04, gp.mean_constant.item()
    likelihood = gpytorch.likelihoods.GaussianLikelihood().to(D)
    likelihood.noise = c * (s + 1e-8)

    class Ref(gpytorch.models.ExactGP):
        def __init__(self):
            super().__init__(x, y, likelihood)
            self.covar_module = gpytorch.kernels.ScaleKernel(ReLUNNGPKernel(depth=2)).to(D)
            self.covar_module.outputscale = c

        def forward(self, z):
            return gpytorch.distributions.MultivariateNormal(torch.full_like(z[:, 0], m), self.covar_module(z))

    ref = Ref()
    ref.train()
    with gpytorch.settings.fast_computations(False, False, False), torch.no_grad():
        ref_lml = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, ref)(ref(x), y).item() * 14
        ref.eval()
        ref_pred = likelihood(ref(xs))
    assert gp.log_marginal_likelihood().item() == pytest.approx(ref_lml, abs=1e-6)
    pred = gp.predict(xs)
    assert torch.allclose(pred.mean, ref_pred.mean, atol=1e-8)
    assert torch.allclose(pred.variance, ref_pred.variance, atol=1e-8)
