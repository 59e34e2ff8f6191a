r"""Horseshoe priors: global-local half-Cauchy scale mixtures, plain, regularised and grouped."""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch

from probsparse._validation import check_positive_int, check_positive_real
from probsparse.priors.scale_mixture import ScaleMixturePrior

__all__ = ["GroupHorseshoe", "Horseshoe", "RegularizedHorseshoe"]


class Horseshoe(ScaleMixturePrior):
    r"""Horseshoe prior: a half-Cauchy global scale times half-Cauchy local scales.

    .. math::

        w = \tau \lambda \, z, \qquad \tau \sim \mathcal C^+(0, \tau_0), \qquad
        \lambda \sim \mathcal C^+(0, 1), \qquad z \sim \mathcal N(0, 1),

    with :math:`\lambda` of the group shape (one per weight by default, see ``groups``). The shrinkage factor
    :math:`\kappa = 1/(1 + \tau^2\lambda^2)` (site ``f"{name}_kappa"``) is :math:`\mathrm{Beta}(1/2, 1/2)`
    distributed when :math:`\tau = 1`: the "horseshoe" that puts mass near 0 (signal kept) and near 1
    (shrunk to zero).

    Sites for ``sample("w", shape)``: ``w_tau`` (shape ``()``), ``w_lambda`` (group shape), ``w_scale``
    (:math:`\tau\lambda`), ``w_kappa``, ``w_raw`` (:math:`z`), ``w``.

    Parameters
    ----------
    global_scale : float, default=1.0
        :math:`\tau_0 > 0`. :meth:`recommended_global_scale` gives Piironen and Vehtari's choice for
        regression from a guess of the number of relevant features.
    groups : None, str or tuple of int, default=None
        Group structure of :math:`\lambda` (:func:`~probsparse.priors.base.group_shape`): ``None`` for one
        local scale per weight, ``"input"`` / ``"output"`` / ``"channel"`` for one per neuron or filter.

    References
    ----------
    .. [1] C. M. Carvalho, N. G. Polson, J. G. Scott, "The horseshoe estimator for sparse signals",
       Biometrika 97(2), 2010. Their :math:`\tau, \lambda_i, \kappa_i` are ours.

    Examples
    --------
    >>> prior = Horseshoe(global_scale=0.1)
    >>> prior.sample("w", (5,)).shape
    torch.Size([5])
    >>> list(prior.site_names("w"))
    ['w_tau', 'w_lambda', 'w_scale', 'w_kappa', 'w_raw', 'w']
    """

    scale_names = ("tau", "lambda")
    scale_exponents = {"tau": 1.0, "lambda": 1.0}

    def __init__(self, global_scale: float = 1.0, *, groups=None):
        super().__init__(groups)
        self.global_scale = check_positive_real(global_scale, "global_scale")

    @staticmethod
    def recommended_global_scale(n_features: int, expected_nonzero: int, n_samples: int, noise_scale=1.0) -> float:
        r""":math:`\tau_0 = \frac{p_0}{D - p_0} \frac{\sigma}{\sqrt n}` (Piironen and Vehtari, 2017).

        Parameters
        ----------
        n_features : int
            :math:`D`.
        expected_nonzero : int
            Prior guess :math:`p_0` of the number of relevant features, ``1 <= p0 < D``.
        n_samples : int
            :math:`n`.
        noise_scale : float, default=1.0
            Noise standard deviation :math:`\sigma`.
        """
        d = check_positive_int(n_features, "n_features")
        p0 = check_positive_int(expected_nonzero, "expected_nonzero")
        n = check_positive_int(n_samples, "n_samples")
        if p0 >= d:
            raise ValueError(f"expected_nonzero must be below n_features={d}, got {p0}")
        return p0 / (d - p0) * check_positive_real(noise_scale, "noise_scale") / math.sqrt(n)

    def scale_distributions(self, shape, zero):
        return {
            "tau": dist.HalfCauchy(zero + self.global_scale),
            "lambda": dist.HalfCauchy(zero + 1.0).expand(self._group_shape(shape)),
        }

    def effective_scale(self, scales):
        return scales["tau"] * scales["lambda"]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(global_scale={self.global_scale}, groups={self.groups!r})"


