r"""Numba kernels for a sparse linear layer: a CSR weight matrix times a dense float32 batch.

For a weight matrix :math:`W \in \mathbb{R}^{N \times K}` stored in compressed sparse row (CSR) form, a bias
:math:`b \in \mathbb{R}^N` and a batch of inputs :math:`X \in \mathbb{R}^{B \times K}` (one row per sample,
the layout of ``torch.nn.Linear``), the kernels compute

.. math::

    Y = X W^\top + \mathbf{1} b^\top, \qquad
    Y_{si} = b_i + \sum_{p = \mathrm{indptr}_i}^{\mathrm{indptr}_{i+1} - 1}
    \mathrm{data}_p \, X_{s, \mathrm{indices}_p},

in float32, with ``Y`` of shape (B, N).

Layout (chosen by measurement, see ``benchmarks/bench_export.py``):

* **one sample** (B = 1): a row-by-row gather, :math:`y_i = b_i + \sum_p \mathrm{data}_p x_{\mathrm{indices}_p}`.
* **several samples**: the batch is cut into chunks of at most :func:`batch_chunk` samples. Each chunk is
  transposed into a scratch :math:`X_c^\top` (K, chunk) so that the samples are contiguous, then every row
  computes :math:`Y_c^\top[i, :] = b_i + \sum_p \mathrm{data}_p X_c^\top[\mathrm{indices}_p, :]` with the
  innermost loop running over the samples (it vectorises), four non-zeros at a time so that the partial row of
  :math:`Y_c^\top` is read and written once per four non-zeros; the chunk of :math:`Y_c^\top` is transposed
  back into ``Y``. The chunk keeps :math:`X_c^\top` and :math:`Y_c^\top` in the L2 cache.

Alternatives measured on the 784 -> 300 layer at 5 % density, batch 256, one thread (AMD EPYC, Zen 4): a
per-sample gather loop was more than 15x slower than this layout; transposing with NumPy outside the kernel
instead of the eight-rows-at-a-time copies inside it, ~1.7x slower; one non-zero per pass over the partial row
instead of four, ~1.25x slower.

Within a row the non-zeros are summed in groups of four, :math:`((v_0 x_0 + v_1 x_1) + (v_2 x_2 + v_3 x_3))`,
the groups in CSR order, in both kernels. The kernels are compiled with the flags of
:data:`probsparse.kernels._config.FASTMATH` minus ``reassoc``: with re-association allowed, LLVM turns the
single-sample row sum into AVX-512 gathers, which are slower than scalar loads on the CPUs measured (AMD Zen 4)
and make the summation order depend on the vector width. Without it the order above is the order computed.

Duplicate column indices within a row are summed (as in :mod:`scipy.sparse`); column indices need not be sorted.
Non-finite inputs propagate only to the outputs whose rows hold a stored entry in that column (a dense matmul
would spread a NaN input to every output through the zero weights).

The multi-threaded variant (``parallel=True``) splits the batch chunks across Numba's threads. It is opt-in:
the default is single-threaded (on a shared, oversubscribed 2-core machine two threads were measured ~20x
slower than one, each thread waiting for the other to be scheduled), and the parallel kernel is not cached on
disk (Numba's cache and ``parallel=True`` do not mix reliably, see :mod:`probsparse.kernels._config`).

This module imports only NumPy and Numba.
"""

from __future__ import annotations

import numba
import numpy as np

from probsparse.kernels._config import CACHE, FASTMATH

__all__ = ["batch_chunk", "check_csr", "csr_linear", "csr_linear_unchecked"]

# Derived from the package-wide set, minus re-association (see the module docstring for why).
_FASTMATH_ORDERED: set[str] = set(FASTMATH) - {"reassoc"}

