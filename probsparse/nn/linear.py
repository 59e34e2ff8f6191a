"""A fully connected Bayesian layer under any sparsity prior."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from probsparse._validation import check_positive_int
from probsparse.nn._autograd import centred_linear_with_kl, linear_local_reparam
from probsparse.nn.base import BayesianLayer
from probsparse.nn.families import CentredScaleMixtureFamily

__all__ = ["BayesianLinear"]


class BayesianLinear(BayesianLayer):
    r"""Linear layer :math:`y = W x + b` with a variational posterior on :math:`W` under a sparsity prior.

    .. math::

        \mu_y = E[W]\,x + m, \qquad \sigma_y^2 = \mathrm{Var}[W]\,(x \odot x) + s^2, \qquad
        y = \mu_y + \sigma_y \odot \varepsilon \quad \text{(local reparameterisation)},

    with one :math:`\varepsilon` per example and output: two matrix products per pass and independent
    noise per example, instead of one weight draw per mini-batch. The posterior of :math:`W` is the family
    the prior calls for (:mod:`probsparse.nn.families`): mean-field Gaussian for :class:`~probsparse.priors.Normal`,
    non-centred with log-normal scales for the horseshoes and ARD, the indicator family for spike-and-slab,
    sparse variational dropout for :class:`~probsparse.priors.LogUniform`, group scales for
    :class:`~probsparse.priors.GroupNormalJeffreys`.

    Parameters
    ----------
    in_features, out_features : int
        Sizes of an input row and an output row (>= 1).
    prior : WeightPrior, optional
        Prior of the weights (default ``Normal(1.0)``); its ``groups`` refer to the weight's dims
        ``(out_features, in_features)``: ``"input"`` groups a column (an input neuron).
    bias : bool, default=True
    bias_prior_scale : float, default=1.0
        Standard deviation of the bias's Gaussian prior.
    init_log_std : float, default=-5.0
        Log of the initial posterior standard deviations (weights given their scales, bias): a network that
        starts close to deterministic.
    parameterisation : {"non-centred", "centred"}, default="non-centred"
        Variational family of a scale-mixture prior's weights: non-centred (:math:`w = s\theta`, scales drawn in
        the forward pass) or centred (Gaussian :math:`w` independent of the scales, which enter the KL only;
        faster per step). See :mod:`probsparse.nn.families`.
    device, dtype : optional

    Attributes
    ----------
    in_features, out_features : int
    weight : WeightFamily
        Variational parameters of :math:`W` (shape ``(out_features, in_features)``).

    References
    ----------
    .. [1] D. P. Kingma, T. Salimans, M. Welling, "Variational dropout and the local reparameterization
       trick", NeurIPS 2015. Their :math:`\gamma_m, \delta_m` are our :math:`\mu_y, \sigma_y^2`.

    Examples
    --------
    >>> import torch
    >>> from probsparse.priors import GroupHorseshoe
    >>> layer = BayesianLinear(3, 2, prior=GroupHorseshoe(groups="input"))
    >>> x = torch.randn(4, 3)
    >>> layer(x).shape
    torch.Size([4, 2])
    >>> loss = layer(x).square().mean() + layer.kl_divergence() / 1000
    >>> loss.backward()
    >>> sorted(layer.pruning_scores())
    ['folded_snr', 'log_alpha', 'mean', 'snr', 'std']
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        prior=None,
        bias: bool = True,
        bias_prior_scale: float = 1.0,
        init_log_std: float = -5.0,
        parameterisation: str = "non-centred",
        device=None,
        dtype=None,
    ) -> None:
        in_features = check_positive_int(in_features, "in_features")
        out_features = check_positive_int(out_features, "out_features")
        # The same initial means as torch.nn.Linear, so swapping layers keeps the network's starting scale.
        reference = nn.Linear(in_features, out_features, bias=True, device=device, dtype=dtype)
        super().__init__(
            (out_features, in_features),
            reference.weight.detach(),
            prior=prior,
            bias=bias,
            init_bias=reference.bias.detach(),
            bias_prior_scale=bias_prior_scale,
            init_log_std=init_log_std,
            parameterisation=parameterisation,
        )
        self.in_features = in_features
        self.out_features = out_features

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs) -> BayesianLinear:
        """A Bayesian layer whose posterior means start at ``linear``'s weights (e.g. a pre-trained network)."""
        layer = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
            **kwargs,
        )
        layer._start_at(linear.weight, linear.bias)
        return layer

    def _check_input(self, x):
        if x.shape[-1:] != (self.in_features,):
            raise ValueError(f"x must have shape (..., {self.in_features}) for this layer, got {tuple(x.shape)}")

    def _affine(self, x, weight, bias):
        return F.linear(x, weight, bias)

    def _forward_with_kl(self, x):
        plan = self.weight.kernel_plan() if isinstance(self.weight, CentredScaleMixtureFamily) else None
        if plan is None:
            return None
        theta, scales = self.weight.theta, self.weight.scales
        out, kl = centred_linear_with_kl(
            x.reshape(-1, self.in_features), theta.mean, theta.log_std, self.bias_mean, self.bias_log_std,
            self.bias_prior_scale, plan, scales.loc, scales.log_std,
        )  # fmt: skip
        return out.reshape(*x.shape[:-1], self.out_features), kl

    def _sample_preactivation(self, x, mean_w, var_w, in_scale, out_scale, bias_var):
        if out_scale is not None:
            return super()._sample_preactivation(x, mean_w, var_w, in_scale, out_scale, bias_var)
        # The fused form of the base class's computation (one weight-sized temporary instead of about ten).
        if in_scale is not None:
            per_example = in_scale.dim() > mean_w.dim()
            in_scale = in_scale.reshape(-1, self.in_features) if per_example else in_scale.reshape(self.in_features)
        batch_shape = x.shape[:-1]
        out = linear_local_reparam(
            x.reshape(-1, self.in_features), mean_w, var_w, self.bias_mean, bias_var, scale=in_scale
        )
        return out.reshape(*batch_shape, self.out_features)

    def _batch_shape(self, x):
        return x.shape[:-1]

    def _input_view(self, scale):
        return scale.squeeze(-2)

    def _output_view(self, scale):
        return scale.squeeze(-1)

    def _bias_view(self, bias):
        return bias

    def extra_repr(self) -> str:
        sizes = f"in_features={self.in_features}, out_features={self.out_features}"
        return f"{sizes}, prior={self.prior!r}, bias={self.has_bias}"
