"""A fully connected layer with a mean-field Gaussian posterior over its weights and bias."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions.transforms import SoftplusTransform, Transform

from probsparse._validation import check_finite_real, check_positive_int, check_positive_real

__all__ = ["BayesianLinear"]


class BayesianLinear(nn.Module):
    r"""Linear layer with a factorised Gaussian variational posterior and a Gaussian prior.

    Each weight and bias entry has an independent Gaussian posterior; the prior is an isotropic Gaussian:

    .. math::

        q(W) = \prod_{ij} \mathcal{N}(W_{ij} \mid M_{ij}, S_{ij}^2), \qquad
        q(b) = \prod_{i} \mathcal{N}(b_i \mid m_i, s_i^2), \qquad
        p(W_{ij}) = p(b_i) = \mathcal{N}(0, \sigma_p^2),

    with :math:`S = \operatorname{softplus}(\tilde S)` for an unconstrained ``weight_raw_std``
    :math:`\tilde S` (likewise ``bias_raw_std``). The stochastic forward pass uses the local
    reparameterisation trick: for an input row :math:`x` the pre-activation :math:`y = W x + b` is Gaussian
    under :math:`q`, so it is sampled directly,

    .. math::

        \mu_y = M x + m, \qquad
        \sigma_y^2 = (S \odot S)(x \odot x) + s \odot s, \qquad
        y = \mu_y + \sigma_y \odot \varepsilon, \quad \varepsilon \sim \mathcal{N}(0, I),

    one :math:`\varepsilon` per example and output. Compared with sampling :math:`W` once per mini-batch this
    gives independent noise per example (lower-variance gradients) and costs two matrix products instead
    of one weight sample per example.

    Parameters
    ----------
    in_features : int
        Size :math:`D_{in}` of each input row (>= 1).
    out_features : int
        Size :math:`D_{out}` of each output row (>= 1).
    prior_std : float, default 1.0
        Prior standard deviation :math:`\sigma_p` (> 0), shared by all weights and the bias.
    bias : bool, default True
        Whether the layer has a (Bayesian) bias.
    init_log_std : float, default -5.0
        :math:`\log` of the initial posterior standard deviation of every entry. The default
        (:math:`S \approx 0.0067`) starts the network close to a deterministic one, which keeps early
        gradients from being swamped by weight noise.
    device, dtype : optional
        Forwarded to the parameter constructors, as in :class:`torch.nn.Linear`.

    Attributes
    ----------
    weight_mean : torch.nn.Parameter of shape (out_features, in_features)
        Posterior means :math:`M`.
    weight_raw_std : torch.nn.Parameter of shape (out_features, in_features)
        Unconstrained :math:`\tilde S`; the standard deviations are :attr:`weight_std`.
    bias_mean, bias_raw_std : torch.nn.Parameter of shape (out_features,) or None
        The same for the bias; ``None`` when ``bias=False``.
    std_transform : torch.distributions.transforms.Transform
        Class attribute mapping raw parameters to standard deviations (softplus). A subclass may swap it,
        e.g. for :class:`~torch.distributions.transforms.ExpTransform`.

    Notes
    -----
    :meth:`kl_divergence` is the sum over all entries, not scaled by the data-set size; the objective
    decides the scaling (e.g. ``nll_mean + kl / n_train``).

    References
    ----------
    .. [1] Blundell, Cornebise, Kavukcuoglu, Wierstra (2015). "Weight Uncertainty in Neural Networks".
       ICML. Their :math:`(\mu, \rho)` are our ``(weight_mean, weight_raw_std)``, :math:`\sigma =
       \log(1 + e^\rho)` is :attr:`weight_std`.
    .. [2] Kingma, Salimans, Welling (2015). "Variational Dropout and the Local Reparameterization Trick".
       NeurIPS. Their :math:`\gamma_{m}, \delta_{m}` (per-output mean and variance of :math:`b = AW`) are
       our :math:`\mu_y, \sigma_y^2`.

    Examples
    --------
    >>> import torch
    >>> layer = BayesianLinear(3, 2, prior_std=0.5)
    >>> x = torch.randn(4, 3)
    >>> layer(x).shape                      # one stochastic draw per example
    torch.Size([4, 2])
    >>> mean_out = layer(x, sample=False)   # x @ M.T + m
    >>> loss = mean_out.pow(2).mean() + layer.kl_divergence() / 1000
    >>> loss.backward()
    """

    std_transform: Transform = SoftplusTransform()

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        prior_std: float = 1.0,
        bias: bool = True,
        init_log_std: float = -5.0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features")
        self.out_features = check_positive_int(out_features, "out_features")
        self.prior_std = check_positive_real(prior_std, "prior_std")
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be a bool, got {type(bias).__name__} ({bias!r})")
        self.init_log_std = check_finite_real(init_log_std, "init_log_std")

        factory = {"device": device, "dtype": dtype}
        shape = (self.out_features, self.in_features)
        self.weight_mean = nn.Parameter(torch.empty(shape, **factory))
        self.weight_raw_std = nn.Parameter(torch.empty(shape, **factory))
        if bias:
            self.bias_mean = nn.Parameter(torch.empty(self.out_features, **factory))
            self.bias_raw_std = nn.Parameter(torch.empty(self.out_features, **factory))
        else:
            # Registered as None so that attribute access and state_dict keys mirror nn.Linear(bias=False).
            self.register_parameter("bias_mean", None)
            self.register_parameter("bias_raw_std", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise: means as in :class:`torch.nn.Linear`, every std to ``exp(init_log_std)``."""
        # Same mean initialisation as nn.Linear, so that swapping layers does not change the network's
        # starting scale.
        nn.init.kaiming_uniform_(self.weight_mean, a=math.sqrt(5))
        raw = self._initial_raw_std()
        with torch.no_grad():
            self.weight_raw_std.fill_(raw)
            if self.bias_mean is not None:
                bound = 1.0 / math.sqrt(self.in_features)
                nn.init.uniform_(self.bias_mean, -bound, bound)
                self.bias_raw_std.fill_(raw)

    def _initial_raw_std(self) -> float:
        """Raw value whose transformed standard deviation is ``exp(init_log_std)`` in the parameter dtype."""
        dtype = self.weight_raw_std.dtype
        # Computed in float64, then checked in the parameter dtype: in float32 an init_log_std below about
        # -87 gives S == 0 (log S = -inf in the KL) and one above about 88 gives an infinite S.
        std64 = torch.tensor(self.init_log_std, dtype=torch.float64).exp()
        raw = self.std_transform.inv(std64).to(dtype)
        std = self.std_transform(raw)
        if not (torch.isfinite(raw) and torch.isfinite(std) and std > 0):
            raise ValueError(
                f"init_log_std={self.init_log_std} gives an initial standard deviation that is zero or "
                f"infinite in {dtype}"
            )
        return raw.item()

    @property
    def has_bias(self) -> bool:
        """Whether the layer has a bias."""
        return self.bias_mean is not None

    @property
    def weight_std(self) -> torch.Tensor:
        r"""Posterior standard deviations :math:`S`, shape (out_features, in_features)."""
        return self.std_transform(self.weight_raw_std)

    @property
    def bias_std(self) -> torch.Tensor | None:
        r"""Posterior standard deviations :math:`s` of the bias, shape (out_features,), or None."""
        return None if self.bias_raw_std is None else self.std_transform(self.bias_raw_std)

    def forward(self, x: torch.Tensor, sample: bool = True) -> torch.Tensor:
        r"""Pre-activations for a batch of inputs.

        Parameters
        ----------
        x : torch.Tensor of shape (..., in_features)
            Inputs; any leading batch dimensions.
        sample : bool, default True
            ``True``: one local-reparameterised draw :math:`\mu_y + \sigma_y \odot \varepsilon` per example
            and output. ``False``: the posterior-mean network :math:`x M^\top + m`, deterministic.

        Returns
        -------
        torch.Tensor of shape (..., out_features)
        """
        if x.shape[-1:] != (self.in_features,):
            raise ValueError(
                f"x must have shape (..., {self.in_features}) for this layer, got {tuple(x.shape)}"
            )
        mean = F.linear(x, self.weight_mean, self.bias_mean)
        if not sample:
            return mean
        bias_var = None if self.bias_raw_std is None else self.bias_std.square()
        var = F.linear(x.square(), self.weight_std.square(), bias_var)
        # Without a bias an all-zero input row (common after ReLU) has var == 0, where sqrt has an infinite
        # derivative and backward would produce 0 * inf = NaN. clamp_min has zero gradient below the floor,
        # so the NaN never forms, and the floor is far below any variance that matters.
        std = var.clamp_min(torch.finfo(var.dtype).tiny).sqrt()
        return mean + std * torch.randn_like(mean)

    def kl_divergence(self) -> torch.Tensor:
        r"""Closed-form :math:`\mathrm{KL}(q \,\|\, p)` summed over all weights (and the bias).

        .. math::

            \mathrm{KL} = \sum_k \left[ \log\frac{\sigma_p}{S_k}
                + \frac{S_k^2 + M_k^2}{2\sigma_p^2} - \frac{1}{2} \right]

        Returns
        -------
        torch.Tensor of shape ()
            Differentiable with respect to all four parameters; not scaled by the data-set size.
        """
        kl = _gaussian_kl_sum(self.weight_mean, self.weight_std, self.prior_std)
        if self.bias_mean is not None:
            kl = kl + _gaussian_kl_sum(self.bias_mean, self.bias_std, self.prior_std)
        return kl

    def weight_snr(self) -> torch.Tensor:
        r"""Signal-to-noise ratio :math:`|M| / S` of every weight, shape (out_features, in_features).

        A small SNR means the posterior cannot tell the weight from zero; pruning removes the weights with
        the smallest scores. The result stays attached to the autograd graph; call ``.detach()`` to use it
        as a fixed score.
        """
        return self.weight_mean.abs() / self.weight_std

    def mean_parameters(self) -> dict[str, torch.Tensor]:
        r"""Posterior-mean parameters under :class:`torch.nn.Linear` names.

        Returns
        -------
        dict
            ``{"weight": M}`` of shape (out_features, in_features), plus ``"bias": m`` of shape
            (out_features,) when the layer has a bias. Detached views, not copies.

        Notes
        -----
        This is the hook the exporters (:mod:`probsparse.export.deterministic`) call. A subclass whose
        posterior mean is not ``weight_mean`` (e.g. a scale mixture with :math:`E[W] = M \, E[z]`) overrides
        it.
        """
        params = {"weight": self.weight_mean.detach()}
        if self.bias_mean is not None:
            params["bias"] = self.bias_mean.detach()
        return params

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"prior_std={self.prior_std}, bias={self.has_bias}"
        )


def _gaussian_kl_sum(mean: torch.Tensor, std: torch.Tensor, prior_std: float) -> torch.Tensor:
    """Sum of KL(N(mean, std^2) || N(0, prior_std^2)) over all entries."""
    ratio_sq = (std / prior_std).square()
    return 0.5 * (ratio_sq - ratio_sq.log() + (mean / prior_std).square() - 1.0).sum()