#: Largest number of samples handled per chunk by the batch kernel (measured on a 784 -> 300 layer at 5 % and
#: 25 % density, batches of 256 and 1000: 128 was the fastest of 64, 88, 128, 168 and 256, by 2-10 %).
MAX_BATCH_CHUNK = 128
#: Bytes of scratch (transposed inputs and outputs of one chunk) that the chunk is sized to fit (about an L2).
_CHUNK_BYTES = 1 << 20

_INT32_MAX = np.iinfo(np.int32).max


def batch_chunk(n_in: int, n_out: int) -> int:
    """Samples per chunk of the batch kernel: scratch ``4 * chunk * (n_in + n_out)`` bytes within about 1 MiB.

    Parameters
    ----------
    n_in, n_out : int
        Number of columns (input features) and rows (output features) of the weight matrix.

    Returns
    -------
    int
        A multiple of 8 between 8 and ``MAX_BATCH_CHUNK``.

    Examples
    --------
    >>> batch_chunk(784, 300)
    128
    >>> batch_chunk(100_000, 10)
    8
    """
    fit = _CHUNK_BYTES // (4 * max(1, n_in + n_out))
    return int(min(MAX_BATCH_CHUNK, max(8, fit - fit % 8)))


# ----------------------------------------------------------------------------------------------------
# One sample: y_i = b_i + sum_p data_p x[indices_p].
# ----------------------------------------------------------------------------------------------------
@numba.njit(fastmath=_FASTMATH_ORDERED, cache=CACHE)
def _csr_matvec(indptr, indices, data, bias, X, out):  # pragma: no cover - compiled; run by the no-JIT tests
    x = X[0]
    y = out[0]
    n_rows = indptr.shape[0] - 1
    for i in range(n_rows):
        acc = bias[i]
        p = indptr[i]
        end = indptr[i + 1]
        while p + 4 <= end:
            # Indices are validated non-negative; unsigned indexing skips Numba's negative-index wraparound.
            acc += (data[p] * x[np.uintp(indices[p])] + data[p + 1] * x[np.uintp(indices[p + 1])]) + (
                data[p + 2] * x[np.uintp(indices[p + 2])] + data[p + 3] * x[np.uintp(indices[p + 3])]
            )
            p += 4
        while p < end:
            acc += data[p] * x[np.uintp(indices[p])]
            p += 1
        y[i] = acc


# ----------------------------------------------------------------------------------------------------
# Several samples: transpose a chunk, accumulate rows of Y^T with the batch innermost, transpose back.
# ----------------------------------------------------------------------------------------------------
@numba.njit(fastmath=_FASTMATH_ORDERED, cache=CACHE)
def _load_chunk(X, start, count, xt):  # pragma: no cover - compiled; run by the no-JIT tests
    # xt[k, j] = X[start + j, k]. Eight input rows at a time: contiguous reads, contiguous 8-wide writes
    # (a plain double loop compiles to gathers or scatters, which are slower).
    n_in = X.shape[1]
    j = 0
    while j + 8 <= count:
        r0 = X[start + j]
        r1 = X[start + j + 1]
        r2 = X[start + j + 2]
        r3 = X[start + j + 3]
        r4 = X[start + j + 4]
        r5 = X[start + j + 5]
        r6 = X[start + j + 6]
        r7 = X[start + j + 7]
        for k in range(n_in):
            c = xt[k]
            c[j] = r0[k]
            c[j + 1] = r1[k]
            c[j + 2] = r2[k]
            c[j + 3] = r3[k]
            c[j + 4] = r4[k]
            c[j + 5] = r5[k]
            c[j + 6] = r6[k]
            c[j + 7] = r7[k]
        j += 8
    while j < count:
        r = X[start + j]
        for k in range(n_in):
            xt[k, j] = r[k]
        j += 1


