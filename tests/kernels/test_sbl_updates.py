"""The Tipping–Faul kernels against the plain NumPy references of ``tests/kernels/naive.py``.

``test_nojit.py`` runs this module a second time with ``NUMBA_DISABLE_JIT=1``.
"""

from __future__ import annotations

import numpy as np
import pytest

from probsparse.kernels import (
    ACTION_ADD,
    ACTION_DELETE,
    ACTION_NONE,
    ACTION_REESTIMATE,
    rank_one_update,
    select_action,
)
from probsparse.kernels.sbl_updates import ZERO_FACTOR
from tests.kernels import naive


def random_state(d, seed, frac_active=0.3, n_targets=1):
    """Consistent-looking factors: S_in < alpha on active bases, a mix of relevant and irrelevant ones."""
    rng = np.random.default_rng(seed)
    active = rng.uniform(size=d) < frac_active
    S = rng.uniform(0.2, 5.0, d)
    alpha = np.full(d, np.inf)
    alpha[active] = S[active] * rng.uniform(1.05, 20.0, active.sum())
    Q2 = n_targets * S * rng.exponential(1.5, d) ** 2  # about half of the bases have theta > 0
    addable = rng.uniform(size=d) < 0.9
    return S, Q2, alpha, active, addable


def assert_same_choice(S, Q2, alpha, active, addable, **kw):
    got = select_action(S, Q2, alpha, active, addable, **kw)
    ref = naive.select_action(S, Q2, alpha, active, addable, **kw)
    r_index, r_kind, r_delta, r_alpha, r_deltas, r_kinds = ref
    np.testing.assert_array_equal(got.kinds, r_kinds)
    np.testing.assert_allclose(got.deltas, r_deltas, rtol=1e-11, atol=1e-13)
    assert (got.index, got.kind) == (r_index, r_kind)
    assert got.delta == pytest.approx(r_delta, rel=1e-11, abs=1e-13)
    if np.isinf(r_alpha):
        assert np.isinf(got.new_alpha)
    else:
        assert got.new_alpha == pytest.approx(r_alpha, rel=1e-11)
    return got


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("n_targets", [1, 4])
@pytest.mark.parametrize("complex_data", [False, True])
def test_select_action_matches_naive_on_random_states(seed, n_targets, complex_data):
    state = random_state(200, seed, n_targets=n_targets)
    assert_same_choice(*state, n_targets=n_targets, complex_data=complex_data)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("size_penalty", [0.3, 2.0, 50.0])
@pytest.mark.parametrize("complex_data", [False, True])
def test_select_action_with_a_size_penalty_matches_naive(seed, size_penalty, complex_data):
    state = random_state(200, seed, n_targets=2)
    got = assert_same_choice(*state, n_targets=2, complex_data=complex_data, size_penalty=size_penalty)
    S, Q2, alpha, active, addable = state
    # No addition is worth less than the penalty it pays.
    assert np.all(got.deltas[got.kinds == ACTION_ADD] > 0)


def test_size_penalty_deletes_relevant_bases_that_earn_less_than_it():
    S = np.array([1.0, 1.0])
    alpha = np.array([2.0, 2.0])
    active = np.array([True, True])
    Q2 = np.array([8.0, 80.0])  # both relevant (theta > 0); the first contributes little evidence
    plain = select_action(S, Q2, alpha, active, active.copy())
    assert plain.kind == ACTION_REESTIMATE
    penalised = select_action(S, Q2, alpha, active, active.copy(), size_penalty=5.0)
    assert (penalised.index, penalised.kind) == (0, ACTION_DELETE)
    assert penalised.delta == pytest.approx(0.5 * (-8.0 / 1.0 - np.log1p(-0.5)) + 5.0)


