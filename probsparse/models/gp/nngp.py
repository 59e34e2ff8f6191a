r"""Neural-network GP (NNGP) kernels: the covariance of an infinitely wide fully connected network.

A network with ``depth`` hidden layers of width :math:`H \to \infty`, weights :math:`\mathcal N(0, \sigma_w^2/H)`
(:math:`\sigma_w^2/d` on the input layer) and biases :math:`\mathcal N(0, \sigma_b^2)` has Gaussian
pre-activations at every layer, with covariance given by the recursion

.. math::

    K^{0}(x, x') = \sigma_b^2 + \sigma_w^2\, \frac{x^\top x'}{d}, \qquad
    K^{\ell}(x, x') = \sigma_b^2 + \sigma_w^2\, \mathbb E_{(u, v) \sim \mathcal N(0, \Sigma^{\ell-1})}
    [\phi(u)\, \phi(v)], \quad \ell = 1, \dots, L,

where :math:`\Sigma^{\ell-1}` is the 2x2 covariance of :math:`K^{\ell-1}` at :math:`(x, x')`. Both kernels here
return :math:`K^L`, the covariance of the last hidden pre-activation. The read-out layer's variance (the
quantity a scale mixture puts a prior on) is left to :class:`gpytorch.kernels.ScaleKernel` or to the
Student-t process of :mod:`probsparse.models.gp.student_t_process`.
"""

from __future__ import annotations

import math

import torch
from gpytorch.constraints import Interval, Positive
from gpytorch.kernels import Kernel
from torch.autograd.function import once_differentiable

from ..._validation import check_positive_int
from ._inputs import check_positive

__all__ = ["ReLUNNGPKernel", "ErfNNGPKernel", "relu_expectation", "erf_expectation"]

# K(X, X) of the ReLU kernel is computed in blocks of about _BLOCK_ROWS rows (at most _MAX_BLOCKS per side),
# the upper block triangle only: (P + 1) / 2P of the full matrix's work
_BLOCK_ROWS = 128
_MAX_BLOCKS = 8


def relu_expectation(k11: torch.Tensor, k22: torch.Tensor, k12: torch.Tensor) -> torch.Tensor:
    r"""Arc-cosine expectation :math:`\mathbb E[\mathrm{relu}(u)\,\mathrm{relu}(v)]` (Cho & Saul, 2009).

    .. math::

        \frac{\sqrt{k_{11} k_{22}}}{2\pi} \big(\sin\theta + (\pi - \theta)\cos\theta\big),
        \qquad \cos\theta = \frac{k_{12}}{\sqrt{k_{11} k_{22}}}.

    Parameters
    ----------
    k11, k22, k12 : Tensor
        Variances of :math:`u`, :math:`v` and their covariance; broadcastable shapes.

    Returns
    -------
    Tensor
        The expectation, broadcast shape of the inputs.

    Examples
    --------
    >>> import torch
    >>> one = torch.tensor(1.0, dtype=torch.float64)
    >>> round(relu_expectation(one, one, one).item(), 9)  # E[relu(u)^2] = var / 2
    0.5
    """
    # Clamping the product before the square root keeps the gradient finite when a variance underflows
    # to zero (sqrt has an infinite slope there), e.g. while an optimiser drives sigma_w^2 towards 0.
    norm = torch.sqrt((k11 * k22).clamp_min(torch.finfo(k12.dtype).tiny))
    # Clamping keeps arccos away from its infinite slope at +-1 (the diagonal, where theta is exactly 0);
    # the clamp passes no gradient there, which is right since cos(theta) = 1 identically on the diagonal.
    eps = _clamp_eps(k12.dtype)
    cos = (k12 / norm).clamp(-1.0 + eps, 1.0 - eps)
    theta = torch.arccos(cos)
    return norm / (2 * math.pi) * (torch.sqrt(1 - cos * cos) + (math.pi - theta) * cos)


