"""Data sets: real ones for networks (digits, MNIST) and synthetic sparse problems with known truth.

Real data come back as float32 torch tensors (networks are float32); synthetic sparse problems come back as
float64 NumPy arrays (SBL and GP numerics are float64) together with the truth that generated them.

MNIST is looked for, in order, in the ``root`` argument, in ``$PROBSPARSE_DATA`` (the folder itself or its
``mnist/`` sub-folder) and in the cache folder (``$PROBSPARSE_CACHE`` or ``~/.cache/probsparse``,
``mnist/`` below it); when absent it is downloaded into the cache. Every file is checked against the md5
of its *decompressed* content, so a gzip made by another compressor is accepted and a corrupted or
truncated file never loads.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._kron import kron_matvec
from ._validation import check_finite_real, check_positive_int

__all__ = [
    "ImageDataset",
    "SparseProblem",
    "KroneckerSparseProblem",
    "load_digits",
    "load_mnist",
    "make_sparse_regression",
    "make_kronecker_sparse",
    "MNIST_FILES",
    "IRSMIMOChannel",
    "make_irs_mimo_channel",
]


# --------------------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageDataset:
    """A train / test split of flattened images.

    Attributes
    ----------
    X_train, X_test : torch.Tensor of shape (n_train, n_pixels), (n_test, n_pixels), float32
    y_train, y_test : torch.Tensor of shape (n_train,), (n_test,), int64 class labels
    image_shape : tuple of int
        Shape of one image before flattening, e.g. ``(28, 28)``.
    """

    X_train: object
    y_train: object
    X_test: object
    y_test: object
    image_shape: tuple[int, ...]
    n_classes: int = 10


def load_digits(*, test_fraction: float = 0.25, seed: int = 0) -> ImageDataset:
    """scikit-learn's bundled 8x8 digits as standardised float32 tensors with a fixed split.

    Pixels are standardised with the mean and standard deviation of the *training* split (pixels that are
    constant in the training split are only centred), so no test information leaks into the scaling.

    Parameters
    ----------
    test_fraction : float, default=0.25
        Fraction of the 1797 images held out, in (0, 1).
    seed : int, default=0
        Seed of the stratified split; the default gives the project's fixed split.
    """
    import torch
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    test_fraction = check_finite_real(test_fraction, "test_fraction")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    digits = _sk_load_digits()
    X = digits.data.astype(np.float64)
    y = digits.target.astype(np.int64)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_fraction, random_state=seed, stratify=y)
    mean = X_tr.mean(axis=0)
    std = X_tr.std(axis=0)
    std[std == 0.0] = 1.0
    X_tr = (X_tr - mean) / std
    X_te = (X_te - mean) / std
    return ImageDataset(
        X_train=torch.from_numpy(X_tr.astype(np.float32)),
        y_train=torch.from_numpy(y_tr),
        X_test=torch.from_numpy(X_te.astype(np.float32)),
        y_test=torch.from_numpy(y_te),
        image_shape=(8, 8),
    )


#: The four canonical MNIST files: name -> (md5 of the decompressed IDX file, decompressed size in bytes).
MNIST_FILES: dict[str, tuple[str, int]] = {
    "train-images-idx3-ubyte": ("6bbc9ace898e44ae57da46a324031adb", 47_040_016),
    "train-labels-idx1-ubyte": ("a25bea736e30d166cdddb491f175f624", 60_008),
    "t10k-images-idx3-ubyte": ("2646ac647ad5339dbf082846283269ea", 7_840_016),
    "t10k-labels-idx1-ubyte": ("27ae3e4e09519cfbb04c329615203637", 10_008),
}

DEFAULT_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"

# Mean and standard deviation of the MNIST training pixels scaled to [0, 1].
_MNIST_MEAN, _MNIST_STD = 0.1307, 0.3081


def _cache_dir() -> Path:
    return Path(os.environ.get("PROBSPARSE_CACHE", Path.home() / ".cache" / "probsparse"))


def _mnist_candidate_dirs(root) -> list[Path]:
    dirs = []
    if root is not None:
        dirs.append(Path(root))
    env = os.environ.get("PROBSPARSE_DATA")
    if env:
        dirs += [Path(env) / "mnist", Path(env)]
    dirs.append(_cache_dir() / "mnist")
    return dirs


def _find_file(name: str, dirs: list[Path]) -> Path | None:
    for d in dirs:
        for candidate in (d / f"{name}.gz", d / name):
            if candidate.is_file():
                return candidate
    return None


def _read_verified(path: Path, name: str) -> bytes:
    """Decompress (if needed) and return the bytes of ``path`` after checking their md5."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise ValueError(f"MNIST file {path} could not be read or decompressed: {err}") from err
    expected_md5, expected_size = MNIST_FILES[name]
    md5 = hashlib.md5(raw).hexdigest()
    if md5 != expected_md5:
        raise ValueError(
            f"MNIST file {path} failed its checksum: md5 of the decompressed content is {md5} "
            f"({len(raw)} bytes), expected {expected_md5} ({expected_size} bytes). "
            "The file is corrupted or is not the canonical MNIST file; delete it to download it again."
        )
    return raw


