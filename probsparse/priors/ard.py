"""Automatic relevance determination (ARD / SBL) prior for a weight tensor.

The prior objects of :mod:`probsparse.priors` place named Pyro sites inside any model. They share one small
interface, :class:`WeightPrior`: ``sample(name, shape)`` returns the weight tensor, ``site_names(name)``
lists the sites it creates, and ``is_type2`` says whether it leaves free hyperparameters (``pyro.param``
sites) for an optimiser to fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from probsparse._validation import check_positive_real
from probsparse.priors.base import DETERMINISTIC, PARAM, SAMPLE, WeightPrior, _check_name, _check_shape

__all__ = ["ARD", "ARDPrior"]


class ARDPrior(WeightPrior):
    r"""Automatic relevance determination prior: one variance per coefficient.

    .. math::

        w_i = \sqrt{\gamma_i}\, z_i, \qquad z_i \sim \mathcal N(0, 1)
        \quad\Longleftrightarrow\quad w_i \sim \mathcal N(0, \gamma_i),

    with :math:`\gamma` (shape ``shape``, like :math:`w`) chosen by one of three modes:

    * **type-II** (``variance=None``, the default): :math:`\gamma` is a free hyperparameter,
      ``pyro.param(f"{name}_gamma")`` under a positive constraint, initialised to ``init_variance``. Fitting
      it by maximising the ELBO (or the evidence) is sparse Bayesian learning: irrelevant
      :math:`\gamma_i` shrink to zero.
    * **fixed** (``variance`` given): :math:`\gamma` is known; it is recorded as the deterministic site
      ``f"{name}_gamma"`` so it appears in predictive output and ArviZ data.
    * **hierarchical** (``precision_prior=(a, b)``): the precisions :math:`\alpha_i = 1/\gamma_i` get a
      Gamma hyperprior, :math:`\alpha_i \sim \mathrm{Gamma}(a, b)` (shape ``a``, rate ``b``), sampled as
      ``f"{name}_precision"``; :math:`\gamma = 1/\alpha` is recorded as ``f"{name}_gamma"``. Integrating
      :math:`\alpha_i` out gives a Student-t prior on :math:`w_i` with :math:`2a` degrees of freedom.

    The weights are non-centred by default: the unit-scale ``f"{name}_raw"`` is sampled and
    :math:`w` is recorded as the deterministic site ``name``. With fixed :math:`\gamma` the centred
    form (``centred=True``, :math:`w` sampled directly as site ``name``) is also offered; the
    non-centred form is the one to use when :math:`\gamma` is random or learned, since it decouples the
    posterior geometry of :math:`w` from :math:`\gamma`.

    Parameters
    ----------
    variance : float or array_like or None, default=None
        Fixed prior variances :math:`\gamma`, all finite and ``> 0``; a scalar or anything broadcastable
        to the weight shape. ``None`` for type-II or hierarchical mode.
    precision_prior : tuple of (float, float) or None, default=None
        Shape ``a`` and rate ``b`` of the Gamma hyperprior on the precisions, both ``> 0``. Exclusive
        with ``variance``.
    centred : bool, default=False
        Sample the weights directly (only with a fixed ``variance``).
    init_variance : float, default=1.0
        Initial value of the type-II variances (type-II mode only).

    Attributes
    ----------
    variance : torch.Tensor or None
        The fixed variances, as given (float64 tensor), or ``None``.
    precision_prior : tuple of (float, float) or None
    centred : bool
    init_variance : float
    is_type2 : bool
        ``True`` in type-II mode.

    Notes
    -----
    Sites created by ``sample("w", (d,))``, see :meth:`site_names`:

    ===================  ==================  ==========================================
    mode                 site                kind, shape
    ===================  ==================  ==========================================
    type-II              ``w_gamma``         param (positive), ``(d,)``
    hierarchical         ``w_precision``     sample, Gamma(a, b), ``(d,)``
    fixed / hierarchical ``w_gamma``         deterministic, ``(d,)``
    non-centred          ``w_raw``           sample, N(0, 1), ``(d,)``
    all                  ``w``               deterministic (non-centred) or sample
                                             (centred), ``(d,)``
    ===================  ==================  ==========================================

    References
    ----------
    .. [1] M. E. Tipping, "Sparse Bayesian learning and the relevance vector machine", JMLR 1, 2001.
       Their :math:`\alpha_i` is our ``1 / gamma_i`` (``w_precision``); their Gamma(a, b) hyperprior is
       our ``precision_prior=(a, b)``.
    .. [2] D. P. Wipf and B. D. Rao, "Sparse Bayesian learning for basis selection", IEEE TSP 52(8),
       2004. Their :math:`\gamma_i` is our ``w_gamma``.

    Examples
    --------
    >>> import pyro, torch
    >>> prior = ARDPrior(variance=0.5)
    >>> w = prior.sample("w", (3,))
    >>> w.shape
    torch.Size([3])
    >>> list(prior.site_names("w"))
    ['w_gamma', 'w_raw', 'w']
    """

    variance_constraint = constraints.positive

    def __init__(self, variance=None, *, precision_prior=None, centred: bool = False, init_variance=1.0):
        if variance is not None and precision_prior is not None:
            raise ValueError("give either variance (fixed) or precision_prior (hierarchical), not both")
        if variance is not None:
            variance = self._check_variance(variance)
        if precision_prior is not None:
            precision_prior = self._check_precision_prior(precision_prior)
        if not isinstance(centred, bool):
            raise TypeError(f"centred must be a bool, got {type(centred).__name__}")
        if centred and variance is None:
            raise ValueError(
                "centred=True needs a fixed variance; with a learned or hierarchical variance the "
                "weights must be non-centred"
            )
        self.variance = variance
        self.precision_prior = precision_prior
        self.centred = centred
        self.init_variance = check_positive_real(init_variance, "init_variance")

    @staticmethod
    def _check_variance(variance) -> torch.Tensor:
        if isinstance(variance, bool):
            raise TypeError("variance must be a real number or an array of them, got a bool")
        if isinstance(variance, Real):
            return torch.tensor(check_positive_real(variance, "variance"), dtype=torch.float64)
        if torch.is_tensor(variance):
            tensor = variance.detach().to("cpu", torch.float64)
        else:
            array = np.asarray(variance)
            if array.dtype.kind not in "fiu":
                raise TypeError(f"variance must hold real numbers, got dtype {array.dtype}")
            tensor = torch.as_tensor(array, dtype=torch.float64)
        if tensor.numel() == 0:
            raise ValueError("variance is empty")
        if not torch.isfinite(tensor).all():
            raise ValueError("variance contains NaN or infinite values; all entries must be finite")
        if (tensor <= 0).any():
            raise ValueError(f"variance must be > 0 everywhere, got a minimum of {tensor.min().item()}")
        return tensor

    @staticmethod
    def _check_precision_prior(precision_prior) -> tuple[float, float]:
        if not isinstance(precision_prior, Sequence) or len(precision_prior) != 2:
            raise ValueError(f"precision_prior must be a pair (a, b), got {precision_prior!r}")
        a = check_positive_real(precision_prior[0], "precision_prior a (shape)")
        b = check_positive_real(precision_prior[1], "precision_prior b (rate)")
        return a, b

    @property
    def is_type2(self) -> bool:
        """``True`` when the variances are free hyperparameters (no ``variance``, no ``precision_prior``)."""
        return self.variance is None and self.precision_prior is None

    def site_names(self, name: str) -> dict[str, str]:
        """Sites that :meth:`sample` creates for ``name``, in creation order, mapped to their kind.

        Parameters
        ----------
        name : str
            The weight name given to :meth:`sample`.

        Returns
        -------
        dict of {str : str}
            Site name to ``"sample"``, ``"deterministic"`` or ``"param"``.
        """
        name = _check_name(name)
        if self.centred:
            return {f"{name}_gamma": DETERMINISTIC, name: SAMPLE}
        if self.is_type2:
            sites = {f"{name}_gamma": PARAM}
        elif self.precision_prior is not None:
            sites = {f"{name}_precision": SAMPLE, f"{name}_gamma": DETERMINISTIC}
        else:
            sites = {f"{name}_gamma": DETERMINISTIC}
        sites.update({f"{name}_raw": SAMPLE, name: DETERMINISTIC})
        return sites

    def sample(self, name: str, shape, *, dtype=None, device=None) -> torch.Tensor:
        """Place the ARD sites for a weight tensor and return it.

        Parameters
        ----------
        name : str
            Weight name; the sites are named as in :meth:`site_names`.
        shape : int or sequence of int
            Event shape of the weight tensor, e.g. ``(n_features,)``.
        dtype : torch.dtype, optional
            Floating dtype of the sites (default: ``torch.get_default_dtype()``).
        device : torch.device, optional

        Returns
        -------
        torch.Tensor of shape ``batch_shape + shape``
            The weights; ``batch_shape`` comes from plates the caller has opened (empty outside plates).
        """
        name = _check_name(name)
        shape = _check_shape(shape)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        event_dim = len(shape)
        zero = torch.zeros((), dtype=dtype, device=device)

        if self.variance is not None:
            try:
                gamma = self.variance.to(device=device, dtype=dtype).expand(shape)
            except RuntimeError as err:
                raise ValueError(
                    f"variance of shape {tuple(self.variance.shape)} does not broadcast to the weight "
                    f"shape {tuple(shape)}"
                ) from err
            gamma = pyro.deterministic(f"{name}_gamma", gamma, event_dim=event_dim)
            if self.centred:
                return pyro.sample(name, dist.Normal(zero, gamma.sqrt()).to_event(event_dim))
        elif self.precision_prior is not None:
            a, b = self.precision_prior
            precision = pyro.sample(
                f"{name}_precision",
                dist.Gamma(zero + a, zero + b).expand(shape).to_event(event_dim),
            )
            gamma = pyro.deterministic(f"{name}_gamma", precision.reciprocal(), event_dim=event_dim)
        else:
            init = self.init_variance
            gamma = pyro.param(
                f"{name}_gamma",
                lambda: torch.full(shape, init, dtype=dtype, device=device),
                constraint=self.variance_constraint,
            )

        raw = pyro.sample(f"{name}_raw", dist.Normal(zero, 1.0).expand(shape).to_event(event_dim))
        return pyro.deterministic(name, gamma.sqrt() * raw, event_dim=event_dim)

    def scale_distributions(self, shape, zero) -> dict:
        """Scale variables as the Bayesian layers see them (:class:`~probsparse.nn.families.ScaleMixtureFamily`).

        Hierarchical mode: ``{"precision": Gamma(a, b)}`` per weight; type-II: ``{"gamma": None}`` (a point
        estimate, no KL); fixed: no variable.
        """
        if self.precision_prior is not None:
            a, b = self.precision_prior
            return {"precision": dist.Gamma(zero + a, zero + b).expand(shape)}
        if self.is_type2:
            return {"gamma": None}
        return {}

    @property
    def scale_exponents(self) -> dict[str, float]:
        """The effective scale is ``precision ** -1/2``, ``gamma ** 1/2`` or a constant (:meth:`effective_scale`)."""
        if self.precision_prior is not None:
            return {"precision": -0.5}
        return {"gamma": 0.5} if self.is_type2 else {}

    def effective_scale(self, scales: dict):
        """Standard deviation of the weights given the scale variables of :meth:`scale_distributions`."""
        if self.precision_prior is not None:
            return scales["precision"].rsqrt()
        if self.is_type2:
            return scales["gamma"].sqrt()
        return self.variance.sqrt()

    def __repr__(self) -> str:
        if self.is_type2:
            mode = f"init_variance={self.init_variance}"
        elif self.precision_prior is not None:
            mode = f"precision_prior={self.precision_prior}"
        else:
            v = self.variance
            mode = f"variance={v.item() if v.numel() == 1 else tuple(v.shape)}"
            if self.centred:
                mode += ", centred=True"
        return f"ARDPrior({mode})"


# The name used across the prior family (Horseshoe, SpikeAndSlab, ...); ARDPrior is kept for the SBL code.
ARD = ARDPrior
