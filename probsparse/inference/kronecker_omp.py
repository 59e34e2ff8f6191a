r"""Kronecker (N-way) orthogonal matching pursuit.

Greedy recovery of a vector with a Kronecker support from

.. math::

    y = (A_1 \otimes \cdots \otimes A_I)\, x + n, \qquad
    \operatorname{supp}(x) \subseteq S_1 \times \cdots \times S_I,

the N-way OMP idea of Caiafa & Cichocki (2012). Each step picks the Kronecker atom
:math:`a_{1,j_1} \otimes \cdots \otimes a_{I,j_I}` of largest absolute correlation with the residual, adds
each :math:`j_i` to the per-factor set :math:`S_i` (if new) and refits the coefficients on the whole product
set :math:`S_1 \times \cdots \times S_I` by least squares. One step therefore adds up to
:math:`\prod_i |S_i| - \prod_i |S_i^{old}|` coefficients, not one.

Everything is computed on the reshaped tensors, never with :math:`H = \otimes_i A_i`:

* the correlations of all atoms with the residual :math:`R` (an :math:`M_1 \times \cdots \times M_I` tensor)
  are the mode products :math:`R \times_1 D_1^H \times_2 \cdots \times_I D_I^H`, :math:`D_i` the
  (column-normalised) factors: :math:`O(\bar M \min_i N_i + \ldots)` per step;
* least squares on a Kronecker sub-dictionary is the Kronecker product of the pseudo-inverses,
  :math:`(\otimes_i D_{i,S_i})^+ = \otimes_i D_{i,S_i}^+`, so the refit costs :math:`I` small
  pseudo-inverses and mode products.

Vectors follow the ordering of ``np.kron`` (the first factor varies slowest), as in
:mod:`probsparse.inference.sbl.kronecker`.

Column normalisation (``normalize=True``, the default) matters: the greedy rule compares correlations across
atoms, and with un-normalised random factors it favours atoms with large column norms rather than the ones in
the support.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probsparse._kron import check_factors_and_y
from probsparse._validation import check_finite_real, check_positive_int

__all__ = ["KroneckerOMPResult", "kronecker_omp"]


def _ct(A: np.ndarray) -> np.ndarray:
    return A.conj().T if np.iscomplexobj(A) else A.T


def _mode_products(mats, t: np.ndarray) -> np.ndarray:
    """``(mats[0] ⊗ ... ⊗ mats[I-1]) vec(t)`` as a tensor (each step contracts the leading axis)."""
    for A in mats:
        t = np.tensordot(t, A, axes=([0], [1]))
    return t


@dataclass
class KroneckerOMPResult:
    """Result of :func:`kronecker_omp`.

    Attributes
    ----------
    coef : ndarray of shape (prod N_i,)
        Least-squares coefficients on the selected Kronecker support (in the scale of the original factors),
        exact zeros elsewhere; ``np.kron`` ordering.
    factor_supports : list of ndarray of int
        The selected indices :math:`S_i` of each factor, sorted.
    selection_order : list of tuple of int
        The multi-index :math:`(j_1, \\ldots, j_I)` of the atom picked at each step.
    residual_norm : float
        :math:`\\|y - H\\hat x\\|_2` at the end.
    n_iter : int
        Number of greedy steps.
    dims : tuple of int
        :math:`(N_1, \\ldots, N_I)`.
    """

    coef: np.ndarray
    factor_supports: list
    selection_order: list
    residual_norm: float
    n_iter: int
    dims: tuple

    @property
    def support(self) -> np.ndarray:
        """The Kronecker support :math:`S_1 \\times \\cdots \\times S_I` as a bool mask of shape (prod N_i,)."""
        mask = None
        for s, n_i in zip(self.factor_supports, self.dims, strict=True):
            m = np.zeros(n_i, dtype=bool)
            m[s] = True
            mask = m if mask is None else np.multiply.outer(mask, m)
        return mask.reshape(-1)


def _check_n_nonzero(n_nonzero, dims) -> tuple:
    n_factors = len(dims)
    if np.ndim(n_nonzero) == 0:
        n_nonzero = (n_nonzero,) * n_factors
    try:
        values = tuple(n_nonzero)
    except TypeError:
        raise TypeError(f"n_nonzero must be an int or a sequence of ints, got {n_nonzero!r}") from None
    if len(values) != n_factors:
        raise ValueError(f"n_nonzero must have one entry per factor ({n_factors}), got {len(values)}")
    out = []
    for i, (k, n_i) in enumerate(zip(values, dims, strict=True)):
        k = check_positive_int(k, f"n_nonzero[{i}]")
        if k > n_i:
            raise ValueError(f"n_nonzero[{i}] = {k} exceeds the number of columns of factors[{i}] (N_{i} = {n_i})")
        out.append(k)
    return tuple(out)


def _kron_lstsq(sub_factors, y_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-norm least squares on ``⊗ sub_factors``: coefficients (tensor) and the fitted values (tensor)."""
    pinvs = [np.linalg.pinv(D) for D in sub_factors]
    z = _mode_products(pinvs, y_t)
    fitted = _mode_products(sub_factors, z)
    return z, fitted


