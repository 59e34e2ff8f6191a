"""Input checks for the heavy-tailed and sparse GP models (torch tensors in, clear errors out)."""

from __future__ import annotations

import torch

from ..._validation import check_finite_real, check_positive_real

__all__ = ["as_inputs", "as_targets", "check_positive", "check_same_width"]


def _as_float_tensor(value, name: str, dtype: torch.dtype | None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        tensor = value
    else:
        try:
            tensor = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name} must be a tensor or array of real numbers, got {type(value).__name__}") from err
    if not tensor.is_floating_point():
        if tensor.dtype == torch.bool or tensor.is_complex():
            raise TypeError(f"{name} must hold real floating-point numbers, got dtype {tensor.dtype}")
        # Integer arrays are legitimate data; they become the default float dtype, as in torch itself.
        tensor = tensor.to(dtype or torch.get_default_dtype())
    elif dtype is not None and tensor.dtype != dtype:
        raise TypeError(f"{name} has dtype {tensor.dtype} but the model works in {dtype}; convert it first")
    return tensor


def as_inputs(x, name: str = "x", *, dtype: torch.dtype | None = None, width: int | None = None) -> torch.Tensor:
    """Return ``x`` as a finite floating tensor of shape ``(n, d)``, ``n >= 1``."""
    x = _as_float_tensor(x, name, dtype)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_points, n_features), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: at least one point is needed")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has no features (shape {tuple(x.shape)})")
    if width is not None and x.shape[1] != width:
        raise ValueError(f"{name} has {x.shape[1]} features, expected {width}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values; all entries must be finite")
    return x


def as_targets(y, n: int, name: str = "y", *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Return ``y`` as a finite 1-D floating tensor of length ``n``."""
    y = _as_float_tensor(y, name, dtype)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (n_points,), got shape {tuple(y.shape)}")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} entries but the inputs have {n} rows")
    if not torch.isfinite(y).all():
        raise ValueError(f"{name} contains NaN or infinite values; all targets must be finite")
    return y


def check_positive(value, name: str) -> float:
    """A positive finite real (plain Python or 0-d tensor), as ``float``."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got shape {tuple(value.shape)}")
        value = value.item()
    check_finite_real(value, name)
    return check_positive_real(value, name)


def check_same_width(inducing: torch.Tensor, width: int, name: str = "inducing_points") -> None:
    """Raise if inducing points do not have the data's number of features."""
    if inducing.ndim != 2 or inducing.shape[-1] != width:
        raise ValueError(
            f"{name} must have shape (n_inducing, {width}) to match the inputs' {width} features, "
            f"got {tuple(inducing.shape)}"
        )


def initial_inducing_points(inducing_points, train_x: torch.Tensor, seed: int) -> torch.Tensor:
    """Inducing inputs from a count (that many training inputs, drawn without replacement by ``seed``) or a tensor.

    Returns a new tensor of shape (M, d) in ``train_x``'s dtype.
    """
    from ..._validation import check_positive_int

    n, d = train_x.shape
    if isinstance(inducing_points, bool) or not isinstance(inducing_points, int | torch.Tensor):
        raise TypeError(f"inducing_points must be an int or a tensor of shape (M, {d}), got {inducing_points!r}")
    if isinstance(inducing_points, int):
        m = check_positive_int(inducing_points, "inducing_points")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(m, n)]
        return train_x[perm].clone()
    z = as_inputs(inducing_points, "inducing_points", dtype=train_x.dtype)
    check_same_width(z, d)
    return z.clone()
