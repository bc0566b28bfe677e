"""How much of a training batch is real tokens: plain, length-bucketed, packed (issue 18);
and for a config's packed batches, how fast the host makes them (issue 19).

Draws batches of the training set's token lengths as the training loop does
(``wavar.data.shards.bucketed_indices``), pads each to its longest sequence rounded up to
``pad_to`` (as ``batch_to_device`` on CUDA) and reports the mean fraction of real tokens; and
for packing (``pack_len``), the plain draw placed into rows of ``pack_len`` positions as
``wavar.train.packing`` places it, rows rounded up to an even number as on CUDA (a class prefix
per sequence counts as padding).

    WAVAR_CACHE=... PYTHONPATH=. python benchmarks/batch_padding.py --dataset fashion-mnist

``--config`` takes the dataset, codec and ``pack_len`` from a training config and, for each of
``--batches``, packs whole batches as the training loop's prefetch thread does (the draw, the
decoder-state features when the model reads them, the packing): the real fraction of the rows
and the host's seconds a batch, i.e. the real tokens a second one thread can feed the GPU.

    WAVAR_CACHE=... PYTHONPATH=. python benchmarks/batch_padding.py \
        --config configs/cifar10-lossless-large.toml --batches 8,16,24 --limit 10000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks._common import TRAIN
from wavar.codec import WaveletCodec, codec_from_params
from wavar.data.shards import TokenDataset, bucketed_indices
from wavar.train.config import load_config
from wavar.train.packing import pack_batch, place

CODECS = {"fashion-mnist": dict(wavelet="bior4.4", final_threshold=2**-4),
          "mnist": dict(wavelet="haar", final_threshold=2**-3),
          # the lossless language of cifar10-lossless and configs/cifar10-lossless-large.toml
          "cifar10": dict(wavelet="cdf53", language="zeroblock", final_threshold=1.0)}


def real_fraction(lengths: np.ndarray, batch: int, buckets: int, pad_to: int, draws: int,
                  seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(draws):
        i = bucketed_indices(lengths, batch, rng, buckets)
        t = int(lengths[i].max())
        t += (-t) % pad_to
        out.append(lengths[i].sum() / (batch * t))
    return float(np.mean(out))


def packed_fraction(lengths: np.ndarray, batch: int, pack_len: int, draws: int,
                    seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(draws):
        n = lengths[bucketed_indices(lengths, batch, rng, 1)]
        rows = place(n + 1, pack_len)[2]
        out.append(n.sum() / ((rows + rows % 2) * pack_len))
    return float(np.mean(out))


def host_batches(config: str, batches: list[int], draws: int, limit: int | None) -> dict:
    """The config's packed batches as the prefetch thread makes them: real fraction and time."""
    cfg = load_config(config, [])
    if not cfg.pack_len:
        raise SystemExit(f"{config}: no pack_len, nothing packed to measure")
    data = TokenDataset.load(cfg.dataset, codec_from_params(cfg.codec), "train", limit=limit,
                             context=bool(cfg.model_args.get("decoder_state", 0)))
    max_len = cfg.model_args.get("max_seq_len")
    rng = np.random.default_rng(0)
    rows = []
    for batch in batches:
        pack_batch(data.sample_batch(batch, rng), cfg.pack_len, 2, max_len)  # warm caches
        real, tokens, seconds = [], [], []
        for _ in range(draws):
            t = time.perf_counter()
            packed = pack_batch(data.sample_batch(batch, rng), cfg.pack_len, 2, max_len)
            seconds.append(time.perf_counter() - t)
            real.append(float(packed["valid"].float().mean()))
            tokens.append(int(packed["valid"].sum()))
        s = float(np.mean(seconds))
        rows.append({"batch": batch, "rows": int(packed["valid"].shape[0]),
                     "real_fraction": float(np.mean(real)), "real_tokens": float(np.mean(tokens)),
                     "host_s_per_batch": s, "host_tokens_per_s": float(np.mean(tokens)) / s})
        print(f"batch {batch}: {100 * rows[-1]['real_fraction']:.1f}% real tokens "
              f"({rows[-1]['real_tokens']:.0f} a batch), {1000 * s:.1f} ms a batch on the host "
              f"({rows[-1]['host_tokens_per_s'] / 1e6:.1f}M real tokens/s)")
    return {"config": config, "pack_len": cfg.pack_len, "draws": draws, "limit": limit,
            "mean_length": float(data.lengths.mean()), "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist", choices=sorted(CODECS))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--pad-to", type=int, default=512)
    p.add_argument("--draws", type=int, default=500)
    p.add_argument("--config", default=None, help="measure this config's packed batches")
    p.add_argument("--batches", default="8,16,24", help="with --config: batch sizes")
    p.add_argument("--limit", type=int, default=None, help="with --config: first N images")
    args = p.parse_args()
    if args.config:
        result = host_batches(args.config, [int(b) for b in args.batches.split(",")],
                              min(args.draws, 50), args.limit)
        TRAIN.mkdir(parents=True, exist_ok=True)
        out = TRAIN / f"batch_host_{Path(args.config).stem}.json"
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"-> {out}")
        return
    data = TokenDataset.load(args.dataset, WaveletCodec(**CODECS[args.dataset]), "train")
    rows = [{"buckets": k, "real_fraction": real_fraction(data.lengths, args.batch, k,
                                                          args.pad_to, args.draws)}
            for k in (1, 2, 4, 8, 16)]
    rows += [{"pack_len": n, "real_fraction": packed_fraction(data.lengths, args.batch, n,
                                                              args.draws)}
             for n in (4096, 8192, 16384)]
    for r in rows:
        what = (f"buckets {r['buckets']:2d}" if "buckets" in r else f"pack_len {r['pack_len']}")
        print(f"{what}: {100 * r['real_fraction']:.1f}% real tokens")
    TRAIN.mkdir(parents=True, exist_ok=True)
    out = TRAIN / f"batch_padding_{args.dataset}.json"
    out.write_text(json.dumps({"dataset": args.dataset, "batch": args.batch,
                               "pad_to": args.pad_to, "draws": args.draws,
                               "mean_length": float(data.lengths.mean()), "rows": rows},
                              indent=1) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
