"""The ``probsparse`` command: the main jobs, composed from the library (no logic of its own).

``probsparse demo`` fits sparse Bayesian regressions on scikit-learn's bundled diabetes data, padded
with irrelevant random features, and prints which features each keeps, how well it predicts held-out
patients (R², coverage of the 95 % predictive intervals) and the posterior intervals of the kept
features, beside scikit-learn's ``ARDRegression``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _demo(args: argparse.Namespace) -> int:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import ARDRegression
    from sklearn.model_selection import train_test_split

    from .models import SBLRegressor

    data = load_diabetes()
    rng = np.random.default_rng(args.seed)
    X_real = (data.data - data.data.mean(0)) / data.data.std(0)
    n_real = X_real.shape[1]
    X = np.hstack([X_real, rng.standard_normal((X_real.shape[0], args.distractors))])
    names = list(data.feature_names) + [f"noise{i}" for i in range(args.distractors)]
    X_tr, X_te, y_tr, y_te = train_test_split(X, data.target, test_size=0.25, random_state=args.seed)
    print(
        f"diabetes: {X_tr.shape[0]} training / {X_te.shape[0]} test patients, "
        f"{n_real} clinical features + {args.distractors} random distractors\n"
    )

    models = {"SBLRegressor (evidence)": SBLRegressor(engine=args.engine)}
    if args.engine == "tipping_faul":
        models["SBLRegressor (evidence - log(d) per feature)"] = SBLRegressor(size_penalty="ric")
    models["sklearn ARDRegression"] = ARDRegression()
    SBLRegressor().fit(X_tr[:20, :5], y_tr[:20])  # compile the Numba kernels before timing
    print(
        f"  {'model':46s} {'kept':>5s} {'distractors':>12s} {'test R^2':>9s} {'95% cover':>10s} {'time ms':>8s}"
    )
    for label, model in models.items():
        start = time.perf_counter()
        model.fit(X_tr, y_tr)
        elapsed = time.perf_counter() - start
        if hasattr(model, "active_"):
            kept = model.active_
        else:  # ARD shrinks without pruning: count the coefficients above 1e-3 of the largest
            kept = np.abs(model.coef_) > 1e-3 * np.abs(model.coef_).max()
        mean, std = model.predict(X_te, return_std=True)
        cover = np.mean(np.abs(mean - y_te) <= 1.96 * std)
        print(
            f"  {label:46s} {int(kept.sum()):5d} {int(kept[n_real:].sum()):12d} "
            f"{model.score(X_te, y_te):9.3f} {cover:10.2f} {elapsed * 1e3:8.1f}"
        )

    sbl = models["SBLRegressor (evidence)"]
    std = np.sqrt(np.diag(sbl.sigma_))
    print(f"\nposterior of the features SBLRegressor keeps (noise std {np.sqrt(sbl.noise_variance_):.1f}):")
    print(f"  {'feature':10s} {'mean':>9s} {'95% interval':>22s}")
    for j, s in zip(np.flatnonzero(sbl.active_), std, strict=True):
        lo, hi = sbl.coef_[j] - 1.96 * s, sbl.coef_[j] + 1.96 * s
        print(f"  {names[j]:10s} {sbl.coef_[j]:9.2f} [{lo:9.2f}, {hi:9.2f}]")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="probsparse", description="Bayesian sparse modelling.")
    parser.add_argument("--version", action="version", version=f"probsparse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fit a sparse Bayesian regression on a bundled dataset")
    demo.add_argument("--engine", default="tipping_faul", choices=["tipping_faul", "em", "mackay"])
    demo.add_argument("--distractors", type=int, default=40, help="random features added to the data")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "distractors", 0) < 0:
        build_parser().error("--distractors must be >= 0")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
