"""Stochastic variational inference for any probsparse (Pyro) model.

The pieces stay separate and public: the model (e.g. :class:`~probsparse.models.SparseLinearModel`), the
guide (:func:`make_guide`), and the objective (``pyro.infer.Trace_ELBO``). :func:`fit_svi` is a
convenience loop over them; a user who wants to own the loop writes::

    guide = make_guide(model, "mvn")
    optim = pyro.optim.ClippedAdam({"lr": 0.01, "lrd": 0.1 ** (1 / 2000)})
    svi = pyro.infer.SVI(model, guide, optim, pyro.infer.Trace_ELBO())
    for step in range(2000):
        svi.step(X, y)

Free hyperparameters of the model (type-II variances, ``pyro.param`` sites) are optimised jointly with the
guide, which maximises the ELBO over them: variational type-II maximum likelihood.

:func:`fit` (defined in :mod:`probsparse.inference.fitting`, re-exported here) is the general loop: Pyro models
*and* Bayesian torch networks, minibatches with the right KL scaling, KL warm-up, learning-rate schedules,
validation, early stopping, callbacks, checkpoints and resume. :func:`fit_svi` is the full-batch loop that also
draws posterior samples (:class:`SVIResult`).
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal
from pyro.poutine.util import prune_subsample_sites
from tqdm import tqdm

from probsparse._validation import check_positive_int, check_positive_real
from probsparse.inference.fitting import FitResult, fit

__all__ = ["FitResult", "SVIResult", "fit", "fit_svi", "make_guide"]

_GUIDES = {"normal": AutoNormal, "mvn": AutoMultivariateNormal}


def make_guide(model: Callable, guide: str | Callable | None = None) -> Callable:
    """The variational family for ``model``.

    Parameters
    ----------
    model : callable
        Pyro model.
    guide : {None, "normal", "mvn"} or callable, default=None
        ``None`` or ``"normal"``: :class:`~pyro.infer.autoguide.AutoNormal` (mean field, one location and
        scale per latent site, in unconstrained space). ``"mvn"``:
        :class:`~pyro.infer.autoguide.AutoMultivariateNormal` (a full-covariance Gaussian over all
        latent sites, unconstrained). A callable is returned as it is (a hand-written guide).

    Returns
    -------
    callable
        The guide; auto-guides create their parameters on first call.
    """
    if guide is None:
        return AutoNormal(model)
    if isinstance(guide, str):
        if guide not in _GUIDES:
            raise ValueError(f"guide must be None, one of {sorted(_GUIDES)} or a callable, got {guide!r}")
        return _GUIDES[guide](model)
    if not callable(guide):
        raise TypeError(f"guide must be None, a string or a callable, got {type(guide).__name__}")
    return guide


@dataclass
class SVIResult:
    r"""Outcome of :func:`fit_svi`.

    Attributes
    ----------
    guide : callable
        The fitted guide; its parameters live in Pyro's param store.
    losses : ndarray of shape (n_steps_run,)
        Loss (negative ELBO, nats) after each step.
    params : dict of {str : ndarray}
        The model's own ``pyro.param`` values after fitting (constrained), e.g. the type-II variances
        ``"w_gamma"`` of shape ``(n_features,)``; guide parameters are not included.
    samples : dict of {str : ndarray of shape (num_samples, \*site_shape)}
        Draws of every latent and deterministic site of the model from the fitted guide (for
        :class:`~probsparse.models.SparseLinearModel`: ``w``, ``w_raw``, ``noise_scale``, ...).
    model : callable
        The model that was fitted.
    X : ndarray of shape (n, n_features)
    y : ndarray of shape (n,)
    constant_sites : tuple of str
        Deterministic sites of ``samples`` that are the same in every draw (model constants, e.g. a fixed
        ARD variance ``"w_gamma"``); :meth:`to_inference_data` stores them in ``constant_data``.
    """

    guide: Callable
    losses: np.ndarray
    params: dict[str, np.ndarray]
    samples: dict[str, np.ndarray]
    model: Callable = field(repr=False)
    X: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    constant_sites: tuple[str, ...] = ()

    def to_inference_data(self, *, dims=None, coords=None, feature_names=None):
        """ArviZ data of the fit (see :mod:`probsparse.diagnostics.arviz` for the layout).

        The guide's draws form the ``posterior`` group as one chain; ``X`` and the ``constant_sites`` go
        to ``constant_data``, ``y`` to ``observed_data``; the loss trace (dim ``step``) and the model's
        ``params`` go to the ``optimization`` group.

        Parameters
        ----------
        dims : dict of {str : list of str}, optional
            Extra or overriding dim names; the model's ``dims`` attribute (if any) is the default.
        coords : dict, optional
            Extra coordinates.
        feature_names : sequence of str, optional
            Coordinates of the ``feature`` dim (default ``0 .. n_features - 1``).
        """
        return _to_inference_data(
            self,
            {name: value[np.newaxis] for name, value in self.samples.items()},
            sample_stats=None,
            optimization={"loss": self.losses, **self.params},
            attrs={"inference_method": "svi", "guide": type(self.guide).__name__},
            dims=dims,
            coords=coords,
            feature_names=feature_names,
        )


def fit_svi(
    model: Callable,
    X,
    y,
    *,
    guide: str | Callable | None = None,
    num_steps: int = 2000,
    lr: float = 0.01,
    lr_decay: float = 0.1,
    num_particles: int = 1,
    num_samples: int = 1000,
    seed: int = 0,
    progress: bool = False,
    callback: Callable[[int, float], bool | None] | None = None,
) -> SVIResult:
    r"""Fit ``model(X, y)`` by stochastic variational inference: ``Trace_ELBO`` with a decaying Adam step.

    .. math::

        \max_{\phi, \theta}\; \mathrm{ELBO}(\phi, \theta) =
        \mathbb E_{q_\phi(z)}\big[\log p_\theta(y, z \mid X) - \log q_\phi(z)\big],

    over the guide's parameters :math:`\phi` and the model's free hyperparameters :math:`\theta`
    (``pyro.param`` sites, e.g. type-II ARD variances).

    .. note:: ``fit_svi`` **clears Pyro's global param store** at the start, so parameters of earlier
       fits (and any values set by hand) are discarded. After it returns, the store holds this fit's
       parameters.

    Parameters
    ----------
    model : callable
        Pyro model called as ``model(X, y)``; if it has a ``check_data(X, y)`` method (as
        :class:`~probsparse.models.SparseLinearModel` does) the data are validated by it once up front.
    X : torch.Tensor or array_like of shape (n, n_features)
    y : torch.Tensor or array_like of shape (n,)
    guide : {None, "normal", "mvn"} or callable, default=None
        See :func:`make_guide`.
    num_steps : int, default=2000
        Number of optimisation steps.
    lr : float, default=0.01
        Initial Adam learning rate (:class:`pyro.optim.ClippedAdam`, default gradient clipping).
    lr_decay : float, default=0.1
        Factor in ``(0, 1]`` by which the learning rate decays, geometrically, over ``num_steps``
        (``lrd = lr_decay ** (1 / num_steps)``). A decaying step lets the last iterate settle instead of
        jittering at the scale of a constant step; ``1.0`` keeps the rate constant.
    num_particles : int, default=1
        Monte Carlo samples per ELBO estimate, vectorised over an extra plate (the model must broadcast
        over outer plates, as :class:`~probsparse.models.SparseLinearModel` does).
    num_samples : int, default=1000
        Number of draws from the fitted guide in :attr:`SVIResult.samples`. They are drawn in one
        vectorised ``Predictive`` pass, so a hand-written guide must broadcast over an outer plate too.
    seed : int, default=0
        Seed for the whole fit (initialisation, ELBO estimates, draws). The global random states of
        ``random``, NumPy and torch are restored afterwards.
    progress : bool, default=False
        Show a ``tqdm`` progress bar with the current loss.
    callback : callable, optional
        Called as ``callback(step, loss)`` after every step; returning ``True`` stops the loop.

    Returns
    -------
    SVIResult

    Raises
    ------
    ValueError
        On invalid data or arguments.
    FloatingPointError
        When the loss becomes NaN or infinite (lower ``lr`` or rescale the data).
    """
    num_steps = check_positive_int(num_steps, "num_steps")
    lr = check_positive_real(lr, "lr")
    lr_decay = check_positive_real(lr_decay, "lr_decay")
    if lr_decay > 1:
        raise ValueError(f"lr_decay must be in (0, 1], got {lr_decay}")
    num_particles = check_positive_int(num_particles, "num_particles")
    num_samples = check_positive_int(num_samples, "num_samples")
    seed = check_positive_int(seed, "seed", minimum=0)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    X, y = _check_data(model, X, y)

    pyro.clear_param_store()
    with _seeded(seed):
        reference = _reference_trace(model, X, y)
        guide = make_guide(model, guide)
        optim = pyro.optim.ClippedAdam({"lr": lr, "lrd": lr_decay ** (1.0 / num_steps)})
        elbo = Trace_ELBO(
            num_particles=num_particles,
            vectorize_particles=num_particles > 1,
            max_plate_nesting=_max_plate_nesting(reference),
        )
        svi = SVI(model, guide, optim, elbo)
        losses = np.empty(num_steps)
        n_run = num_steps
        with tqdm(total=num_steps, disable=not progress, desc="SVI") as bar:
            for step in range(num_steps):
                loss = svi.step(X, y)
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"the ELBO loss became {loss} at step {step}; try a smaller lr or rescaled data"
                    )
                losses[step] = loss
                bar.update(1)
                if step % 50 == 0 or step == num_steps - 1:
                    bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
                if callback is not None and callback(step, loss):
                    n_run = step + 1
                    break
        latent = _guide_samples(guide, X, y, reference, num_samples)
        samples = _predictive_samples(model, X, y, reference, latent)
    params = {
        name: pyro.param(name).detach().cpu().numpy().copy()
        for name, site in reference.nodes.items()
        if site["type"] == "param"
    }
    return SVIResult(
        guide=guide,
        losses=losses[:n_run],
        params=params,
        samples=samples,
        model=model,
        X=X.detach().cpu().numpy(),
        y=y.detach().cpu().numpy(),
        constant_sites=_constant_sites(reference, samples),
    )


# ---------------------------------------------------------------------------------------------------------
# Helpers shared with probsparse.inference.mcmc


def _check_data(model, X, y) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated tensors ``X`` (n, d) and ``y`` (n,), by the model's ``check_data`` if it has one."""
    if y is None:
        raise ValueError("y is None: fitting needs observed targets")
    check = getattr(model, "check_data", None)
    if check is not None:
        return check(X, y)
    X = X if torch.is_tensor(X) else torch.as_tensor(np.asarray(X))
    y = y if torch.is_tensor(y) else torch.as_tensor(np.asarray(y))
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"X must be 2-D (n, n_features) with at least one row, got shape {tuple(X.shape)}")
    if y.shape[:1] != X.shape[:1]:
        raise ValueError(f"X and y have different numbers of rows: {X.shape[0]} and {tuple(y.shape)}")
    for value, name in ((X, "X"), (y, "y")):
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"{name} contains NaN or infinite values; all entries must be finite")
    return X, y


