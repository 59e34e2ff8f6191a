"""Likelihoods of network fitting against float64 references (scipy), and their input checks."""

import numpy as np
import pytest
import torch
from scipy import special, stats

from probsparse.inference.likelihoods import CategoricalLikelihood, GaussianLikelihood, as_likelihood


def test_categorical_matches_log_softmax_reference(rng):
    logits = rng.standard_normal((6, 4))
    labels = rng.integers(0, 4, size=6)
    nll = CategoricalLikelihood()(torch.as_tensor(logits), torch.as_tensor(labels))
    expected = -(logits[np.arange(6), labels] - special.logsumexp(logits, axis=1))
    assert nll.shape == (6,)
    np.testing.assert_allclose(nll.numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("scale", [0.3, 2.0])
def test_gaussian_fixed_scale_matches_scipy(rng, scale):
    out = rng.standard_normal((5, 3))
    y = rng.standard_normal((5, 3))
    nll = GaussianLikelihood(scale)(torch.as_tensor(out), torch.as_tensor(y))
    expected = -stats.norm.logpdf(y, loc=out, scale=scale).sum(1)  # summed over outputs of one example
    np.testing.assert_allclose(nll.numpy(), expected, rtol=1e-12)


def test_gaussian_column_output_against_vector_targets(rng):
    out = torch.as_tensor(rng.standard_normal((7, 1)))
    y = torch.as_tensor(rng.standard_normal(7))
    nll = GaussianLikelihood(1.5)(out, y)
    # (7, 1) against (7,) is read as one output per example, never broadcast to (7, 7).
    np.testing.assert_allclose(nll.numpy(), -stats.norm.logpdf(y.numpy(), out[:, 0].numpy(), 1.5), rtol=1e-12)


def test_gaussian_learned_scale_gradient_matches_closed_form(rng):
    out = torch.as_tensor(rng.standard_normal(8))
    y = torch.as_tensor(rng.standard_normal(8))
    lik = GaussianLikelihood(init_scale=0.7).double()
    assert lik.scale.item() == pytest.approx(0.7)
    lik(out, y).sum().backward()
    # d/d(log s) sum_i [log s + r_i^2 / (2 s^2)] = n - sum r^2 / s^2
    r2 = ((y - out) ** 2).sum().item()
    s2 = lik.scale.item() ** 2
    assert lik.log_scale.grad.item() == pytest.approx(8 - r2 / s2, rel=1e-10)


@pytest.mark.parametrize(
    "lik, out, y, exc, match",
    [
        (CategoricalLikelihood(), torch.zeros(3), torch.zeros(3, dtype=torch.long), ValueError, "logits"),
        (CategoricalLikelihood(), torch.zeros(3, 2), torch.zeros(4, dtype=torch.long), ValueError, "shape"),
        (CategoricalLikelihood(), torch.zeros(3, 2), torch.zeros(3), TypeError, "integer"),
        (CategoricalLikelihood(), torch.zeros(3, 2), torch.tensor([0, 1, 2]), ValueError, "outside"),
        (GaussianLikelihood(1.0), torch.zeros(3, 2), torch.zeros(3), ValueError, "does not match"),
        (GaussianLikelihood(1.0), torch.zeros(3), torch.zeros(3, dtype=torch.long), TypeError, "floating"),
    ],
)
def test_bad_outputs_and_targets(lik, out, y, exc, match):
    with pytest.raises(exc, match=match):
        lik(out, y)


def test_constructor_and_lookup_errors():
    with pytest.raises(ValueError, match="scale"):
        GaussianLikelihood(0.0)
    with pytest.raises(ValueError, match="init_scale"):
        GaussianLikelihood(init_scale=-1.0)
    with pytest.raises(ValueError, match="likelihood"):
        as_likelihood("poisson")
    with pytest.raises(TypeError, match="likelihood"):
        as_likelihood(3)
    assert isinstance(as_likelihood("gaussian"), GaussianLikelihood)
    assert as_likelihood("gaussian").log_scale is not None  # learned by default
    fn = lambda out, y: (out - y).abs()  # noqa: E731
    assert as_likelihood(fn) is fn
