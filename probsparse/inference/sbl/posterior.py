"""The result type shared by the sparse Bayesian learning engines."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SBLPosterior:
    r"""Gaussian posterior of the weights of :math:`Y = \Phi W + E` at the fitted hyperparameters.

    With prior :math:`w_i \sim \mathcal{N}(0, \gamma_i)` and noise variance :math:`\sigma^2`, the posterior of
    the active weights (:math:`\gamma_i > 0`) is :math:`\mathcal{N}(\mu, \Sigma)` column by column, with
    :math:`\Sigma = (\Phi_A^H \Phi_A / \sigma^2 + \Gamma_A^{-1})^{-1}` shared by all :math:`L` columns and
    :math:`\mu = \Sigma \Phi_A^H Y / \sigma^2`; inactive weights are exactly zero.

    Attributes
    ----------
    coef : ndarray of shape (d,) or (d, L)
        Posterior mean, exact zeros outside the active set; the shape follows the targets.
    active : ndarray of shape (d,), bool
        The active set :math:`A`.
    gamma : ndarray of shape (d,)
        Prior variances :math:`\gamma_i` (0.0 outside the active set).
    cov : ndarray of shape (m, m)
        Posterior covariance over the active set, in the order of ``np.flatnonzero(active)``.
    noise_var : float
        Noise variance :math:`\sigma^2` (fixed or learned).
    log_evidence : ndarray of shape (n_iter,)
        Log marginal likelihood :math:`\log p(Y \mid \gamma, \sigma^2)` at the iterate of each iteration
        (see :func:`probsparse.inference.sbl.log_evidence` for the constant convention).
    n_iter : int
        Number of iterations run.
    converged : bool
        Whether the stopping rule was met before ``max_iter``.
    engine : str
        Name of the engine that produced the result (``"em"``, ``"mackay"``, ``"tipping_faul"``).
    """

    coef: np.ndarray
    active: np.ndarray
    gamma: np.ndarray
    cov: np.ndarray
    noise_var: float
    log_evidence: np.ndarray
    n_iter: int
    converged: bool
    engine: str

    @property
    def n_active(self) -> int:
        """Number of active weights :math:`m = |A|`."""
        return int(np.count_nonzero(self.active))

    def predict(self, Phi_new, return_std: bool = False):
        r"""Posterior predictive mean and standard deviation at new design rows.

        .. math::

            \mathbb{E}[y_*] = \Phi_* \mu, \qquad
            \operatorname{sd}[y_*] = \sqrt{\sigma^2 + \phi_{*,A}^H \Sigma \phi_{*,A}}

        Parameters
        ----------
        Phi_new : array_like of shape (n_new, d)
        return_std : bool
            Also return the predictive standard deviation (noise included), shared by all target columns.

        Returns
        -------
        mean : ndarray of shape (n_new,) or (n_new, L)
        std : ndarray of shape (n_new,)
            Only when ``return_std``.
        """
        Phi_new = np.asarray(Phi_new)
        d = self.active.shape[0]
        if Phi_new.ndim != 2 or Phi_new.shape[1] != d:
            raise ValueError(f"Phi_new must have shape (n_new, {d}), got {Phi_new.shape}")
        if Phi_new.dtype.kind not in "fciu":
            raise TypeError(f"Phi_new must hold numbers, got dtype {Phi_new.dtype}")
        idx = np.flatnonzero(self.active)
        Phi_a = Phi_new[:, idx]
        coef_a = self.coef[idx]
        mean = Phi_a @ coef_a
        if not return_std:
            return mean
        # Row-wise r Sigma r^H (r a row of Phi_new) without forming the (n_new, n_new) matrix.
        quad = np.einsum("ij,ij->i", Phi_a @ self.cov, Phi_a.conj()).real
        std = np.sqrt(self.noise_var + np.maximum(quad, 0.0))
        return mean, std
