"""How often a single token lowers PSNR, and by how much (midpoint reconstruction).

Decodes every prefix of the first N Fashion-MNIST test images and counts the tokens after which
PSNR falls, per wavelet; also at bit-plane boundaries.

    python benchmarks/codec_prefix_psnr.py [--n 20]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from wavar import WaveletCodec
from wavar.data.datasets import load
from wavar.eval.metrics import psnr

RESULTS = Path(__file__).parent / "results" / "codec"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=20)
    args = ap.parse_args()
    x = load("fashion-mnist", "test").x[: args.n]
    rows = []
    for wavelet, final in (("bior4.4", 2**-4), ("haar", 2**-3), ("cdf53", 1)):
        codec = WaveletCodec(wavelet, final_threshold=final)
        drops = total = plane_drops = planes = 0
        worst = 0.0
        for img in x:
            seq = codec.encode(img)
            frames = codec.decode_batch([seq[:k] for k in range(len(seq) + 1)])
            curve = np.array([min(psnr(img, f), 100.0) for f in frames])
            d = np.diff(curve)
            drops += int((d < 0).sum())
            total += len(d)
            worst = min(worst, float(d.min()))
            starts = np.flatnonzero(np.diff(codec.slots(seq).plane)) + 1
            pc = curve[starts]
            plane_drops += int((np.diff(pc) < 0).sum())
            planes += len(pc) - 1
        rows.append({"wavelet": wavelet, "final_threshold": final, "images": len(x),
                     "tokens": total, "tokens_lowering_psnr": drops,
                     "fraction": drops / total, "worst_db": worst,
                     "plane_boundaries": planes, "plane_boundaries_lowering_psnr": plane_drops})
        r = rows[-1]
        print(f"{wavelet:8} {drops:6}/{total} tokens lower PSNR ({r['fraction']:.1%}), worst "
              f"{worst:.2f} dB; plane boundaries: {plane_drops}/{planes}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "codec_prefix_psnr.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