@contextlib.contextmanager
def _seeded(seed: int):
    """Seed ``random``, NumPy and torch (``pyro.set_rng_seed``) in the block; restore their states after."""
    py_state = random.getstate()
    # pyro.set_rng_seed seeds NumPy's legacy global generator, so that is the state to restore.
    np_state = np.random.get_state()  # noqa: NPY002
    with torch.random.fork_rng(devices=[]):
        pyro.set_rng_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)  # noqa: NPY002


def _reference_trace(model, X, y):
    """One recorded run of ``model(X, y)``, hidden from outer handlers (for site names and shapes)."""
    with torch.no_grad(), poutine.block():
        return prune_subsample_sites(poutine.trace(model).get_trace(X, y))


def _max_plate_nesting(trace) -> int:
    """Number of nested vectorised plates in a model trace."""
    dims = [
        frame.dim
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    ]
    return -min(dims) if dims else 0


def _recorded_sites(trace) -> dict[str, torch.Size]:
    """Latent and deterministic sample sites of a model trace, with their (unbatched) shapes."""
    return {
        name: site["value"].shape
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
        and (not site["is_observed"] or site["infer"].get("_deterministic", False))
    }


def _latent_sites(trace) -> dict[str, torch.Size]:
    """Latent (sampled, unobserved) sites of a model trace, with their unbatched shapes."""
    return {
        name: site["value"].shape
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"]
    }


