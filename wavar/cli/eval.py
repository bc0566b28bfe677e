"""``wavar eval``: FID, KID, CAS and likelihood of a model, or of samples made elsewhere.

Examples
--------
::

    wavar eval --model fashion-mnist --dataset fashion-mnist --fid --cas --nll -o fm.json
    wavar eval --model mnist --dataset mnist --cas --n 1000 --cfg 2
    wavar eval --samples theirs.npz --dataset fashion-mnist --fid --cas -o theirs.json

Both modes go through the same code: a model's samples (``--n`` of them, an equal share per
class, labels tiled over the classes) are first decoded to uint8 images, exactly what a
``--samples`` file holds (``x`` uint8 ``(N, H, W)`` or ``(N, H, W, 3)``, ``y`` integer
labels). The protocol (DESIGN.md §4) is 10,000 samples against the 10,000 test images; FID at
fewer samples is biased upwards and is not comparable. ``--fid`` also reports the real-data
floor, FID of 10,000 training images against the test set. Reference statistics and the CAS
classifier are computed once and cached under ``$WAVAR_CACHE`` (default ``~/.cache/wavar``).

Besides the JSON report (``-o``), a grid of samples per class is written beside it
(``<report>_samples.png``), and with ``--model`` the samples themselves
(``<report>_samples.npz``, which ``--samples`` reads back).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from wavar.cli.common import Parser, UsageError, run
from wavar.errors import WavarError

#: Samples per class shown in the grid.
GRID_PER_CLASS = 10


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="wavar eval",
               description="FID, KID, CAS and likelihood of a model or of external samples.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="NAME_OR_PATH", help="zoo name or model folder")
    src.add_argument("--samples", metavar="NPZ",
                     help="evaluate these samples (uint8 x, integer y) instead of a model's")
    p.add_argument("--dataset", required=True, metavar="NAME",
                   help="the real data to compare with (mnist, fashion-mnist, cifar10, ...)")
    p.add_argument("--fid", action="store_true",
                   help="FID and KID against the test set, and the real-data floor")
    p.add_argument("--cas", action="store_true", help="classification accuracy score")
    p.add_argument("--nll", action="store_true",
                   help="test-set bits per token (and per dimension if lossless); --model only")
    p.add_argument("--n", type=int, default=None,
                   help="samples to generate (default 10000, an equal share per class); with "
                        "--samples, use the first N")
    p.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=100, help="samples generated per batch")
    p.add_argument("--nll-limit", type=int, default=None, metavar="N",
                   help="first N test sequences only for --nll (default all)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("-o", "--output", default="eval_report.json", metavar="JSON")
    p.set_defaults(func=_eval)
    return p


# --------------------------------------------------------------------------------------------
# the images to judge


def read_samples(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` of a samples file, checked; :class:`WavarError` names what is wrong."""
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("a .npy array, not an .npz archive")
        with z:
            missing = [k for k in ("x", "y") if k not in z.files]
            if missing:
                raise WavarError(f"{path} has no {' or '.join(map(repr, missing))} array: a "
                                 "samples file holds uint8 images x and integer labels y")
            x, y = z["x"], z["y"]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise WavarError(f"cannot read samples file {path} ({e})") from e
    if x.dtype != np.uint8 or not (x.ndim == 3 or (x.ndim == 4 and x.shape[3] == 3)):
        raise WavarError(f"{path}: x must be uint8 (N, H, W) or (N, H, W, 3) images, got "
                         f"{x.dtype} {x.shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.shape != (len(x),):
        raise WavarError(f"{path}: y must hold {len(x)} integer labels, got {y.dtype} {y.shape}")
    return x, y.astype(np.int64)


def generate_samples(model, n: int, cfg: float, seed: int, batch: int,
                     log=print) -> tuple[np.ndarray, np.ndarray]:
    """``n`` decoded samples of ``model``, labels tiled over its classes (equal shares)."""
    from wavar.sample.generate import decode, generate

    labels = np.arange(n) % model.config.num_classes
    seeds = np.random.default_rng(seed).integers(2**31, size=-(-n // batch))
    images: list[np.ndarray] = []
    t = time.perf_counter()
    for i, s in enumerate(range(0, n, batch)):
        seqs = generate(model, labels[s : s + batch], cfg=cfg, seed=int(seeds[i]))
        images += decode(model, seqs)
        if log is not None and (i + 1) % max(1, (n // batch) // 10) == 0:
            done = len(images)
            log(f"  {done}/{n} samples ({done / (time.perf_counter() - t):.1f} images/s)")
    return np.stack(images), labels


# --------------------------------------------------------------------------------------------
# metrics: the same code for a model's samples and for a file's


def fid_metrics(x: np.ndarray, dataset: str, device: str = "cpu") -> dict:
    """FID and KID of ``x`` against the test set, and the train-vs-test floor."""
    from wavar.eval import fid

    t = time.perf_counter()
    feats = fid.inception_features(x, device=device)
    ref = fid.reference_statistics(dataset, "test", device=device)
    floor = fid.reference_statistics(dataset, "train", device=device)
    kid_size = min(1000, len(feats), len(ref.features))
    kid_mean, kid_std = fid.kid(feats, ref.features, subset_size=kid_size)
    floor_kid, _ = fid.kid(floor.features, ref.features, subset_size=kid_size)
    return {
        "fid": fid.frechet_distance(*fid.statistics(feats), ref.mu, ref.sigma),
        "kid": kid_mean, "kid_std": kid_std, "kid_subset_size": kid_size,
        "samples": len(x), "reference": ref.source,
        "floor_fid": floor.fid(ref), "floor_kid": floor_kid,
        "floor": f"{floor.source} vs {ref.source}",
        "network": f"{fid.NETWORK_WHEEL}:{fid.NETWORK_MEMBER}",
        "protocol": len(x) == fid.FID_IMAGES,
        "seconds": time.perf_counter() - t,
    }


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN (a class without samples has no accuracy)
    return v


def class_grid(x: np.ndarray, y: np.ndarray, num_classes: int, per_class: int) -> np.ndarray:
    """One row per class of its first ``per_class`` samples (blank cells where it has fewer)."""
    from wavar.viz import grid

    blank = np.full(x.shape[1:], 255, np.uint8)
    cells = []
    for c in range(num_classes):
        mine = x[y == c][:per_class]
        cells += list(mine) + [blank] * (per_class - len(mine))
    return grid(cells, ncols=per_class, scale=max(1, 56 // x.shape[1]))


def _print_table(report: dict) -> None:
    rows: list[tuple[str, str]] = []
    if "fid" in report:
        f = report["fid"]
        rows += [(f"FID ({f['samples']} samples vs {f['reference']})", f"{f['fid']:.3f}"),
                 ("KID x 1000", f"{1000 * f['kid']:.3f} +- {1000 * f['kid_std']:.3f}"),
                 (f"FID floor ({f['floor']})", f"{f['floor_fid']:.3f}"),
                 ("KID floor x 1000", f"{1000 * f['floor_kid']:.3f}")]
    if "cas" in report:
        c = report["cas"]
        rows += [(f"CAS ({c['samples']} samples)", f"{c['accuracy']:.4f}"),
                 ("classifier accuracy on real test images", f"{c['real_test_accuracy']:.4f}")]
    if "nll" in report:
        r = report["nll"]
        rows += [(f"bits per token ({r['images']} test images)", f"{r['bits_per_token']:.4f}"),
                 ("bits per image", f"{r['bits_per_image']:.1f}")]
        if "bits_per_dim" in r:
            rows.append(("bits per dimension", f"{r['bits_per_dim']:.4f}"))
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k.ljust(w)}  {v}")
    if "cas" in report:
        print(f"\n{'class'.ljust(14)} {'samples':>7} {'CAS':>7} {'real':>7}")
        for e in report["cas"]["per_class"]:
            acc = "-" if math.isnan(e["accuracy"]) else f"{e['accuracy']:.3f}"
            print(f"{e['name'][:14].ljust(14)} {e['samples']:>7} {acc:>7} "
                  f"{e['real_test_accuracy']:>7.3f}")


def _eval(args: argparse.Namespace) -> int:
    from wavar.data.datasets import load

    if not (args.fid or args.cas or args.nll):
        raise UsageError("choose at least one metric: --fid, --cas, --nll")
    if args.nll and args.samples:
        raise UsageError("--nll needs --model (a samples file has no likelihood)")
    if args.n is not None and args.n < (2 if args.fid else 1):
        raise UsageError(f"--n must be >= {2 if args.fid else 1}, got {args.n}")
    if args.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {args.batch}")
    out = Path(args.output)
    stem = out.with_suffix("")
    classes = load(args.dataset, "test").classes
    report: dict = {"dataset": args.dataset, "seconds": {}}
    model = None
    if args.model:
        import torch

        from wavar.model.transformer import WaveletGPT

        if args.threads:
            torch.set_num_threads(args.threads)
        model = WaveletGPT.from_pretrained(args.model, device=args.device)
        if model.config.num_classes != len(classes):
            raise WavarError(f"model {args.model} has {model.config.num_classes} classes, "
                             f"dataset {args.dataset} {len(classes)}")
        report.update(model=args.model, cfg=args.cfg, seed=args.seed)
    if args.samples:
        x, y = read_samples(args.samples)
        if args.n is not None:
            x, y = x[: args.n], y[: args.n]
        report["samples_file"] = str(args.samples)
    elif args.fid or args.cas:
        n = 10_000 if args.n is None else args.n
        print(f"generating {n} samples of {args.model} (cfg {args.cfg}, seed {args.seed}, "
              f"{args.device})", flush=True)
        t = time.perf_counter()
        x, y = generate_samples(model, n, args.cfg, args.seed, args.batch)
        report["seconds"]["generate"] = time.perf_counter() - t
        np.savez_compressed(f"{stem}_samples.npz", x=x, y=y)
        report["samples_npz"] = f"{stem}_samples.npz"
    if args.fid or args.cas:
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise WavarError(f"labels outside 0..{len(classes) - 1} (the classes of "
                             f"{args.dataset})")
        report["samples"] = len(x)
        from wavar.viz import save_png

        save_png(f"{stem}_samples.png", class_grid(x, y, len(classes), GRID_PER_CLASS))
        report["grid"] = f"{stem}_samples.png"
    if args.fid:
        print("FID: Inception features of the samples (and of the real images, once)", flush=True)
        report["fid"] = fid_metrics(x, args.dataset, args.device)
        report["seconds"]["fid"] = report["fid"]["seconds"]
    if args.cas:
        from wavar.eval.cas import cas

        t = time.perf_counter()
        report["cas"] = cas(x, y, args.dataset, device=args.device)
        report["seconds"]["cas"] = time.perf_counter() - t
    if args.nll:
        from wavar.data.shards import TokenDataset
        from wavar.eval.likelihood import nll
        from wavar.sample.generate import codec_of

        t = time.perf_counter()
        data = TokenDataset.load(args.dataset, codec_of(model), "test")
        report["nll"] = nll(model, data, limit=args.nll_limit)
        report["seconds"]["nll"] = time.perf_counter() - t
    print()
    _print_table(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_jsonable(report), indent=1) + "\n")
    print(f"\nreport -> {out}" + (f", samples grid -> {report['grid']}" if "grid" in report
                                   else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