@numba.njit(fastmath=_FASTMATH_ORDERED, cache=CACHE)
def _store_chunk(yt, count, out, start):  # pragma: no cover - compiled; run by the no-JIT tests
    # out[start + j, i] = yt[i, j], eight output rows at a time (same reason as _load_chunk).
    n_out = out.shape[1]
    j = 0
    while j + 8 <= count:
        o0 = out[start + j]
        o1 = out[start + j + 1]
        o2 = out[start + j + 2]
        o3 = out[start + j + 3]
        o4 = out[start + j + 4]
        o5 = out[start + j + 5]
        o6 = out[start + j + 6]
        o7 = out[start + j + 7]
        for i in range(n_out):
            c = yt[i]
            o0[i] = c[j]
            o1[i] = c[j + 1]
            o2[i] = c[j + 2]
            o3[i] = c[j + 3]
            o4[i] = c[j + 4]
            o5[i] = c[j + 5]
            o6[i] = c[j + 6]
            o7[i] = c[j + 7]
        j += 8
    while j < count:
        o = out[start + j]
        for i in range(n_out):
            o[i] = yt[i, j]
        j += 1


@numba.njit(fastmath=_FASTMATH_ORDERED, cache=CACHE)
def _rows_transposed(indptr, indices, data, bias, xt, yt, count):  # pragma: no cover - compiled
    # yt[i, :count] = bias[i] + sum_p data[p] * xt[indices[p], :count]. Four non-zeros per pass over the
    # partial row: the row is loaded and stored once per four FMAs instead of once per FMA.
    n_rows = indptr.shape[0] - 1
    for i in range(n_rows):
        y = yt[i]
        b = bias[i]
        for j in range(count):
            y[j] = b
        p = indptr[i]
        end = indptr[i + 1]
        while p + 4 <= end:
            v0 = data[p]
            v1 = data[p + 1]
            v2 = data[p + 2]
            v3 = data[p + 3]
            x0 = xt[np.uintp(indices[p])]
            x1 = xt[np.uintp(indices[p + 1])]
            x2 = xt[np.uintp(indices[p + 2])]
            x3 = xt[np.uintp(indices[p + 3])]
            for j in range(count):
                y[j] += (v0 * x0[j] + v1 * x1[j]) + (v2 * x2[j] + v3 * x3[j])
            p += 4
        while p < end:
            v = data[p]
            x = xt[np.uintp(indices[p])]
            for j in range(count):
                y[j] += v * x[j]
            p += 1


@numba.njit(cache=CACHE)
def _chunk_width(n_samples, chunk):  # pragma: no cover - compiled; run by the no-JIT tests
    # Equal chunks of at most about `chunk` samples (a multiple of 8): 256 samples with chunk 240 become two
    # chunks of 128, not 240 + 16 (a small last chunk pays the per-non-zero overhead for few samples).
    n_chunks = (n_samples + chunk - 1) // chunk
    width = (n_samples + n_chunks - 1) // n_chunks
    return min(n_samples, (width + 7) // 8 * 8)


@numba.njit(fastmath=_FASTMATH_ORDERED, cache=CACHE)
def _csr_matmat(indptr, indices, data, bias, X, out, chunk):  # pragma: no cover - compiled
    n_samples, n_in = X.shape
    if n_samples == 0:
        return
    n_rows = indptr.shape[0] - 1
    width = _chunk_width(n_samples, chunk)
    xt = np.empty((n_in, width), dtype=np.float32)
    yt = np.empty((n_rows, width), dtype=np.float32)
    for start in range(0, n_samples, width):
        count = min(width, n_samples - start)
        _load_chunk(X, start, count, xt)
        _rows_transposed(indptr, indices, data, bias, xt, yt, count)
        _store_chunk(yt, count, out, start)


# No cache: parallel kernels are compiled per process (see _config).
@numba.njit(fastmath=_FASTMATH_ORDERED, parallel=True)
def _csr_matmat_parallel(indptr, indices, data, bias, X, out, chunk):  # pragma: no cover - compiled
    n_samples, n_in = X.shape
    if n_samples == 0:
        return
    n_rows = indptr.shape[0] - 1
    width = _chunk_width(n_samples, chunk)
    n_chunks = (n_samples + width - 1) // width
    for c in numba.prange(n_chunks):
        start = c * width
        count = min(width, n_samples - start)
        xt = np.empty((n_in, width), dtype=np.float32)
        yt = np.empty((n_rows, width), dtype=np.float32)
        _load_chunk(X, start, count, xt)
        _rows_transposed(indptr, indices, data, bias, xt, yt, count)
        _store_chunk(yt, count, out, start)


def csr_linear_unchecked(indptr, indices, data, bias, X, out, chunk, parallel=False):
    """Run the kernel without any check: ``out[:] = X @ W.T + bias`` for the CSR matrix ``W``.

    For callers that validated the CSR arrays once (:func:`check_csr`) and pass arrays of the exact kinds
    :func:`csr_linear` documents (``out`` of shape (B, N), C-contiguous float32; ``chunk`` from
    :func:`batch_chunk`). Wrong input here is undefined behaviour (out-of-bounds reads), not an error.
    """
    if parallel:
        _csr_matmat_parallel(indptr, indices, data, bias, X, out, chunk)
    elif X.shape[0] == 1:
        _csr_matvec(indptr, indices, data, bias, X, out)
    else:
        _csr_matmat(indptr, indices, data, bias, X, out, chunk)


def _check_1d(arr, name: str, dtype) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(arr).__name__}")
    if arr.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {arr.dtype} (convert it explicitly)")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    return arr