def test_select_action_without_deletions_takes_the_largest_gain():
    S, Q2, alpha, active, addable = random_state(300, 1)
    # Make every active basis relevant so that no deletion takes priority.
    Q2[active] = 50.0 * alpha[active] ** 2
    got = assert_same_choice(S, Q2, alpha, active, addable)
    assert got.kind in (ACTION_ADD, ACTION_REESTIMATE)
    assert got.delta == got.deltas.max() > 0


def test_deletion_has_priority_over_larger_gains():
    S, Q2, alpha, active, addable = random_state(300, 2)
    got = assert_same_choice(S, Q2, alpha, active, addable)
    assert (got.kinds == ACTION_DELETE).any()
    assert got.kind == ACTION_DELETE
    assert got.deltas.max() > got.delta  # some add / re-estimate gains more, but deletion goes first
    assert got.delta == got.deltas[got.kinds == ACTION_DELETE].max()


def test_all_inactive():
    S, Q2, alpha, _, _ = random_state(100, 3)
    active = np.zeros(100, dtype=bool)
    alpha[:] = np.inf
    got = assert_same_choice(S, Q2, alpha, active, np.ones(100, dtype=bool))
    assert got.kind == ACTION_ADD
    assert set(np.unique(got.kinds)) <= {ACTION_NONE, ACTION_ADD}


def test_all_active():
    S, Q2, alpha, _, _ = random_state(100, 4)
    active = np.ones(100, dtype=bool)
    alpha = S * np.random.default_rng(0).uniform(1.5, 10.0, 100)
    got = assert_same_choice(S, Q2, alpha, active, np.zeros(100, dtype=bool))
    assert ACTION_ADD not in got.kinds and ACTION_NONE not in got.kinds


def test_theta_non_positive_everywhere():
    S, _, alpha, active, addable = random_state(150, 5)
    Q2 = np.zeros(150)  # theta = -s < 0 for every basis
    got = assert_same_choice(S, Q2, alpha, active, addable)
    assert np.all(got.kinds[active] == ACTION_DELETE) and np.all(got.kinds[~active] == ACTION_NONE)
    assert got.kind == ACTION_DELETE
    got = assert_same_choice(S, Q2, np.full(150, np.inf), np.zeros(150, dtype=bool), addable)
    assert (got.index, got.kind, got.delta) == (-1, ACTION_NONE, 0.0)


def test_theta_below_the_zero_factor_counts_as_zero():
    S = np.array([1.0, 1.0])
    Q2 = np.array([1.0 + 0.5 * ZERO_FACTOR, 1.0 + 10 * ZERO_FACTOR])  # theta = Q2 - S
    got = assert_same_choice(S, Q2, np.full(2, np.inf), np.zeros(2, dtype=bool), np.ones(2, dtype=bool))
    assert got.kinds[0] == ACTION_NONE and got.kinds[1] == ACTION_ADD


@pytest.mark.parametrize("kind", ["add", "reestimate", "delete"])
def test_ties_go_to_the_lowest_index(kind):
    d = 12
    S = np.full(d, 2.0)
    Q2 = np.full(d, 9.0) if kind != "delete" else np.full(d, 0.5)
    active = np.zeros(d, dtype=bool) if kind == "add" else np.ones(d, dtype=bool)
    alpha = np.where(active, 3.0, np.inf)
    addable = np.ones(d, dtype=bool)
    addable[:3] = False  # the first tied bases are not addable
    got = assert_same_choice(S, Q2, alpha, active, addable)
    assert got.index == (3 if kind == "add" else 0)


def test_unaddable_and_degenerate_bases_are_skipped():
    S = np.array([1.0, 0.0, 1.0, 2.0])
    Q2 = np.array([5.0, 0.0, 50.0, 9.0])
    active = np.array([False, False, False, True])
    alpha = np.array([np.inf, np.inf, np.inf, 1.5])  # basis 3 has S_in > alpha: inconsistent, skipped
    addable = np.array([True, True, False, True])
    got = assert_same_choice(S, Q2, alpha, active, addable)
    assert got.index == 0 and list(got.kinds) == [ACTION_ADD, ACTION_NONE, ACTION_NONE, ACTION_NONE]


