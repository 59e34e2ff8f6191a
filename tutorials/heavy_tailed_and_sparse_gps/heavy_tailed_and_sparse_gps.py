# %% [markdown]
# # Heavy-tailed and sparse Gaussian processes
#
# Three models from `probsparse.models.gp`:
#
# 1. **Outliers**: a GP, a Student-t process (one random scale for the whole function, closed form) and a GP
#    with a Student-t *likelihood* (a heavy tail per observation, variational) on data with a few gross
#    outliers.
# 2. **Feature relevance**: a sparse GP whose ARD inverse lengthscales carry a horseshoe prior, fitted by
#    SVI, tells which inputs matter — with posterior intervals.
# 3. **A sparse deep kernel machine**: learned Gram matrices at inducing points, compared with the NNGP
#    it starts from.
#
# Run it as a script: `python tutorials/heavy_tailed_and_sparse_gps/heavy_tailed_and_sparse_gps.py [--out DIR]`.
# `PROBSPARSE_SMOKE=1` runs smaller problems with fewer steps (the test suite does so).

# %%
import argparse
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import gpytorch  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from probsparse.models.gp.dkm import SparseDKM  # noqa: E402
from probsparse.models.gp.nngp import ReLUNNGPKernel  # noqa: E402
from probsparse.models.gp.robust import StudentTLikelihoodGP  # noqa: E402
from probsparse.models.gp.sparse_ard import ARDSVGP, HorseshoeARDSVGP  # noqa: E402
from probsparse.models.gp.student_t_process import GaussianProcess, StudentTProcess  # noqa: E402

SMOKE = os.environ.get("PROBSPARSE_SMOKE") == "1"
parser = argparse.ArgumentParser()
parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
D = torch.float64
STEPS = 40 if SMOKE else 300

# %% [markdown]
# ## 1. Outliers: global (Student-t process) or per-point (Student-t likelihood) heavy tails
# A smooth function, 60 noisy observations, four of them moved far away. All three models use an RBF kernel
# (the NNGP kernels of `probsparse.models.gp.nngp` see only the angle of a 1-D input, so they are a poor
# choice in one dimension; the benchmark compares them on 5- and 10-dimensional data).

# %%
n = 40 if SMOKE else 60
x = torch.linspace(-3, 3, n, dtype=D).unsqueeze(-1)
f = torch.sin(1.5 * x[:, 0]) + 0.3 * x[:, 0]
y = f + 0.1 * torch.randn(n, dtype=D)
outliers = torch.tensor([5, 17, 30, n - 8])
y[outliers] += torch.tensor([6.0, -5.0, 7.0, -6.0], dtype=D)
xs = torch.linspace(-3.5, 3.5, 200, dtype=D).unsqueeze(-1)
fs = torch.sin(1.5 * xs[:, 0]) + 0.3 * xs[:, 0]

models = {
    "GP": GaussianProcess(x, y, gpytorch.kernels.RBFKernel()).fit(STEPS),
    "Student-t process": StudentTProcess(x, y, gpytorch.kernels.RBFKernel()).fit(STEPS),
    "Student-t likelihood": StudentTLikelihoodGP(
        x, y, gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel()), inducing_points=20
    ).fit(2 * STEPS, lr=0.05),
}
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
for ax, (name, model) in zip(axes, models.items(), strict=True):
    pred = model.predict(xs)
    mean, sd = pred.mean, pred.stddev
    rmse_f = (mean - fs).pow(2).mean().sqrt().item()
    ax.fill_between(xs[:, 0], mean - 2 * sd, mean + 2 * sd, alpha=0.25)
    ax.plot(xs[:, 0], mean, label="predictive mean")
    ax.plot(xs[:, 0], fs, "k--", lw=1, label="true f")
    ax.plot(x[:, 0], y, "k.", ms=4)
    ax.set_ylim(-4, 4)
    ax.set_title(f"{name}\nRMSE vs f = {rmse_f:.2f}")
    print(f"{name:22s} RMSE against f: {rmse_f:.3f}")
axes[0].legend(loc="lower right", fontsize=8)
fig.tight_layout()
fig.savefig(args.out / "outliers.png", dpi=110)
tp = models["Student-t process"]
print(f"Student-t process: a = {tp.a.item():.2f}, b = {tp.b.item():.2f}, predictive dof = {2 * tp.a.item() + n:.1f}")

