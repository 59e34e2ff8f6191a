r"""Write an exported network to ONNX and check it against torch in ONNX Runtime.

The ONNX file holds the dense / structured form of the network. A :class:`~probsparse.export.SparseLinear`
is written as the equivalent dense ``Gemm`` (its :meth:`~probsparse.export.SparseLinear.to_dense`): the
standard ONNX operator set has no CSR matrix product that runtimes execute as one, and a file that needs a
custom operator would not run in a stock ONNX Runtime. The sparsity is therefore not kept in the file (it is
in the safetensors artefact); pass ``sparse_layers="error"`` to refuse instead.

The file is written with torch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): the
newer exporter needs the ``onnxscript`` package, which probsparse does not depend on. The batch dimension is
dynamic, so the file runs at any batch size.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from probsparse.export.sparse_linear import SparseLinear

__all__ = ["OnnxExport", "to_onnx"]

_SPARSE_MODES = ("densify", "error")


class OnnxExport(NamedTuple):
    """Result of :func:`to_onnx`.

    Attributes
    ----------
    path : pathlib.Path
        The file written.
    max_abs_diff : float
        Largest :math:`|y_{\text{onnxruntime}} - y_{\text{torch}}|` on ``example_input``.
    densified : tuple of str
        Qualified names of the :class:`SparseLinear` layers written in dense form.
    """

    path: Path
    max_abs_diff: float
    densified: tuple[str, ...]


def _densify(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every SparseLinear replaced by its dense ``nn.Linear``."""
    if isinstance(module, SparseLinear):
        return module.to_dense()
    module = copy.deepcopy(module)
    names = [name for name, sub in module.named_modules() if isinstance(sub, SparseLinear)]
    for name in names:
        parent_name, _, leaf = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, leaf, getattr(parent, leaf).to_dense())
    return module


def to_onnx(
    module: nn.Module,
    path,
    example_input: torch.Tensor,
    *,
    sparse_layers: str = "densify",
    opset_version: int = 17,
    atol: float = 1e-5,
) -> OnnxExport:
    r"""Export ``module`` (in eval mode) to ONNX, then check ONNX Runtime reproduces torch's output.

    .. math::

        \max_{s, j} \bigl| f_{\text{ONNX}}(x)_{sj} - f_{\text{torch}}(x)_{sj} \bigr| \le \text{atol},
        \qquad x = \texttt{example\_input} \in \mathbb{R}^{B \times \dots}.

    Parameters
    ----------
    module : torch.nn.Module
        A network of plain torch layers (``nn.Linear``, activations, ``nn.Sequential``, ...) and optionally
        :class:`SparseLinear` layers; one tensor in, one tensor out. It is not modified (a copy is exported).
    path : str or os.PathLike
        Output file (parent folders are created).
    example_input : torch.Tensor of shape (B, ...), float32
        Traced input; its first dimension is exported as the dynamic ``batch`` axis.
    sparse_layers : {"densify", "error"}
        What to do with :class:`SparseLinear` layers: write their dense equivalent, or raise naming them.
    opset_version : int
        ONNX operator-set version.
    atol : float
        Largest absolute difference accepted between ONNX Runtime and torch on ``example_input``.

    Returns
    -------
    OnnxExport

    Raises
    ------
    TypeError
        For a module that is not an ``nn.Module``, holds Bayesian layers (they are listed; convert with
        :func:`~probsparse.export.to_deterministic` first) or does not return one tensor, or an input that is
        not a float32 tensor.
    ValueError
        For ``sparse_layers="error"`` with SparseLinear layers present (they are listed), or an unknown
        ``sparse_layers``.
    RuntimeError
        When ONNX Runtime's output differs from torch's by more than ``atol`` (the file is left in place for
        inspection).

    Examples
    --------
    >>> import tempfile, torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     result = to_onnx(net, f"{tmp}/net.onnx", torch.randn(3, 4))
    >>> result.max_abs_diff <= 1e-5
    True
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(example_input, torch.Tensor) or example_input.dtype != torch.float32:
        got = example_input.dtype if isinstance(example_input, torch.Tensor) else type(example_input).__name__
        raise TypeError(f"example_input must be a float32 torch.Tensor, got {got}")
    if example_input.ndim < 1 or example_input.shape[0] < 1:
        shape = tuple(example_input.shape)
        raise ValueError(f"example_input must have a batch dimension of size >= 1, got shape {shape}")
    if sparse_layers not in _SPARSE_MODES:
        raise ValueError(f"sparse_layers must be one of {_SPARSE_MODES}, got {sparse_layers!r}")
    if not (isinstance(atol, int | float) and np.isfinite(atol) and atol >= 0):
        raise ValueError(f"atol must be a finite number >= 0, got {atol!r}")
    # Bayesian layers (anything offering posterior means, the protocol of export.deterministic) would be traced
    # with one random weight draw: ask for the deterministic network instead.
    bayesian = [
        name or "<root>" for name, sub in module.named_modules() if callable(getattr(sub, "mean_parameters", None))
    ]
    if bayesian:
        raise TypeError(
            f"module holds Bayesian layers ({', '.join(bayesian)}); export its posterior-mean network "
            "(probsparse.export.to_deterministic) instead"
        )
    sparse_names = tuple(name or "<root>" for name, sub in module.named_modules() if isinstance(sub, SparseLinear))
    if sparse_names and sparse_layers == "error":
        raise ValueError(
            "the network holds SparseLinear layers, which ONNX cannot store sparsely: "
            f"{', '.join(sparse_names)}; pass sparse_layers='densify' to write their dense form"
        )
    exported = _densify(module)  # a copy: the user's module keeps its layers and its train/eval mode
    exported.eval()
    x = example_input.detach().cpu()
    with torch.no_grad():
        expected = exported(x)
    if not isinstance(expected, torch.Tensor):
        raise TypeError(f"module must return one tensor (one ONNX output), got {type(expected).__name__}")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The legacy exporter announces its deprecation on every call (the choice is explained above), once
        # from the entry point and once from its own logging set-up inside torch.onnx.
        warnings.filterwarnings(
            "ignore", message=".*legacy TorchScript-based ONNX export.*", category=DeprecationWarning
        )
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\..*")
        torch.onnx.export(
            exported,
            (x,),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            opset_version=opset_version,
            dynamo=False,
        )

    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["output"], {"input": x.numpy()})
    diff = float(np.max(np.abs(got - expected.numpy()))) if got.size else 0.0
    if not diff <= atol:
        raise RuntimeError(
            f"ONNX Runtime output differs from torch by {diff:.3g} > atol = {atol:g}; the file {path} was written "
            "but does not reproduce the network"
        )
    return OnnxExport(path=path, max_abs_diff=diff, densified=sparse_names)
