"""Packed batches: whole sequences laid end to end in rows of one length (issue 18).

Length-bucketed batches pad less, but they hold like lengths, and in these languages the length
nearly names the class: on MNIST 4 buckets ended at 0.2800 val bits/token against 0.2660 without
(BENCHMARKS.md, "Length buckets hurt MNIST"). Packing keeps the plain uniform draw and drops the
padding instead: the batch's sequences (exactly those an unpacked batch holds) are placed
first-fit, longest first, into rows of ``row_len`` positions, each as its class prefix followed
by its steps, and the model lets every position attend only to its own sequence's past
(:func:`wavar.model.transformer.sequence_mask`). Positions restart at 0 with every sequence, so
each token sees the same inputs as unpacked and the loss is the unpacked batch's.

Row layout (R rows of P = ``row_len`` positions; the model reads a batch as packed when it has
``doc``):

* ``doc`` (R, P) int64: which of the batch's sequences a position belongs to, -1 for padding;
* ``prefix`` (R, P) bool: the sequence's first position, the class prefix (predicts nothing);
* ``position`` (R, P) int64: position within the sequence (prefix 0, token t at t + 1);
* ``label``, ``m_tilde`` (R, P): the sequence's, at each of its positions;
* ``tokens``, ``slots``, ``pos``, ``legal``, ``valid``, ``context``: token t of a sequence at its
  position t + 1 (what the unpacked batch holds at t), zeros and invalid elsewhere.
"""

from __future__ import annotations

import numpy as np
import torch

PER_POSITION = ("tokens", "slots", "pos", "legal", "valid", "context")  # arrays with a T axis


def place(need: np.ndarray, row_len: int) -> tuple[np.ndarray, np.ndarray, int]:
    """First-fit-decreasing placement of sequences taking ``need`` positions each: (row,
    offset) of each and the number of rows."""
    if need.size and int(need.max()) > row_len:
        raise ValueError(f"a sequence takes {int(need.max())} positions (its tokens and the "
                         f"prefix), more than pack_len {row_len}")
    free: list[int] = []
    row, offset = np.zeros(len(need), np.int64), np.zeros(len(need), np.int64)
    for i in np.argsort(-need, kind="stable"):
        r = next((r for r, f in enumerate(free) if f >= need[i]), len(free))
        if r == len(free):
            free.append(row_len)
        row[i], offset[i] = r, row_len - free[r]
        free[r] -= int(need[i])
    return row, offset, len(free)


def row_multiple(device: torch.device) -> int:
    """Packed rows come in even numbers on CUDA: fewer shapes for compiled code (the training
    blocks, FlexAttention's kernel)."""
    return 2 if torch.device(device).type == "cuda" else 1


def pack_batch(batch: dict[str, np.ndarray], row_len: int, row_multiple: int = 1,
               max_len: int | None = None) -> dict[str, torch.Tensor]:
    """A numpy batch (as :meth:`TokenDataset.batch` gives it) -> packed CPU tensors of rows of
    ``row_len`` positions, their number rounded up to a multiple of ``row_multiple`` (few
    shapes for compiled code; the extra rows are padding). ``max_len``: the model's
    ``max_seq_len``, checked here (the host) rather than in the model's step."""
    lengths = batch["valid"].sum(1).astype(np.int64)
    if max_len is not None and lengths.size and int(lengths.max()) > max_len:
        raise ValueError(f"a sequence of {int(lengths.max())} tokens exceeds max_seq_len "
                         f"{max_len}")
    row, offset, n_rows = place(lengths + 1, row_len)
    n_rows = max(1, -(-n_rows // row_multiple) * row_multiple)
    shape = (n_rows, row_len)
    out = {"doc": np.full(shape, -1, np.int64), "prefix": np.zeros(shape, bool),
           "position": np.zeros(shape, np.int64),
           "label": np.zeros(shape, np.int64), "m_tilde": np.zeros(shape, np.int64)}
    for key in PER_POSITION:
        if key in batch:
            value = batch[key]
            out[key] = np.zeros(shape + value.shape[2:], value.dtype)
    for i, (r, o, n) in enumerate(zip(row, offset, lengths, strict=True)):
        span = slice(o, o + n + 1)
        out["doc"][r, span] = i
        out["prefix"][r, o] = True
        out["position"][r, span] = np.arange(n + 1)
        out["label"][r, span] = batch["label"][i]
        out["m_tilde"][r, span] = batch["m_tilde"][i]
        for key in PER_POSITION:
            if key in batch:
                out[key][r, o + 1 : o + n + 1] = batch[key][i, :n]
    if "legal" in out:
        out["legal"][~out["valid"]] = 1  # as unpacked padding: a harmless non-empty mask
    return {k: torch.from_numpy(v) for k, v in out.items()}
