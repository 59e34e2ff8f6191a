"""The CSR x dense-batch kernels against a float64 dense matmul and ``scipy.sparse``.

``test_nojit.py`` runs this module a second time with ``NUMBA_DISABLE_JIT=1``, so sizes stay small.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from probsparse.kernels.sparse_matmul import (
    MAX_BATCH_CHUNK,
    batch_chunk,
    check_csr,
    csr_linear,
    csr_linear_unchecked,
)


def random_csr(n_rows, n_cols, density, rng, *, empty_rows=()):
    """A float32 CSR matrix with int32 index arrays; the listed rows are left empty."""
    dense = np.where(rng.uniform(size=(n_rows, n_cols)) < density, rng.standard_normal((n_rows, n_cols)), 0.0)
    dense[list(empty_rows)] = 0.0
    mat = sp.csr_matrix(dense.astype(np.float32))
    return mat.indptr.astype(np.int32), mat.indices.astype(np.int32), mat.data.astype(np.float32), mat


def assert_close_to_float64(got, indptr, indices, data, X, bias, n_cols):
    """Compare with the float64 product; the tolerance is float32 rounding of the sum of |terms|."""
    W = sp.csr_matrix((data.astype(np.float64), indices, indptr), shape=(len(indptr) - 1, n_cols)).toarray()
    ref = X.astype(np.float64) @ W.T
    scale = np.abs(X.astype(np.float64)) @ np.abs(W).T
    if bias is not None:
        ref += bias
        scale += np.abs(bias)
    tol = 8 * np.finfo(np.float32).eps * (scale + 1.0)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert np.all(np.abs(got - ref) <= tol), np.max(np.abs(got - ref) - tol)


@pytest.mark.parametrize(
    ("n_rows", "n_cols", "n_samples", "density"),
    [
        (1, 1, 1, 1.0),
        (7, 13, 1, 0.3),
        (7, 13, 2, 0.3),
        (5, 9, 9, 0.6),  # one full group of eight samples plus one
        (31, 17, 17, 0.2),
        (12, 40, 23, 0.05),
        (3, 5, 300, 0.7),  # three chunks (at most 128 samples each), the last one shorter
    ],
)
@pytest.mark.parametrize("with_bias", [False, True])
def test_matches_dense_float64_and_scipy(n_rows, n_cols, n_samples, density, with_bias, rng):
    indptr, indices, data, mat = random_csr(n_rows, n_cols, density, rng)
    X = rng.standard_normal((n_samples, n_cols)).astype(np.float32)
    bias = rng.standard_normal(n_rows).astype(np.float32) if with_bias else None
    got = csr_linear(indptr, indices, data, X, bias)
    assert_close_to_float64(got, indptr, indices, data, X, bias, n_cols)
    via_scipy = (mat @ X.T).T + (0.0 if bias is None else bias)
    np.testing.assert_allclose(got, via_scipy, rtol=1e-5, atol=1e-5)


def test_row_lengths_cover_every_remainder_of_the_four_wide_groups(rng):
    # Row i holds i non-zeros (0 .. 11): every remainder mod 4 and empty rows, in both kernels.
    n_rows, n_cols = 12, 16
    dense = np.zeros((n_rows, n_cols), np.float32)
    for i in range(n_rows):
        dense[i, rng.choice(n_cols, size=i, replace=False)] = rng.standard_normal(i)
    mat = sp.csr_matrix(dense)
    indptr, indices, data = mat.indptr.astype(np.int32), mat.indices.astype(np.int32), mat.data
    for n_samples in (1, 3, 8, 11):
        X = rng.standard_normal((n_samples, n_cols)).astype(np.float32)
        got = csr_linear(indptr, indices, data, X)
        assert_close_to_float64(got, indptr, indices, data, X, None, n_cols)
        np.testing.assert_array_equal(got[:, 0], 0.0)  # the empty row gives exactly zero


def test_empty_rows_give_the_bias(rng):
    indptr, indices, data, _ = random_csr(10, 8, 0.5, rng, empty_rows=(0, 4, 9))
    bias = rng.standard_normal(10).astype(np.float32)
    X = rng.standard_normal((6, 8)).astype(np.float32)
    for rows in (X[:1], X):
        got = csr_linear(indptr, indices, data, np.ascontiguousarray(rows), bias)
        np.testing.assert_array_equal(got[:, [0, 4, 9]], np.broadcast_to(bias[[0, 4, 9]], (len(rows), 3)))


def test_all_zero_matrix_returns_the_bias_or_zeros(rng):
    indptr = np.zeros(5, np.int32)
    indices = np.zeros(0, np.int32)
    data = np.zeros(0, np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    for n_samples in (1, 5):
        X = rng.standard_normal((n_samples, 3)).astype(np.float32)
        np.testing.assert_array_equal(csr_linear(indptr, indices, data, X), np.zeros((n_samples, 4), np.float32))
        np.testing.assert_array_equal(csr_linear(indptr, indices, data, X, bias), np.tile(bias, (n_samples, 1)))


def test_empty_batch_gives_an_empty_result(rng):
    indptr, indices, data, _ = random_csr(4, 6, 0.5, rng)
    got = csr_linear(indptr, indices, data, np.zeros((0, 6), np.float32))
    assert got.shape == (0, 4) and got.dtype == np.float32


def test_unsorted_and_duplicate_indices_are_summed_like_scipy(rng):
    # Row 0: columns 3, 1, 3, 0, 1 (unsorted, with duplicates); row 1: a single entry.
    indptr = np.array([0, 5, 6], np.int32)
    indices = np.array([3, 1, 3, 0, 1, 2], np.int32)
    data = rng.standard_normal(6).astype(np.float32)
    X = rng.standard_normal((4, 4)).astype(np.float32)
    mat = sp.csr_matrix((data, indices, indptr), shape=(2, 4))
    for rows in (X[:1], X):
        got = csr_linear(indptr, indices, data, np.ascontiguousarray(rows))
        np.testing.assert_allclose(got, (mat @ rows.T).T, rtol=1e-5, atol=1e-6)


def test_single_sample_and_batch_kernels_agree_row_by_row(rng):
    indptr, indices, data, _ = random_csr(20, 30, 0.4, rng)
    bias = rng.standard_normal(20).astype(np.float32)
    X = rng.standard_normal((9, 30)).astype(np.float32)
    batch = csr_linear(indptr, indices, data, X, bias)
    for s in range(9):
        one = csr_linear(indptr, indices, data, X[s : s + 1].copy(), bias)
        # Same summation order in both kernels; only FMA contraction may differ.
        np.testing.assert_allclose(one[0], batch[s], rtol=1e-6, atol=1e-6)


def test_parallel_kernel_equals_the_serial_one(rng):
    indptr, indices, data, _ = random_csr(9, 11, 0.5, rng)
    bias = rng.standard_normal(9).astype(np.float32)
    X = rng.standard_normal((21, 11)).astype(np.float32)
    serial = csr_linear(indptr, indices, data, X, bias)
    parallel = csr_linear(indptr, indices, data, X, bias, parallel=True)
    np.testing.assert_allclose(parallel, serial, rtol=1e-6, atol=1e-6)
    # Chunks smaller than the batch: every chunk goes through its own scratch.
    out = np.empty_like(serial)
    csr_linear_unchecked(indptr, indices, data, bias, X, out, 8, parallel=True)
    np.testing.assert_allclose(out, serial, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("chunk", [8, 16, 24])
def test_every_split_of_the_batch_into_chunks_gives_the_same_product(chunk, rng):
    indptr, indices, data, _ = random_csr(5, 7, 0.5, rng)
    bias = rng.standard_normal(5).astype(np.float32)
    X = rng.standard_normal((41, 7)).astype(np.float32)
    whole = csr_linear(indptr, indices, data, X, bias)
    for n_samples in range(2, 42, 3):
        out = np.empty((n_samples, 5), np.float32)
        csr_linear_unchecked(indptr, indices, data, bias, X[:n_samples].copy(), out, chunk)
        np.testing.assert_allclose(out, whole[:n_samples], rtol=1e-6, atol=1e-6)


def test_out_is_written_in_place_and_returned(rng):
    indptr, indices, data, _ = random_csr(6, 5, 0.5, rng)
    X = rng.standard_normal((3, 5)).astype(np.float32)
    out = np.full((3, 6), np.nan, np.float32)
    got = csr_linear(indptr, indices, data, X, out=out)
    assert got is out
    assert_close_to_float64(out, indptr, indices, data, X, None, 5)


def test_a_non_finite_input_reaches_only_the_rows_that_use_its_column():
    # Column 1 is used by row 0 only.
    indptr = np.array([0, 2, 3], np.int32)
    indices = np.array([0, 1, 2], np.int32)
    data = np.ones(3, np.float32)
    X = np.array([[1.0, np.nan, 2.0]], np.float32)
    got = csr_linear(indptr, indices, data, X)
    assert np.isnan(got[0, 0]) and got[0, 1] == 2.0


def test_n_cols_wider_than_any_stored_index(rng):
    indptr, indices, data, _ = random_csr(4, 3, 1.0, rng)
    X = rng.standard_normal((2, 7)).astype(np.float32)
    got = csr_linear(indptr, indices, data, X, n_cols=7)
    assert_close_to_float64(got, indptr, indices, data, X, None, 7)


def test_batch_chunk_is_a_bounded_multiple_of_eight():
    for n_in, n_out in [(1, 1), (784, 300), (300, 100), (5000, 5000), (10**7, 1)]:
        c = batch_chunk(n_in, n_out)
        assert 8 <= c <= MAX_BATCH_CHUNK and c % 8 == 0
        assert c == 8 or 4 * c * (n_in + n_out) <= 1 << 20


def test_check_csr_returns_rows_and_nnz(rng):
    indptr, indices, data, _ = random_csr(5, 7, 0.5, rng)
    assert check_csr(indptr, indices, data, 7) == (5, len(data))


def _valid():
    return np.array([0, 2, 3], np.int32), np.array([0, 2, 1], np.int32), np.array([1.0, 2.0, 3.0], np.float32)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda a: {**a, "indptr": a["indptr"].astype(np.int64)}, TypeError, "indptr must have dtype int32"),
        (lambda a: {**a, "indices": a["indices"].astype(np.int64)}, TypeError, "indices must have dtype int32"),
        (lambda a: {**a, "data": a["data"].astype(np.float64)}, TypeError, "data must have dtype float32"),
        (lambda a: {**a, "data": [1.0, 2.0, 3.0]}, TypeError, "data must be a NumPy array"),
        (lambda a: {**a, "indptr": np.array([0], np.int32)}, ValueError, "n_rows \\+ 1 >= 2"),
        (lambda a: {**a, "indptr": np.array([0, 3, 2, 3], np.int32)}, ValueError, "non-decreasing"),
        (lambda a: {**a, "indptr": np.array([0, 2, 2], np.int32)}, ValueError, "end at nnz"),
        (lambda a: {**a, "indptr": np.array([1, 2, 3], np.int32)}, ValueError, "start at 0"),
        (lambda a: {**a, "indices": np.array([0, 3, 1], np.int32)}, ValueError, "indices must lie in"),
        (lambda a: {**a, "indices": np.array([0, -1, 1], np.int32)}, ValueError, "indices must lie in"),
        (lambda a: {**a, "indices": np.array([0, 1], np.int32)}, ValueError, "same length"),
        (lambda a: {**a, "data": np.array([1.0, np.nan, 3.0], np.float32)}, ValueError, "NaN or infinite"),
        (lambda a: {**a, "data": np.array([1.0, np.inf, 3.0], np.float32)}, ValueError, "NaN or infinite"),
        (lambda a: {**a, "data": np.ones((3, 1), np.float32)}, ValueError, "data must be 1-D"),
        (lambda a: {**a, "X": a["X"].astype(np.float64)}, TypeError, "X must have dtype float32"),
        (lambda a: {**a, "X": a["X"][0]}, ValueError, "X must be 2-D"),
        (lambda a: {**a, "X": np.asfortranarray(np.ones((3, 3), np.float32))}, ValueError, "C-contiguous"),
        (lambda a: {**a, "X": np.ones((2, 4), np.float32), "n_cols": 3}, ValueError, "X must have 3 columns"),
        (lambda a: {**a, "X": np.ones((2, 2), np.float32)}, ValueError, "indices must lie in \\[0, 2\\)"),
        (lambda a: {**a, "X": a["X"].tolist()}, TypeError, "X must be a NumPy array"),
        (lambda a: {**a, "bias": np.ones(3, np.float32)}, ValueError, "bias must have length"),
        (lambda a: {**a, "bias": np.ones(2, np.float64)}, TypeError, "bias must have dtype float32"),
        (lambda a: {**a, "bias": np.array([0.0, np.nan], np.float32)}, ValueError, "bias contains NaN"),
        (lambda a: {**a, "out": np.empty((2, 3), np.float32)}, ValueError, "out must have shape"),
        (lambda a: {**a, "out": np.empty((2, 2), np.float64)}, TypeError, "out must be a float32"),
        (lambda a: {**a, "out": np.empty((2, 2), np.float32)[:, ::-1]}, ValueError, "writeable C-contiguous"),
        (lambda a: {**a, "n_cols": 0}, ValueError, "n_cols must be an integer >= 1"),
        (lambda a: {**a, "n_cols": 3.0}, ValueError, "n_cols must be an integer >= 1"),
    ],
)
def test_bad_input_raises_a_clear_error(change, error, match):
    indptr, indices, data = _valid()
    args = {"indptr": indptr, "indices": indices, "data": data, "X": np.ones((2, 3), np.float32)}
    args = change(args)
    kwargs = {k: args.pop(k) for k in ("bias", "out", "n_cols") if k in args}
    with pytest.raises(error, match=match):
        csr_linear(args["indptr"], args["indices"], args["data"], args["X"], **kwargs)


def test_out_overlapping_x_is_rejected():
    indptr, indices, data = np.array([0, 1, 2], np.int32), np.array([0, 1], np.int32), np.ones(2, np.float32)
    X = np.ones((2, 2), np.float32)
    with pytest.raises(ValueError, match="out must not overlap X"):
        csr_linear(indptr, indices, data, X, out=X)
