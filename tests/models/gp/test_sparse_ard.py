import math

import pyro
import pytest
import torch

from probsparse.models.gp._training import relative_change
from probsparse.models.gp.sparse_ard import ARDSVGP, HorseshoeARDSVGP

D = torch.float64


def relevant_problem(n=150, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=D)
    f = torch.sin(1.5 * x[:, 0]) + 0.8 * torch.cos(x[:, 1])
    return x, f + 0.1 * torch.randn(n, generator=g, dtype=D)


def rbf(a, b, w, c):
    diff = (a[:, None, :] - b[None, :, :]) * w
    return c * torch.exp(-0.5 * (diff**2).sum(-1))


def test_horseshoe_sites_are_named_and_non_centred():
    x, y = relevant_problem(n=20, d=3)
    model = HorseshoeARDSVGP(x, y, num_inducing=5)
    trace = pyro.poutine.trace(model.model).get_trace(x, y)
    tau = trace.nodes["inv_lengthscale_tau"]["value"]
    lam = trace.nodes["inv_lengthscale_lambda"]["value"]
    raw = trace.nodes["inv_lengthscale_raw"]["value"]
    assert lam.shape == raw.shape == (3,) and tau.shape == ()
    assert torch.allclose(trace.nodes["inv_lengthscale"]["value"], tau * lam * raw)
    assert isinstance(trace.nodes["inv_lengthscale_tau"]["fn"], pyro.distributions.HalfCauchy)
    assert trace.nodes["inv_lengthscale_tau"]["fn"].scale.item() == pytest.approx(model.global_scale)


def test_svgp_bound_with_inducing_points_at_the_data_equals_the_exact_gp():
    x, y = relevant_problem(n=25, d=3)
    model = ARDSVGP(x, y, num_inducing=25)
    w = torch.tensor([0.9, 0.4, 0.2], dtype=D)
    c, s2, m = 1.4, 0.05, 0.1
    store = pyro.get_param_store()
    model._gp_params()  # create the parameters, then overwrite them
    with torch.no_grad():
        K = rbf(x, x, w, c)
        A = K + s2 * torch.eye(25, dtype=D)
        post_mean = K @ torch.linalg.solve(A, y - m)
        post_cov = K - K @ torch.linalg.solve(A, K)
        L = torch.linalg.cholesky(K + 1e-6 * torch.eye(25, dtype=D))
        Li = torch.linalg.inv(L)
        S = torch.linalg.cholesky(Li @ post_cov @ Li.T + 1e-12 * torch.eye(25, dtype=D))
    for key, value in {
        "inducing_points": x.clone(),
        "q_mean": Li @ post_mean,
        "q_scale_tril": S,
        "outputscale": torch.tensor(c, dtype=D),
        "noise": torch.tensor(s2, dtype=D),
        "mean": torch.tensor(m, dtype=D),
    }.items():
        store[model._p(key)] = value
    exact = torch.distributions.MultivariateNormal(torch.full_like(y, m), A).log_prob(y)
    with torch.no_grad():
        bound = model._bound(x, y, w, model._gp_params())
        assert torch.allclose(model._kernel(x, x, w, torch.tensor(c, dtype=D)), K)
    # the 1e-6 jitter on K_ZZ (well conditioned here) is the only difference
    assert bound.item() == pytest.approx(exact.item(), abs=1e-3)


def test_horseshoe_finds_the_relevant_features_with_a_threshold_rule():
    x, y = relevant_problem()
    model = HorseshoeARDSVGP(x, y, num_inducing=20).fit(num_steps=600, lr=0.03)
    rel = model.relevance(num_samples=100)
    assert rel["selected"].nonzero().ravel().tolist() == [0, 1]
    assert (rel["q05"] <= rel["mean"]).all() and (rel["mean"] <= rel["q95"]).all()
    assert rel["mean"][2:].max() < 0.2 * rel["mean"][:2].min()
    pred = model.predict(x[:10], num_samples=8)
    assert pred.mean.shape == (10,) and (pred.stddev > 0).all()
    assert model.losses_[-1] < model.losses_[0]


def test_two_models_share_a_param_store_under_different_names():
    x, y = relevant_problem(n=30, d=2)
    a = ARDSVGP(x, y, num_inducing=5).fit(num_steps=3)
    b = ARDSVGP(x, y, num_inducing=5, name="other").fit(num_steps=3)
    assert "ard_svgp.inverse_lengthscale" in pyro.get_param_store()
    assert "other.inverse_lengthscale" in pyro.get_param_store()
    assert a.relevance()["mean"].shape == b.relevance()["mean"].shape == (2,)


