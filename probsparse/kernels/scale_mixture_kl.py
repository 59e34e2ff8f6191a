r"""Numba kernels for the KL terms of a Bayesian layer's scale variables (see :mod:`probsparse.nn.families`).

A scale-mixture prior gives a layer a few scale variables :math:`\phi_k` (a global :math:`\tau`, one
:math:`\lambda` per input neuron, ...), each with a log-normal posterior :math:`q(\log\phi) = \mathcal N(m, e^{2\ell})`.
Their KL terms are a handful of small arrays, and written as tensor operations they cost a few hundred
dispatches per training step: more than the layer's matrix products on LeNet-300-100. Here one call computes
the value and the gradient of all of a layer's terms.

:func:`scale_variables_kl` sums, over the entries of every variable,

.. math::

    \mathrm{KL}\big(q(\phi) \,\|\, p(\phi)\big) = -\tfrac12\log(2\pi e) - \ell - E_q\big[f(u)\big], \qquad
    f(u) = \log p(e^u) + u,

with :math:`E_q[f(u)] = \sum_j w_j f(m + e^\ell x_j)` by Gauss–Hermite quadrature. Its gradient is
:math:`\partial_m = -\sum_j w_j f'(u_j)`, :math:`\partial_\ell = -1 - e^\ell \sum_j w_j f'(u_j) x_j`. The priors, by
``kind``:

========================  ==========================  =====================================
kind                      :math:`f(u)`                parameters ``a``, ``b``
========================  ==========================  =====================================
``HALF_CAUCHY``           :math:`u - \mathrm{softplus}(2(u - a)) + c`   :math:`a = \log` scale
``GAMMA``                 :math:`a u - b e^{u} + c`   concentration, rate
``INVERSE_GAMMA``         :math:`-a u - b e^{-u} + c` concentration, rate
``POINT_ESTIMATE``        no KL (a type-II variable)
========================  ==========================  =====================================

with the normalising constant :math:`c` given (``prior_const``).

:func:`centred_scale_mixture_kl` adds the weights' part of the centred family's KL,
:math:`E_q[\mathrm{KL}(q(w) \,\|\, \mathcal N(0, s^2))]` for :math:`s = c_0 \prod_k \phi_k^{p_k}`, given the weights'
second moments :math:`S = \sigma^2 + \mu^2` summed over each precision group:

.. math::

    \tfrac12 \sum_g S_g\, e^{\rho_g} + \sum_k p_k\, r_k \sum m_k, \qquad
    \rho_g = -2\log c_0 + \sum_k \big(2 p_k^2 e^{2\ell_{k(g)}} - 2 p_k m_{k(g)}\big),

where :math:`\rho_g = \log E[s_g^{-2}]` and :math:`r_k` is the number of weights per entry of variable :math:`k`
(the weights' own :math:`-\sum\log\sigma - n/2 + n\log c_0` is left to the caller). Variable :math:`k`'s entry for
group :math:`g` is found from the group's multi-index and the variable's broadcast strides (0 along a dimension
it does not vary in). The kernel also returns :math:`e^{\rho_g}`, which the weights' gradient needs.

Variables are passed concatenated: ``loc`` and ``log_std`` hold every variable's entries, variable :math:`k` at
``offsets[k]:offsets[k + 1]``. Gradients are *added* to ``grad_loc`` and ``grad_log_std``.

The loops call the scalar ``exp`` / ``log1p`` of the C library (Numba vectorises them only with Intel's SVML),
about 10 ns each: the kernels are for small variables and groups (a few thousand entries), where a tensor
operation's dispatch would cost more. Larger ones (a scale per weight) are left to vectorised tensor code.

This module imports only NumPy and Numba.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from probsparse.kernels._config import CACHE, FASTMATH

# _REPRODUCIBLE_SUMS: a floating-point sum is never accumulated in a loop that also stores to an array. LLVM guards
# such a vectorised loop with a run-time check on the pointers (an output starting less than 128 bytes after an
# input sends it to the scalar loop); small arrays allocated close together then take the scalar loop, whose sum
# is rounded in another order (reassociation is allowed), and the same inputs give results one ulp apart: enough
# to break the bit-for-bit resumption of a fit. Loops that only load, or only store elementwise results, give the
# same bits either way.

POINT_ESTIMATE = -1
HALF_CAUCHY = 0
GAMMA = 1
INVERSE_GAMMA = 2

_HALF_LOG_2PI_E = 0.5 * math.log(2.0 * math.pi * math.e)

__all__ = [
    "GAMMA",
    "HALF_CAUCHY",
    "INVERSE_GAMMA",
    "POINT_ESTIMATE",
    "centred_scale_mixture_kl",
    "gaussian_kl",
    "scale_variables_kl",
    "weight_second_moments",
]


@numba.njit(fastmath=FASTMATH, cache=CACHE, inline="always")
def _log_density_of_log(kind, a, b, const, u):
    """``(f(u), f'(u))`` of the table in the module docstring."""
    if kind == HALF_CAUCHY:
        z = 2.0 * (u - a)
        # softplus(z) = max(z, 0) + log(1 + e), sigmoid(z) from the same e = exp(-|z|) in (0, 1]: finite for any z.
        # log(1 + e) rather than log1p(e): a third cheaper, and wrong by at most 1e-16 (absolute) when e is tiny.
        e = math.exp(-abs(z))
        one_plus = 1.0 + e
        softplus = max(z, 0.0) + math.log(one_plus)
        sigmoid = (1.0 if z > 0.0 else e) / one_plus
        return const + u - softplus, 1.0 - 2.0 * sigmoid
    if kind == GAMMA:
        tail = b * math.exp(u)
        return const + a * u - tail, a - tail
    tail = b * math.exp(-u)  # INVERSE_GAMMA
    return const - a * u - tail, tail - a


@numba.njit(fastmath=FASTMATH, cache=CACHE)
def scale_variables_kl(
    kinds, prior_a, prior_b, prior_const, offsets, loc, log_std, nodes, weights, grad_loc, grad_log_std
):
    """Sum of the scale variables' KL terms; their gradient is added to ``grad_loc`` and ``grad_log_std``.

    Parameters
    ----------
    kinds, prior_a, prior_b, prior_const : ndarray, shape (K,)
        Prior of each variable (see the module docstring).
    offsets : ndarray of int, shape (K + 1,)
    loc, log_std : ndarray, shape (n,)
        Concatenated entries of all variables.
    nodes, weights : ndarray, shape (J,)
        Quadrature rule for :math:`E_{\\mathcal N(0, 1)}` (nodes :math:`\\sqrt2 x_j`, weights :math:`w_j/\\sqrt\\pi`).
    grad_loc, grad_log_std : ndarray of float64, shape (n,)

    Returns
    -------
    float
    """
    total = 0.0
    for k in range(kinds.shape[0]):
        kind = kinds[k]
        if kind == POINT_ESTIMATE:
            continue
        a, b, const = prior_a[k], prior_b[k], prior_const[k]
        for i in range(offsets[k], offsets[k + 1]):
            m = float(loc[i])
            ell = float(log_std[i])
            s = math.exp(ell)
            expected = d_loc = d_std = 0.0
            for j in range(nodes.shape[0]):
                f, slope = _log_density_of_log(kind, a, b, const, m + s * nodes[j])
                expected += weights[j] * f
                d_loc += weights[j] * slope
                d_std += weights[j] * slope * nodes[j]
            total -= expected + ell + _HALF_LOG_2PI_E
            grad_loc[i] -= d_loc
            grad_log_std[i] -= 1.0 + s * d_std
    return total


@numba.njit(fastmath=FASTMATH, cache=CACHE)
def _weights_term(
    second_moment, shape, strides, exponents, repeats, kinds, offsets, loc, log_std, log_c, precision, grad_loc,
    grad_log_std,
):  # fmt: skip
    n_vars = exponents.shape[0]
    ndim = shape.shape[0]
    total = 0.0
    for k in range(n_vars):  # E[log s] beyond the constant: p_k r_k sum(m_k)
        weight = exponents[k] * repeats[k]
        for i in range(offsets[k], offsets[k + 1]):  # the sum apart from the stores: see _REPRODUCIBLE_SUMS
            total += weight * loc[i]
        for i in range(offsets[k], offsets[k + 1]):
            grad_loc[i] += weight
    position = np.empty(n_vars, dtype=np.int64)
    for g in range(second_moment.shape[0]):
        for k in range(n_vars):
            position[k] = offsets[k]
        rest = g
        for d in range(ndim - 1, -1, -1):
            index = rest % shape[d]
            rest //= shape[d]
            for k in range(n_vars):
                position[k] += index * strides[k, d]
        log_precision = -2.0 * log_c
        for k in range(n_vars):
            p = exponents[k]
            log_precision -= 2.0 * p * loc[position[k]]
            if kinds[k] != POINT_ESTIMATE:
                log_precision += 2.0 * p * p * math.exp(2.0 * log_std[position[k]])
        prec = math.exp(log_precision)
        precision[g] = prec
        half_moment = 0.5 * second_moment[g] * prec
        total += half_moment
        for k in range(n_vars):
            p = exponents[k]
            grad_loc[position[k]] -= 2.0 * p * half_moment
            if kinds[k] != POINT_ESTIMATE:
                grad_log_std[position[k]] += 4.0 * p * p * math.exp(2.0 * log_std[position[k]]) * half_moment
    return total


@numba.njit(fastmath=FASTMATH, cache=CACHE)
def centred_scale_mixture_kl(
    second_moment,
    shape,
    strides,
    exponents,
    repeats,
    log_c,
    kinds,
    prior_a,
    prior_b,
    prior_const,
    offsets,
    loc,
    log_std,
    nodes,
    weights,
    precision,
    grad_loc,
    grad_log_std,
):
    """The centred family's KL less the weights' :math:`-\\sum\\log\\sigma - n/2 + n\\log c_0` (module docstring).

    Parameters
    ----------
    second_moment : ndarray, shape (G,)
        :math:`\\sum (\\sigma^2 + \\mu^2)` over the weights of each precision group, the groups in C order of the
        group shape ``shape`` (ndim,).
    strides : ndarray of int, shape (K, ndim)
        Step in variable :math:`k`'s entries per step of each group index (0 where it does not vary).
    exponents, repeats : ndarray, shape (K,)
        :math:`p_k` and the number of weights per entry of variable :math:`k`.
    log_c : float
        :math:`\\log c_0`.
    kinds ... weights
        As in :func:`scale_variables_kl`.
    precision : ndarray, shape (G,)
        Output: :math:`e^{\\rho_g}`.
    grad_loc, grad_log_std : ndarray of float64, shape (n,)
        The gradient is added to them.

    Returns
    -------
    float
    """
    total = _weights_term(
        second_moment, shape, strides, exponents, repeats, kinds, offsets, loc, log_std, log_c, precision, grad_loc,
        grad_log_std,
    )  # fmt: skip
    return total + scale_variables_kl(
        kinds, prior_a, prior_b, prior_const, offsets, loc, log_std, nodes, weights, grad_loc, grad_log_std
    )


@numba.njit(fastmath=FASTMATH, cache=CACHE)
def weight_second_moments(mean, var, second_moment):
    r"""Group sums of :math:`\sigma^2 + \mu^2` over a matrix of weights, into ``second_moment``.

    One pass over the two weight-sized arrays (tensor operations take three, and a temporary), summed in float64.

    Parameters
    ----------
    mean, var : ndarray, shape (O, I)
        :math:`\mu` and :math:`\sigma^2`.
    second_moment : ndarray, shape (G0, G1)
        Output, with ``G0`` 1 or O and ``G1`` 1 or I: the sums over the dims of size 1 (group shape ``(1, I)``:
        one sum per column).
    """
    n_out, n_in = mean.shape
    by_row, by_column = second_moment.shape[0] > 1, second_moment.shape[1] > 1
    # One plain loop per group shape: a branch in the inner loop would keep it from being vectorised.
    if by_row and by_column:
        for i in range(n_out):
            for j in range(n_in):
                second_moment[i, j] = var[i, j] + mean[i, j] * mean[i, j]
    elif by_column:
        sums = np.zeros(n_in)
        for i in range(n_out):
            for j in range(n_in):
                sums[j] += float(var[i, j]) + float(mean[i, j]) * float(mean[i, j])
        for j in range(n_in):
            second_moment[0, j] = sums[j]
    else:
        total = 0.0
        for i in range(n_out):
            row = 0.0
            for j in range(n_in):
                row += float(var[i, j]) + float(mean[i, j]) * float(mean[i, j])
            if by_row:
                second_moment[i, 0] = row
            total += row
        if not by_row:
            second_moment[0, 0] = total


@numba.njit(fastmath=FASTMATH, cache=CACHE)
def gaussian_kl(mean, log_std, prior_std, grad_mean, grad_log_std):
    r""":math:`\sum \mathrm{KL}(\mathcal N(\mu, e^{2\ell}) \,\|\, \mathcal N(0, s^2))`; its gradient into the outputs.

    .. math::

        \mathrm{KL} = \sum \Big( \frac{e^{2\ell} + \mu^2}{2 s^2} - \ell + \log s - \frac12 \Big), \qquad
        \partial_\mu = \mu / s^2, \qquad \partial_\ell = e^{2\ell} / s^2 - 1.

    For a small vector (a layer's bias): one call where tensor operations take a dozen.

    Parameters
    ----------
    mean, log_std : ndarray, shape (n,)
    prior_std : float
    grad_mean, grad_log_std : ndarray, shape (n,)
        Outputs (overwritten).

    Returns
    -------
    float
    """
    inv_prior_var = 1.0 / (prior_std * prior_std)
    for i in range(mean.shape[0]):
        grad_mean[i] = float(mean[i]) * inv_prior_var
        grad_log_std[i] = math.exp(2.0 * float(log_std[i])) * inv_prior_var - 1.0
    # The sum in a loop of its own, without stores: see _REPRODUCIBLE_SUMS.
    total = mean.shape[0] * (math.log(prior_std) - 0.5)
    for i in range(mean.shape[0]):
        m, ell = float(mean[i]), float(log_std[i])
        total += 0.5 * (math.exp(2.0 * ell) + m * m) * inv_prior_var - ell
    return total
