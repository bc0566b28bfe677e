"""The codec floor: FID and KID of real images after a model's codec (encode -> full decode).

A lossy wavelet model's sequences stop at a final threshold, so even a perfect model can only
produce images as good as encode -> decode of real ones. This script takes the first ``N``
training images of a dataset (all classes), codes and fully decodes them with the codec of a
zoo model (``wavar.sample.generate.codec_of``), saves them as a samples file that
``wavar eval --samples FILE.npz`` reads (``x`` uint8 images, ``y`` labels), and judges them
with the function ``wavar eval --samples ... --fid`` uses (:func:`wavar.cli.eval.fid_metrics`:
the standard fp32 Inception network, features of the images against the cached statistics of
the 10,000 test images, KID on subsets of 1,000). The untouched ``N`` training images go
through the same function, so the real-data floor at the same ``N`` stands beside the codec
floor: FID from fewer than 10,000 images is biased upward (KID much less), so compare only
numbers of the same ``N``. It also gives the PSNR of the reconstructions.

Inception on this machine's 2 CPU cores took 0.11-0.18 s per image in the recorded runs
(more when other jobs load the cores); a run costs ``2 N`` images (N = 3000: 11-15 min), plus
the 10,000 test images once per dataset while their statistics are not yet cached
(``~/.cache/wavar/fid/<dataset>-test.npz``, shared with ``wavar eval``; 17-20 min).

    PYTHONPATH=. .venv/bin/python benchmarks/codec_floor.py --dataset fashion-mnist --n 3000
    PYTHONPATH=. .venv/bin/python benchmarks/codec_floor.py --dataset mnist --n 3000
    PYTHONPATH=. .venv/bin/python benchmarks/codec_floor.py --dataset cifar10 --n 3000

(CIFAR-10 comes through ``wavar.data.datasets.load``; the recorded run had
``WAVAR_CIFAR10=/work/shared/datasets/cifar10``.) The model defaults to the zoo model named
like the dataset (``--model`` picks another). Results:
``benchmarks/results/codec/codec_floor_<dataset>.json`` and the reconstructions
``benchmarks/results/codec/codec_floor_<dataset>_samples.npz`` (``--quick``: 100 images, files with
a ``_quick`` suffix).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks._common import CODEC, jsonable

REPO = Path(__file__).resolve().parent.parent


def reconstruct(codec, x: np.ndarray, batch: int = 500) -> np.ndarray:
    """``x`` (uint8 ``(N, H, W[, 3])``) encoded and fully decoded by ``codec``, batch by batch."""
    out = []
    for s in range(0, len(x), batch):
        seqs = codec.encode_batch(x[s : s + batch])
        out.append(np.stack(codec.decode_batch(seqs)))
    return np.concatenate(out).astype(np.uint8)


def psnr_summary(x: np.ndarray, r: np.ndarray) -> dict:
    """Per-image PSNR of reconstructions ``r`` of ``x``: mean (capped as ``wavar.eval.rd``
    caps it), min, median, the count of exact images, and the PSNR of the pooled MSE."""
    from wavar.eval.metrics import psnr
    from wavar.eval.rd import PSNR_CAP

    ps = np.array([psnr(a, b) for a, b in zip(x, r, strict=True)])
    mse = float(np.mean((x.astype(np.float64) - r.astype(np.float64)) ** 2))
    return {"psnr_mean": float(np.minimum(ps, PSNR_CAP).mean()), "psnr_cap": PSNR_CAP,
            "psnr_min": float(ps.min()), "psnr_median": float(np.median(ps)),
            "n_exact": int(np.isinf(ps).sum()),
            "psnr_of_mean_mse": 10 * math.log10(255.0**2 / mse) if mse > 0 else math.inf}


def save_samples(path: Path, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Write a samples file as ``wavar eval --samples`` reads it, and read it back with that
    reader (so the file is known to be accepted)."""
    from wavar.cli.eval import read_samples

    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x=np.asarray(x, np.uint8), y=np.asarray(y, np.int64))
    return read_samples(path)



