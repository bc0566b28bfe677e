"""How far back a trained CIFAR-10 lossless model looks: teacher-forced bits when every
attention is cut to the last W positions (issue 19).

At CIFAR-10's ~11,100 tokens an image, attention is most of a training step's work (the 24.9M
model: ~two thirds of its FLOPs a token). A model whose far context the decoder-state features
already summarise would lose little if each position saw only its last W positions; a window
would then buy throughput. This cuts the window at inference only (no retraining: the figures
are an upper bound on what a model trained with the window would lose), on the first ``--n``
test images, and reports bits/dim for each W beside full attention, and the extra bits of the
tokens the cut reaches (positions past W). The "full" row is each model's own attention (for a
model trained with ``attn_window``, that window).

    WAVAR_CACHE=... PYTHONPATH=. python benchmarks/attention_window.py cifar10-lossless \
        --n 16 --windows 4096,2048,1024,512
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wavar.data.shards import TokenDataset
from wavar.model import transformer
from wavar.model.transformer import WaveletGPT, token_bits
from wavar.sample.generate import codec_of
from wavar.train.loop import batch_to_device

RESULTS = Path(__file__).parent / "results" / "eval"
_full_sdpa = F.scaled_dot_product_attention


def windowed_sdpa(window: int, block: int = 1024):
    """``scaled_dot_product_attention`` for causal calls, each query seeing its last
    ``window`` positions (itself included); computed a block of queries at a time so the
    scores stay (block x (window + block)) rather than T x T."""

    def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kw):
        if not is_causal or attn_mask is not None:
            return _full_sdpa(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                              is_causal=is_causal, **kw)
        T = q.shape[-2]
        out = torch.empty_like(q)
        for a in range(0, T, block):
            b = min(T, a + block)
            lo = max(0, a - window + 1)
            qi = torch.arange(a, b)[:, None]
            ki = torch.arange(lo, b)[None, :]
            band = (ki <= qi) & (ki > qi - window)
            out[..., a:b, :] = _full_sdpa(q[..., a:b, :], k[..., lo:b, :], v[..., lo:b, :],
                                          attn_mask=band)
        return out

    return sdpa


@torch.no_grad()
def image_bits(model, data: TokenDataset, i: int) -> np.ndarray:
    """-log2 p of each token of image ``i``, teacher-forced."""
    batch = batch_to_device(data.batch(np.array([i])), torch.device("cpu"))
    return token_bits(model(batch), batch)[0][batch["valid"][0]].numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="zoo names or model folders (CIFAR-10, lossless)")
    ap.add_argument("--n", type=int, default=16, help="the first N test images")
    ap.add_argument("--windows", default="4096,2048,1024,512",
                    help="windows to cut to; '' for the models' own attention only (a model "
                         "trained with a window keeps its own)")
    ap.add_argument("--tag", default="", help="written to attention_window_cifar10_<tag>.json")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    windows = [int(w) for w in args.windows.split(",") if w]
    report = []
    for name in args.models:
        model = WaveletGPT.from_pretrained(name).float().eval()
        codec = codec_of(model)
        if not codec.lossless:
            raise SystemExit(f"{name}: not a lossless model (bits/dim needs one)")
        data = TokenDataset.load("cifar10", codec, "test",
                                 context=bool(model.config.decoder_state))
        dims = int(np.prod(data.image_shape))
        t = time.perf_counter()
        full = [image_bits(model, data, i) for i in range(args.n)]
        rows = [{"window": None, "bits_per_dim": float(np.mean([b.sum() for b in full]) / dims)}]
        for w in windows:
            transformer.F.scaled_dot_product_attention = windowed_sdpa(w)
            try:
                cut = [image_bits(model, data, i) for i in range(args.n)]
            finally:
                transformer.F.scaled_dot_product_attention = _full_sdpa
            past = sum(max(0, len(b) - w) for b in full)
            extra = sum(float(c[w:].sum() - b[w:].sum()) for b, c in zip(full, cut, strict=True))
            rows.append({"window": w, "bits_per_dim": float(np.mean([c.sum() for c in cut])
                                                            / dims),
                         "tokens_past_window": past / sum(len(b) for b in full),
                         "extra_bits_per_token_past_window": extra / max(past, 1)})
        r = {"model": name, "params": model.num_params(), "images": args.n,
             "tokens_per_image": float(np.mean([len(b) for b in full])), "rows": rows,
             "seconds": time.perf_counter() - t}
        for row in rows:
            w = "full" if row["window"] is None else row["window"]
            more = ("" if row["window"] is None else
                    f"  ({100 * row['tokens_past_window']:.0f}% of tokens past the window, "
                    f"+{row['extra_bits_per_token_past_window']:.4f} bits each)")
            print(f"{name} window {w}: {row['bits_per_dim']:.4f} bits/dim{more}")
        report.append(r)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"attention_window_cifar10{'_' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
