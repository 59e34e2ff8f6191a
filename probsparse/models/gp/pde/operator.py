r"""How a PDE is stated for the GP solver: derivative terms, a pointwise nonlinearity, a source, boundary data.

.. math::

    \mathcal{L}[u](x) = \sum_{t} c_t\, \partial^{\alpha_t} u(x) + \phi(u(x)) = f(x) \quad (x \in \Omega),
    \qquad u = g \ \text{on the grid boundary},

on a box :math:`\Omega = \prod_j [a_j, b_j]` with :math:`d \le 2` in the ready-made problems (any :math:`d`
in :class:`PDEProblem`). A derivative term is a multi-index :math:`\alpha_t` (order per dimension, each at
most 2, the limit of the Matérn-5/2 spectral kernels) and a finite coefficient. :math:`\phi` acts pointwise
and must come with its derivative :math:`\phi'` (the solver's Gauss–Newton step linearises it).

The ready-made problems are those of GP-HM [1]_: Poisson :math:`u_{xx} (+u_{yy}) = f`, Allen–Cahn
:math:`u_{xx} (+u_{yy}) + u(u^2 - 1) = f` and advection :math:`\beta u_x + u_y = 0`; their sources are
computed from the exact solution by autograd (:func:`source_from_solution`), as the authors do.

References
----------
.. [1] S. Fang et al., "Solving High Frequency and Multi-Scale PDEs with Gaussian Processes", ICLR 2024
   (their residual :math:`H` is our :math:`\mathcal{L}[u] - f`; their boundary points are our grid edges).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from probsparse._validation import check_finite_real, check_positive_int

__all__ = [
    "PDEOperator",
    "PDEProblem",
    "advection",
    "allen_cahn_1d",
    "allen_cahn_2d",
    "poisson_1d",
    "poisson_2d",
    "source_from_solution",
]

MAX_ORDER = 2


@dataclass(frozen=True)
class PDEOperator:
    r"""A differential operator :math:`\sum_t c_t \partial^{\alpha_t} u + \phi(u)` on :math:`d` dimensions.

    Parameters
    ----------
    num_dims : int
        :math:`d`.
    terms : mapping of {tuple of int : float}
        Multi-index :math:`\alpha_t` (one order per dimension, each 0, 1 or 2) to coefficient :math:`c_t`.
    nonlinearity : callable, optional
        :math:`\phi`, elementwise on a tensor.
    nonlinearity_grad : callable, optional
        :math:`\phi'`, elementwise; required with ``nonlinearity``.
    name : str, default="pde"

    Examples
    --------
    >>> op = PDEOperator(2, {(2, 0): 1.0, (0, 2): 1.0}, name="laplace")
    >>> op.terms
    {(2, 0): 1.0, (0, 2): 1.0}
    """

    num_dims: int
    terms: Mapping[tuple[int, ...], float]
    nonlinearity: Callable[[torch.Tensor], torch.Tensor] | None = None
    nonlinearity_grad: Callable[[torch.Tensor], torch.Tensor] | None = None
    name: str = "pde"

    def __post_init__(self):
        d = check_positive_int(self.num_dims, "num_dims")
        if not isinstance(self.terms, Mapping) or len(self.terms) == 0:
            raise ValueError("terms must be a non-empty mapping {multi-index: coefficient}")
        clean = {}
        for alpha, coef in self.terms.items():
            if not isinstance(alpha, tuple) or len(alpha) != d:
                raise ValueError(f"term {alpha!r}: a multi-index must be a tuple of {d} derivative orders")
            for o in alpha:
                if isinstance(o, bool) or not isinstance(o, int) or o < 0:
                    raise ValueError(f"term {alpha!r}: derivative orders must be non-negative integers")
                if o > MAX_ORDER:
                    raise ValueError(
                        f"unsupported operator term {alpha!r}: derivative order {o} in one dimension; the "
                        f"spectral kernels support orders up to {MAX_ORDER} per dimension"
                    )
            clean[alpha] = check_finite_real(coef, f"coefficient of term {alpha!r}")
        object.__setattr__(self, "terms", clean)
        if (self.nonlinearity is None) != (self.nonlinearity_grad is None):
            raise ValueError("nonlinearity and nonlinearity_grad must be given together")
        for fn, name in ((self.nonlinearity, "nonlinearity"), (self.nonlinearity_grad, "nonlinearity_grad")):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")

    @property
    def is_linear(self) -> bool:
        return self.nonlinearity is None

    def apply_to_function(self, u: Callable[[torch.Tensor], torch.Tensor], X: torch.Tensor) -> torch.Tensor:
        r""":math:`\mathcal{L}[u]` at points ``X`` (shape ``(n, d)``) for a differentiable callable ``u`` (autograd)."""
        with torch.enable_grad():
            X = X.detach().clone().requires_grad_(True)
            val = u(X)
            out = torch.zeros_like(val)
            for alpha, coef in self.terms.items():
                deriv = val
                for dim, order in enumerate(alpha):
                    for _ in range(order):
                        (grad,) = torch.autograd.grad(deriv.sum(), X, create_graph=True)
                        deriv = grad[:, dim]
                out = out + coef * deriv
            if self.nonlinearity is not None:
                out = out + self.nonlinearity(val)
        return out.detach()


def source_from_solution(operator: PDEOperator, solution: Callable[[torch.Tensor], torch.Tensor]):
    r"""The source :math:`f = \mathcal{L}[u^\star]` of a manufactured solution :math:`u^\star`, as a callable.

    Examples
    --------
    >>> op = PDEOperator(1, {(2,): 1.0})
    >>> f = source_from_solution(op, lambda X: torch.sin(3 * X[:, 0]))
    >>> X = torch.tensor([[0.5]], dtype=torch.float64)
    >>> bool(torch.allclose(f(X), -9 * torch.sin(3 * X[:, 0])))
    True
    """
    if not callable(solution):
        raise TypeError(f"solution must be callable, got {type(solution).__name__}")

    def source(X: torch.Tensor) -> torch.Tensor:
        return operator.apply_to_function(solution, X)

    return source


@dataclass
class PDEProblem:
    r"""A PDE on a box with Dirichlet data on the grid boundary (and optionally the exact solution).

    Parameters
    ----------
    operator : PDEOperator
    domain : sequence of (float, float)
        :math:`[a_j, b_j]` per dimension, :math:`a_j < b_j`.
    source : callable
        :math:`f(X)` for points ``X`` of shape ``(n, d)``, returning shape ``(n,)``.
    boundary : callable
        :math:`g(X)` on boundary points, same convention.
    solution : callable, optional
        Exact solution (for errors in benchmarks and tests only; the solver never reads it).
    boundary_faces : sequence of (int, int), optional
        Which grid faces carry boundary data, as ``(dim, 0)`` (lower) / ``(dim, 1)`` (upper); default all.
    name : str, default="problem"

    Examples
    --------
    >>> p = poisson_1d(lambda X: torch.sin(2 * X[:, 0]), domain=(0.0, 1.0))
    >>> p.operator.terms, p.domain
    ({(2,): 1.0}, [(0.0, 1.0)])
    """

    operator: PDEOperator
    domain: Sequence[tuple[float, float]]
    source: Callable[[torch.Tensor], torch.Tensor]
    boundary: Callable[[torch.Tensor], torch.Tensor]
    solution: Callable[[torch.Tensor], torch.Tensor] | None = None
    boundary_faces: Sequence[tuple[int, int]] | None = None
    name: str = "problem"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.operator, PDEOperator):
            raise TypeError(f"operator must be a PDEOperator, got {type(self.operator).__name__}")
        d = self.operator.num_dims
        dom = list(self.domain)
        if len(dom) != d:
            raise ValueError(f"domain must give one (low, high) pair per dimension ({d}), got {len(dom)}")
        clean = []
        for j, pair in enumerate(dom):
            if len(pair) != 2:
                raise ValueError(f"domain[{j}] must be a (low, high) pair, got {pair!r}")
            lo = check_finite_real(pair[0], f"domain[{j}][0]")
            hi = check_finite_real(pair[1], f"domain[{j}][1]")
            if not lo < hi:
                raise ValueError(f"domain[{j}] must have low < high, got ({lo}, {hi})")
            clean.append((lo, hi))
        self.domain = clean
        for fn, name in ((self.source, "source"), (self.boundary, "boundary")):
            if not callable(fn):
                raise TypeError(f"{name} must be callable (points (n, d) -> values (n,)), got {type(fn).__name__}")
        faces = [(j, s) for j in range(d) for s in (0, 1)] if self.boundary_faces is None else self.boundary_faces
        for face in faces:
            if len(face) != 2 or not 0 <= face[0] < d or face[1] not in (0, 1):
                raise ValueError(f"boundary_faces entries must be (dim, 0|1) with dim < {d}, got {face!r}")
        self.boundary_faces = [tuple(f) for f in faces]

    @property
    def num_dims(self) -> int:
        return self.operator.num_dims


def _check_solution(solution):
    if not callable(solution):
        raise TypeError(f"solution must be callable (points (n, d) -> values (n,)), got {type(solution).__name__}")


def _manufactured(op: PDEOperator, solution, domain, name: str, **kw) -> PDEProblem:
    _check_solution(solution)
    return PDEProblem(op, domain, source_from_solution(op, solution), solution, solution=solution, name=name, **kw)


def poisson_1d(solution, domain=(0.0, 2.0 * math.pi)) -> PDEProblem:
    r"""1D Poisson :math:`u_{xx} = f` with the source and boundary values of the exact ``solution``."""
    return _manufactured(PDEOperator(1, {(2,): 1.0}, name="poisson_1d"), solution, [domain], "poisson_1d")


def poisson_2d(solution, domain=((0.0, 2.0 * math.pi), (0.0, 2.0 * math.pi))) -> PDEProblem:
    r"""2D Poisson :math:`u_{xx} + u_{yy} = f` (source and boundary from the exact ``solution``)."""
    op = PDEOperator(2, {(2, 0): 1.0, (0, 2): 1.0}, name="poisson_2d")
    return _manufactured(op, solution, domain, "poisson_2d")


def _allen_cahn_phi(u):
    return u * (u.square() - 1.0)


def _allen_cahn_dphi(u):
    return 3.0 * u.square() - 1.0


def allen_cahn_1d(solution, domain=(0.0, 2.0 * math.pi)) -> PDEProblem:
    r"""1D Allen–Cahn :math:`u_{xx} + u(u^2 - 1) = f` (source and boundary from the exact ``solution``)."""
    op = PDEOperator(1, {(2,): 1.0}, _allen_cahn_phi, _allen_cahn_dphi, name="allen_cahn_1d")
    return _manufactured(op, solution, [domain], "allen_cahn_1d")


def allen_cahn_2d(solution, domain=((0.0, 1.0), (0.0, 1.0))) -> PDEProblem:
    r"""2D Allen–Cahn :math:`u_{xx} + u_{yy} + u(u^2 - 1) = f`."""
    op = PDEOperator(2, {(2, 0): 1.0, (0, 2): 1.0}, _allen_cahn_phi, _allen_cahn_dphi, name="allen_cahn_2d")
    return _manufactured(op, solution, domain, "allen_cahn_2d")


def advection(beta: float = 200.0, domain=((0.0, 1.0), (0.0, 1.0)), solution=None) -> PDEProblem:
    r"""Advection :math:`\beta u_x + u_y = 0` (:math:`y` plays time), exact :math:`u = \sin(x - \beta y)` by default.

    Boundary data on all four grid edges, as in GP-HM.
    """
    beta = check_finite_real(beta, "beta")
    if solution is None:
        def solution(X):
            return torch.sin(X[:, 0] - beta * X[:, 1])
    op = PDEOperator(2, {(1, 0): beta, (0, 1): 1.0}, name="advection")
    return _manufactured(op, solution, domain, "advection", extra={"beta": beta})