def _guide_samples(guide, X, y, reference, num_samples: int) -> dict[str, torch.Tensor]:
    """Draws of the model's latent sites from a fitted guide, shape ``(num_samples,) + site_shape``."""
    latent = _latent_sites(reference)
    predictive = Predictive(guide, num_samples=num_samples, return_sites=list(latent), parallel=True)
    with torch.no_grad():
        draws = predictive(X, y)
    missing = sorted(set(latent) - set(draws))
    if missing:
        raise ValueError(f"the guide does not sample the model's latent sites {missing}")
    return {name: draws[name].reshape((num_samples,) + tuple(shape)) for name, shape in latent.items()}


def _predictive_samples(model, X, y, reference, posterior_samples) -> dict[str, np.ndarray]:
    """Latent and deterministic sites of ``model`` given draws of its latent sites, as ndarrays.

    ``posterior_samples`` maps each latent site to a tensor of shape ``(S,) + site_shape``. Before the
    vectorised ``Predictive`` run, each gets the singleton dims that stand for the model's plates it is not
    in (``Predictive`` would otherwise read an event dim as a plate dim). Returns arrays of shape
    ``(S,) + site_shape``.
    """
    sites = _recorded_sites(reference)
    max_plate_nesting = _max_plate_nesting(reference)
    padded = {}
    for name, value in posterior_samples.items():
        n_batch = len(reference.nodes[name]["fn"].batch_shape)
        extra = (1,) * max(max_plate_nesting - n_batch, 0)
        padded[name] = value.reshape(value.shape[:1] + extra + value.shape[1:])
    num_samples = next(iter(padded.values())).shape[0]
    predictive = Predictive(model, posterior_samples=padded, return_sites=list(sites), parallel=True)
    with torch.no_grad():
        draws = predictive(X, y)
    return {
        name: draws[name].reshape((num_samples,) + tuple(shape)).detach().cpu().numpy().copy()
        for name, shape in sites.items()
    }