def check_csr(indptr, indices, data, n_cols: int) -> tuple[int, int]:
    r"""Validate CSR arrays of an ``n_rows x n_cols`` float32 matrix; return ``(n_rows, nnz)``.

    .. math::

        \mathrm{indptr}_0 = 0 \le \mathrm{indptr}_1 \le \dots \le \mathrm{indptr}_{n_{rows}} = \mathrm{nnz},
        \qquad 0 \le \mathrm{indices}_p < n_{cols}.

    Parameters
    ----------
    indptr : ndarray of shape (n_rows + 1,), int32
        Row pointers.
    indices : ndarray of shape (nnz,), int32
        Column index of each stored entry.
    data : ndarray of shape (nnz,), float32
        Stored values; must be finite.
    n_cols : int
        Number of columns, ``>= 1``.

    Returns
    -------
    n_rows, nnz : int

    Raises
    ------
    TypeError
        For a wrong array type or dtype.
    ValueError
        Naming the array and what was expected, for wrong shapes, non-monotone row pointers, column indices
        out of range or non-finite values.

    Examples
    --------
    >>> import numpy as np
    >>> check_csr(np.array([0, 1, 1], np.int32), np.array([2], np.int32), np.array([0.5], np.float32), 3)
    (2, 1)
    """
    if isinstance(n_cols, bool) or not isinstance(n_cols, int | np.integer) or n_cols < 1:
        raise ValueError(f"n_cols must be an integer >= 1, got {n_cols!r}")
    if n_cols > _INT32_MAX:
        raise ValueError(f"n_cols must fit in int32 (<= {_INT32_MAX}), got {n_cols}")
    indptr = _check_1d(indptr, "indptr", np.int32)
    indices = _check_1d(indices, "indices", np.int32)
    data = _check_1d(data, "data", np.float32)
    if indptr.shape[0] < 2:
        raise ValueError(f"indptr must have length n_rows + 1 >= 2, got length {indptr.shape[0]}")
    nnz = data.shape[0]
    if indices.shape[0] != nnz:
        raise ValueError(f"indices and data must have the same length, got {indices.shape[0]} and {nnz}")
    if indptr[0] != 0 or indptr[-1] != nnz:
        raise ValueError(f"indptr must start at 0 and end at nnz = {nnz}, got {indptr[0]} and {indptr[-1]}")
    if np.any(np.diff(indptr) < 0):
        raise ValueError("indptr must be non-decreasing")
    if nnz and (indices.min() < 0 or indices.max() >= n_cols):
        raise ValueError(f"indices must lie in [0, {n_cols}), got values in [{indices.min()}, {indices.max()}]")
    if not np.all(np.isfinite(data)):
        raise ValueError("data contains NaN or infinite values; all stored weights must be finite")
    return indptr.shape[0] - 1, nnz


