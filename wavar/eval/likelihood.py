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


@torch.no_grad()
def nll(model, data, batch_size: int = 32, limit: int | None = None) -> dict:
    """Mean code length of the sequences of ``data`` (a TokenDataset) under ``model``."""
    device = next(model.parameters()).device
    model.eval()
    bits = np.zeros(len(data))
    n = len(data) if limit is None else min(limit, len(data))
    for s in range(0, n, batch_size):
        idx = np.arange(s, min(n, s + batch_size))
        batch = batch_to_device(data.batch(idx), device)
        logits = model(batch)
        logp = torch.log_softmax(logits.float(), -1)
        tok = logp.gather(-1, batch["tokens"][..., None])[..., 0]
        per_seq = -(tok * batch["valid"]).sum(1) / np.log(2)
        bits[idx] = per_seq.cpu().numpy()
    lengths = data.lengths[:n]
    bits = bits[:n]
    out = {"images": int(n), "bits_per_token": float(bits.sum() / lengths.sum()),
           "bits_per_image": float(bits.mean()), "tokens_per_image": float(lengths.mean())}
    if data.codec.lossless:
        dims = int(np.prod(data.image_shape))
        out["bits_per_dim"] = float(bits.mean() / dims)
    return out
