"""The ``probsparse`` command: the main jobs, composed from the library (no logic of its own).

- ``probsparse compress``: train a Bayesian MLP under a sparsity prior, prune, export a smaller plain network
  and write a report with plots (:func:`probsparse.compress.compress`).
- ``probsparse demo``: the same on scikit-learn's bundled digits, sized to finish in a few minutes on one core.
- ``probsparse sbl-demo``: sparse Bayesian regressions on the bundled diabetes data padded with random
  distractor features, beside scikit-learn's ``ARDRegression`` (kept features, held-out R², interval
  coverage, posterior intervals).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _compress(args: argparse.Namespace) -> int:
    from .compress import compress

    start = time.perf_counter()
    result = compress(
        args.dataset,
        out_dir=args.out,
        hidden=args.hidden,
        prior=args.prior,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        rule=args.rule,
        seed=args.seed,
        resume=args.resume,
        progress=not args.no_progress,
    )
    r = result.report
    acc = r.accuracy
    print(f"dataset {args.dataset}: prior {args.prior}, rule {args.rule}, {args.epochs} epochs")
    print(f"  Bayesian network (posterior predictive) test accuracy  {result.bayes_accuracy:.4f}")
    print(f"  dense posterior-mean network                           {acc.get('original', float('nan')):.4f}")
    pruned, exported = acc.get("pruned", float("nan")), acc.get("exported", float("nan"))
    print(f"  pruned posterior mean / exported network               {pruned:.4f} / {exported:.4f}")
    print(
        f"  weights kept {r.n_nonzero} of {r.n_weights_original} ({100 * r.kept_weight_fraction:.2f} %, "
        f"{r.compression_ratio:.0f}x); input features {r.input_features_kept} of {r.input_features}; "
        f"hidden widths {r.hidden_widths}"
    )
    if r.size_original_bytes and r.size_exported_bytes:
        print(f"  size on disk {r.size_original_bytes} -> {r.size_exported_bytes} bytes")
    for batch, t in sorted(r.latency_s.items()):
        print(f"  latency batch {batch}: {t['original'] * 1e6:.1f} -> {t['exported'] * 1e6:.1f} us ({t['ratio']:.2f}x)")
    print(f"\nexported network: {result.paths['network']}")
    print(f"report: {result.paths['report_md']} (and report.json, sparsity.png, accuracy_vs_kept.png)")
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


def _sbl_demo(args: argparse.Namespace) -> int:
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
    print(f"  {'model':46s} {'kept':>5s} {'distractors':>12s} {'test R^2':>9s} {'95% cover':>10s} {'time ms':>8s}")
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
    compress = sub.add_parser("compress", help="train a Bayesian MLP, prune it and export a smaller network")
    _add_compress_arguments(compress, dataset="digits", epochs=100)
    compress.set_defaults(func=_compress)
    demo = sub.add_parser("demo", help="'compress' on the bundled digits data (a few minutes on one core)")
    _add_compress_arguments(demo, dataset="digits", epochs=300)
    demo.set_defaults(func=_compress)
    sbl = sub.add_parser("sbl-demo", help="fit sparse Bayesian regressions on a bundled dataset")
    sbl.add_argument("--engine", default="tipping_faul", choices=["tipping_faul", "em", "mackay"])
    sbl.add_argument("--distractors", type=int, default=40, help="random features added to the data")
    sbl.add_argument("--seed", type=int, default=0)
    sbl.set_defaults(func=_sbl_demo)
    return parser


def _add_compress_arguments(parser: argparse.ArgumentParser, *, dataset: str, epochs: int) -> None:
    from .compress import PRIORS

    parser.add_argument(
        "--dataset", default=dataset, help="digits, mnist, or a .npz / .csv file (default: %(default)s)"
    )
    parser.add_argument("--hidden", type=int, nargs="+", default=[300, 100], help="hidden widths (default: 300 100)")
    parser.add_argument("--prior", default="sparse-vd", choices=PRIORS)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--rule", default="log_alpha:threshold=3", help="pruning rule, e.g. log_alpha:threshold=3, snr:keep=0.02"
    )
    parser.add_argument("--out", default="probsparse-out", help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue the fit from the output folder's checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "distractors", 0) < 0:
        build_parser().error("--distractors must be >= 0")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