def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, help="mnist, fashion-mnist or cifar10")
    ap.add_argument("--model", default=None,
                    help="zoo model (or checkpoint) whose codec to use; default the dataset name")
    ap.add_argument("--n", type=int, default=10_000, help="first N training images")
    ap.add_argument("--final-threshold", type=float, default=None, metavar="T",
                    help="the model's codec with this final threshold instead (a power of "
                         "two; files get a _t<T> suffix): the floor of a finer language")
    ap.add_argument("--quick", action="store_true", help="smoke run: 100 images")
    ap.add_argument("--fid-batch", type=int, default=50, help="images per Inception pass")
    ap.add_argument("--codec-batch", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--no-fid", action="store_true",
                    help="only reconstruct, save and measure PSNR (no Inception)")
    args = ap.parse_args(argv)

    import torch

    from wavar.cli.eval import fid_metrics
    from wavar.data.datasets import load
    from wavar.eval import fid
    from wavar.model.transformer import WaveletGPT
    from wavar.sample.generate import codec_of

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    name = (f"codec_floor_{args.dataset}"
            + (f"_t{args.final_threshold:g}" if args.final_threshold is not None else "")
            + ("_quick" if args.quick else ""))
    n = 100 if args.quick else args.n
    model_name = args.model or args.dataset
    model = WaveletGPT.from_pretrained(model_name)
    codec = codec_of(model)
    if args.final_threshold is not None:
        codec = type(codec).from_params({**codec.params(),
                                         "final_threshold": args.final_threshold})
    train = load(args.dataset, "train")
    if model.config.num_classes != len(train.classes):
        raise SystemExit(f"model {model_name} has {model.config.num_classes} classes, dataset "
                         f"{args.dataset} {len(train.classes)}")
    n = min(n, len(train))
    x, y = train.x[:n], train.y[:n].astype(np.int64)
    del model
    print(f"{args.dataset}: first {n} training images through {codec!r} (model {model_name})",
          flush=True)
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    r = reconstruct(codec, x, args.codec_batch)
    seconds["codec"] = time.perf_counter() - t
    quality = psnr_summary(x, r)
    CODEC.mkdir(parents=True, exist_ok=True)
    samples = CODEC / f"{name}_samples.npz"
    r, _ = save_samples(samples, r, y)
    print(f"  encode+decode {seconds['codec']:.1f} s; mean PSNR {quality['psnr_mean']:.2f} dB "
          f"({quality['n_exact']} exact); samples -> {samples}", flush=True)

    report = {"benchmark": name, "command": " ".join(["python", *sys.argv]),
              "dataset": args.dataset, "model": model_name, "codec": codec.params(),
              "lossless": bool(getattr(codec, "lossless", False)), "n": n,
              "images": f"{args.dataset} train[:{n}]",
              "class_counts": np.bincount(y, minlength=len(train.classes)).tolist(),
              "reconstruction": quality,
              "samples_npz": str(samples.relative_to(REPO)),
              "threads": args.threads}
    if not args.no_fid:
        # the standard network, named explicitly: $WAVAR_FID_NETWORK (fp16 parts) is not used
        net_file = fid.fetch_network()
        assert fid.network_description(net_file) == fid.NETWORK_STANDARD
        net = fid.load_network("cpu", net_file)
        t = time.perf_counter()
        ref = fid.reference_statistics(args.dataset, "test", batch_size=args.fid_batch,
                                       network=net)  # cached after the first run
        seconds["reference"] = time.perf_counter() - t
        print(f"  reference {ref.source}: {seconds['reference']:.0f} s", flush=True)
        for key, images in (("codec_floor", r), ("real_floor", x)):
            what = "reconstructions" if key == "codec_floor" else "untouched train images"
            print(f"  Inception features of {n} {what} ...", flush=True)
            m = fid_metrics(images, args.dataset, "cpu", net_file, args.fid_batch, floor=False)
            seconds[key] = m["seconds"]
            report[key] = m
            print(f"  {what}: FID {m['fid']:.3f}, KID x1000 {1000 * m['kid']:.3f} "
                  f"+- {1000 * m['kid_std']:.3f} ({m['seconds']:.0f} s)", flush=True)
    seconds["total"] = time.perf_counter() - started
    report["seconds"] = seconds

    print()
    head = ["dataset", "model", "N", "PSNR dB", "FID codec", "KIDx1e3 codec", "FID real",
            "KIDx1e3 real"]
    row = [args.dataset, model_name, str(n), f"{quality['psnr_mean']:.2f}"]
    for key in ("codec_floor", "real_floor"):
        m = report.get(key)
        row += ([f"{m['fid']:.2f}", f"{1000 * m['kid']:.2f}"] if m else ["-", "-"])
    widths = [max(len(h), len(c)) for h, c in zip(head, row, strict=True)]
    print("  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
    print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    if "codec_floor" in report:
        print(f"(FID/KID against {report['codec_floor']['reference']}, "
              f"{report['codec_floor']['fid_network']} Inception; N < 10,000 biases FID up)")

    out = CODEC / f"{name}.json"
    out.write_text(json.dumps(jsonable(report), indent=1) + "\n")
    print(f"\nwrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
