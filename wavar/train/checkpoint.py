"""Training checkpoints: one file, written atomically, checked before it is unpickled.

File layout (little-endian)::

    8 bytes   magic  b"WAVARCKP"
    4 bytes   format version (uint32)
    32 bytes  sha256 of the payload
    8 bytes   payload length (uint64)
    payload   torch.save of a dict of tensors, numbers, strings, lists and dicts

The hash lives inside the file, not beside it, so a kill between two writes can never leave a
good checkpoint with a stale hash. The payload is loaded with ``weights_only=True``: no
dataclasses or other objects are pickled, and a checkpoint cannot run code.

Published weights are different: :meth:`WaveletGPT.save_pretrained` writes safetensors.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from wavar.atomic import write_atomic
from wavar.errors import CheckpointError

MAGIC = b"WAVARCKP"
VERSION = 1
_HEADER = struct.Struct("<8sI32sQ")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under DDP and/or ``torch.compile`` wrappers (whose state-dict keys
    carry ``module.`` / ``_orig_mod.`` prefixes)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (:func:`wavar.atomic.write_atomic`): a reader
    sees either the old checkpoint or the new one, whenever the writer is killed.
    """
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    header = _HEADER.pack(MAGIC, VERSION, hashlib.sha256(payload).digest(), len(payload))

    def write(f) -> None:
        f.write(header)
        f.write(payload)

    write_atomic(path, write)


def load_checkpoint(path: str | os.PathLike,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    CheckpointError
        If the file is missing, not a wavar checkpoint, of a newer format, truncated or
        corrupted.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    if len(data) < _HEADER.size:
        raise CheckpointError(f"{path} is truncated or corrupted: {len(data)} bytes, "
                              f"shorter than the {_HEADER.size}-byte header")
    magic, version, digest, length = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CheckpointError(f"{path} is not a wavar checkpoint (magic {magic!r})")
    if version > VERSION:
        raise CheckpointError(f"{path} has format version {version}; this wavar reads up to "
                              f"{VERSION}")
    payload = data[_HEADER.size:]
    if len(payload) != length:
        raise CheckpointError(f"{path} is truncated or corrupted: payload of {len(payload)} "
                              f"bytes, header says {length}")
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"{path} is truncated or corrupted: sha256 mismatch")
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as e:  # hash matched, so this is a writer bug or a foreign payload
        raise CheckpointError(f"{path} is truncated or corrupted: {e}") from e


# ----------------------------------------------------------------------------- RNG state

def capture_rng(data_rng: np.random.Generator) -> dict[str, Any]:
    """All random state a training step consumes, as checkpoint-safe values."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "data": data_rng.bit_generator.state,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, Any], data_rng: np.random.Generator) -> None:
    """Undo :func:`capture_rng`: put every generator back where it was."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    n = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    data_rng.bit_generator.state = state["data"]
