# %% [markdown]
# # Solving high-frequency PDEs with a spectral-mixture Gaussian process (GP-HM)
#
# The solution of a PDE is modelled as a GP whose covariance is a Student-t spectral mixture
# (Matérn-5/2 × cosine per dimension). Latent values on a uniform grid are fitted so that the GP
# interpolant satisfies the equation at every grid point; derivatives act on the kernel, one Kronecker
# factor at a time. Surplus mixture components fade away (their weights are optimised in the log
# domain), leaving the frequencies the solution actually has.
#
# We solve (1) the 1D Poisson problem u'' = f with u = sin(100x) on [0, 2π], against a squared-exponential
# baseline, and (2) a 2D Poisson problem on a 200 × 200 grid (smaller in smoke mode).
#
# Run it as a script: `python tutorials/gp_pde_solver/gp_pde_solver.py [--out DIR]`.
# `PROBSPARSE_SMOKE=1` runs smaller problems with short budgets (the test suite does so).

# %%
import argparse
import math
import os
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from probsparse.models.gp.pde import GPPDESolver, poisson_1d, poisson_2d  # noqa: E402

SMOKE = os.environ.get("PROBSPARSE_SMOKE") == "1"
parser = argparse.ArgumentParser()
parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)

# %% [markdown]
# ## 1. A 1D high-frequency Poisson problem
# `poisson_1d` builds the operator u_xx, computes the source f = u'' of the exact solution by autograd and
# takes the boundary values from it. The solver only ever sees f and the boundary values.
#
# `freq_init="spectrum"` starts half of the Q = 30 components at the peaks of the source's periodogram
# (the rest spread up to `freq_scale`, by default half the grid's Nyquist frequency); `update="newton"`
# (automatic on small grids) solves for the grid values exactly at each step, so the optimiser (here
# L-BFGS) only moves the kernel parameters.

# %%
K = 20 if SMOKE else 100
N = 120 if SMOKE else 400
BUDGET = 5.0 if SMOKE else 60.0


def u_1d(X):
    return torch.sin(K * X[:, 0])


problem = poisson_1d(u_1d)
x_test = torch.linspace(0.0, 2 * math.pi, 300, dtype=torch.float64)
u_test = u_1d(x_test[:, None])


def rel_err(solver):
    return float((solver.predict_grid([x_test]) - u_test).norm() / u_test.norm())


fits = {}
for kernel in ("student_t", "se"):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        solver = GPPDESolver(problem, N, kernel=kernel, num_mixtures=30, freq_init="spectrum")
    fit_kw = {"adam_steps": 0, "lbfgs_steps": 2000} if kernel == "student_t" else {"adam_steps": 50,
                                                                                     "lbfgs_steps": 2000}
    history = solver.fit(max_time=BUDGET if kernel == "student_t" else BUDGET / 3, **fit_kw)
    fits[kernel] = solver
    print(f"{kernel:10s} relative L2 error {rel_err(solver):.2e}  steps {history.steps}  "
          f"{time.perf_counter() - start:.1f} s  stop: {history.stop_reason}")

# %% [markdown]
# ## 2. Which frequencies survived?
# The learned spectral density of the mixture and the component weights: most components have been
# switched off, and the survivors sit at the solution's frequency K/(2π) cycles per unit.

# %%
stm = fits["student_t"]
kern = stm.components[0].kernel
with torch.no_grad():
    weights = kern.mixture_weights[0]
    means = kern.mixture_means[0].abs()
    freqs = torch.linspace(0.0, 1.6 * K / (2 * math.pi) + 1.0, 4000, dtype=torch.float64)
    density = kern.spectrum(0, freqs)
print("surviving components:", stm.num_active_components(), "of", kern.num_mixtures)
print("true frequency:", round(K / (2 * math.pi), 4), "cycles per unit; strongest component at",
      round(float(means[weights.argmax()]), 4))

fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
axes[0].semilogy(freqs, density.clamp_min(1e-30))
axes[0].axvline(K / (2 * math.pi), color="k", ls=":", label="true frequency")
axes[0].set(xlabel="frequency (cycles per unit)", ylabel="spectral density", title="learned spectrum")
axes[0].legend()
axes[1].stem(means.numpy(), weights.numpy())
axes[1].set_yscale("log")
axes[1].set(xlabel="component frequency", ylabel="weight (log)", title="mixture weights")
fig.tight_layout()
fig.savefig(args.out / "spectrum_1d.png", dpi=120)

# %% [markdown]
# ## 3. Solution and error
# The spectral mixture reaches the solution to many digits; the SE baseline, which has one smooth envelope
# and no frequency, cannot represent 100 oscillations and misses the solution.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
x_zoom = torch.linspace(0.0, 0.6, 600, dtype=torch.float64)  # fine enough to draw the oscillations
for name, solver in fits.items():
    pred = solver.predict_grid([x_test])
    axes[0].plot(x_zoom, solver.predict_grid([x_zoom]), label=name)
    axes[1].semilogy(x_test, (pred - u_test).abs().clamp_min(1e-16), label=f"{name} ({rel_err(solver):.1e})")
axes[0].plot(x_zoom, u_1d(x_zoom[:, None]), "k:", label="exact")
axes[0].set(title="solution (zoom)", xlabel="x")
axes[0].legend()
axes[1].set(title="pointwise error", xlabel="x")
axes[1].legend()
fig.tight_layout()
fig.savefig(args.out / "solution_1d.png", dpi=120)

# %% [markdown]
# ## 4. A 2D Poisson problem on a Kronecker grid
# u = sin(6x)cos(20x) + sin(6y)cos(20y) on [0, 2π]². With a product kernel the covariance of the grid values
# is K_x ⊗ K_y and is never formed. `update="collocation"` takes the boundary values exactly and solves the
# discretised PDE exactly at the interior points — a Sylvester equation A X + X B = Q, since the Laplacian
# is a Kronecker sum — and L-BFGS moves the kernel parameters through its adjoint.

# %%
if SMOKE:
    def u_2d(X):
        return torch.sin(2 * X[:, 0]) * torch.cos(3 * X[:, 1])

    N2, BUDGET2 = 40, 5.0
else:
    def u_2d(X):
        x, y = X[:, 0], X[:, 1]
        return torch.sin(6 * x) * torch.cos(20 * x) + torch.sin(6 * y) * torch.cos(20 * y)

    N2, BUDGET2 = 200, 300.0

problem2 = poisson_2d(u_2d)
solver2 = GPPDESolver(problem2, N2, num_mixtures=30, freq_init="spectrum", update="collocation")
start = time.perf_counter()
history2 = solver2.fit(0, lbfgs_steps=2000, max_time=BUDGET2)
grid_test = [torch.linspace(0.0, 2 * math.pi, 120, dtype=torch.float64)] * 2
mesh = torch.meshgrid(*grid_test, indexing="ij")
exact2 = u_2d(torch.stack([m.reshape(-1) for m in mesh], -1)).reshape(120, 120)
pred2 = solver2.predict_grid(grid_test)
err2 = float((pred2 - exact2).norm() / exact2.norm())
print(f"2D: grid {N2}x{N2}, relative L2 error {err2:.2e}, {history2.steps} steps, "
      f"{time.perf_counter() - start:.1f} s, surviving components per dimension {solver2.num_active_components()}")

fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
for ax, data, title in zip(axes, (exact2, pred2, (pred2 - exact2).abs()), ("exact", "GP solution", "|error|"),
                           strict=True):
    im = ax.imshow(data.T, origin="lower", extent=(0, 2 * math.pi, 0, 2 * math.pi), cmap="viridis")
    ax.set(title=title, xlabel="x", ylabel="y")
    fig.colorbar(im, ax=ax, shrink=0.8)
fig.tight_layout()
fig.savefig(args.out / "solution_2d.png", dpi=120)
print("figures written to", args.out)
