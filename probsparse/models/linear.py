"""The sparse linear model, written once in Pyro and fitted by any engine of :mod:`probsparse.inference`."""

from __future__ import annotations

from numbers import Real

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from probsparse._validation import check_positive_int, check_positive_real
from probsparse.priors import ARDPrior, WeightPrior

__all__ = ["SparseLinearModel"]

#: Default scale of the HalfCauchy prior on the noise standard deviation when neither the noise
#: variance nor a noise prior is given.
DEFAULT_NOISE_PRIOR_SCALE = 1.0


class SparseLinearModel:
    r"""Linear regression with a sparsity prior on the weights.

    .. math::

        y = \Phi w + \varepsilon, \qquad
        \varepsilon \sim \mathcal N(0, \sigma^2 I_n), \qquad
        w \sim \texttt{prior} \;(\text{e.g. ARD: } w_i \sim \mathcal N(0, \gamma_i)),

    with :math:`\Phi` of shape ``(n, d)`` (``X``), :math:`y` of shape ``(n,)`` and :math:`w` of shape
    ``(d,)``. The noise standard deviation :math:`\sigma` is either known (``noise_var``) or sampled,
    :math:`\sigma \sim \mathrm{HalfCauchy}(s)` (``noise_prior=s``).

    An instance is a plain callable Pyro model, ``model(X, y=None)``: SVI, NUTS and ``Predictive`` take it
    as it is, and ``y=None`` draws from the prior predictive. The model is vectorisable: it can run under
    an outer ``pyro.plate`` (as ``Predictive(..., parallel=True)`` does).

    Parameters
    ----------
    n_features : int
        Number of columns :math:`d` of ``X``.
    prior : WeightPrior, default=ARDPrior()
        Prior on the weights; it places its sites under the name ``"w"``
        (see ``prior.site_names("w")``).
    noise_var : float or None, default=None
        Known noise variance :math:`\sigma^2 > 0`. ``None`` means the noise is learned (sampled).
    noise_prior : float or None, default=None
        Scale :math:`s > 0` of the HalfCauchy prior on :math:`\sigma`. Only when ``noise_var`` is
        ``None``; if both are ``None`` the scale is ``1.0``, which assumes targets of order one.

    Attributes
    ----------
    n_features : int
    prior : WeightPrior
    noise_var : float or None
        ``None`` means the noise is learned; engines read this.
    noise_prior : float or None
        HalfCauchy scale in use (``None`` when the noise is known).
    dims : dict of {str : list of str}
        ArviZ dimension names of the model's sites: every weight site has ``("feature",)``,
        ``"y"`` has ``("obs_id",)``.

    Notes
    -----
    Sites: those of ``prior.sample("w", (d,))`` (for the default prior ``w_gamma``, ``w_raw``, ``w``),
    ``"noise_scale"`` (:math:`\sigma`, when learned), the plate ``"obs"`` of size ``n`` (dim ``-1``)
    and the observed ``"y"``. The dtype and device of every site follow ``X``.

    Examples
    --------
    >>> import torch
    >>> from probsparse.priors import ARDPrior
    >>> model = SparseLinearModel(3, prior=ARDPrior(variance=1.0), noise_var=0.1)
    >>> X = torch.randn(5, 3, dtype=torch.float64)
    >>> model(X).shape   # a prior predictive draw of y
    torch.Size([5])
    """

    def __init__(self, n_features: int, prior: WeightPrior | None = None, noise_var=None, noise_prior=None):
        self.n_features = check_positive_int(n_features, "n_features")
        if prior is None:
            prior = ARDPrior()
        if not isinstance(prior, WeightPrior):
            raise TypeError(f"prior must be a probsparse WeightPrior, got {type(prior).__name__}")
        self.prior = prior
        if noise_var is not None and noise_prior is not None:
            raise ValueError("give either noise_var (known noise) or noise_prior (learned noise), not both")
        if noise_var is not None:
            self.noise_var = check_positive_real(noise_var, "noise_var")
            self.noise_prior = None
        else:
            self.noise_var = None
            self.noise_prior = check_positive_real(
                DEFAULT_NOISE_PRIOR_SCALE if noise_prior is None else noise_prior, "noise_prior"
            )

    @property
    def dims(self) -> dict[str, list[str]]:
        """ArviZ dims of the sites: ``"feature"`` for every weight site, ``"obs_id"`` for ``"y"``."""
        dims = {site: ["feature"] for site in self.prior.site_names("w")}
        dims["y"] = ["obs_id"]
        return dims

    def check_data(self, X, y=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Validate the inputs of :meth:`__call__` and return them as tensors.

        Parameters
        ----------
        X : torch.Tensor or array_like of shape (n, n_features)
            Real, finite design matrix with at least one row.
        y : torch.Tensor or array_like of shape (n,), optional
            Real, finite targets; cast to the dtype and device of ``X``.

        Returns
        -------
        X : torch.Tensor of shape (n, n_features)
        y : torch.Tensor of shape (n,) or None

        Raises
        ------
        ValueError
            On a shape mismatch, empty data, or NaN / infinite entries; the message names the argument.
        """
        X = _as_float_tensor(X, "X")
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n, n_features), got shape {tuple(X.shape)}")
        if X.shape[0] == 0:
            raise ValueError("X has no rows: at least one observation is needed")
        if X.shape[1] != self.n_features:
            raise ValueError(f"X has {X.shape[1]} columns but the model has n_features={self.n_features}")
        if not torch.isfinite(X).all():
            raise ValueError("X contains NaN or infinite values; all entries must be finite")
        if y is None:
            return X, None
        y = _as_float_tensor(y, "y").to(dtype=X.dtype, device=X.device)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D (n,), got shape {tuple(y.shape)}")
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"X and y have different numbers of rows: {X.shape[0]} and {y.shape[0]}")
        if not torch.isfinite(y).all():
            raise ValueError("y contains NaN or infinite values; all entries must be finite")
        return X, y

    def __call__(self, X, y=None) -> torch.Tensor:
        """Run the model: place the weight, noise and observation sites.

        Parameters
        ----------
        X : torch.Tensor of shape (n, n_features)
        y : torch.Tensor of shape (n,), optional
            Observed targets; ``None`` samples ``y`` (prior or posterior predictive).

        Returns
        -------
        torch.Tensor of shape ``batch_shape + (n,)``
            The value of site ``"y"``.
        """
        X, y = self.check_data(X, y)
        w = self.prior.sample("w", (self.n_features,), dtype=X.dtype, device=X.device)
        if self.noise_var is None:
            scale = torch.tensor(self.noise_prior, dtype=X.dtype, device=X.device)
            sigma = pyro.sample("noise_scale", dist.HalfCauchy(scale))
        else:
            sigma = torch.tensor(self.noise_var, dtype=X.dtype, device=X.device).sqrt()
        # w has shape batch_shape + (d,). Under outer plates, batch_shape ends with the singleton that stands
        # for the "obs" plate dim (-1); transposing moves d out of the way so that n fills that slot.
        w_col = w.unsqueeze(-1) if w.dim() == 1 else w.transpose(-1, -2)
        mean = (X @ w_col).squeeze(-1)  # batch_shape[:-1] + (n,)
        with pyro.plate("obs", X.shape[0], dim=-1):
            return pyro.sample("y", dist.Normal(mean, sigma), obs=y)

    def __repr__(self) -> str:
        noise = (
            f"noise_var={self.noise_var}" if self.noise_var is not None else f"noise_prior={self.noise_prior}"
        )
        return f"SparseLinearModel(n_features={self.n_features}, prior={self.prior!r}, {noise})"


def _as_float_tensor(value, name: str) -> torch.Tensor:
    """``value`` as a real floating tensor: float dtypes are kept, integers get the default dtype."""
    if isinstance(value, bool | Real):
        raise ValueError(f"{name} must be an array, got the scalar {value!r}")
    if not torch.is_tensor(value):
        array = np.asarray(value)
        if array.dtype.kind not in "fiu":
            raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
        value = torch.as_tensor(array)
    if value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
    if not value.is_floating_point():
        value = value.to(torch.get_default_dtype())
    return value
