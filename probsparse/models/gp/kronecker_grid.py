r"""Covariances on a tensor grid: a Kronecker product of per-dimension factors, never formed.

With a product kernel :math:`k(x, x') = \prod_j k_j(x_j, x'_j)` and collocation points on the full grid
:math:`X = x^{(1)} \times \dots \times x^{(d)}` (:math:`M = \prod_j M_j` points),

.. math::

    C = C_1 \otimes \dots \otimes C_d, \qquad
    C^{-1} = C_1^{-1} \otimes \dots \otimes C_d^{-1}, \qquad
    \log|C| = \sum_j \frac{M}{M_j} \log|C_j| ,

so a solve costs :math:`O(M \sum_j M_j)` after :math:`O(\sum_j M_j^3)` per-factor factorisations, and memory
stays :math:`O(\sum_j M_j^2 + M)`. Grid values are held as a tensor ``U`` of shape ``(M_1, ..., M_d)``;
``vec(U)`` is its C-order flattening, which matches ``torch.kron(C_1, C_2, ...)`` (first factor slowest).

The factorisations are per-factor Cholesky (the default; differentiable and stable for the PD factors of a
solver's loss) or per-factor symmetric eigendecompositions. Unlike linear_operator's
``KroneckerProductLinearOperator`` log-determinant, which clamps eigenvalues at 1e-7, nothing is clamped
here: a non-positive-definite factor is an error. That matters for the nearly singular high-frequency
spectral-mixture factors, whose smallest eigenvalues sit at the jitter (~1e-6) or below.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from linear_operator.operators import DenseLinearOperator, KroneckerProductLinearOperator

__all__ = [
    "KroneckerGridCovariance",
    "apply_along_axes",
    "sylvester_solve",
    "toeplitz_from_offsets",
    "uniform_offsets",
]


def apply_along_axes(mats: Sequence[torch.Tensor | None], U: torch.Tensor) -> torch.Tensor:
    r"""Apply ``mats[j]`` along axis ``j`` of ``U``: :math:`(A_1 \otimes \dots \otimes A_d) \mathrm{vec}(U)`.

    ``U`` has shape ``(Q_1, ..., Q_d)``; ``mats[j]`` has shape ``(P_j, Q_j)`` or is ``None`` (identity).
    Returns shape ``(P_1, ..., P_d)``.

    Examples
    --------
    >>> A, B = torch.rand(3, 2), torch.rand(4, 5)
    >>> U = torch.rand(2, 5)
    >>> torch.allclose(apply_along_axes([A, B], U).reshape(-1), torch.kron(A, B) @ U.reshape(-1))
    True
    """
    if U.dim() != len(mats):
        raise ValueError(f"U has {U.dim()} axes but {len(mats)} matrices were given")
    t = U
    for A in mats:
        # Contract the leading axis and append the new one at the end: after d steps the order is restored.
        t = t.movedim(0, -1) if A is None else torch.tensordot(t, A, dims=([0], [1]))
    return t


def uniform_offsets(n: int, spacing: float, *, dtype=None) -> torch.Tensor:
    r"""Offsets :math:`(m h)_{m=-(n-1)}^{n-1}` of a uniform grid: every distinct :math:`x_i - x_j`.

    Examples
    --------
    >>> uniform_offsets(3, 0.5)
    tensor([-1.0000, -0.5000,  0.0000,  0.5000,  1.0000])
    """
    dtype = torch.get_default_dtype() if dtype is None else dtype
    return torch.arange(-(n - 1), n, dtype=dtype) * spacing


def toeplitz_from_offsets(values: torch.Tensor) -> torch.Tensor:
    r"""The :math:`n \times n` matrix :math:`T_{ij} = v(x_i - x_j)` from ``values`` at :func:`uniform_offsets`.

    On a uniform grid a stationary kernel (or any derivative of it) depends only on :math:`i - j`, so it is
    evaluated :math:`2n - 1` times instead of :math:`n^2` (times :math:`Q` components), and the matrix is a
    gather (whose backward pass is a scatter-add).

    Examples
    --------
    >>> toeplitz_from_offsets(torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0]))
    tensor([[ 0., -1., -2.],
            [ 1.,  0., -1.],
            [ 2.,  1.,  0.]])
    """
    if values.dim() != 1 or values.numel() % 2 == 0:
        raise ValueError(f"values must be 1-D with odd length 2n-1, got shape {tuple(values.shape)}")
    n = (values.numel() + 1) // 2
    idx = torch.arange(n)
    return values[idx[:, None] - idx[None, :] + (n - 1)]


class KroneckerGridCovariance:
    r"""A grid covariance :math:`C = C_1 \otimes \dots \otimes C_d` with per-factor factorisations.

    .. math::

        \mathrm{vec}(U)^\top C^{-1} \mathrm{vec}(U), \quad C^{-1}\mathrm{vec}(U), \quad \log|C|
        = \sum_j (M/M_j) \log|C_j|

    Parameters
    ----------
    factors : sequence of torch.Tensor, each of shape (M_j, M_j)
        Symmetric positive-definite factors (add any jitter before passing them), same dtype.
    method : {"cholesky", "eigh"}, default="cholesky"
        Per-factor factorisation. Both are differentiable; ``"eigh"`` also exposes the eigenvalues.

    Attributes
    ----------
    grid_shape : tuple of int
        :math:`(M_1, \dots, M_d)`.
    num_points : int
        :math:`M`.

    Examples
    --------
    >>> C1 = torch.tensor([[2.0, 0.5], [0.5, 1.0]]); C2 = torch.eye(3) * 2
    >>> cov = KroneckerGridCovariance([C1, C2])
    >>> U = torch.ones(2, 3)
    >>> torch.allclose(cov.solve(U).reshape(-1), torch.linalg.solve(torch.kron(C1, C2), U.reshape(-1)))
    True
    >>> round(float(cov.logdet()), 6) == round(float(torch.logdet(torch.kron(C1, C2))), 6)
    True
    """

    def __init__(self, factors: Sequence[torch.Tensor], *, method: str = "cholesky"):
        if isinstance(factors, torch.Tensor) or not isinstance(factors, (list, tuple)):
            raise TypeError(f"factors must be a list or tuple of square tensors, got {type(factors).__name__}")
        if len(factors) == 0:
            raise ValueError("factors is empty: at least one factor is needed")
        if method not in ("cholesky", "eigh"):
            raise ValueError(f"method must be 'cholesky' or 'eigh', got {method!r}")
        dtype = None
        for j, C in enumerate(factors):
            if not torch.is_tensor(C):
                raise TypeError(f"factors[{j}] must be a torch.Tensor, got {type(C).__name__}")
            if C.dim() != 2 or C.shape[0] != C.shape[1] or C.shape[0] == 0:
                raise ValueError(f"factors[{j}] must be a non-empty square matrix, got shape {tuple(C.shape)}")
            if not C.is_floating_point():
                raise TypeError(f"factors[{j}] must be floating point, got {C.dtype}")
            dtype = C.dtype if dtype is None else dtype
            if C.dtype != dtype:
                raise TypeError(f"factors must share one dtype: factors[0] is {dtype}, factors[{j}] is {C.dtype}")
            if not torch.isfinite(C).all():
                raise ValueError(f"factors[{j}] contains NaN or infinite values")
        self.factors = list(factors)
        self.method = method
        self.grid_shape = tuple(int(C.shape[0]) for C in self.factors)
        self.num_points = 1
        for m in self.grid_shape:
            self.num_points *= m
        self._chol: list[torch.Tensor] = []
        self._eig: list[tuple[torch.Tensor, torch.Tensor]] = []
        for j, C in enumerate(self.factors):
            if method == "cholesky":
                L, info = torch.linalg.cholesky_ex(C)
                if int(info) != 0:
                    raise ValueError(
                        f"factors[{j}] is not positive definite (Cholesky failed at column {int(info)}); "
                        "add jitter to the diagonal"
                    )
                self._chol.append(L)
            else:
                evals, evecs = torch.linalg.eigh(C)
                if float(evals.min()) <= 0:
                    raise ValueError(
                        f"factors[{j}] is not positive definite (smallest eigenvalue {float(evals.min()):.3e}); "
                        "add jitter to the diagonal"
                    )
                self._eig.append((evals, evecs))

    def _as_grid(self, U: torch.Tensor, name: str = "U") -> tuple[torch.Tensor, bool]:
        if not torch.is_tensor(U):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(U).__name__}")
        if U.dim() == 1 and U.numel() == self.num_points:
            return U.reshape(self.grid_shape), True
        if tuple(U.shape) != self.grid_shape:
            raise ValueError(
                f"{name} must have the grid shape {self.grid_shape} or be flat of length {self.num_points}, "
                f"got shape {tuple(U.shape)}"
            )
        return U, False

    def matmul(self, U: torch.Tensor) -> torch.Tensor:
        r""":math:`C\,\mathrm{vec}(U)`, returned in the shape ``U`` came in (grid or flat)."""
        G, flat = self._as_grid(U)
        out = apply_along_axes(self.factors, G)
        return out.reshape(-1) if flat else out

    def solve(self, U: torch.Tensor) -> torch.Tensor:
        r""":math:`C^{-1}\mathrm{vec}(U)` by one per-factor solve along each axis; same shape as ``U``."""
        G, flat = self._as_grid(U)
        t = G
        for j in range(len(self.factors)):
            t = t.movedim(j, 0)
            moved = t.shape
            B = t.reshape(moved[0], -1)
            if self.method == "cholesky":
                X = torch.cholesky_solve(B, self._chol[j])
            else:
                evals, evecs = self._eig[j]
                X = evecs @ ((evecs.mT @ B) / evals[:, None])
            t = X.reshape(moved).movedim(0, j)
        return t.reshape(-1) if flat else t

    def logdet(self) -> torch.Tensor:
        r""":math:`\log|C| = \sum_j (M/M_j)\log|C_j|`."""
        total = None
        for j, m in enumerate(self.grid_shape):
            if self.method == "cholesky":
                ld = 2.0 * self._chol[j].diagonal().log().sum()
            else:
                ld = self._eig[j][0].log().sum()
            term = (self.num_points // m) * ld
            total = term if total is None else total + term
        return total

    def inv_quad(self, U: torch.Tensor) -> torch.Tensor:
        r""":math:`\mathrm{vec}(U)^\top C^{-1} \mathrm{vec}(U)`."""
        G, _ = self._as_grid(U)
        return (G * self.solve(G)).sum()

    def log_prob(self, U: torch.Tensor) -> torch.Tensor:
        r""":math:`\log \mathcal N(\mathrm{vec}(U) \mid 0, C)`."""
        return -0.5 * (self.inv_quad(U) + self.logdet() + self.num_points * math.log(2.0 * math.pi))

    def to_dense(self) -> torch.Tensor:
        """The :math:`M \\times M` matrix (for tests and small grids only)."""
        out = self.factors[0]
        for C in self.factors[1:]:
            out = torch.kron(out, C)
        return out

    def as_linear_operator(self) -> KroneckerProductLinearOperator:
        """The same covariance as linear_operator's ``KroneckerProductLinearOperator`` (same vec order).

        Note its ``logdet`` clamps eigenvalues at 1e-7; use :meth:`logdet` here for accurate values.
        """
        return KroneckerProductLinearOperator(*[DenseLinearOperator(C) for C in self.factors])


class _SylvesterSolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, A, B, Q):
        X = _solve_sylvester_np(A, B, Q)
        ctx.save_for_backward(A, B, X)
        return X

    @staticmethod
    def backward(ctx, G):
        A, B, X = ctx.saved_tensors
        # Adjoint equation A^T L + L B^T = G; then dQ = L, dA = -L X^T, dB = -X^T L.
        L = _solve_sylvester_np(A.mT, B.mT, G)
        return -L @ X.mT, -X.mT @ L, L


def _solve_sylvester_np(A: torch.Tensor, B: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    import scipy.linalg

    X = scipy.linalg.solve_sylvester(A.detach().cpu().numpy(), B.detach().cpu().numpy(), Q.detach().cpu().numpy())
    if not np.all(np.isfinite(X)):
        raise ValueError("the Sylvester equation A X + X B = Q is singular (A and -B share an eigenvalue)")
    return torch.as_tensor(np.ascontiguousarray(X), dtype=Q.dtype, device=Q.device)


def sylvester_solve(A: torch.Tensor, B: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    r"""Solve :math:`A X + X B = Q` (Bartels–Stewart via SciPy), differentiable in ``A``, ``B`` and ``Q``.

    This is the linear system :math:`(A \otimes I + I \otimes B^\top)\,\mathrm{vec}(X) = \mathrm{vec}(Q)` of a
    Kronecker sum — a 2D collocation operator made of one-axis terms — solved in :math:`O(n^3 + m^3)` instead
    of :math:`O(n^3 m^3)`. The backward pass solves the adjoint equation :math:`A^\top \Lambda + \Lambda B^\top
    = \bar X`, giving :math:`\bar Q = \Lambda`, :math:`\bar A = -\Lambda X^\top`, :math:`\bar B = -X^\top \Lambda`.

    Parameters
    ----------
    A : torch.Tensor of shape (n, n)
    B : torch.Tensor of shape (m, m)
    Q : torch.Tensor of shape (n, m)

    Returns
    -------
    X : torch.Tensor of shape (n, m)

    Examples
    --------
    >>> A = torch.tensor([[2.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
    >>> B = torch.tensor([[1.0]], dtype=torch.float64)
    >>> Q = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    >>> X = sylvester_solve(A, B, Q)
    >>> torch.allclose(A @ X + X @ B, Q)
    True
    """
    for M, name in ((A, "A"), (B, "B")):
        if M.dim() != 2 or M.shape[0] != M.shape[1]:
            raise ValueError(f"{name} must be square, got shape {tuple(M.shape)}")
    if Q.shape != (A.shape[0], B.shape[0]):
        raise ValueError(f"Q must have shape {(A.shape[0], B.shape[0])}, got {tuple(Q.shape)}")
    return _SylvesterSolve.apply(A, B, Q)
