"""The scale-variable KL kernels against whole-array NumPy references written from the formulas.

``test_nojit.py`` runs this module a second time with ``NUMBA_DISABLE_JIT=1``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import gammaln

from probsparse.kernels import scale_mixture_kl as kernels

NODES_X, NODES_W = np.polynomial.hermite.hermgauss(10)
NODES, WEIGHTS = math.sqrt(2.0) * NODES_X, NODES_W / math.sqrt(math.pi)
HALF_LOG_2PI_E = 0.5 * math.log(2.0 * math.pi * math.e)


def log_density_of_log(kind, a, b, u):
    """log p(e^u) + u and its derivative, straight from the densities (no shared code with the kernel)."""
    if kind == kernels.HALF_CAUCHY:  # p(x) = 2 / (pi c (1 + (x / c)^2)), c = e^a
        c = math.exp(a)
        x = np.exp(u)
        value = np.log(2.0 / (math.pi * c)) - np.log1p((x / c) ** 2) + u
        return value, 1.0 - 2.0 * (x / c) ** 2 / (1.0 + (x / c) ** 2)
    if kind == kernels.GAMMA:  # x^(a-1) e^(-b x) b^a / Gamma(a), times the Jacobian x
        x = np.exp(u)
        return a * math.log(b) - gammaln(a) + a * u - b * x, a - b * x
    x = np.exp(u)  # inverse gamma: x^(-a-1) e^(-b / x) b^a / Gamma(a), times x
    return a * math.log(b) - gammaln(a) - a * u - b / x, -a + b / x


def reference_scale_kl(kinds, a, b, offsets, loc, log_std):
    total = 0.0
    grad_loc, grad_log_std = np.zeros(loc.size), np.zeros(loc.size)
    for k, kind in enumerate(kinds):
        if kind == kernels.POINT_ESTIMATE:
            continue
        sl = slice(offsets[k], offsets[k + 1])
        m, ell = loc[sl].astype(float), log_std[sl].astype(float)
        u = m[:, None] + np.exp(ell)[:, None] * NODES[None, :]
        f, slope = log_density_of_log(kind, a[k], b[k], u)
        total += -np.sum(f @ WEIGHTS + ell + HALF_LOG_2PI_E)
        grad_loc[sl] = -(slope @ WEIGHTS)
        grad_log_std[sl] = -(1.0 + np.exp(ell) * ((slope * NODES) @ WEIGHTS))
    return total, grad_loc, grad_log_std


def prior_constants(kinds, a, b):
    const = np.zeros(len(kinds))
    for k, kind in enumerate(kinds):
        if kind == kernels.HALF_CAUCHY:
            const[k] = math.log(2.0 / math.pi) - a[k]
        elif kind in (kernels.GAMMA, kernels.INVERSE_GAMMA):
            const[k] = a[k] * math.log(b[k]) - gammaln(a[k])
    return const


def random_variables(rng, sizes, kinds):
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    loc = rng.normal(0.0, 1.0, offsets[-1])
    log_std = rng.normal(-1.0, 0.7, offsets[-1])
    a = np.array([rng.normal(0.0, 1.0) if k == kernels.HALF_CAUCHY else rng.uniform(0.5, 3.0) for k in kinds])
    b = rng.uniform(0.3, 2.0, len(kinds))
    return offsets, loc, log_std, a, b


@pytest.mark.parametrize("seed", range(3))
def test_scale_variables_kl_matches_the_reference(seed):
    rng = np.random.default_rng(seed)
    kinds = np.array([kernels.HALF_CAUCHY, kernels.GAMMA, kernels.POINT_ESTIMATE, kernels.INVERSE_GAMMA])
    offsets, loc, log_std, a, b = random_variables(rng, [1, 7, 5, 12], kinds)
    grad_loc, grad_log_std = np.zeros(loc.size), np.zeros(loc.size)
    value = kernels.scale_variables_kl(
        kinds, a, b, prior_constants(kinds, a, b), offsets, loc, log_std, NODES, WEIGHTS, grad_loc, grad_log_std
    )
    want, want_loc, want_log_std = reference_scale_kl(kinds, a, b, offsets, loc, log_std)
    np.testing.assert_allclose(value, want, rtol=1e-12)
    np.testing.assert_allclose(grad_loc, want_loc, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad_log_std, want_log_std, rtol=1e-10, atol=1e-12)
    # A point estimate has no KL: its entries get no gradient.
    assert not grad_loc[offsets[2] : offsets[3]].any() and not grad_log_std[offsets[2] : offsets[3]].any()


def test_half_cauchy_terms_stay_finite_far_in_the_tails():
    kinds = np.array([kernels.HALF_CAUCHY])
    loc, log_std = np.array([-300.0, 300.0, 0.0]), np.array([-2.0, -2.0, 3.0])
    grad_loc, grad_log_std = np.zeros(3), np.zeros(3)
    value = kernels.scale_variables_kl(
        kinds, np.zeros(1), np.zeros(1), prior_constants(kinds, np.zeros(1), np.zeros(1)), np.array([0, 3]), loc,
        log_std, NODES, WEIGHTS, grad_loc, grad_log_std,
    )  # fmt: skip
    assert np.isfinite(value) and np.isfinite(grad_loc).all() and np.isfinite(grad_log_std).all()
    # Far below the scale the log density rises with slope 1, far above it falls with slope -1.
    np.testing.assert_allclose(grad_loc[:2], [-1.0, 1.0], atol=1e-12)


def reference_centred(second_moment, group_shape, var_shapes, exponents, kinds, loc, log_std, offsets, log_c, n):
    """The weights' part of the centred KL by NumPy broadcasting over the group shape."""
    ndim = len(group_shape)
    m = [loc[offsets[k] : offsets[k + 1]].reshape(s) for k, s in enumerate(var_shapes)]
    ell = [log_std[offsets[k] : offsets[k + 1]].reshape(s) for k, s in enumerate(var_shapes)]
    log_precision = np.full(group_shape, -2.0 * log_c)
    for k, p in enumerate(exponents):
        log_precision = log_precision - 2.0 * p * m[k]
        if kinds[k] != kernels.POINT_ESTIMATE:
            log_precision = log_precision + 2.0 * p**2 * np.exp(2.0 * ell[k])
    precision = np.exp(log_precision)
    half = 0.5 * second_moment.reshape(group_shape) * precision
    total = half.sum()
    grad_loc, grad_log_std = np.zeros(loc.size), np.zeros(loc.size)
    for k, (p, shape) in enumerate(zip(exponents, var_shapes, strict=True)):
        repeats = n // int(np.prod(shape))
        total += p * repeats * m[k].sum()
        axes = tuple(d for d in range(ndim) if shape[d] == 1 and group_shape[d] > 1)
        summed = half.sum(axis=axes, keepdims=True).reshape(-1)
        grad_loc[offsets[k] : offsets[k + 1]] = p * repeats - 2.0 * p * summed
        if kinds[k] != kernels.POINT_ESTIMATE:
            grad_log_std[offsets[k] : offsets[k + 1]] = 4.0 * p**2 * np.exp(2.0 * ell[k]).reshape(-1) * summed
    return total, precision.reshape(-1), grad_loc, grad_log_std


