"""The single conversion path from probsparse posteriors to ArviZ.

Everything that builds ArviZ data goes through :func:`samples_to_inference_data`, which calls
``arviz.from_dict`` (ArviZ 0.23, ``InferenceData``). Only names that ArviZ 1.x keeps are used
(``from_dict``; downstream ``summary``, ``ess``, ``rhat``), and extra groups are attached with item
assignment (``idata[group] = dataset``), which both ``InferenceData`` and ``DataTree`` support; moving to
ArviZ 1.x (``from_dict({"posterior": ...})``, ``sample_dims``) means changing this module only.

Layout of the results
---------------------
* ``posterior``: one variable per site, leading dims ``(chain, draw)``; VI and closed-form Gaussian draws
  are stored as one chain (ArviZ 0.23's ``from_dict`` has no ``sample`` dim).
* ``sample_stats``: per-draw statistics only (``(chain, draw)`` dims), e.g. ``diverging``.
* ``observed_data`` / ``constant_data``: ``y`` (``obs_id``) and ``X`` (``obs_id, feature``).
* ``optimization``: an extra group (allowed by the ArviZ schema) for what is not per draw: an SVI loss
  trace (``step``), a log-evidence trace (``iteration``), type-II point estimates. ``from_dict`` would read
  a 1-D array in ``sample_stats`` as one chain of draws, so such traces must not go there.
* ``attrs`` (file level and on ``posterior`` / ``sample_stats``): ``creation_library="probsparse"``,
  ``creation_library_version``, ``inference_library`` and, when known, ``inference_library_version``.

``arviz`` is imported lazily, inside the functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from probsparse._validation import check_positive_int, check_positive_real
from probsparse._version import __version__

__all__ = [
    "gaussian_posterior_to_inference_data",
    "samples_to_inference_data",
    "variational_draws_to_inference_data",
]

#: Name of the extra group holding optimisation traces and point estimates.
OPTIMIZATION_GROUP = "optimization"


def _as_real_array(value, name: str) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers or booleans, got dtype {array.dtype}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values; all entries must be finite")
    return array


def _check_group(group, group_name: str, *, min_ndim: int = 0) -> dict[str, np.ndarray] | None:
    if group is None:
        return None
    if not isinstance(group, Mapping):
        raise TypeError(f"{group_name} must be a dict of name -> array, got {type(group).__name__}")
    out = {}
    for var, value in group.items():
        if not isinstance(var, str) or not var:
            raise ValueError(f"{group_name} has a variable name that is not a non-empty string: {var!r}")
        array = _as_real_array(value, f"{group_name}[{var!r}]")
        if array.ndim < min_ndim:
            raise ValueError(
                f"{group_name}[{var!r}] must have leading (chain, draw) axes, got shape {array.shape}"
            )
        out[var] = array
    return out


def _check_dims_against_coords(groups, dims, coords) -> None:
    """Each named dim of a variable must match the length of its coords (arviz's own error is obscure)."""
    for group_name, (group, n_lead) in groups.items():
        if not group:
            continue
        for var, array in group.items():
            var_dims = dims.get(var)
            if var_dims is None:
                continue
            if len(var_dims) != array.ndim - n_lead:
                raise ValueError(
                    f"dims[{var!r}] names {len(var_dims)} dim(s) but {group_name}[{var!r}] has "
                    f"{array.ndim - n_lead} non-sample dim(s) (shape {array.shape})"
                )
            for dim, size in zip(var_dims, array.shape[n_lead:], strict=True):
                if dim in coords and len(coords[dim]) != size:
                    raise ValueError(
                        f"coords[{dim!r}] has {len(coords[dim])} entries but dim {dim!r} of "
                        f"{group_name}[{var!r}] has size {size}"
                    )


def _library_attrs(inference_library: str | None, attrs: Mapping | None) -> dict:
    out = {"creation_library": "probsparse", "creation_library_version": __version__}
    if inference_library is not None:
        out["inference_library"] = inference_library
        if inference_library == "probsparse":
            out["inference_library_version"] = __version__
        elif inference_library == "pyro":
            import pyro

            out["inference_library_version"] = pyro.__version__
    if attrs is not None:
        if not isinstance(attrs, Mapping):
            raise TypeError(f"attrs must be a dict, got {type(attrs).__name__}")
        out.update(attrs)
    return out


def _dataset(group: dict[str, np.ndarray], dims: Mapping, coords: Mapping, attrs: dict):
    """An ``xarray.Dataset`` of arrays without sample dims (for the ``optimization`` group)."""
    import xarray as xr

    variables = {}
    used_coords = {}
    for var, array in group.items():
        var_dims = list(dims.get(var, [f"{var}_dim_{i}" for i in range(array.ndim)]))
        if len(var_dims) != array.ndim:
            raise ValueError(
                f"dims[{var!r}] names {len(var_dims)} dim(s) but the array has shape {array.shape}"
            )
        for dim, size in zip(var_dims, array.shape, strict=True):
            if dim in coords:
                if len(coords[dim]) != size:
                    raise ValueError(f"coords[{dim!r}] has {len(coords[dim])} entries but {var!r} has {size}")
                used_coords[dim] = np.asarray(coords[dim])
        variables[var] = (var_dims, array)
    return xr.Dataset(variables, coords=used_coords, attrs=attrs)


def samples_to_inference_data(
    samples: Mapping[str, np.ndarray],
    *,
    dims: Mapping[str, Sequence[str]] | None = None,
    coords: Mapping[str, Sequence] | None = None,
    sample_stats: Mapping[str, np.ndarray] | None = None,
    observed_data: Mapping[str, np.ndarray] | None = None,
    constant_data: Mapping[str, np.ndarray] | None = None,
    attrs: Mapping | None = None,
    optimization: Mapping[str, np.ndarray] | None = None,
    inference_library: str | None = "pyro",
):
    r"""Build an ArviZ ``InferenceData`` from posterior draws with leading ``(chain, draw)`` axes.

    Parameters
    ----------
    samples : dict of {str : ndarray of shape (n_chains, n_draws, \*event_shape)}
        Posterior draws, one entry per variable; all share ``(n_chains, n_draws)``. Must be finite.
    dims : dict of {str : list of str}, optional
        Names of each variable's non-sample dims, e.g. ``{"w": ["feature"], "y": ["obs_id"]}``; used in
        every group. Unnamed dims get ArviZ's default names ``"<var>_dim_<i>"``.
    coords : dict of {str : array_like}, optional
        Coordinates of named dims, e.g. ``{"feature": feature_names}``.
    sample_stats : dict of {str : ndarray of shape (n_chains, n_draws)}, optional
        Per-draw statistics (``diverging``, ``step_size``, ...).
    observed_data, constant_data : dict of {str : ndarray}, optional
        Data groups, without sample dims (``y``; ``X``).
    attrs : dict, optional
        Extra attributes; they override the library attributes below.
    optimization : dict of {str : ndarray}, optional
        Arrays without sample dims (loss or evidence traces, type-II estimates), stored in the extra group
        ``"optimization"``.
    inference_library : str or None, default="pyro"
        Library that produced the draws; ``"pyro"`` and ``"probsparse"`` also record their version.

    Returns
    -------
    arviz.InferenceData
        Groups ``posterior`` and those given. ``attrs`` carry ``creation_library="probsparse"``,
        ``creation_library_version``, ``inference_library`` (and its version), plus ``attrs``.

    Raises
    ------
    ValueError
        When ``samples`` is empty, arrays are not finite, the ``(chain, draw)`` axes disagree, or a dim
        name list or coordinate length does not fit its array.
    """
    import arviz as az

    if not isinstance(samples, Mapping):
        raise TypeError(f"samples must be a dict of name -> array, got {type(samples).__name__}")
    if not samples:
        raise ValueError("samples is empty: at least one posterior variable is needed")
    posterior = _check_group(samples, "samples", min_ndim=2)
    sample_stats = _check_group(sample_stats, "sample_stats", min_ndim=2)
    observed_data = _check_group(observed_data, "observed_data")
    constant_data = _check_group(constant_data, "constant_data")
    optimization = _check_group(optimization, "optimization")
    dims = {} if dims is None else {k: list(v) for k, v in dims.items()}
    coords = {} if coords is None else {k: np.asarray(v) for k, v in coords.items()}

    lead = {array.shape[:2] for array in posterior.values()}
    lead |= {array.shape[:2] for array in (sample_stats or {}).values()}
    if len(lead) != 1:
        raise ValueError(f"samples and sample_stats disagree on their (chain, draw) axes: {sorted(lead)}")
    if 0 in next(iter(lead)):
        raise ValueError(f"samples need at least one chain and one draw, got (chain, draw) = {lead.pop()}")
    _check_dims_against_coords(
        {
            "samples": (posterior, 2),
            "sample_stats": (sample_stats, 2),
            "observed_data": (observed_data, 0),
            "constant_data": (constant_data, 0),
        },
        dims,
        coords,
    )

    all_attrs = _library_attrs(inference_library, attrs)
    # Coords of dims no variable uses would make from_dict fail; keep the ones in use.
    used = {d for var_dims in dims.values() for d in var_dims}
    idata = az.from_dict(
        posterior=posterior,
        sample_stats=sample_stats,
        observed_data=observed_data,
        constant_data=constant_data,
        dims=dims,
        coords={k: v for k, v in coords.items() if k in used},
        attrs=all_attrs,
        posterior_attrs=all_attrs,
        sample_stats_attrs=all_attrs,
    )
    if optimization:
        idata[OPTIMIZATION_GROUP] = _dataset(optimization, dims, coords, all_attrs)
    return idata


def variational_draws_to_inference_data(
    draws: Mapping[str, np.ndarray],
    *,
    dims: Mapping[str, Sequence[str]] | None = None,
    coords: Mapping[str, Sequence] | None = None,
    observed_data: Mapping[str, np.ndarray] | None = None,
    constant_data: Mapping[str, np.ndarray] | None = None,
    optimization: Mapping[str, np.ndarray] | None = None,
    attrs: Mapping | None = None,
    inference_library: str | None = "pyro",
):
    r"""ArviZ ``InferenceData`` of independent draws from a variational posterior, stored as one chain.

    .. math::

        z^{(s)} \sim q_\phi(z), \quad s = 1, \dots, S
        \quad\longmapsto\quad \texttt{posterior}[v] \text{ of dims } (\texttt{chain}=1, \texttt{draw}=S, \dots).

    Variational draws are independent and come from no Markov chain, so they form a single chain of
    ``S`` draws (ArviZ 0.23's ``from_dict`` knows no ``sample`` dim; ArviZ 1.x would use
    ``sample_dims=["sample"]``). R-hat is then undefined (NaN) and the effective sample size is about
    ``S``. The ``attrs`` record ``inference_method="vi"`` and ``sample_dims_meaning="independent draws"``.

    Parameters
    ----------
    draws : dict of {str : ndarray of shape (n_draws, \*event_shape)}
        Draws of each variable, all with the same ``n_draws``; finite.
    dims, coords, observed_data, constant_data, optimization, inference_library
        As in :func:`samples_to_inference_data` (``dims`` names each variable's event dims, e.g.
        ``{"w": ["feature"]}``).
    attrs : dict, optional
        Extra attributes; they override the defaults above.

    Returns
    -------
    arviz.InferenceData

    Examples
    --------
    >>> import numpy as np
    >>> idata = variational_draws_to_inference_data(
    ...     {"w": np.zeros((50, 3))}, dims={"w": ["feature"]}, coords={"feature": ["a", "b", "c"]}
    ... )
    >>> idata.posterior["w"].dims, idata.posterior["w"].shape
    (('chain', 'draw', 'feature'), (1, 50, 3))
    """
    if not isinstance(draws, Mapping):
        raise TypeError(f"draws must be a dict of name -> array, got {type(draws).__name__}")
    if not draws:
        raise ValueError("draws is empty: at least one posterior variable is needed")
    for name, value in draws.items():
        if np.ndim(value) < 1:
            raise ValueError(f"draws[{name!r}] must have a leading draw axis, got a scalar")
    checked = _check_group(draws, "draws")
    sizes = {name: array.shape[0] for name, array in checked.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"draws disagree on the number of draws (leading axis): {sizes}")
    all_attrs = {"inference_method": "vi", "sample_dims_meaning": "independent draws"}
    if attrs is not None:
        if not isinstance(attrs, Mapping):
            raise TypeError(f"attrs must be a dict, got {type(attrs).__name__}")
        all_attrs.update(attrs)
    return samples_to_inference_data(
        {name: array[np.newaxis] for name, array in checked.items()},
        dims=dims,
        coords=coords,
        observed_data=observed_data,
        constant_data=constant_data,
        optimization=optimization,
        attrs=all_attrs,
        inference_library=inference_library,
    )


def gaussian_posterior_to_inference_data(
    mean,
    cov,
    active_indices,
    *,
    num_draws: int = 1000,
    seed: int = 0,
    feature_names=None,
    log_evidence_trace=None,
    noise_var=None,
):
    r"""Draw the weights of a Gaussian posterior on an active set and wrap them as ArviZ data.

    For sparse Bayesian learning estimators whose posterior is Gaussian on the active (unpruned)
    features :math:`\mathcal A` and a point mass at zero elsewhere:

    .. math::

        w_{\mathcal A} \mid y \sim \mathcal N(\mu_{\mathcal A}, \Sigma), \qquad
        w^{(s)}_{\mathcal A} = \mu_{\mathcal A} + L z^{(s)}, \quad z^{(s)} \sim \mathcal N(0, I_m),
        \quad L L^\top = \Sigma,

    with :math:`L` from the eigendecomposition of :math:`\Sigma` (so a positive semi-definite
    :math:`\Sigma` is accepted). Only the active features are stored.

    Parameters
    ----------
    mean : array_like of shape (n_features,) or (m,)
        Posterior mean. Of length ``n_features`` (> m): the mean over all features, of which
        ``mean[active_indices]`` is used (the rest, typically zeros, is ignored). Of length ``m``: the
        mean of the active weights, in the order of ``active_indices``.
    cov : array_like of shape (m, m)
        Posterior covariance of the active weights, in the order of ``active_indices``; symmetric positive
        semi-definite.
    active_indices : array_like of int, shape (m,)
        Distinct feature indices in ``[0, n_features)``, in any order; ``m`` may be 0. (When all
        ``n_features`` features are active, a full-length ``mean`` is read as ordered like
        ``active_indices``; pass ``active_indices`` sorted to avoid any doubt.)
    num_draws : int, default=1000
        Number of independent draws (stored as one chain).
    seed : int, default=0
        Seed of the NumPy generator used for the draws.
    feature_names : sequence of str, shape (n_features,), optional
        Names of all features; the ``feature`` coordinate then holds the active features' names.
    log_evidence_trace : array_like of shape (n_iterations,), optional
        Log evidence (log marginal likelihood) per iteration of the estimator.
    noise_var : float, optional
        Estimated (or known) noise variance :math:`\sigma^2 > 0`.

    Returns
    -------
    arviz.InferenceData
        * ``posterior``: ``w`` with dims ``(chain=1, draw=num_draws, feature=m)``; the ``feature``
          coordinate holds the active indices (or their names), and a second coordinate ``feature_index``
          along ``feature`` always holds the integer indices.
        * ``optimization`` (present when ``log_evidence_trace`` or ``noise_var`` is given): variable
          ``log_evidence`` with dim ``iteration`` and the scalar ``noise_var``. ArviZ's ``from_dict``
          forces ``(chain, draw)`` on every ``sample_stats`` variable, so a per-iteration trace is kept in
          this extra group instead.
        * ``attrs``: as :func:`samples_to_inference_data`, with ``inference_library="probsparse"`` and
          ``posterior_family="gaussian"``.

    Raises
    ------
    ValueError
        On NaN / infinite inputs, shape mismatches, repeated or out-of-range indices, a non-symmetric or
        indefinite ``cov``, or a non-positive ``noise_var``.
    """
    num_draws = check_positive_int(num_draws, "num_draws")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")

    mean = _as_real_array(mean, "mean").astype(np.float64, copy=False)
    if mean.ndim != 1:
        raise ValueError(f"mean must be 1-D, got shape {mean.shape}")

    active = np.asarray(active_indices)
    if active.ndim != 1:
        raise ValueError(f"active_indices must be 1-D, got shape {active.shape}")
    if active.size and active.dtype.kind not in "iu":
        raise TypeError(f"active_indices must hold integers, got dtype {active.dtype}")
    active = active.astype(np.int64)
    m = active.shape[0]
    if m and active.min() < 0:
        raise ValueError(f"active_indices must be >= 0, got {active.min()}")
    if np.unique(active).shape[0] != m:
        raise ValueError("active_indices contains repeated indices")

    # A mean of length m is already restricted to the active set; a longer one covers all features.
    n_features = None if mean.shape[0] == m else mean.shape[0]
    if feature_names is not None:
        names = np.asarray(feature_names)
        if names.ndim != 1 or (n_features is not None and names.shape[0] != n_features):
            raise ValueError(
                f"feature_names must be 1-D, one entry per feature ({n_features}), got shape {names.shape}"
            )
        n_features = names.shape[0]
    if m and n_features is not None and active.max() >= n_features:
        raise ValueError(
            f"active_indices must lie in [0, {n_features}) (the number of features), got a maximum of "
            f"{active.max()}; mean must have n_features entries or exactly one per active index"
        )
    mean_active = mean if mean.shape[0] == m else mean[active]
    feature_coord = active if feature_names is None else names[active]

    cov = _as_real_array(cov, "cov").astype(np.float64, copy=False)
    if cov.shape != (m, m):
        raise ValueError(f"cov must have shape (m, m) = ({m}, {m}) for {m} active indices, got {cov.shape}")
    scale = float(np.abs(cov).max()) if m else 0.0
    if not np.allclose(cov, cov.T, rtol=1e-8, atol=1e-12 * scale):
        raise ValueError("cov is not symmetric")

    optimization = {}
    if log_evidence_trace is not None:
        trace = _as_real_array(log_evidence_trace, "log_evidence_trace").astype(np.float64, copy=False)
        if trace.ndim != 1:
            raise ValueError(f"log_evidence_trace must be 1-D (n_iterations,), got shape {trace.shape}")
        optimization["log_evidence"] = trace
    if noise_var is not None:
        optimization["noise_var"] = np.float64(check_positive_real(noise_var, "noise_var"))

    rng = np.random.default_rng(seed)
    draws = mean_active + rng.standard_normal((num_draws, m)) @ _psd_factor(cov).T

    idata = samples_to_inference_data(
        {"w": draws[np.newaxis]},
        dims={"w": ["feature"], "log_evidence": ["iteration"], "noise_var": []},
        coords={"feature": feature_coord},
        optimization=optimization or None,
        attrs={"posterior_family": "gaussian"},
        inference_library="probsparse",
    )
    idata.posterior.coords["feature_index"] = ("feature", active)
    return idata


def _psd_factor(cov: np.ndarray) -> np.ndarray:
    """``L`` with ``L @ L.T == cov`` for a symmetric positive semi-definite ``cov`` (eigendecomposition)."""
    if cov.shape[0] == 0:
        return cov
    eigvals, eigvecs = np.linalg.eigh(0.5 * (cov + cov.T))
    tol = 1e-10 * max(float(eigvals.max()), np.finfo(np.float64).tiny)
    if eigvals.min() < -tol:
        raise ValueError(
            f"cov is not positive semi-definite: smallest eigenvalue {eigvals.min():.3e} "
            f"(largest {eigvals.max():.3e})"
        )
    return eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))
