"""Fit a :class:`~probsparse.models.SparseLinearModel` with an SBL engine.

This is the seam that lets one model object be fitted by the fast engines as well as by Pyro SVI / NUTS:
the engines read only what defines the type-II problem, the prior's mode and the noise.
"""

from __future__ import annotations

import numpy as np

from probsparse.inference.sbl.posterior import SBLPosterior


def fit_model(model, X, y, *, engine: str = "tipping_faul", **engine_kwargs) -> SBLPosterior:
    r"""Maximise the evidence of ``model`` with an SBL engine and return the Gaussian posterior.

    ``model`` must be a :class:`~probsparse.models.SparseLinearModel` whose prior is an
    :class:`~probsparse.priors.ARDPrior` in type-II mode (free variances γ, ``variance=None`` and no
    hyperprior): the engines maximise :math:`\log p(y \mid \gamma, \sigma^2)` over γ. The noise variance is
    fixed when ``model.noise_var`` is set; otherwise it is learned by the same evidence maximisation (the
    model's HalfCauchy noise prior is then not used: the engines treat σ² as a hyperparameter).

    Parameters
    ----------
    model : SparseLinearModel
    X : array_like or torch.Tensor of shape (n, d)
    y : array_like or torch.Tensor of shape (n,)
    engine : {"tipping_faul", "em", "mackay"}
    **engine_kwargs
        Passed to the engine (``max_iter``, ``tol``, ...).

    Returns
    -------
    SBLPosterior
        Its ``gamma`` is what the model's ``w_gamma`` parameter means; with ``ARDPrior(variance=gamma)``
        (a fixed prior) SVI and NUTS on the same model target the same Gaussian posterior.
    """
    from probsparse.inference.sbl import ENGINES
    from probsparse.models import SparseLinearModel
    from probsparse.priors import ARDPrior

    if not isinstance(model, SparseLinearModel):
        raise TypeError(f"model must be a SparseLinearModel, got {type(model).__name__}")
    prior = model.prior
    if not isinstance(prior, ARDPrior) or not prior.is_type2:
        raise ValueError(
            "the SBL engines fit an ARDPrior in type-II mode (free variances: ARDPrior() with no variance and "
            f"no precision_prior); this model's prior is {prior!r}. Fit it with "
            "probsparse.inference.svi.fit_svi or probsparse.inference.mcmc.fit_nuts instead."
        )
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {sorted(ENGINES)}, got {engine!r}")
    if y is None:
        raise ValueError("y is required: the engines fit the model to observed targets")
    X_t, y_t = model.check_data(X, y)
    X_np = X_t.detach().cpu().numpy().astype(np.float64)
    y_np = y_t.detach().cpu().numpy().astype(np.float64)
    return ENGINES[engine](X_np, y_np, noise_var=model.noise_var, **engine_kwargs)