@pytest.mark.parametrize(
    ("weight_shape", "var_shapes"),
    [
        ((6, 5), [(1, 1), (1, 5)]),  # global and per-input scales (the group horseshoe)
        ((6, 5), [(1, 1), (6, 1)]),  # per-output scales
        ((6, 5), [(1, 1), (1, 5), (6, 5)]),  # and one per weight
        ((4, 3, 2, 2), [(1, 1, 1, 1), (1, 3, 1, 1)]),  # a convolution's per-channel scales
        ((6, 5), []),  # a fixed scale
    ],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_centred_scale_mixture_kl_matches_the_reference(weight_shape, var_shapes, dtype):
    rng = np.random.default_rng(len(var_shapes))
    ndim = len(weight_shape)
    group_shape = np.broadcast_shapes((1,) * ndim, *var_shapes)
    kinds = np.array([kernels.HALF_CAUCHY, kernels.POINT_ESTIMATE, kernels.GAMMA][: len(var_shapes)], dtype=np.int64)
    offsets, loc, log_std, a, b = random_variables(rng, [int(np.prod(s)) for s in var_shapes], kinds)
    exponents = np.array([1.0, 0.5, -0.5][: len(var_shapes)])
    repeats = np.array([math.prod(weight_shape) // int(np.prod(s)) for s in var_shapes], dtype=np.float64)
    strides = np.zeros((len(var_shapes), ndim), dtype=np.int64)
    for k, shape in enumerate(var_shapes):
        contiguous = np.cumprod((1,) + tuple(shape[::-1]))[:-1][::-1]
        strides[k] = np.where(np.array(shape) > 1, contiguous, 0)
    second_moment = rng.uniform(0.1, 2.0, int(np.prod(group_shape))).astype(dtype)
    precision = np.empty(second_moment.size, dtype=dtype)
    grad_loc, grad_log_std = np.zeros(loc.size), np.zeros(loc.size)
    log_c = 0.3
    value = kernels.centred_scale_mixture_kl(
        second_moment, np.array(group_shape, dtype=np.int64), strides, exponents, repeats, log_c, kinds, a, b,
        prior_constants(kinds, a, b), offsets, loc.astype(dtype), log_std.astype(dtype), NODES, WEIGHTS, precision,
        grad_loc, grad_log_std,
    )  # fmt: skip
    loc, log_std = loc.astype(dtype).astype(float), log_std.astype(dtype).astype(float)
    weights_part = reference_centred(
        second_moment.astype(float), group_shape, var_shapes, exponents, kinds, loc, log_std, offsets, log_c,
        math.prod(weight_shape),
    )  # fmt: skip
    scales_part = reference_scale_kl(kinds, a, b, offsets, loc, log_std)
    rtol, atol = (1e-10, 1e-9) if dtype == np.float64 else (2e-6, 1e-6)
    np.testing.assert_allclose(value, weights_part[0] + scales_part[0], rtol=rtol)
    np.testing.assert_allclose(precision, weights_part[1], rtol=rtol)
    np.testing.assert_allclose(grad_loc, weights_part[2] + scales_part[1], rtol=rtol, atol=atol)
    np.testing.assert_allclose(grad_log_std, weights_part[3] + scales_part[2], rtol=rtol, atol=atol)


@pytest.mark.parametrize("group_shape", [(1, 5), (6, 1), (1, 1), (6, 5)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_weight_second_moments_are_the_group_sums(group_shape, dtype):
    rng = np.random.default_rng(7)
    mean, var = rng.normal(size=(6, 5)).astype(dtype), rng.uniform(0.1, 1.0, (6, 5)).astype(dtype)
    out = np.empty(group_shape, dtype=dtype)
    kernels.weight_second_moments(mean, var, out)
    axes = tuple(d for d in range(2) if group_shape[d] == 1)
    want = (var.astype(float) + mean.astype(float) ** 2).sum(axis=axes, keepdims=True)
    np.testing.assert_allclose(out, want, rtol=1e-12 if dtype == np.float64 else 1e-6)


@pytest.mark.parametrize("prior_std", [1.0, 0.25])
def test_gaussian_kl_is_the_closed_form(prior_std):
    rng = np.random.default_rng(11)
    mean, log_std = rng.normal(size=9), rng.normal(-1.0, 0.5, 9)
    grad_mean, grad_log_std = np.empty(9), np.empty(9)
    value = kernels.gaussian_kl(mean, log_std, prior_std, grad_mean, grad_log_std)
    var, prior_var = np.exp(2 * log_std), prior_std**2
    # KL(N(m, v) || N(0, p)) = (log p - log v) / 2 + (v + m^2) / (2 p) - 1/2
    want = np.sum(0.5 * (np.log(prior_var) - np.log(var)) + (var + mean**2) / (2 * prior_var) - 0.5)
    np.testing.assert_allclose(value, want, rtol=1e-12)
    np.testing.assert_allclose(grad_mean, mean / prior_var, rtol=1e-12)
    np.testing.assert_allclose(grad_log_std, var / prior_var - 1.0, rtol=1e-12)


def _near_and_far(n, first, second):
    """Two input arrays followed closely by two output arrays, and the same four arrays far apart."""
    near = np.zeros(4 * n)
    near[:n], near[n : 2 * n] = first, second
    far = np.zeros(4000)
    far[:n], far[1000 : 1000 + n] = first, second
    return [near[i * n : (i + 1) * n] for i in range(4)], [far[i * 1000 : i * 1000 + n] for i in range(4)]


@pytest.mark.parametrize("n", [8, 12, 40])
def test_kernel_sums_do_not_depend_on_where_the_outputs_lie(n):
    # An output starting less than 128 bytes after an input sends the vectorised loop to its scalar fallback,
    # which must round the sums as the vector loop does (see _REPRODUCIBLE_SUMS): the same inputs, the same bits.
    rng = np.random.default_rng(5)
    first, second = rng.normal(size=n), rng.normal(-1.0, 0.5, n)
    values = [kernels.gaussian_kl(m, ell, 0.7, g, h) for m, ell, g, h in _near_and_far(n, first, second)]
    assert values[0] == values[1]
    kinds, offsets = np.array([kernels.HALF_CAUCHY]), np.array([0, n])
    consts = prior_constants(kinds, np.zeros(1), np.zeros(1))
    values = [
        kernels.centred_scale_mixture_kl(
            np.ones(1),
            np.array([1, 1]),
            np.zeros((1, 2), dtype=np.int64),
            np.array([1.0]),
            np.array([3.0]),
            0.0,
            kinds,
            np.zeros(1),
            np.zeros(1),
            consts,
            offsets,
            loc,
            log_std,
            NODES,
            WEIGHTS,
            np.empty(1),
            g,
            h,
        )  # fmt: skip
        for loc, log_std, g, h in _near_and_far(n, first, second)
    ]
    assert values[0] == values[1]
