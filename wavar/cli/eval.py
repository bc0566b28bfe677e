"""``wavar eval``: FID, KID, CAS and likelihood of a model, or of samples made elsewhere.

Examples
--------
::

    wavar eval --model fashion-mnist --dataset fashion-mnist --fid --cas --nll -o fm.json
    wavar eval --model mnist --dataset mnist --cas --n 1000 --cfg 2
    wavar eval --samples theirs.npz --dataset fashion-mnist --fid --cas -o theirs.json
    wavar eval --samples s0.npz s1.npz --dataset cifar10 --fid --cas   # several runs' samples
    wavar eval --model fashion-mnist --dataset fashion-mnist --rd --rd-images 200 -o rd.json
    wavar eval --dataset fashion-mnist --floor -o floor.json
    wavar eval --model fashion-mnist --dataset fashion-mnist --fid --cas --nll --rd \
        --device cuda --bf16 -o fm_full.json          # the full protocol on a GPU

Both modes go through the same code: a model's samples (``--n`` of them, an equal share per
class, labels tiled over the classes) are first decoded to uint8 images, exactly what a
``--samples`` file holds (``x`` uint8 ``(N, H, W)`` or ``(N, H, W, 3)``, ``y`` integer
labels). The protocol (docs/design.md §4) is 10,000 samples against the 10,000 test images; FID at
fewer samples is biased upwards and is not comparable. ``--fid`` also reports the real-data
floor, FID of 10,000 training images against the test set (``--floor`` computes it alone).
Reference statistics and the CAS classifier are computed once and cached under
``$WAVAR_CACHE`` (default ``~/.cache/wavar``). With ``--device cuda`` sampling (1,000 per
batch), the Inception features (500 per batch) and the CAS classifier run on the GPU.
``--fid-network`` (or ``$WAVAR_FID_NETWORK``) names the Inception file; one assembled from
fp16 parts (:mod:`wavar.eval.fid_parts`) is marked ``"fid_network": "fp16-stored
(development)"`` in the report, the standard one ``"standard fp32"``.

``--rd`` (:mod:`wavar.eval.rd`) codes the first ``--rd-images`` test images and reports PSNR
against tokens and against model bits (-log2 p of each prefix), beside JPEG 2000 at matched
payloads, with a plot ``<report>_rd.png``.

Besides the JSON report (``-o``), a grid of samples per class is written beside it
(``<report>_samples.png``), and with ``--model`` the samples themselves
(``<report>_samples.npz``, which ``--samples`` reads back).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from wavar.cli.common import Parser, UsageError, per_plane, run
from wavar.data.datasets import load
from wavar.data.shards import TokenDataset
from wavar.errors import WavarError
from wavar.eval import fid
from wavar.eval.cas import cas
from wavar.eval.likelihood import nll, packed_row_len
from wavar.eval.rd import model_rd, plot_rd
from wavar.model.transformer import WaveletGPT
from wavar.sample import SamplingOptions
from wavar.sample import generate as gen  # gen.generate, not bound here: tests patch it
from wavar.sample.planning import images_per_call
from wavar.viz import grid, save_png

#: Samples per class shown in the grid.
GRID_PER_CLASS = 10


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="wavar eval",
               description="FID, KID, CAS and likelihood of a model or of external samples.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", metavar="NAME_OR_PATH", help="zoo name or model folder")
    src.add_argument("--samples", metavar="NPZ", nargs="+",
                     help="evaluate these samples (uint8 x, integer y) instead of a model's; "
                          "several files are joined in order (samples made in several runs, "
                          "e.g. `wavar sample --npz` with other seeds)")
    p.add_argument("--dataset", required=True, metavar="NAME",
                   help="the real data to compare with (mnist, fashion-mnist, cifar10, ...)")
    p.add_argument("--fid", action="store_true",
                   help="FID and KID against the test set, and the real-data floor")
    p.add_argument("--no-floor", action="store_true",
                   help="--fid without the real-data floor (it needs the training split; the "
                        "floor does not depend on the model)")
    p.add_argument("--floor", action="store_true",
                   help="the real-data floor alone: FID and KID of 10,000 training images "
                        "against the test set (needs no --model or --samples)")
    p.add_argument("--cas", action="store_true", help="classification accuracy score")
    p.add_argument("--nll", action="store_true",
                   help="test-set bits per token (and per dimension if lossless); --model only")
    p.add_argument("--n", type=int, default=None,
                   help="samples to generate (default 10000, an equal share per class); with "
                        "--samples, use the first N")
    p.add_argument("--rd", action="store_true",
                   help="rate-distortion: PSNR against tokens and model bits, beside JPEG 2000, "
                        "on the first --rd-images test images; --model only")
    p.add_argument("--rd-images", type=int, default=200, metavar="N",
                   help="test images for --rd (default 200)")
    p.add_argument("--no-jpeg2000", action="store_true", help="--rd without the JPEG 2000 side")
    p.add_argument("--cfg", type=per_plane, default=1.0,
                   help="classifier-free guidance scale; comma-separated: one per bit-plane, "
                        "the last for the rest")
    p.add_argument("--temperature", type=per_plane, default=1.0,
                   help="sampling temperature (the protocol's is 1); comma-separated: one per "
                        "bit-plane")
    p.add_argument("--top-p", type=per_plane, default=None, metavar="P",
                   help="nucleus filter after guidance and temperature: never draw the tokens "
                        "beyond the most likely ones that reach P of the mass; comma-separated: "
                        "one per bit-plane, 1 = none (default: none)")
    p.add_argument("--ll-init", action="store_true",
                   help="start each sample from the LL band and m~ of a training image of its "
                        "class (wavar sample --ll-init; the grammar then steps on the CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=None,
                   help="samples generated per batch (default 100 on the CPU, 1000 on a GPU)")
    p.add_argument("--fid-batch", type=int, default=None,
                   help="images per Inception forward pass (default 50 on the CPU, 500 on a GPU)")
    p.add_argument("--fid-network", default=None, metavar="PT",
                   help="Inception network file to use (default $WAVAR_FID_NETWORK, else the "
                        "cached standard one); a network assembled from fp16 parts is "
                        "reported as such")
    p.add_argument("--bf16", action="store_true",
                   help="sample with bf16 weights (GPU speed; NLL and --rd stay fp32)")
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


def generate_samples(model, n: int, options: SamplingOptions, seed: int, batch: int,
                     log=print) -> tuple[np.ndarray, np.ndarray]:
    """``n`` decoded samples of ``model`` under ``options`` (its own seed is ignored: batch i
    draws seed i of ``seed``'s stream), labels tiled over its classes (equal shares)."""
    labels = np.arange(n) % model.config.num_classes
    seeds = np.random.default_rng(seed).integers(2**31, size=-(-n // batch))
    images: list[np.ndarray] = []
    t = time.perf_counter()
    for i, s in enumerate(range(0, n, batch)):
        seqs = gen.generate(model, labels[s : s + batch],
                            dataclasses.replace(options, seed=int(seeds[i])))
        images += gen.decode(model, seqs)
        if log is not None and (i + 1) % max(1, (n // batch) // 10) == 0:
            done = len(images)
            log(f"  {done}/{n} samples ({done / (time.perf_counter() - t):.1f} images/s)")
    return np.stack(images), labels


# --------------------------------------------------------------------------------------------
# metrics: the same code for a model's samples and for a file's


def floor_metrics(dataset: str, device: str = "cpu", network=None,
                  batch_size: int = 50) -> dict:
    """The real-data floor: FID and KID of 10,000 training images against the test set."""
    t = time.perf_counter()
    ref = fid.reference_statistics(dataset, "test", batch_size=batch_size, device=device,
                                   network=network)
    train = fid.reference_statistics(dataset, "train", batch_size=batch_size, device=device,
                                     network=network)
    kid_size = min(1000, len(train.features), len(ref.features))
    kid_mean, kid_std = fid.kid(train.features, ref.features, subset_size=kid_size)
    return {"fid": train.fid(ref), "kid": kid_mean, "kid_std": kid_std,
            "kid_subset_size": kid_size, "images": len(train.features),
            "floor": f"{train.source} vs {ref.source}",
            "protocol": len(train.features) == fid.FID_IMAGES == len(ref.features),
            "seconds": time.perf_counter() - t}


def fid_metrics(x: np.ndarray, dataset: str, device: str = "cpu", network_file=None,
                batch_size: int = 50, floor: bool = True) -> dict:
    """FID and KID of ``x`` against the test set, and (``floor``) the train-vs-test floor.

    ``network_file`` names the Inception network (:func:`wavar.eval.fid.network_file`);
    the result says which kind was used (``fid_network``).
    """
    t = time.perf_counter()
    net = fid.load_network(device, network_file)
    feats = fid.inception_features(x, batch_size=batch_size, device=device, network=net)
    ref = fid.reference_statistics(dataset, "test", batch_size=batch_size, device=device,
                                   network=net)
    kid_size = min(1000, len(feats), len(ref.features))
    kid_mean, kid_std = fid.kid(feats, ref.features, subset_size=kid_size)
    out = {
        "fid": fid.frechet_distance(*fid.statistics(feats), ref.mu, ref.sigma),
        "kid": kid_mean, "kid_std": kid_std, "kid_subset_size": kid_size,
        "samples": len(x), "reference": ref.source,
        "network": f"{fid.NETWORK_WHEEL}:{fid.NETWORK_MEMBER}",
        "fid_network": fid.network_description(network_file),
        "protocol": len(x) == fid.FID_IMAGES == len(ref.features),
    }
    if floor:
        f = floor_metrics(dataset, device, net, batch_size)
        out.update(floor_fid=f["fid"], floor_kid=f["kid"], floor=f["floor"])
    out["seconds"] = time.perf_counter() - t
    return out


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
                 ("KID x 1000", f"{1000 * f['kid']:.3f} +- {1000 * f['kid_std']:.3f}")]
        if "floor" in f:
            rows += [(f"FID floor ({f['floor']})", f"{f['floor_fid']:.3f}"),
                     ("KID floor x 1000", f"{1000 * f['floor_kid']:.3f}")]
    if "floor" in report and "fid" not in report:
        f = report["floor"]
        rows += [(f"FID floor ({f['floor']})", f"{f['fid']:.3f}"),
                 ("KID floor x 1000", f"{1000 * f['kid']:.3f} +- {1000 * f['kid_std']:.3f}")]
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
    if "rd" in report:
        r = report["rd"]
        rows.append((f"rate-distortion ({r['images']} test images)", f"-> {report['rd_plot']}"
                     if report.get("rd_plot") else "(no plot)"))
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k.ljust(w)}  {v}")
    if "cas" in report:
        print(f"\n{'class'.ljust(14)} {'samples':>7} {'CAS':>7} {'real':>7}")
        for e in report["cas"]["per_class"]:
            acc = "-" if math.isnan(e["accuracy"]) else f"{e['accuracy']:.3f}"
            print(f"{e['name'][:14].ljust(14)} {e['samples']:>7} {acc:>7} "
                  f"{e['real_test_accuracy']:>7.3f}")
    if "rd" in report:
        pts = report["rd"]["points"]
        j2k = bool(pts) and "j2k_psnr" in pts[0]
        print(f"\n{'tokens':>8} {'model bits':>10} {'PSNR':>7}"
              + (f" {'J2K bits':>9} {'J2K PSNR':>8}" if j2k else ""))
        for p in pts:
            print(f"{p['tokens']:>8.0f} {p['model_bits']:>10.0f} {p['psnr']:>7.2f}"
                  + (f" {p['j2k_payload_bits']:>9.0f} {p['j2k_psnr']:>8.2f}" if j2k else ""))


def command_line(args: argparse.Namespace) -> str:
    """The ``wavar eval`` command that reproduces a run (its options that are not defaults)."""
    defaults = vars(build_parser().parse_args(["--dataset", "x"]))
    parts = ["wavar eval"]
    for key, value in vars(args).items():
        if key == "func" or (key not in ("dataset", "output") and value == defaults.get(key)):
            continue
        flag = "-o" if key == "output" else "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif isinstance(value, list):  # --samples A.npz B.npz
            parts.append(" ".join([flag, *map(str, value)]))
        elif value not in (False, None):
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def _eval(args: argparse.Namespace) -> int:
    if not (args.fid or args.cas or args.nll or args.rd or args.floor):
        raise UsageError("choose at least one metric: --fid, --floor, --cas, --nll, --rd")
    if not (args.model or args.samples) and (args.fid or args.cas or args.nll or args.rd):
        raise UsageError("one of the arguments --model --samples is required (only --floor "
                         "runs without)")
    for flag, on in (("--nll", args.nll), ("--rd", args.rd)):
        if on and args.samples:
            raise UsageError(f"{flag} needs --model (a samples file has no likelihood)")
    if args.n is not None and args.n < (2 if args.fid else 1):
        raise UsageError(f"--n must be >= {2 if args.fid else 1}, got {args.n}")
    gpu = not str(args.device).startswith("cpu")
    batch = args.batch if args.batch is not None else (1000 if gpu else 100)
    fid_batch = args.fid_batch if args.fid_batch is not None else (500 if gpu else 50)
    for flag, v in (("--batch", batch), ("--fid-batch", fid_batch), ("--rd-images",
                                                                      args.rd_images)):
        if v < 1:
            raise UsageError(f"{flag} must be >= 1, got {v}")
    out = Path(args.output)
    stem = out.with_suffix("")
    classes = load(args.dataset, "test").classes
    report: dict = {"dataset": args.dataset, "device": str(args.device),
                    "command": command_line(args), "seconds": {}}
    model = None
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        model = WaveletGPT.from_pretrained(args.model, device=args.device)
        if model.config.num_classes != len(classes):
            raise WavarError(f"model {args.model} has {model.config.num_classes} classes, "
                             f"dataset {args.dataset} {len(classes)}")
        settings = dict(cfg=args.cfg, temperature=args.temperature, ll_init=args.ll_init,
                        top_p=args.top_p)
        options = SamplingOptions(**settings)  # bad settings fail now, before any sampling
        report.update(model=args.model, seed=args.seed, parameters=model.num_params(),
                      **settings)
    x = y = None
    if args.samples:
        parts = [read_samples(path) for path in args.samples]
        shapes = sorted({p[0].shape[1:] for p in parts})
        if len(shapes) > 1:
            raise WavarError(f"the samples files hold images of different shapes {shapes}: "
                             "join files of one dataset only")
        x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        if args.n is not None:
            x, y = x[: args.n], y[: args.n]
        report["samples_file"] = ", ".join(map(str, args.samples))
    elif model is not None and (args.fid or args.cas):
        n = 10_000 if args.n is None else args.n
        sampler = copy.deepcopy(model).to(torch.bfloat16) if args.bf16 else model
        fit, why = images_per_call(sampler, options)  # the caches' memory, before any sampling
        if fit is not None and min(batch, n) > fit:
            if args.batch is not None or fit < 1:
                raise UsageError(f"--batch {batch} does not fit: {why}")
            print(f"--batch {fit} (not {batch}): {why}")
            batch = fit
        # the settings as the report records them (a switch by its name, unset ones left out)
        spelled = [k.replace("_", "-") if v is True else f"{k.replace('_', '-')} {v}"
                   for k, v in settings.items() if v is not None and v is not False]
        print(f"generating {n} samples of {args.model} ({', '.join(spelled)}, seed {args.seed}, "
              f"{args.device}{', bf16' if args.bf16 else ''}, batch {batch})", flush=True)
        t = time.perf_counter()
        x, y = generate_samples(sampler, n, options, args.seed, batch)
        del sampler
        report["seconds"]["generate"] = time.perf_counter() - t
        report.update(sample_batch=batch, bf16=args.bf16,
                      samples_per_class=np.bincount(y, minlength=len(classes)).tolist())
        np.savez_compressed(f"{stem}_samples.npz", x=x, y=y)
        report["samples_npz"] = f"{stem}_samples.npz"
    if x is not None:
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise WavarError(f"labels outside 0..{len(classes) - 1} (the classes of "
                             f"{args.dataset})")
        report["samples"] = len(x)
        save_png(f"{stem}_samples.png", class_grid(x, y, len(classes), GRID_PER_CLASS))
        report["grid"] = f"{stem}_samples.png"
    if args.fid or args.floor:
        report["fid_network"] = fid.network_description(args.fid_network)
    if args.fid:
        print("FID: Inception features of the samples (and of the real images, once)", flush=True)
        report["fid"] = fid_metrics(x, args.dataset, args.device, args.fid_network, fid_batch,
                                    floor=not args.no_floor)
        report["seconds"]["fid"] = report["fid"]["seconds"]
    if args.floor:
        print("floor: Inception features of 10,000 train and the test images (once)", flush=True)
        net = fid.load_network(args.device, args.fid_network)
        report["floor"] = floor_metrics(args.dataset, args.device, net, fid_batch)
        report["seconds"]["floor"] = report["floor"]["seconds"]
    if args.cas:
        t = time.perf_counter()
        report["cas"] = cas(x, y, args.dataset, device=args.device)
        report["seconds"]["cas"] = time.perf_counter() - t
    if args.nll:
        t = time.perf_counter()
        data = TokenDataset.load(args.dataset, gen.codec_of(model), "test",
                                 context=bool(model.config.decoder_state))
        # CUDA: packed rows (FlexAttention, compiled); the CPU: a sequence a row (dense masks
        # of packed rows would be rows x rows of positions)
        pack_len = packed_row_len(model) if gpu else 0
        print(f"nll: {f'packed rows of {pack_len} positions' if pack_len else 'a sequence a row'}"
              f" on {args.device}", flush=True)
        report["nll"] = nll(model, data, limit=args.nll_limit, pack_len=pack_len)
        report["nll"]["pack_len"] = pack_len
        report["seconds"]["nll"] = time.perf_counter() - t
    if args.rd:
        test = load(args.dataset, "test")
        k = min(args.rd_images, len(test))
        print(f"rate-distortion on the first {k} test images", flush=True)
        report["rd"] = model_rd(model, test.x[:k], test.y[:k],
                                jpeg2000=not args.no_jpeg2000, log=print)
        report["seconds"]["rd"] = report["rd"]["seconds"]
        try:
            plot_rd(report["rd"], f"{stem}_rd.png",
                    f"{args.model} on {args.dataset}: first {k} test images")
            report["rd_plot"] = f"{stem}_rd.png"
        except ImportError as e:  # matplotlib is an optional extra (bench)
            print(f"no RD plot ({e}); the points are in the report", flush=True)
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