def test_bad_inputs_raise():
    x, y = relevant_problem(n=20, d=3)
    with pytest.raises(ValueError, match="global_scale must be > 0"):
        HorseshoeARDSVGP(x, y, global_scale=0.0)
    with pytest.raises(ValueError, match="num_inducing must be >= 1"):
        ARDSVGP(x, y, num_inducing=0)
    with pytest.raises(ValueError, match="train_y has 19 entries"):
        ARDSVGP(x, y[:-1])
    y_bad = y.clone()
    y_bad[0] = math.inf
    with pytest.raises(ValueError, match="train_y contains NaN or infinite"):
        HorseshoeARDSVGP(x, y_bad)
    with pytest.raises(ValueError, match="x has 2 features, expected 3"):
        ARDSVGP(x, y).predict(torch.zeros(4, 2, dtype=D))


def test_a_probsparse_horseshoe_prior_gives_the_same_model_as_the_built_in_sites():
    from probsparse.priors import Horseshoe

    x, y = relevant_problem(n=20, d=3)
    builtin = HorseshoeARDSVGP(x, y, num_inducing=5, global_scale=0.3)
    external = HorseshoeARDSVGP(x, y, num_inducing=5, prior=Horseshoe(global_scale=0.3))
    values = {
        "inv_lengthscale_tau": torch.tensor(0.4, dtype=D),
        "inv_lengthscale_lambda": torch.tensor([1.0, 0.2, 3.0], dtype=D),
        "inv_lengthscale_raw": torch.tensor([0.5, -1.0, 0.1], dtype=D),
    }
    traces = [
        pyro.poutine.trace(pyro.poutine.condition(m.model, data=values)).get_trace(x, y) for m in (builtin, external)
    ]
    for t in traces:
        t.compute_log_prob()
    for site in values:
        assert torch.allclose(traces[0].nodes[site]["log_prob_sum"], traces[1].nodes[site]["log_prob_sum"])
    assert torch.allclose(traces[0].nodes["inv_lengthscale"]["value"], traces[1].nodes["inv_lengthscale"]["value"])
    external.fit(num_steps=3)
    assert external.relevance(num_samples=5)["mean"].shape == (3,)
    with pytest.raises(ValueError, match="either prior or global_scale"):
        HorseshoeARDSVGP(x, y, prior=Horseshoe(0.3), global_scale=0.3)


def test_fits_stop_once_converged_and_report_it():
    x, y = relevant_problem(n=60, d=3)
    pyro.clear_param_store()
    ard = ARDSVGP(x, y, num_inducing=10).fit(num_steps=3000, lr=0.05, tol=1e-4)
    # a deterministic bound (empty guide): judged by the spread of the last 10 % of the steps
    assert ard.converged_ and len(ard.losses_) < 3000
    assert ard.relative_change_ == relative_change(ard.losses_) < 1e-4
    pyro.clear_param_store()
    short = ARDSVGP(x, y, num_inducing=10).fit(num_steps=20, lr=0.001, tol=1e-8)
    assert len(short.losses_) == 20 and not short.converged_
    pyro.clear_param_store()
    hs = HorseshoeARDSVGP(x, y, num_inducing=10).fit(num_steps=50, lr=0.03)
    # the guide samples its sites: the verdict comes from a least-squares line through the window
    assert hs.relative_change_ == relative_change(hs.losses_, smooth=True)
    with pytest.raises(ValueError, match="schedule"):
        ARDSVGP(x, y, num_inducing=10).fit(num_steps=5, schedule="step")


def test_ard_lbfgs_fit_of_the_collapsed_bound_converges_with_the_optimal_q():
    pyro.clear_param_store()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(120, 4, generator=g, dtype=D)
    y = torch.sin(2 * x[:, 0]) + 0.1 * torch.randn(120, generator=g, dtype=D)
    model = ARDSVGP(x, y, num_inducing=15).fit(num_steps=600, lr=1.0, tol=1e-4, optimizer="lbfgs", min_steps=20)
    assert model.converged_ and len(model.losses_) < 600
    w = model.relevance()["mean"]
    assert int(w.argmax()) == 0
    # the stored q(v) is the optimum: the uncollapsed bound there equals the collapsed one, and moving the
    # mean lowers it
    p = model._gp_params()
    collapsed = model._collapsed_bound(w, p)[0].item()
    assert model._bound(x, y, w, p).item() == pytest.approx(collapsed, rel=1e-9)
    shifted = dict(p, q_mean=p["q_mean"] + 1e-3)
    assert model._bound(x, y, w, shifted).item() < collapsed
    with pytest.raises(ValueError, match="lbfgs"):
        HorseshoeARDSVGP(x, y, num_inducing=5).fit(num_steps=5, optimizer="lbfgs")
