"""Rate-distortion of a model's code: PSNR against tokens and model bits, beside JPEG 2000.

Each test image is coded once; every prefix of its sequence decodes, so one code gives a
whole curve. At a ladder of token budgets ``B`` (16, 16 sqrt 2, 32, ... up to the longest
sequence) an image's point is the PSNR of its first ``min(B, length)`` tokens, and its rate

* in tokens, and raw bits ``log2(V)`` per token (a flat code over the vocabulary);
* in **model bits**: ``-log2 p`` of that prefix under the model, i.e. the sum of the per-token
  code lengths (:func:`wavar.model.transformer.token_bits`) of one forward pass over the full
  sequence, cumulated. This is the length of an arithmetic code of the prefix driven by the
  model (the class label and m~ are side information, not counted).

JPEG 2000 (Pillow's OpenJPEG, :func:`wavar.eval.jpeg2000.encode_at_rate`) is measured at
matched rates: each image is coded with a payload target equal to its own model bits at each
budget, and the point records the achieved payload (codestream minus headers; OpenJPEG cannot
go below a floor of a few hundred bits, so the lowest points may overshoot the target).
"""

from __future__ import annotations

import math
import time

import numpy as np

from wavar.data.shards import TokenDataset
from wavar.eval import jpeg2000 as j2k
from wavar.eval.metrics import psnr

__all__ = ["PSNR_CAP", "budgets", "model_rd", "plot_rd", "prefix_model_bits", "prefix_points"]

#: An exact reconstruction (PSNR inf) counts as this many dB in the means.
PSNR_CAP = 100.0


def budgets(max_len: int, start: int = 16) -> list[int]:
    """Token budgets ``start, start sqrt 2, 2 start, ...`` up to (and including) ``max_len``."""
    out, k = [], 2 * math.log2(start)
    while True:
        b = int(round(2 ** (k / 2)))
        if b >= max_len:
            return out + [max_len]
        if not out or b > out[-1]:
            out.append(b)
        k += 1


def prefix_points(codec, seqs, images: np.ndarray):
    """Per budget of :func:`budgets` (up to the longest sequence), decode the prefixes of
    ``seqs`` (the codes of ``images``) and yield ``(point, used)``: ``point`` holds ``budget``,
    ``tokens`` and ``raw_bits`` (means per image), ``psnr`` (mean, capped at
    :data:`PSNR_CAP`) and ``n_exact``; ``used`` the tokens of each image's prefix."""
    lengths = np.array([len(s) for s in seqs], np.int64)
    vocab_bits = math.log2(codec.lang.vocab_size)
    for b in budgets(int(lengths.max())):
        dec = codec.decode_batch(seqs, n_tokens=b)
        used = np.minimum(lengths, b)
        ps = np.array([psnr(im, d) for im, d in zip(images, dec, strict=True)])
        yield ({"budget": b, "tokens": float(used.mean()),
                "raw_bits": float(vocab_bits * used.mean()),
                "psnr": float(np.minimum(ps, PSNR_CAP).mean()),
                "n_exact": int(np.isinf(ps).sum())}, used)


def prefix_model_bits(model, data, batch_size: int = 64) -> list[np.ndarray]:
    """Per sequence of ``data`` (a TokenDataset), ``c`` with ``c[t]`` = model bits of its first
    ``t`` tokens (``c[0] = 0``): one forward pass per batch over full sequences."""
    # lazy: torch and the model are needed for model bits only; the ladder above serves the
    # codec alone (benchmarks/codec_rd.py) without them
    import torch

    from wavar.model.transformer import token_bits
    from wavar.train.loop import batch_to_device

    device = next(model.parameters()).device
    model.eval()
    out: list[np.ndarray] = []
    with torch.no_grad():
        for s in range(0, len(data), batch_size):
            idx = np.arange(s, min(len(data), s + batch_size))
            batch = batch_to_device(data.batch(idx), device)
            bits = token_bits(model(batch), batch).double().cumsum(1).cpu().numpy()
            for r, n in enumerate(data.lengths[idx]):
                out.append(np.concatenate([[0.0], bits[r, :n]]))
    return out


