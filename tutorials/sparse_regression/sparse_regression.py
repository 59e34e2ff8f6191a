# %% [markdown]
# # Sparse regression with uncertainty: SBL against scikit-learn's ARDRegression
#
# We recover a sparse signal from fewer measurements than unknowns, read the posterior intervals of the
# kept coefficients, compare with scikit-learn's `ARDRegression`, and plot how the Tipping–Faul engine
# builds its model (coefficient paths) and how the log evidence climbs.
#
# Run it as a script: `python tutorials/sparse_regression/sparse_regression.py [--out DIR]`.
# Figures are written to `DIR` (default `tutorials/sparse_regression/output`).
# `PROBSPARSE_SMOKE=1` runs a smaller problem (the test suite does so).

# %%
import argparse
import os
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import arviz as az  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.linear_model import ARDRegression  # noqa: E402

from probsparse.datasets import make_sparse_regression  # noqa: E402
from probsparse.diagnostics import nmse_db, support_scores  # noqa: E402
from probsparse.inference.sbl import fit_tipping_faul  # noqa: E402
from probsparse.models import SBLRegressor  # noqa: E402

SMOKE = os.environ.get("PROBSPARSE_SMOKE") == "1"
parser = argparse.ArgumentParser()
parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. A sparse signal with known truth
# `make_sparse_regression` draws a Gaussian dictionary X (n × d), a k-sparse w and noise at a given SNR,
# and returns the truth alongside the data.

# %%
n, d, k = (60, 150, 5) if SMOKE else (150, 500, 12)
problem = make_sparse_regression(n, d, k, snr_db=20.0, seed=0)
print(f"n={n} measurements, d={d} unknowns, k={k} nonzeros, noise variance {problem.noise_var:.2e}")

# %% [markdown]
# ## 2. Fit: Tipping–Faul fast marginal likelihood
# `SBLRegressor` maximises the evidence p(y | γ, σ²) over one prior variance per coefficient (and the
# noise). Coefficients whose γ goes to zero are pruned; `active_` marks the rest, and `sigma_` is the
# posterior covariance over them. Here there are more features than samples, so by default
# (`size_penalty="auto"`) each active feature also pays log(d) nats: section 3 shows why.

# %%
start = time.perf_counter()
sbl = SBLRegressor(fit_intercept=False).fit(problem.X, problem.y)
t_sbl = time.perf_counter() - start
active = np.flatnonzero(sbl.active_)
sd = np.sqrt(np.diag(sbl.sigma_))
print(
    f"SBL keeps {active.size} coefficients in {t_sbl * 1e3:.1f} ms; noise variance {sbl.noise_variance_:.2e}"
)
print(" index   truth    mean   95% interval")
for j, s in zip(active, sd, strict=True):
    lo, hi = sbl.coef_[j] - 1.96 * s, sbl.coef_[j] + 1.96 * s
    print(f"{j:6d} {problem.coef[j]:7.2f} {sbl.coef_[j]:7.2f}   [{lo:6.2f}, {hi:6.2f}]")

# %% [markdown]
# Posterior intervals: how many of the true nonzeros lie inside their 95 % interval?

# %%
inside = np.abs(problem.coef[active] - sbl.coef_[active]) <= 1.96 * sd
true_active = problem.support[active]
print(f"true nonzeros inside their 95% interval: {inside[true_active].sum()} of {true_active.sum()}")

# %% [markdown]
# ## 3. The evidence alone, and scikit-learn's ARDRegression
# With more features than samples the evidence alone has a degenerate direction: it keeps rising as the
# noise variance shrinks and more bases fit the noise. Plain Tipping–Faul (`size_penalty=0`) and
# scikit-learn's ARD both drift that way. ARD shrinks rather than prunes, so we count its coefficients
# above 1e-3 of the largest.

# %%
start = time.perf_counter()
plain = SBLRegressor(fit_intercept=False, size_penalty=0).fit(problem.X, problem.y)
t_plain = time.perf_counter() - start
start = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    ard = ARDRegression(fit_intercept=False).fit(problem.X, problem.y)
t_ard = time.perf_counter() - start
ard_support = np.abs(ard.coef_) > 1e-3 * np.abs(ard.coef_).max()
print(
    f"noise variance: truth {problem.noise_var:.2e}, SBL {sbl.noise_variance_:.2e}, "
    f"plain evidence {plain.noise_variance_:.2e}, ARD {1 / ard.alpha_:.2e}"
)
for name, coef, support, t in (
    ("SBL, log(d) penalty (default)", sbl.coef_, sbl.active_, t_sbl),
    ("SBL, evidence alone", plain.coef_, plain.active_, t_plain),
    ("sklearn ARDRegression", ard.coef_, ard_support, t_ard),
):
    s = support_scores(support, problem.support)
    print(
        f"{name:30s} NMSE {nmse_db(coef, problem.coef):6.1f} dB   kept {support.sum():4d}   "
        f"support F1 {s['f1']:.2f}   time {t * 1e3:7.1f} ms"
    )

# %% [markdown]
# ## 4. Coefficient paths and the evidence
# The Tipping–Faul engine starts from an empty model and, one iteration at a time, adds, re-estimates or
# deletes the basis that raises the evidence most. Stopping it after t iterations shows the path.

# %%
steps = range(1, 16 if SMOKE else 40)
paths = []
for t in steps:
    paths.append(fit_tipping_faul(problem.X, problem.y, max_iter=t, size_penalty="ric").coef)
paths = np.array(paths)

fig, axes = plt.subplots(1, 3, figsize=(15, 4))
ax = axes[0]
for j in np.flatnonzero(np.any(paths != 0, axis=0)):
    ax.plot(list(steps), paths[:, j], color="C0" if problem.support[j] else "C3", lw=1)
ax.set(
    xlabel="Tipping-Faul iteration", ylabel="posterior mean", title="coefficient paths (red: not in truth)"
)

ax = axes[1]
ax.plot(np.arange(1, sbl.scores_.size + 1), sbl.scores_, label="log(d) penalty")
ax.plot(np.arange(1, plain.scores_.size + 1), plain.scores_, label="evidence alone")
ax.set(xlabel="iteration", ylabel="log evidence", title="log p(y | gamma, sigma^2)", xscale="log")
ax.legend()

ax = axes[2]
ax.stem(
    np.flatnonzero(problem.support),
    problem.coef[problem.support],
    linefmt="k-",
    markerfmt="ko",
    basefmt=" ",
    label="truth",
)
ax.errorbar(active, sbl.coef_[active], yerr=1.96 * sd, fmt="o", color="C0", label="SBL mean ± 95%")
ax.plot(np.arange(d), plain.coef_, ".", color="C3", ms=3, label="SBL, evidence alone")
ax.plot(np.arange(d), ard.coef_, ".", color="C1", ms=3, label="ARDRegression")
ax.set(xlabel="feature", title="estimates")
ax.legend()
fig.tight_layout()
fig.savefig(args.out / "sparse_regression.png", dpi=100)
print(f"figure written to {args.out / 'sparse_regression.png'}")

# %% [markdown]
# ## 5. The posterior in ArviZ
# `to_inference_data` draws the active weights from their Gaussian posterior; ArviZ summarises them.

# %%
idata = sbl.to_inference_data(num_draws=500)
print(az.summary(idata, var_names=["w"], kind="stats").head(8))
