r"""Sparse deep kernel machine (DKM): learned Gram matrices at inducing points, linear in the data size.

A DKM (Yang et al., 2023) replaces each hidden layer of a deep GP by its Gram matrix :math:`G_\ell`, learned
by maximising

.. math::

    \mathcal L = \log p(y \mid G_L) - \sum_{\ell=1}^L \nu_\ell\,
    \mathrm{KL}\big(\mathcal N(0, G_\ell) \,\|\, \mathcal N(0, K_\ell(G_{\ell-1}))\big),
    \qquad \mathrm{KL}(\mathcal N(0, G)\|\mathcal N(0, K)) = \tfrac12\big[\mathrm{tr}(K^{-1}G)
    - \log|K^{-1}G| - P\big].

Here :math:`G_0 = \sigma_b^2 + \sigma_w^2 XX^\top/d` is the first (linear) layer's covariance, fixed, and
:math:`K_\ell(G) = \sigma_b^2 + \sigma_w^2\, \mathbb E[\mathrm{relu}(u)\mathrm{relu}(v)]` is the arc-cosine
map of :mod:`probsparse.models.gp.nngp`, also used for the output kernel :math:`c\,K_{L+1}(G_L)`. (The
learned Grams start after a nonlinearity because :math:`G_0` has rank at most :math:`d + 1`, which makes a
KL to it degenerate.) As :math:`\nu_\ell \to \infty`, :math:`G_\ell = K_\ell(G_{\ell-1})` and the model is
the GP with the depth-:math:`(L+1)` ReLU NNGP kernel.

**Sparse version.** Only the inducing blocks :math:`G^\ell_{ii}` (:math:`M \times M`, at learned inducing
inputs :math:`Z`) are parameters; the data blocks follow from the Gaussian conditional given
:math:`K = K_\ell(G_{\ell-1})`,

.. math::

    G_{ti} = K_{ti}K_{ii}^{-1}G_{ii}, \qquad
    \mathrm{diag}\,G_{tt} = \mathrm{diag}\big(K_{tt} - K_{ti}K_{ii}^{-1}K_{it} + K_{ti}K_{ii}^{-1}G_{ii}
    K_{ii}^{-1}K_{it}\big),

(the arc-cosine map needs only the diagonal of :math:`G_{tt}`), the KL terms use the inducing blocks, and the
output layer is an SVGP with :math:`q(u) = \mathcal N(L m, L S L^\top)`, :math:`LL^\top = cK^{L+1}_{ii}`,
so :math:`\log p(y \mid G_L)` is replaced by its evidence lower bound. A step costs
:math:`O(nM^2 + LM^3)`: linear in :math:`n`.
"""

from __future__ import annotations

import math

import torch

from ..._validation import check_positive_int
from ._inputs import as_inputs, as_targets, check_positive, initial_inducing_points
from ._training import fit_loop, relative_change
from .nngp import relu_expectation

__all__ = ["SparseDKM", "gaussian_kl"]

_JITTER = 1e-6


