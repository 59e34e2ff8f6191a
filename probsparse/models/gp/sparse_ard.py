r"""Sparse variational GP whose ARD inverse lengthscales carry a horseshoe prior: feature relevance by SVI.

.. math::

    k(x, x') = c \exp\Big(-\tfrac12 \sum_{j=1}^d w_j^2 (x_j - x'_j)^2\Big), \qquad
    w_j = \tau\, \lambda_j\, z_j, \quad \tau \sim \mathcal C^+(0, \tau_0), \;
    \lambda_j \sim \mathcal C^+(0, 1), \; z_j \sim \mathcal N(0, 1),

so :math:`|w_j|` is feature :math:`j`'s inverse lengthscale with a (non-centred) horseshoe prior: most shrink
to zero (irrelevant input), a few escape. The GP part is a whitened SVGP, :math:`u = f(Z)`,
:math:`q(v) = \mathcal N(m, SS^\top)`, :math:`u = L_{ZZ} v`, with the Gaussian expected log-likelihood in
closed form. The evidence lower bound

.. math::

    \mathcal L = \mathbb E_{q(\tau, \lambda, z)}\Big[\sum_i \mathbb E_{q(f_i)} \log \mathcal N(y_i \mid f_i,
    \sigma^2) - \mathrm{KL}(q(v)\|\mathcal N(0, I))\Big] - \mathrm{KL}(q(\tau, \lambda, z)\|p)

is maximised by Pyro's SVI with an ``AutoNormal`` guide on the prior sites (log-normal for the scales) and
point estimates (``pyro.param``) for :math:`m, S, Z, c, \sigma^2` and the constant mean. Pyro site names are
``f"{prefix}_tau"``, ``f"{prefix}_lambda"``, ``f"{prefix}_raw"`` (:math:`z`) and the deterministic
``f"{prefix}"`` (:math:`w`), with ``prefix = "inv_lengthscale"`` — the convention of
``probsparse.priors.Horseshoe``. :class:`ARDSVGP` is the same SVGP with maximum-likelihood (type-II) inverse
lengthscales, for comparison.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal, init_to_median, init_to_value
from torch.distributions import constraints

from ..._validation import check_positive_int
from ._inputs import as_inputs, as_targets, check_positive
from ._training import SCHEDULES, Losses, fit_loop, relative_change

__all__ = ["HorseshoeARDSVGP", "ARDSVGP"]

_JITTER = 1e-6


class _SVGPBase:
    """Data, inducing points and the whitened SVGP bound given inverse lengthscales ``w``."""

    _default_name = "svgp"
    _stochastic_guide = True
    _collapse = False

    def __init__(self, train_x, train_y, *, num_inducing: int, noise: float, seed: int, name: str | None):
        self.train_x = as_inputs(train_x, "train_x")
        n, d = self.train_x.shape
        self.train_y = as_targets(train_y, n, "train_y", dtype=self.train_x.dtype)
        self.num_inducing = min(check_positive_int(num_inducing, "num_inducing"), n)
        self.noise_init = check_positive(noise, "noise")
        self.seed = check_positive_int(seed, "seed", minimum=0)
        self.name = self._default_name if name is None else str(name)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: self.num_inducing]
        self._z_init = self.train_x[perm].clone()

    def _p(self, key: str) -> str:
        return f"{self.name}.{key}"

    def _gp_params(self, with_q: bool = True):
        dtype = self.train_x.dtype
        m = self.num_inducing
        q = {}
        if with_q:
            q = {
                "q_mean": pyro.param(self._p("q_mean"), lambda: torch.zeros(m, dtype=dtype)),
                "q_scale_tril": pyro.param(
                    self._p("q_scale_tril"), lambda: torch.eye(m, dtype=dtype), constraint=constraints.lower_cholesky
                ),
            }
        return {
            "Z": pyro.param(self._p("inducing_points"), lambda: self._z_init.clone()),
            **q,
            "outputscale": pyro.param(
                self._p("outputscale"), lambda: self.train_y.var().clone(), constraint=constraints.positive
            ),
            "noise": pyro.param(
                self._p("noise"), lambda: torch.tensor(self.noise_init, dtype=dtype), constraint=constraints.positive
            ),
            "mean": pyro.param(self._p("mean"), lambda: self.train_y.median().clone()),
        }

    @staticmethod
    def _kernel(a, b, w, c):
        aw, bw = a * w, b * w
        sq = (aw * aw).sum(-1, keepdim=True) - 2 * aw @ bw.T + (bw * bw).sum(-1)
        return c * torch.exp(-0.5 * sq.clamp_min(0))

    def _latent(self, x, w, p):
        Z = p["Z"]
        M = Z.shape[0]
        Kzz = self._kernel(Z, Z, w, p["outputscale"]) + _JITTER * torch.eye(M, dtype=x.dtype)
        L = torch.linalg.cholesky(Kzz)
        B = torch.linalg.solve_triangular(L, self._kernel(Z, x, w, p["outputscale"]), upper=False)
        S = p["q_scale_tril"]
        mean = p["mean"] + B.T @ p["q_mean"]
        var = p["outputscale"] - (B * B).sum(0) + ((S.T @ B) ** 2).sum(0)
        return mean, var.clamp_min(1e-12)

    def _bound(self, x, y, w, p):
        """Expected log-likelihood (scaled to the full data) minus KL(q(v) || N(0, I))."""
        mean, var = self._latent(x, w, p)
        s2 = p["noise"]
        ell = -0.5 * (torch.log(2 * math.pi * s2) + ((y - mean) ** 2 + var) / s2)
        S, m = p["q_scale_tril"], p["q_mean"]
        kl = 0.5 * ((S * S).sum() + (m * m).sum() - m.shape[0] - 2 * torch.log(torch.diagonal(S)).sum())
        return ell.sum() * (self.train_x.shape[0] / x.shape[0]) - kl

    def _collapsed_bound(self, w, p):
        r"""Titsias' bound on the full data, :math:`q(v)` at its optimum, and that optimum.

        With :math:`B = L_{ZZ}^{-1}K_{Zx}` (``(M, n)``), :math:`r = y - m` and
        :math:`\Lambda = I + BB^\top/\sigma^2`, the best :math:`q(v)` for the Gaussian likelihood is
        :math:`\mathcal N(\Lambda^{-1}Br/\sigma^2, \Lambda^{-1})` and :meth:`_bound` at it is

        .. math::

            \log\mathcal N(r \mid 0, B^\top B + \sigma^2 I) - \frac{1}{2\sigma^2}\sum_i \big(c - \|B_{:i}\|^2\big),

        evaluated through the Cholesky factor :math:`L_\Lambda` in :math:`O(nM^2)`.

        Returns
        -------
        bound : Tensor
            0-d.
        mean : Tensor of shape (M,)
            Optimal :math:`m`.
        chol_lambda : Tensor of shape (M, M)
            :math:`L_\Lambda` (the optimal :math:`SS^\top = \Lambda^{-1}`).
        """
        x, y = self.train_x, self.train_y
        n = x.shape[0]
        Z, c, s2 = p["Z"], p["outputscale"], p["noise"]
        eye = torch.eye(Z.shape[0], dtype=x.dtype)
        L = torch.linalg.cholesky(self._kernel(Z, Z, w, c) + _JITTER * eye)
        B = torch.linalg.solve_triangular(L, self._kernel(Z, x, w, c), upper=False)
        r = y - p["mean"]
        chol_lambda = torch.linalg.cholesky(eye + B @ B.T / s2)
        Br = (B @ r) / s2
        v = torch.linalg.solve_triangular(chol_lambda, Br.unsqueeze(-1), upper=False).squeeze(-1)
        bound = -0.5 * (
            n * torch.log(2 * math.pi * s2)
            + 2 * torch.log(torch.diagonal(chol_lambda)).sum()
            + (r * r).sum() / s2
            - (v * v).sum()
            + (c - (B * B).sum(0)).clamp_min(0.0).sum() / s2
        )
        return bound, torch.cholesky_solve(Br.unsqueeze(-1), chol_lambda).squeeze(-1), chol_lambda

    def _store_optimal_q(self, w) -> None:
        """Write the optimal ``q_mean`` and ``q_scale_tril`` (given the other parameters) to the param store."""
        store = pyro.get_param_store()
        with torch.no_grad():
            _, mean, chol_lambda = self._collapsed_bound(w, self._gp_params(with_q=False))
            scale_tril = torch.linalg.cholesky(torch.cholesky_inverse(chol_lambda))
        for key, value, constraint in (
            ("q_mean", mean, constraints.real),
            ("q_scale_tril", scale_tril, constraints.lower_cholesky),
        ):
            if self._p(key) in store:
                del store[self._p(key)]
            pyro.param(self._p(key), value.clone(), constraint=constraint)

    def fit(
        self,
        num_steps: int = 1000,
        lr: float = 0.02,
        *,
        batch_size: int | None = None,
        tol: float = 1e-3,
        schedule: str = "cosine",
        min_steps: int | None = None,
        optimizer: str = "adam",
    ):
        r"""Run SVI (Adam, ``Trace_ELBO``); sets ``losses_`` (negative ELBO per point) and ``converged_``.

        ``optimizer="lbfgs"`` (point-estimate model, full batch: :class:`ARDSVGP`) instead maximises the
        collapsed bound, deterministic, by L-BFGS with a strong-Wolfe line search (``lr`` its trial step;
        :func:`~probsparse.models.gp._training.fit_loop`, Adam from ``lr/100`` if the line search stalls).

        The learning rate decays from ``lr`` to ``lr/100`` along a cosine over ``num_steps`` by default
        (``schedule="constant"`` keeps it fixed). The fit stops once converged (after at least
        ``min_steps``, default ``max(100, num_steps // 2)``): ``converged_`` is true when the relative loss
        change over the last 10 % of the steps is below ``tol``. The loss is judged through a least-squares
        line over that window when it is stochastic (a guide with random sites, or minibatches), by the
        spread of the window otherwise (:func:`~probsparse.models.gp._training.relative_change`).
        """
        num_steps = check_positive_int(num_steps, "num_steps")
        check_positive(lr, "lr")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        # the sparsity pattern settles after the loss has flattened to the eye of a stochastic test: by
        # default let the schedule decay at least halfway before stopping
        min_steps = max(100, num_steps // 2) if min_steps is None else check_positive_int(min_steps, "min_steps")
        tol = check_positive(tol, "tol")
        if batch_size is not None:
            batch_size = check_positive_int(batch_size, "batch_size")
        n = self.train_x.shape[0]
        if optimizer == "lbfgs":
            if self._stochastic_guide or batch_size is not None:
                raise ValueError("optimizer='lbfgs' needs a point-estimate model on the full batch (ARDSVGP)")
            return self._fit_lbfgs(num_steps, lr, tol, min_steps)
        if optimizer != "adam":
            raise ValueError(f"optimizer must be 'adam' or 'lbfgs', got {optimizer!r}")
        if schedule == "cosine":
            optim = pyro.optim.CosineAnnealingLR(
                {"optimizer": torch.optim.Adam, "optim_args": {"lr": lr}, "T_max": num_steps, "eta_min": lr / 100}
            )
        else:
            optim = pyro.optim.Adam({"lr": lr})
        # a point-estimate model on the full data: q(v) at its closed-form optimum (the collapsed bound), the
        # same maximum without the M(M+3)/2 variational parameters, which slow the optimiser down
        self._collapse = not self._stochastic_guide and batch_size is None
        svi = SVI(self.model, self.guide, optim, Trace_ELBO())
        smooth = self._stochastic_guide or batch_size is not None
        gen = torch.Generator().manual_seed(self.seed)
        self.losses_ = Losses()
        for _ in range(num_steps):
            if batch_size is None:
                x, y = self.train_x, self.train_y
            else:
                idx = torch.randint(0, n, (min(batch_size, n),), generator=gen)
                x, y = self.train_x[idx], self.train_y[idx]
            loss = svi.step(x, y) / n
            if loss != loss:
                raise FloatingPointError(f"the ELBO became NaN after {len(self.losses_)} steps; lower lr")
            self.losses_.append(loss)
            if schedule == "cosine":
                optim.step()
            if len(self.losses_) >= min_steps and relative_change(self.losses_, smooth=smooth) < tol:
                self.losses_.stop_reason = "converged"
                break
        if self._collapse:
            self._store_optimal_q(self.inverse_lengthscale_samples(1)[0])
            self._collapse = False
        self.relative_change_ = relative_change(self.losses_, smooth=smooth)
        self.converged_ = bool(self.relative_change_ < tol)
        return self

    def _fit_lbfgs(self, num_steps: int, lr: float, tol: float, min_steps: int):
        n = self.train_x.shape[0]

        def loss_fn():
            return -self._collapsed_bound(self._w(), self._gp_params(with_q=False))[0] / n

        loss_fn()  # creates the parameters in the store
        keys = ("inducing_points", "outputscale", "noise", "mean", "inverse_lengthscale")
        wanted = {self._p(k) for k in keys}
        params = [p for name, p in pyro.get_param_store().named_parameters() if name in wanted]
        self.losses_ = fit_loop(
            loss_fn, params, num_steps, lr, optimizer="lbfgs", tol=tol, min_steps=min_steps, fallback_lr=lr / 100
        )
        self._store_optimal_q(self.inverse_lengthscale_samples(1)[0])
        self.relative_change_ = relative_change(self.losses_)
        self.converged_ = bool(self.relative_change_ < tol)
        return self

    def predict(self, x, *, include_noise: bool = True, num_samples: int = 64) -> torch.distributions.Normal:
        """Predictive marginals at ``x``, moment-matched over posterior draws of the inverse lengthscales."""
        x = as_inputs(x, "x", dtype=self.train_x.dtype, width=self.train_x.shape[1])
        with torch.no_grad():
            p = self._gp_params()
            ws = self.inverse_lengthscale_samples(num_samples)
            means, variances = zip(*(self._latent(x, w, p) for w in ws), strict=True)
            means, variances = torch.stack(means), torch.stack(variances)
            mean = means.mean(0)
            var = variances.mean(0) + means.var(0, unbiased=False)
            if include_noise:
                var = var + p["noise"]
            return torch.distributions.Normal(mean, var.sqrt())


class HorseshoeARDSVGP(_SVGPBase):
    r"""SVGP with horseshoe-distributed ARD inverse lengthscales, fitted by SVI (module docstring).

    .. math::

        w_j = \tau \lambda_j z_j, \quad \tau \sim \mathcal C^+(0, \tau_0), \quad \lambda_j \sim \mathcal C^+(0, 1),
        \quad z_j \sim \mathcal N(0, 1), \qquad \text{relevance}_j = \mathbb E_q |w_j|

    Parameters
    ----------
    train_x : Tensor of shape (n, d)
        Inputs (standardise them: the horseshoe's scale is per unit of input).
    train_y : Tensor of shape (n,)
        Targets.
    num_inducing : int
        Number of inducing points (a seeded subset of the inputs, then learned).
    global_scale : float, optional
        :math:`\tau_0`, the global half-Cauchy scale (default 0.1) of the built-in horseshoe sites.
    prior : probsparse.priors.WeightPrior, optional
        Any prior of :mod:`probsparse.priors` (an object with ``sample(name, shape, dtype=...)`` that places
        its own sites ``inv_lengthscale_*`` and returns :math:`w`) instead of the built-in horseshoe; e.g.
        ``probsparse.priors.Horseshoe(0.1)`` places the same sites and gives the same model. Exclusive with
        ``global_scale``.
    noise : float
        Initial noise variance.
    seed : int
        Seed of the inducing-point choice and the minibatches.
    name : str, optional
        Prefix of the Pyro parameter names (default ``"horseshoe_ard_svgp"``); give two models in one
        parameter store different names.

    Attributes
    ----------
    guide : pyro.infer.autoguide.AutoNormal
        Mean-field guide over the sites ``inv_lengthscale_tau``, ``inv_lengthscale_lambda``,
        ``inv_lengthscale_raw``.
    losses_, converged_
        Negative ELBO per point per step; relative change over the last 10 % below ``tol``.

    References
    ----------
    Carvalho, Polson & Scott (2010), "The horseshoe estimator for sparse signals" (their :math:`\tau,
    \lambda_j` are ours); Hensman, Fusi & Lawrence (2013), "Gaussian processes for big data" (SVGP).

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(60, 4, dtype=torch.float64); y = torch.sin(2 * x[:, 0])
    >>> m = HorseshoeARDSVGP(x, y, num_inducing=10).fit(num_steps=20)
    >>> m.relevance(num_samples=50)["mean"].shape
    torch.Size([4])
    """

    _default_name = "horseshoe_ard_svgp"
    _stochastic_guide = True
    site_prefix = "inv_lengthscale"

    def __init__(
        self,
        train_x,
        train_y,
        *,
        num_inducing: int = 50,
        global_scale: float | None = None,
        prior=None,
        noise: float = 0.1,
        seed: int = 0,
        name: str | None = None,
    ):
        super().__init__(train_x, train_y, num_inducing=num_inducing, noise=noise, seed=seed, name=name)
        if prior is not None:
            if global_scale is not None:
                raise ValueError("give either prior or global_scale (the built-in horseshoe's scale), not both")
            if not callable(getattr(prior, "sample", None)):
                raise TypeError(f"prior must have a sample(name, shape, dtype=...) method, got {type(prior).__name__}")
        self.prior = prior
        global_scale = 0.1 if global_scale is None else global_scale
        self.global_scale = check_positive(global_scale, "global_scale")
        d = self.train_x.shape[1]
        dtype = self.train_x.dtype
        # Start from "every feature moderately relevant" (|w_j| ~ 1/sqrt(d)); the data then switch features off.
        init = {
            f"{self.site_prefix}_tau": torch.tensor(self.global_scale, dtype=dtype),
            f"{self.site_prefix}_lambda": torch.full((d,), 1 / (self.global_scale * math.sqrt(d)), dtype=dtype),
            f"{self.site_prefix}_raw": torch.ones(d, dtype=dtype),
        }
        self.guide = AutoNormal(
            self.model, init_loc_fn=init_to_value(values=init, fallback=init_to_median), init_scale=0.05
        )

    def _weights(self):
        dtype, d = self.train_x.dtype, self.train_x.shape[1]
        if self.prior is not None:
            return self.prior.sample(self.site_prefix, (d,), dtype=dtype)
        one = torch.ones((), dtype=dtype)
        tau = pyro.sample(f"{self.site_prefix}_tau", dist.HalfCauchy(self.global_scale * one))
        lam = pyro.sample(f"{self.site_prefix}_lambda", dist.HalfCauchy(one).expand([d]).to_event(1))
        raw = pyro.sample(f"{self.site_prefix}_raw", dist.Normal(0 * one, one).expand([d]).to_event(1))
        return pyro.deterministic(self.site_prefix, tau * lam * raw, event_dim=1)

    def model(self, x, y):
        """Pyro model: horseshoe sites for ``w`` and the SVGP bound as a ``pyro.factor``."""
        w = self._weights()
        pyro.factor(self._p("svgp_bound"), self._bound(x, y, w, self._gp_params()))

    def inverse_lengthscale_samples(self, num_samples: int = 200) -> torch.Tensor:
        """Draws of :math:`|w|` from the guide, shape ``(num_samples, d)``."""
        num_samples = check_positive_int(num_samples, "num_samples")
        with torch.no_grad():
            draws = []
            x, y = self.train_x[:1], self.train_y[:1]
            for _ in range(num_samples):
                # replay the model on a guide draw: works for the built-in sites and for any prior's sites
                guide_trace = pyro.poutine.trace(self.guide).get_trace(x, y)
                draws.append(torch.abs(pyro.poutine.replay(self._weights, trace=guide_trace)()))
            return torch.stack(draws)

    def relevance(self, num_samples: int = 200, *, threshold: float = 0.1) -> dict:
        r"""Posterior relevance of each feature.

        Returns
        -------
        dict
            ``mean``, ``q05``, ``q95`` of :math:`|w_j|` (shape ``(d,)``) and ``selected``: the features whose
            posterior mean inverse lengthscale exceeds ``threshold`` times the largest one.
        """
        w = self.inverse_lengthscale_samples(num_samples)
        mean = w.mean(0)
        return {
            "mean": mean,
            "q05": torch.quantile(w, 0.05, dim=0),
            "q95": torch.quantile(w, 0.95, dim=0),
            "selected": mean > threshold * mean.max(),
        }


class ARDSVGP(_SVGPBase):
    r"""SVGP with type-II maximum-likelihood ARD inverse lengthscales (the baseline of :class:`HorseshoeARDSVGP`).

    .. math::

        k(x, x') = c \exp\Big(-\tfrac12 \sum_j w_j^2 (x_j - x'_j)^2\Big), \qquad w_j > 0 \text{ point estimates}

    Parameters
    ----------
    train_x, train_y, num_inducing, noise, seed
        As in :class:`HorseshoeARDSVGP`.
    name : str, optional
        Prefix of the Pyro parameter names (default ``"ard_svgp"``).

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(60, 3, dtype=torch.float64); y = torch.sin(2 * x[:, 0])
    >>> m = ARDSVGP(x, y, num_inducing=10).fit(num_steps=20)
    >>> m.relevance()["mean"].shape
    torch.Size([3])
    """

    _default_name = "ard_svgp"
    _stochastic_guide = False

    def __init__(
        self, train_x, train_y, *, num_inducing: int = 50, noise: float = 0.1, seed: int = 0, name: str | None = None
    ):
        super().__init__(train_x, train_y, num_inducing=num_inducing, noise=noise, seed=seed, name=name)

    def _w(self):
        d = self.train_x.shape[1]
        return pyro.param(
            self._p("inverse_lengthscale"),
            lambda: torch.full((d,), 1 / math.sqrt(d), dtype=self.train_x.dtype),
            constraint=constraints.positive,
        )

    def model(self, x, y):
        if self._collapse:
            bound = self._collapsed_bound(self._w(), self._gp_params(with_q=False))[0]
        else:
            bound = self._bound(x, y, self._w(), self._gp_params())
        pyro.factor(self._p("svgp_bound"), bound)

    def guide(self, x, y):
        """Empty guide: every quantity is a point estimate."""

    def inverse_lengthscale_samples(self, num_samples: int = 1) -> torch.Tensor:
        with torch.no_grad():
            return self._w().detach().unsqueeze(0).expand(check_positive_int(num_samples, "num_samples"), -1)

    def relevance(self, num_samples: int = 1, *, threshold: float = 0.1) -> dict:
        """``mean`` (the point estimate of :math:`w`) and ``selected`` (above ``threshold`` of the largest)."""
        w = self._w().detach()
        return {"mean": w, "selected": w > threshold * w.max()}
