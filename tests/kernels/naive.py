"""Slow, obviously correct NumPy references for the Numba kernels of ``probsparse.kernels``.

Each function mirrors one kernel with whole-array NumPy operations and no branches inside loops, so that the
two implementations share no code. The tests compare kernel and reference on random and corner-case inputs.
"""

from __future__ import annotations

import numpy as np

ACTION_NONE, ACTION_ADD, ACTION_REESTIMATE, ACTION_DELETE = 0, 1, 2, 3


def select_action(
    S_in, Q2_in, alpha, active, addable, n_targets=1, complex_data=False, zero_factor=1e-12, size_penalty=0.0
):
    """Reference for ``select_action``: returns (index, kind, delta, new_alpha, deltas, kinds)."""
    S_in = np.asarray(S_in, dtype=float)
    Q2_in = np.asarray(Q2_in, dtype=float)
    L = float(n_targets)
    c = 1.0 if complex_data else 0.5
    d = S_in.size
    deltas = np.zeros(d)
    kinds = np.zeros(d, dtype=np.int8)
    new_alphas = np.full(d, np.inf)

    with np.errstate(all="ignore"):
        a = np.where(active, alpha, 1.0)
        denom = a - S_in
        valid_active = active & (denom > 0)
        s = np.where(active, a * S_in / denom, S_in)
        q2 = np.where(active, a**2 * Q2_in / denom**2, Q2_in)
        theta = q2 / L - s
        relevant = theta > zero_factor * s
        alpha_star = s**2 / theta

        d_delete = c * (-Q2_in / denom - L * np.log1p(-S_in / a)) + size_penalty
        penalised_delete = (d_delete > 0) if size_penalty > 0 else np.zeros(d, dtype=bool)
        delete = valid_active & (~relevant | penalised_delete)

        reest = valid_active & relevant & ~delete
        dinv = 1.0 / alpha_star - 1.0 / a
        d_reest = c * (Q2_in * dinv / (1.0 + S_in * dinv) - L * np.log1p(S_in * dinv))

        ratio = Q2_in / (L * S_in)
        d_add = c * L * (ratio - 1.0 - np.log(ratio)) - size_penalty
        add = ~active & addable & (S_in > 0) & relevant & (d_add > 0)

    for mask, values, kind in (
        (reest, d_reest, ACTION_REESTIMATE),
        (delete, d_delete, ACTION_DELETE),
        (add, d_add, ACTION_ADD),
    ):
        deltas[mask] = values[mask]
        kinds[mask] = kind
        if kind != ACTION_DELETE:
            new_alphas[mask] = alpha_star[mask]

    if delete.any():
        cand = np.where(delete, deltas, -np.inf)
        i = int(np.argmax(cand))  # first maximum
        return i, ACTION_DELETE, float(deltas[i]), np.inf, deltas, kinds
    cand = np.where(reest | add, deltas, -np.inf)
    if cand.size and np.max(cand) > 0:
        i = int(np.argmax(cand))
        return i, int(kinds[i]), float(deltas[i]), float(new_alphas[i]), deltas, kinds
    return -1, ACTION_NONE, 0.0, np.inf, deltas, kinds


def rank_one_update(S, Q, t, s_coef, q_coef):
    """Reference for ``rank_one_update``: returns new (S, Q, Q2) without touching the inputs."""
    S_new = S + s_coef * np.abs(t) ** 2
    Q_new = Q + np.outer(t, q_coef)
    Q2_new = np.sum(np.abs(Q_new) ** 2, axis=1)
    return S_new, Q_new, Q2_new


# ----------------------------------------------------------------------------------------------------
# Kronecker SBL E-step kernels (probsparse.kernels.kronecker_products)
# ----------------------------------------------------------------------------------------------------


def kron_eig_solve(p_head, p_last, z, noise_var):
    """Reference for ``kron_eig_solve``: returns (d, dz, logdet, quad, dz2, well) with P built by np.kron."""
    P = np.kron(np.asarray(p_head, dtype=float), np.asarray(p_last, dtype=float))
    c = noise_var + P
    d = 1.0 / c
    dz = d * z
    a2 = np.abs(z) ** 2
    return d, dz, float(np.sum(np.log(c))), float(np.sum(d * a2)), float(np.sum(d**2 * a2)), float(np.sum(P * d))


def kron_second_moments(g_head, g_last, q, mean, floor=1e-30):
    """Reference for ``kron_second_moments``: returns (sigma, lam, top); NaN top if any entry is NaN."""
    g = np.kron(np.asarray(g_head, dtype=float), np.asarray(g_last, dtype=float))
    sigma = np.maximum(g - g * g * q, 0.0)
    raw = sigma + np.abs(mean) ** 2
    top = float(np.max(raw)) if raw.size else 0.0
    lam = np.maximum(raw, floor * top) if top > 0 else raw
    return sigma, lam, top


def kron_change_norm(a_head, a_last, b_head, b_last):
    """Reference for ``kron_change_norm``: norms of the explicit Kronecker vectors."""
    a = np.kron(a_head, a_last)
    b = np.kron(b_head, b_last)
    return float(np.linalg.norm(a - b)), float(np.linalg.norm(a))


def factor_rotation(A, g):
    """Reference for ``factor_rotation``: (p, U) of A diag(g) A^H by np.linalg.eigh, clipped p."""
    G = (A * g) @ A.conj().T
    p, U = np.linalg.eigh(0.5 * (G + G.conj().T))
    return np.maximum(p, 0.0), U


def kron_prune_change(old, new, ratios):
    """Reference for ``kron_prune_change``: (keeps, n_kept, diff, norm) with explicit np.kron vectors."""
    keeps = []
    for g, r in zip(new, ratios, strict=True):
        top = np.max(g)
        keeps.append(g > r * top if top > 0 else np.zeros(g.size, dtype=bool))
    masked = [np.where(k, g, 0.0) for g, k in zip(new, keeps, strict=True)]
    a, b = old[0], masked[0]
    for o, m in zip(old[1:], masked[1:], strict=True):
        a, b = np.kron(a, o), np.kron(b, m)
    return keeps, np.array([k.sum() for k in keeps]), float(np.linalg.norm(b - a)), float(np.linalg.norm(a))
