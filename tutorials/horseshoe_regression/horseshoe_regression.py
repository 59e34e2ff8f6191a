# %% [markdown]
# # Sparse regression with a regularised horseshoe: SVI against NUTS on one hand-written Pyro model
#
# We write a sparse linear regression in plain Pyro, put a regularised horseshoe prior from
# `probsparse.priors` on its weights, and fit the *same* model twice: by stochastic variational inference
# (`fit_svi`, fast, approximate) and by the No-U-Turn sampler (`fit_nuts`, slow, asymptotically exact).
# Both posteriors go to ArviZ, and a shrinkage plot shows which coefficients each keeps.
#
# Run it as a script: `python tutorials/horseshoe_regression/horseshoe_regression.py [--out DIR]`.
# Figures are written to `DIR` (default `tutorials/horseshoe_regression/output`).
# `PROBSPARSE_SMOKE=1` runs a smaller problem with short fits (the test suite does so).

# %%
import argparse
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import arviz as az  # noqa: E402
import numpy as np  # noqa: E402
import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from pyro.infer import MCMC, NUTS, Predictive  # noqa: E402
from pyro.infer.autoguide import AutoNormal  # noqa: E402
from pyro.infer.autoguide.initialization import init_to_median, init_to_value  # noqa: E402

from probsparse.datasets import make_sparse_regression  # noqa: E402
from probsparse.diagnostics import (  # noqa: E402
    interval_coverage,
    interval_excludes_zero,
    nmse_db,
    plot_shrinkage,
    regression_shrinkage_factor,
    samples_to_inference_data,
    shrinkage_summary,
    support_scores,
)
from probsparse.inference.svi import fit_svi  # noqa: E402
from probsparse.priors import RegularizedHorseshoe  # noqa: E402

SMOKE = os.environ.get("PROBSPARSE_SMOKE") == "1"
parser = argparse.ArgumentParser()
parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)
torch.set_default_dtype(torch.float64)

# %% [markdown]
# ## 1. A sparse problem with known truth
# `make_sparse_regression` draws X (n × d) with unit-norm columns, a k-sparse w whose nonzeros have
# magnitudes in [1, 2], and Gaussian noise at 20 dB SNR. There are more unknowns than measurements.

# %%
n, d, k = (40, 60, 4) if SMOKE else (100, 200, 10)
problem = make_sparse_regression(n, d, k, snr_db=20.0, seed=1)
X = torch.as_tensor(problem.X)
y = torch.as_tensor(problem.y)
print(f"n={n} measurements, d={d} unknowns, k={k} nonzeros, noise sd {np.sqrt(problem.noise_var):.3f}")

# %% [markdown]
# ## 2. The model, written by hand
# The regularised horseshoe (Piironen & Vehtari 2017) is a global-local scale mixture,
#
# w_j = τ λ̃_j z_j,  z_j ~ N(0, 1),  τ ~ C⁺(0, τ₀),  λ_j ~ C⁺(0, 1),  λ̃_j² = c² λ_j² / (c² + τ² λ_j²),
#
# with a slab c² ~ InvGamma(ν/2, ν s²/2) that caps the scale of large coefficients. `prior.sample("w", (d,))`
# places the non-centred sites `w_tau`, `w_lambda`, `w_c2`, `w_raw` (z) and the deterministic `w_scale`
# (τ λ̃), `w_kappa` and `w`, and returns w. The rest of the model is three lines.
#
# τ₀ follows Piironen & Vehtari's rule τ₀ = p₀/(d − p₀) · σ/√n for a guess p₀ of the number of relevant
# features. Their n is Σᵢ x_ij² for unit-variance columns; our columns have unit norm, so n is 1 here. For σ
# we use the spread of y, an upper bound of the noise scale (the model learns σ; τ has a half-Cauchy prior
# around τ₀, so τ₀ only needs the right order of magnitude, but one 10× too small made SVI miss true
# coefficients in the `svi` benchmark).