def erf_expectation(k11: torch.Tensor, k22: torch.Tensor, k12: torch.Tensor) -> torch.Tensor:
    r"""Williams' (1997) expectation :math:`\mathbb E[\mathrm{erf}(u)\,\mathrm{erf}(v)]`.

    .. math::

        \frac{2}{\pi} \arcsin \frac{2 k_{12}}{\sqrt{(1 + 2 k_{11})(1 + 2 k_{22})}}.

    Parameters
    ----------
    k11, k22, k12 : Tensor
        Variances of :math:`u`, :math:`v` and their covariance; broadcastable shapes.

    Returns
    -------
    Tensor
        The expectation, broadcast shape of the inputs.

    Examples
    --------
    >>> import torch
    >>> zero = torch.tensor(0.0)
    >>> erf_expectation(torch.tensor(1.0), torch.tensor(1.0), zero).item()
    0.0
    """
    arg = 2 * k12 / torch.sqrt((1 + 2 * k11) * (1 + 2 * k22))
    return (2 / math.pi) * torch.asin(arg.clamp(-1.0, 1.0))


def _clamp_eps(dtype: torch.dtype) -> float:
    # keeps arccos away from its infinite slope at +-1 (the diagonal, where theta is exactly 0)
    return 1e-12 if dtype == torch.float64 else 1e-6