def csr_linear(indptr, indices, data, X, bias=None, *, n_cols=None, out=None, parallel=False) -> np.ndarray:
    r"""Sparse-times-dense product of a linear layer, :math:`Y = X W^\top + \mathbf{1} b^\top`, in float32.

    .. math::

        Y_{si} = b_i + \sum_{p = \mathrm{indptr}_i}^{\mathrm{indptr}_{i+1} - 1}
        \mathrm{data}_p \, X_{s, \mathrm{indices}_p}

    Parameters
    ----------
    indptr, indices, data : ndarray
        The CSR arrays of :math:`W` of shape (N, K): int32 (N + 1,), int32 (nnz,), float32 (nnz,).
    X : ndarray of shape (B, K), float32, C-contiguous
        One sample per row (``B = 0`` gives an empty result).
    bias : ndarray of shape (N,), float32, optional
        Added to every row; zero when omitted.
    n_cols : int, optional
        :math:`K`; defaults to ``X.shape[1]`` (the CSR arrays do not store it).
    out : ndarray of shape (B, N), float32, C-contiguous, optional
        Written in place and returned; allocated when omitted.
    parallel : bool
        Use the multi-threaded kernel (Numba threads over chunks of samples). Off by default.

    Returns
    -------
    ndarray of shape (B, N), float32

    Raises
    ------
    TypeError, ValueError
        Naming the argument, for wrong dtypes, shapes, layouts, invalid CSR structure or non-finite weights.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.array([[0.0, 2.0, 0.0], [1.0, 0.0, -1.0]], np.float32)
    >>> indptr, indices = np.array([0, 1, 3], np.int32), np.array([1, 0, 2], np.int32)
    >>> data = W[W != 0]
    >>> X = np.array([[1.0, 2.0, 3.0], [0.5, 0.0, 1.0]], np.float32)
    >>> csr_linear(indptr, indices, data, X, bias=np.array([0.0, 10.0], np.float32))
    array([[4. , 8. ],
           [0. , 9.5]], dtype=float32)
    """
    if not isinstance(X, np.ndarray):
        raise TypeError(f"X must be a NumPy array, got {type(X).__name__}")
    if X.dtype != np.float32:
        raise TypeError(f"X must have dtype float32, got {X.dtype} (convert it explicitly)")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if not X.flags.c_contiguous:
        raise ValueError("X must be C-contiguous (use np.ascontiguousarray)")
    if n_cols is None:
        n_cols = X.shape[1]
    n_rows, _ = check_csr(indptr, indices, data, n_cols)
    if X.shape[1] != n_cols:
        raise ValueError(f"X must have {n_cols} columns (n_cols), got shape {X.shape}")
    if bias is None:
        bias = np.zeros(n_rows, dtype=np.float32)
    else:
        bias = _check_1d(bias, "bias", np.float32)
        if bias.shape[0] != n_rows:
            raise ValueError(f"bias must have length n_rows = {n_rows}, got {bias.shape[0]}")
        if not np.all(np.isfinite(bias)):
            raise ValueError("bias contains NaN or infinite values")
    shape = (X.shape[0], n_rows)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    else:
        if not isinstance(out, np.ndarray) or out.dtype != np.float32:
            raise TypeError("out must be a float32 NumPy array")
        if out.shape != shape:
            raise ValueError(f"out must have shape {shape}, got {out.shape}")
        if not (out.flags.c_contiguous and out.flags.writeable):
            raise ValueError("out is written in place and must be a writeable C-contiguous array")
        if np.shares_memory(out, X):
            raise ValueError("out must not overlap X")
    csr_linear_unchecked(indptr, indices, data, bias, X, out, batch_chunk(n_cols, n_rows), bool(parallel))
    return out
