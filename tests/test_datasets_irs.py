"""make_irs_mimo_channel: shapes, the Kronecker identity against the physical model, block support, SNR."""

from __future__ import annotations

import numpy as np
import pytest

from probsparse.datasets import IRSMIMOChannel, make_irs_mimo_channel


def _kron(mats):
    out = mats[0]
    for m in mats[1:]:
        out = np.kron(out, m)
    return out


def test_shapes_and_types_on_defaults():
    p = make_irs_mimo_channel(seed=0)
    assert isinstance(p, IRSMIMOChannel)
    # defaults: 16 IRS elements, 4 MS and 8 BS antennas, 12-point grids, 4 pilots, 8 patterns
    assert [A.shape for A in p.factors] == [(8, 12), (4, 12), (8, 12)]
    assert all(np.iscomplexobj(A) for A in p.factors)
    assert p.y.shape == (8 * 4 * 8,) and np.iscomplexobj(p.y)
    assert p.coef.shape == (12**3,) and p.support.shape == (12**3,)
    assert p.channel_ms_irs.shape == (16, 4) and p.channel_irs_bs.shape == (8, 16)
    assert p.pilots.shape == (4, 4) and p.irs_patterns.shape == (16, 8)
    assert np.allclose(np.abs(p.pilots), 0.5) and np.allclose(np.abs(p.irs_patterns), 0.25)
    assert [g.shape for g in p.grids] == [(12,), (12,), (12,)]
    assert p.noise_var > 0


def test_kronecker_identity_against_dense_kron_and_physical_model():
    p = make_irs_mimo_channel(seed=1)
    H = _kron(p.factors)
    assert np.allclose(p.dictionary, H)
    # the sparse representation reproduces the physical received pilots exactly
    np.testing.assert_allclose(H @ p.coef, p.signal, rtol=0, atol=1e-12 * np.abs(p.signal).max())
    # the physical model, written out: vec(H2 diag(phi_k) H1 X), pattern slowest, then pilot, then BS antenna
    H1, H2, X, Phi = p.channel_ms_irs, p.channel_irs_bs, p.pilots, p.irs_patterns
    direct = np.concatenate([(H2 @ np.diag(Phi[:, k]) @ H1 @ X).reshape(-1, order="F") for k in range(Phi.shape[1])])
    np.testing.assert_allclose(direct, p.signal, rtol=0, atol=1e-12 * np.abs(direct).max())
    np.testing.assert_allclose(p.coef, _kron(p.factor_coefs))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("spread", [1, 3, 4])
def test_block_sparse_support(seed, spread):
    p = make_irs_mimo_channel(seed=seed, angle_spread=spread, grid_size=(10, 12, 14))
    s_irs, s_ms, s_bs = (np.flatnonzero(s) for s in p.factor_supports)
    assert s_ms.size == 1
    # BS: one contiguous run of `spread` grid points
    assert s_bs.size == spread and np.all(np.diff(s_bs) == 1)
    # IRS angle differences: one cyclically contiguous run of `spread` points on the 10-point grid
    assert s_irs.size == spread
    start = s_irs[0] if spread == 10 else [j for j in s_irs if (j - 1) % 10 not in s_irs][0]
    assert set(s_irs) == {(start + t) % 10 for t in range(spread)}
    np.testing.assert_array_equal(p.support, _kron(p.factor_supports).astype(bool))
    np.testing.assert_array_equal(p.support, p.coef != 0)
    assert np.count_nonzero(p.support) == spread * spread


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 25.0])
def test_snr_achieved_within_1_db(snr_db):
    p = make_irs_mimo_channel(n_patterns=32, n_pilots=8, n_bs=16, snr_db=snr_db, seed=3)
    noise = p.y - p.signal
    achieved = 10 * np.log10(np.mean(np.abs(p.signal) ** 2) / np.mean(np.abs(noise) ** 2))
    assert abs(achieved - snr_db) < 1.0
    assert np.isclose(np.mean(np.abs(p.signal) ** 2) / p.noise_var, 10 ** (snr_db / 10))
    assert p.snr_db == snr_db


def test_same_seed_same_problem():
    a, b = make_irs_mimo_channel(seed=7), make_irs_mimo_channel(seed=7)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.coef, b.coef)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"n_irs": 0}, ValueError, "n_irs"),
        ({"n_ms": 2.5}, TypeError, "n_ms"),
        ({"n_bs": True}, TypeError, "n_bs"),
        ({"n_pilots": 0}, ValueError, "n_pilots"),
        ({"n_patterns": -1}, ValueError, "n_patterns"),
        ({"angle_spread": 0}, ValueError, "angle_spread"),
        ({"angle_spread": 5, "grid_size": 4}, ValueError, "angle_spread"),
        ({"angle_spread": 5, "grid_size": (12, 3, 4)}, ValueError, "BS"),
        ({"grid_size": (8, 8)}, ValueError, "grid_size"),
        ({"grid_size": (8, 0, 8)}, ValueError, "grid_size"),
        ({"snr_db": float("nan")}, ValueError, "snr_db"),
        ({"snr_db": "high"}, TypeError, "snr_db"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        make_irs_mimo_channel(**kwargs)