def kronecker_omp(factors, y, *, n_nonzero=None, tol=None, normalize: bool = True) -> KroneckerOMPResult:
    r"""Kronecker (N-way) orthogonal matching pursuit.

    Parameters
    ----------
    factors : sequence of array_like, the i-th of shape (M_i, N_i)
        The factors :math:`A_i` of :math:`H = A_1 \otimes \cdots \otimes A_I` (real or complex; one factor
        is plain OMP).
    y : array_like of shape (prod M_i,) or (M_1, ..., M_I)
        Measurements in ``np.kron`` order (first factor slowest).
    n_nonzero : int or sequence of int, optional
        Per-factor support sizes :math:`|S_i|` at which factor :math:`i` stops growing (an int applies to
        every factor). Once factor :math:`i` is full, later atoms are searched only among its selected
        indices. The run stops when all factors are full. Default: no per-factor cap beyond
        :math:`\min(M_i, N_i)` (then ``tol`` is required).
    tol : float, optional
        Stop as soon as the residual norm :math:`\|y - H\hat x\|_2 \le` ``tol`` (absolute; pass
        ``eps * np.linalg.norm(y)`` for a relative rule).
    normalize : bool, default=True
        Select atoms by their correlation with the residual after scaling every factor column to unit norm
        (the coefficients are returned in the original scale). Without it, columns of larger norm are
        favoured.

    Returns
    -------
    KroneckerOMPResult
        ``coef`` (prod N_i,), ``factor_supports`` (sorted per-factor index arrays), ``selection_order``,
        ``residual_norm``, ``n_iter`` and the ``support`` mask.

    Notes
    -----
    The run also stops when the picked atom adds no new index to any factor (the residual is then orthogonal to
    every admissible atom up to rounding) or when every admissible correlation is zero. Zero columns are never
    picked. After each step the coefficients on :math:`S_1 \times \cdots \times S_I` are the minimum-norm
    least-squares solution :math:`(\otimes_i A_{i,S_i}^+)\, y`.

    References
    ----------
    Caiafa, C. F. & Cichocki, A. (2012). Computing sparse representations of multidimensional signals using
    Kronecker bases. Neural Computation 25(1).
    """
    factors, y_t = check_factors_and_y(factors, y)[:2]
    dims = tuple(A.shape[1] for A in factors)
    if not isinstance(normalize, (bool, np.bool_)):
        raise TypeError(f"normalize must be a bool, got {type(normalize).__name__}")
    if n_nonzero is None and tol is None:
        raise ValueError("give n_nonzero (per-factor support sizes), tol (residual norm), or both")
    caps = tuple(min(M, N) for M, N in (A.shape for A in factors))
    if n_nonzero is not None:
        caps = _check_n_nonzero(n_nonzero, dims)
    if tol is not None:
        tol = check_finite_real(tol, "tol")
        if tol < 0:
            raise ValueError(f"tol must be >= 0, got {tol}")

    norms = [np.sqrt(np.sum((A * A.conj()).real, axis=0)) for A in factors]
    if normalize:
        scales = [np.where(n > 0, n, 1.0) for n in norms]
        atoms = [A / s for A, s in zip(factors, scales, strict=True)]
    else:
        scales = [np.ones(n_i) for n_i in dims]
        atoms = factors
    atoms_h = [_ct(D) for D in atoms]
    usable = [n > 0 for n in norms]  # zero columns are never picked

    selected = [np.zeros(n_i, dtype=bool) for n_i in dims]
    order: list[tuple] = []
    resid = y_t.copy()
    z = None
    sets: list[np.ndarray] = [np.zeros(0, dtype=int) for _ in dims]
    resid_norm = float(np.linalg.norm(resid))
    n_iter = 0
    while True:
        if tol is not None and resid_norm <= tol:
            break
        full = [int(s.sum()) >= c for s, c in zip(selected, caps, strict=True)]
        if all(full):
            break
        allowed = [np.where(f, s, u) for f, s, u in zip(full, selected, usable, strict=True)]
        corr = np.abs(_mode_products(atoms_h, resid))
        mask = allowed[0]
        for a in allowed[1:]:
            mask = np.multiply.outer(mask, a)
        corr = np.where(mask, corr, -1.0)
        flat = int(np.argmax(corr))
        if corr.reshape(-1)[flat] <= 0.0:
            break
        pick = np.unravel_index(flat, dims)
        new = [not selected[i][j] for i, j in enumerate(pick)]
        if not any(new):
            break
        order.append(tuple(int(j) for j in pick))
        for i, j in enumerate(pick):
            selected[i][j] = True
        n_iter += 1
        sets = [np.flatnonzero(s) for s in selected]
        z, fitted = _kron_lstsq([D[:, s] for D, s in zip(atoms, sets, strict=True)], y_t)
        resid = y_t - fitted
        resid_norm = float(np.linalg.norm(resid))

    dtype = np.complex128 if np.iscomplexobj(y_t) or any(np.iscomplexobj(A) for A in factors) else np.float64
    coef = np.zeros(dims, dtype=dtype)
    if z is not None:
        # Undo the column scaling: x_n = z_n / prod_i scale_i[n_i].
        inv = 1.0 / scales[0][sets[0]]
        for s, idx in zip(scales[1:], sets[1:], strict=True):
            inv = np.multiply.outer(inv, 1.0 / s[idx])
        coef[np.ix_(*sets)] = z * inv
    return KroneckerOMPResult(
        coef=coef.reshape(-1),
        factor_supports=sets,
        selection_order=order,
        residual_norm=resid_norm,
        n_iter=n_iter,
        dims=dims,
    )
