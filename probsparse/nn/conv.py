"""A 2-D convolution with a variational posterior on its filters."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from probsparse._validation import check_positive_int
from probsparse.nn.base import BayesianLayer

__all__ = ["BayesianConv2d"]


class BayesianConv2d(BayesianLayer):
    r"""2-D convolution :math:`y = W \star x + b` with a variational posterior on the filters :math:`W`.

    .. math::

        \mu_y = E[W] \star x + m, \qquad \sigma_y^2 = \mathrm{Var}[W] \star (x \odot x) + s^2, \qquad
        y = \mu_y + \sigma_y \odot \varepsilon,

    the local reparameterisation of Kingma et al. applied per output pixel (exact marginals of each
    output; the correlation between overlapping patches is dropped, as in their paper). Weights have
    torch's shape ``(out_channels, in_channels // groups, kh, kw)``; a prior with ``groups="channel"`` puts one
    group variable per filter.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding, dilation : int or tuple of int
        As in :class:`torch.nn.Conv2d` (numeric padding only).
    groups : int, default=1
        Grouped convolution, as in :class:`torch.nn.Conv2d` (not the prior's group structure).
    prior, bias, bias_prior_scale, init_log_std, parameterisation, device, dtype
        As in :class:`~probsparse.nn.BayesianLinear`.

    Examples
    --------
    >>> import torch
    >>> from probsparse.priors import GroupHorseshoe
    >>> conv = BayesianConv2d(1, 4, 3, padding=1, prior=GroupHorseshoe(groups="channel"))
    >>> conv(torch.randn(2, 1, 8, 8)).shape
    torch.Size([2, 4, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        *,
        prior=None,
        bias: bool = True,
        bias_prior_scale: float = 1.0,
        init_log_std: float = -5.0,
        parameterisation: str = "non-centred",
        device=None,
        dtype=None,
    ) -> None:
        if isinstance(padding, str):
            raise ValueError(f"padding must be an int or a pair of ints, got {padding!r}")
        in_channels = check_positive_int(in_channels, "in_channels")
        out_channels = check_positive_int(out_channels, "out_channels")
        # nn.Conv2d validates the geometry and gives the same initial means as a deterministic layer.
        reference = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, True, device=device, dtype=dtype
        )
        super().__init__(
            reference.weight.shape,
            reference.weight.detach(),
            prior=prior,
            bias=bias,
            init_bias=reference.bias.detach(),
            bias_prior_scale=bias_prior_scale,
            init_log_std=init_log_std,
            parameterisation=parameterisation,
        )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = reference.kernel_size, reference.stride
        self.padding, self.dilation, self.groups = reference.padding, reference.dilation, reference.groups

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, **kwargs) -> BayesianConv2d:
        """A Bayesian convolution whose posterior means start at ``conv``'s filters."""
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"only zero, numeric padding is supported, got {conv.padding_mode!r} / {conv.padding!r}")
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            bias=conv.bias is not None,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
            **kwargs,
        )
        layer._start_at(conv.weight, conv.bias)
        return layer

    def _check_input(self, x):
        if x.dim() not in (3, 4) or x.shape[-3] != self.in_channels:
            raise ValueError(
                f"x must have shape (batch, {self.in_channels}, height, width) for this layer, got {tuple(x.shape)}"
            )

    def _affine(self, x, weight, bias):
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def _batch_shape(self, x):
        return x.shape[:-3]

    def _input_view(self, scale):
        # Weight dim 1 indexes the channels within a convolution group; every group sees the same scales.
        view = scale.squeeze(-4)
        return torch.cat([view] * self.groups, dim=-3) if self.groups > 1 else view

    def _output_view(self, scale):
        return scale.squeeze(-1)

    def _bias_view(self, bias):
        return bias.reshape(-1, 1, 1)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, prior={self.prior!r}, bias={self.has_bias}"
        )