def model_rd(model, images: np.ndarray, labels: np.ndarray, jpeg2000: bool = True,
             batch_size: int = 64, log=None) -> dict:
    """Rate-distortion points of ``model``'s code on ``images``, and of JPEG 2000.

    Parameters
    ----------
    model : WaveletGPT
    images : np.ndarray
        uint8 ``(N, H, W)`` or ``(N, H, W, 3)`` images of the model's shape.
    labels : np.ndarray
        Their classes (the model's condition).
    jpeg2000 : bool, optional
        Also measure JPEG 2000 at matched rates.
    batch_size : int, optional
        Sequences per forward pass.
    log : callable, optional
        Progress lines.

    Returns
    -------
    dict
        ``images``, ``pixels`` (per image), ``vocab_size``, ``mean_tokens``, ``mean_model_bits``
        (full sequences) and ``points``: per budget ``budget``, ``tokens``, ``raw_bits``,
        ``model_bits`` (means per image), ``psnr`` (mean, capped at :data:`PSNR_CAP`),
        ``n_exact``; with ``jpeg2000`` also ``j2k_target_bits``, ``j2k_payload_bits``,
        ``j2k_psnr`` and ``j2k_n_exact``.
    """
    from wavar.sample.generate import codec_of  # lazy: imports torch, as above

    images = np.asarray(images)
    labels = np.asarray(labels, np.int64)
    t0 = time.perf_counter()
    codec = codec_of(model)
    seqs = codec.encode_batch(images)
    data = TokenDataset.from_coded(codec, images.shape[1:], seqs, labels,
                                   context=bool(model.config.decoder_state))
    cum = prefix_model_bits(model, data, batch_size)
    points = []
    for p, used in prefix_points(codec, seqs, images):
        mbits = np.array([c[u] for c, u in zip(cum, used, strict=True)])
        p["model_bits"] = float(mbits.mean())
        if jpeg2000:
            streams = [j2k.encode_at_rate(im, max(float(t), 1.0))
                       for im, t in zip(images, mbits, strict=True)]
            jp = np.array([psnr(im, j2k.decode(s)) for im, s in zip(images, streams,
                                                                   strict=True)])
            p.update(j2k_target_bits=float(mbits.mean()),
                     j2k_payload_bits=float(np.mean([j2k.payload_bits(s) for s in streams])),
                     j2k_psnr=float(np.minimum(jp, PSNR_CAP).mean()),
                     j2k_n_exact=int(np.isinf(jp).sum()))
        points.append(p)
        if log is not None:
            log(f"  {p['budget']} tokens: {p['model_bits']:.0f} model bits, {p['psnr']:.2f} dB"
                + (f"; JPEG 2000 {p['j2k_payload_bits']:.0f} bits, {p['j2k_psnr']:.2f} dB"
                   if jpeg2000 else ""))
    return {
        "images": len(images), "pixels": int(np.prod(images.shape[1:3])),
        "vocab_size": codec.lang.vocab_size, "psnr_cap": PSNR_CAP,
        "mean_tokens": float(data.lengths.mean()),
        "mean_model_bits": float(np.mean([c[-1] for c in cum])),
        "points": points, "seconds": time.perf_counter() - t0,
    }


def plot_rd(rd: dict, path, title: str = "") -> None:
    """PSNR against bits per pixel: model bits, raw token bits and JPEG 2000 payload."""
    import matplotlib  # lazy: the optional `bench` extra (wavar eval reports without the plot)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts, px = rd["points"], rd["pixels"]
    fig, (ax, at) = plt.subplots(1, 2, figsize=(11, 4.6), dpi=120,
                                 gridspec_kw={"width_ratios": [3, 2]})
    ax.plot([p["model_bits"] / px for p in pts], [p["psnr"] for p in pts], "o-", ms=3,
            label="wavar, model bits (-log2 p of the prefix)")
    ax.plot([p["raw_bits"] / px for p in pts], [p["psnr"] for p in pts], "s:", ms=3,
            label=f"wavar, raw log2({rd['vocab_size']}) bits/token")
    if pts and "j2k_psnr" in pts[0]:
        ax.plot([p["j2k_payload_bits"] / px for p in pts], [p["j2k_psnr"] for p in pts], "^-",
                ms=4, label="JPEG 2000 (OpenJPEG) payload, matched targets")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bits per pixel (mean bits per image / pixels)")
    ax.set_ylabel(f"mean PSNR (dB, capped at {rd['psnr_cap']:.0f})")
    ax.set_title(title or f"rate-distortion on {rd['images']} test images", fontsize=10)
    ax.legend(fontsize=8)
    at.plot([p["tokens"] for p in pts], [p["psnr"] for p in pts], "o-", ms=3)
    at.set_xscale("log", base=2)
    at.set_xlabel("tokens (mean per image)")
    at.set_title("PSNR against tokens", fontsize=10)
    for a in (ax, at):
        a.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
