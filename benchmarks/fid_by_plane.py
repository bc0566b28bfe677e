"""FID by bit-plane: at which level of detail a model's samples part from the data.

Every sample and every real test image is coded in the model's language; for each bit-plane k
(0 the coarsest, the planes of the sampling schedules) both sets are decoded from their tokens up
to the end of plane k, and the script reports

* ``fid_samples``: FID between the samples and the real images, both cut after plane k (how far
  the model is from the data at that level of detail: a large figure at a coarse plane means
  wrong shapes, one that grows only on the fine planes means wrong texture);
* ``fid_real_to_full``: FID between the real images cut after plane k and the uncut ones (what
  the planes after k still add, for scale).

Samples are images (``wavar eval ... -o R.json`` writes ``R_samples.npz``), so they are coded
again here; re-coding a decoded image gives back its own tokens up to rounding on the last plane.

    PYTHONPATH=. python benchmarks/fid_by_plane.py --samples R_samples.npz --model NAME \\
        --dataset fashion-mnist --device cuda [--fid-network PT] -o fid_by_plane.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from wavar.cli.eval import read_samples
from wavar.data.datasets import load
from wavar.eval import fid
from wavar.model.transformer import WaveletGPT
from wavar.sample.generate import codec_of


def plane_prefixes(codec, images: np.ndarray) -> list[list[np.ndarray]]:
    """Per plane k, the images decoded from their tokens up to the end of plane k."""
    seqs = codec.encode_batch(images)
    planes = [codec.slots(s).plane[:-1] for s in seqs]  # plane of each token
    top = max(int(p.max(initial=0)) for p in planes) + 1
    out = []
    for k in range(top):
        ends = [int(np.searchsorted(p, k, side="right")) for p in planes]  # planes ascend
        out.append(codec.decode_batch([s[:e] for s, e in zip(seqs, ends, strict=True)]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", required=True, metavar="NPZ")
    ap.add_argument("--model", required=True, help="zoo name or folder (for its codec)")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--n", type=int, default=None, help="images of each set (default all)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fid-network", default=None, metavar="PT")
    ap.add_argument("-o", "--output", default="fid_by_plane.json")
    args = ap.parse_args()

    t0 = time.time()
    samples, _ = read_samples(args.samples)
    real = load(args.dataset, "test").x
    n = min(len(samples), len(real), args.n or len(samples))
    samples, real = samples[:n], real[:n]
    codec = codec_of(WaveletGPT.from_pretrained(args.model))
    net = fid.load_network(args.device, args.fid_network)

    def features(images):
        return fid.inception_features(np.asarray(images), batch_size=250, device=args.device,
                                      network=net)

    real_full = features(real)
    cut_samples, cut_real = plane_prefixes(codec, samples), plane_prefixes(codec, real)
    rows = []
    print(f"{n} samples of {args.samples} against {n} {args.dataset} test images, "
          f"both cut after plane k ({codec})")
    print(f"{'plane':>5} {'FID samples vs real':>20} {'FID real cut vs uncut':>22}")
    for k in range(min(len(cut_samples), len(cut_real))):
        f_real = features(cut_real[k])
        row = {"plane": k, "fid_samples": fid.fid_from_features(features(cut_samples[k]), f_real),
               "fid_real_to_full": fid.fid_from_features(f_real, real_full)}
        rows.append(row)
        print(f"{k:>5} {row['fid_samples']:>20.2f} {row['fid_real_to_full']:>22.2f}", flush=True)
    report = {"samples": args.samples, "model": args.model, "dataset": args.dataset, "n": n,
              "codec": codec.params(),
              "network": fid.network_description(args.fid_network), "planes": rows,
              "seconds": round(time.time() - t0, 1)}
    with open(args.output, "w") as f:
        json.dump(report, f, indent=1)
    print(f"-> {args.output} ({report['seconds']} s)")


if __name__ == "__main__":
    main()