def _constant_sites(reference, samples: dict[str, np.ndarray], n_sample_axes: int = 1) -> tuple[str, ...]:
    """Deterministic sites with the same value in every draw: model constants, e.g. a fixed ARD variance.

    ``samples`` holds arrays with ``n_sample_axes`` leading sample axes.
    """
    constant = []
    for name, value in samples.items():
        draws = value.reshape((-1, *value.shape[n_sample_axes:]))
        if reference.nodes[name]["infer"].get("_deterministic", False) and np.all(draws == draws[:1]):
            constant.append(name)
    return tuple(constant)


def _to_inference_data(result, samples, *, sample_stats, optimization, attrs, dims, coords, feature_names):
    """ArviZ data of an engine result; its constant sites go to ``constant_data`` without sample dims."""
    from probsparse.diagnostics.arviz import samples_to_inference_data

    X = result.X
    all_dims = {"X": ["obs_id", "feature"], "y": ["obs_id"], "loss": ["step"]}
    all_dims.update(getattr(result.model, "dims", {}) or {})
    if dims is not None:
        all_dims.update(dims)
    all_coords = {"obs_id": np.arange(X.shape[0]), "feature": np.arange(X.shape[1])}
    if feature_names is not None:
        names = np.asarray(feature_names)
        if names.shape != (X.shape[1],):
            raise ValueError(f"feature_names must have {X.shape[1]} entries, got shape {names.shape}")
        all_coords["feature"] = names
    if coords is not None:
        all_coords.update(coords)
    constant_data = {"X": X}
    for name in result.constant_sites:
        constant_data[name] = samples.pop(name)[0, 0]
    return samples_to_inference_data(
        samples,
        dims=all_dims,
        coords=all_coords,
        sample_stats=sample_stats,
        observed_data={"y": result.y},
        constant_data=constant_data,
        optimization=optimization,
        attrs=attrs,
        inference_library="pyro",
    )
