r"""A linear layer whose weight is stored in compressed sparse row (CSR) form, and a dense-or-sparse chooser.

Pruning leaves, after the structured shrink, weight matrices that are sparse without a pattern. Stored densely
they cost as much as before; :class:`SparseLinear` stores only the kept entries and multiplies with the Numba
kernels of :mod:`probsparse.kernels.sparse_matmul`. Whether that is faster than a dense
:class:`torch.nn.Linear` depends on the density, the layer's shape, the batch size and the machine, so
:func:`choose_layer` measures both on the actual layer and keeps the faster.

:class:`SparseLinear` is for inference: the kernels have no backward pass, so the input must not require a
gradient. Its buffers (``values``, ``col_indices``, ``crow_indices``, ``bias``) are plain tensors and appear in
``state_dict()``.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from probsparse._validation import check_positive_int
from probsparse.kernels.sparse_matmul import batch_chunk, check_csr, csr_linear_unchecked

__all__ = ["LayerChoice", "SparseLinear", "choose_layer", "sparsify"]

_BUFFERS = ("values", "col_indices", "crow_indices", "bias")


class SparseLinear(nn.Module):
    r"""Affine layer :math:`y = W x + b` with :math:`W` stored as CSR, evaluated by Numba kernels.

    .. math::

        y_i = b_i + \sum_{p = r_i}^{r_{i+1} - 1} v_p \, x_{c_p}, \qquad i = 0, \dots, N - 1,

    with row pointers :math:`r` (``crow_indices``), column indices :math:`c` (``col_indices``) and values
    :math:`v` (``values``). Input of shape (..., K) gives output of shape (..., N), as
    :class:`torch.nn.Linear` (:math:`K` = ``in_features``, :math:`N` = ``out_features``).

    Parameters
    ----------
    values : torch.Tensor of shape (nnz,), float32
        Stored weights, finite.
    col_indices : torch.Tensor of shape (nnz,), int32
        Column (input feature) of each stored weight, in ``[0, in_features)``.
    crow_indices : torch.Tensor of shape (out_features + 1,), int32
        Row pointers: row :math:`i` holds entries ``crow_indices[i]:crow_indices[i + 1]``.
    in_features : int
        :math:`K` (not recoverable from the CSR arrays when trailing columns are empty).
    bias : torch.Tensor of shape (out_features,), float32, optional
        Zero when omitted (then the ``bias`` buffer is ``None``).
    parallel : bool
        Use the multi-threaded kernel (Numba threads). Off by default.

    Attributes
    ----------
    in_features, out_features : int
    nnz : int
        Number of stored weights.
    density : float
        ``nnz / (in_features * out_features)``.

    Notes
    -----
    The forward pass has no backward: with autograd enabled it raises if the input requires a gradient (run
    under :func:`torch.no_grad` / :func:`torch.inference_mode`, or use :meth:`to_dense` to fine-tune). The
    input is handed to NumPy without a copy when it is a C-contiguous float32 CPU tensor; other float32
    layouts are copied once; other dtypes are an error (nothing is cast silently). Moving the buffers to
    another dtype (``.double()``) makes the next forward raise.

    References
    ----------
    The layout is the CSR of :class:`torch.sparse_csr_tensor` / :class:`scipy.sparse.csr_matrix`
    (``crow_indices`` = ``indptr``, ``col_indices`` = ``indices``, ``values`` = ``data``), with 32-bit indices.

    Examples
    --------
    >>> import torch
    >>> weight = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, -1.0]])
    >>> layer = SparseLinear.from_dense(weight, bias=torch.tensor([0.0, 10.0]))
    >>> layer
    SparseLinear(in_features=3, out_features=2, nnz=3, density=0.5, bias=True)
    >>> layer(torch.tensor([[1.0, 2.0, 3.0]]))
    tensor([[4., 8.]])
    >>> torch.equal(layer.to_dense().weight, weight)
    True
    """

    def __init__(self, values, col_indices, crow_indices, in_features: int, bias=None, *, parallel: bool = False):
        super().__init__()
        in_features = check_positive_int(in_features, "in_features")
        tensors = {"values": values, "col_indices": col_indices, "crow_indices": crow_indices}
        dtypes = {"values": torch.float32, "col_indices": torch.int32, "crow_indices": torch.int32}
        for name, tensor in tensors.items():
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
            if tensor.dtype != dtypes[name]:
                raise TypeError(f"{name} must have dtype {dtypes[name]}, got {tensor.dtype}")
            if tensor.device.type != "cpu":
                raise ValueError(f"{name} must be on the CPU (the kernels are CPU-only), got {tensor.device}")
        arrays = {name: tensor.detach().contiguous().numpy() for name, tensor in tensors.items()}
        n_rows, _ = check_csr(arrays["crow_indices"], arrays["col_indices"], arrays["values"], in_features)
        if bias is not None:
            if not isinstance(bias, torch.Tensor) or bias.dtype != torch.float32:
                raise TypeError(f"bias must be a float32 torch.Tensor, got {getattr(bias, 'dtype', type(bias))}")
            if bias.device.type != "cpu":
                raise ValueError(f"bias must be on the CPU (the kernels are CPU-only), got {bias.device}")
            if bias.shape != (n_rows,):
                raise ValueError(f"bias must have shape ({n_rows},) (out_features), got {tuple(bias.shape)}")
            if not bool(torch.isfinite(bias).all()):
                raise ValueError("bias contains NaN or infinite values")
        self.in_features = in_features
        self.out_features = n_rows
        self.parallel = bool(parallel)
        for name, tensor in tensors.items():
            self.register_buffer(name, tensor.detach().clone().contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().clone().contiguous())
        self._chunk = batch_chunk(in_features, n_rows)
        self._cache = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dense(cls, weight, bias=None, mask=None, *, parallel: bool = False) -> SparseLinear:
        r"""Keep the entries of ``weight`` where ``mask`` is true (by default: where ``weight != 0``).

        Parameters
        ----------
        weight : torch.Tensor of shape (out_features, in_features), floating, finite
            Copied to the CPU and converted to float32 (the device and precision of the exported network).
        bias : torch.Tensor of shape (out_features,), floating, optional
            Converted to float32.
        mask : torch.Tensor of shape (out_features, in_features), bool, optional
            Entries to store. Entries of ``weight`` outside the mask are dropped; a masked-in zero is stored.
        parallel : bool
            Passed to the layer.

        Returns
        -------
        SparseLinear
        """
        if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
            raise TypeError(f"weight must be a floating-point torch.Tensor, got {getattr(weight, 'dtype', weight)}")
        if weight.ndim != 2 or 0 in weight.shape:
            raise ValueError(f"weight must be 2-D with both sizes >= 1, got shape {tuple(weight.shape)}")
        weight = weight.detach().cpu()
        if not bool(torch.isfinite(weight).all()):
            raise ValueError("weight contains NaN or infinite values")
        if mask is None:
            mask = weight != 0
        else:
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
                raise TypeError(f"mask must be a bool torch.Tensor, got {getattr(mask, 'dtype', type(mask))}")
            if mask.shape != weight.shape:
                raise ValueError(f"mask must have the shape of weight {tuple(weight.shape)}, got {tuple(mask.shape)}")
            mask = mask.cpu()
        if int(mask.sum()) > np.iinfo(np.int32).max:
            raise ValueError("too many stored weights for 32-bit indices")
        counts = mask.sum(dim=1)
        crow = torch.zeros(weight.shape[0] + 1, dtype=torch.int64)
        crow[1:] = torch.cumsum(counts, dim=0)
        _, cols = mask.nonzero(as_tuple=True)  # row-major order: rows ascending, columns ascending within a row
        values = weight[mask].to(torch.float32)
        if bias is not None:
            if not isinstance(bias, torch.Tensor) or not bias.is_floating_point():
                raise TypeError(f"bias must be a floating-point torch.Tensor, got {getattr(bias, 'dtype', bias)}")
            bias = bias.detach().cpu().to(torch.float32)
        return cls(
            values,
            cols.to(torch.int32),
            crow.to(torch.int32),
            weight.shape[1],
            bias,
            parallel=parallel,
        )

    @classmethod
    def from_linear(cls, linear: nn.Linear, mask=None, *, parallel: bool = False) -> SparseLinear:
        """The sparse form of ``linear`` (see :meth:`from_dense`); ``mask`` defaults to its non-zero weights."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        return cls.from_dense(linear.weight, linear.bias, mask, parallel=parallel)

    # ------------------------------------------------------------------ properties
    @property
    def nnz(self) -> int:
        return int(self.values.shape[0])

    @property
    def density(self) -> float:
        return self.nnz / (self.in_features * self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.nnz}, "
            f"density={self.density:.4g}, bias={self.bias is not None}"
        )

    def weight_dense(self) -> torch.Tensor:
        """The weight as a dense float32 tensor of shape (out_features, in_features)."""
        counts = (self.crow_indices[1:] - self.crow_indices[:-1]).to(torch.int64)
        rows = torch.repeat_interleave(torch.arange(self.out_features), counts)
        weight = torch.zeros(self.out_features, self.in_features, dtype=self.values.dtype)
        weight.index_put_((rows, self.col_indices.to(torch.int64)), self.values, accumulate=True)
        return weight

    def to_dense(self) -> nn.Linear:
        """An equivalent :class:`torch.nn.Linear` (float32) holding the dense weight (duplicates summed)."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, dtype=torch.float32)
        with torch.no_grad():
            linear.weight.copy_(self.weight_dense())
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        linear.train(self.training)
        return linear

    # ------------------------------------------------------------------ forward
    def _refresh_arrays(self):
        """NumPy views of the buffers; rebuilt only when a buffer object was replaced (``.to()``, ``_apply``)."""
        buffers = self._buffers
        tensors = tuple(buffers[name] for name in _BUFFERS)
        values, col_indices, crow_indices, bias = tensors
        for name, tensor, dtype in (
            ("values", values, torch.float32),
            ("col_indices", col_indices, torch.int32),
            ("crow_indices", crow_indices, torch.int32),
        ):
            if tensor.dtype != dtype or tensor.device.type != "cpu" or not tensor.is_contiguous():
                raise TypeError(
                    f"SparseLinear buffer {name} must stay a contiguous {dtype} CPU tensor, got {tensor.dtype} on "
                    f"{tensor.device}; the Numba kernels support nothing else"
                )
        if bias is None:
            bias_np = np.zeros(self.out_features, dtype=np.float32)
        elif bias.dtype != torch.float32 or bias.device.type != "cpu" or not bias.is_contiguous():
            raise TypeError(f"SparseLinear buffer bias must stay float32 on the CPU, got {bias.dtype} on {bias.device}")
        else:
            bias_np = bias.numpy()
        cache = (*tensors, (crow_indices.numpy(), col_indices.numpy(), values.numpy(), bias_np))
        self._cache = cache
        return cache

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The common path is kept to attribute checks and identity tests: at batch 1 the kernel takes a few
        # microseconds, and every Python operation here costs a noticeable fraction of that.
        cache = self._cache
        buffers = self._buffers
        if (
            cache is None
            or cache[0] is not buffers["values"]
            or cache[1] is not buffers["col_indices"]
            or cache[2] is not buffers["crow_indices"]
            or cache[3] is not buffers["bias"]
        ):
            cache = self._refresh_arrays()
        if x.dtype is not torch.float32:
            raise TypeError(f"SparseLinear expects a float32 input, got {x.dtype}")
        if x.requires_grad:
            if torch.is_grad_enabled():
                raise RuntimeError(
                    "SparseLinear is inference-only (its kernels have no backward pass) and the input requires "
                    "a gradient: call it under torch.no_grad() / torch.inference_mode(), or use to_dense()"
                )
            x = x.detach()
        if not x.is_cpu:
            raise ValueError(f"SparseLinear runs on the CPU, got an input on {x.device}")
        shape = x.shape
        flat = len(shape) == 2 and shape[1] == self.in_features
        if not flat:
            if not shape or shape[-1] != self.in_features:
                raise ValueError(f"SparseLinear expects input of shape (..., {self.in_features}), got {tuple(shape)}")
            x = x.reshape(-1, self.in_features)
        if not x.is_contiguous():
            x = x.contiguous()
        X = x.numpy()
        out = np.empty((X.shape[0], self.out_features), dtype=np.float32)
        indptr, indices, data, bias = cache[4]
        csr_linear_unchecked(indptr, indices, data, bias, X, out, self._chunk, self.parallel)
        y = torch.from_numpy(out)
        if not flat:
            y = y.reshape(*shape[:-1], self.out_features)
        return y

    def __getstate__(self):
        # The cache holds NumPy views of the buffers; a copy or a pickle must rebuild them from its own buffers.
        state = super().__getstate__()
        state = dict(state)
        state["_cache"] = None
        return state


class LayerChoice(NamedTuple):
    """Result of :func:`choose_layer`.

    Attributes
    ----------
    module : torch.nn.Module
        The faster of the two: a :class:`torch.nn.Linear` holding the masked weight, or a
        :class:`SparseLinear`.
    kind : str
        ``"dense"`` or ``"sparse"``.
    dense_s, sparse_s : float
        Median seconds of one forward call at the requested batch size.
    density : float
        Fraction of the weights kept by the mask.
    """

    module: nn.Module
    kind: str
    dense_s: float
    sparse_s: float
    density: float


def _times(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def choose_layer(linear: nn.Linear, mask=None, batch_size: int = 1, *, repeats: int = 30, seed: int = 0) -> LayerChoice:
    r"""Time the masked layer dense and sparse on this machine and return the faster, with the timings.

    .. math::

        \text{kind} = \begin{cases} \text{sparse} & t_{\text{sparse}} < t_{\text{dense}} \\
        \text{dense} & \text{otherwise} \end{cases}

    where :math:`t` is the median time of one forward call on a float32 input of shape
    (``batch_size``, ``in_features``), measured in alternating rounds (after one warm-up call each, which also
    compiles the kernels), so that a load spike hits both candidates alike.

    Parameters
    ----------
    linear : torch.nn.Linear
        The layer (any float dtype; the candidates are float32).
    mask : torch.Tensor of shape (out_features, in_features), bool, optional
        Weights kept; by default the non-zero ones. The dense candidate holds ``weight * mask``.
    batch_size : int
        Rows per call that the exported network will see.
    repeats : int
        Timed calls per candidate (the median is used).
    seed : int
        Seed of the random timing input.

    Returns
    -------
    LayerChoice

    Examples
    --------
    >>> import torch
    >>> layer = torch.nn.Linear(64, 32)
    >>> mask = torch.rand(32, 64) < 0.05
    >>> choice = choose_layer(layer, mask, batch_size=8, repeats=3)
    >>> choice.kind in ("dense", "sparse"), choice.dense_s > 0, choice.sparse_s > 0
    (True, True, True)
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
    batch_size = check_positive_int(batch_size, "batch_size")
    repeats = check_positive_int(repeats, "repeats")
    sparse = SparseLinear.from_linear(linear, mask)
    dense = sparse.to_dense()
    generator = torch.Generator().manual_seed(int(seed))
    x = torch.randn(batch_size, linear.in_features, generator=generator, dtype=torch.float32)
    dense_times: list[float] = []
    sparse_times: list[float] = []
    with torch.no_grad():
        dense(x)
        sparse(x)
        rounds = max(1, min(repeats, 5))
        per_round = -(-repeats // rounds)
        for _ in range(rounds):
            dense_times += _times(lambda: dense(x), per_round)
            sparse_times += _times(lambda: sparse(x), per_round)
    dense_s = statistics.median(dense_times)
    sparse_s = statistics.median(sparse_times)
    use_sparse = sparse_s < dense_s
    return LayerChoice(
        module=sparse if use_sparse else dense,
        kind="sparse" if use_sparse else "dense",
        dense_s=dense_s,
        sparse_s=sparse_s,
        density=sparse.density,
    )


def sparsify(
    module: nn.Module, masks: dict | None = None, batch_size: int = 1, *, repeats: int = 30
) -> tuple[nn.Module, dict[str, LayerChoice]]:
    r"""A copy of ``module`` whose linear layers are each replaced by the faster of their dense and CSR forms.

    .. math::

        W_\ell \leftarrow W_\ell \odot M_\ell, \qquad
        \text{layer}_\ell \leftarrow \arg\min_{\text{dense}, \text{sparse}} t_\ell(\text{batch\_size})

    for every :class:`torch.nn.Linear` :math:`\ell` (see :func:`choose_layer`).

    Parameters
    ----------
    module : torch.nn.Module
        The network; it is not modified.
    masks : dict of str to torch.Tensor, optional
        Qualified layer name -> bool mask of shape (out_features, in_features), or ``None`` for the layer's
        non-zero weights. Only the named layers are considered; by default every ``nn.Linear`` (mask ``None``).
    batch_size : int
        Rows per call the network will see (the timings depend on it).
    repeats : int
        Timed calls per candidate and layer.

    Returns
    -------
    network : torch.nn.Module
        The copy, in the same train / eval mode.
    choices : dict of str to LayerChoice
        Per replaced layer, in ``named_modules`` order.

    Raises
    ------
    ValueError
        Listing the names in ``masks`` that are not ``nn.Linear`` layers of ``module``.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> fast, choices = sparsify(net, {"0": torch.rand(4, 8) < 0.3}, batch_size=2, repeats=3)
    >>> list(choices), type(fast[2]).__name__
    (['0'], 'Linear')
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    linears = {name: sub for name, sub in module.named_modules() if isinstance(sub, nn.Linear)}
    if masks is None:
        masks = dict.fromkeys(linears)
    elif not isinstance(masks, dict):
        raise TypeError(f"masks must be a dict of layer name -> bool mask, got {type(masks).__name__}")
    unknown = [name for name in masks if name not in linears]
    if unknown:
        raise ValueError(f"masks names layers that are not nn.Linear layers of module: {', '.join(map(str, unknown))}")
    choices = {
        name: choose_layer(linears[name], masks[name], batch_size, repeats=repeats) for name in linears if name in masks
    }
    if "" in choices:  # the module itself is the layer
        return choices[""].module.train(module.training), choices
    network = copy.deepcopy(module)
    for name, choice in choices.items():
        parent_name, _, leaf = name.rpartition(".")
        parent = network.get_submodule(parent_name) if parent_name else network
        setattr(parent, leaf, choice.module.train(linears[name].training))
    return network, choices