def test_reused_output_buffers():
    S, Q2, alpha, active, addable = random_state(50, 6)
    deltas = np.full(50, np.nan)
    kinds = np.full(50, 7, dtype=np.int8)
    got = select_action(S, Q2, alpha, active, addable, deltas=deltas, kinds=kinds)
    assert got.deltas is deltas and got.kinds is kinds
    np.testing.assert_allclose(deltas, naive.select_action(S, Q2, alpha, active, addable)[4], rtol=1e-11)


def test_non_contiguous_inputs_are_accepted():
    S, Q2, alpha, active, addable = random_state(80, 7)
    two = [np.repeat(a, 2)[::2] for a in (S, Q2, alpha, active, addable)]
    assert not two[0].flags.c_contiguous
    got = select_action(*two)
    assert got.index == naive.select_action(S, Q2, alpha, active, addable)[0]


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(S_in=np.ones(5, dtype=np.float32)), TypeError),
        (dict(S_in=[1.0] * 5), TypeError),
        (dict(Q2_in=np.ones(4)), ValueError),
        (dict(active=np.ones(5)), TypeError),
        (dict(alpha=np.ones((5, 1))), ValueError),
        (dict(n_targets=0), ValueError),
        (dict(zero_factor=-1.0), ValueError),
        (dict(deltas=np.ones(10)[::2]), ValueError),
        (dict(kinds=np.ones(5)), TypeError),
    ],
)
def test_select_action_validates_its_inputs(kwargs, error):
    args = dict(
        S_in=np.ones(5),
        Q2_in=np.ones(5),
        alpha=np.full(5, np.inf),
        active=np.zeros(5, dtype=bool),
        addable=np.ones(5, dtype=bool),
    )
    args.update(kwargs)
    with pytest.raises(error):
        select_action(**args)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("L", [1, 3])
def test_rank_one_update_matches_naive(dtype, L):
    rng = np.random.default_rng(L)
    d = 64

    def draw(*shape):
        x = rng.standard_normal(shape)
        return (x + 1j * rng.standard_normal(shape)).astype(dtype) if dtype is np.complex128 else x

    S = rng.uniform(1, 2, d)
    Q = np.ascontiguousarray(draw(d, L))
    t = draw(d)
    q_coef = draw(L)
    ref_S, ref_Q, ref_Q2 = naive.rank_one_update(S, Q, t, -0.37, q_coef)
    Q2 = np.empty(d)
    rank_one_update(S, Q, Q2, t, -0.37, q_coef)
    np.testing.assert_allclose(S, ref_S, rtol=1e-13)
    np.testing.assert_allclose(Q, ref_Q, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(Q2, ref_Q2, rtol=1e-12)


def test_rank_one_update_validates_its_inputs():
    S, Q2, t = np.ones(4), np.ones(4), np.ones(4)
    Q = np.ones((4, 2))
    with pytest.raises(TypeError):
        rank_one_update(S, Q.astype(np.float32), Q2, t, 1.0, np.ones(2))
    with pytest.raises(ValueError):
        rank_one_update(S, np.asfortranarray(np.ones((4, 2))), Q2, t, 1.0, np.ones(2))
    with pytest.raises(TypeError):
        rank_one_update(S, Q, Q2, t + 0j, 1.0, np.ones(2))
    with pytest.raises(ValueError):
        rank_one_update(S, Q, Q2, t, 1.0, np.ones(3))
    with pytest.raises(ValueError):
        rank_one_update(S[::1][:3], Q, Q2, t, 1.0, np.ones(2))
    with pytest.raises(ValueError):
        rank_one_update(S, Q, Q2, t, np.nan, np.ones(2))
    frozen = np.ones(4)
    frozen.flags.writeable = False
    with pytest.raises(ValueError):
        rank_one_update(frozen, Q, Q2, t, 1.0, np.ones(2))
