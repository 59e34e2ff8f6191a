"""Group structure shared by the priors (group_shape) and the WeightPrior interface."""

import re

import numpy as np
import pytest
import torch

from probsparse.priors import Horseshoe, LogUniform, Normal, SpikeAndSlab, WeightPrior, group_shape


@pytest.mark.parametrize(
    "shape, groups, expected",
    [
        ((3, 4), None, (3, 4)),
        ((3, 4), "weight", (3, 4)),
        ((3, 4), "output", (3, 1)),
        ((3, 4), "input", (1, 4)),
        ((8, 3, 5, 5), "channel", (8, 1, 1, 1)),
        ((8, 3, 5, 5), "input", (1, 3, 1, 1)),
        ((8, 3, 5, 5), (2, 3), (1, 1, 5, 5)),
        ((8, 3, 5, 5), (0, 1), (8, 3, 1, 1)),
        ((8, 3, 5, 5), (-1,), (1, 1, 1, 5)),
        ((8, 3, 5, 5), 1, (1, 3, 1, 1)),
        ((6,), "output", (6,)),
        (6, None, (6,)),
        ((np.int64(2), 3), (1,), (1, 3)),
    ],
)
def test_group_shape(shape, groups, expected):
    result = group_shape(shape, groups)
    assert isinstance(result, torch.Size)
    assert result == expected
    # Every weight in a group shares one value: the group variable broadcasts back to the weight shape.
    full = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
    assert torch.broadcast_shapes(result, full) == full


@pytest.mark.parametrize(
    "shape, groups",
    [((3, 4), (2,)), ((3, 4), (-3,)), ((5,), "input"), ((8, 3, 5, 5), (0, 4))],
)
def test_group_dims_outside_the_tensor_raise_naming_the_shape(shape, groups):
    with pytest.raises(ValueError, match="groups=.*" + re.escape(f"shape {tuple(shape)}")):
        group_shape(shape, groups)


@pytest.mark.parametrize(
    "groups, exc",
    [("rows", ValueError), ((), TypeError), ((1.5,), TypeError), ((True,), TypeError), (2.0, TypeError)],
)
def test_bad_group_specification(groups, exc):
    with pytest.raises(exc, match="groups"):
        group_shape((3, 4), groups)


@pytest.mark.parametrize(
    "shape, exc",
    [((0, 3), ValueError), ((-1,), ValueError), ((2.5,), TypeError), ("ab", TypeError), ((True,), TypeError)],
)
def test_bad_shape(shape, exc):
    with pytest.raises(exc, match="shape"):
        group_shape(shape, None)


@pytest.mark.parametrize("prior_cls", [Horseshoe, LogUniform])
def test_priors_validate_groups_when_built(prior_cls):
    with pytest.raises(ValueError, match="groups"):
        prior_cls(groups="neurons")
    with pytest.raises(TypeError, match="groups"):
        prior_cls(groups=[0.5])


def test_prior_with_groups_outside_the_weight_raises_at_sampling():
    prior = Horseshoe(groups=(2,))
    with pytest.raises(ValueError, match=r"shape \(3, 4\)"):
        prior.sample("w", (3, 4))


def test_weight_prior_is_abstract_and_not_type2_by_default():
    with pytest.raises(TypeError):
        WeightPrior()

    class Constant(WeightPrior):
        def sample(self, name, shape, *, dtype=None, device=None):
            return torch.zeros(shape)

        def site_names(self, name):
            return {}

    assert Constant().is_type2 is False
    for prior in (Normal(), Horseshoe(), SpikeAndSlab(), LogUniform()):
        assert isinstance(prior, WeightPrior) and prior.is_type2 is False


@pytest.mark.parametrize("name", ["", None, 3])
def test_site_names_need_a_name(name):
    with pytest.raises(ValueError, match="name"):
        Horseshoe().site_names(name)
