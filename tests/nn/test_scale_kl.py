"""The kernel path of the scale-variable and centred KLs (``probsparse.nn._scale_kl``) against the tensor path."""

from __future__ import annotations

import pytest
import torch

from probsparse.nn import BayesianConv2d, BayesianLinear, bayesianize
from probsparse.nn._scale_kl import QUADRATURE_MAX_ENTRIES, ScaleKLPlan, centred_kl, scale_variables_kl
from probsparse.nn.base import kl_in_forward
from probsparse.nn.convert import kl_divergence
from probsparse.priors import ARD, GroupHorseshoe, Horseshoe, LogUniform, Normal

DOUBLE = torch.float64
PRIORS = [
    GroupHorseshoe(groups="input"),
    GroupHorseshoe(groups="output"),
    GroupHorseshoe(groups="input", weight_scales=True),
    Horseshoe(0.3),
    ARD(precision_prior=(2.0, 0.5)),
    ARD(),
    Normal(0.7),
]


def _spread(module, seed=0):
    """Varied parameter values (the initial ones are all alike); scales of order one."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.4 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module


def _tensor_path_kl(family):
    """The family's KL through its tensor-operation path (as for priors without a plan)."""
    plan, family._kl_plan = family._kl_plan, None
    try:
        return family.kl()
    finally:
        family._kl_plan = plan


def _grads(value, module):
    params = [p for p in module.parameters()]
    return torch.autograd.grad(value, params, allow_unused=True)


