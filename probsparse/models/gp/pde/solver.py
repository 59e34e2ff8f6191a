r"""The GP collocation solver: latent grid values under a spectral-mixture GP prior, fitted by MAP.

Grid values :math:`U` (shape ``(M_1, ..., M_d)``) on a uniform full grid carry a GP prior with a product
kernel, so :math:`C = C_1 \otimes \dots \otimes C_d`; derivatives of the interpolant
:math:`u(x) = k(x, X) C^{-1} \mathrm{vec}(U)` act factor by factor,
:math:`\partial^{\alpha} u(X) = \big(\bigotimes_j K_j^{(\alpha_j)} C_j^{-1}\big) \mathrm{vec}(U)`, with
:math:`K_j^{(o)}` the :math:`o`-th derivative of the 1D factor (identity where :math:`\alpha_j = 0`). The loss
(per grid point, :math:`M` points) is the negative log joint of GP-HM [1]_:

.. math::

    \mathcal{J} = \tfrac1M\Big[\tfrac12 \mathrm{vec}(U)^\top C^{-1}\mathrm{vec}(U) + \tfrac12\log|C|
    + \tfrac{\lambda_b \tau_b}{2} \sum_{b} (U_b - g_b)^2 + \tfrac{\tau_r}{2} \sum_{i} \big(H_i / s\big)^2
    - \tfrac{\lambda_b N_b}{2}\log\tau_b - \tfrac{M}{2}\log\tau_r - \log p(w)\Big],
    \qquad H = \mathcal{L}[u](X) - f(X),

where :math:`s` is the RMS of the source (or 1), so :math:`\tau_r` is a precision on the *relative*
residual and its natural scale does not depend on the problem's units (GP-HM uses :math:`s = 1` and
initial :math:`\tau = 1`, whence first gradients ~1e10 on sin(100x)).

Two ways to move :math:`U`:

* ``update="newton"`` (default for grids up to ``dense_limit`` points): before every gradient step on the
  kernel parameters, :math:`U` is replaced by the minimiser of :math:`\mathcal{J}` in :math:`U` — exact for a
  linear operator, a few Gauss–Newton steps (``newton_iters``) with :math:`\phi` linearised otherwise. The
  kernel gradient is then the gradient of the profiled objective (envelope theorem). Dense
  :math:`O(M^3)`, so for 1D grids and small 2D grids.
* ``update="adam"``: :math:`U` is an ``nn.Parameter`` optimised jointly with the kernel (GP-HM's scheme);
  only Kronecker solves are used, so it scales to 2D grids of 10^5 points.
* ``update="collocation"`` (linear operators whose terms each act on one axis, :math:`d \le 2`, boundary
  data on every face): the limit :math:`\tau_r, \tau_b \to \infty` of the Newton update — :math:`U` takes
  the boundary data exactly and satisfies the discretised PDE exactly at interior points. The interior
  operator is a Kronecker sum, so this is a Sylvester equation :math:`A X + X B = Q`, solved in
  :math:`O(M_1^3 + M_2^3)` and differentiated through its adjoint (:func:`sylvester_solve`); the kernel
  parameters then follow the gradient of :math:`\mathcal{J}` at :math:`U(\theta)` (total derivative).

When :math:`U` is profiled out, the joint MAP over :math:`\tau_r, \tau_b` is unbounded (a zero residual sends
:math:`\tau \to \infty`), so by default the precisions are fixed (``learn_precisions=False``) at large values;
with ``learn_precisions=True`` they are learned in the log domain as in GP-HM.

Optimisation: Adam with an exponentially decaying learning rate (``lr`` to ``lr_final``), then optionally
L-BFGS (strong Wolfe). Early stopping watches the relative residual
:math:`\|H\| / \|f\|` only (never a test error). Everything runs in float64 by default.

References
----------
.. [1] S. Fang et al., "Solving High Frequency and Multi-Scale PDEs with Gaussian Processes", ICLR 2024.
   Their :math:`U, \tau_1, \tau_2, \lambda_b` (``llk_weight``) are our :math:`U, \tau_b, \tau_r, \lambda_b`;
   their "extra GP" (a second, low-frequency Matérn GP fitted to what the first leaves) is ``extra_gp``.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from probsparse._validation import check_finite_real, check_positive_int, check_positive_real
from probsparse.models.gp.kronecker_grid import (
    KroneckerGridCovariance,
    apply_along_axes,
    sylvester_solve,
    toeplitz_from_offsets,
)
from probsparse.models.gp.pde.operator import PDEProblem
from probsparse.models.gp.spectral_mixture import (
    GaussianSpectralMixtureKernel,
    SpectralMixtureProductKernel,
    StudentTSpectralMixtureKernel,
)

__all__ = ["GPPDESolver", "SolverHistory", "make_kernel"]

KERNELS = ("student_t", "gaussian", "se", "matern")


def make_kernel(
    kind: str,
    num_dims: int,
    num_mixtures: int,
    means: torch.Tensor | None,
    lengthscales,
    *,
    dtype: torch.dtype = torch.float64,
    weights_prior=None,
) -> SpectralMixtureProductKernel:
    """A spectral-mixture kernel (``"student_t"``, ``"gaussian"``) or a plain baseline (``"se"``, ``"matern"``).

    The baselines are the same classes with one component at frequency 0, frozen: a squared-exponential
    or a Matérn-5/2 kernel per dimension.

    Examples
    --------
    >>> k = make_kernel("se", 1, 1, None, 0.1)
    >>> k.mixture_means.requires_grad, k.num_mixtures
    (False, 1)
    """
    if kind not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kind!r}")
    with _default_dtype(dtype):
        if kind in ("se", "matern"):
            cls = GaussianSpectralMixtureKernel if kind == "se" else StudentTSpectralMixtureKernel
            return cls(1, num_dims, mixture_means=0.0, mixture_lengthscales=lengthscales, mixture_weights=1.0,
                       learn_means=False).to(dtype)
        cls = StudentTSpectralMixtureKernel if kind == "student_t" else GaussianSpectralMixtureKernel
        return cls(num_mixtures, num_dims, mixture_means=means, mixture_lengthscales=lengthscales,
                   mixture_weights_prior=weights_prior).to(dtype)


class _default_dtype:
    def __init__(self, dtype):
        self.dtype = dtype

    def __enter__(self):
        self.old = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)

    def __exit__(self, *exc):
        torch.set_default_dtype(self.old)


@dataclass
class SolverHistory:
    """What a fit did: one record per logged step, the stop reason, steps and wall time per phase."""

    records: list[dict] = field(default_factory=list)
    stop_reason: str = ""
    steps: int = 0
    wall_s: float = 0.0


class _Stop(Exception):
    """Ends an L-BFGS run from inside its closure (deadline or tolerance reached)."""


class _Component(torch.nn.Module):
    """One GP on the grid: its kernel and grid values."""

    def __init__(self, kernel: SpectralMixtureProductKernel, grid_shape, dtype, trainable_values: bool):
        super().__init__()
        self.kernel = kernel
        self.values = torch.nn.Parameter(torch.zeros(grid_shape, dtype=dtype), requires_grad=trainable_values)
        self.frozen = False


class GPPDESolver(torch.nn.Module):
    r"""Solve :math:`\mathcal{L}[u] = f` on a uniform grid with a spectral-mixture GP prior (GP-HM).

    .. math::

        \min_{U, \theta} \ \mathcal{J}(U, \theta) \quad\text{(see the module docstring)},\qquad
        \hat u(x) = k(x, X)\, C^{-1} \mathrm{vec}(U)

    Parameters
    ----------
    problem : PDEProblem
    grid_size : int or sequence of int
        Collocation points per dimension (uniform, end points included); shape ``(M_1, ..., M_d)``.
    kernel : {"student_t", "gaussian", "se", "matern"}, default="student_t"
        GP-HM-StM, GP-HM-GM, or the single-component SE / Matérn-5/2 baselines.
    num_mixtures : int, default=30
        :math:`Q` per dimension (ignored by the baselines).
    freq_init : {"linspace", "spectrum"}, default="linspace"
        Initial frequencies: ``linspace(0, freq_scale, Q)`` (GP-HM), or half of them at the largest bins of
        the zero-padded periodogram of the source (and of boundary data along each axis), the rest linspace.
        Both use only the problem's data, never its solution.
    freq_scale : float or sequence of float, optional
        Top initial frequency per dimension (cycles per unit); default half the grid's Nyquist frequency.
    lengthscale : float, optional
        Initial envelope lengthscales; default 1 (GP-HM) for the mixtures, four grid spacings for the baselines.
    jitter : float, default=1e-6
        Added to each factor's diagonal, relative to that factor's variance :math:`k_j(0)`.
    residual_precision, boundary_precision : float, default=1e10
        Initial (or fixed) :math:`\tau_r` (on the relative residual) and :math:`\tau_b`.
    boundary_weight : float, default=200
        :math:`\lambda_b` (GP-HM's ``llk_weight``).
    learn_precisions : bool, default=False
    update : {"newton", "adam", "collocation", "auto"}, default="auto"
        How the grid values move (see the module docstring); ``"auto"`` is ``"newton"`` up to
        ``dense_limit`` grid points, above it ``"collocation"`` where the operator allows it, else ``"adam"``.
    newton_iters : int, default=1
        Gauss–Newton iterations per step for a nonlinear operator, warm-started from the previous grid values
        (the first update of a phase does five times as many); a linear operator needs exactly one.
    extra_gp : bool, default=False
        After the main fit, freeze it and fit a second, low-frequency Matérn-5/2 GP (one component at
        frequency 0) to what remains; the solution is the sum.
    weights_prior : gpytorch.priors.Prior, optional
        Explicit prior on the mixture weights (added to the loss).
    dense_limit : int, default=4096
    dtype : torch.dtype, default=torch.float64

    Attributes
    ----------
    grids : list of torch.Tensor
        The 1D grids.
    history_ : SolverHistory
        Set by :meth:`fit`.

    Examples
    --------
    >>> from probsparse.models.gp.pde import poisson_1d
    >>> p = poisson_1d(lambda X: torch.sin(3 * X[:, 0]), domain=(0.0, 1.0))
    >>> s = GPPDESolver(p, 24, num_mixtures=4, freq_scale=2.0)
    >>> h = s.fit(adam_steps=20, lbfgs_steps=20)
    >>> X = torch.tensor([[0.3]], dtype=torch.float64)
    >>> abs(float(s.predict(X)[0]) - math.sin(0.9)) < 1e-3
    True
    """

    def __init__(
        self,
        problem: PDEProblem,
        grid_size,
        *,
        kernel: str = "student_t",
        num_mixtures: int = 30,
        freq_init: str = "linspace",
        freq_scale=None,
        lengthscale: float | None = None,
        jitter: float = 1e-6,
        residual_precision: float = 1e10,
        boundary_precision: float = 1e10,
        boundary_weight: float = 200.0,
        learn_precisions: bool = False,
        update: str = "auto",
        newton_iters: int = 1,
        extra_gp: bool = False,
        weights_prior=None,
        dense_limit: int = 4096,
        dtype: torch.dtype = torch.float64,
    ):
        super().__init__()
        if not isinstance(problem, PDEProblem):
            raise TypeError(f"problem must be a PDEProblem, got {type(problem).__name__}")
        if dtype not in (torch.float64, torch.float32):
            raise TypeError(f"dtype must be torch.float64 or torch.float32, got {dtype}")
        self.problem = problem
        self.dtype = dtype
        d = problem.num_dims
        if isinstance(grid_size, int) and not isinstance(grid_size, bool):
            sizes = [grid_size] * d
        elif isinstance(grid_size, (list, tuple)):
            sizes = list(grid_size)
        else:
            raise TypeError(f"grid_size must be an int or a sequence of ints, got {type(grid_size).__name__}")
        if len(sizes) != d:
            raise ValueError(f"grid_size must give one size per dimension ({d}), got {len(sizes)}")
        self.grid_shape = tuple(check_positive_int(n, f"grid_size[{j}]", minimum=3) for j, n in enumerate(sizes))
        self.num_points = math.prod(self.grid_shape)
        self.grids = [torch.linspace(lo, hi, n, dtype=dtype) for (lo, hi), n in zip(problem.domain, self.grid_shape,
                                                                                       strict=True)]
        self.spacings = [float(g[1] - g[0]) for g in self.grids]
        self.jitter = check_positive_real(jitter, "jitter")
        self.boundary_weight = check_positive_real(boundary_weight, "boundary_weight")
        self.learn_precisions = bool(learn_precisions)
        self.newton_iters = check_positive_int(newton_iters, "newton_iters")
        self.dense_limit = check_positive_int(dense_limit, "dense_limit")
        self.extra_gp = bool(extra_gp)
        if update not in ("auto", "newton", "adam", "collocation"):
            raise ValueError(f"update must be 'auto', 'newton', 'adam' or 'collocation', got {update!r}")
        if update == "auto":
            if self.num_points * (2 if extra_gp else 1) <= self.dense_limit:
                update = "newton"
            else:
                update = "collocation" if not self._collocation_obstacles(problem) else "adam"
        if update == "newton" and self.num_points * (2 if extra_gp else 1) > self.dense_limit:
            raise ValueError(
                f"update='newton' forms dense {self.num_points}x{self.num_points} systems; the grid has "
                f"{self.num_points} points > dense_limit={self.dense_limit}. Use update='adam' or raise dense_limit"
            )
        self.update = update
        self._orders = sorted({o for alpha in problem.operator.terms for o in alpha} | {0})
        if update == "collocation":
            self._check_collocation(problem)

        # Data on the grid: source, boundary mask and values (validated finite).
        points = self.grid_points()
        source = torch.as_tensor(problem.source(points), dtype=dtype).detach()
        self.register_buffer("source", self._check_values(source, self.num_points, "source").reshape(self.grid_shape))
        mask = torch.zeros(self.grid_shape, dtype=torch.bool)
        for dim, side in problem.boundary_faces:
            index = [slice(None)] * d
            index[dim] = 0 if side == 0 else -1
            mask[tuple(index)] = True
        self.register_buffer("boundary_mask", mask)
        with torch.no_grad():
            bvals = torch.as_tensor(problem.boundary(points[mask.reshape(-1)]), dtype=dtype)
        self.register_buffer("boundary_values", self._check_values(bvals, int(mask.sum()), "boundary"))
        # Collocation mode enforces the boundary exactly and the PDE at interior points only.
        self.register_buffer("residual_mask", ~mask if update == "collocation" else torch.ones_like(mask))
        rms = float(self.source.square().mean().sqrt())
        self.source_scale = rms if rms > 0 else 1.0

        self.log_residual_precision = torch.nn.Parameter(
            torch.tensor(math.log(check_positive_real(residual_precision, "residual_precision")), dtype=dtype),
            requires_grad=self.learn_precisions,
        )
        self.log_boundary_precision = torch.nn.Parameter(
            torch.tensor(math.log(check_positive_real(boundary_precision, "boundary_precision")), dtype=dtype),
            requires_grad=self.learn_precisions,
        )

        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        self.kernel_kind = kernel
        nyq = [0.5 / h for h in self.spacings]
        if kernel in ("se", "matern"):
            means = None
            ell = 4.0 * min(self.spacings) if lengthscale is None else lengthscale
            q = 1
        else:
            q = check_positive_int(num_mixtures, "num_mixtures")
            if freq_scale is None:
                scales = [0.5 * n for n in nyq]
            else:
                raw = [freq_scale] * d if isinstance(freq_scale, (int, float)) else list(freq_scale)
                if len(raw) != d:
                    raise ValueError(f"freq_scale must be a number or one per dimension ({d}), got {len(raw)}")
                scales = [check_positive_real(float(v), f"freq_scale[{j}]") for j, v in enumerate(raw)]
            means = self._initial_frequencies(freq_init, q, scales)
            ell = 1.0 if lengthscale is None else lengthscale
            for j in range(d):
                top = float(means[j].abs().max())
                if top > nyq[j]:
                    warnings.warn(
                        f"grid below the Nyquist rate of the initial frequencies in dimension {j}: "
                        f"{self.grid_shape[j]} points on [{problem.domain[j][0]:g}, {problem.domain[j][1]:g}] "
                        f"(spacing {self.spacings[j]:.4g}) resolve up to {nyq[j]:.4g} cycles per unit, but the "
                        f"initial frequencies reach {top:.4g}; use at least "
                        f"{math.ceil(2 * top * (problem.domain[j][1] - problem.domain[j][0])) + 1} points or a "
                        "smaller freq_scale",
                        UserWarning,
                        stacklevel=2,
                    )
        check_positive_real(float(ell), "lengthscale")
        kern = make_kernel(kernel, d, q, means, ell, dtype=dtype, weights_prior=weights_prior)
        self.components = torch.nn.ModuleList([_Component(kern, self.grid_shape, dtype, update == "adam")])
        self.history_: SolverHistory | None = None

    # ------------------------------------------------------------------------------------------ set-up
    @staticmethod
    def _check_values(values: torch.Tensor, n: int, name: str) -> torch.Tensor:
        values = values.reshape(-1) if values.numel() == n else values
        if values.shape != (n,):
            raise ValueError(f"{name} must return one value per point ({n}), got shape {tuple(values.shape)}")
        if not torch.isfinite(values).all():
            bad = int((~torch.isfinite(values)).sum())
            raise ValueError(f"{name} values contain {bad} NaN or infinite value(s) on the grid; all must be finite")
        return values

    def grid_points(self) -> torch.Tensor:
        """All grid points, shape ``(M, d)``, in C order (first dimension slowest)."""
        mesh = torch.meshgrid(*self.grids, indexing="ij")
        return torch.stack([m.reshape(-1) for m in mesh], dim=-1)

    def _initial_frequencies(self, how: str, q: int, scales: list[float]) -> torch.Tensor:
        if how not in ("linspace", "spectrum"):
            raise ValueError(f"freq_init must be 'linspace' or 'spectrum', got {how!r}")
        d = self.problem.num_dims
        out = torch.empty(d, q, dtype=self.dtype)
        for j in range(d):
            lin = torch.linspace(0.0, scales[j], q, dtype=self.dtype)
            if how == "linspace" or q < 2:
                out[j] = lin
                continue
            n_peak = q // 2
            peaks = self._spectrum_peaks(j, n_peak)
            out[j, : len(peaks)] = peaks
            out[j, len(peaks):] = torch.linspace(0.0, scales[j], q - len(peaks), dtype=self.dtype)
        return out

    def _spectrum_peaks(self, dim: int, n_peak: int) -> torch.Tensor:
        """Frequencies of the largest bins of the 8x zero-padded periodogram along ``dim`` (source + boundary)."""
        n = self.grid_shape[dim]
        pad = 8 * n
        src = self.source.movedim(dim, -1).reshape(-1, n)
        power = torch.fft.rfft(src - src.mean(-1, keepdim=True), n=pad).abs().square().mean(0)
        power = power / power.max().clamp_min(1e-300)
        if self.problem.num_dims > 1:
            # Boundary faces that run along this axis carry the solution's own spectrum in it.
            full = torch.zeros(self.grid_shape, dtype=self.dtype)
            full[self.boundary_mask] = self.boundary_values
            for other, side in self.problem.boundary_faces:
                if other == dim:
                    continue
                index = [slice(None)] * self.problem.num_dims
                index[other] = 0 if side == 0 else -1
                line = full[tuple(index)].movedim(dim if dim < other else dim - 1, -1).reshape(-1, n)
                p = torch.fft.rfft(line - line.mean(-1, keepdim=True), n=pad).abs().square().mean(0)
                if float(p.max()) > 0:
                    power = power + p / p.max()
        freqs = torch.fft.rfftfreq(pad, d=self.spacings[dim]).to(self.dtype)
        if float(power.max()) <= 0:
            return freqs[:0]
        return freqs[torch.topk(power, min(n_peak, power.numel())).indices]

    def _check_collocation(self, problem: PDEProblem) -> None:
        reasons = self._collocation_obstacles(problem)
        if reasons:
            raise ValueError("update='collocation' cannot be used: " + "; ".join(reasons))

    def _collocation_obstacles(self, problem: PDEProblem) -> list[str]:
        op = problem.operator
        reasons = []
        if problem.num_dims not in (1, 2):
            reasons.append(f"it needs 1 or 2 dimensions (got {problem.num_dims})")
        if not op.is_linear:
            reasons.append("the operator has a nonlinearity")
        if any(sum(1 for o in alpha if o) > 1 for alpha in op.terms):
            reasons.append("the operator has mixed-derivative terms")
        if len(problem.boundary_faces) != 2 * problem.num_dims:
            reasons.append("boundary data must cover every face")
        if self.extra_gp:
            reasons.append("extra_gp is not supported")
        return reasons

    def _collocate(self, comp: _Component) -> torch.Tensor:
        """Grid values with the boundary data exactly and the PDE exactly at interior points (differentiable).

        With every term acting on one axis, the interior system is a Kronecker sum, i.e. a Sylvester equation
        :math:`A X + X B = Q` (a plain linear solve in 1D).
        """
        mats = self._factors(comp)
        d = len(self.grid_shape)
        derivs = []
        for j in range(d):
            L = torch.linalg.cholesky(mats[j][0])
            derivs.append({o: torch.cholesky_solve(mats[j][o].mT, L).mT for o in self._orders if o})
        Ub = torch.zeros(self.grid_shape, dtype=self.dtype)
        Ub[self.boundary_mask] = self.boundary_values
        interior = (slice(1, -1),) * d
        n_in = [n - 2 for n in self.grid_shape]
        full = self.source.clone()
        A = torch.zeros(n_in[0], n_in[0], dtype=self.dtype)
        B = torch.zeros(n_in[1], n_in[1], dtype=self.dtype) if d == 2 else None
        for alpha, coef in self.problem.operator.terms.items():
            axes = [j for j, o in enumerate(alpha) if o]
            if not axes:
                full = full - coef * Ub
                A = A + coef * torch.eye(n_in[0], dtype=self.dtype)
                continue
            j = axes[0]
            D = derivs[j][alpha[j]]
            if j == 0:
                full = full - coef * torch.tensordot(D, Ub, dims=([1], [0]))
                A = A + coef * D[1:-1, 1:-1]
            else:
                full = full - coef * (Ub @ D.mT)
                B = B + coef * D[1:-1, 1:-1].mT
        Q = full[interior]
        X = torch.linalg.solve(A, Q) if d == 1 else sylvester_solve(A, B, Q)
        U = Ub.clone()
        U[interior] = X
        return U

    # ------------------------------------------------------------------------------------- the model
    def _factors(self, comp: _Component):
        """Per dimension: {order: matrix}; order 0 includes the relative jitter."""
        out = []
        for j, n in enumerate(self.grid_shape):
            offsets = torch.arange(-(n - 1), n, dtype=self.dtype) * self.spacings[j]
            mats = {}
            for o in self._orders:
                mats[o] = toeplitz_from_offsets(comp.kernel.factor(j, offsets, o))
            var0 = mats[0].diagonal()[0]
            mats[0] = mats[0] + (self.jitter * var0) * torch.eye(n, dtype=self.dtype)
            out.append(mats)
        return out

    def _linear_part(self, cov: KroneckerGridCovariance, mats, U: torch.Tensor) -> torch.Tensor:
        """:math:`\\sum_t c_t \\partial^{\\alpha_t} u` on the grid for one component."""
        total = torch.zeros_like(U)
        d = len(self.grid_shape)
        for alpha, coef in self.problem.operator.terms.items():
            t = U
            for j in range(d):
                if alpha[j] == 0:
                    continue
                moved = t.movedim(j, 0)
                shape = moved.shape
                sol = torch.cholesky_solve(moved.reshape(shape[0], -1), cov._chol[j])
                t = (mats[j][alpha[j]] @ sol).reshape(shape).movedim(0, j)
            total = total + coef * t
        return total

    def _state(self, values: list[torch.Tensor]):
        """Covariances, factor matrices and the scaled residual for the given component grid values."""
        covs, mats_all = [], []
        u = torch.zeros(self.grid_shape, dtype=self.dtype)
        lin = torch.zeros(self.grid_shape, dtype=self.dtype)
        for comp, U in zip(self.components, values, strict=True):
            mats = self._factors(comp)
            cov = KroneckerGridCovariance([m[0] for m in mats])
            covs.append(cov)
            mats_all.append(mats)
            u = u + U
            lin = lin + self._linear_part(cov, mats, U)
        op = self.problem.operator
        resid = lin - self.source
        if op.nonlinearity is not None:
            resid = resid + op.nonlinearity(u)
        return covs, mats_all, u, resid / self.source_scale

    def loss(self, values: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-point negative log joint :math:`\\mathcal J` and the relative residual :math:`\\|H\\|/\\|f\\|`."""
        if values is None and self.update == "collocation":
            U = self._collocate(self.components[0])
            self.components[0].values.data.copy_(U.detach())
            values = [U]
        values = [c.values for c in self.components] if values is None else values
        covs, _, u, resid = self._state(values)
        resid = resid[self.residual_mask]
        tau_r = self.log_residual_precision.exp()
        tau_b = self.log_boundary_precision.exp()
        prior = sum(0.5 * (cov.inv_quad(U) + cov.logdet()) for cov, U in zip(covs, values, strict=True))
        bres = u[self.boundary_mask] - self.boundary_values
        n_b = bres.numel()
        total = (
            prior
            + 0.5 * self.boundary_weight * tau_b * bres.square().sum()
            + 0.5 * tau_r * resid.square().sum()
        )
        if self.learn_precisions:
            total = total - 0.5 * self.boundary_weight * n_b * self.log_boundary_precision
            total = total - 0.5 * resid.numel() * self.log_residual_precision
        for comp in self.components:
            for _, module, prior_obj, closure, _ in comp.kernel.named_priors():
                total = total - prior_obj.log_prob(closure(module)).sum()
        rel = resid.detach().norm() / math.sqrt(resid.numel())
        return total / self.num_points, rel

    # ---------------------------------------------------------------------------- Gauss–Newton on U
    @torch.no_grad()
    def _newton(self, iters: int) -> None:
        values = [c.values.detach().clone() for c in self.components]
        op = self.problem.operator
        M = self.num_points
        tau_r = float(self.log_residual_precision.exp())
        tau_b = float(self.log_boundary_precision.exp()) * self.boundary_weight
        mask = self.boundary_mask.reshape(-1)
        active = [i for i, c in enumerate(self.components) if not c.frozen]
        for _ in range(iters):
            covs, mats_all, u, resid = self._state(values)
            blocks_prior, blocks_jac = [], []
            for i in active:
                cov, mats = covs[i], mats_all[i]
                inv = [torch.cholesky_inverse(L) for L in cov._chol]
                Cinv = inv[0]
                for A in inv[1:]:
                    Cinv = torch.kron(Cinv, A)
                J = torch.zeros(M, M, dtype=self.dtype)
                for alpha, coef in op.terms.items():
                    term = None
                    for j in range(len(self.grid_shape)):
                        Dj = (mats[j][alpha[j]] @ inv[j]) if alpha[j] else torch.eye(self.grid_shape[j],
                                                                                       dtype=self.dtype)
                        term = Dj if term is None else torch.kron(term, Dj)
                    J = J + coef * term
                blocks_prior.append(Cinv)
                blocks_jac.append(J)
            if op.nonlinearity_grad is not None:
                dphi = op.nonlinearity_grad(u).reshape(-1)
                blocks_jac = [J + torch.diag(dphi) for J in blocks_jac]
            Jall = torch.cat(blocks_jac, dim=1) / self.source_scale
            Hm = tau_r * (Jall.T @ Jall)
            grad = tau_r * (Jall.T @ resid.reshape(-1))
            bres = torch.zeros(M, dtype=self.dtype)
            bres[mask] = u.reshape(-1)[mask] - self.boundary_values
            for a, i in enumerate(active):
                sl = slice(a * M, (a + 1) * M)
                Hm[sl, sl] += blocks_prior[a]
                grad[sl] += blocks_prior[a] @ values[i].reshape(-1) + tau_b * bres
                for b in range(len(active)):
                    sb = slice(b * M, (b + 1) * M)
                    Hm[sl, sb] += torch.diag(tau_b * mask.to(self.dtype))
            step = torch.linalg.solve(Hm, grad)
            if not torch.isfinite(step).all():
                raise FloatingPointError("the Gauss-Newton system is singular or overflowed")
            for a, i in enumerate(active):
                values[i] = values[i] - step[a * M:(a + 1) * M].reshape(self.grid_shape)
            if op.is_linear:
                break
        for i in active:
            self.components[i].values.copy_(values[i])

    # ------------------------------------------------------------------------------------------ fit
    def _trainable(self) -> list[torch.nn.Parameter]:
        params = []
        for c in self.components:
            if c.frozen:
                continue
            params += [p for n, p in c.kernel.named_parameters() if p.requires_grad]
            if self.update == "adam":
                params.append(c.values)
        if self.learn_precisions:
            params += [self.log_residual_precision, self.log_boundary_precision]
        return params

    def fit(
        self,
        adam_steps: int = 2000,
        *,
        lr: float = 1e-2,
        lr_final: float = 1e-4,
        lbfgs_steps: int = 0,
        tol: float = 0.0,
        max_time: float | None = None,
        log_every: int = 50,
        progress: bool = False,
        callback=None,
        extra_steps: int | None = None,
        change_point: float = 0.5,
    ) -> SolverHistory:
        r"""Adam (learning rate decaying exponentially from ``lr`` to ``lr_final``), then L-BFGS.

        Parameters
        ----------
        adam_steps : int, default=2000
        lr, lr_final : float
        lbfgs_steps : int, default=0
            L-BFGS iterations after Adam (0: none); at most 1.25 times as many loss evaluations. L-BFGS also
            stops on its own when the loss stops changing; the best-loss iterate is kept.
        tol : float, default=0
            Stop when the relative residual :math:`\|H\|/(\sqrt{M} s)` falls below ``tol`` (0: never).
        max_time : float, optional
            Wall-clock budget in seconds for the whole fit.
        log_every : int, default=50
        progress : bool, default=False
            Show a tqdm progress bar.
        callback : callable, optional
            ``callback(solver, record)`` at each logged step (e.g. to watch a test error; the solver never
            uses what it computes).
        extra_steps : int, optional
            Adam steps for the extra GP (``extra_gp=True``); default ``adam_steps // 2``.
        change_point : float, default=0.5
            With ``extra_gp`` and ``max_time``: the fraction of the budget given to the first GP (GP-HM's
            ``change_point``); the extra GP gets the rest.

        Returns
        -------
        SolverHistory
        """
        adam_steps = check_positive_int(adam_steps, "adam_steps", minimum=0)
        lbfgs_steps = check_positive_int(lbfgs_steps, "lbfgs_steps", minimum=0)
        lr = check_positive_real(lr, "lr")
        lr_final = check_positive_real(lr_final, "lr_final")
        tol = check_finite_real(tol, "tol")
        log_every = check_positive_int(log_every, "log_every")
        if max_time is not None:
            max_time = check_positive_real(max_time, "max_time")
        change_point = check_positive_real(change_point, "change_point")
        if change_point > 1:
            raise ValueError(f"change_point must be in (0, 1], got {change_point}")
        hist = SolverHistory()
        start = time.perf_counter()
        deadline = None if max_time is None else start + max_time
        first_deadline = deadline
        if deadline is not None and self.extra_gp:
            first_deadline = start + change_point * max_time
        self._run_phases(hist, adam_steps, lbfgs_steps, lr, lr_final, tol, first_deadline, log_every, progress,
                         callback)
        if self.extra_gp and hist.stop_reason != "tolerance" and (deadline is None or time.perf_counter() < deadline):
            self._add_extra_gp()
            steps = adam_steps // 2
            if extra_steps is not None:
                steps = check_positive_int(extra_steps, "extra_steps", minimum=0)
            self._run_phases(hist, steps, lbfgs_steps, lr, lr_final, tol, deadline, log_every, progress, callback,
                             phase_prefix="extra_")
        hist.wall_s = time.perf_counter() - start
        self.history_ = hist
        return hist

    def _add_extra_gp(self) -> None:
        first = self.components[0]
        first.frozen = True
        for p in first.parameters():
            p.requires_grad_(False)
        d = self.problem.num_dims
        ell = [0.25 * (hi - lo) for lo, hi in self.problem.domain]
        with _default_dtype(self.dtype):
            kern = StudentTSpectralMixtureKernel(
                1, d, mixture_means=0.0, mixture_lengthscales=torch.tensor(ell)[:, None], mixture_weights=1.0,
                learn_means=False,
            ).to(self.dtype)
        self.components.append(_Component(kern, self.grid_shape, self.dtype, self.update == "adam"))

    def _record(self, hist, phase, step, loss, rel, start, callback, bar):
        rec = {"phase": phase, "step": step, "loss": float(loss.detach()), "rel_residual": float(rel),
               "time_s": time.perf_counter() - start}
        hist.records.append(rec)
        if bar is not None:
            bar.set_postfix(loss=f"{rec['loss']:.4g}", res=f"{rec['rel_residual']:.2e}")
        if callback is not None:
            callback(self, rec)

    def _run_phases(self, hist, adam_steps, lbfgs_steps, lr, lr_final, tol, deadline, log_every, progress, callback,
                    phase_prefix=""):
        start = time.perf_counter()
        params = self._trainable()
        newton = self.update == "newton"
        iters0 = self.newton_iters if not self.problem.operator.is_linear else 1
        best = {"loss": math.inf, "state": None}

        def snapshot(loss_value):
            if loss_value < best["loss"]:
                best["loss"] = loss_value
                best["state"] = {k: v.detach().clone() for k, v in self.state_dict().items()}

        def restore():
            if best["state"] is not None:
                self.load_state_dict(best["state"])

        bar = tqdm(total=adam_steps + lbfgs_steps, disable=not progress, desc=f"{phase_prefix}gp-pde")
        try:
            if newton:
                self._newton(iters0 if self.problem.operator.is_linear else 5 * iters0)
            opt = torch.optim.Adam(params, lr=lr)
            gamma = (lr_final / lr) ** (1.0 / max(adam_steps, 1))
            sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
            for step in range(adam_steps):
                if deadline is not None and time.perf_counter() > deadline:
                    hist.stop_reason = "time"
                    break
                try:
                    if newton and step > 0:
                        self._newton(iters0)
                    loss, rel = self.loss()
                except (torch.linalg.LinAlgError, ValueError, FloatingPointError) as err:
                    hist.stop_reason = f"numerical failure at {phase_prefix}adam step {step}: {err}"
                    restore()
                    break
                if not torch.isfinite(loss):
                    hist.stop_reason = f"non-finite loss at {phase_prefix}adam step {step}"
                    restore()
                    break
                snapshot(float(loss.detach()))
                if step % log_every == 0:
                    self._record(hist, phase_prefix + "adam", step, loss, rel, start, callback, bar)
                if tol > 0 and float(rel) < tol:
                    hist.stop_reason = "tolerance"
                    break
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                hist.steps += 1
                bar.update(1)
            else:
                hist.stop_reason = "steps"
            if lbfgs_steps and hist.stop_reason == "steps":
                self._lbfgs(hist, params, lbfgs_steps, tol, deadline, log_every, callback, bar, start, newton,
                            iters0, phase_prefix, snapshot, restore)
            if newton and hist.stop_reason in ("steps", "time"):
                self._newton(iters0)
        finally:
            bar.close()
        with torch.no_grad():
            loss, rel = self.loss()
        self._record(hist, phase_prefix + "final", hist.steps, loss, rel, start, callback, None)

    def _lbfgs(self, hist, params, steps, tol, deadline, log_every, callback, bar, start, newton, iters0,
               prefix, snapshot, restore):
        # One L-BFGS call with a budget of iterations; the closure logs, snapshots the best loss and raises
        # _Stop for the deadline or the residual tolerance. The best-loss iterate is restored at the end, since
        # the last evaluation may be a rejected line-search trial.
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=steps, max_eval=int(steps * 1.25) + 1, history_size=50,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-14)
        count = {"n": 0}

        def closure():
            if deadline is not None and time.perf_counter() > deadline:
                raise _Stop("time")
            if newton:
                self._newton(iters0)
            opt.zero_grad()
            loss, rel = self.loss()
            if not torch.isfinite(loss):
                raise FloatingPointError("non-finite loss")
            loss.backward()
            snapshot(float(loss.detach()))
            if count["n"] % log_every == 0:
                self._record(hist, prefix + "lbfgs", count["n"], loss.detach(), rel, start, callback, bar)
            count["n"] += 1
            bar.update(1)
            if tol > 0 and float(rel) < tol:
                raise _Stop("tolerance")
            return loss

        try:
            opt.step(closure)
            hist.stop_reason = "steps"
        except _Stop as stop:
            hist.stop_reason = str(stop)
        except (torch.linalg.LinAlgError, ValueError, FloatingPointError) as err:
            hist.stop_reason = f"L-BFGS stopped after {count['n']} evaluations: {err}"
        hist.steps += count["n"]
        restore()

    # ------------------------------------------------------------------------------------ prediction
    @torch.no_grad()
    def predict(self, X: torch.Tensor) -> torch.Tensor:
        r""":math:`\hat u(X) = \sum_c k_c(X, \text{grid}) C_c^{-1}\mathrm{vec}(U_c)`, ``X`` of shape ``(n, d)``."""
        if not torch.is_tensor(X) or X.dim() != 2 or X.shape[1] != self.problem.num_dims:
            raise ValueError(f"X must be a tensor of shape (n, {self.problem.num_dims})")
        if not torch.isfinite(X).all():
            raise ValueError("X contains NaN or infinite values")
        X = X.to(self.dtype)
        out = torch.zeros(X.shape[0], dtype=self.dtype)
        for comp in self.components:
            mats = self._factors(comp)
            cov = KroneckerGridCovariance([m[0] for m in mats])
            t = cov.solve(comp.values.detach())
            n = X.shape[0]
            t = t.unsqueeze(0).expand(n, *t.shape)
            for j, grid in enumerate(self.grids):
                kj = comp.kernel.factor(j, X[:, j, None] - grid[None, :], 0)
                t = (t * kj.reshape(n, -1, *([1] * (t.dim() - 2)))).sum(1)
            out += t
        return out

    @torch.no_grad()
    def predict_grid(self, grids) -> torch.Tensor:
        """Prediction on the tensor grid of the given 1D points; shape ``(n_1, ..., n_d)``."""
        grids = [torch.as_tensor(g, dtype=self.dtype) for g in grids]
        if len(grids) != self.problem.num_dims:
            raise ValueError(f"grids must give one 1D tensor per dimension ({self.problem.num_dims})")
        out = None
        for comp in self.components:
            mats = self._factors(comp)
            cov = KroneckerGridCovariance([m[0] for m in mats])
            alpha = cov.solve(comp.values.detach())
            cross = [comp.kernel.factor(j, g[:, None] - self.grids[j][None, :], 0) for j, g in enumerate(grids)]
            val = apply_along_axes(cross, alpha)
            out = val if out is None else out + val
        return out

    @torch.no_grad()
    def grid_solution(self) -> torch.Tensor:
        """The fitted grid values (sum over components), shape ``grid_shape``."""
        return sum(c.values.detach() for c in self.components)

    def num_active_components(self, threshold: float = 1e-3) -> list[int]:
        """Surviving mixture components per dimension of the main GP (weight above ``threshold`` x the largest)."""
        return self.components[0].kernel.num_active_components(threshold)
