r"""Numba kernels for the Kronecker SBL E-step and EM loop (KroSBL).

The E-step of :mod:`probsparse.inference.sbl.kronecker` diagonalises the marginal covariance with the small
eigendecompositions :math:`A_i\Gamma_iA_i^H = U_iP_iU_i^H` and then works on tensors whose entries are
Kronecker products of short vectors: :math:`P = p_1\otimes\cdots\otimes p_I` on the measurement side and
:math:`\gamma = \gamma_1\otimes\cdots\otimes\gamma_I` on the weight side. Every such vector is passed to the
elementwise kernels as a *head* and a *last* factor, :math:`v = v_{head} \otimes v_{last}` with
:math:`v_{head} = v_1\otimes\cdots\otimes v_{I-1}` (flattened, ``np.kron`` order), so that one kernel serves
every number of factors :math:`I \ge 2` and the full Kronecker tensor of :math:`\gamma` is never stored.

* :func:`factor_rotation`: one factor's eigendecomposition and the right multipliers of the E-step's
  Kronecker products;
* :func:`kron_eig_solve`: :math:`d = 1/(\sigma^2 + P)`, :math:`d\circ z` and the four sums the evidence and
  the noise update need, in one pass over the :math:`\bar M` entries;
* :func:`kron_second_moments`: the posterior variances :math:`\gamma(1-\gamma q)` and the second moments
  :math:`\Lambda = \Sigma_{nn} + |\mu_n|^2` (floored for the M-step), in one pass over the :math:`\bar N'`
  entries;
* :func:`kron_estep`: the whole E-step in one call (the kernels above and the mode products);
* :func:`kron_change_norm` and :func:`kron_prune_change`: the pruning rule and the EM stopping rule
  (:math:`\|a - b\|`, :math:`\|a\|` for two Kronecker vectors, neither formed);
* :func:`kron_svd_mstep`: the SVD-KroSBL M-step (sequential rank-one fit of :math:`\Lambda`);
* :func:`kron_svd_em`: the whole SVD-KroSBL EM loop (the kernels above, the noise update and the pruning).

At the sizes of an EM iteration (:math:`\bar N \approx 3000`, :math:`M_i, N_i \approx 10`) one iteration
was some 50 NumPy / SciPy calls whose overhead matched the LAPACK and BLAS work they drive; compiled, the
eigendecompositions (LAPACK) and the mode products (BLAS matrix products, called from Numba; BLAS beats a
hand-written loop for them) are most of what is left. Every kernel takes real (float64) or complex
(complex128) data and is compiled once per dtype (and, for the tuple arguments, per number of factors).

This module imports only NumPy and Numba.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import types as nb_types
from numba.extending import overload

from probsparse.kernels._config import CACHE, FASTMATH

__all__ = [
    "factor_rotation",
    "factor_rotation_unchecked",
    "kron_change_norm",
    "kron_change_norm_unchecked",
    "kron_eig_solve",
    "kron_eig_solve_unchecked",
    "kron_estep",
    "kron_estep_unchecked",
    "kron_prune_change",
    "kron_prune_change_unchecked",
    "kron_second_moments",
    "kron_second_moments_unchecked",
    "kron_svd_em",
    "kron_svd_em_unchecked",
    "kron_svd_mstep",
    "kron_svd_mstep_unchecked",
]

# Second moments are floored at this fraction of their largest entry before the M-step (whose SVD / block
# updates divide by them).
SECOND_MOMENT_FLOOR = 1e-30

# Relative size of an off-diagonal entry below which the symmetric QR iteration splits the tridiagonal matrix.
_EPS = np.finfo(np.float64).eps

# Range of the running product of the E-step's log-determinant before it is renormalised.
_PROD_BOUND = 1e150
_LN2 = math.log(2.0)

# Most implicit QR steps the eigensolver takes per row before it hands the matrix to LAPACK instead.
_QR_STEPS_PER_ROW = 30

# Smallest positive float64: the denominator floor of the EM stopping rule's relative change.
_TINY = np.finfo(np.float64).tiny


# ----------------------------------------------------------------------------------------------------
# Kernel 0: eigenpairs of a small real symmetric matrix.
# Exists because LAPACK's drivers spend most of their time at n ~ 10 in per-column level-2 BLAS calls; the
# E-step needs I eigendecompositions per EM iteration and the SVD M-step I - 1 top eigenvectors.
# Householder tridiagonalisation, then implicit symmetric QR steps with Wilkinson shifts (Golub & Van Loan,
# Matrix Computations, §8.3), written out with the reflections and rotations applied in place: about 40 %
# faster than dsyevd at n = 15.
# ----------------------------------------------------------------------------------------------------
@numba.njit(fastmath=FASTMATH, cache=CACHE)
def _scaled_symmetric(G):  # pragma: no cover - compiled
    """G's lower triangle, mirrored and scaled by a power of two (exact) to a largest entry in [1, 2).

    The scaling keeps the rotations' sqrt(x^2 + z^2) clear of overflow and underflow. Returns
    ``(T, scale, finite)``; ``finite`` is False (and T unset) if G holds an inf or a NaN.
    """
    n = G.shape[0]
    top = 0.0
    finite = True
    for i in range(n):
        for j in range(i + 1):
            a = abs(G[i, j])
            if a > top:
                top = a
            elif a != a:
                finite = False
    T = np.empty((n, n))
    if not (finite and math.isfinite(top)):
        return T, 1.0, False
    scale = 1.0
    if top > 0.0:
        scale = 2.0 ** (-math.floor(math.log2(top)))
    for i in range(n):
        for j in range(i + 1):
            T[i, j] = G[i, j] * scale
            T[j, i] = T[i, j]
    return T, scale, True


@numba.njit(fastmath=FASTMATH, cache=CACHE)
def _householder_tridiagonal(T, V, betas):  # pragma: no cover - compiled
    """Reduce symmetric T in place to Q^T T Q (tridiagonal), Q = H_0 ... H_{n-3}, H_k = I - beta_k v_k v_k^T.

    Row k of ``V`` receives v_k (entries k+1..n-1) and ``betas[k]`` beta_k (0 when step k has nothing to
    zero). Only the diagonal and the first sub/superdiagonal of T are meaningful afterwards.
    """
    n = T.shape[0]
    w = np.empty(n)
    for k in range(n - 2):
        tail2 = 0.0
        for i in range(k + 2, n):
            tail2 += T[i, k] * T[i, k]
        if tail2 == 0.0:
            betas[k] = 0.0
            continue
        x0 = T[k + 1, k]
        nrm = math.sqrt(tail2 + x0 * x0)
        r = -nrm if x0 >= 0.0 else nrm  # x -> r e_1 with r of sign opposite to x0: no cancellation in v
        for i in range(k + 1):
            V[k, i] = 0.0
        V[k, k + 1] = x0 - r
        for i in range(k + 2, n):
            V[k, i] = T[i, k]
        beta = 1.0 / (nrm * (nrm + abs(x0)))  # 2 / (v^T v)
        betas[k] = beta
        # Trailing block <- H T H = T - v w^T - w v^T with w = beta T v - (beta^2 / 2)(v^T T v) v.
        wv = 0.0
        for i in range(k + 1, n):
            acc = 0.0
            for j in range(k + 1, n):
                acc += T[i, j] * V[k, j]
            w[i] = beta * acc
            wv += w[i] * V[k, i]
        half = 0.5 * beta * wv
        for i in range(k + 1, n):
            w[i] -= half * V[k, i]
        for i in range(k + 1, n):
            for j in range(k + 1, n):
                T[i, j] -= V[k, i] * w[j] + w[i] * V[k, j]
        T[k + 1, k] = r
        T[k, k + 1] = r


@numba.njit(fastmath=FASTMATH, cache=CACHE)
def _tridiagonal_qr(d, e, Qt, vectors):  # pragma: no cover - compiled
    """Eigenvalues of the symmetric tridiagonal (d, e) in place into ``d`` (unsorted); False if it stalls.

    ``e[i]`` is entry (i + 1, i). Implicit QR steps with Wilkinson shifts on the unreduced block lo..m at the
    bottom; a negligible ``e[m - 1]`` deflates d[m]. When ``vectors``, every rotation is also applied to the
    rows of ``Qt`` (so that rows of Q^T T Q's eigenvector matrix transposed accumulate there).
    """
    n = d.shape[0]
    m = n - 1
    steps = 0
    while m > 0:
        if abs(e[m - 1]) <= _EPS * (abs(d[m - 1]) + abs(d[m])):
            e[m - 1] = 0.0
            m -= 1
            continue
        steps += 1
        if steps > _QR_STEPS_PER_ROW * n:
            return False
        lo = m - 1
        while lo > 0 and abs(e[lo - 1]) > _EPS * (abs(d[lo - 1]) + abs(d[lo])):
            lo -= 1
        # Wilkinson shift: the eigenvalue of the trailing 2 x 2 block nearer d[m].
        delta = 0.5 * (d[m - 1] - d[m])
        em = e[m - 1]
        mu = d[m] - em * em / (delta + math.copysign(math.sqrt(delta * delta + em * em), delta))
        x = d[lo] - mu
        z = e[lo]
        for k in range(lo, m):
            # Rotation [[c, -s], [s, c]] on rows / columns k, k+1 with s x + c z = 0: it zeroes the bulge z
            # (T[k+1, k-1], or the shifted first column when k = lo) and moves it down one row.
            rr = math.sqrt(x * x + z * z)
            inv = 1.0 / rr
            c = x * inv
            s = -z * inv
            if k > lo:
                e[k - 1] = rr
            dk = d[k]
            dk1 = d[k + 1]
            ek = e[k]
            d[k] = c * c * dk - 2.0 * c * s * ek + s * s * dk1
            d[k + 1] = s * s * dk + 2.0 * c * s * ek + c * c * dk1
            e[k] = c * s * (dk - dk1) + (c * c - s * s) * ek
            if k + 1 < m:
                ek1 = e[k + 1]
                z = -s * ek1  # the new bulge T[k+2, k]
                e[k + 1] = c * ek1
                x = e[k]
            if vectors:
                for j in range(n):
                    a = Qt[k, j]
                    b = Qt[k + 1, j]
                    Qt[k, j] = c * a - s * b
                    Qt[k + 1, j] = s * a + c * b
    return True


@numba.njit(fastmath=FASTMATH, cache=CACHE)
def _sym_eig_kernel(G):  # pragma: no cover - compiled
    """Eigenvalues (ascending) and orthonormal eigenvectors (columns) of a real symmetric matrix.

    Only the lower triangle of G is read. Non-finite input goes to LAPACK (which raises LinAlgError), and so
    does a matrix on which the QR steps stall (never seen).
    """
    n = G.shape[0]
    T, scale, finite = _scaled_symmetric(G)
    if not finite:
        p, U = np.linalg.eigh(G)
        return p, np.ascontiguousarray(U)
    V = np.zeros((n, n))
    betas = np.zeros(n)
    _householder_tridiagonal(T, V, betas)
    # Qt = Q^T = H_{n-3} ... H_0 (each H_k symmetric); its rows are then rotated by the QR steps.
    Qt = np.zeros((n, n))
    for i in range(n):
        Qt[i, i] = 1.0
    w = np.empty(n)
    for k in range(n - 2):
        if betas[k] == 0.0:
            continue
        # Qt <- H_k Qt: H_k touches rows k+1.. only.
        for c in range(n):
            w[c] = 0.0
        for i in range(k + 1, n):
            vi = V[k, i]
            for c in range(n):
                w[c] += vi * Qt[i, c]
        for i in range(k + 1, n):
            bvi = betas[k] * V[k, i]
            for c in range(n):
                Qt[i, c] -= bvi * w[c]
    d = np.empty(n)
    e = np.zeros(n)
    for i in range(n):
        d[i] = T[i, i]
    for i in range(n - 1):
        e[i] = T[i + 1, i]
    if not _tridiagonal_qr(d, e, Qt, True):
        p, U = np.linalg.eigh(G)
        return p, np.ascontiguousarray(U)
    order = np.argsort(d)
    p = np.empty(n)
    U = np.empty((n, n))
    for jj in range(n):
        o = order[jj]
        p[jj] = d[o] / scale
        for i in range(n):
            U[i, jj] = Qt[o, i]
    return p, U


@numba.njit(fastmath=FASTMATH, cache=CACHE)
def _sym_top_eigvec_kernel(G):  # pragma: no cover - compiled
    """Unit eigenvector of the largest eigenvalue of a real symmetric matrix (lower triangle read).

    The SVD M-step needs this one eigenvector only: the eigenvalues by the QR steps without rotating
    eigenvectors, then two steps of inverse iteration on the tridiagonal matrix at the largest one (Gaussian
    elimination with partial pivoting, a vanishing pivot replaced by eps * ||T||; accurate to
    eps * ||T|| / gap, as LAPACK's drivers) and the reflections applied to the result. About 75 % of
    :func:`_sym_eig_kernel`'s time at n = 15 (the QR steps' dependent square roots and divisions dominate).
    """
    n = G.shape[0]
    T, scale, finite = _scaled_symmetric(G)
    if not finite:
        _, U = np.linalg.eigh(G)
        return U[:, n - 1].copy()
    V = np.zeros((n, n))
    betas = np.zeros(n)
    _householder_tridiagonal(T, V, betas)
    a_diag = np.empty(n)
    b_off = np.zeros(n)
    for i in range(n):
        a_diag[i] = T[i, i]
    for i in range(n - 1):
        b_off[i] = T[i + 1, i]
    d = a_diag.copy()
    e = b_off.copy()
    if not _tridiagonal_qr(d, e, T, False):
        _, U = np.linalg.eigh(G)
        return U[:, n - 1].copy()
    lam = d[0]
    tnorm = 0.0
    for i in range(n):
        if d[i] > lam:
            lam = d[i]
        if abs(d[i]) > tnorm:
            tnorm = abs(d[i])
    # LU with partial pivoting of T - lam I: U0, U1, U2 hold U's diagonal and two superdiagonals.
    U0 = np.empty(n)
    U1 = np.zeros(n)
    U2 = np.zeros(n)
    mult = np.zeros(n)
    swap = np.zeros(n, dtype=np.bool_)
    tiny = _EPS * max(tnorm, 1.0)
    p0 = a_diag[0] - lam
    p1 = b_off[0] if n > 1 else 0.0
    p2 = 0.0
    for i in range(n - 1):
        sub = b_off[i]
        nd = a_diag[i + 1] - lam
        nu = b_off[i + 1] if i + 2 < n else 0.0
        if abs(sub) > abs(p0):
            swap[i] = True
            U0[i], U1[i], U2[i] = sub, nd, nu
            f = p0 / sub
            mult[i] = f
            p0, p1, p2 = p1 - f * nd, p2 - f * nu, 0.0
        else:
            piv = p0 if p0 != 0.0 else tiny
            U0[i], U1[i], U2[i] = piv, p1, p2
            f = sub / piv
            mult[i] = f
            p0, p1, p2 = nd - f * p1, nu - f * p2, 0.0
    U0[n - 1] = p0
    for i in range(n):
        if abs(U0[i]) < tiny:
            U0[i] = tiny if U0[i] >= 0.0 else -tiny
    x = np.ones(n)
    for _ in range(2):
        for i in range(n - 1):
            if swap[i]:
                x[i], x[i + 1] = x[i + 1], x[i]
            x[i + 1] -= mult[i] * x[i]
        x[n - 1] /= U0[n - 1]
        if n > 1:
            x[n - 2] = (x[n - 2] - U1[n - 2] * x[n - 1]) / U0[n - 2]
        for i in range(n - 3, -1, -1):
            x[i] = (x[i] - U1[i] * x[i + 1] - U2[i] * x[i + 2]) / U0[i]
        nrm = 0.0
        for i in range(n):
            nrm += x[i] * x[i]
        nrm = math.sqrt(nrm)
        for i in range(n):
            x[i] /= nrm
    # Back to G's basis: x <- H_0 ... H_{n-3} x.
    for k in range(n - 3, -1, -1):
        if betas[k] == 0.0:
            continue
        acc = 0.0
        for i in range(k + 1, n):
            acc += V[k, i] * x[i]
        acc *= betas[k]
        for i in range(k + 1, n):
            x[i] -= acc * V[k, i]
    return x


def _hermitian_eig(G):
    """Eigenvalues (ascending) and eigenvectors of a small Hermitian matrix: the kernel above when real.

    Plain-Python path (Numba's JIT off); compiled code gets the same choice from the overload below.
    """
    if np.iscomplexobj(G):
        return np.linalg.eigh(G)
    return _sym_eig_kernel(G)


@overload(_hermitian_eig, jit_options={"fastmath": FASTMATH, "cache": CACHE})
def _hermitian_eig_overload(G):  # pragma: no cover - compile-time dispatch
    if isinstance(G.dtype, nb_types.Complex):
        return lambda G: np.linalg.eigh(G)
    return lambda G: _sym_eig_kernel(G)


# ----------------------------------------------------------------------------------------------------
# Kernel 1: d = 1/(σ² + P) and the evidence sums, over the measurement-side tensor.
# ----------------------------------------------------------------------------------------------------
@numba.njit(fastmath=FASTMATH, cache=CACHE)
def _eig_solve_kernel(p_head, p_last, z, noise_var, d, dz):  # pragma: no cover - compiled
    n_last = p_last.shape[0]
    # log|C| = sum log c_k is taken as the log of a running product, renormalised (frexp, exact) whenever it
    # leaves [1e-150, 1e150]: one log per call instead of one per entry, which was most of this pass.
    # An entry outside that range itself (never at sane scalings) is logged on its own.
    logdet = 0.0
    prod = 1.0
    expo = 0
    quad = 0.0
    dz2 = 0.0
    well = 0.0
    for i in range(p_head.shape[0]):
        ph = p_head[i]
        for j in range(n_last):
            k = i * n_last + j
            P = ph * p_last[j]
            c = noise_var + P
            dk = 1.0 / c
            zk = z[k]
            a2 = zk.real * zk.real + zk.imag * zk.imag
            d[k] = dk
            dz[k] = dk * zk
            if c < _PROD_BOUND and c > 1.0 / _PROD_BOUND:
                prod *= c
                if prod > _PROD_BOUND or prod < 1.0 / _PROD_BOUND:
                    mant, e = math.frexp(prod)
                    prod = mant
                    expo += e
            else:
                logdet += math.log(c)
            quad += dk * a2
            dz2 += dk * dk * a2
            well += P * dk
    logdet += math.log(prod) + expo * _LN2
    return logdet, quad, dz2, well


# ----------------------------------------------------------------------------------------------------
# Kernel 2: posterior variances and floored second moments, over the weight-side tensor.
# ----------------------------------------------------------------------------------------------------
@numba.njit(fastmath=FASTMATH, cache=CACHE)
def _second_moments_kernel(g_head, g_last, q, mean, lam):  # pragma: no cover - compiled
    n_last = g_last.shape[0]
    top = 0.0
    nan = False
    for i in range(g_head.shape[0]):
        gh = g_head[i]
        for j in range(n_last):
            k = i * n_last + j
            g = gh * g_last[j]
            s = g * (1.0 - g * q[k])
            if s < 0.0:  # γ(1 - γ h^H C^{-1} h) >= 0 in exact arithmetic: negatives are rounding
                s = 0.0
            q[k] = s
            m = mean[k]
            v = s + (m.real * m.real + m.imag * m.imag)
            lam[k] = v
            if v > top:
                top = v
            elif v != v:
                nan = True
    if nan:
        return np.nan
    if top > 0.0:
        floor = SECOND_MOMENT_FLOOR * top
        for k in range(lam.shape[0]):
            if lam[k] < floor:
                lam[k] = floor
    return top


# ----------------------------------------------------------------------------------------------------
# Kernel 3: ||a - b|| and ||a|| for a = a_head ⊗ a_last, b = b_head ⊗ b_last.
# ----------------------------------------------------------------------------------------------------
@numba.njit(fastmath=FASTMATH, cache=CACHE)
def _change_norm_kernel(a_head, a_last, b_head, b_last):  # pragma: no cover - compiled
    diff2 = 0.0
    norm2 = 0.0
    for i in range(a_head.shape[0]):
        ah = a_head[i]
        bh = b_head[i]
        for j in range(a_last.shape[0]):
            a = ah * a_last[j]
            e = a - bh * b_last[j]
            diff2 += e * e
            norm2 += a * a
    return math.sqrt(diff2), math.sqrt(norm2)


# ----------------------------------------------------------------------------------------------------
# Kernel 4: one factor's eigendecomposition and the three right multipliers of the E-step products.
# Exists because these are ten small-matrix operations per factor and EM iteration (M_i, N_i ~ 10), each
# dominated by NumPy's call overhead; compiled, the eigensolver (kernel 0 for real factors, LAPACK for complex
# ones) is the only real cost left.
# ----------------------------------------------------------------------------------------------------
@numba.njit(fastmath=FASTMATH, cache=CACHE)
def _factor_rotation_kernel(A, Ah, g):  # pragma: no cover - compiled
    m, n = A.shape
    if n < m:
        # Rank <= n: the thin SVD of W = A Γ^{1/2} gives the n eigenpairs of W W^H that can be nonzero;
        # the other m - n directions (eigenvalue 0) are left to the caller (see _estep_kernel).
        W = np.empty((m, n), dtype=A.dtype)
        for k in range(n):
            sg = math.sqrt(g[k])
            for i in range(m):
                W[i, k] = A[i, k] * sg
        U_svd, s, _ = np.linalg.svd(W, full_matrices=False)
        U = np.ascontiguousarray(U_svd)
        p = s * s
    else:
        zero = A[0, 0] * 0.0  # 0 of A's dtype
        G = np.empty((m, m), dtype=A.dtype)
        for i in range(m):
            for j in range(i + 1):
                acc = zero
                for k in range(n):
                    acc += A[i, k] * g[k] * np.conj(A[j, k])
                G[i, j] = acc
                G[j, i] = np.conj(acc)
        p, U_eig = _hermitian_eig(G)
        U = np.ascontiguousarray(U_eig)
        for i in range(m):
            if p[i] < 0.0:  # A Γ A^H is PSD: negative eigenvalues are rounding
                p[i] = 0.0
    r = p.shape[0]
    AU = Ah @ U  # (n, r)
    back = np.empty((r, n), dtype=A.dtype)
    sq = np.empty((r, n))
    for i in range(n):
        for j in range(r):
            v = AU[i, j]
            back[j, i] = g[i] * v
            sq[j, i] = v.real * v.real + v.imag * v.imag
    return p, np.conj(U), back, sq


# ----------------------------------------------------------------------------------------------------
# Kernel 5: the whole E-step, composed of kernels 1, 2 and 4 and the mode products (BLAS through Numba).
# Exists because an EM iteration at N̄ ~ 3000 is otherwise some 30 Python-level calls, whose overhead is as
# large as the LAPACK and BLAS work they drive.
# ----------------------------------------------------------------------------------------------------
@numba.njit(fastmath=FASTMATH, cache=CACHE)
def _kron_flat(vectors, count):  # pragma: no cover - compiled
    """``np.kron`` of ``vectors[0], ..., vectors[count - 1]`` (1-D float64; [1.0] when count is 0)."""
    out = np.ones(1)
    for k in range(count):
        v = vectors[k]
        nxt = np.empty(out.shape[0] * v.shape[0])
        for i in range(out.shape[0]):
            for j in range(v.shape[0]):
                nxt[i * v.shape[0] + j] = out[i] * v[j]
        out = nxt
    return out


@numba.njit(fastmath=FASTMATH, cache=CACHE)
def _mode_chain(rights, t):  # pragma: no cover - compiled
    """``(rights[0]^T ⊗ ... ⊗ rights[I-1]^T) t`` for a flat ``t`` in ``np.kron`` order; returns a flat result."""
    n = len(rights)
    t2 = t.reshape((rights[0].shape[0], -1))
    for k in range(n):
        t2 = t2.T @ rights[k]  # contracts the leading axis, appends the new one last
        if k + 1 < n:
            t2 = t2.reshape((rights[k + 1].shape[0], -1))
    return t2.reshape(-1)


@numba.njit(fastmath=FASTMATH, cache=CACHE)
def _mode_chain_trailing(rights, t):  # pragma: no cover - compiled
    """:func:`_mode_chain` contracting the trailing axis first (the new axis goes in front).

    The same product; for the expanding products of the E-step (``rights[i]`` of shape (r_i, N_i),
    r_i <= N_i) it does fewer operations when the later factors expand less, as the small intermediate tensors
    then come first (at M = (8, 12, 15), N_i = 15: 70 000 instead of 113 000 multiply-adds).
    """
    n = len(rights)
    t2 = t.reshape((-1, rights[n - 1].shape[0]))
    for k in range(n - 1, -1, -1):
        R = rights[k]
        t2 = R.T @ t2.T  # (N_k, rest): the new axis first, then the others in order
        if k > 0:
            t2 = t2.reshape((-1, rights[k - 1].shape[0]))
    return t2.reshape(-1)


@numba.njit(fastmath=FASTMATH, cache=CACHE)
def _estep_kernel(factors, factors_h, gammas, y, noise_var):  # pragma: no cover - compiled
    n = len(factors)
    ps = []
    rot = []
    back = []
    sq = []
    for k in range(n):
        p, r, b, q = _factor_rotation_kernel(factors[k], factors_h[k], gammas[k])
        ps.append(p)
        rot.append(r)
        back.append(b)
        sq.append(q)
    z = _mode_chain(rot, y)
    d = np.empty(z.shape[0])
    dz = np.empty_like(z)
    logdet, quad, dz2, well = _eig_solve_kernel(_kron_flat(ps, n - 1), ps[n - 1], z, noise_var, d, dz)
    n_null = y.shape[0] - z.shape[0]
    if n_null > 0:
        # Thin factors: the directions outside ⊗ range(U_i) have P = 0 and d = 1/σ², and carry the part of
        # ||y||^2 that z does not (U_i has orthonormal columns).
        rest = 0.0
        for k in range(y.shape[0]):
            rest += y[k].real * y[k].real + y[k].imag * y[k].imag
        for k in range(z.shape[0]):
            rest -= z[k].real * z[k].real + z[k].imag * z[k].imag
        rest = max(rest, 0.0)
        logdet += n_null * math.log(noise_var)
        quad += rest / noise_var
        dz2 += rest / (noise_var * noise_var)
    mean = _mode_chain_trailing(back, dz)
    q = _mode_chain_trailing(sq, d)
    lam = np.empty(q.shape[0])
    g_head = _kron_flat(gammas, n - 1)
    top = _second_moments_kernel(g_head, gammas[n - 1], q, mean, lam)
    return mean, q, lam, top, g_head, logdet, quad, dz2, well


# ----------------------------------------------------------------------------------------------------
# Kernel 6: the pruning rule and the EM stopping rule after an M-step.
# Exists because it is otherwise five NumPy calls per factor and EM iteration on vectors of ~15 entries.
# ----------------------------------------------------------------------------------------------------
@numba.njit(fastmath=FASTMATH, cache=CACHE)
def _prune_change_kernel(old, new, ratios):  # pragma: no cover - compiled
    n = len(new)
    keeps = []
    masked = []
    n_kept = np.zeros(n, dtype=np.int64)
    for k in range(n):
        g = new[k]
        top = 0.0
        nan = False
        for j in range(g.shape[0]):
            if g[j] > top:
                top = g[j]
            elif g[j] != g[j]:
                nan = True
        keep = np.zeros(g.shape[0], dtype=np.bool_)
        gm = np.zeros(g.shape[0])
        if top > 0.0 and not nan:  # no positive (or a NaN) variance: the whole factor is pruned
            threshold = ratios[k] * top
            for j in range(g.shape[0]):
                if g[j] > threshold:
                    keep[j] = True
                    gm[j] = g[j]
                    n_kept[k] += 1
        keeps.append(keep)
        masked.append(gm)
    diff, norm = _change_norm_kernel(_kron_flat(old, n - 1), old[n - 1], _kron_flat(masked, n - 1), masked[n - 1])
    return keeps, n_kept, diff, norm


# ----------------------------------------------------------------------------------------------------
# Kernel 7: the SVD-KroSBL M-step (sequential rank-one fit of Λ).
# ----------------------------------------------------------------------------------------------------
@numba.njit(fastmath=FASTMATH, cache=CACHE)
def _svd_mstep_kernel(lam, shape):  # pragma: no cover - compiled
    """Factor variances |u_i| from the leading left singular vectors of the successive unfoldings of Λ.

    The leading left singular vector of an unfolding R (l_i x rest) is the top eigenvector of R R^T; u^T R is
    then s v^T, whose next unfolding gives the next factor (and, after the last but one, the last factor).
    """
    n = shape.shape[0]
    out = []
    R = lam.reshape((shape[0], lam.shape[0] // shape[0]))
    for i in range(n - 1):
        u = _sym_top_eigvec_kernel(R @ R.T)
        out.append(np.abs(u))
        rest = np.dot(u, R)
        if i + 1 < n - 1:
            R = rest.reshape((shape[i + 1], rest.shape[0] // shape[i + 1]))
        else:
            out.append(np.abs(rest))
    return out


# ----------------------------------------------------------------------------------------------------
# Kernel 8: the whole SVD-KroSBL EM loop (E-step, M-step, noise update, pruning, stopping rule).
# Exists because, with the E-step compiled, the Python glue of one iteration (the M-step's small NumPy and
# LAPACK calls, the pruning bookkeeping, the dispatch of two kernels) cost about as much as the E-step.
# ----------------------------------------------------------------------------------------------------
@numba.njit(fastmath=FASTMATH, cache=CACHE)
def _columns(A, ix):  # pragma: no cover - compiled
    """``A[:, ix]`` and its conjugate transpose, both C-contiguous."""
    m = A.shape[0]
    S = np.empty((m, ix.shape[0]), dtype=A.dtype)
    Sh = np.empty((ix.shape[0], m), dtype=A.dtype)
    for i in range(m):
        for j in range(ix.shape[0]):
            v = A[i, ix[j]]
            S[i, j] = v
            Sh[j, i] = np.conj(v)
    return S, Sh


@numba.njit(fastmath=FASTMATH, cache=CACHE)
def _svd_em_kernel(
    factors, idx, gammas, y, noise_var, learn_noise, noise_floor, ratios, max_iter, tol
):  # pragma: no cover - compiled
    n = len(factors)
    m_bar = y.shape[0]
    ix = [idx[k].copy() for k in range(n)]
    gam = [gammas[k].copy() for k in range(n)]
    sub = []
    sub_h = []
    for k in range(n):
        S, Sh = _columns(factors[k], ix[k])
        sub.append(S)
        sub_h.append(Sh)
    shape = np.empty(n, dtype=np.int64)
    logdets = np.empty(max_iter)
    quads = np.empty(max_iter)
    n_trace = 0
    sigma2 = noise_var
    converged = False
    empty = False
    n_iter = 0
    mean, q, lam, top, _, logdet, quad, dz2, well = _estep_kernel(sub, sub_h, gam, y, sigma2)
    for it in range(1, max_iter + 1):
        n_iter = it
        if not top > 0.0:  # Λ >= 0: no positive second moment (or a NaN)
            break
        for k in range(n):
            shape[k] = gam[k].shape[0]
        new = _svd_mstep_kernel(lam, shape)
        new_sigma2 = sigma2
        if learn_noise:
            new_sigma2 = max((sigma2 * sigma2 * dz2 + sigma2 * well) / m_bar, noise_floor)
        keeps, n_kept, change, old_norm = _prune_change_kernel(gam, new, ratios)
        rel = change / max(old_norm, _TINY)
        noise_rel = abs(new_sigma2 - sigma2) / sigma2
        for k in range(n):
            if n_kept[k] < new[k].shape[0]:
                ix[k] = ix[k][keeps[k]]
                gam[k] = new[k][keeps[k]]
                if n_kept[k] == 0:
                    empty = True
                else:
                    S, Sh = _columns(factors[k], ix[k])
                    sub[k] = S
                    sub_h[k] = Sh
            else:
                gam[k] = new[k]
        sigma2 = new_sigma2
        if empty:
            break
        mean, q, lam, top, _, logdet, quad, dz2, well = _estep_kernel(sub, sub_h, gam, y, sigma2)
        logdets[n_trace] = logdet
        quads[n_trace] = quad
        n_trace += 1
        if rel <= tol and noise_rel <= tol:
            converged = True
            break
    return ix, gam, sigma2, mean, q, logdets[:n_trace], quads[:n_trace], n_iter, converged, empty


# ----------------------------------------------------------------------------------------------------
# Unchecked entry points (for the EM loop, which builds its arrays itself) and validated wrappers.
# ----------------------------------------------------------------------------------------------------
def kron_eig_solve_unchecked(p_head, p_last, z, noise_var, d, dz):
    """:func:`kron_eig_solve` without any check (arrays of the documented kinds; wrong ones are undefined)."""
    return _eig_solve_kernel(p_head, p_last, z, noise_var, d, dz)


def kron_second_moments_unchecked(g_head, g_last, q, mean, lam):
    """:func:`kron_second_moments` without any check (arrays of the documented kinds)."""
    return _second_moments_kernel(g_head, g_last, q, mean, lam)


def kron_change_norm_unchecked(a_head, a_last, b_head, b_last):
    """:func:`kron_change_norm` without any check (arrays of the documented kinds)."""
    return _change_norm_kernel(a_head, a_last, b_head, b_last)


def factor_rotation_unchecked(A, Ah, g):
    """:func:`factor_rotation` without any check (arrays of the documented kinds)."""
    return _factor_rotation_kernel(A, Ah, g)


def kron_estep_unchecked(factors, factors_h, gammas, y, noise_var):
    """:func:`kron_estep` without any check (tuples of arrays of one layout each, as documented there)."""
    return _estep_kernel(factors, factors_h, gammas, y, noise_var)


def kron_prune_change_unchecked(old, new, ratios):
    """:func:`kron_prune_change` without any check (tuples of C-contiguous float64 vectors)."""
    return _prune_change_kernel(old, new, ratios)


def kron_svd_mstep_unchecked(lam, shape):
    """:func:`kron_svd_mstep` without any check (``lam`` flat C-contiguous float64, ``shape`` int64)."""
    return _svd_mstep_kernel(lam, shape)


def kron_svd_em_unchecked(factors, idx, gammas, y, noise_var, learn_noise, noise_floor, ratios, max_iter, tol):
    """:func:`kron_svd_em` without any check (arrays of the documented kinds)."""
    return _svd_em_kernel(factors, idx, gammas, y, noise_var, learn_noise, noise_floor, ratios, max_iter, tol)


def _check(arr, name: str, size: int | None, kinds: str, *, output: bool = False) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(arr).__name__}")
    allowed = {"f": (np.float64,), "fc": (np.float64, np.complex128)}[kinds]
    if arr.dtype not in allowed:
        raise TypeError(f"{name} must have dtype {' or '.join(str(np.dtype(t)) for t in allowed)}, got {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if size is not None and arr.shape[0] != size:
        raise ValueError(f"{name} must have length {size}, got {arr.shape[0]}")
    if output:
        if not (arr.flags.c_contiguous and arr.flags.writeable):
            raise ValueError(f"{name} is written in place and must be C-contiguous and writeable")
        return arr
    return np.ascontiguousarray(arr)


def kron_eig_solve(p_head, p_last, z, noise_var, d, dz) -> tuple[float, float, float, float]:
    r"""Diagonal solve with :math:`\sigma^2 I + P`, :math:`P = p_{head}\otimes p_{last}`, and the evidence sums.

    Writes :math:`d = 1/(\sigma^2 + P)` and :math:`d \circ z` and returns

    .. math::

        \Big(\sum_k \log(\sigma^2 + P_k),\ \sum_k d_k |z_k|^2,\ \sum_k d_k^2 |z_k|^2,\ \sum_k P_k d_k\Big),

    i.e. :math:`\log|C|`, :math:`y^H C^{-1} y`, :math:`\|y - H\mu\|^2/\sigma^4` and
    :math:`\sum_n (1 - \Sigma_{nn}/\gamma_n)` of the Kronecker E-step when :math:`z = (\otimes U_i)^H y`.

    Parameters
    ----------
    p_head : ndarray of shape (H,), float64
        :math:`p_1 \otimes \cdots \otimes p_{I-1}` (eigenvalues, >= 0).
    p_last : ndarray of shape (L,), float64
        :math:`p_I`.
    z : ndarray of shape (H * L,), float64 or complex128
        Rotated measurements, in ``np.kron`` order.
    noise_var : float
        :math:`\sigma^2 > 0`.
    d : ndarray of shape (H * L,), float64, C-contiguous
        Output :math:`d`.
    dz : ndarray of shape (H * L,), dtype of ``z``, C-contiguous
        Output :math:`d \circ z`.

    Returns
    -------
    logdet, quad, dz2, well : float
    """
    p_head = _check(p_head, "p_head", None, "f")
    p_last = _check(p_last, "p_last", None, "f")
    n = p_head.shape[0] * p_last.shape[0]
    z = _check(z, "z", n, "fc")
    noise_var = float(noise_var)
    if not (math.isfinite(noise_var) and noise_var > 0.0):
        raise ValueError(f"noise_var must be finite and > 0, got {noise_var}")
    _check(d, "d", n, "f", output=True)
    _check(dz, "dz", n, "fc", output=True)
    if dz.dtype != z.dtype:
        raise TypeError(f"dz must have the dtype of z ({z.dtype}), got {dz.dtype}")
    out = _eig_solve_kernel(p_head, p_last, z, noise_var, d, dz)
    return tuple(float(v) for v in out)


def kron_second_moments(g_head, g_last, q, mean, lam) -> float:
    r"""Posterior variances and second moments over a Kronecker support, floored for the M-step.

    With :math:`\gamma = g_{head} \otimes g_{last}` and :math:`q_n = h_n^H C^{-1} h_n`, overwrites ``q`` with
    :math:`\Sigma_{nn} = \max(\gamma_n (1 - \gamma_n q_n), 0)` and writes
    :math:`\Lambda_n = \max(\Sigma_{nn} + |\mu_n|^2,\ 10^{-30} \max_k \Lambda_k)` (the floor only when the
    maximum is positive).

    Parameters
    ----------
    g_head : ndarray of shape (H,), float64
        :math:`\gamma_1 \otimes \cdots \otimes \gamma_{I-1}`.
    g_last : ndarray of shape (L,), float64
        :math:`\gamma_I`.
    q : ndarray of shape (H * L,), float64, C-contiguous
        :math:`h_n^H C^{-1} h_n` on input, :math:`\Sigma_{nn}` on output.
    mean : ndarray of shape (H * L,), float64 or complex128
        Posterior mean :math:`\mu`.
    lam : ndarray of shape (H * L,), float64, C-contiguous
        Output :math:`\Lambda`.

    Returns
    -------
    float
        :math:`\max_n (\Sigma_{nn} + |\mu_n|^2)` before the floor (NaN if any entry is NaN).
    """
    g_head = _check(g_head, "g_head", None, "f")
    g_last = _check(g_last, "g_last", None, "f")
    n = g_head.shape[0] * g_last.shape[0]
    _check(q, "q", n, "f", output=True)
    mean = _check(mean, "mean", n, "fc")
    _check(lam, "lam", n, "f", output=True)
    return float(_second_moments_kernel(g_head, g_last, q, mean, lam))


def kron_change_norm(a_head, a_last, b_head, b_last) -> tuple[float, float]:
    r""":math:`\|a - b\|_2` and :math:`\|a\|_2` for two Kronecker vectors, neither formed.

    :math:`a = a_{head} \otimes a_{last}` and :math:`b = b_{head} \otimes b_{last}` (``np.kron`` order).

    Parameters
    ----------
    a_head, b_head : ndarray of shape (H,), float64
    a_last, b_last : ndarray of shape (L,), float64

    Returns
    -------
    diff, norm : float
    """
    a_head = _check(a_head, "a_head", None, "f")
    a_last = _check(a_last, "a_last", None, "f")
    b_head = _check(b_head, "b_head", a_head.shape[0], "f")
    b_last = _check(b_last, "b_last", a_last.shape[0], "f")
    diff, norm = _change_norm_kernel(a_head, a_last, b_head, b_last)
    return float(diff), float(norm)


def _check_matrix(arr, name: str, kinds: tuple) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(arr).__name__}")
    if arr.dtype not in kinds:
        raise TypeError(f"{name} must have dtype {' or '.join(str(np.dtype(t)) for t in kinds)}, got {arr.dtype}")
    if arr.ndim != 2 or 0 in arr.shape:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {arr.shape}")
    return arr


def factor_rotation(A, Ah, g) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    r"""Eigendecomposition of :math:`A\Gamma A^H` and the right multipliers of the Kronecker E-step products.

    With :math:`A \operatorname{diag}(g) A^H = U \operatorname{diag}(p) U^H`, :math:`U` of shape
    :math:`M \times r`, :math:`r = \min(M, N)`, returns :math:`p`, :math:`\bar U` (for
    :math:`z = (\otimes U_i)^H y`), :math:`(\operatorname{diag}(g) A^H U)^T` (for the posterior mean) and
    :math:`|A^H U|^{2\,T}` (elementwise, for :math:`h_n^H C^{-1} h_n`). For :math:`N \ge M` this is the full
    eigendecomposition (eigenvalues ascending, clipped at 0); for :math:`N < M` (a factor pruned below its
    number of rows) it is the thin SVD of :math:`A\Gamma^{1/2}` (:math:`p = s^2`, descending), which leaves
    out :math:`M - N` directions of eigenvalue 0. Eigenvectors are defined up to a phase per column; the
    three outputs use the same :math:`U`.

    Parameters
    ----------
    A : ndarray of shape (M, N), float64 or complex128
    Ah : ndarray of shape (N, M), dtype of ``A``
        :math:`A^H` (the caller keeps it between calls).
    g : ndarray of shape (N,), float64
        Prior variances, >= 0.

    Returns
    -------
    p : ndarray of shape (r,), float64
    rot : ndarray of shape (M, r), dtype of ``A``
    back : ndarray of shape (r, N), dtype of ``A``
    sq : ndarray of shape (r, N), float64
    """
    A = _check_matrix(A, "A", (np.float64, np.complex128))
    Ah = _check_matrix(Ah, "Ah", (A.dtype.type,))
    if Ah.shape != A.shape[::-1]:
        raise ValueError(f"Ah must have shape {A.shape[::-1]} (the conjugate transpose of A), got {Ah.shape}")
    g = _check(g, "g", A.shape[1], "f")
    if np.any(g < 0):
        raise ValueError("g must be >= 0")
    return _factor_rotation_kernel(A, Ah, g)


def kron_estep(factors, factors_h, gammas, y, noise_var):
    r"""The Kronecker SBL E-step at fixed hyperparameters, in one compiled call.

    For :math:`H = A_1 \otimes \cdots \otimes A_I`, :math:`\gamma = \otimes_i g_i` and
    :math:`C = \sigma^2 I + H \operatorname{diag}(\gamma) H^H`: with
    :math:`A_i \operatorname{diag}(g_i) A_i^H = U_i P_i U_i^H`, :math:`z = (\otimes U_i)^H y` and
    :math:`d = 1/(\sigma^2 + \otimes p_i)`, returns
    :math:`\mu = (\otimes \operatorname{diag}(g_i) A_i^H U_i)(d \circ z)`,
    :math:`\Sigma_{nn} = \max(\gamma_n(1 - \gamma_n h_n^H C^{-1} h_n), 0)` with
    :math:`h_n^H C^{-1} h_n = (\otimes |A_i^H U_i|^2) d`, the second moments of :func:`kron_second_moments`
    and the sums of :func:`kron_eig_solve`. Factors with fewer columns than rows are handled thin (see
    :func:`factor_rotation`): :math:`z` then has :math:`\prod_i \min(M_i, N_i)` entries, and the
    directions left out (where :math:`\otimes p_i = 0`) add :math:`(\bar M - \prod_i \min(M_i, N_i))\log\sigma^2`
    to ``logdet`` and :math:`\|y\|^2 - \|z\|^2` (over :math:`\sigma^2`, :math:`\sigma^4`) to ``quad`` and
    ``dz2``.

    Parameters
    ----------
    factors : tuple of ndarray, the i-th of shape (M_i, N_i), float64 or complex128, C-contiguous
        :math:`I \ge 2` factors, one dtype.
    factors_h : tuple of ndarray, the i-th of shape (N_i, M_i), dtype of ``factors``, C-contiguous
        Their conjugate transposes.
    gammas : tuple of ndarray, the i-th of shape (N_i,), float64, C-contiguous
        Factor prior variances, >= 0.
    y : ndarray of shape (prod M_i,), dtype of ``factors``
        Measurements in ``np.kron`` order.
    noise_var : float
        :math:`\sigma^2 > 0`.

    Returns
    -------
    mean : ndarray of shape (prod N_i,)
    sigma_diag : ndarray of shape (prod N_i,), float64
    second_moment : ndarray of shape (prod N_i,), float64
    top : float
        :math:`\max_n (\Sigma_{nn} + |\mu_n|^2)` before the floor (NaN if any entry is NaN).
    gamma_head : ndarray of shape (prod_{i<I} N_i,), float64
        :math:`g_1 \otimes \cdots \otimes g_{I-1}`.
    logdet, quad, dz2, well : float
        As returned by :func:`kron_eig_solve`.
    """
    for name, seq in (("factors", factors), ("factors_h", factors_h), ("gammas", gammas)):
        if not isinstance(seq, tuple):
            raise TypeError(f"{name} must be a tuple of arrays, got {type(seq).__name__}")
    if len(factors) < 2 or not (len(factors) == len(factors_h) == len(gammas)):
        raise ValueError("factors, factors_h and gammas must hold the same number (>= 2) of arrays")
    dtype = factors[0].dtype if isinstance(factors[0], np.ndarray) else None
    if dtype not in (np.float64, np.complex128):
        raise TypeError("factors must be float64 or complex128 arrays")
    for i, (A, Ah, g) in enumerate(zip(factors, factors_h, gammas, strict=True)):
        _check_matrix(A, f"factors[{i}]", (dtype.type,))
        _check_matrix(Ah, f"factors_h[{i}]", (dtype.type,))
        if Ah.shape != A.shape[::-1]:
            raise ValueError(f"factors_h[{i}] must have shape {A.shape[::-1]}, got {Ah.shape}")
        if not (A.flags.c_contiguous and Ah.flags.c_contiguous):
            raise ValueError(f"factors[{i}] and factors_h[{i}] must be C-contiguous")
        _check(g, f"gammas[{i}]", A.shape[1], "f")
        if not g.flags.c_contiguous or np.any(g < 0):
            raise ValueError(f"gammas[{i}] must be C-contiguous and >= 0")
    m_bar = int(np.prod([A.shape[0] for A in factors]))
    y = _check(y, "y", m_bar, "fc")
    if y.dtype != dtype:
        raise TypeError(f"y must have the dtype of the factors ({dtype}), got {y.dtype}")
    noise_var = float(noise_var)
    if not (math.isfinite(noise_var) and noise_var > 0.0):
        raise ValueError(f"noise_var must be finite and > 0, got {noise_var}")
    return _estep_kernel(factors, factors_h, gammas, y, noise_var)


def kron_prune_change(old, new, ratios) -> tuple[list, np.ndarray, float, float]:
    r"""Pruning masks of new factor variances and the change of the Kronecker vector they make.

    Entry :math:`j` of factor :math:`i` is kept when :math:`g_i[j] > r_i \max_j g_i[j]` and the maximum is
    positive (otherwise, or if ``new[i]`` holds a NaN, the whole factor is pruned). With
    :math:`\tilde g_i` the new vectors with pruned entries set to 0, returns
    :math:`\|\otimes_i \tilde g_i - \otimes_i o_i\|_2` and :math:`\|\otimes_i o_i\|_2`.

    Parameters
    ----------
    old, new : tuple of ndarray, the i-th of shape (N_i,), float64
        Factor variances before and after the M-step, :math:`I \ge 2` of each.
    ratios : ndarray of shape (I,), float64
        Pruning ratios :math:`r_i` in [0, 1).

    Returns
    -------
    keeps : list of ndarray of bool
        The kept entries of each factor.
    n_kept : ndarray of shape (I,), int64
    diff, norm : float
    """
    for name, seq in (("old", old), ("new", new)):
        if not isinstance(seq, tuple):
            raise TypeError(f"{name} must be a tuple of arrays, got {type(seq).__name__}")
    if len(old) < 2 or len(old) != len(new):
        raise ValueError("old and new must hold the same number (>= 2) of vectors")
    old = tuple(_check(o, f"old[{i}]", None, "f") for i, o in enumerate(old))
    new = tuple(_check(g, f"new[{i}]", o.shape[0], "f") for i, (o, g) in enumerate(zip(old, new, strict=True)))
    ratios = _check(ratios, "ratios", len(old), "f")
    if not np.all((ratios >= 0.0) & (ratios < 1.0)):
        raise ValueError(f"ratios must be in [0, 1), got {ratios}")
    keeps, n_kept, diff, norm = _prune_change_kernel(old, new, ratios)
    return list(keeps), n_kept, float(diff), float(norm)


def kron_svd_mstep(lam, shape) -> list:
    r"""The SVD-KroSBL M-step: a sequential rank-one fit of the second-moment tensor.

    With :math:`\Lambda` of shape :math:`(l_1, \ldots, l_I)` (flattened in C order) and
    :math:`R_1 = \Lambda_{(1)}` (:math:`l_1 \times \prod_{k>1} l_k`), factor :math:`i < I` is
    :math:`g_i = |u_i|`, :math:`u_i` the leading left singular vector of :math:`R_i` (the top eigenvector of
    :math:`R_i R_i^T`), and :math:`R_{i+1}` is :math:`u_i^T R_i` reshaped to
    :math:`l_{i+1} \times \prod_{k>i+1} l_k`; the last factor is :math:`|u_{I-1}^T R_{I-1}|`.

    Parameters
    ----------
    lam : ndarray of shape (prod l_i,), float64
        :math:`\Lambda`, C order.
    shape : ndarray of shape (I,), int
        :math:`(l_1, \ldots, l_I)`, :math:`I \ge 2`, every :math:`l_i \ge 1`.

    Returns
    -------
    list of ndarray, the i-th of shape (l_i,), float64
    """
    shape = np.asarray(shape)
    if shape.ndim != 1 or shape.shape[0] < 2 or shape.dtype.kind not in "iu" or np.any(shape < 1):
        raise ValueError(f"shape must be a 1-D integer array of >= 2 positive sizes, got {shape!r}")
    shape = shape.astype(np.int64)
    lam = _check(lam, "lam", int(np.prod(shape)), "f")
    if not np.all(np.isfinite(lam)):
        raise ValueError("lam must be finite")
    return list(_svd_mstep_kernel(lam, shape))


def kron_svd_em(factors, idx, gammas, y, noise_var, learn_noise, noise_floor, ratios, max_iter, tol):
    r"""The SVD-KroSBL EM loop in one compiled call.

    Starting from the factor variances ``gammas`` on the surviving columns ``idx`` of each factor, each
    iteration runs the E-step of :func:`kron_estep` on :math:`(A_i[:, S_i])_i` (its first one before the
    loop), stops if :math:`\max \Lambda` is not positive, fits :math:`g_i` by :func:`kron_svd_mstep`, updates
    :math:`\sigma^2 \leftarrow \max((\sigma^4\,\mathrm{dz2} + \sigma^2\,\mathrm{well})/\bar M,\ \text{floor})`
    when ``learn_noise``, prunes by :func:`kron_prune_change` (a factor left with no entry ends the loop),
    runs the E-step on the new support, records its ``logdet`` and ``quad`` and stops when the relative change
    of :math:`\otimes g_i` and of :math:`\sigma^2` are both at most ``tol``.

    Parameters
    ----------
    factors : tuple of ndarray, the i-th of shape (M_i, N_i), float64 or complex128, C-contiguous
        :math:`I \ge 2` factors, one dtype.
    idx : tuple of ndarray, the i-th of shape (l_i,), int64
        Surviving columns of each factor, :math:`l_i \ge 1`, each in ``range(N_i)`` and increasing.
    gammas : tuple of ndarray, the i-th of shape (l_i,), float64
        Their variances, >= 0.
    y : ndarray of shape (prod M_i,), dtype of ``factors``
        Measurements in ``np.kron`` order.
    noise_var : float
        Starting (or fixed) :math:`\sigma^2 > 0`.
    learn_noise : bool
    noise_floor : float
        Lower bound of a learned :math:`\sigma^2`.
    ratios : ndarray of shape (I,), float64
        Pruning ratios in [0, 1).
    max_iter : int
        Maximum number of EM iterations, >= 1.
    tol : float
        Stopping tolerance, >= 0.

    Returns
    -------
    idx : list of ndarray of int64
        Surviving columns at the end (one factor is empty when ``empty``).
    gammas : list of ndarray of float64
        Their variances.
    noise_var : float
    mean, sigma_diag : ndarray of shape (prod l_i,)
        Posterior mean and variances of the last E-step (on the final support unless ``empty``).
    logdets, quads : ndarray of shape (n_trace,), float64
        ``logdet`` and ``quad`` of the E-step after each completed iteration.
    n_iter : int
    converged, empty : bool
    """
    for name, seq in (("factors", factors), ("idx", idx), ("gammas", gammas)):
        if not isinstance(seq, tuple):
            raise TypeError(f"{name} must be a tuple of arrays, got {type(seq).__name__}")
    if len(factors) < 2 or not (len(factors) == len(idx) == len(gammas)):
        raise ValueError("factors, idx and gammas must hold the same number (>= 2) of arrays")
    dtype = factors[0].dtype if isinstance(factors[0], np.ndarray) else None
    if dtype not in (np.float64, np.complex128):
        raise TypeError("factors must be float64 or complex128 arrays")
    checked_idx, checked_g = [], []
    for i, (A, ix, g) in enumerate(zip(factors, idx, gammas, strict=True)):
        _check_matrix(A, f"factors[{i}]", (dtype.type,))
        if not A.flags.c_contiguous:
            raise ValueError(f"factors[{i}] must be C-contiguous")
        ix = np.asarray(ix)
        if ix.ndim != 1 or ix.dtype.kind not in "iu" or ix.size == 0:
            raise ValueError(f"idx[{i}] must be a non-empty 1-D integer array")
        if np.any(ix < 0) or np.any(ix >= A.shape[1]) or np.any(np.diff(ix) <= 0):
            raise ValueError(f"idx[{i}] must be increasing column indices of factors[{i}]")
        checked_idx.append(np.ascontiguousarray(ix, dtype=np.int64))
        g = _check(g, f"gammas[{i}]", ix.size, "f")
        if not np.all(g >= 0):
            raise ValueError(f"gammas[{i}] must be >= 0")
        checked_g.append(g)
    m_bar = int(np.prod([A.shape[0] for A in factors]))
    y = _check(y, "y", m_bar, "fc")
    if y.dtype != dtype:
        raise TypeError(f"y must have the dtype of the factors ({dtype}), got {y.dtype}")
    noise_var, noise_floor, tol = float(noise_var), float(noise_floor), float(tol)
    if not (math.isfinite(noise_var) and noise_var > 0.0):
        raise ValueError(f"noise_var must be finite and > 0, got {noise_var}")
    if not (math.isfinite(noise_floor) and noise_floor >= 0.0):
        raise ValueError(f"noise_floor must be finite and >= 0, got {noise_floor}")
    if not (math.isfinite(tol) and tol >= 0.0):
        raise ValueError(f"tol must be finite and >= 0, got {tol}")
    ratios = _check(ratios, "ratios", len(factors), "f")
    if not np.all((ratios >= 0.0) & (ratios < 1.0)):
        raise ValueError(f"ratios must be in [0, 1), got {ratios}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    out = _svd_em_kernel(
        factors, tuple(checked_idx), tuple(checked_g), y, noise_var, bool(learn_noise), noise_floor, ratios,
        int(max_iter), tol,
    )  # fmt: skip
    ix, g, s2, mean, var, logdets, quads, n_iter, converged, empty = out
    return list(ix), list(g), float(s2), mean, var, logdets, quads, int(n_iter), bool(converged), bool(empty)
