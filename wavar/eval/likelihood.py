"""Likelihood of a model on a token dataset: bits per token, per image, and per dimension.

The model's grammar-masked negative log2-likelihood of a sequence is the exact length of an
arithmetic code of that sequence under the model, so bits per image is a code length; with a
lossless codec (``cdf53``, final threshold 1, or the raster language, where it equals bits per
token) it converts to bits per pixel-dimension.
"""

from __future__ import annotations

import numpy as np
import torch

from wavar.train.loop import batch_to_device


def packed_row_len(model) -> int:
    """Rows for :func:`nll` on CUDA: two of the longest sequences (and their class prefixes),
    in whole blocks of 128 positions."""
    return -(-2 * (model.config.max_seq_len + 1) // 128) * 128


@torch.no_grad()
def nll(model, data, batch_size: int = 32, limit: int | None = None,
        pack_len: int = 0) -> dict:
    """Mean code length of the sequences of ``data`` (a TokenDataset) under ``model``.

    ``pack_len``: the sequences go in packed rows of that many positions (no padding; on CUDA
    FlexAttention skips the blocks that a window or another sequence hides), else one a row,
    padded to the batch's longest. The same bits either way."""
    device = next(model.parameters()).device
    model.eval()
    bits = np.zeros(len(data))
    n = len(data) if limit is None else min(limit, len(data))
    for s in range(0, n, batch_size):
        idx = np.arange(s, min(n, s + batch_size))
        batch = batch_to_device(data.batch(idx), device, pack_len=pack_len)
        bits[idx] = model.bits_per_sequence(batch).cpu().numpy()
    lengths = data.lengths[:n]
    bits = bits[:n]
    out = {"images": int(n), "bits_per_token": float(bits.sum() / lengths.sum()),
           "bits_per_image": float(bits.mean()), "tokens_per_image": float(lengths.mean())}
    if data.codec.lossless:
        dims = int(np.prod(data.image_shape))
        out["bits_per_dim"] = float(bits.mean() / dims)
    return out
