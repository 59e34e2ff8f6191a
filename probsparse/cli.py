"""The ``probsparse`` command: the main jobs, composed from the library (no logic of its own).

``probsparse demo`` fits a sparse Bayesian regression on scikit-learn's bundled diabetes data, padded
with irrelevant random features, and prints which features the posterior keeps, with 95 % intervals,
beside scikit-learn's ``ARDRegression``.
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
    X = np.hstack([X_real, rng.standard_normal((X_real.shape[0], args.distractors))])
    names = list(data.feature_names) + [f"noise{i}" for i in range(args.distractors)]
    X_tr, X_te, y_tr, y_te = train_test_split(X, data.target, test_size=0.25, random_state=args.seed)

    print(
        f"diabetes: {X_tr.shape[0]} training / {X_te.shape[0]} test patients, "
        f"{X_real.shape[1]} clinical features + {args.distractors} random distractors"
    )
    start = time.perf_counter()
    sbl = SBLRegressor(engine=args.engine).fit(X_tr, y_tr)
    t_sbl = time.perf_counter() - start
    start = time.perf_counter()
    ard = ARDRegression().fit(X_tr, y_tr)
    t_ard = time.perf_counter() - start

    std = np.sqrt(np.diag(sbl.sigma_))
    print(f"\nSBLRegressor (engine={args.engine}) keeps {int(sbl.active_.sum())} of {X.shape[1]} features:")
    print(f"  {'feature':10s} {'mean':>9s} {'95% interval':>22s}")
    for j, s in zip(np.flatnonzero(sbl.active_), std, strict=True):
        lo, hi = sbl.coef_[j] - 1.96 * s, sbl.coef_[j] + 1.96 * s
        print(f"  {names[j]:10s} {sbl.coef_[j]:9.2f} [{lo:9.2f}, {hi:9.2f}]")
    kept_noise = int(sbl.active_[X_real.shape[1] :].sum())
    _, y_std = sbl.predict(X_te, return_std=True)
    inside = np.mean(np.abs(sbl.predict(X_te) - y_te) <= 1.96 * y_std)
    ard_kept = int(np.sum(np.abs(ard.coef_) > 1e-3 * np.abs(ard.coef_).max()))
    print(f"\n  distractors kept: {kept_noise} of {args.distractors}")
    print(f"  noise std: {np.sqrt(sbl.noise_variance_):.1f}   log evidence: {sbl.scores_[-1]:.1f}")
    print(f"  test R^2: {sbl.score(X_te, y_te):.3f}   95% predictive interval coverage: {inside:.2f}")
    print(f"  fit time: {t_sbl * 1e3:.1f} ms")
    print(f"\nsklearn ARDRegression: {ard_kept} features above 1e-3 of the largest, "
          f"test R^2 {ard.score(X_te, y_te):.3f}, fit time {t_ard * 1e3:.1f} ms")
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
