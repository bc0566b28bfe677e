"""Checkpoint files: round trip, atomic write, truncated/corrupted/foreign files, RNG state."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from wavar.errors import CheckpointError
from wavar.model.transformer import WaveletGPT, config_from_preset
from wavar.train.checkpoint import (
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    unwrap_model,
)


def state() -> dict:
    return {"step": 7, "w": torch.arange(10.0), "nested": {"betas": (0.9, 0.95), "s": "x"},
            "big": 2**100, "list": [torch.ones(2), 3]}


def test_round_trip(tmp_path):
    save_checkpoint(tmp_path / "ckpt.pt", state())
    back = load_checkpoint(tmp_path / "ckpt.pt")
    assert back["step"] == 7 and back["big"] == 2**100 and back["nested"]["betas"] == (0.9, 0.95)
    torch.testing.assert_close(back["w"], torch.arange(10.0))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind


@pytest.mark.parametrize("damage", ["truncate", "flip", "header"])
def test_damaged_file_raises_checkpoint_error(tmp_path, damage):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, state())
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) - 100]
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[:20]
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="is truncated or corrupted"):
        load_checkpoint(path)


def test_foreign_and_missing_files(tmp_path):
    torch.save(state(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a wavar checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "missing.pt")


@dataclass
class Pickled:
    x: int = 1


def test_objects_are_not_unpickled(tmp_path):
    save_checkpoint(tmp_path / "ckpt.pt", {"cfg": Pickled()})
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "ckpt.pt")


def test_rng_state_round_trip(tmp_path):
    data_rng = np.random.default_rng(3)
    np.random.seed(1)
    torch.manual_seed(2)
    save_checkpoint(tmp_path / "ckpt.pt", {"rng": capture_rng(data_rng)})
    expected = (torch.rand(3), np.random.rand(3), data_rng.random(3))
    restore_rng(load_checkpoint(tmp_path / "ckpt.pt")["rng"], data_rng)
    got = (torch.rand(3), np.random.rand(3), data_rng.random(3))
    torch.testing.assert_close(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[2], expected[2])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit, imported by compile
def test_unwrap_compiled_model():
    model = WaveletGPT(config_from_preset("tiny", max_seq_len=16))
    assert unwrap_model(torch.compile(model)) is model
    assert unwrap_model(model) is model