# %% [markdown]
# The Student-t process's predictive mean is the Gaussian one (given its hyperparameters): the outliers make
# it widen its variance everywhere (the factor (2b + q)/(2a + n) grows with the surprise q), which is what one
# wants for out-of-distribution inputs, but single outliers still pull the mean. The Student-t likelihood
# discounts each outlier on its own and follows f closely, at the price of variational inference and a
# predictive that is not closed form. Choose the global model when the *whole* data set may be off (shifted
# or out-of-distribution test inputs), the per-point model for contaminated observations.

# %% [markdown]
# ## 2. Which inputs matter? Horseshoe-ARD sparse GP
# 20 inputs, of which the first 3 drive the target. The inverse lengthscale of input j is |w_j| with
# w_j = τ λ_j z_j (half-Cauchy τ and λ_j: a horseshoe). SVI gives a posterior for each |w_j|; plain ARD
# gives point estimates.

# %%
nf, d = (120, 10) if SMOKE else (300, 20)
xf = torch.randn(nf, d, dtype=D)
yf = torch.sin(1.5 * xf[:, 0]) + 0.8 * torch.sin(1.5 * xf[:, 1]) + 0.6 * torch.sin(1.5 * xf[:, 2])
yf = yf + 0.2 * torch.randn(nf, dtype=D)
start = time.perf_counter()
hs = HorseshoeARDSVGP(xf, yf, num_inducing=30).fit(num_steps=3 * STEPS, lr=0.03)
ard = ARDSVGP(xf, yf, num_inducing=30).fit(num_steps=3 * STEPS, lr=0.03)
print(f"both sparse GPs fitted in {time.perf_counter() - start:.1f} s")
rel_hs, rel_ard = hs.relevance(num_samples=200), ard.relevance()
print("horseshoe selects inputs", rel_hs["selected"].nonzero().ravel().tolist())
print("ARD (same threshold rule) selects", rel_ard["selected"].nonzero().ravel().tolist())

fig, ax = plt.subplots(figsize=(8, 3))
idx = torch.arange(d)
err = torch.stack([rel_hs["mean"] - rel_hs["q05"], rel_hs["q95"] - rel_hs["mean"]])
ax.errorbar(idx - 0.15, rel_hs["mean"], yerr=err, fmt="o", label="horseshoe: mean, 90% interval")
ax.plot(idx + 0.15, rel_ard["mean"], "s", label="plain ARD (point estimate)")
ax.axvspan(-0.5, 2.5, color="green", alpha=0.08, label="relevant inputs")
ax.set_xlabel("input j")
ax.set_ylabel("inverse lengthscale |w_j|")
ax.set_yscale("log")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(args.out / "feature_relevance.png", dpi=110)

# %% [markdown]
# ## 3. A sparse deep kernel machine
# The DKM learns one Gram matrix per layer at M inducing points, traded off (by a KL with weight ν) against
# the NNGP propagation; a step costs O(n M²), linear in n. It starts at the NNGP (depth L + 1), so we compare
# the fitted DKM with an exact GP that uses that NNGP kernel.

# %%
nd = 300 if SMOKE else 1000
xd = torch.randn(nd, 3, dtype=D)
fd = torch.sin(2 * xd[:, 0]) * torch.cos(xd[:, 1]) + 0.5 * xd[:, 2]
yd = fd + 0.1 * torch.randn(nd, dtype=D)
xt = torch.randn(300, 3, dtype=D)
ft = torch.sin(2 * xt[:, 0]) * torch.cos(xt[:, 1]) + 0.5 * xt[:, 2]
start = time.perf_counter()
dkm = SparseDKM(xd, yd, num_layers=2, inducing_points=40 if SMOKE else 100).fit(STEPS)
t_dkm = time.perf_counter() - start
start = time.perf_counter()
nngp = GaussianProcess(xd, yd, ReLUNNGPKernel(depth=3, weight_variance=2.0)).fit(STEPS // 2)
t_gp = time.perf_counter() - start
for name, model, secs in (("sparse DKM", dkm, t_dkm), ("exact NNGP GP", nngp, t_gp)):
    pred = model.predict(xt)
    rmse = (pred.mean - ft).pow(2).mean().sqrt().item()
    print(f"{name:14s} RMSE vs f {rmse:.3f}, fit {secs:.1f} s")

fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(dkm.losses_)
ax.set_xlabel("optimiser step (L-BFGS)")
ax.set_ylabel("negative DKM objective / n")
fig.tight_layout()
fig.savefig(args.out / "dkm_training.png", dpi=110)
print(f"figures written to {args.out}")