def gaussian_kl(G: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    r""":math:`\mathrm{KL}(\mathcal N(0, G) \| \mathcal N(0, K)) = \frac12[\mathrm{tr}(K^{-1}G) - \log|K^{-1}G| - P]`.

    Parameters
    ----------
    G, K : Tensor of shape (P, P)
        Symmetric positive-definite matrices.

    Returns
    -------
    Tensor
        0-d KL divergence.

    Examples
    --------
    >>> import torch
    >>> gaussian_kl(torch.eye(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64)).item()
    0.0
    """
    LK = torch.linalg.cholesky(K)
    LG = torch.linalg.cholesky(G)
    W = torch.linalg.solve_triangular(LK, LG, upper=False)
    logdet = 2 * (torch.log(torch.diagonal(LG)).sum() - torch.log(torch.diagonal(LK)).sum())
    return 0.5 * ((W * W).sum() - logdet - G.shape[-1])


class SparseDKM(torch.nn.Module):
    r"""Sparse deep kernel machine regression (module docstring for the objective).

    .. math::

        \mathcal L = \sum_{t=1}^n \mathbb E_{q(f_t)}[\log \mathcal N(y_t \mid f_t, \sigma^2)]
        - \mathrm{KL}(q(u)\|p(u \mid G_L)) - \sum_\ell \nu_\ell\, \mathrm{KL}\big(\mathcal N(0, G^\ell_{ii})
        \,\|\, \mathcal N(0, K_\ell(G^{\ell-1}_{ii}))\big)

    Parameters
    ----------
    train_x : Tensor of shape (n, d)
        Training inputs (their dtype is the model's; float64 recommended).
    train_y : Tensor of shape (n,)
        Training targets.
    num_layers : int
        Number :math:`L \ge 1` of learned Gram layers (the NNGP limit has depth :math:`L + 1`).
    inducing_points : int or Tensor of shape (M, d)
        Number of inducing inputs (a seeded subset of the data) or their locations.
    dof : float
        :math:`\nu_\ell` (the same for every layer); large values pin the Grams to the NNGP.
    weight_variance, bias_variance : float
        :math:`\sigma_w^2, \sigma_b^2` of the layer kernels (fixed).
    noise : float
        Initial likelihood variance :math:`\sigma^2` (learned, as are :math:`c`, the constant mean, :math:`Z`,
        the Gram blocks and :math:`q(u)`).
    learn_inducing : bool
        Whether :math:`Z` is optimised.
    seed : int
        Seed of the inducing-point choice.

    Attributes
    ----------
    losses_ : list of float
        Negative objective per data point at each step (after :meth:`fit`).
    converged_ : bool
        Relative loss change over the last 10 % of steps below ``tol``.

    References
    ----------
    Yang, Robeyns, Milsom, Anson, Schoots & Aitchison (2023), "A theory of representation learning gives a
    deep generalisation of kernel methods" (their :math:`G_\ell, \nu_\ell, P_i` are our Gram blocks,
    ``dof`` and ``M``). The formulas follow the project's reference notes, recalled from the paper and not
    checked line by line against it.

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(40, 3, dtype=torch.float64); y = torch.sin(x[:, 0])
    >>> dkm = SparseDKM(x, y, num_layers=2, inducing_points=8).fit(num_steps=5)
    >>> dkm.predict(x[:4]).mean.shape
    torch.Size([4])
    """

    def __init__(
        self,
        train_x,
        train_y,
        *,
        num_layers: int = 2,
        inducing_points=64,
        dof: float = 10.0,
        weight_variance: float = 2.0,
        bias_variance: float = 0.1,
        noise: float = 0.1,
        learn_inducing: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        self.train_x = as_inputs(train_x, "train_x")
        dtype = self.train_x.dtype
        self.train_y = as_targets(train_y, self.train_x.shape[0], "train_y", dtype=dtype)
        self.num_layers = check_positive_int(num_layers, "num_layers")
        self.dof = check_positive(dof, "dof")
        self.weight_variance = check_positive(weight_variance, "weight_variance")
        self.bias_variance = check_positive(bias_variance, "bias_variance")
        noise = check_positive(noise, "noise")
        z = initial_inducing_points(inducing_points, self.train_x, seed)
        self.inducing_points = torch.nn.Parameter(z, requires_grad=learn_inducing)
        m = z.shape[0]
        self.mean_constant = torch.nn.Parameter(self.train_y.median().detach().clone())
        self.log_outputscale = torch.nn.Parameter(torch.zeros((), dtype=dtype))
        self.log_noise = torch.nn.Parameter(torch.tensor(math.log(noise), dtype=dtype))
        # Whitened Gram blocks: G_ii = L W W^T L^T with L L^T = K_ell(G_{ell-1}) the layer's prior Gram, so the
        # KL is (tr(W W^T) - log|W W^T| - M)/2 whatever the conditioning of K; W = I is the NNGP start.
        self.gram_factors = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.eye(m, dtype=dtype)) for _ in range(self.num_layers)]
        )
        self.q_mean = torch.nn.Parameter(torch.zeros(m, dtype=dtype))
        self.q_chol = torch.nn.Parameter(torch.eye(m, dtype=dtype))

    # -- layer kernels -------------------------------------------------------------------------------
    def _first_kernel(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.bias_variance + self.weight_variance * (a @ b.T) / a.shape[-1]

    def _first_diag(self, a: torch.Tensor) -> torch.Tensor:
        return self.bias_variance + self.weight_variance * (a * a).sum(-1) / a.shape[-1]

    def _relu(self, k11, k22, k12):
        return self.bias_variance + self.weight_variance * relu_expectation(k11, k22, k12)

    # -- propagation ---------------------------------------------------------------------------------
    def _propagate(self, x: torch.Tensor):
        """Output-kernel blocks (K_ii, K_ti, diag K_tt) at ``x``, the inducing Grams and the per-layer KLs."""
        z = self.inducing_points
        eye = torch.eye(z.shape[0], dtype=x.dtype)
        # G_0: the first (linear) layer's covariance, fixed; the learned Grams start after a nonlinearity.
        G_ii, G_ti, g_tt = self._first_kernel(z, z), self._first_kernel(x, z), self._first_diag(x)
        kls, grams = [], []
        for W in self.gram_factors:
            g_ii = torch.diagonal(G_ii)
            K_ii = self._relu(g_ii.unsqueeze(-1), g_ii.unsqueeze(-2), G_ii)
            K_ti = self._relu(g_tt.unsqueeze(-1), g_ii.unsqueeze(-2), G_ti)
            K_tt = self._relu(g_tt, g_tt, g_tt)
            L = torch.linalg.cholesky(K_ii + _JITTER * eye)
            LW = L @ torch.tril(W)
            G_ii = LW @ LW.T + _JITTER * eye
            grams.append(G_ii)
            kls.append(0.5 * ((W.tril() ** 2).sum() - 2 * torch.log(torch.abs(torch.diagonal(W))).sum() - W.shape[0]))
            # A = K_ti K_ii^{-1}; G_ti = A G_ii; diag G_tt from the Gaussian conditional
            A = torch.cholesky_solve(K_ti.T, L).T
            G_ti = A @ G_ii
            g_tt = (K_tt - (A * K_ti).sum(-1) + (G_ti * A).sum(-1)).clamp_min(1e-12)
        g_ii = torch.diagonal(G_ii)
        c = torch.exp(self.log_outputscale)
        K_ii = c * self._relu(g_ii.unsqueeze(-1), g_ii.unsqueeze(-2), G_ii)
        K_ti = c * self._relu(g_tt.unsqueeze(-1), g_ii.unsqueeze(-2), G_ti)
        K_tt = c * self._relu(g_tt, g_tt, g_tt)
        return K_ii, K_ti, K_tt, kls, grams

    def gram_blocks(self) -> list[torch.Tensor]:
        """The learned inducing Gram blocks :math:`G^\\ell_{ii}`, ``ell = 1..L`` (each ``(M, M)``)."""
        with torch.no_grad():
            return self._propagate(self.inducing_points[:1])[4]

    def _latent(self, x: torch.Tensor):
        K_ii, K_ti, K_tt, kls, _ = self._propagate(x)
        M = K_ii.shape[0]
        L = torch.linalg.cholesky(K_ii + _JITTER * torch.eye(M, dtype=x.dtype))
        B = torch.linalg.solve_triangular(L, K_ti.T, upper=False)  # (M, n): L^{-1} K_it
        S_chol = torch.tril(self.q_chol)
        mean = self.mean_constant + B.T @ self.q_mean
        var = K_tt - (B * B).sum(0) + ((S_chol.T @ B) ** 2).sum(0)
        kl_u = 0.5 * (
            (S_chol * S_chol).sum()
            + (self.q_mean * self.q_mean).sum()
            - M
            - 2 * torch.log(torch.abs(torch.diagonal(S_chol))).sum()
        )
        return mean, var.clamp_min(1e-12), kl_u, kls

    def objective(self, x=None, y=None, num_data: int | None = None) -> torch.Tensor:
        """The sparse DKM objective (a lower bound's analogue of :math:`\\mathcal L`), scaled to ``num_data``."""
        x = self.train_x if x is None else x
        y = self.train_y if y is None else y
        n = self.train_x.shape[0] if num_data is None else num_data
        mean, var, kl_u, kls = self._latent(x)
        s2 = torch.exp(self.log_noise)
        ell = -0.5 * (torch.log(2 * math.pi * s2) + ((y - mean) ** 2 + var) / s2)
        return ell.sum() * (n / x.shape[0]) - kl_u - self.dof * sum(kls)

    def _optimal_q(self):
        r"""The collapsed full-batch objective and the optimal whitened :math:`q(v)`, :math:`u = Lv`.

        With :math:`B = L^{-1}K_{it}` (``(M, n)``), :math:`r = y - m` and :math:`\Lambda = I + BB^\top/\sigma^2`,
        the Gaussian likelihood makes the best :math:`q(v) = \mathcal N(\Lambda^{-1}Br/\sigma^2, \Lambda^{-1})`
        and the objective at it Titsias' bound,

        .. math::

            \log\mathcal N(r \mid 0, B^\top B + \sigma^2 I) - \frac{1}{2\sigma^2}\sum_t
            \big(K_{tt} - \|B_{:t}\|^2\big) - \sum_\ell \nu_\ell \mathrm{KL}_\ell,

        computed in :math:`O(nM^2)` through :math:`\Lambda`'s Cholesky factor :math:`L_\Lambda`
        (Woodbury and the matrix determinant lemma).

        Returns
        -------
        objective : Tensor
            0-d, equal to :meth:`objective` with ``q_mean``, ``q_chol`` at the optimum.
        mean : Tensor of shape (M,)
            Optimal whitened mean :math:`\Lambda^{-1}Br/\sigma^2`.
        chol_lambda : Tensor of shape (M, M)
            :math:`L_\Lambda`.
        """
        x, y = self.train_x, self.train_y
        n = x.shape[0]
        K_ii, K_ti, K_tt, kls, _ = self._propagate(x)
        M = K_ii.shape[0]
        eye = torch.eye(M, dtype=x.dtype)
        L = torch.linalg.cholesky(K_ii + _JITTER * eye)
        B = torch.linalg.solve_triangular(L, K_ti.T, upper=False)  # (M, n)
        s2 = torch.exp(self.log_noise)
        r = y - self.mean_constant
        chol_lambda = torch.linalg.cholesky(eye + B @ B.T / s2)
        Br = (B @ r) / s2
        c = torch.linalg.solve_triangular(chol_lambda, Br.unsqueeze(-1), upper=False).squeeze(-1)
        residual_var = (K_tt - (B * B).sum(0)).clamp_min(0.0)
        bound = -0.5 * (
            n * torch.log(2 * math.pi * s2)
            + 2 * torch.log(torch.diagonal(chol_lambda)).sum()
            + (r * r).sum() / s2
            - (c * c).sum()
            + residual_var.sum() / s2
        )
        mean = torch.cholesky_solve(Br.unsqueeze(-1), chol_lambda).squeeze(-1)
        return bound - self.dof * sum(kls), mean, chol_lambda

    def set_optimal_q(self) -> None:
        """Set ``q_mean``, ``q_chol`` to the optimal Gaussian :math:`q(v)` given the other parameters."""
        with torch.no_grad():
            _, mean, chol_lambda = self._optimal_q()
            cov = torch.cholesky_inverse(chol_lambda)  # Lambda^{-1}
            self.q_mean.copy_(mean)
            self.q_chol.copy_(torch.linalg.cholesky(cov))

    def fit(
        self,
        num_steps: int = 300,
        lr: float | None = None,
        *,
        batch_size: int | None = None,
        tol: float | None = 1e-4,
        optimizer: str | None = None,
        schedule: str = "cosine",
        min_steps: int | None = None,
        fallback_lr: float | None = 1e-3,
    ):
        r"""Maximise the objective (full batch, or minibatches of ``batch_size``).

        On the full batch, :math:`q(u)` is kept at its closed-form optimum (:meth:`_optimal_q`, Titsias'
        collapsed bound: the same maximum over fewer parameters) and written to ``q_mean``, ``q_chol`` at the
        end. That objective is deterministic, so the default there is L-BFGS with a strong-Wolfe line
        search (``lr`` its trial step, default 1; ``min_steps`` default 20), which hands the rest of the
        budget to Adam from ``fallback_lr`` with a cosine decay if its line search gets stuck before
        convergence (the objective has kinks: the absolute values of the factors' diagonals, clamped
        variances); with minibatches it is Adam
        (``lr`` default 0.01) with a cosine learning-rate decay to ``lr/100`` over ``num_steps``
        (``schedule="constant"`` keeps it fixed; ``min_steps`` default 100). The fit stops once converged
        (``tol=None`` always runs ``num_steps``, e.g. for timing): ``converged_`` is true when the relative
        change of the negative objective per point over the last 10 % of the steps is below ``tol`` (the
        spread of that window for the full-batch loss, a least-squares line through it for minibatch
        losses; :func:`~probsparse.models.gp._training.relative_change`).
        """
        n = self.train_x.shape[0]
        stochastic = batch_size is not None
        if optimizer is None:
            optimizer = "adam" if stochastic else "lbfgs"
        if lr is None:
            lr = 1.0 if optimizer == "lbfgs" else 0.01
        if min_steps is None:
            min_steps = 20 if optimizer == "lbfgs" else 100
        params = list(self.parameters())
        if not stochastic:
            # q(u) at its closed-form optimum (Titsias' collapsed bound): the same maximum, without the M(M+3)/2
            # variational parameters whose coupling to the Grams slows the optimiser down
            loss_fn = lambda: -self._optimal_q()[0] / n  # noqa: E731
            params = [p for p in params if p is not self.q_mean and p is not self.q_chol]
        else:
            batch_size = check_positive_int(batch_size, "batch_size")
            if optimizer == "lbfgs":
                raise ValueError("optimizer='lbfgs' needs the deterministic full-batch loss: use batch_size=None")
            gen = torch.Generator().manual_seed(0)

            def loss_fn():
                idx = torch.randint(0, n, (min(batch_size, n),), generator=gen)
                return -self.objective(self.train_x[idx], self.train_y[idx], num_data=n) / n

        self.losses_ = fit_loop(
            loss_fn,
            params,
            num_steps,
            lr,
            optimizer=optimizer,
            schedule=schedule,
            tol=tol,
            min_steps=min_steps,
            smooth=stochastic,
            fallback_lr=fallback_lr if optimizer == "lbfgs" else None,
        )
        if not stochastic:
            self.set_optimal_q()
        self.relative_change_ = relative_change(self.losses_, smooth=stochastic)
        self.converged_ = bool(tol is not None and self.relative_change_ < tol)
        return self

    def predict(self, x, *, include_noise: bool = True) -> torch.distributions.Normal:
        """Predictive marginals at ``x`` (shape ``(m, d)``): Normal with ``loc``, ``scale`` of shape ``(m,)``."""
        x = as_inputs(x, "x", dtype=self.train_x.dtype, width=self.train_x.shape[1])
        with torch.no_grad():
            mean, var, _, _ = self._latent(x)
            if include_noise:
                var = var + torch.exp(self.log_noise)
            return torch.distributions.Normal(mean, var.sqrt())
