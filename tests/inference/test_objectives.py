"""Minibatch objectives: the network loss is nll_mean + beta * KL / N; the Pyro ELBO scales the data plate by N/B."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from scipy import stats
from torch import nn

from probsparse.inference.likelihoods import CategoricalLikelihood, GaussianLikelihood
from probsparse.inference.objectives import (
    _MinibatchScale,
    bayesian_modules,
    network_kl,
    network_loss,
    pyro_elbo_terms,
    pyro_predictive_nll,
)
from probsparse.nn import BayesianLinear


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _mlp():
    return nn.Sequential(BayesianLinear(4, 5), nn.ReLU(), BayesianLinear(5, 3))


@pytest.mark.parametrize("kl_weight", [1.0, 0.3, 0.0])
def test_network_loss_is_mean_nll_plus_weighted_kl_over_n(kl_weight):
    net = _mlp()
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    n_train = 1000
    torch.manual_seed(5)
    terms = network_loss(net, x, y, likelihood=CategoricalLikelihood(), n_train=n_train, kl_weight=kl_weight)
    # the same forward draw, then the reference computed by hand
    torch.manual_seed(5)
    logits = net(x)
    nll_ref = -torch.log_softmax(logits, -1)[torch.arange(8), y].mean()
    kl_ref = net[0].kl_divergence() + net[2].kl_divergence()
    torch.testing.assert_close(terms.nll, nll_ref, rtol=1e-14, atol=0)
    torch.testing.assert_close(terms.kl, kl_ref, rtol=1e-14, atol=0)
    torch.testing.assert_close(terms.loss, nll_ref + kl_weight * kl_ref / n_train, rtol=1e-14, atol=0)
    # The KL part is independent of the batch: doubling N halves it in the loss.
    torch.manual_seed(5)
    terms2 = network_loss(net, x, y, likelihood=CategoricalLikelihood(), n_train=2 * n_train, kl_weight=kl_weight)
    torch.testing.assert_close(terms.loss - terms2.loss, kl_weight * kl_ref / (2 * n_train), rtol=1e-10, atol=1e-15)


def test_network_loss_rejects_wrong_likelihood_shape():
    net = _mlp()
    with pytest.raises(ValueError, match=r"per-example NLLs of shape \(8,\)"):
        network_loss(net, torch.randn(8, 4), torch.zeros(8), likelihood=lambda out, y: out.sum(), n_train=10)


class _Block(nn.Module):
    """A container that reports its children's KL itself: must be counted once."""

    def __init__(self):
        super().__init__()
        self.a, self.b = BayesianLinear(2, 2), BayesianLinear(2, 2)

    def forward(self, x):
        return self.b(self.a(x))

    def kl_divergence(self):
        return self.a.kl_divergence() + self.b.kl_divergence()


def test_bayesian_modules_counts_each_kl_once():
    net = nn.Sequential(_Block(), nn.Tanh(), BayesianLinear(2, 1))
    assert list(bayesian_modules(net)) == ["0", "2"]
    expected = net[0].a.kl_divergence() + net[0].b.kl_divergence() + net[2].kl_divergence()
    torch.testing.assert_close(network_kl(net), expected)


def test_network_kl_errors():
    with pytest.raises(ValueError, match="no Bayesian layers"):
        network_kl(nn.Linear(2, 2))

    class Bad(nn.Module):
        def kl_divergence(self):
            return torch.ones(2)

    with pytest.raises(ValueError, match="shape"):
        network_kl(nn.Sequential(Bad()))


SIGMA = 0.5


def _model(x, y):
    z = pyro.sample("z", dist.Normal(0.0, 2.0))
    with pyro.plate("obs", x.shape[0]):
        pyro.sample("y", dist.Normal(z * x, SIGMA), obs=y)


def _model_subsample(x, y, subsample=None):
    z = pyro.sample("z", dist.Normal(0.0, 2.0))
    with pyro.plate("obs", x.shape[0], subsample=subsample) as idx:
        pyro.sample("y", dist.Normal(z * x[idx], SIGMA), obs=y[idx])


def _delta_guide(x, y, subsample=None):
    pyro.sample("z", dist.Delta(torch.tensor(0.7)))