class GroupHorseshoe(Horseshoe):
    r"""Horseshoe with one local scale per group of weights (neuron, input feature or filter).

    .. math::

        w_{g,j} = \tau \lambda_g \, z_{g,j}, \qquad \tau \sim \mathcal C^+(0, \tau_0), \quad
        \lambda_g \sim \mathcal C^+(0, 1),

    so a whole group is kept or shrunk together: with ``groups="input"`` on a linear layer a shrunk
    :math:`\lambda_j` removes input neuron :math:`j`. This is the prior of BC-GHS [1]_ (their :math:`s,
    \tilde z_j` are our :math:`\tau, \lambda_j`).

    With ``weight_scales=True`` each weight also gets its own half-Cauchy scale,
    :math:`w_{g,j} = \tau\lambda_g\eta_{g,j} z_{g,j}`: a horseshoe within every group, so the weights of a kept
    group that the data do not support shrink too (otherwise their posterior stays at the group's prior scale,
    which on a network injects that much noise into every forward pass).

    Parameters
    ----------
    global_scale : float, default=1.0
    groups : str or tuple of int, default="input"
        Any group structure except per-weight.
    weight_scales : bool, default=False
        Add the per-weight scales :math:`\eta` (site ``f"{name}_eta"``).

    References
    ----------
    .. [1] C. Louizos, K. Ullrich, M. Welling, "Bayesian compression for deep learning", NeurIPS 2017.

    Examples
    --------
    >>> GroupHorseshoe(groups="output").sample("w", (4, 3)).shape
    torch.Size([4, 3])
    """

    def __init__(self, global_scale: float = 1.0, *, groups="input", weight_scales: bool = False):
        super().__init__(global_scale, groups=groups)
        if self.groups is None:
            raise ValueError("GroupHorseshoe needs a group structure (e.g. groups='input'); use Horseshoe per weight")
        if not isinstance(weight_scales, bool):
            raise TypeError(f"weight_scales must be a bool, got {type(weight_scales).__name__}")
        self.weight_scales = weight_scales
        if weight_scales:
            self.scale_names = ("tau", "lambda", "eta")
            self.scale_exponents = {"tau": 1.0, "lambda": 1.0, "eta": 1.0}

    def scale_distributions(self, shape, zero):
        priors = super().scale_distributions(shape, zero)
        if self.weight_scales:
            priors["eta"] = dist.HalfCauchy(zero + 1.0).expand(shape)
        return priors

    def effective_scale(self, scales):
        scale = scales["tau"] * scales["lambda"]
        return scale * scales["eta"] if self.weight_scales else scale

    def __repr__(self) -> str:
        extra = ", weight_scales=True" if self.weight_scales else ""
        return f"GroupHorseshoe(global_scale={self.global_scale}, groups={self.groups!r}{extra})"


class RegularizedHorseshoe(Horseshoe):
    r"""Regularised ("Finnish") horseshoe: a horseshoe whose large scales are softly capped by a slab.

    .. math::

        w = \tau \tilde\lambda \, z, \qquad
        \tilde\lambda^2 = \frac{c^2 \lambda^2}{c^2 + \tau^2 \lambda^2}, \qquad
        c^2 \sim \mathrm{InvGamma}\!\left(\tfrac{\nu}{2}, \tfrac{\nu s^2}{2}\right),

    with :math:`\tau, \lambda` as in :class:`Horseshoe`. Weights far from zero are regularised as by a
    Student-t slab with :math:`\nu` degrees of freedom and scale :math:`s`, which keeps the posterior proper
    when the data do not pin a large weight down (separable classes, weakly identified parameters).

    Sites for ``sample("w", shape)``: ``w_tau``, ``w_lambda``, ``w_c2``, ``w_scale``
    (:math:`\tau\tilde\lambda`), ``w_kappa``, ``w_raw``, ``w``.

    Parameters
    ----------
    global_scale : float, default=1.0
        :math:`\tau_0 > 0`.
    slab_scale : float, default=2.0
        :math:`s > 0`.
    slab_df : float, default=4.0
        :math:`\nu > 0`.
    groups : None, str or tuple of int, default=None

    References
    ----------
    .. [1] J. Piironen, A. Vehtari, "Sparsity information and regularization in the horseshoe and other
       shrinkage priors", Electronic Journal of Statistics 11(2), 2017. Their :math:`\tau_0, c, s, \nu,
       \tilde\lambda_j` are ours.

    Examples
    --------
    >>> prior = RegularizedHorseshoe(global_scale=0.05, slab_scale=1.0, slab_df=4.0)
    >>> prior.sample("beta", (10,)).shape
    torch.Size([10])
    """

    scale_names = ("tau", "lambda", "c2")
    scale_exponents = None

    def __init__(self, global_scale: float = 1.0, *, slab_scale: float = 2.0, slab_df: float = 4.0, groups=None):
        super().__init__(global_scale, groups=groups)
        self.slab_scale = check_positive_real(slab_scale, "slab_scale")
        self.slab_df = check_positive_real(slab_df, "slab_df")

    def scale_distributions(self, shape, zero):
        priors = super().scale_distributions(shape, zero)
        half_df = 0.5 * self.slab_df
        priors["c2"] = dist.InverseGamma(zero + half_df, zero + half_df * self.slab_scale**2)
        return priors

    def effective_scale(self, scales):
        tau, lam, c2 = scales["tau"], scales["lambda"], scales["c2"]
        # tau * lambda_tilde = r / sqrt(1 + r^2 / c^2) with r = tau * lambda, the root taken by hypot so that it
        # tends to c (not 0) when r^2 overflows.
        global_local = tau * lam
        return global_local / torch.hypot(torch.ones_like(global_local), global_local / c2.sqrt())

    def __repr__(self) -> str:
        return (
            f"RegularizedHorseshoe(global_scale={self.global_scale}, slab_scale={self.slab_scale}, "
            f"slab_df={self.slab_df}, groups={self.groups!r})"
        )
