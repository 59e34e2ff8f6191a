"""No-U-Turn sampling of any probsparse (Pyro) model with Pyro's NUTS."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from pyro.infer import MCMC, NUTS

from probsparse._validation import check_positive_int

from .svi import (
    _check_data,
    _constant_sites,
    _predictive_samples,
    _reference_trace,
    _seeded,
    _to_inference_data,
)

__all__ = ["MCMCResult", "fit_nuts"]


@dataclass
class MCMCResult:
    r"""Outcome of :func:`fit_nuts`.

    Attributes
    ----------
    samples : dict of {str : ndarray of shape (num_chains, num_samples, \*site_shape)}
        Draws of every latent and deterministic site of the model (for
        :class:`~probsparse.models.SparseLinearModel`: ``w``, ``w_raw``, ``w_gamma``, ``noise_scale``...).
    sample_stats : dict of {str : ndarray of shape (num_chains, num_samples)}
        ``diverging`` (bool: the draw ended a divergent trajectory) and ``step_size`` (the adapted step
        size in use).
    acceptance_rate : ndarray of shape (num_chains,)
        Mean acceptance probability of each chain after warm-up, as Pyro reports it.
    model : callable
    X : ndarray of shape (n, n_features)
    y : ndarray of shape (n,)
    constant_sites : tuple of str
        Deterministic sites that are the same in every draw (model constants, e.g. a fixed ARD variance);
        :meth:`to_inference_data` stores them in ``constant_data``.
    """

    samples: dict[str, np.ndarray]
    sample_stats: dict[str, np.ndarray]
    acceptance_rate: np.ndarray
    model: Callable = field(repr=False)
    X: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    constant_sites: tuple[str, ...] = ()

    def to_inference_data(self, *, dims=None, coords=None, feature_names=None):
        """ArviZ data: ``posterior`` and ``sample_stats`` with ``(chain, draw)`` dims, plus the data groups.

        Parameters are as in :meth:`probsparse.inference.svi.SVIResult.to_inference_data`.
        """
        return _to_inference_data(
            self,
            dict(self.samples),
            sample_stats=self.sample_stats,
            optimization=None,
            attrs={"inference_method": "nuts"},
            dims=dims,
            coords=coords,
            feature_names=feature_names,
        )


def fit_nuts(
    model: Callable,
    X,
    y,
    *,
    num_samples: int = 500,
    warmup_steps: int = 500,
    num_chains: int = 1,
    seed: int = 0,
    progress: bool = False,
) -> MCMCResult:
    r"""Sample the posterior :math:`p(z \mid X, y)` of ``model(X, y)`` with NUTS.

    Every latent site of the model is sampled; hyperparameters must therefore be fixed or given priors
    (e.g. ``ARDPrior(variance=...)`` or ``ARDPrior(precision_prior=(a, b))``): a model with free
    ``pyro.param`` sites (type-II, ``ARDPrior()``) is rejected, as NUTS would silently hold them at their
    initial values. Fit those by :func:`~probsparse.inference.svi.fit_svi`.

    Chains run one after another in this process, each with its own seed derived from ``seed``
    (``numpy.random.SeedSequence(seed).spawn``); no worker processes are started.

    Parameters
    ----------
    model : callable
        Pyro model called as ``model(X, y)``; validated by its ``check_data`` method if it has one.
    X : torch.Tensor or array_like of shape (n, n_features)
    y : torch.Tensor or array_like of shape (n,)
    num_samples : int, default=500
        Draws kept per chain.
    warmup_steps : int, default=500
        Adaptation steps per chain (step size and diagonal mass matrix), discarded.
    num_chains : int, default=1
    seed : int, default=0
        The global random states of ``random``, NumPy and torch are restored afterwards.
    progress : bool, default=False
        Show Pyro's progress bar.

    Returns
    -------
    MCMCResult

    Raises
    ------
    ValueError
        On invalid data or arguments, or when the model has free ``pyro.param`` hyperparameters.
    """
    num_samples = check_positive_int(num_samples, "num_samples")
    warmup_steps = check_positive_int(warmup_steps, "warmup_steps", minimum=0)
    num_chains = check_positive_int(num_chains, "num_chains")
    seed = check_positive_int(seed, "seed", minimum=0)
    X, y = _check_data(model, X, y)

    with _seeded(seed):
        reference = _reference_trace(model, X, y)
    free = [name for name, site in reference.nodes.items() if site["type"] == "param"]
    if free:
        raise ValueError(
            f"model has free hyperparameters (pyro.param sites {free}) that NUTS cannot sample; give them "
            "fixed values or priors (e.g. ARDPrior(variance=...) or ARDPrior(precision_prior=(a, b))), or "
            "fit the model by SVI"
        )

    chain_seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(num_chains)]
    chains, diverging, step_size, acceptance = [], [], [], []
    for chain_seed in chain_seeds:
        with _seeded(chain_seed):
            sizes = np.empty(num_samples)

            def record_step_size(kernel, params, stage, i, sizes=sizes):
                if stage.startswith("Sample"):
                    sizes[i] = kernel.step_size

            mcmc = MCMC(
                NUTS(model),
                num_samples=num_samples,
                warmup_steps=warmup_steps,
                num_chains=1,
                disable_progbar=not progress,
                hook_fn=record_step_size,
            )
            mcmc.run(X, y)
            latent = mcmc.get_samples()
            chains.append(_predictive_samples(model, X, y, reference, latent))
            info = mcmc.diagnostics()
            flags = np.zeros(num_samples, dtype=bool)
            flags[np.asarray(info["divergences"]["chain 0"], dtype=np.int64)] = True
            diverging.append(flags)
            step_size.append(sizes)
            acceptance.append(float(info["acceptance rate"]["chain 0"]))

    samples = {name: np.stack([c[name] for c in chains]) for name in chains[0]}
    return MCMCResult(
        samples=samples,
        sample_stats={"diverging": np.stack(diverging), "step_size": np.stack(step_size)},
        acceptance_rate=np.asarray(acceptance),
        model=model,
        X=X.detach().cpu().numpy(),
        y=y.detach().cpu().numpy(),
        constant_sites=_constant_sites(reference, samples, n_sample_axes=2),
    )
