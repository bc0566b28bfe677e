"""``wavar sample``: images from a model, with control over the generation.

Examples
--------
::

    wavar sample --model fashion-mnist --class 7 --n 16 -o grid.png
    wavar sample --model mnist --classes all --n 4 --cfg 2 -o digits.png --gif digits.gif
    wavar sample --model fashion-mnist --class Sneaker --prefix-image shoe.png --prefix-planes 3
    wavar sample --model mnist --class 3 --image digit.png --mask left_half.png -o inpaint.png
    wavar sample --model mnist --device cuda -v     # prints the sampling plan (code paths)

``--n`` is the number of images per class. ``--mask`` is an image of the model's size whose
white pixels mark the region of ``--image`` to keep (region completion).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np
import torch

from wavar.cli.common import Parser, UsageError, per_plane, run
from wavar.codec import WaveletCodec
from wavar.imageio import read_image
from wavar.model.transformer import WaveletGPT
from wavar.sample import Region, SamplingOptions, plan
from wavar.sample.generate import (
    class_indices,
    class_names,
    codec_of,
    decode,
    decode_prefixes,
    generate,
    image_shape_of,
    prefix_tokens,
)
from wavar.sample.planning import SamplingPlan, images_per_call
from wavar.viz import grid, save_gif, save_png


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="wavar sample", description="Sample images from a wavar model.")
    p.add_argument("--model", default="fashion-mnist-fine",
                   help="zoo name or model folder (default: the best wavelet-language "
                        "Fashion-MNIST model)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--class", dest="classes", action="append", metavar="C",
                       help="class name or index (repeat for several)")
    which.add_argument("--classes", dest="classes_list", metavar="LIST",
                       help="'all', or a comma-separated list of names or indices")
    p.add_argument("--n", type=int, default=16, help="images per class (default 16)")
    p.add_argument("-o", "--output", default="samples.png", metavar="PNG")
    p.add_argument("--cfg", type=per_plane, default=None,
                   help="classifier-free guidance scale (1 = conditional, 0 = unconditional); "
                        "comma-separated: one per bit-plane, the last for the rest (default: "
                        "the model's recommended setting, else 1)")
    p.add_argument("--temperature", type=per_plane, default=None,
                   help="sampling temperature; comma-separated: one per bit-plane (default: "
                        "the model's recommended setting, else 1)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=per_plane, default=None,
                   help="nucleus filter: never draw beyond the most likely tokens that reach P "
                        "of the mass; comma-separated: one per bit-plane, 1 = none (default: "
                        "the model's recommended setting, else none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokens", type=int, default=None, metavar="N",
                   help="token budget: stop each sequence after N tokens (progressive)")
    p.add_argument("--planes", type=int, default=None, metavar="K",
                   help="stop before bit-plane K (the first K planes only)")
    p.add_argument("--prefix-image", "--image", dest="image", metavar="IMG",
                   help="a real image to condition on (with --prefix-planes/--prefix-tokens or "
                        "--mask)")
    keep = p.add_mutually_exclusive_group()
    keep.add_argument("--prefix-planes", type=int, default=None, metavar="K",
                      help="keep the image's first K bit-planes; the model invents the rest")
    keep.add_argument("--prefix-tokens", type=int, default=None, metavar="N",
                      help="keep the image's first N tokens")
    p.add_argument("--mask", metavar="PNG", help="keep the image where the mask is white")
    p.add_argument("--ll-init", action="store_true",
                   help="start from the LL band and m~ of a training image of the class "
                        "(robust initialisation)")
    p.add_argument("--gif", metavar="FILE", help="also write a coarse-to-fine animation")
    p.add_argument("--npz", metavar="FILE", help="also save the images (x) and labels (y)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--tf32", action="store_true",
                   help="GPU: fp32 matrix products and decode attention on TF32 tensor cores "
                        "(faster, about 3 significant digits)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print the sampling plan: the code paths the generation takes, and why")
    p.set_defaults(func=_sample)
    return p


def parse_classes(spec: list[str] | None, spec_list: str | None, names: list[str]) -> list[int]:
    """Class indices from names or indices ('all' = every class); one-line errors."""
    if spec_list is not None:
        spec = None if spec_list.strip().lower() == "all" else \
            [s for s in spec_list.split(",") if s.strip()]
    try:
        return class_indices(names, spec or None)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _condition_image(path: str, shape: tuple[int, int, int]) -> np.ndarray:
    h, w, c = shape
    img = read_image(path, "RGB" if c == 3 else "L")
    if img.shape[:2] != (h, w):
        raise UsageError(f"{path} is {img.shape[0]}x{img.shape[1]}; the model makes {h}x{w} "
                         "images")
    return img


def _sample(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise UsageError(f"--n must be >= 1, got {args.n}")
    for flag in ("tokens", "planes", "prefix_planes", "prefix_tokens"):
        v = getattr(args, flag)
        if v is not None and v < 0:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 0, got {v}")
    settings = dict(cfg=1.0 if args.cfg is None else args.cfg,
                    temperature=1.0 if args.temperature is None else args.temperature,
                    top_k=args.top_k, top_p=args.top_p, seed=args.seed, max_tokens=args.tokens,
                    max_plane=args.planes)

    def options(**conditions) -> SamplingOptions:  # the settings' checks, as usage errors
        try:
            return SamplingOptions(**settings, **conditions)
        except ValueError as e:
            raise UsageError(str(e)) from None

    options()  # before the model loads
    if (args.prefix_planes is not None or args.prefix_tokens is not None or args.mask) and \
            not args.image:
        raise UsageError("--prefix-planes, --prefix-tokens and --mask need --prefix-image IMG")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    model = WaveletGPT.from_pretrained(args.model, device=args.device)
    # what the command line leaves open, the model's recommended setting fills (said aloud)
    recommended = {k: tuple(v) if isinstance(v, list) else v
                   for k, v in model.config.sampling.items() if getattr(args, k) is None}
    if recommended:
        settings.update(recommended)
        print("sampling with the model's recommended " + ", ".join(
            f"--{k.replace('_', '-')} {','.join(map(str, v)) if isinstance(v, tuple) else v}"
            for k, v in recommended.items()) + " (config.json 'sampling'; name them to change)")
    names = class_names(model)
    classes = parse_classes(args.classes, args.classes_list, names)
    # one column per class (one row per draw); a single class fills rows of --n
    labels = np.tile(classes, args.n)
    ncols = min(16, len(classes) if len(classes) > 1 else args.n)
    shape = image_shape_of(model)
    codec = codec_of(model)
    kw: dict = {}
    if args.image:
        img = _condition_image(args.image, shape)
        if args.mask:
            mask = read_image(args.mask, "L")
            if mask.shape != shape[:2]:
                raise UsageError(f"mask {args.mask} is {mask.shape[0]}x{mask.shape[1]}; it must "
                                 f"be {shape[0]}x{shape[1]} like the model's images")
            kw["region"] = Region(img, mask >= 128)
        else:
            if args.prefix_planes is not None or args.prefix_tokens is not None:
                try:
                    pre = prefix_tokens(codec, img, args.prefix_planes, args.prefix_tokens)
                except ValueError as e:  # --prefix-planes for a raster model
                    raise UsageError(str(e)) from None
            elif isinstance(codec, WaveletCodec):
                pre = prefix_tokens(codec, img, planes=2)
            else:  # a raster model: the image's top half (said aloud)
                pre = prefix_tokens(codec, img, tokens=int(np.prod(shape)) // 2)
                print(f"keeping the image's first {len(pre)} pixel values (its top half: a "
                      "raster model has no bit-planes; --prefix-tokens N to choose)")
            kw["prefix"] = [pre.tokens] * len(labels)
            kw["m_tilde"] = [pre.header.m_tilde] * len(labels)
    if args.ll_init:
        if args.image:
            raise UsageError("--ll-init and --image exclude each other")
        kw["ll_init"] = True
    chosen = options(**kw)
    sampling = plan(model, chosen)
    if args.verbose:
        print("sampling plan:\n  " + str(sampling).replace("\n", "\n  "))
    t = time.perf_counter()
    seqs = _generate_in_batches(model, labels, chosen, sampling, kw)
    dt = time.perf_counter() - t
    images = decode(model, seqs)
    scale = max(1, 64 // max(shape[:2]))
    save_png(args.output, grid(images, ncols=ncols, scale=scale))
    n_tok = sum(len(s) for s in seqs)
    print(f"{len(images)} images ({', '.join(names[c] for c in classes)}) in {dt:.1f} s "
          f"({n_tok / dt:.0f} tokens/s, {args.device}) -> {args.output}")
    if args.gif:
        frames = [grid(images_k, ncols=ncols, scale=scale)
                  for images_k in decode_prefixes(model, seqs, 40)]
        save_gif(args.gif, frames + [frames[-1]] * 10, duration_ms=80)
        print(f"  coarse-to-fine animation ({len(frames)} frames) -> {args.gif}")
    if args.npz:
        np.savez_compressed(args.npz, x=np.stack(images), y=labels)
        print(f"  images and labels -> {args.npz}")
    return 0


def _generate_in_batches(model, labels: np.ndarray, chosen: SamplingOptions,
                         sampling: SamplingPlan, per_row: dict) -> list:
    """All of ``labels`` in one generation where the key/value caches fit the device's free
    memory, else in batches that do (said aloud; batch i draws seed + i). ``per_row`` holds
    the settings with one entry a row (a prefix, m~), cut to each batch."""
    fit, why = images_per_call(model, chosen)
    if fit is None or len(labels) <= fit:
        return list(generate(model, labels, chosen, plan=sampling))
    if fit < 1:
        raise UsageError(f"not even one image fits: {why}")
    print(f"sampling {len(labels)} images in batches of {fit}: {why}")
    seqs: list = []
    for i, s in enumerate(range(0, len(labels), fit)):
        cut = {k: v[s : s + fit] for k, v in per_row.items() if k in ("prefix", "m_tilde")}
        seed = None if chosen.seed is None else chosen.seed + i
        seqs += generate(model, labels[s : s + fit],
                         dataclasses.replace(chosen, seed=seed, **cut), plan=sampling)
    return seqs


def main(argv: list[str] | None = None) -> int:
    return run(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
