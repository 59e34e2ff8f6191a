"""The interface every sparsity prior implements, and the group structure they share.

A prior places named Pyro sites for one weight tensor: ``w = prior.sample("w", shape)``. Sites are
non-centred (a unit-scale ``f"{name}_raw"`` times a scale built from latent scale variables), and derived
quantities (effective scale, shrinkage factor) are recorded as deterministic sites, so they appear in
predictive output and in ArviZ data under stable names.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["GROUPS", "WeightPrior", "group_shape"]

# Kinds of site reported by ``WeightPrior.site_names``.
SAMPLE = "sample"
DETERMINISTIC = "deterministic"
PARAM = "param"

# Named group structures: the weight dimensions a group-level variable varies along. For a linear weight
# (out, in) "output" gives one variable per output neuron (a row) and "input" one per input neuron (a column);
# for a conv weight (out, in, kh, kw) "channel" is one per output channel (a filter).
GROUPS = {"weight": None, "output": (0,), "channel": (0,), "input": (1,)}


def _check_shape(shape) -> torch.Size:
    if isinstance(shape, int | np.integer) and not isinstance(shape, bool):
        shape = (int(shape),)
    if not isinstance(shape, Sequence | torch.Size) or not all(
        isinstance(s, int | np.integer) and not isinstance(s, bool) for s in shape
    ):
        raise TypeError(f"shape must be an int or a sequence of ints, got {shape!r}")
    if any(s <= 0 for s in shape):
        raise ValueError(f"shape must have positive sizes, got {tuple(shape)}")
    return torch.Size(int(s) for s in shape)


def _check_name(name) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    return name


def _check_groups(groups) -> str | tuple[int, ...] | None:
    """Validate a group specification without a shape: ``None``, a name of :data:`GROUPS`, or dims."""
    if groups is None or groups == "weight":
        return None
    if isinstance(groups, str):
        if groups not in GROUPS:
            raise ValueError(f"groups must be None, one of {sorted(GROUPS)} or a tuple of dims, got {groups!r}")
        return groups
    if isinstance(groups, int) and not isinstance(groups, bool):
        groups = (groups,)
    if (
        not isinstance(groups, Sequence)
        or not groups
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in groups)
    ):
        raise TypeError(f"groups must be None, a string or a non-empty tuple of ints, got {groups!r}")
    return tuple(groups)


def group_shape(shape, groups) -> torch.Size:
    """Shape of a group-level variable for a weight tensor of shape ``shape``.

    The group variable keeps the sizes of the grouped dimensions and has size 1 elsewhere, so it broadcasts
    against the weights: every weight in a group shares one value.

    Parameters
    ----------
    shape : sequence of int
        Weight shape, e.g. ``(out_features, in_features)``.
    groups : None, str or tuple of int
        ``None`` / ``"weight"``: one variable per weight (the result is ``shape``). ``"output"`` or
        ``"channel"``: one per index of dimension 0. ``"input"``: one per index of dimension 1. A tuple of
        dims: one per combination of indices along those dims.

    Returns
    -------
    torch.Size
        Same length as ``shape``.

    Examples
    --------
    >>> group_shape((3, 4), "input")
    torch.Size([1, 4])
    >>> group_shape((8, 3, 5, 5), "channel")
    torch.Size([8, 1, 1, 1])
    """
    shape = _check_shape(shape)
    groups = _check_groups(groups)
    if groups is None:
        return shape
    dims = GROUPS[groups] if isinstance(groups, str) else groups
    ndim = len(shape)
    if any(not -ndim <= d < ndim for d in dims):
        raise ValueError(
            f"groups={groups!r} refers to dimension(s) {dims} but the weight tensor has shape {tuple(shape)} "
            f"({ndim} dimension(s))"
        )
    dims = {d % ndim for d in dims}
    return torch.Size(s if i in dims else 1 for i, s in enumerate(shape))


class WeightPrior(abc.ABC):
    """Interface shared by the sparsity priors: place named Pyro sites for a weight tensor.

    A prior is used inside a Pyro model as ``w = prior.sample("w", (d,))``. The weight tensor has
    ``shape`` as its event shape (``.to_event(len(shape))``), so any plates the caller opens around the
    call broadcast on the left. Every site's name starts with ``name``, so one prior object can serve several
    weight tensors of one model.

    Subclasses implement :meth:`sample` and :meth:`site_names`, and override :attr:`is_type2` when they
    have free hyperparameters. How a Bayesian layer represents the prior's posterior is chosen by the prior's
    class (:mod:`probsparse.nn.families`), so the same object serves Pyro models and layers.
    """

    @abc.abstractmethod
    def sample(self, name: str, shape, *, dtype=None, device=None) -> torch.Tensor:
        """Place the prior's sites for the weight tensor ``name``; return the weights (shape ``shape``)."""

    @abc.abstractmethod
    def site_names(self, name: str) -> dict[str, str]:
        """Sites :meth:`sample` creates for ``name``, in creation order, mapped to their kind.

        The kind is ``"sample"`` (a latent random variable), ``"deterministic"`` (a derived, recorded
        value) or ``"param"`` (a free hyperparameter, ``pyro.param``).
        """

    @property
    def is_type2(self) -> bool:
        """Whether the prior has free hyperparameters (``pyro.param`` sites) to be fitted by an optimiser."""
        return False
