"""ScaleMixturePrior machinery (sites, non-centring, plates, extension) and the Normal prior."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive
from scipy import stats

from probsparse.priors import GroupHorseshoe, Horseshoe, Normal, RegularizedHorseshoe, ScaleMixturePrior


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


class StudentT(ScaleMixturePrior):
    """An extension written against the base class only: w | v ~ N(0, v), v ~ InvGamma(nu/2, nu/2) => t_nu."""

    scale_names = ("variance",)

    def __init__(self, df, groups=None):
        super().__init__(groups)
        self.df = df

    def scale_distributions(self, shape, zero):
        half = zero + 0.5 * self.df
        return {"variance": dist.InverseGamma(half, half).expand(self._group_shape(shape))}

    def effective_scale(self, scales):
        return scales["variance"].sqrt()


PRIORS = [
    Normal(0.7),
    Horseshoe(0.5),
    Horseshoe(groups="input"),
    GroupHorseshoe(groups="output"),
    RegularizedHorseshoe(0.3, slab_scale=1.5, slab_df=3.0),
    StudentT(4.0),
]


def _trace(prior, shape=(3, 4), name="w"):
    return poutine.trace(lambda: prior.sample(name, shape)).get_trace()


def _kinds(trace):
    return {
        name: "deterministic" if site["infer"].get("_deterministic") else "sample"
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
    }


@pytest.mark.parametrize("prior", PRIORS, ids=repr)
def test_sites_match_site_names_and_weights_are_non_centred(prior):
    trace = _trace(prior)
    names = prior.site_names("w")
    assert _kinds(trace) == names and list(_kinds(trace)) == list(names)
    nodes = {k: v["value"] for k, v in trace.nodes.items() if v["type"] == "sample"}
    scale, raw = nodes["w_scale"], nodes["w_raw"]
    assert raw.shape == nodes["w"].shape == (3, 4)
    torch.testing.assert_close(nodes["w"], scale * raw, rtol=1e-14, atol=0)
    torch.testing.assert_close(nodes["w_kappa"], 1.0 / (1.0 + scale.square()), rtol=1e-14, atol=0)
    scales = {k: nodes[f"w_{k}"] for k in prior.scale_names}
    expected_scale = torch.as_tensor(prior.effective_scale(scales))
    torch.testing.assert_close(scale, expected_scale.expand_as(scale), rtol=1e-14, atol=0)
    # A second weight with another name gets its own sites from the same prior object.
    both = poutine.trace(lambda: (prior.sample("a", (2, 2)), prior.sample("b", (2, 3)))).get_trace()
    assert set(prior.site_names("a")) | set(prior.site_names("b")) <= set(both.nodes)


@pytest.mark.parametrize("prior", PRIORS, ids=repr)
def test_sites_broadcast_under_a_plate_at_dim_minus_3(prior):
    n_plate, shape = 5, (3, 4)
    with pyro.plate("p", n_plate, dim=-3):
        trace = _trace(prior, shape)
    trace.compute_log_prob()
    for name, site in trace.nodes.items():
        if site["type"] != "sample":
            continue
        assert site["log_prob"].shape == (n_plate, 1, 1), name
        # A value is a batch part that broadcasts with the plate's (P, 1, 1), then an event part that broadcasts
        # with the weight shape (global variables have no event part).
        value, event_dim = site["value"], site["fn"].event_dim
        batch, event = value.shape[: value.dim() - event_dim], value.shape[value.dim() - event_dim :]
        assert torch.broadcast_shapes(batch, (n_plate, 1, 1)) == (n_plate, 1, 1), name
        assert (
            event_dim in (0, len(shape))
            and torch.broadcast_shapes(event, shape[len(shape) - event_dim :]) == shape[len(shape) - event_dim :]
        ), name
    w = trace.nodes["w"]["value"]
    assert w.shape == (n_plate, 1, 1) + shape
    # Each plate slice is an independent draw (the unit-scale part differs across slices).
    assert not torch.allclose(w[0], w[1])


@pytest.mark.parametrize("prior", PRIORS[1:], ids=repr)
def test_predictive_draws_are_vectorised(prior):
    def model():
        prior.sample("w", (3, 4))

    draws = Predictive(model, num_samples=50, parallel=True)()
    assert draws["w"].shape == (50, 3, 4)
    assert draws["w_tau" if "tau" in prior.scale_names else "w_variance"].shape[0] == 50


def test_normal_log_density_against_scipy():
    trace = _trace(Normal(0.7), (3, 4))
    raw = trace.nodes["w_raw"]["value"].numpy()
    expected = stats.norm.logpdf(raw).sum()
    np.testing.assert_allclose(trace.log_prob_sum().item(), expected, rtol=1e-12)
    # The implied weights are N(0, 0.7^2): the density of w is the density of raw, changed in scale.
    w = trace.nodes["w"]["value"].numpy()
    np.testing.assert_allclose(stats.norm.logpdf(w, scale=0.7).sum(), expected - w.size * np.log(0.7), rtol=1e-12)


def test_normal_moments():
    with pyro.plate("draws", 40000, dim=-1):
        w = Normal(0.7).sample("w", (2,))
    assert w.shape == (40000, 2)
    np.testing.assert_allclose(w.var(0).numpy(), 0.49, rtol=0.04)  # 0.7% standard error
    assert np.all(np.abs(w.mean(0).numpy()) < 5 * 0.7 / np.sqrt(40000))


def test_extension_student_t_log_density_and_marginal():
    prior = StudentT(5.0)
    trace = _trace(prior, (6,))
    v, raw = trace.nodes["w_variance"]["value"].numpy(), trace.nodes["w_raw"]["value"].numpy()
    expected = stats.invgamma.logpdf(v, a=2.5, scale=2.5).sum() + stats.norm.logpdf(raw).sum()
    np.testing.assert_allclose(trace.log_prob_sum().item(), expected, rtol=1e-12)
    with pyro.plate("draws", 20000, dim=-1):
        w = prior.sample("w", (2,))
    assert stats.kstest(w.numpy().ravel(), stats.t(5.0).cdf).pvalue > 1e-3


def test_dtype_follows_the_argument():
    trace = poutine.trace(lambda: Horseshoe().sample("w", (2, 3), dtype=torch.float32)).get_trace()
    for name in Horseshoe().site_names("w"):
        assert trace.nodes[name]["value"].dtype == torch.float32, name


def test_int_shape_is_a_vector():
    assert Normal().sample("w", 4).shape == (4,)


@pytest.mark.parametrize(
    "scale, exc",
    [
        (0.0, ValueError),
        (-1.0, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        ("1", TypeError),
        (True, TypeError),
    ],
)
def test_normal_rejects_bad_scale(scale, exc):
    with pytest.raises(exc, match="scale"):
        Normal(scale)


def test_bad_sample_arguments():
    with pytest.raises(ValueError, match="name"):
        Normal().sample("", (3,))
    with pytest.raises(ValueError, match="shape"):
        Normal().sample("w", (3, 0))
    with pytest.raises(TypeError, match="shape"):
        Horseshoe().sample("w", (3.0,))


def test_repr_gives_the_settings():
    assert repr(Normal(0.5)) == "Normal(scale=0.5)"
    assert "global_scale=0.5" in repr(Horseshoe(0.5)) and "groups='input'" in repr(GroupHorseshoe())