def test_minibatch_elbo_scales_the_data_plate_by_n_over_b():
    x, y = torch.randn(40), torch.randn(40)
    idx = torch.arange(5, 15)
    scale = _MinibatchScale("obs", 40 / 10, 10)
    terms = pyro_elbo_terms(_model, _delta_guide, (x[idx], y[idx]), {}, kl_weight=0.5, scale=scale)
    # Delta guide: log q = 0, so KL = -log p(z); NLL = -(N/B) sum_batch log p(y_i | z).
    nll_ref = -(40 / 10) * stats.norm.logpdf(y[idx].numpy(), 0.7 * x[idx].numpy(), SIGMA).sum()
    kl_ref = -stats.norm.logpdf(0.7, 0.0, 2.0)
    assert terms.nll.item() == pytest.approx(nll_ref, rel=1e-12)
    assert terms.kl.item() == pytest.approx(kl_ref, rel=1e-12)
    assert terms.loss.item() == pytest.approx(nll_ref + 0.5 * kl_ref, rel=1e-12)
    # The subsample convention (full data + indices, Pyro's own plate scaling) gives the same terms.
    sub = pyro_elbo_terms(_model_subsample, _delta_guide, (x, y), {"subsample": idx}, kl_weight=0.5)
    torch.testing.assert_close(sub.loss, terms.loss, rtol=1e-12, atol=0)


def test_full_batch_elbo_equals_trace_elbo():
    x, y = torch.randn(30), torch.randn(30)
    guide = AutoNormal(_model)
    guide(x, y)  # the first call sets the guide up (and draws from the prior): keep it out of the comparison
    pyro.set_rng_seed(3)
    terms = pyro_elbo_terms(_model, guide, (x, y), {})
    pyro.set_rng_seed(3)
    reference = Trace_ELBO().loss(_model, guide, x, y)
    assert terms.loss.item() == pytest.approx(reference, rel=1e-12)


def test_minibatch_scale_errors():
    x, y = torch.randn(40), torch.randn(40)
    with pytest.raises(ValueError, match="has size 10 but the minibatch has 8"):
        pyro_elbo_terms(_model, _delta_guide, (x[:10], y[:10]), {}, scale=_MinibatchScale("obs", 5.0, 8))

    def unplated(x, y):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(z * x, 1.0).to_event(1), obs=y)

    with pytest.raises(ValueError, match="outside the data plate 'obs'"):
        pyro_elbo_terms(unplated, _delta_guide, (x[:10], y[:10]), {}, scale=_MinibatchScale("obs", 4.0, 10))


def test_non_reparameterised_guide_is_rejected():
    def model(x, y):
        k = pyro.sample("k", dist.Bernoulli(0.5))
        with pyro.plate("obs", x.shape[0]):
            pyro.sample("y", dist.Normal(k * x, 1.0), obs=y)

    def guide(x, y):
        pyro.sample("k", dist.Bernoulli(0.3))

    with pytest.raises(ValueError, match="not reparameterisable"):
        pyro_elbo_terms(model, guide, (torch.randn(3), torch.randn(3)), {})


def test_predictive_nll_of_a_point_guide():
    x, y = torch.randn(25), torch.randn(25)
    nll = pyro_predictive_nll(_model, _delta_guide, (x, y), {}, data_plate="obs", num_draws=3)
    expected = -stats.norm.logpdf(y.numpy(), 0.7 * x.numpy(), SIGMA).mean()
    assert nll == pytest.approx(expected, rel=1e-12)


def test_predictive_nll_averages_likelihoods_not_log_likelihoods():
    # Two equally likely draws of z: the predictive density is the mixture, -log mean_s p(y | z_s).
    x, y = torch.ones(4), torch.tensor([0.0, 1.0, 2.0, -1.0])
    draws = iter([torch.tensor(0.0), torch.tensor(1.0)])

    def guide(x, y):
        pyro.sample("z", dist.Delta(next(draws)))

    nll = pyro_predictive_nll(_model, guide, (x, y), {}, data_plate="obs", num_draws=2)
    p = 0.5 * (stats.norm.pdf(y.numpy(), 0.0, SIGMA) + stats.norm.pdf(y.numpy(), 1.0, SIGMA))
    assert nll == pytest.approx(-np.log(p).mean(), rel=1e-12)
    assert math.isfinite(nll)


def test_gaussian_network_loss_with_fixed_noise():
    net = BayesianLinear(3, 1)
    x, y = torch.randn(6, 3), torch.randn(6)
    torch.manual_seed(1)
    terms = network_loss(net, x, y, likelihood=GaussianLikelihood(0.4), n_train=60)
    torch.manual_seed(1)
    out = net(x)[:, 0].detach().numpy()
    nll_ref = -stats.norm.logpdf(y.numpy(), out, 0.4).mean()
    assert terms.nll.item() == pytest.approx(nll_ref, rel=1e-12)
    assert terms.loss.item() == pytest.approx(nll_ref + net.kl_divergence().item() / 60, rel=1e-12)
