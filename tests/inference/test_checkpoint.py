"""Checkpoint files: random states round-trip through a weights_only load; no pickled code is accepted."""

import pickle
import random

import numpy as np
import pytest
import torch

from probsparse.inference.checkpoint import (
    CHECKPOINT_NAME,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def _draws():
    return torch.rand(3).tolist(), np.random.random(3).tolist(), [random.random() for _ in range(3)]  # noqa: NPY002


def test_rng_states_round_trip_through_a_file(tmp_path):
    np.random.standard_normal()  # noqa: NPY002 (leaves a cached Gaussian in NumPy's state)
    random.gauss(0.0, 1.0)  # and one in Python's
    save_checkpoint({"rng": capture_rng_state()}, tmp_path)
    expected = _draws()
    restore_rng_state(load_checkpoint(tmp_path)["rng"])
    assert _draws() == expected
    # the cached Gaussians are part of the state
    restore_rng_state(load_checkpoint(tmp_path)["rng"])
    a = (np.random.standard_normal(), random.gauss(0.0, 1.0))  # noqa: NPY002
    restore_rng_state(load_checkpoint(tmp_path)["rng"])
    assert (np.random.standard_normal(), random.gauss(0.0, 1.0)) == a  # noqa: NPY002


def test_save_overwrites_atomically_and_load_reads_tensors(tmp_path):
    first = save_checkpoint({"x": torch.arange(3), "epoch": 1}, tmp_path / "ck")
    second = save_checkpoint({"x": torch.arange(4), "epoch": 2}, tmp_path / "ck")
    assert first == second == tmp_path / "ck" / CHECKPOINT_NAME
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [CHECKPOINT_NAME]
    state = load_checkpoint(tmp_path / "ck")
    assert state["epoch"] == 2 and torch.equal(state["x"], torch.arange(4))


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_load_refuses_pickled_objects(tmp_path):
    torch.save({"obj": _Payload()}, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(tmp_path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nowhere")
