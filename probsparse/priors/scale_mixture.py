r"""Scale-mixture priors: a weight is a unit Gaussian times a scale built from positive latent variables.

.. math::

    w = s(\phi) \, z, \qquad z \sim \mathcal N(0, 1), \qquad \phi_k \sim p_k \quad (\phi_k > 0),

where each scale variable :math:`\phi_k` has its own shape (one value for the whole tensor, per group or per
weight) and :math:`s` combines them (e.g. :math:`s = \tau\lambda` for the horseshoe). The subclasses only
declare the variables' distributions and the combination; placing the Pyro sites (non-centred), the derived
sites (effective scale, shrinkage factor) and the layers' variational family are shared.
"""

from __future__ import annotations

import abc

import pyro
import pyro.distributions as dist
import torch

from probsparse._validation import check_positive_real
from probsparse.priors.base import (
    DETERMINISTIC,
    SAMPLE,
    WeightPrior,
    _check_groups,
    _check_name,
    _check_shape,
    group_shape,
)

__all__ = ["Normal", "ScaleMixturePrior"]


class ScaleMixturePrior(WeightPrior):
    """Base class of priors of the form ``w = scale(phi) * z`` with ``z ~ N(0, 1)``.

    Subclasses list their variables in :attr:`scale_names` and implement :meth:`scale_distributions` and
    :meth:`effective_scale`. :meth:`sample` then places,
    for a weight named ``name``: one sample site ``f"{name}_{k}"`` per scale variable ``k`` (in declaration
    order), the deterministic ``f"{name}_scale"`` (the effective scale, group shape), ``f"{name}_kappa"`` (the
    shrinkage factor :math:`\\kappa = 1 / (1 + s^2)`, the weight of zero in the posterior mean of a
    unit-noise normal-means problem), the unit-scale sample ``f"{name}_raw"`` and the deterministic weights
    ``name``.

    Parameters
    ----------
    groups : None, str or tuple of int
        Group structure of the local scale variables, see :func:`probsparse.priors.base.group_shape`.
    """

    scale_names: tuple[str, ...] = ()
    #: ``{variable: power}`` when the effective scale is ``c * prod(variable ** power)`` (then the layers compute
    #: posterior moments exactly); ``None`` otherwise.
    scale_exponents: dict[str, float] | None = None

    def __init__(self, groups=None):
        self.groups = _check_groups(groups)

    @abc.abstractmethod
    def scale_distributions(self, shape: torch.Size, zero: torch.Tensor) -> dict[str, dist.Distribution]:
        """Prior of each positive scale variable for a weight of shape ``shape``, in sampling order.

        Each distribution's batch shape is the variable's shape (``()`` for a global variable, the group
        shape for a local one); ``zero`` carries the dtype and device.
        """

    @abc.abstractmethod
    def effective_scale(self, scales: dict[str, torch.Tensor]) -> torch.Tensor | float:
        """Combine the scale variables into the standard deviation of ``w`` given them (broadcastable).

        Leading sample / plate dimensions of the variables must broadcast through.
        """

    def site_names(self, name: str) -> dict[str, str]:
        name = _check_name(name)
        sites = {f"{name}_{k}": SAMPLE for k in self.scale_names}
        sites.update(
            {f"{name}_scale": DETERMINISTIC, f"{name}_kappa": DETERMINISTIC, f"{name}_raw": SAMPLE, name: DETERMINISTIC}
        )
        return sites

    def sample(self, name: str, shape, *, dtype=None, device=None) -> torch.Tensor:
        """Place the sites of :meth:`site_names` for a weight tensor and return it.

        Parameters
        ----------
        name : str
            Weight name; every site name starts with it.
        shape : int or sequence of int
            Event shape of the weight tensor.
        dtype, device : optional
            Of the sites (default: ``torch.get_default_dtype()``, CPU).

        Returns
        -------
        torch.Tensor of shape ``batch_shape + shape``
            ``batch_shape`` comes from plates the caller opened.
        """
        name = _check_name(name)
        shape = _check_shape(shape)
        zero = torch.zeros((), dtype=dtype or torch.get_default_dtype(), device=device)
        event_dim = len(shape)
        scales = {}
        for key, prior in self.scale_distributions(shape, zero).items():
            # A global variable (batch shape ()) has no event dims; a local one spans the weight's dims. The
            # global ones get trailing unit dims so that they broadcast against local ones under plates.
            local = len(prior.batch_shape) > 0
            value = pyro.sample(f"{name}_{key}", prior.to_event(event_dim if local else 0))
            scales[key] = value if local else value.reshape(value.shape + (1,) * event_dim)
        scale = torch.as_tensor(self.effective_scale(scales), dtype=zero.dtype, device=zero.device)
        if scale.dim() < event_dim:
            scale = scale.reshape((1,) * (event_dim - scale.dim()) + scale.shape)
        scale = pyro.deterministic(f"{name}_scale", scale, event_dim=event_dim)
        pyro.deterministic(f"{name}_kappa", (1.0 + scale.square()).reciprocal(), event_dim=event_dim)
        raw = pyro.sample(f"{name}_raw", dist.Normal(zero, 1.0).expand(shape).to_event(event_dim))
        return pyro.deterministic(name, scale * raw, event_dim=event_dim)

    def _group_shape(self, shape: torch.Size) -> torch.Size:
        return group_shape(shape, self.groups)


class Normal(ScaleMixturePrior):
    r"""Isotropic Gaussian prior :math:`w \sim \mathcal N(0, \sigma^2)`: the non-sparse reference.

    A scale mixture with no latent variable, so the layers fit it with the closed-form Gaussian KL.

    Parameters
    ----------
    scale : float, default=1.0
        :math:`\sigma > 0`.

    Examples
    --------
    >>> w = Normal(0.5).sample("w", (3, 2))
    >>> w.shape
    torch.Size([3, 2])
    """

    scale_exponents = {}

    def __init__(self, scale: float = 1.0):
        super().__init__(None)
        self.scale = check_positive_real(scale, "scale")

    def scale_distributions(self, shape, zero):
        return {}

    def effective_scale(self, scales):
        return self.scale

    def __repr__(self) -> str:
        return f"Normal(scale={self.scale})"