class _ReLURecursion(torch.autograd.Function):
    r"""The whole depth-:math:`L` arc-cosine recursion as one autograd node, with closed-form derivatives.

    Forward, from :math:`G = x x'^\top/d` ``(*B, n, m)``, :math:`q_1 = |x|^2/d` ``(*B, n, 1)`` and
    :math:`q_2 = |x'|^2/d` ``(*B, 1, m)``:

    .. math::

        K^0 = \sigma_b^2 + \sigma_w^2 G, \quad
        K^{\ell+1} = \sigma_b^2 + \frac{\sigma_w^2}{2\pi} N^\ell J(\theta^\ell), \quad
        k_{11}^{\ell+1} = \sigma_b^2 + \tfrac12 \sigma_w^2 k_{11}^\ell,

    with :math:`N^\ell = \sqrt{k^\ell_{11}}\sqrt{k^\ell_{22}}^\top` (an outer product of two vectors),
    :math:`\cos\theta^\ell = K^\ell / N^\ell` and :math:`J(\theta) = \sin\theta + (\pi - \theta)\cos\theta`
    (the diagonal recursion is :math:`\mathbb E[\mathrm{relu}(u)^2] = k/2`). Backward, with
    :math:`E = N J / 2\pi`:

    .. math::

        \frac{\partial E}{\partial K} = \frac{\pi - \theta}{2\pi}, \qquad
        \frac{\partial E}{\partial k_{11}} = \frac{N \sin\theta}{4\pi k_{11}}, \qquad
        \frac{\partial E}{\partial k_{22}} = \frac{N \sin\theta}{4\pi k_{22}},

    so the gradients of the vectors :math:`k_{11}, k_{22}` are matrix-vector products, and those of
    :math:`\sigma_w^2, \sigma_b^2` are inner products with the saved :math:`N J` (one pass each). Where
    :math:`\cos\theta` is clamped (see :func:`relu_expectation`) the clamp passes no gradient, as in
    autograd of :func:`relu_expectation`: there :math:`\partial E/\partial K = 0` and
    :math:`\partial E/\partial k_{11} = E / 2k_{11}`. Saves :math:`\pi - \theta`, :math:`\sin\theta` and
    :math:`NJ` per layer; every other matrix is computed in place (on one core, first touching fresh
    memory costs as much as an elementwise pass).
    """

    @staticmethod
    def forward(ctx, gram, q1, q2, sw, sb, depth):
        eps = _clamp_eps(gram.dtype)
        tiny = torch.finfo(gram.dtype).tiny
        swc = sw / (2 * math.pi)
        k12 = torch.addcmul(sb, sw, gram)
        k11, k22 = torch.addcmul(sb, sw, q1), torch.addcmul(sb, sw, q2)
        saved = []
        for _ in range(depth):
            # clamping the vectors, not the outer product, keeps sqrt's slope finite if a variance underflows
            s1, s2 = k11.clamp_min(tiny).sqrt(), k22.clamp_min(tiny).sqrt()
            norm = s1 * s2
            cos = k12.div_(norm).clamp_(-1.0 + eps, 1.0 - eps)
            p = torch.arccos(cos).neg_().add_(math.pi)  # pi - theta
            sin = torch.sin(p)  # sin(pi - theta) = sin(theta), accurate also near theta = 0
            nj = cos.mul_(p).add_(sin).mul_(norm)  # N J(theta), in the buffer of K^l
            saved += [p, sin, nj, s1, s2, k11, k22]
            k12 = torch.addcmul(sb, swc, nj, out=norm) if norm.shape == nj.shape else torch.addcmul(sb, swc, nj)
            k11, k22 = torch.addcmul(sb, 0.5 * sw, k11), torch.addcmul(sb, 0.5 * sw, k22)
        ctx.save_for_backward(gram, q1, q2, sw, sb, *saved)
        ctx.depth = depth
        return k12

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        gram, q1, q2, sw, sb, *saved = ctx.saved_tensors
        eps = _clamp_eps(gram.dtype)
        # pi - theta at the clamp bounds, computed as the forward computed it
        p_hi, p_lo = torch.arccos(torch.tensor([1.0 - eps, -1.0 + eps], dtype=gram.dtype)).neg_().add_(math.pi)

        def total(a):  # sum over the two matrix dimensions, kept as (*B, 1, 1)
            return a.sum((-2, -1), keepdim=True)

        def inner(a, b):  # sum of a * b over the matrix dimensions, (*B, 1, 1), in one pass
            return a.flatten(-2).unsqueeze(-2) @ b.flatten(-2).unsqueeze(-1)

        g12, g1, g2 = grad.contiguous(), None, None
        gsw = gsb = 0.0
        swc = sw / (2 * math.pi)
        for layer in reversed(range(ctx.depth)):
            p, sin, nj, s1, s2, k11, k22 = saved[7 * layer : 7 * layer + 7]
            # K^{l+1} = sb + swc N J; k11^{l+1} = sb + sw k11 / 2
            gsb = gsb + total(g12)
            gsw = gsw + inner(g12, nj) / (2 * math.pi)
            if g1 is not None:
                gsb = gsb + g1.sum(-2, keepdim=True) + g2.sum(-1, keepdim=True)
                gsw = gsw + 0.5 * ((g1 * k11).sum(-2, keepdim=True) + (g2 * k22).sum(-1, keepdim=True))
            ge = g12 * swc  # gradient of N J
            dk12 = ge * p
            clamped = ((p >= p_hi) | (p <= p_lo)).nonzero(as_tuple=True)
            ge_clamped = ge[clamped]
            dn = ge.mul_(sin)
            if ge_clamped.numel():
                pc = p[clamped]
                dk12[clamped] = 0.0
                dn[clamped] = ge_clamped * (sin[clamped] - pc * torch.cos(pc))  # J = sin + (pi - theta) cos
            # d(N f)/dk11 = N f / (2 k11) = f s2 / (2 s1), summed over the columns (rows for k22)
            d1 = (dn @ s2.transpose(-1, -2)) / (2 * s1)
            d2 = (s1.transpose(-1, -2) @ dn) / (2 * s2)
            if g1 is not None:
                d1 = d1 + (0.5 * sw) * g1
                d2 = d2 + (0.5 * sw) * g2
            g12, g1, g2 = dk12, d1, d2
        # K^0 = sb + sw G, k11^0 = sb + sw q1, k22^0 = sb + sw q2
        gsb = gsb + total(g12) + g1.sum(-2, keepdim=True) + g2.sum(-1, keepdim=True)
        gsw = gsw + inner(g12, gram) + (g1 * q1).sum(-2, keepdim=True) + (g2 * q2).sum(-1, keepdim=True)
        need = ctx.needs_input_grad
        g_gram = (g12 * sw).sum_to_size(gram.shape) if need[0] else None
        g_q1 = (g1 * sw).sum_to_size(q1.shape) if need[1] else None
        g_q2 = (g2 * sw).sum_to_size(q2.shape) if need[2] else None
        g_sw = gsw.sum_to_size(sw.shape) if need[3] else None
        g_sb = gsb.sum_to_size(sb.shape) if need[4] else None
        return g_gram, g_q1, g_q2, g_sw, g_sb, None


