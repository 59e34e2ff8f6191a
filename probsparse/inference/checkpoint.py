"""Checkpoints of a fit: parameters, optimiser, counters and random states, saved without pickle.

A checkpoint is a nested dict of tensors, numbers, strings, ``None``, lists and dicts, so it loads with
``torch.load(weights_only=True)``: loading a checkpoint never runs code from the file. Random-number
generator states are stored as integer tensors for the same reason (NumPy's and Python's states are
tuples holding arrays or long tuples).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

__all__ = ["CHECKPOINT_NAME", "capture_rng_state", "load_checkpoint", "restore_rng_state", "save_checkpoint"]

#: File name of the (single, latest) checkpoint inside a checkpoint directory.
CHECKPOINT_NAME = "checkpoint.pt"


def capture_rng_state() -> dict:
    """The states of torch's (CPU and CUDA), NumPy's legacy global and Python's ``random`` generators.

    Returns
    -------
    dict
        ``{"torch": uint8 tensor, "cuda": list of uint8 tensors, "numpy": {...}, "python": {...}}``, every
        array as a tensor so that :func:`load_checkpoint` can read it with ``weights_only=True``.

    Examples
    --------
    >>> import torch
    >>> state = capture_rng_state()
    >>> a = torch.rand(2)
    >>> restore_rng_state(state)
    >>> torch.equal(torch.rand(2), a)
    True
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the legacy global generator)
    version, internal, gauss_next = random.getstate()
    cuda = [s.clone() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_initialized() else []
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "numpy": {
            "kind": kind,
            "keys": torch.as_tensor(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        # Python's Mersenne-Twister state is 625 integers below 2**32: they fit int64 exactly.
        "python": {
            "version": int(version),
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }


def restore_rng_state(state: dict) -> None:
    """Set the generators to a state from :func:`capture_rng_state` (possibly read back from a file)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    legacy = (np_state["kind"], keys, np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"])
    np.random.set_state(legacy)  # noqa: NPY002 (the legacy global generator is what Pyro seeds)
    py_state = state["python"]
    random.setstate((py_state["version"], tuple(int(v) for v in py_state["internal"].tolist()), py_state["gauss_next"]))


def save_checkpoint(state: dict, directory: str | os.PathLike) -> Path:
    """Write ``state`` to ``directory / CHECKPOINT_NAME`` atomically; return the path.

    The file is written under a temporary name and then renamed over the old checkpoint, so a fit killed
    while saving leaves the previous checkpoint intact.

    Parameters
    ----------
    state : dict
        Tensors, numbers, strings, ``None`` and lists / tuples / dicts of them.
    directory : path-like
        Created if missing.

    Returns
    -------
    pathlib.Path
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_NAME
    tmp = directory / (CHECKPOINT_NAME + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(directory: str | os.PathLike) -> dict:
    """Read the checkpoint in ``directory`` with ``torch.load(weights_only=True)`` (no pickle code runs).

    Raises
    ------
    FileNotFoundError
        When ``directory`` holds no checkpoint.
    """
    path = Path(directory) / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=True)
