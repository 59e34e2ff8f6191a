"""The main job: train a Bayesian MLP under a sparsity prior, prune it, export a smaller plain network, report.

:func:`compress` composes the library (``nn.bayesianize`` → ``inference.fit`` → ``export.prune`` →
``export.shrink`` → ``export.save`` → ``export.compression_report``) and writes everything to one folder::

    out/
      checkpoint/checkpoint.pt   the fit's checkpoint (``resume=True`` continues from it)
      network/                   the exported network (weights.safetensors + manifest.json)
      report.md, report.json     what was kept, sizes, work, latency, accuracy before and after export
      sparsity.png               kept weights of every layer
      accuracy_vs_kept.png       test accuracy of the pruned posterior mean against the fraction of weights kept

The command line ``probsparse compress`` (and ``probsparse demo``, the same on the bundled digits) is a thin
layer over :func:`compress`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from probsparse._validation import check_positive_int, check_positive_real

__all__ = ["PRIORS", "CompressResult", "compress", "load_classification_data", "make_prior"]

#: Prior names accepted by :func:`compress` and the command line.
PRIORS = ("sparse-vd", "group-nj", "group-horseshoe", "horseshoe", "spike-slab", "normal")
# Budgets of the accuracy-vs-kept-fraction curve.
_CURVE_FRACTIONS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def make_prior(name: str):
    """The prior object for a name of :data:`PRIORS`."""
    from probsparse import priors

    factories = {
        "sparse-vd": lambda: priors.LogUniform(),
        "group-nj": lambda: priors.GroupNormalJeffreys(groups="input"),
        "group-horseshoe": lambda: priors.GroupHorseshoe(groups="input"),
        "horseshoe": lambda: priors.Horseshoe(),
        "spike-slab": lambda: priors.SpikeAndSlab(slab_scale=1.0, spike_scale=0.01, inclusion_prior=0.1),
        "normal": lambda: priors.Normal(1.0),
    }
    if name not in factories:
        raise ValueError(f"prior must be one of {list(PRIORS)}, got {name!r}")
    return factories[name]()


@dataclass
class ClassificationData:
    """Train / test features (float32, standardised with training statistics) and integer labels."""

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    name: str

    @property
    def n_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def load_classification_data(source: str, *, seed: int = 0) -> ClassificationData:
    """``"digits"``, ``"mnist"``, or a ``.npz`` / ``.csv`` file of features and labels.

    A ``.npz`` holds ``X_train, y_train, X_test, y_test`` or ``X, y``; a ``.csv`` holds one example per row,
    numeric features then an integer label in the last column (a non-numeric first row is taken as a header).
    Files given as ``X, y`` are split 75 / 25 (stratified, ``seed``) and standardised with training statistics.
    """
    from probsparse import datasets

    if source == "digits":
        d = datasets.load_digits(seed=seed)
        return ClassificationData(d.X_train, d.y_train, d.X_test, d.y_test, "digits")
    if source == "mnist":
        d = datasets.load_mnist()
        return ClassificationData(*(torch.as_tensor(a) for a in (d.X_train, d.y_train, d.X_test, d.y_test)), "mnist")
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"dataset must be 'digits', 'mnist' or an existing .npz / .csv file, got {source!r}")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if {"X_train", "y_train", "X_test", "y_test"} <= set(arrays):
            parts = [arrays[k] for k in ("X_train", "y_train", "X_test", "y_test")]
        elif {"X", "y"} <= set(arrays):
            parts = _split(arrays["X"], arrays["y"], seed)
        else:
            raise ValueError(f"{path} must hold X_train, y_train, X_test, y_test or X, y; it holds {sorted(arrays)}")
    elif path.suffix == ".csv":
        table = _read_csv(path)
        parts = _split(table[:, :-1], table[:, -1], seed)
    else:
        raise ValueError(f"dataset file must end in .npz or .csv, got {path.name!r}")
    return _standardised(*parts, name=path.name)


def _read_csv(path: Path) -> np.ndarray:
    with path.open() as f:
        first = f.readline()
    try:
        [float(v) for v in first.strip().split(",")]
        skip = 0
    except ValueError:
        skip = 1
    table = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2)
    if table.shape[1] < 2 or table.shape[0] < 2:
        raise ValueError(f"{path} must have at least two rows and two columns (features, then a label)")
    return table


def _split(X, y, seed):
    from sklearn.model_selection import train_test_split

    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
    return X_tr, y_tr, X_te, y_te


def _standardised(X_tr, y_tr, X_te, y_te, *, name: str) -> ClassificationData:
    X_tr, X_te = np.asarray(X_tr, dtype=np.float64), np.asarray(X_te, dtype=np.float64)
    for label, X in (("X_train", X_tr), ("X_test", X_te)):
        if X.ndim != 2 or X.shape[0] == 0 or not np.isfinite(X).all():
            raise ValueError(f"{label} must be a non-empty 2-D array of finite numbers, got shape {X.shape}")
    if X_tr.shape[1] != X_te.shape[1]:
        raise ValueError(f"X_train has {X_tr.shape[1]} features but X_test has {X_te.shape[1]}")
    labels = []
    for label, y, X in (("y_train", y_tr, X_tr), ("y_test", y_te, X_te)):
        y = np.asarray(y)
        if y.shape != (X.shape[0],) or not np.all(np.equal(np.mod(y, 1), 0)) or (y < 0).any():
            raise ValueError(f"{label} must hold one non-negative integer label per row of its X")
        labels.append(torch.as_tensor(y.astype(np.int64)))
    mean, std = X_tr.mean(0), X_tr.std(0)
    std[std == 0] = 1.0
    X_tr, X_te = ((X - mean) / std for X in (X_tr, X_te))
    return ClassificationData(
        torch.as_tensor(X_tr, dtype=torch.float32),
        labels[0],
        torch.as_tensor(X_te, dtype=torch.float32),
        labels[1],
        name,
    )


def mlp(n_in: int, hidden: Sequence[int], n_out: int) -> nn.Sequential:
    """ReLU multilayer perceptron ``n_in → hidden... → n_out``."""
    layers: list[nn.Module] = []
    sizes = [n_in, *hidden]
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(sizes[-1], n_out))
    return nn.Sequential(*layers)


@dataclass
class CompressResult:
    """What :func:`compress` produced (also written to ``out_dir``)."""

    network: nn.Module
    exported: nn.Module
    fit: Any
    pruning: Any
    report: Any
    bayes_accuracy: float
    curve: list[dict]
    paths: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        r = self.report
        return {
            "bayes_accuracy": self.bayes_accuracy,
            "accuracy": r.accuracy,
            "kept_weight_fraction": r.kept_weight_fraction,
            "compression_ratio": r.compression_ratio,
            "hidden_widths": r.hidden_widths,
            "input_features_kept": r.input_features_kept,
            "input_features": r.input_features,
            "size_bytes": {"original": r.size_original_bytes, "exported": r.size_exported_bytes},
            "latency_s": r.latency_s,
            "fit_seconds": float(self.fit.time_total),
        }


def compress(
    dataset: str = "digits",
    *,
    out_dir="probsparse-out",
    hidden: Sequence[int] = (300, 100),
    prior: str = "sparse-vd",
    epochs: int = 100,
    batch_size: int = 128,
    lr: float = 1e-3,
    rule: str = "log_alpha:threshold=3",
    seed: int = 0,
    resume: bool = False,
    progress: bool = True,
    latency_repeats: int = 30,
) -> CompressResult:
    """Train, prune, export and report (see the module docstring for the files written).

    Parameters
    ----------
    dataset : str
        ``"digits"``, ``"mnist"`` or a ``.npz`` / ``.csv`` path (:func:`load_classification_data`).
    out_dir : path-like
    hidden : sequence of int
        Hidden widths of the MLP.
    prior : str
        One of :data:`PRIORS`: ``"sparse-vd"`` (log-uniform, per weight), ``"group-nj"`` (group
        normal-Jeffreys per input neuron), ``"group-horseshoe"``, ``"horseshoe"``, ``"spike-slab"``, ``"normal"``.
    epochs, batch_size, lr : training settings (Adam, cosine decay, KL warm-up over the first quarter).
    rule : str
        Pruning rule, :meth:`probsparse.export.PruningRule.from_string` syntax, e.g. ``"log_alpha:threshold=3"``,
        ``"snr:threshold=1"``, ``"snr:keep=0.02"`` or ``"credible_interval:level=0.95"``.
    seed : int
    resume : bool
        Continue the fit from ``out_dir/checkpoint`` (same settings).
    progress : bool
        Progress bar during the fit.
    latency_repeats : int
        Timed repeats per latency figure.

    Returns
    -------
    CompressResult
    """
    from probsparse.export import (
        PruningRule,
        compression_report,
        load,
        masked_network,
        measured_layer_factory,
        prune,
        pruning_curve,
        save,
        shrink,
        to_deterministic,
    )
    from probsparse.inference import fit as fit_network
    from probsparse.nn import bayesianize

    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    lr = check_positive_real(lr, "lr")
    hidden = [check_positive_int(h, "hidden width") for h in hidden]
    pruning_rule = PruningRule.from_string(rule)
    prior_object = make_prior(prior)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    data = load_classification_data(dataset, seed=seed)
    torch.manual_seed(seed)
    network = bayesianize(mlp(data.X_train.shape[1], hidden, data.n_classes), prior_object)
    fitted = fit_network(
        network,
        (data.X_train, data.y_train),
        likelihood="categorical",
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        lr_schedule="cosine",
        kl_warmup=max(1, epochs // 4),
        kl_warmup_unit="epochs",
        checkpoint_dir=out / "checkpoint",
        checkpoint_every=max(1, epochs // 10),
        resume=resume,
        seed=seed,
        progress=progress,
    )
    network.eval()
    test = (data.X_test, data.y_test)
    with torch.no_grad():
        probs = torch.stack([torch.softmax(network(data.X_test), -1) for _ in range(20)]).mean(0)
    bayes_accuracy = float((probs.argmax(-1) == data.y_test).float().mean())

    masks, pruning_report = prune(network, pruning_rule)
    exported = shrink(network, masks, dtype=torch.float32, layer_factory=measured_layer_factory(256))
    artefact = save(
        exported,
        out / "network",
        pruning=pruning_rule,
        prior=prior_object,
        metadata={"dataset": data.name, "hidden": hidden, "epochs": epochs, "seed": seed},
    )
    reloaded = load(artefact)
    dense = to_deterministic(network).float().eval()
    report = compression_report(
        dense,
        reloaded,
        pruned=masked_network(network, masks, dtype=torch.float32),
        data=test,
        artefact=artefact,
        repeats=latency_repeats,
    )
    score = pruning_rule.score if pruning_rule.score != "credible_interval" else "snr"
    curve = pruning_curve(network, score, _CURVE_FRACTIONS, test)
    result = CompressResult(network, reloaded, fitted, pruning_report, report, bayes_accuracy, curve)
    result.paths = {"network": Path(artefact), **_write_outputs(result, masks, out, rule=pruning_rule.describe())}
    return result


def _write_outputs(result: CompressResult, masks, out: Path, *, rule: str) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    paths = {"report_md": out / "report.md", "report_json": out / "report.json"}
    summary = result.summary()
    text = [
        f"# Compression report ({time.strftime('%Y-%m-%d %H:%M:%S')})",
        "",
        f"Bayesian network (posterior predictive, 20 draws) test accuracy: {result.bayes_accuracy:.4f}",
        f"Pruning rule: {rule}",
        "",
        result.pruning.to_markdown(),
        "",
        result.report.to_markdown(),
        "",
        "## Accuracy against the fraction of weights kept",
        "",
        "| kept fraction | accuracy |",
        "|---|---|",
        *(
            f"| {r['kept_fraction']:.4f} | {r.get('accuracy', float('nan')):.4f} |"
            for r in result.curve
            if "accuracy" in r
        ),
    ]
    paths["report_md"].write_text("\n".join(text) + "\n")
    payload = {
        "summary": summary,
        "pruning": result.pruning.to_dict(),
        "report": result.report.to_dict(),
        "curve": result.curve,
    }
    paths["report_json"].write_text(json.dumps(payload, indent=2, default=_jsonable))

    fig, axes = plt.subplots(1, len(masks), figsize=(4 * len(masks), 3.5), squeeze=False)
    for ax, (name, mask) in zip(axes[0], masks.items(), strict=True):
        ax.imshow(mask.cpu().numpy(), aspect="auto", interpolation="nearest", cmap="Greys")
        ax.set_title(f"layer {name}: {100 * float(mask.float().mean()):.2f}% kept")
        ax.set_xlabel("input")
        ax.set_ylabel("output")
    fig.tight_layout()
    paths["sparsity_png"] = out / "sparsity.png"
    fig.savefig(paths["sparsity_png"], dpi=100)
    plt.close(fig)

    rows = [r for r in result.curve if "accuracy" in r]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.semilogx([r["kept_fraction"] for r in rows], [r["accuracy"] for r in rows], "o-")
    ax.set_xlabel("fraction of weights kept")
    ax.set_ylabel("test accuracy")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    paths["curve_png"] = out / "accuracy_vs_kept.png"
    fig.savefig(paths["curve_png"], dpi=100)
    plt.close(fig)
    return paths


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if torch.is_tensor(value):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
