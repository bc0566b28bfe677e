"""``wavar train``: train a model from a config file, on the CPU, one GPU or N under torchrun.

Examples
--------
::

    wavar train --config configs/fashion-mnist.toml
    wavar train --config configs/tiny-cpu.toml max_steps=50 out_dir=runs/smoke
    torchrun --nproc_per_node 2 -m wavar.cli.train --config configs/fashion-mnist.toml

The run resumes from ``out_dir/ckpt.pt`` when it exists; at its end (or at ``time_limit_s``)
the EMA weights are published to ``out_dir/model`` (safetensors + config.json).
``wall_limit_s`` is a time limit counted from the command's start: what the set-up
(tokenizing, the decoder-state features) took comes out of it, so that a chunk ends in time on
a machine or job lent for a fixed time however long its set-up was (CIFAR-10 on a fresh
machine: ~150 s).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from time import monotonic

import numpy as np
import torch.distributed as dist

from wavar.cli.common import Parser, run
from wavar.codec import RasterCodec, codec_from_params
from wavar.data.datasets import ImageDataset, load
from wavar.data.shards import TokenDataset, tokenize
from wavar.sample.forcing import ll_bank
from wavar.sample.generate import decode, generate
from wavar.train import distributed
from wavar.train.config import load_config
from wavar.train.loop import train
from wavar.viz import grid, save_png


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="wavar train", description="Train a wavelet-language (or raster) model.")
    p.add_argument("--config", required=True, metavar="FILE", help="TOML config (configs/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. lr=3e-4 model_args.n_layer=4")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use only the first N training images (smoke runs)")
    p.add_argument("--no-samples", action="store_true",
                   help="do not write a grid of samples at the end")
    p.set_defaults(func=_train)
    return p


def data_codec_info(codec, data, images=None) -> dict:
    """What the sampler needs to know about the data, recorded in the model config.

    ``images`` (an ImageDataset of the training split) adds the per-class LL bank used by
    ``generate(..., ll_init=True)`` (not for the raster language, which has no LL band).
    """
    stats = data.class_statistics()
    info = {**codec.params(), "image_shape": list(data.image_shape),
            "classes": list(data.classes), "m_tilde_min": int(stats["m_tilde_min"]),
            "m_tilde_hist": stats["m_tilde_hist"].tolist()}
    if images is not None and not isinstance(codec, RasterCodec):
        info["ll_bank"] = ll_bank(codec, images.x, images.y)
    return info


def sample_grid_writer(n_per_class: int = 4):
    """``on_eval`` hook: a grid of samples per class, written to out_dir/samples/."""

    def on_eval(model, step: int, out_dir: Path) -> None:
        k = model.config.num_classes
        labels = np.repeat(np.arange(k), n_per_class)
        seqs = generate(model, labels, seed=step)
        imgs = decode(model, seqs)
        save_png(out_dir / "samples" / f"step{step:07d}.png",
                 grid(imgs, ncols=n_per_class * 2, scale=2))

    return on_eval


def _train(args: argparse.Namespace) -> int:
    started = monotonic()
    cfg = load_config(args.config, args.overrides)
    # Join the process group first, so the other ranks can wait at a real barrier while rank 0
    # brings the token shards up to date (they may exist from an earlier chunk's images).
    info, created = distributed.setup(cfg.device)
    try:
        return _train_in_group(cfg, args, info, started)
    finally:
        distributed.cleanup(created)


def _train_in_group(cfg, args: argparse.Namespace, info, started: float) -> int:
    codec = codec_from_params(cfg.codec)
    splits = ("train",) if cfg.val_holdout else ("test", "train")
    images = load(cfg.dataset, "train")
    if info.is_main:  # tokenize once (up-to-date shards are kept), before other ranks read
        for split in splits:
            tokenize(cfg.dataset, codec, split)
        if cfg.hflip:
            tokenize(mirrored(images), codec, FLIPPED)
    if info.enabled:
        dist.barrier()
    # decoder-state features are replayed only for a model that reads them
    context = bool(cfg.model_args.get("decoder_state", 0))
    data_train = TokenDataset.load(cfg.dataset, codec, "train", tokenize_missing=False,
                                   limit=args.limit, context=context)
    if cfg.val_holdout:
        data_train, data_val = data_train.holdout(cfg.val_holdout)
        if info.is_main:
            print(f"validation: the last {len(data_val)} of {len(data_val) + len(data_train)} "
                  f"training images (val_holdout), left out of training")
    else:
        data_val = TokenDataset.load(cfg.dataset, codec, "test", tokenize_missing=False,
                                     context=context)
    n_train = len(data_train)
    if cfg.hflip:  # the mirrored twins of the training images only (not of held-out ones)
        flipped = TokenDataset.load(cfg.dataset, codec, FLIPPED, tokenize_missing=False,
                                    limit=n_train, context=context)
        data_train = data_train.concat(flipped)
        if info.is_main:
            print(f"augmentation: {n_train} training images and their {len(flipped)} mirror "
                  f"images (hflip)")
    cfg.codec = data_codec_info(codec, data_train, _first(images, n_train))
    channels = data_train.image_shape[2] if len(data_train.image_shape) == 3 else 1
    longest = int(max(data_train.lengths.max(), data_val.lengths.max()))
    cfg.model_args = {"num_classes": int(data_train.label.max()) + 1, "n_channels": channels,
                      "vocab_size": codec.lang.vocab_size,
                      "max_seq_len": max(longest + 64, cfg.model_args.get("max_seq_len", 0)),
                      **{k: v for k, v in cfg.model_args.items() if k != "max_seq_len"}}
    if cfg.wall_limit_s > 0:  # the set-up comes out of the command's limit
        setup = monotonic() - started
        left = max(cfg.wall_limit_s - setup, SMALLEST_CHUNK_S)
        if cfg.time_limit_s == 0 or left < cfg.time_limit_s:
            cfg.time_limit_s = left
        if info.is_main:
            print(f"wall_limit_s {cfg.wall_limit_s:.0f}: {setup:.0f} s of set-up; the training "
                  f"loop stops after {cfg.time_limit_s:.0f} s")
    result = train(cfg, data_train, data_val,
                   on_eval=None if args.no_samples else sample_grid_writer())
    if info.is_main:
        print(f"step {result['step']} ({result['stopped']}): "
              f"val {result.get('val_bits_per_token', float('nan')):.4f} bits/token, "
              f"{result.get('val_bits_per_image', float('nan')):.1f} bits/image; "
              f"weights in {cfg.out_dir}/model")
    return 0


#: What is left of ``wall_limit_s`` for the training loop when the set-up took it all: the
#: loop still takes a step and writes its checkpoint.
SMALLEST_CHUNK_S = 1e-3

#: The token split of the training images mirrored left-right (not "train-...": the shard
#: globs of "train" would take it for its own).
FLIPPED = "hflip-train"


def mirrored(images: ImageDataset) -> ImageDataset:
    """The images flipped left-right (the augmentation codes the flipped image: a mirror in
    pixels is no mirror of the token sequence)."""
    return ImageDataset(images.name, np.ascontiguousarray(images.x[:, :, ::-1]), images.y,
                        images.classes)


def _first(images, n: int):
    """The first ``n`` images of an ImageDataset (those the training sequences come from)."""
    return ImageDataset(images.name, images.x[:n], images.y[:n], images.classes)


def main(argv: list[str] | None = None) -> int:
    return run(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
