"""Explicit weight draws from a layer's variational family, the reference for local reparameterisation tests.

Group scales are drawn per example when the layer input requires gradients (see BayesianLayer.forward).
"""

import torch

from probsparse.nn.families import ScaleMixtureFamily


def draws_scales_per_example(family) -> bool:
    """Whether the family draws its scale variables once per example (group scales on inputs or outputs)."""
    return isinstance(family, ScaleMixtureFamily) and bool(family.scale_loc) and family._factored_along is not None


def per_example_weights(family, n_draws: int, gen: torch.Generator) -> torch.Tensor:
    """``n_draws`` weight tensors, each with its own draw of the scale variables and of theta."""
    with torch.no_grad():
        eps = {k: torch.randn((n_draws, *v.shape), generator=gen, dtype=v.dtype) for k, v in family.scale_loc.items()}
        s = family._combine(family._draw_scales(eps), family.theta.mean) / family.unit
        theta = family.theta.mean + family.theta.std * torch.randn(
            (n_draws, *family.shape), generator=gen, dtype=family.theta.mean.dtype
        )
        return s * theta
