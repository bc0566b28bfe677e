"""``wavar train``: train a model from a config file, on the CPU, one GPU or N under torchrun.

Examples
--------
::

    wavar train --config configs/fashion-mnist.toml
    wavar train --config configs/tiny-cpu.toml max_steps=50 out_dir=runs/smoke
    torchrun --nproc_per_node 2 -m wavar.cli.train --config configs/fashion-mnist.toml

The run resumes from ``out_dir/ckpt.pt`` when it exists; at its end (or at ``time_limit_s``)
the EMA weights are published to ``out_dir/model`` (safetensors + config.json).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from wavar.cli.common import Parser, run


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="wavar train", description="Train a wavelet-language model.")
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
    ``generate(..., ll_init=True)``.
    """
    from wavar.sample.generate import ll_bank

    stats = data.class_statistics()
    info = {**codec.params(), "image_shape": list(data.image_shape),
            "classes": list(data.classes), "m_tilde_min": int(stats["m_tilde_min"]),
            "m_tilde_hist": stats["m_tilde_hist"].tolist()}
    if images is not None:
        info["ll_bank"] = ll_bank(codec, images.x, images.y)
    return info


def sample_grid_writer(n_per_class: int = 4):
    """``on_eval`` hook: a grid of samples per class, written to out_dir/samples/."""

    def on_eval(model, step: int, out_dir: Path) -> None:
        from wavar.sample.generate import decode, generate
        from wavar.viz import grid, save_png

        k = model.config.num_classes
        labels = np.repeat(np.arange(k), n_per_class)
        seqs = generate(model, labels, seed=step)
        imgs = decode(model, seqs)
        save_png(out_dir / "samples" / f"step{step:07d}.png",
                 grid(imgs, ncols=n_per_class * 2, scale=2))

    return on_eval


def _train(args: argparse.Namespace) -> int:
    from wavar.codec import WaveletCodec
    from wavar.data.shards import TokenDataset, tokenize
    from wavar.train.config import load_config
    from wavar.train.loop import train

    cfg = load_config(args.config, args.overrides)
    codec = WaveletCodec(**{k: v for k, v in cfg.codec.items()
                            if k in ("wavelet", "language", "final_threshold", "refinement",
                                     "levels")})
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:  # tokenize once (finished shards are skipped), before other ranks read
        for split in ("test", "train"):
            tokenize(cfg.dataset, codec, split)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _barrier_on_files(cfg, codec)
    data_train = TokenDataset.load(cfg.dataset, codec, "train", limit=args.limit)
    data_val = TokenDataset.load(cfg.dataset, codec, "test")
    from wavar.data.datasets import load

    cfg.codec = data_codec_info(codec, data_train, load(cfg.dataset, "train"))
    channels = data_train.image_shape[2] if len(data_train.image_shape) == 3 else 1
    longest = int(max(data_train.lengths.max(), data_val.lengths.max()))
    cfg.model_args = {"num_classes": int(data_train.label.max()) + 1, "n_channels": channels,
                      "vocab_size": codec.lang.vocab_size,
                      "max_seq_len": max(longest + 64, cfg.model_args.get("max_seq_len", 0)),
                      **{k: v for k, v in cfg.model_args.items() if k != "max_seq_len"}}
    result = train(cfg, data_train, data_val,
                   on_eval=None if args.no_samples else sample_grid_writer())
    if rank == 0:
        print(f"step {result['step']} ({result['stopped']}): "
              f"val {result.get('val_bits_per_token', float('nan')):.4f} bits/token, "
              f"{result.get('val_bits_per_image', float('nan')):.1f} bits/image; "
              f"weights in {cfg.out_dir}/model")
    return 0


def _barrier_on_files(cfg, codec) -> None:
    """Other ranks wait until rank 0 has tokenized (no process group exists yet)."""
    import time

    from wavar.data.shards import shard_dir

    meta = shard_dir(cfg.dataset, codec) / "meta.json"
    for _ in range(3600):
        if meta.exists() and "train_shards" in meta.read_text():
            return
        time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    return run(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
