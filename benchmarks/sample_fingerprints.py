"""Fingerprints of the sampler's tokens: each zoo model sampled on the CPU with a few settings,
every setting's sequences hashed. A refactor of the sampler must leave them identical.

    python benchmarks/sample_fingerprints.py > /tmp/fingerprints.json

Prints JSON to stdout only (no result file): {model: {setting: {"sha1", "lengths"}}}.
Budgets keep each model well under a minute on one CPU core; mnist-small also samples complete
sequences, and a plane limit ends rows at different steps (the CPU loop's compaction runs).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time

import numpy as np
import torch

from wavar.codec import WaveletCodec
from wavar.model.transformer import WaveletGPT
from wavar.sample.generate import codec_of, generate, image_shape_of, prefix_tokens
from wavar.sample.options import Region

MODELS = {  # name: token budget per sequence
    "mnist-small": 600,
    "fashion-mnist-small": 400,
    "fashion-mnist-raster": 300,
    "cifar10": 300,
    "cifar10-lossless": 250,
}
LABELS = [0, 3, 5, 9]


def test_image(shape: tuple[int, int, int]) -> np.ndarray:
    """A fixed smooth image with an edge (wavelet-sparse, like a photo)."""
    h, w, c = shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    planes = [128 + 60 * np.sin(3 * (k + 1) * xx + 2 * yy) + 40 * (xx + 0.3 * k * yy > 0.5)
              for k in range(c)]
    img = np.clip(np.stack(planes, -1), 0, 255).astype(np.uint8)
    return img[..., 0] if c == 1 else img


def settings(model) -> dict[str, dict]:
    codec = codec_of(model)
    shape = image_shape_of(model)
    img = test_image(shape)
    n = len(LABELS)
    out = {"plain": {}, "cfg2": {"cfg": 2.0}, "t0.8_p0.9": {"temperature": 0.8, "top_p": 0.9},
           "top_k2_plane3": {"top_k": 2, "max_plane": 3}}
    wavelet = isinstance(codec, WaveletCodec)
    if wavelet and model.config.max_seq_len < 2000:  # mnist: two complete sequences
        out["complete"] = {"max_tokens": None, "labels": LABELS[:2]}
    pre = prefix_tokens(codec, img, planes=2) if wavelet else prefix_tokens(codec, img,
                                                                           tokens=60)
    out["prefix"] = {"prefix": [pre.tokens] * n, "m_tilde": [pre.header.m_tilde] * n}
    if wavelet:
        keep = np.zeros(shape[:2], bool)
        keep[:, : shape[1] // 2] = True
        out["region"] = {"region": Region(img, keep)}
        if model.config.codec.get("ll_bank"):
            out["ll_init"] = {"ll_init": True}
    return out


def main() -> None:
    torch.set_num_threads(1)
    report: dict = {}
    for name, budget in MODELS.items():
        t = time.perf_counter()
        model = WaveletGPT.from_pretrained(name).float().eval()
        report[name] = {}
        for label, kw in settings(model).items():
            kw = {"max_tokens": budget, **kw}
            seqs = generate(model, kw.pop("labels", LABELS), seed=7, **kw)
            digest = hashlib.sha1()
            for s in seqs:
                digest.update(np.int64([len(s), s.header.m_tilde]).tobytes())
                digest.update(s.tokens.tobytes())
            report[name][label] = {"sha1": digest.hexdigest()[:16],
                                   "lengths": [len(s) for s in seqs]}
        print(f"{name}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    print("{\n" + ",\n".join(
        f' "{name}": {{\n' + ",\n".join(f'  "{k}": {json.dumps(v)}' for k, v in rows.items())
        + "\n }" for name, rows in report.items()) + "\n}")  # one line per setting


if __name__ == "__main__":
    main()
