"""Kronecker-structured ARD prior: one variance vector per factor, γ = γ_1 ⊗ ... ⊗ γ_I."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from probsparse._validation import check_positive_int, check_positive_real
from probsparse.priors.ard import ARDPrior
from probsparse.priors.base import DETERMINISTIC, PARAM, SAMPLE, WeightPrior, _check_name, _check_shape

__all__ = ["KroneckerARDPrior"]


def kron_outer(vectors: list[torch.Tensor]) -> torch.Tensor:
    """γ_1 ⊗ ... ⊗ γ_I as a flat tensor in ``np.kron`` order (the first factor varies slowest)."""
    out = vectors[0]
    for v in vectors[1:]:
        out = (out.unsqueeze(-1) * v).reshape(-1)
    return out


class KroneckerARDPrior(WeightPrior):
    r"""ARD prior whose variances have Kronecker structure (the prior of Kronecker-structured SBL).

    .. math::

        w = \sqrt{\gamma} \circ z, \quad z \sim \mathcal N(0, I), \qquad
        \gamma = \gamma_1 \otimes \cdots \otimes \gamma_I, \quad \gamma_i \in \mathbb R_+^{N_i},

    so the support of :math:`w` (in ``np.kron`` order, length :math:`\prod N_i`) is a Kronecker product of
    per-factor supports. Each :math:`\gamma_i` is either a free hyperparameter (type-II,
    ``pyro.param(f"{name}_gamma_{i}")``) or fixed.

    Parameters
    ----------
    dims : sequence of int
        :math:`N_1, \ldots, N_I` (:math:`I \ge 2`).
    variances : sequence of array_like or None, default=None
        Fixed factor variances (the i-th of shape (N_i,), all > 0); None for type-II.
    init_variance : float, default=1.0
        Initial value of every type-II factor variance.

    Notes
    -----
    Sites created by ``sample("x", (prod N_i,))``: ``x_gamma_0`` … ``x_gamma_{I-1}`` (params in type-II mode,
    deterministic when fixed), ``x_gamma`` (deterministic, the Kronecker product), ``x_raw`` (sample) and
    ``x`` (deterministic). The scale of the factors is not identified (only the product is): type-II fits
    find one representative.
    """

    variance_constraint = constraints.positive

    def __init__(self, dims, variances=None, *, init_variance=1.0):
        dims = tuple(check_positive_int(v, f"dims[{i}]") for i, v in enumerate(dims))
        if len(dims) < 2:
            raise ValueError(f"dims must name at least 2 factors, got {len(dims)}")
        self.dims = dims
        if variances is not None:
            if len(variances) != len(dims):
                raise ValueError(f"variances must have one vector per factor ({len(dims)}), got {len(variances)}")
            checked = []
            for i, (v, n_i) in enumerate(zip(variances, dims, strict=True)):
                t = ARDPrior._check_variance(v).reshape(-1)
                if t.numel() != n_i:
                    raise ValueError(f"variances[{i}] must have dims[{i}] = {n_i} entries, got {t.numel()}")
                checked.append(t)
            variances = checked
        self.variances = variances
        self.init_variance = check_positive_real(init_variance, "init_variance")

    @property
    def is_type2(self) -> bool:
        return self.variances is None

    def site_names(self, name: str) -> dict[str, str]:
        name = _check_name(name)
        kind = PARAM if self.is_type2 else DETERMINISTIC
        sites = {f"{name}_gamma_{i}": kind for i in range(len(self.dims))}
        sites.update({f"{name}_gamma": DETERMINISTIC, f"{name}_raw": SAMPLE, name: DETERMINISTIC})
        return sites

    def sample(self, name: str, shape, *, dtype=None, device=None) -> torch.Tensor:
        name = _check_name(name)
        shape = _check_shape(shape)
        n_bar = math.prod(self.dims)
        if tuple(shape) != (n_bar,):
            raise ValueError(
                f"KroneckerARDPrior with dims {self.dims} places a weight of shape ({n_bar},), got {tuple(shape)}"
            )
        dtype = torch.get_default_dtype() if dtype is None else dtype
        factors = []
        for i, n_i in enumerate(self.dims):
            if self.is_type2:
                init = self.init_variance
                g = pyro.param(
                    f"{name}_gamma_{i}",
                    lambda n_i=n_i, init=init: torch.full((n_i,), init, dtype=dtype, device=device),
                    constraint=self.variance_constraint,
                )
            else:
                g = pyro.deterministic(
                    f"{name}_gamma_{i}", self.variances[i].to(device=device, dtype=dtype), event_dim=1
                )
            factors.append(g)
        gamma = pyro.deterministic(f"{name}_gamma", kron_outer(factors), event_dim=1)
        zero = torch.zeros((), dtype=dtype, device=device)
        raw = pyro.sample(f"{name}_raw", dist.Normal(zero, 1.0).expand(shape).to_event(1))
        return pyro.deterministic(name, gamma.sqrt() * raw, event_dim=1)

    def __repr__(self) -> str:
        mode = f"init_variance={self.init_variance}" if self.is_type2 else "fixed variances"
        return f"KroneckerARDPrior(dims={self.dims}, {mode})"