def _download(name: str, url: str, target_dir: Path) -> Path:
    """Download ``name``.gz from ``url`` into ``target_dir``; it is verified before it is moved into place."""
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{name}.gz"
    partial = target_dir / f"{name}.gz.part"
    source = url.rstrip("/") + f"/{name}.gz"
    try:
        with urllib.request.urlopen(source, timeout=30) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out)
        raw = gzip.decompress(partial.read_bytes())
        md5 = hashlib.md5(raw).hexdigest()
        if md5 != MNIST_FILES[name][0]:
            raise ValueError(
                f"downloaded {source} failed its checksum: md5 of the decompressed content is {md5}, "
                f"expected {MNIST_FILES[name][0]}"
            )
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _parse_idx(raw: bytes, path: Path) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (magic 0x0801 labels, 0x0803 images)."""
    magic = int.from_bytes(raw[:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim not in (1, 3):
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (magic {magic:#x})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} holds {data.size} values, its header announces shape {shape}")
    return data.reshape(shape)


def load_mnist(
    root: str | os.PathLike | None = None,
    *,
    download: bool = True,
    url: str | None = None,
    normalize: bool = True,
) -> ImageDataset:
    """MNIST (60 000 training and 10 000 test digits of 28x28 pixels) as float32 tensors.

    Parameters
    ----------
    root : path, optional
        Folder holding the four IDX files (``.gz`` or uncompressed); searched before
        ``$PROBSPARSE_DATA`` and the cache folder.
    download : bool, default=True
        Download the missing files into the cache folder when they are found nowhere.
    url : str, optional
        Base URL of the four ``.gz`` files; defaults to ``$PROBSPARSE_MNIST_URL`` or a public mirror.
    normalize : bool, default=True
        Standardise pixels with the canonical training mean 0.1307 and std 0.3081 (after scaling to [0, 1]);
        otherwise return pixels in [0, 1].

    Returns
    -------
    ImageDataset
        ``X_*`` of shape (n, 784) float32, ``y_*`` of shape (n,) int64.

    Raises
    ------
    FileNotFoundError
        Naming every folder searched, when a file is missing and cannot be downloaded.
    ValueError
        When a file fails its md5 check (naming the file and both checksums) or is not a valid IDX file.
    """
    import torch

    dirs = _mnist_candidate_dirs(root)
    url = url or os.environ.get("PROBSPARSE_MNIST_URL", DEFAULT_MNIST_URL)
    arrays = {}
    for name in MNIST_FILES:
        path = _find_file(name, dirs)
        if path is None:
            searched = ", ".join(str(d) for d in dirs)
            if not download:
                raise FileNotFoundError(
                    f"MNIST file {name}[.gz] not found; searched: {searched}. "
                    "Set PROBSPARSE_DATA to the folder holding it, or allow download=True."
                )
            try:
                path = _download(name, url, _cache_dir() / "mnist")
            except (urllib.error.URLError, OSError) as err:
                raise FileNotFoundError(
                    f"MNIST file {name}[.gz] not found (searched: {searched}) and downloading it from "
                    f"{url} failed: {err}. Set PROBSPARSE_DATA to a folder holding the IDX files."
                ) from err
        arrays[name] = _parse_idx(_read_verified(path, name), path)

    def images(a: np.ndarray):
        x = a.reshape(a.shape[0], -1).astype(np.float32) / 255.0
        if normalize:
            x = (x - _MNIST_MEAN) / _MNIST_STD
        return torch.from_numpy(x)

    return ImageDataset(
        X_train=images(arrays["train-images-idx3-ubyte"]),
        y_train=torch.from_numpy(arrays["train-labels-idx1-ubyte"].astype(np.int64)),
        X_test=images(arrays["t10k-images-idx3-ubyte"]),
        y_test=torch.from_numpy(arrays["t10k-labels-idx1-ubyte"].astype(np.int64)),
        image_shape=(28, 28),
    )


# --------------------------------------------------------------------------------------------------------
# Synthetic sparse problems
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SparseProblem:
    """y = X w + ε with a k-sparse w; everything that generated it.

    Attributes
    ----------
    X : ndarray of shape (n, d)
    y : ndarray of shape (n,)
    coef : ndarray of shape (d,)
        The true coefficients, exactly zero off the support.
    support : ndarray of shape (d,), bool
    noise_var : float
        Variance σ² of the Gaussian noise ε.
    snr_db : float
        The requested signal-to-noise ratio, 10 log10(‖X w‖² / (n σ²)).
    """

    X: np.ndarray
    y: np.ndarray
    coef: np.ndarray
    support: np.ndarray
    noise_var: float
    snr_db: float


def _check_snr(snr_db) -> float:
    return check_finite_real(snr_db, "snr_db")


def _sparse_amplitudes(rng: np.random.Generator, k: int) -> np.ndarray:
    # Magnitudes bounded away from zero (uniform on [1, 2], random signs): support recovery is then a
    # well-posed question at moderate SNR, as with the ±1 spikes of the classic BCS benchmarks.
    return rng.choice([-1.0, 1.0], size=k) * rng.uniform(1.0, 2.0, size=k)


def make_sparse_regression(
    n: int,
    d: int,
    k: int,
    snr_db: float,
    correlated: bool = False,
    seed: int | None = None,
    *,
    rho: float = 0.7,
) -> SparseProblem:
    r"""A k-sparse linear regression with a Gaussian dictionary and noise at a given SNR.

    .. math::

        y = X w + \varepsilon, \quad X_{ij} \sim \mathcal N(0, 1/n), \quad
        \|w\|_0 = k, \quad \varepsilon \sim \mathcal N(0, \sigma^2 I_n), \quad
        \sigma^2 = \frac{\|X w\|^2 / n}{10^{\mathrm{snr\_db}/10}}.

    The k nonzero coefficients sit at random positions, with random signs and magnitudes uniform on [1, 2].
    With ``correlated=True`` every row of X is an AR(1) sequence over the features,
    corr(X_{:i}, X_{:j}) = ρ^{|i-j|}.

    Parameters
    ----------
    n, d : int
        Samples and features (>= 1).
    k : int
        Nonzero coefficients, 0 <= k <= d.
    snr_db : float
        Signal-to-noise ratio in dB (finite).
    correlated : bool, default=False
        Correlated (AR(1), coefficient ``rho``) rather than independent dictionary columns.
    seed : int, optional
        Seed of the NumPy generator; the same seed gives the same problem.
    rho : float, default=0.7
        AR(1) coefficient in (-1, 1), used when ``correlated``.
    """
    n = check_positive_int(n, "n")
    d = check_positive_int(d, "d")
    k = check_positive_int(k, "k", minimum=0)
    if k > d:
        raise ValueError(f"k (nonzero coefficients) must be <= d = {d}, got k = {k}")
    snr_db = _check_snr(snr_db)
    rho = check_finite_real(rho, "rho")
    if correlated and not -1.0 < rho < 1.0:
        raise ValueError(f"rho must lie in (-1, 1), got {rho}")
    rng = np.random.default_rng(seed)

    Z = rng.standard_normal((n, d))
    if correlated:
        X = np.empty_like(Z)
        X[:, 0] = Z[:, 0]
        scale = np.sqrt(1.0 - rho**2)
        for j in range(1, d):
            X[:, j] = rho * X[:, j - 1] + scale * Z[:, j]
    else:
        X = Z
    X /= np.sqrt(n)

    coef = np.zeros(d)
    idx = rng.choice(d, size=k, replace=False)
    coef[idx] = _sparse_amplitudes(rng, k)
    signal = X @ coef
    power = float(signal @ signal) / n
    noise_var = power / 10.0 ** (snr_db / 10.0) if power > 0 else 10.0 ** (-snr_db / 10.0)
    y = signal + np.sqrt(noise_var) * rng.standard_normal(n)
    return SparseProblem(X=X, y=y, coef=coef, support=coef != 0, noise_var=noise_var, snr_db=snr_db)


@dataclass(frozen=True)
class KroneckerSparseProblem:
    r"""y = (A_1 ⊗ ... ⊗ A_I) x + ε with x = x_1 ⊗ ... ⊗ x_I and each x_i sparse.

    Attributes
    ----------
    factors : list of ndarray, the i-th of shape (M_i, N_i)
    y : ndarray of shape (prod M_i,)
    coef : ndarray of shape (prod N_i,)
        x, in the ordering of ``np.kron`` (the first factor varies slowest).
    factor_coefs : list of ndarray, the i-th of shape (N_i,)
    factor_supports : list of ndarray of bool
    support : ndarray of shape (prod N_i,), bool
        The Kronecker support S_1 × ... × S_I.
    noise_var : float
    snr_db : float
    """

    factors: list
    y: np.ndarray
    coef: np.ndarray
    factor_coefs: list
    factor_supports: list
    support: np.ndarray
    noise_var: float
    snr_db: float

    @property
    def dictionary(self) -> np.ndarray:
        """The dense (prod M_i, prod N_i) Kronecker product; for small problems and references only."""
        H = self.factors[0]
        for A in self.factors[1:]:
            H = np.kron(H, A)
        return H


def make_kronecker_sparse(
    dims,
    measurements,
    k_per_factor,
    snr_db: float,
    seed: int | None = None,
) -> KroneckerSparseProblem:
    r"""A Kronecker-structured sparse recovery problem (the synthetic set-up of He & Joseph's KroSBL).

    .. math::

        y = (A_1 \otimes \cdots \otimes A_I)\, x + \varepsilon, \quad
        x = x_1 \otimes \cdots \otimes x_I, \quad (A_i)_{jk} \sim \mathcal N(0, 1), \quad
        \|x_i\|_0 = K_i,

    nonzeros of each x_i i.i.d. N(0, 1), noise variance set from the realised signal power and ``snr_db``.

    Parameters
    ----------
    dims : sequence of int
        N_i, the length of each factor x_i.
    measurements : sequence of int
        M_i, rows of each A_i (same length as ``dims``).
    k_per_factor : int or sequence of int
        K_i nonzeros in each factor, 1 <= K_i <= N_i.
    snr_db : float
    seed : int, optional
    """
    dims = tuple(check_positive_int(v, f"dims[{i}]") for i, v in enumerate(dims))
    measurements = tuple(check_positive_int(v, f"measurements[{i}]") for i, v in enumerate(measurements))
    if not dims:
        raise ValueError("dims must name at least one factor")
    if len(measurements) != len(dims):
        raise ValueError(
            f"measurements must have one entry per factor: len(dims) = {len(dims)}, "
            f"len(measurements) = {len(measurements)}"
        )
    if np.ndim(k_per_factor) == 0:
        k_per_factor = (k_per_factor,) * len(dims)
    ks = tuple(check_positive_int(v, f"k_per_factor[{i}]") for i, v in enumerate(k_per_factor))
    if len(ks) != len(dims):
        raise ValueError(f"k_per_factor must have {len(dims)} entries, got {len(ks)}")
    for i, (k, n_i) in enumerate(zip(ks, dims, strict=True)):
        if k > n_i:
            raise ValueError(f"k_per_factor[{i}] = {k} exceeds dims[{i}] = {n_i}")
    snr_db = _check_snr(snr_db)
    rng = np.random.default_rng(seed)

    factors = [rng.standard_normal((m, n_i)) for m, n_i in zip(measurements, dims, strict=True)]
    factor_coefs, factor_supports = [], []
    for k, n_i in zip(ks, dims, strict=True):
        x_i = np.zeros(n_i)
        x_i[rng.choice(n_i, size=k, replace=False)] = rng.standard_normal(k)
        factor_coefs.append(x_i)
        factor_supports.append(x_i != 0)
    coef = factor_coefs[0]
    support = factor_supports[0]
    for x_i, s_i in zip(factor_coefs[1:], factor_supports[1:], strict=True):
        coef = np.kron(coef, x_i)
        support = np.kron(support, s_i).astype(bool)
    signal = kron_matvec(factors, coef)
    power = float(signal @ signal) / signal.size
    noise_var = power / 10.0 ** (snr_db / 10.0)
    y = signal + np.sqrt(noise_var) * rng.standard_normal(signal.size)
    return KroneckerSparseProblem(
        factors=factors,
        y=y,
        coef=coef,
        factor_coefs=factor_coefs,
        factor_supports=factor_supports,
        support=support,
        noise_var=noise_var,
        snr_db=snr_db,
    )


# --------------------------------------------------------------------------------------------------------
# IRS-aided MIMO channel estimation (block-sparse Kronecker problem)
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IRSMIMOChannel(KroneckerSparseProblem):
    r"""An IRS-aided MIMO uplink pilot phase as a Kronecker sparse problem; see :func:`make_irs_mimo_channel`.

    The inherited fields hold the sparse problem (``factors`` = [IRS patterns × angle-difference grid,
    pilots × MS grid, BS grid], ``coef`` = the channel on the grid, complex); the extra ones the physical
    quantities that generated it.

    Attributes
    ----------
    signal : ndarray of shape (prod M_i,), complex
        The noiseless received pilots, ``y - noise``.
    channel_ms_irs : ndarray of shape (n_irs, n_ms)
        MS → IRS channel :math:`H_1`.
    channel_irs_bs : ndarray of shape (n_bs, n_irs)
        IRS → BS channel :math:`H_2`.
    pilots : ndarray of shape (n_ms, n_pilots)
        QPSK pilot matrix :math:`X` (columns sent one after the other).
    irs_patterns : ndarray of shape (n_irs, n_patterns)
        IRS reflection vectors :math:`\phi_k` (entries :math:`\pm 1/\sqrt{n_{irs}}`).
    grids : tuple of ndarray
        Spatial-frequency grids (cos of the angle) of the three factors: angle differences
        :math:`2d/G` (d = 0..G-1), MS angles and BS angles (:math:`-1 + 2j/G`).
    """

    signal: np.ndarray = None
    channel_ms_irs: np.ndarray = None
    channel_irs_bs: np.ndarray = None
    pilots: np.ndarray = None
    irs_patterns: np.ndarray = None
    grids: tuple = ()


def _steering(n_antennas: int, freqs: np.ndarray) -> np.ndarray:
    """ULA steering vectors exp(jπ n u)/sqrt(n) (half-wavelength spacing), one column per spatial frequency u."""
    n = np.arange(n_antennas)[:, None]
    return np.exp(1j * np.pi * n * np.asarray(freqs)[None, :]) / np.sqrt(n_antennas)


def make_irs_mimo_channel(
    n_irs: int = 16,
    n_ms: int = 4,
    n_bs: int = 8,
    *,
    grid_size=12,
    n_pilots: int = 4,
    n_patterns: int = 8,
    angle_spread: int = 3,
    snr_db: float = 20.0,
    seed: int | None = None,
) -> IRSMIMOChannel:
    r"""Uplink pilots of an IRS-aided MIMO link with clustered angles: a block-sparse Kronecker problem.

    Uniform linear arrays (half-wavelength): MS with ``n_ms`` antennas, IRS with ``n_irs`` elements, BS with
    ``n_bs`` antennas; steering vectors :math:`a_N(u) = e^{j\pi u n}/\sqrt N`, :math:`n = 0..N-1`, with
    :math:`u` the cosine of the angle. Angles lie on grids: MS and BS on :math:`u_j = -1 + 2j/G_i`, IRS
    arrival and departure on the common grid of size :math:`G_1`. Channels, with ``L = angle_spread``:

    .. math::

        H_1 = \sqrt{n_{irs} n_{ms}/L}\, \textstyle\sum_l \alpha_l\, a_{irs}(u^{a}_{l})\, a_{ms}(u^{ms})^H, \qquad
        H_2 = \sqrt{n_{bs} n_{irs}/L}\, \textstyle\sum_l \beta_l\, a_{bs}(u^{bs}_{l})\, a_{irs}(u^{d})^H,

    one MS departure angle and one IRS departure angle; the IRS arrival angles and the BS arrival angles are
    ``L`` adjacent grid points each (angular spread); path gains :math:`\alpha_l, \beta_l \sim \mathcal{CN}(0,1)`.
    For each IRS pattern :math:`\phi_k` (``n_patterns`` random :math:`\pm 1/\sqrt{n_{irs}}` vectors) the MS sends
    the QPSK pilots :math:`X` (``n_ms × n_pilots``, entries of modulus :math:`1/\sqrt{n_{ms}}`) and the BS
    receives :math:`Y_k = H_2 \operatorname{diag}(\phi_k) H_1 X + N_k`. Because
    :math:`a_{irs}(u^d)^H \operatorname{diag}(\phi) a_{irs}(u^a) = \phi^T a_{irs}(u^a - u^d)/\sqrt{n_{irs}}`
    and grid differences are again on a grid (:math:`u^a - u^d = 2d/G_1` modulo 2), stacking
    :math:`y = [\operatorname{vec} Y_1; \ldots; \operatorname{vec} Y_K]` gives

    .. math::

        y = (A_1 \otimes A_2 \otimes A_3)\, x + n, \quad
        A_1 = \Phi^T D_{irs} \ (K \times G_1), \quad A_2 = X^T \bar D_{ms} \ (n_{pilots} \times G_2), \quad
        A_3 = D_{bs} \ (n_{bs} \times G_3),

    with :math:`D` the steering dictionaries on the grids (:math:`D_{irs}` on the angle differences
    :math:`2d/G_1`) and :math:`x` the cascaded channel on the grid, nonzero on
    :math:`\{d\} \times \{m\} \times \{b\}`: ``L`` cyclically adjacent angle differences (a run that can wrap
    around the end of the grid), one MS angle and ``L`` adjacent BS angles. (This is the IRS set-up of
    He & Joseph's PC-KroSBL experiments, sbl.md §1.7, which uses 256 IRS elements, 6 MS and 16 BS antennas,
    18-point grids, 3 pilots, 6 patterns.) The noise is circular complex Gaussian with
    :math:`\sigma^2 = \|s\|^2 / (\bar M\, 10^{\mathrm{snr}/10})`, :math:`s` the noiseless signal.

    Parameters
    ----------
    n_irs, n_ms, n_bs : int
        IRS elements, MS antennas, BS antennas (>= 1).
    grid_size : int or sequence of 3 int, default=12
        Grid points :math:`(G_1, G_2, G_3)` for the IRS angles (arrival, departure and their difference), the
        MS angles and the BS angles; one int for all three. Each must be >= ``angle_spread`` (G_1, G_3).
    n_pilots : int, default=4
        Pilot symbols per IRS pattern.
    n_patterns : int, default=8
        IRS reflection patterns.
    angle_spread : int, default=3
        Adjacent grid points per cluster at the IRS and the BS (block length), >= 1.
    snr_db : float, default=20.0
    seed : int, optional

    Returns
    -------
    IRSMIMOChannel
        ``factors`` = [A_1, A_2, A_3] (complex), ``y`` of shape (n_patterns·n_pilots·n_bs,), ``coef`` = x of
        shape (G_1·G_2·G_3,), ``factor_coefs`` with ``coef = kron(*factor_coefs)``, supports, ``noise_var``,
        plus the physical channels, pilots and patterns.
    """
    n_irs = check_positive_int(n_irs, "n_irs")
    n_ms = check_positive_int(n_ms, "n_ms")
    n_bs = check_positive_int(n_bs, "n_bs")
    n_pilots = check_positive_int(n_pilots, "n_pilots")
    n_patterns = check_positive_int(n_patterns, "n_patterns")
    angle_spread = check_positive_int(angle_spread, "angle_spread")
    if np.ndim(grid_size) == 0:
        grid_size = (grid_size,) * 3
    if isinstance(grid_size, (str, bytes)) or len(grid_size) != 3:
        raise ValueError(f"grid_size must be an int or a sequence of 3 ints, got {grid_size!r}")
    g_irs, g_ms, g_bs = (check_positive_int(v, f"grid_size[{i}]") for i, v in enumerate(grid_size))
    for name, g in (("grid_size[0] (IRS)", g_irs), ("grid_size[2] (BS)", g_bs)):
        if angle_spread > g:
            raise ValueError(f"angle_spread = {angle_spread} exceeds {name} = {g}")
    snr_db = _check_snr(snr_db)
    rng = np.random.default_rng(seed)

    grid_ms = -1.0 + 2.0 * np.arange(g_ms) / g_ms
    grid_bs = -1.0 + 2.0 * np.arange(g_bs) / g_bs
    grid_irs = -1.0 + 2.0 * np.arange(g_irs) / g_irs
    grid_diff = 2.0 * np.arange(g_irs) / g_irs

    # Angles on the grids: one MS departure and one IRS departure; L adjacent IRS / BS arrivals.
    i_ms = int(rng.integers(g_ms))
    i_dep = int(rng.integers(g_irs))
    start_a = int(rng.integers(g_irs - angle_spread + 1))
    i_arr = start_a + np.arange(angle_spread)
    start_b = int(rng.integers(g_bs - angle_spread + 1))
    i_bs = start_b + np.arange(angle_spread)
    alpha = (rng.standard_normal(angle_spread) + 1j * rng.standard_normal(angle_spread)) / np.sqrt(2.0)
    beta = (rng.standard_normal(angle_spread) + 1j * rng.standard_normal(angle_spread)) / np.sqrt(2.0)

    # Physical channels.
    a_ms = _steering(n_ms, grid_ms[[i_ms]])
    a_dep = _steering(n_irs, grid_irs[[i_dep]])
    c1 = np.sqrt(n_irs * n_ms / angle_spread)
    c2 = np.sqrt(n_bs * n_irs / angle_spread)
    H1 = c1 * (_steering(n_irs, grid_irs[i_arr]) @ alpha)[:, None] @ a_ms.conj().T
    H2 = c2 * (_steering(n_bs, grid_bs[i_bs]) @ beta)[:, None] @ a_dep.conj().T

    # Pilots (QPSK, modulus 1/sqrt(n_ms)) and IRS patterns (±1/sqrt(n_irs)).
    qpsk = (rng.choice([-1.0, 1.0], (n_ms, n_pilots)) + 1j * rng.choice([-1.0, 1.0], (n_ms, n_pilots))) / np.sqrt(2)
    pilots = qpsk / np.sqrt(n_ms)
    patterns = rng.choice([-1.0, 1.0], (n_irs, n_patterns)) / np.sqrt(n_irs)

    # Received pilots, pattern k slowest, then pilot, then BS antenna (column-major vec of each Y_k).
    signal = np.stack([(H2 * patterns[:, k]) @ H1 @ pilots for k in range(n_patterns)])  # (K, n_bs, n_pilots)
    signal = signal.transpose(0, 2, 1).reshape(-1)

    # The same signal as a Kronecker sparse problem.
    factors = [
        patterns.T @ _steering(n_irs, grid_diff),
        pilots.T @ _steering(n_ms, grid_ms).conj(),
        _steering(n_bs, grid_bs),
    ]
    x_irs = np.zeros(g_irs, dtype=np.complex128)
    x_irs[(i_arr - i_dep) % g_irs] = c1 * c2 / np.sqrt(n_irs) * alpha
    x_ms = np.zeros(g_ms, dtype=np.complex128)
    x_ms[i_ms] = 1.0
    x_bs = np.zeros(g_bs, dtype=np.complex128)
    x_bs[i_bs] = beta
    factor_coefs = [x_irs, x_ms, x_bs]
    factor_supports = [v != 0 for v in factor_coefs]
    coef = np.kron(x_irs, np.kron(x_ms, x_bs))
    support = np.kron(factor_supports[0], np.kron(factor_supports[1], factor_supports[2])).astype(bool)

    power = float(np.sum(np.abs(signal) ** 2)) / signal.size
    noise_var = power / 10.0 ** (snr_db / 10.0)
    noise = np.sqrt(noise_var / 2.0) * (rng.standard_normal(signal.size) + 1j * rng.standard_normal(signal.size))
    return IRSMIMOChannel(
        factors=factors,
        y=signal + noise,
        coef=coef,
        factor_coefs=factor_coefs,
        factor_supports=factor_supports,
        support=support,
        noise_var=noise_var,
        snr_db=snr_db,
        signal=signal,
        channel_ms_irs=H1,
        channel_irs_bs=H2,
        pilots=pilots,
        irs_patterns=patterns,
        grids=(grid_diff, grid_ms, grid_bs),
    )