# %%
p0 = max(1, d // 20)
tau0 = RegularizedHorseshoe.recommended_global_scale(d, p0, 1, float(problem.y.std()))
prior = RegularizedHorseshoe(tau0, slab_scale=2.0, slab_df=4.0)
print(f"prior: {prior!r}")


def horseshoe_regression(X, y=None):
    """y ~ N(X w, σ²) with a regularised horseshoe on w and σ ~ HalfCauchy(1)."""
    w = prior.sample("w", (X.shape[1],), dtype=X.dtype)
    sigma = pyro.sample("noise_scale", dist.HalfCauchy(torch.ones((), dtype=X.dtype)))
    # w has shape batch + (d,). Under a vectorised outer plate (Predictive draws many w at once) its last
    # batch dim is the size-1 slot of the "obs" plate below, so w * X broadcasts to batch[:-1] + (n, d).
    mean = (w * X).sum(-1)
    with pyro.plate("obs", X.shape[0], dim=-1):
        return pyro.sample("y", dist.Normal(mean, sigma), obs=y)


# %% [markdown]
# ## 3. Fit by SVI
# A mean-field Gaussian guide over the unconstrained latent variables (`AutoNormal`). Initialisation matters:
# at the prior median the noise scale is 1, several times the spread of y, and the optimiser then explains
# all of y as noise and shrinks every weight to zero (a poor local optimum we saw while tuning the `svi`
# benchmark). Starting σ at a tenth of y's spread lets the signal in. The learning rate decays by 10× over
# the fit.

# %%
noise_guess = 0.1 * float(problem.y.std())
svi_steps = 300 if SMOKE else 1000
init = init_to_value(values={"noise_scale": torch.tensor(noise_guess)}, fallback=init_to_median)
guide = AutoNormal(horseshoe_regression, init_loc_fn=init, init_scale=0.01)
start = time.perf_counter()
svi = fit_svi(horseshoe_regression, X, y, guide=guide, num_steps=svi_steps, lr=0.05, num_samples=1000, seed=0)
t_svi = time.perf_counter() - start
print(f"SVI: {svi_steps} steps in {t_svi:.1f} s, final loss {svi.losses[-50:].mean():.1f}")

# %% [markdown]
# ## 4. Sample by NUTS
# The same model function, unchanged, now under Pyro's `MCMC` with the No-U-Turn sampler. We drive Pyro
# directly rather than through `probsparse.inference.fit_nuts` to set two things its defaults leave out: a
# shallower maximum tree depth (horseshoe posteriors are funnels; at the default depth 10 the early
# warm-up iterations take up to 1023 gradient steps each) and the same starting point as SVI. The
# non-centred parameterisation of the prior is what lets NUTS move through the funnel at all.

# %%
warmup, num_draws, depth = (30, 30, 4) if SMOKE else (300, 300, 7)
pyro.set_rng_seed(0)
kernel = NUTS(horseshoe_regression, max_tree_depth=depth, init_strategy=init)
mcmc = MCMC(kernel, num_samples=num_draws, warmup_steps=warmup, disable_progbar=True)
start = time.perf_counter()
mcmc.run(X, y)
t_nuts = time.perf_counter() - start
n_div = sum(len(v) for v in mcmc.diagnostics()["divergences"].values())
print(f"NUTS: {warmup} warm-up + {num_draws} draws in {t_nuts:.1f} s, {n_div} divergent transitions")
# MCMC returns the latent sites; a Predictive pass adds the deterministic ones (w, w_scale, w_kappa).
latent = mcmc.get_samples()
with torch.no_grad():
    derived = Predictive(
        horseshoe_regression, posterior_samples=latent, return_sites=["w", "w_scale", "w_kappa"], parallel=False
    )(X)
# One chain: (chain=1, draw, ...) arrays, as ArviZ expects.
nuts_samples = {name: value.reshape(1, num_draws, -1).squeeze(-1).numpy() for name, value in latent.items()}
nuts_samples.update({name: value.reshape(1, num_draws, d).numpy() for name, value in derived.items()})

# %% [markdown]
# ## 5. What each posterior says about the support
# A coefficient is declared relevant when its 90 % equal-tailed interval excludes zero. Coverage is the
# fraction of true coefficients inside their 90 % interval (over all d, and over the k true nonzeros).

# %%
w_svi = svi.samples["w"]  # (draw, d)
w_nuts = nuts_samples["w"]  # (chain, draw, d)
rows = []
for name, w, sample_ndim, seconds in (("SVI", w_svi, 1, t_svi), ("NUTS", w_nuts, 2, t_nuts)):
    flat = w.reshape(-1, d)
    scores = support_scores(interval_excludes_zero(w, 0.9, sample_ndim=sample_ndim), problem.support)
    rows.append(
        (
            name,
            nmse_db(flat.mean(0), problem.coef),
            scores["f1"],
            interval_coverage(w, problem.coef, 0.9, sample_ndim=sample_ndim),
            interval_coverage(w, problem.coef, 0.9, sample_ndim=sample_ndim, mask=problem.support),
            seconds,
        )
    )
print(f"{'':5s} {'NMSE dB':>8s} {'F1':>5s} {'cover':>6s} {'cover(k)':>9s} {'time s':>7s}")
for name, nmse, f1, cov, cov_k, seconds in rows:
    print(f"{name:5s} {nmse:8.1f} {f1:5.2f} {cov:6.2f} {cov_k:9.2f} {seconds:7.1f}")

# %% [markdown]
# ## 6. ArviZ
# Both results convert to `InferenceData` with named dims: SVI's independent draws are one chain, NUTS keeps
# its chains. `summary` on the true nonzeros and the global scale; for NUTS, R-hat and the effective sample
# size tell whether the chain mixed (short smoke runs will not have).

# %%
weight_dims = {f"w{s}": ["feature"] for s in ("", "_raw", "_lambda", "_scale", "_kappa")}
idata_svi = svi.to_inference_data(dims=weight_dims)
idata_nuts = samples_to_inference_data(
    nuts_samples,
    dims={**weight_dims, "y": ["obs_id"]},
    coords={"feature": np.arange(d)},
    observed_data={"y": problem.y},
    sample_stats={"diverging": np.isin(np.arange(num_draws), mcmc.diagnostics()["divergences"]["chain 0"])[None]},
    attrs={"inference_method": "nuts"},
)
support_idx = np.flatnonzero(problem.support)
print("SVI posterior (true nonzeros):")
print(az.summary(idata_svi, var_names=["w"], coords={"feature": support_idx}, kind="stats", hdi_prob=0.9))
print("NUTS posterior (true nonzeros, global scale, noise):")
print(
    az.summary(idata_nuts, var_names=["w", "w_tau", "noise_scale"], coords={"feature": support_idx}, hdi_prob=0.9)
)

# %% [markdown]
# ## 7. Shrinkage
# For a linear model the shrinkage factor of coefficient j is κ_j = 1 / (1 + σ⁻² ‖x_j‖² τ² λ̃_j²): the
# conditional posterior mean is (1 − κ_j) times least squares for orthogonal columns. κ near 0 keeps a
# coefficient, κ near 1 removes it. (The prior's own `w_kappa` site is the same quantity for σ = ‖x_j‖ = 1.)

# %%
kappa_svi = regression_shrinkage_factor(problem.X, svi.samples["noise_scale"], svi.samples["w_scale"])
kappa_nuts = regression_shrinkage_factor(
    problem.X, nuts_samples["noise_scale"].reshape(-1), nuts_samples["w_scale"].reshape(-1, d)
)
for name, kappa in (("SVI", kappa_svi), ("NUTS", kappa_nuts)):
    summary = shrinkage_summary(kappa)
    kept = summary["prob_signal"] > 0.5
    print(
        f"{name}: P(kappa < 1/2) > 0.5 for {kept.sum()} coefficients "
        f"({(kept & problem.support).sum()} of the {k} true nonzeros)"
    )

fig = Figure(figsize=(12, 7), layout="constrained")
axes = fig.subplots(2, 2)
plot_shrinkage(w_svi, truth=problem.coef, label="w (SVI)", ax=axes[0, 0])
plot_shrinkage(w_nuts, truth=problem.coef, sample_ndim=2, label="w (NUTS)", ax=axes[0, 1])
plot_shrinkage(kappa_svi, label="kappa (SVI)", reference=0.5, ax=axes[1, 0])
plot_shrinkage(kappa_nuts, label="kappa (NUTS)", reference=0.5, ax=axes[1, 1])
fig.savefig(args.out / "horseshoe_regression.png", dpi=90)
print(f"figure written to {args.out / 'horseshoe_regression.png'}")
