import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from probsparse import datasets
from probsparse.datasets import (
    MNIST_FILES,
    load_digits,
    load_mnist,
    make_kronecker_sparse,
    make_sparse_regression,
)

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def _mnist_dir():
    env = os.environ.get("PROBSPARSE_DATA")
    for d in ([Path(env) / "mnist", Path(env)] if env else []) + [SHARED_MNIST]:
        if (d / "train-labels-idx1-ubyte.gz").is_file():
            return d
    return None


def _idx_bytes(array: np.ndarray) -> bytes:
    magic = (0x08 << 8) | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def isolated_env(tmp_path, monkeypatch):
    """No PROBSPARSE_DATA, an empty private cache and an unreachable download URL."""
    monkeypatch.delenv("PROBSPARSE_DATA", raising=False)
    monkeypatch.setenv("PROBSPARSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PROBSPARSE_MNIST_URL", "http://127.0.0.1:9/")
    return tmp_path


# ---------------------------------------------------------------- digits


def test_load_digits_shapes_dtypes_and_standardisation():
    data = load_digits()
    assert data.X_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.X_train.shape[1] == data.X_test.shape[1] == 64
    assert data.X_train.shape[0] + data.X_test.shape[0] == 1797
    assert data.X_test.shape[0] == pytest.approx(0.25 * 1797, abs=1)
    mean = data.X_train.double().mean(0)
    std = data.X_train.double().std(0, unbiased=False)
    assert torch.allclose(mean, torch.zeros(64, dtype=torch.float64), atol=1e-5)
    varying = std > 0
    assert torch.allclose(std[varying], torch.ones(int(varying.sum()), dtype=torch.float64), atol=1e-4)
    again = load_digits()
    assert torch.equal(again.X_test, data.X_test)


def test_load_digits_rejects_bad_fraction():
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=1.5)


# ---------------------------------------------------------------- MNIST


def test_mnist_md5_table_matches_canonical_values():
    assert MNIST_FILES["train-images-idx3-ubyte"][0] == "6bbc9ace898e44ae57da46a324031adb"
    assert MNIST_FILES["train-labels-idx1-ubyte"][0] == "a25bea736e30d166cdddb491f175f624"
    assert MNIST_FILES["t10k-images-idx3-ubyte"][0] == "2646ac647ad5339dbf082846283269ea"
    assert MNIST_FILES["t10k-labels-idx1-ubyte"][0] == "27ae3e4e09519cfbb04c329615203637"


@pytest.mark.skipif(_mnist_dir() is None, reason="the shared MNIST files are not on this machine")
def test_load_mnist_from_shared_data(monkeypatch):
    monkeypatch.setenv("PROBSPARSE_DATA", str(_mnist_dir()))
    data = load_mnist(download=False, normalize=False)
    assert data.X_train.shape == (60000, 784) and data.X_test.shape == (10000, 784)
    assert data.X_train.dtype == torch.float32 and data.y_test.dtype == torch.int64
    assert data.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert float(data.X_train.mean()) == pytest.approx(0.1307, abs=1e-4)
    assert float(data.X_train.std()) == pytest.approx(0.3081, abs=1e-4)


def test_load_mnist_missing_files_names_the_places_searched(isolated_env):
    root = isolated_env / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        load_mnist(root, download=False)
    assert str(root) in str(err.value) and "train-images-idx3-ubyte" in str(err.value)
    with pytest.raises(FileNotFoundError, match="downloading it from"):
        load_mnist(root, download=True)


