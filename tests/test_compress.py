"""The main job, probsparse.compress.compress, on small data."""

import json

import numpy as np
import pytest
import torch

from probsparse.compress import PRIORS, compress, load_classification_data, make_prior
from probsparse.export import load


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("compress")
    return compress("digits", out_dir=out, hidden=(24,), epochs=4, lr=1e-2, progress=False, latency_repeats=3), out


def test_exported_network_reproduces_the_pruned_posterior_mean(small_run):
    result, out = small_run
    data = load_classification_data("digits")
    network, manifest = load(out / "network", with_manifest=True)
    with torch.no_grad():
        exported = network(data.X_test).argmax(-1)
    accuracy = float((exported == data.y_test).float().mean())
    assert accuracy == pytest.approx(result.report.accuracy["exported"])
    assert result.report.accuracy["exported"] == pytest.approx(result.report.accuracy["pruned"], abs=1e-12)
    assert manifest["pruning"]["score"] == "log_alpha"


def test_report_files_agree_with_the_result(small_run):
    result, out = small_run
    payload = json.loads((out / "report.json").read_text())
    assert payload["summary"]["kept_weight_fraction"] == pytest.approx(result.report.kept_weight_fraction)
    assert payload["summary"]["bayes_accuracy"] == pytest.approx(result.bayes_accuracy)
    kept = [row["n_kept"] for row in payload["curve"] if "n_kept" in row]
    assert kept == sorted(kept)  # more budget, more weights
    assert "Compression report" in (out / "report.md").read_text()


def test_resume_continues_from_the_checkpoint(small_run, tmp_path):
    _, out = small_run
    assert (out / "checkpoint" / "checkpoint.pt").is_file()
    straight = compress(
        "digits", out_dir=tmp_path / "a", hidden=(16,), epochs=4, lr=1e-2, progress=False, latency_repeats=1
    )
    compress("digits", out_dir=tmp_path / "b", hidden=(16,), epochs=2, lr=1e-2, progress=False, latency_repeats=1)
    # The resumed fit must use the same settings; only the epoch count grows, which the fit refuses.
    with pytest.raises(ValueError, match="epochs"):
        compress("digits", out_dir=tmp_path / "b", hidden=(16,), epochs=4, lr=1e-2, resume=True, progress=False)
    assert straight.fit.n_epochs == 4


def test_npz_and_csv_datasets(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 5))
    y = (X[:, 0] > 0).astype(int)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    np.savetxt(tmp_path / "d.csv", np.column_stack([X, y]), delimiter=",", header="a,b,c,d,e,label", comments="")
    for name in ("d.npz", "d.csv"):
        data = load_classification_data(str(tmp_path / name))
        assert data.X_train.shape == (60, 5) and data.X_test.shape == (20, 5)
        assert data.n_classes == 2
        np.testing.assert_allclose(data.X_train.mean(0).numpy(), 0.0, atol=1e-5)


def test_bad_datasets(tmp_path):
    with pytest.raises(FileNotFoundError, match="digits"):
        load_classification_data(str(tmp_path / "missing.npz"))
    np.savez(tmp_path / "bad.npz", features=np.ones((4, 2)))
    with pytest.raises(ValueError, match="X_train"):
        load_classification_data(str(tmp_path / "bad.npz"))
    X = np.ones((8, 2))
    X[0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", X_train=X, y_train=np.zeros(8), X_test=np.ones((2, 2)), y_test=np.zeros(2))
    with pytest.raises(ValueError, match="finite"):
        load_classification_data(str(tmp_path / "nan.npz"))
    (tmp_path / "x.txt").write_text("1,2\n")
    with pytest.raises(ValueError, match=".npz or .csv"):
        load_classification_data(str(tmp_path / "x.txt"))


def test_every_prior_name_builds_a_prior():
    assert all(make_prior(name) is not None for name in PRIORS)
    with pytest.raises(ValueError, match="prior must be one of"):
        make_prior("laplace")