class _SymmetricFromBlocks(torch.autograd.Function):
    r"""Assemble a symmetric ``(n, n)`` matrix from its upper block triangle.

    ``blocks`` ``(P(P+1)/2, b, b)`` holds :math:`K_{pq}` for the block pairs :math:`p \le q` (row-major
    order of :func:`torch.triu_indices`) of a partition of ``0..n-1`` into ``P`` runs of ``b`` indices (the
    last run cut at ``n``, the blocks' surplus rows and columns dropped); :math:`K_{qp} = K_{pq}^\top`. The
    gradient of block :math:`(p, q)` is :math:`\bar K_{pq} + \bar K_{qp}^\top` (:math:`\bar K_{pp}` on the
    diagonal).
    """

    @staticmethod
    def forward(ctx, blocks, n, num_blocks):
        b = blocks.shape[-1]
        out = blocks.new_empty(n, n)
        pairs = torch.triu_indices(num_blocks, num_blocks).T.tolist()
        for k, (p, q) in enumerate(pairs):
            rows, cols = slice(p * b, min((p + 1) * b, n)), slice(q * b, min((q + 1) * b, n))
            block = blocks[k, : rows.stop - rows.start, : cols.stop - cols.start]
            out[rows, cols] = block
            if p != q:
                out[cols, rows] = block.T
        ctx.pairs, ctx.b, ctx.n = pairs, b, n
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        b, n = ctx.b, ctx.n
        out = grad.new_zeros(len(ctx.pairs), b, b)
        for k, (p, q) in enumerate(ctx.pairs):
            rows, cols = slice(p * b, min((p + 1) * b, n)), slice(q * b, min((q + 1) * b, n))
            block = out[k, : rows.stop - rows.start, : cols.stop - cols.start]
            block.copy_(grad[rows, cols])
            if p != q:
                block.add_(grad[cols, rows].T)
        return out, None, None