def _write_fake_mnist(folder: Path, compress: bool) -> None:
    """Small IDX files with the right names (they will fail the canonical checksums)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 255, (5, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 9, 5),
        "t10k-images-idx3-ubyte": rng.integers(0, 255, (3, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 9, 3),
    }
    for name, arr in arrays.items():
        raw = _idx_bytes(arr)
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)


@pytest.mark.parametrize("compress", [True, False])
def test_load_mnist_checksum_failure_names_file(isolated_env, compress):
    _write_fake_mnist(isolated_env / "fake", compress)
    with pytest.raises(ValueError, match="failed its checksum") as err:
        load_mnist(isolated_env / "fake", download=False)
    assert "train-images-idx3-ubyte" in str(err.value)
    assert MNIST_FILES["train-images-idx3-ubyte"][0] in str(err.value)


def test_load_mnist_truncated_gzip_is_an_error(isolated_env):
    folder = isolated_env / "trunc"
    _write_fake_mnist(folder, compress=True)
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        load_mnist(folder, download=False)


def test_idx_parser_and_verified_reader_accept_valid_content(isolated_env, monkeypatch):
    # Make the fake files canonical by patching the checksum table: this exercises the parse path on
    # both raw and gzip files without the 50 MB originals.
    folder = isolated_env / "ok"
    _write_fake_mnist(folder, compress=False)
    _write_fake_mnist(folder / "gz", compress=True)
    table = {}
    for name in MNIST_FILES:
        raw = (folder / name).read_bytes()
        table[name] = (hashlib.md5(raw).hexdigest(), len(raw))
    monkeypatch.setattr(datasets, "MNIST_FILES", table)
    for root in (folder, folder / "gz"):
        data = load_mnist(root, download=False, normalize=False)
        assert data.X_train.shape == (5, 784) and data.X_test.shape == (3, 784)
        assert float(data.X_train.max()) <= 1.0
    data_norm = load_mnist(folder, download=False)
    assert torch.allclose(data_norm.X_train, (data.X_train - 0.1307) / 0.3081, atol=1e-6)


def test_idx_parser_rejects_wrong_magic(isolated_env, monkeypatch):
    folder = isolated_env / "bad"
    _write_fake_mnist(folder, compress=False)
    bad = b"\x00\x00\x09\x01" + (folder / "train-labels-idx1-ubyte").read_bytes()[4:]
    (folder / "train-labels-idx1-ubyte").write_bytes(bad)
    table = {name: (hashlib.md5((folder / name).read_bytes()).hexdigest(), 0) for name in MNIST_FILES}
    monkeypatch.setattr(datasets, "MNIST_FILES", table)
    with pytest.raises(ValueError, match="not an IDX file"):
        load_mnist(folder, download=False)


# ---------------------------------------------------------------- generators


def test_sparse_regression_support_and_truth():
    p = make_sparse_regression(100, 300, 7, 20.0, seed=1)
    assert p.X.shape == (100, 300) and p.y.shape == (100,)
    assert p.support.sum() == 7 and np.count_nonzero(p.coef) == 7
    assert np.all(np.abs(p.coef[p.support]) >= 1.0)
    assert p.noise_var > 0


@pytest.mark.parametrize("correlated", [False, True])
@pytest.mark.parametrize("snr_db", [0.0, 10.0, 25.0])
def test_sparse_regression_snr_achieved(correlated, snr_db):
    p = make_sparse_regression(20000, 50, 10, snr_db, correlated=correlated, seed=3)
    signal = p.X @ p.coef
    noise = p.y - signal
    achieved = 10 * np.log10((signal @ signal) / (noise @ noise))
    assert abs(achieved - snr_db) < 0.5


def test_sparse_regression_correlation_structure():
    p = make_sparse_regression(20000, 5, 1, 20.0, correlated=True, seed=0, rho=0.7)
    corr = np.corrcoef(p.X.T)
    assert corr[0, 1] == pytest.approx(0.7, abs=0.03)
    assert corr[0, 2] == pytest.approx(0.49, abs=0.03)


def test_sparse_regression_is_deterministic_under_seed():
    a = make_sparse_regression(30, 40, 5, 10.0, seed=7)
    b = make_sparse_regression(30, 40, 5, 10.0, seed=7)
    c = make_sparse_regression(30, 40, 5, 10.0, seed=8)
    assert np.array_equal(a.X, b.X) and np.array_equal(a.y, b.y) and np.array_equal(a.coef, b.coef)
    assert not np.array_equal(a.y, c.y)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n=10, d=5, k=6, snr_db=10.0), "k"),
        (dict(n=0, d=5, k=1, snr_db=10.0), "n"),
        (dict(n=10, d=-1, k=1, snr_db=10.0), "d"),
        (dict(n=10, d=5, k=1, snr_db=float("nan")), "snr_db"),
        (dict(n=10, d=5, k=1, snr_db=float("inf")), "snr_db"),
    ],
)
def test_sparse_regression_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_sparse_regression(**kwargs)


def test_sparse_regression_rejects_non_integer_sizes():
    with pytest.raises(TypeError, match="n must be an integer"):
        make_sparse_regression(10.5, 5, 1, 10.0)


def test_kronecker_sparse_matches_dense_model():
    p = make_kronecker_sparse((5, 4, 3), (4, 3, 3), 2, 30.0, seed=0)
    H = p.dictionary
    assert H.shape == (36, 60) and p.y.shape == (36,)
    assert p.support.sum() == 8 and np.count_nonzero(p.coef) == 8
    assert all(s.sum() == 2 for s in p.factor_supports)
    expected = np.kron(np.kron(p.factor_coefs[0], p.factor_coefs[1]), p.factor_coefs[2])
    assert np.allclose(p.coef, expected)
    noise = p.y - H @ p.coef
    assert np.var(noise) < 10 * p.noise_var


def test_kronecker_sparse_snr_achieved():
    p = make_kronecker_sparse((10, 10), (150, 150), 3, 15.0, seed=2)
    signal = p.dictionary @ p.coef
    noise = p.y - signal
    assert abs(10 * np.log10((signal @ signal) / (noise @ noise)) - 15.0) < 0.5


def test_kronecker_sparse_rejects_bad_arguments():
    with pytest.raises(ValueError, match="k_per_factor"):
        make_kronecker_sparse((3, 3), (2, 2), 4, 10.0)
    with pytest.raises(ValueError, match="measurements"):
        make_kronecker_sparse((3, 3), (2,), 1, 10.0)
    with pytest.raises(ValueError, match="snr_db"):
        make_kronecker_sparse((3, 3), (2, 2), 1, float("nan"))
