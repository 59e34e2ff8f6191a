r"""Sparse Bayesian learning (SBL) engines on NumPy arrays.

Model: :math:`Y = \Phi W + E`, :math:`\Phi` of shape (n, d), :math:`Y` of shape (n,) or (n, L) (columns share
one support), :math:`w_{i\cdot} \sim \mathcal{N}(0, \gamma_i I)`, :math:`E \sim \mathcal{N}(0, \sigma^2 I)`,
real or circular complex. Every engine maximises the evidence :math:`\log p(Y \mid \gamma, \sigma^2)` over
:math:`\gamma` (and :math:`\sigma^2` when it is learned) and returns an :class:`SBLPosterior`.

``ENGINES`` maps a name to its function: ``"em"`` (:func:`fit_em`), ``"mackay"`` (:func:`fit_mackay`) and
``"tipping_faul"`` (:func:`fit_tipping_faul`, the fast sequential algorithm, usually the one to use).
:func:`fit_model` fits a :class:`~probsparse.models.SparseLinearModel` (the Pyro model) with any of them.
"""

from probsparse.inference.sbl.evidence import log_evidence, posterior_given_gamma
from probsparse.inference.sbl.fixed_point import fit_em, fit_mackay
from probsparse.inference.sbl.kronecker import KroneckerSBLPosterior, fit_kronecker_sbl, kronecker_posterior
from probsparse.inference.sbl.kronecker_pc import fit_pc_kronecker_sbl
from probsparse.inference.sbl.model_adapter import fit_model
from probsparse.inference.sbl.posterior import SBLPosterior
from probsparse.inference.sbl.tipping_faul import fit_tipping_faul

ENGINES = {
    "em": fit_em,
    "mackay": fit_mackay,
    "tipping_faul": fit_tipping_faul,
}

__all__ = [
    "ENGINES",
    "KroneckerSBLPosterior",
    "SBLPosterior",
    "fit_em",
    "fit_kronecker_sbl",
    "fit_mackay",
    "fit_model",
    "fit_pc_kronecker_sbl",
    "fit_tipping_faul",
    "kronecker_posterior",
    "log_evidence",
    "posterior_given_gamma",
]
