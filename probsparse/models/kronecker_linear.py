"""The Kronecker-structured sparse linear model, written once in Pyro."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

from probsparse._validation import check_positive_real
from probsparse.models.linear import DEFAULT_NOISE_PRIOR_SCALE, _as_float_tensor
from probsparse.priors import KroneckerARDPrior

__all__ = ["KroneckerSparseLinearModel", "kron_matvec_torch"]


def kron_matvec_torch(factors: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    r"""``(A_1 ⊗ ... ⊗ A_I) x`` on the last axis of ``x`` (batch axes allowed), without forming the product.

    ``x`` has shape ``batch + (prod N_i,)``; the result ``batch + (prod M_i,)`` (``np.kron`` order).
    """
    dims = [A.shape[1] for A in factors]
    t = x.reshape(*x.shape[:-1], *dims)
    n = len(factors)
    for A in factors:
        # Contract the leading event axis and append the new one: after I steps the axes are in order.
        t = torch.movedim(t, -n, -1) @ A.transpose(0, 1)
    return t.reshape(*x.shape[:-1], -1)


class KroneckerSparseLinearModel:
    r"""Linear model with a Kronecker-structured dictionary and a Kronecker-structured sparsity prior.

    .. math::

        y = (A_1 \otimes \cdots \otimes A_I)\, x + \varepsilon, \qquad
        x \sim \mathcal N(0, \operatorname{diag}(\gamma_1 \otimes \cdots \otimes \gamma_I)), \qquad
        \varepsilon \sim \mathcal N(0, \sigma^2 I),

    :math:`A_i` of shape :math:`(M_i, N_i)`, real. A callable Pyro model ``model(factors, y=None)``; the
    dictionary is applied by mode products and never formed. Fitted by the Kronecker SBL engines
    (:class:`~probsparse.models.KroneckerSBLRegressor`, which maximise the evidence over the γ_i) or, as
    any Pyro model, by SVI / NUTS.

    Parameters
    ----------
    dims : sequence of int
        :math:`N_1, \ldots, N_I`.
    prior : KroneckerARDPrior, optional
        Default: type-II ``KroneckerARDPrior(dims)``. Its sites are placed under the name ``"x"``.
    noise_var : float or None
        Known :math:`\sigma^2`; None samples :math:`\sigma \sim \mathrm{HalfCauchy}(s)` as site
        ``"noise_scale"`` (``s`` = ``noise_prior``, default 1).
    noise_prior : float or None
    """

    def __init__(self, dims, prior: KroneckerARDPrior | None = None, noise_var=None, noise_prior=None):
        prior = KroneckerARDPrior(dims) if prior is None else prior
        if not isinstance(prior, KroneckerARDPrior):
            raise TypeError(f"prior must be a KroneckerARDPrior, got {type(prior).__name__}")
        if tuple(prior.dims) != tuple(dims):
            raise ValueError(f"prior dims {prior.dims} differ from the model dims {tuple(dims)}")
        self.prior = prior
        self.dims = prior.dims
        if noise_var is not None and noise_prior is not None:
            raise ValueError("give either noise_var (known noise) or noise_prior (learned noise), not both")
        self.noise_var = None if noise_var is None else check_positive_real(noise_var, "noise_var")
        self.noise_prior = (
            None
            if noise_var is not None
            else check_positive_real(DEFAULT_NOISE_PRIOR_SCALE if noise_prior is None else noise_prior, "noise_prior")
        )

    def check_data(self, factors, y=None):
        """Validate ``factors`` (I real matrices, the i-th with N_i columns) and ``y`` (prod M_i,)."""
        if not isinstance(factors, list | tuple) or len(factors) != len(self.dims):
            raise ValueError(f"factors must be a list of {len(self.dims)} matrices (one per factor)")
        out = []
        for i, (A, n_i) in enumerate(zip(factors, self.dims, strict=True)):
            A = _as_float_tensor(A, f"factors[{i}]")
            if A.ndim != 2 or A.shape[1] != n_i or A.shape[0] == 0:
                raise ValueError(f"factors[{i}] must have shape (M_{i} >= 1, {n_i}), got {tuple(A.shape)}")
            if not torch.isfinite(A).all():
                raise ValueError(f"factors[{i}] contains NaN or infinite values")
            out.append(A.to(out[0].dtype) if out else A)
        if y is None:
            return out, None
        y = _as_float_tensor(y, "y").to(out[0].dtype)
        m_bar = math.prod(A.shape[0] for A in out)
        if y.shape != (m_bar,):
            raise ValueError(f"y must have shape ({m_bar},) = prod(M_i), got {tuple(y.shape)}")
        if not torch.isfinite(y).all():
            raise ValueError("y contains NaN or infinite values")
        return out, y

    def __call__(self, factors, y=None) -> torch.Tensor:
        factors, y = self.check_data(factors, y)
        dtype = factors[0].dtype
        x = self.prior.sample("x", (math.prod(self.dims),), dtype=dtype)
        if self.noise_var is None:
            sigma = pyro.sample("noise_scale", dist.HalfCauchy(torch.tensor(self.noise_prior, dtype=dtype)))
        else:
            sigma = torch.tensor(self.noise_var, dtype=dtype).sqrt()
        # Under an outer plate x has batch shape (..., 1) standing for the "obs" plate dim: drop it so that
        # the measurements fill that dim.
        x = x.squeeze(-2) if x.dim() > 1 else x
        mean = kron_matvec_torch(factors, x)
        with pyro.plate("obs", mean.shape[-1], dim=-1):
            return pyro.sample("y", dist.Normal(mean, sigma), obs=y)

    def __repr__(self) -> str:
        noise = f"noise_var={self.noise_var}" if self.noise_var is not None else f"noise_prior={self.noise_prior}"
        return f"KroneckerSparseLinearModel(dims={self.dims}, prior={self.prior!r}, {noise})"
