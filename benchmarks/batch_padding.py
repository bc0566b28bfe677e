"""How much of a training batch is real tokens: plain, length-bucketed, packed (issue 18).

Draws batches of the training set's token lengths as the training loop does
(``wavar.data.shards.bucketed_indices``), pads each to its longest sequence rounded up to
``pad_to`` (as ``batch_to_device`` on CUDA) and reports the mean fraction of real tokens; and
for packing (``pack_len``), the plain draw placed into rows of ``pack_len`` positions as
``wavar.train.packing`` places it, rows rounded up to an even number as on CUDA (a class prefix
per sequence counts as padding).

    WAVAR_CACHE=... PYTHONPATH=. python benchmarks/batch_padding.py --dataset fashion-mnist
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from benchmarks._common import TRAIN
from wavar.codec import WaveletCodec
from wavar.data.shards import TokenDataset, bucketed_indices
from wavar.train.packing import place

CODECS = {"fashion-mnist": dict(wavelet="bior4.4", final_threshold=2**-4),
          "mnist": dict(wavelet="haar", final_threshold=2**-3)}


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist", choices=sorted(CODECS))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--pad-to", type=int, default=512)
    p.add_argument("--draws", type=int, default=500)
    args = p.parse_args()
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