def _relu_gram_symmetric(x, sw, sb, depth, num_blocks):
    r""":math:`K^L(X, X)` from the recursion on the ``P(P+1)/2`` blocks of its upper block triangle.

    ``x`` ``(n, d)``, ``sw`` and ``sb`` ``(1, 1)``: about :math:`(P+1)/2P` of the elementwise work and
    memory of the full matrix (rows padded with zeros to a multiple of ``P``; the padding is dropped).
    """
    n, d = x.shape
    b = -(-n // num_blocks)
    xp = torch.cat([x, x.new_zeros(num_blocks * b - n, d)]).view(num_blocks, b, d)
    rows, cols = torch.triu_indices(num_blocks, num_blocks)
    xr, xc = xp[rows], xp[cols]  # (P(P+1)/2, b, d)
    q = (xp * xp).sum(-1) / d  # (P, b)
    gram = (xr @ xc.transpose(-1, -2)) / d
    blocks = _ReLURecursion.apply(gram, q[rows].unsqueeze(-1), q[cols].unsqueeze(-2), sw, sb, depth)
    return _SymmetricFromBlocks.apply(blocks, n, num_blocks)


def _same_inputs(x1: torch.Tensor, x2: torch.Tensor) -> bool:
    """Whether ``K(x1, x2)`` is ``K(x1, x1)``, with the gradient reaching both inputs through ``x1``."""
    if x1 is x2:
        return True
    grads = x1.requires_grad or x2.requires_grad
    return not grads and x1.shape == x2.shape and bool(torch.equal(x1, x2))


class _NNGPKernel(Kernel):
    """Shared recursion; subclasses set ``_expectation``."""

    has_lengthscale = False
    _expectation = None
    # the full-matrix recursion as one autograd.Function with hand-written derivatives, where there is one
    _fused = None

    def __init__(
        self,
        depth: int = 2,
        weight_variance: float = 1.0,
        bias_variance: float = 0.1,
        *,
        weight_variance_constraint: Interval | None = None,
        bias_variance_constraint: Interval | None = None,
        weight_variance_prior=None,
        bias_variance_prior=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.depth = check_positive_int(depth, "depth", minimum=1)
        weight_variance = check_positive(weight_variance, "weight_variance")
        bias_variance = check_positive(bias_variance, "bias_variance")
        for name, constraint, prior, value in (
            ("weight_variance", weight_variance_constraint, weight_variance_prior, weight_variance),
            ("bias_variance", bias_variance_constraint, bias_variance_prior, bias_variance),
        ):
            self.register_parameter(f"raw_{name}", torch.nn.Parameter(torch.zeros(*self.batch_shape, 1, 1)))
            self.register_constraint(f"raw_{name}", constraint if constraint is not None else Positive())
            if prior is not None:
                self.register_prior(
                    f"{name}_prior",
                    prior,
                    lambda m, n=name: getattr(m, n),
                    lambda m, v, n=name: m._set(n, v),
                )
            self._set(name, value)

    def _set(self, name: str, value) -> None:
        if not torch.is_tensor(value):
            value = torch.as_tensor(value).to(getattr(self, f"raw_{name}"))
        constraint = getattr(self, f"raw_{name}_constraint")
        self.initialize(**{f"raw_{name}": constraint.inverse_transform(value)})

    @property
    def weight_variance(self) -> torch.Tensor:
        return self.raw_weight_variance_constraint.transform(self.raw_weight_variance)

    @weight_variance.setter
    def weight_variance(self, value) -> None:
        self._set("weight_variance", value)

    @property
    def bias_variance(self) -> torch.Tensor:
        return self.raw_bias_variance_constraint.transform(self.raw_bias_variance)

    @bias_variance.setter
    def bias_variance(self, value) -> None:
        self._set("bias_variance", value)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False, **params) -> torch.Tensor:
        if x1.shape[-1] != x2.shape[-1]:
            raise ValueError(f"x1 and x2 must have the same number of features, got {x1.shape[-1]} and {x2.shape[-1]}")
        d = x1.shape[-1]
        sw, sb = self.weight_variance, self.bias_variance  # (*batch, 1, 1)
        if diag:
            sw, sb = sw[..., 0], sb[..., 0]  # (*batch, 1) broadcasts against (..., n)
            k12 = sb + sw * (x1 * x2).sum(-1) / d
            k11 = sb + sw * (x1 * x1).sum(-1) / d
            k22 = sb + sw * (x2 * x2).sum(-1) / d
        else:
            fused = type(self)._fused
            if fused is not None and x1.dim() == 2 and sw.dim() == 2 and _same_inputs(x1, x2):
                # K(X, X) is symmetric: the recursion runs on the upper block triangle only
                num_blocks = min(_MAX_BLOCKS, x1.shape[0] // _BLOCK_ROWS)
                if num_blocks >= 2:
                    return _relu_gram_symmetric(x1, sw, sb, self.depth, num_blocks)
            gram = (x1 @ x2.transpose(-1, -2)) / d
            q1 = (x1 * x1).sum(-1, keepdim=True) / d  # (..., n, 1)
            q2 = (x2 * x2).sum(-1).unsqueeze(-2) / d  # (..., 1, m)
            if fused is not None:
                return fused.apply(gram, q1, q2, sw, sb, self.depth)
            k12, k11, k22 = sb + sw * gram, sb + sw * q1, sb + sw * q2
        expectation = type(self)._expectation
        for _ in range(self.depth):
            k12 = sb + sw * expectation(k11, k22, k12)
            k11 = sb + sw * expectation(k11, k11, k11)
            k22 = sb + sw * expectation(k22, k22, k22)
        return k12


class ReLUNNGPKernel(_NNGPKernel):
    r"""NNGP kernel of an infinitely wide ReLU network (arc-cosine recursion).

    .. math::

        K^{\ell}(x, x') = \sigma_b^2 + \frac{\sigma_w^2}{2\pi} \sqrt{K^{\ell-1}_{xx} K^{\ell-1}_{x'x'}}
        \big(\sin\theta + (\pi - \theta)\cos\theta\big), \quad
        \theta = \arccos \frac{K^{\ell-1}_{xx'}}{\sqrt{K^{\ell-1}_{xx} K^{\ell-1}_{x'x'}}},

    starting from :math:`K^0 = \sigma_b^2 + \sigma_w^2 x^\top x'/d`; the kernel is :math:`K^L`, ``L = depth``.
    Inputs ``(*batch, n, d)`` and ``(*batch, m, d)`` give ``(*batch, n, m)`` (``(*batch, n)`` with
    ``diag=True``).

    Parameters
    ----------
    depth : int
        Number of hidden layers :math:`L \ge 1`.
    weight_variance, bias_variance : float
        Initial :math:`\sigma_w^2 > 0` and :math:`\sigma_b^2 > 0` (learned, positive constraint).
    weight_variance_constraint, bias_variance_constraint : gpytorch.constraints.Interval, optional
        Constraints of the raw parameters (default ``Positive()``).
    weight_variance_prior, bias_variance_prior : gpytorch.priors.Prior, optional
        Priors, collected by GPyTorch's marginal likelihoods.
    **kwargs
        Passed to :class:`gpytorch.kernels.Kernel` (``batch_shape``, ``active_dims``).

    References
    ----------
    Cho & Saul (2009), "Kernel methods for deep learning"; Lee et al. (2018), "Deep neural networks as
    Gaussian processes" (their :math:`\sigma_w^2, \sigma_b^2, L` are ours). Lee, Yun, Yang & Lee (2022) use
    :math:`L = 4`, :math:`\sigma_w = 1`.

    Examples
    --------
    >>> import torch
    >>> k = ReLUNNGPKernel(depth=3, weight_variance=2.0, bias_variance=0.1)
    >>> x = torch.randn(5, 4, dtype=torch.float64)
    >>> k(x, x).to_dense().shape, k(x, diag=True).shape
    (torch.Size([5, 5]), torch.Size([5]))
    """

    _expectation = staticmethod(relu_expectation)
    _fused = _ReLURecursion


class ErfNNGPKernel(_NNGPKernel):
    r"""NNGP kernel of an infinitely wide erf network (Williams, 1997).

    .. math::

        K^{\ell}(x, x') = \sigma_b^2 + \sigma_w^2\, \frac{2}{\pi}
        \arcsin \frac{2 K^{\ell-1}_{xx'}}{\sqrt{(1 + 2K^{\ell-1}_{xx})(1 + 2K^{\ell-1}_{x'x'})}},

    starting from :math:`K^0 = \sigma_b^2 + \sigma_w^2 x^\top x'/d`. Shapes as in :class:`ReLUNNGPKernel`.

    Parameters
    ----------
    depth : int
        Number of hidden layers :math:`L \ge 1`.
    weight_variance, bias_variance : float
        Initial :math:`\sigma_w^2 > 0` and :math:`\sigma_b^2 > 0` (learned, positive constraint).
    weight_variance_constraint, bias_variance_constraint : gpytorch.constraints.Interval, optional
        Constraints of the raw parameters (default ``Positive()``).
    weight_variance_prior, bias_variance_prior : gpytorch.priors.Prior, optional
        Priors, collected by GPyTorch's marginal likelihoods.
    **kwargs
        Passed to :class:`gpytorch.kernels.Kernel`.

    References
    ----------
    Williams (1997), "Computing with infinite networks"; Lee et al. (2018).

    Examples
    --------
    >>> import torch
    >>> k = ErfNNGPKernel(depth=2, batch_shape=torch.Size([3]))
    >>> x = torch.randn(3, 6, 2, dtype=torch.float64)
    >>> k(x, x).to_dense().shape
    torch.Size([3, 6, 6])
    """

    _expectation = staticmethod(erf_expectation)
