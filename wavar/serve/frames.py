"""Frames and files from token sequences: where the planes end, PNG/GIF bytes, model bits.

(The frames of a generation, one per bit-plane, come from :mod:`wavar.serve.stages`.)
"""

from __future__ import annotations

import base64
import io
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from wavar.codec import CodedImage, RasterCodec
from wavar.viz import prefix_lengths, save_gif


def plane_ends(codec, seq: CodedImage) -> list[int]:
    """Token count at the end of each bit-plane of ``seq`` (the last is ``len(seq)``)."""
    plane = codec.slots(seq).plane[: len(seq)]  # slots has one entry past the end
    n = int(plane.max()) + 1 if len(plane) else 0
    return [int(np.searchsorted(plane, k)) for k in range(1, n + 1)]


def upscale(img: np.ndarray, scale: int) -> np.ndarray:
    return img if scale == 1 else np.repeat(np.repeat(img, scale, 0), scale, 1)


def png_bytes(img: np.ndarray, scale: int = 1) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(upscale(img, scale))).save(buf, format="PNG")
    return buf.getvalue()


def png_data_url(img: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(img)).decode()


def gif_bytes(frames: Sequence[np.ndarray], hold: int = 10) -> bytes:
    """An animated GIF of ``frames`` (80 ms each), the last held ``hold`` frames more."""
    with tempfile.TemporaryDirectory() as d:  # viz.save_gif writes a file
        path = Path(d) / "frames.gif"
        save_gif(path, list(frames) + [frames[-1]] * hold, duration_ms=80)
        return path.read_bytes()


def display_scale(shape: Sequence[int], target: int = 128) -> int:
    """An integer upscale that brings a small image to about ``target`` pixels a side."""
    return max(1, target // max(shape[:2]))


def coarse_to_fine(codec, seqs: Sequence[CodedImage], steps: int = 40) -> list[list[np.ndarray]]:
    """The sequences decoded at ``steps`` log-spaced prefix lengths (a GIF's frames)."""
    top = max(len(s) for s in seqs)
    return [codec.decode_batch(list(seqs), k) for k in prefix_lengths(top, steps)]


def finite(x: float) -> float | None:
    """JSON has no infinity: an exact reconstruction's PSNR is sent as null."""
    return None if math.isinf(x) or math.isnan(x) else round(float(x), 2)


def prefix_bits(model, seqs: Sequence[CodedImage], labels: Sequence[int],
                rows_per_pass: int = 16) -> list[np.ndarray]:
    """Model bits of every prefix: per sequence ``c`` with ``c[t]`` = -log2 p of its first
    ``t`` tokens given its class (``c[0] = 0``), from one forward pass per ``rows_per_pass``
    sequences. A sequence longer than the model's context is measured up to that length."""
    import torch

    from wavar.data.shards import TokenDataset
    from wavar.model.transformer import token_bits
    from wavar.sample.generate import codec_of

    cfg = model.config
    codec = codec_of(model)
    cut = [s[: cfg.max_seq_len] for s in seqs]
    out: list[np.ndarray] = [np.zeros(len(s) + 1) for s in cut]
    live = [i for i, s in enumerate(cut) if len(s)]
    if not live:
        return out
    lengths = np.array([len(cut[i]) for i in live], np.int64)
    tokens = [cut[i].tokens for i in live]
    if isinstance(codec, RasterCodec):  # the data set takes whole raster images: pad a part
        full = int(np.prod(cfg.codec["image_shape"]))  # (a prefix's bits ignore what follows)
        tokens = [np.pad(t, (0, max(0, full - len(t)))) for t in tokens]
    data = TokenDataset.from_sequences(
        codec, list(cfg.codec["image_shape"]), np.concatenate(tokens),
        np.concatenate([[0], np.cumsum([len(t) for t in tokens])]),
        np.array([cut[i].header.m_tilde for i in live], np.int64),
        np.array([labels[i] for i in live], np.int64), context=bool(cfg.decoder_state))
    device = next(model.parameters()).device
    with torch.no_grad():
        for s in range(0, len(live), rows_per_pass):
            idx = np.arange(s, min(len(live), s + rows_per_pass))
            batch = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device)
                     for k, v in data.batch(idx).items()}
            bits = token_bits(model(batch), batch).double().cumsum(1).cpu().numpy()
            for r, i in enumerate(idx):
                out[live[i]][1:] = bits[r, : lengths[i]]
    return out