@pytest.mark.parametrize("parameterisation", ["centred", "non-centred"])
@pytest.mark.parametrize("prior", PRIORS, ids=repr)
def test_kernel_kl_equals_the_tensor_path(prior, parameterisation):
    layer = _spread(BayesianLinear(7, 5, prior=prior, parameterisation=parameterisation, dtype=DOUBLE))
    family = layer.weight
    assert family._kl_plan is not None
    kernel, tensor = family.kl(), _tensor_path_kl(family)
    torch.testing.assert_close(kernel, tensor, rtol=1e-12, atol=1e-12)
    for got, want in zip(_grads(kernel, family), _grads(tensor, family), strict=True):
        if want is None:
            assert got is None or not got.any()
        else:
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_kernel_kl_of_a_convolution_equals_the_tensor_path():
    layer = _spread(BayesianConv2d(3, 4, 2, prior=GroupHorseshoe(groups="input"), parameterisation="centred"))
    family = layer.double().weight
    kernel, tensor = family.kl(), _tensor_path_kl(family)
    torch.testing.assert_close(kernel, tensor, rtol=1e-10, atol=1e-10)
    for got, want in zip(_grads(kernel, family), _grads(tensor, family), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize(
    "prior",
    [GroupHorseshoe(groups="input", weight_scales=True), Horseshoe(), ARD(precision_prior=(2.0, 0.5))],
    ids=repr,
)
def test_centred_kl_with_a_scale_per_weight_of_a_large_layer_equals_the_tensor_path(prior):
    # Over 4096 scale entries: tensor operations and one draw per large variable, the same draws as the tensor path.
    family = _spread(BayesianLinear(100, 50, prior=prior, parameterisation="centred", dtype=DOUBLE)).weight
    assert family._kl_plan.vectorised
    torch.manual_seed(3)
    kernel = family.kl()
    torch.manual_seed(3)
    tensor = _tensor_path_kl(family)
    torch.testing.assert_close(kernel, tensor, rtol=1e-12, atol=1e-9)
    for got, want in zip(_grads(kernel, family), _grads(tensor, family), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_gradcheck_of_the_kernel_functions():
    layer = _spread(
        BayesianLinear(4, 3, prior=GroupHorseshoe(groups="input"), parameterisation="centred", dtype=DOUBLE)
    )
    family = layer.weight
    plan, theta, scales = family._kl_plan, family.theta, family.scales

    def centred(mean, log_std, loc, scale_log_std):
        return centred_kl(plan, mean, log_std, None, loc, scale_log_std)

    assert torch.autograd.gradcheck(centred, (theta.mean, theta.log_std, scales.loc, scales.log_std))
    assert torch.autograd.gradcheck(lambda *p: scale_variables_kl(plan, *p), (scales.loc, scales.log_std))

    big = _spread(BayesianLinear(70, 60, prior=Horseshoe(), parameterisation="centred", dtype=DOUBLE)).weight
    assert big._kl_plan.vectorised

    def one_draw(mean, log_std, loc, scale_log_std):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return centred_kl(big._kl_plan, mean, log_std, None, loc, scale_log_std)

    inputs = (big.theta.mean, big.theta.log_std, big.scales.loc, big.scales.log_std)
    assert torch.autograd.gradcheck(one_draw, inputs, fast_mode=True)


def test_plans_only_for_small_variables_and_constant_priors():
    shape = torch.Size((3, 4))

    def plan(priors, shapes, exponents=None):
        return ScaleKLPlan.build(priors, shapes, shape, exponents)

    half_cauchy = torch.distributions.HalfCauchy(torch.tensor(1.0))
    assert plan({"tau": half_cauchy}, {"tau": (1, 1)}) is not None
    learnable = torch.distributions.HalfCauchy(torch.tensor(1.0, requires_grad=True))
    assert plan({"tau": learnable}, {"tau": (1, 1)}) is None
    varying = torch.distributions.HalfCauchy(torch.tensor([[1.0, 2.0, 1.0, 1.0]]))
    assert plan({"lambda": varying}, {"lambda": (1, 4)}) is None
    assert plan({"tau": torch.distributions.LogNormal(0.0, 1.0)}, {"tau": (1, 1)}) is None
    big = (1, QUADRATURE_MAX_ENTRIES + 1)
    assert ScaleKLPlan.build({"eta": half_cauchy}, {"eta": big}, torch.Size(big)) is None  # the scales' KL alone
    assert ScaleKLPlan.build({"eta": half_cauchy}, {"eta": big}, torch.Size(big), {"eta": 1.0}).vectorised
    # A centred plan needs an exponent for every variable.
    assert plan({"tau": half_cauchy}, {"tau": (1, 1)}, {"lambda": 1.0}) is None


# ------------------------------------------------------------------------------ the fused layer (kl_in_forward)


def _loss_and_grads(net, x, weights, fused, seed=1):
    torch.manual_seed(seed)
    if fused:
        with kl_in_forward() as terms:
            out = net(x)
    else:
        terms, out = {}, net(x)
    loss = (out * weights).sum() + kl_divergence(net, terms)
    return loss, terms, _grads(loss, net)


def _assert_fused_equals_separate(net, x, n_layers):
    weights = torch.randn(x.shape[0], net(x).shape[-1], dtype=DOUBLE)
    loss, _, grads = _loss_and_grads(net, x, weights, fused=False)
    fused_loss, terms, fused_grads = _loss_and_grads(net, x, weights, fused=True)
    assert len(terms) == n_layers
    torch.testing.assert_close(fused_loss, loss, rtol=1e-12, atol=1e-9)
    for got, want in zip(fused_grads, grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("prior", PRIORS, ids=repr)
def test_fused_forward_and_kl_equal_the_separate_ones(prior, bias):
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        BayesianLinear(6, 5, prior=prior, parameterisation="centred", bias=bias, dtype=DOUBLE),
        torch.nn.ReLU(),
        BayesianLinear(5, 3, prior=prior, parameterisation="centred", bias=bias, dtype=DOUBLE),
    )
    _spread(net)
    x = torch.randn(4, 6, dtype=DOUBLE)
    x[0] = 0.0  # an all-zero input row: without a bias its output variance sits at the floor
    _assert_fused_equals_separate(net, x, n_layers=2)


def test_fused_forward_of_a_large_layer_with_a_scale_per_weight_equals_the_separate_one():
    torch.manual_seed(0)
    prior = GroupHorseshoe(groups="input", weight_scales=True)
    net = _spread(BayesianLinear(80, 60, prior=prior, parameterisation="centred", dtype=DOUBLE))
    assert net.weight._kl_plan.vectorised
    _assert_fused_equals_separate(net, torch.randn(4, 80, dtype=DOUBLE), n_layers=1)


def test_fused_layer_gradcheck():
    layer = _spread(
        BayesianLinear(4, 3, prior=GroupHorseshoe(groups="input"), parameterisation="centred", dtype=DOUBLE)
    )
    x = torch.randn(5, 4, dtype=DOUBLE, requires_grad=True)
    params = list(layer.parameters())

    def fused(x, *values):
        with torch.random.fork_rng():
            torch.manual_seed(2)
            with torch.nn.utils.stateless._reparametrize_module(
                layer, dict(zip([n for n, _ in layer.named_parameters()], values, strict=True))
            ):
                with kl_in_forward() as terms:
                    out = layer(x)
        return out, terms[id(layer)]

    assert torch.autograd.gradcheck(fused, (x, *params))


def test_layers_without_a_fused_path_report_no_kl_in_forward():
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    for prior, parameterisation in [(GroupHorseshoe(groups="input"), "non-centred"), (LogUniform(), "non-centred")]:
        bayes = bayesianize(net, prior, parameterisation=parameterisation)
        with kl_in_forward() as terms:
            bayes(torch.randn(2, 4))
        assert terms == {}


def test_a_layer_used_twice_reports_its_kl_once_and_no_grad_reports_none():
    layer = BayesianLinear(3, 3, prior=GroupHorseshoe(groups="input"), parameterisation="centred")
    x = torch.randn(2, 3)
    with kl_in_forward() as terms:
        layer(layer(x))
    assert list(terms) == [id(layer)]
    torch.testing.assert_close(kl_divergence(layer, terms), layer.kl_divergence())
    with torch.no_grad(), kl_in_forward() as terms:
        layer(x)
    assert terms == {}
