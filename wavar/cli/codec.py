"""``wavar encode | decode | show``: the codec from the command line.

Examples
--------
::

    wavar encode photo.png -o photo.wvr --wavelet cdf53          # lossless
    wavar decode photo.wvr -o coarse.png --tokens 500             # any prefix decodes
    wavar show digit.png -o strip.png --gif strip.gif             # coarse-to-fine strip
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from wavar.cli.common import Parser, UsageError, run
from wavar.codec import CodedImage, WaveletCodec
from wavar.eval.metrics import psnr
from wavar.imageio import read_image
from wavar.viz import labelled_strip, prefix_lengths, save_gif, save_png


def add_codec_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wavelet", default="bior4.4", choices=("bior4.4", "haar", "cdf53"),
                   help="cdf53 is the reversible integer 5/3 transform (default bior4.4)")
    p.add_argument("--language", default="zeroblock", choices=("zeroblock", "zerotree"))
    p.add_argument("--final-threshold", type=float, default=None, metavar="T",
                   help="last bit-plane threshold, a power of two (default 1 for cdf53, 2^-4)")
    p.add_argument("--refinement", default="deferred", choices=("deferred", "immediate"))
    p.add_argument("--mode", choices=("L", "RGB"), default=None,
                   help="force grey or colour (default: as the file is)")


def codec_from_args(args: argparse.Namespace) -> WaveletCodec:
    return WaveletCodec(args.wavelet, args.language, args.final_threshold, args.refinement)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="wavar", add_help=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("encode", help="code an image file into a .wvr token file")
    p.add_argument("image")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    add_codec_options(p)
    p.set_defaults(func=_encode)

    p = sub.add_parser("decode", help="decode a .wvr file (or a prefix of it) to an image")
    p.add_argument("file")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png")
    p.add_argument("--tokens", type=int, default=None, metavar="N",
                   help="decode only the first N tokens")
    p.set_defaults(func=_decode)

    p = sub.add_parser("show", help="the decode at several prefix lengths, side by side")
    p.add_argument("image")
    p.add_argument("-o", "--output", required=True, metavar="strip.png")
    p.add_argument("--steps", type=int, default=8, metavar="K",
                   help="number of prefixes in the strip (default 8, log-spaced)")
    p.add_argument("--scale", type=int, default=0, metavar="S",
                   help="pixel upscale (default: to about 96 px)")
    p.add_argument("--gif", metavar="FILE", help="also write a coarse-to-fine animation")
    add_codec_options(p)
    p.set_defaults(func=_show)
    return parser


def _encode(args: argparse.Namespace) -> int:
    codec = codec_from_args(args)
    img = read_image(args.image, args.mode)
    seq = codec.encode(img)
    seq.save(args.output)
    h = seq.header
    print(f"{args.image}: {h.height}x{h.width}x{h.channels} -> {len(seq)} tokens, "
          f"m~={h.m_tilde}, {h.n_planes} bit-planes ({codec.wavelet}, {codec.language}"
          f"{', lossless' if codec.lossless else ''}) -> {args.output}")
    return 0


def _decode(args: argparse.Namespace) -> int:
    if args.tokens is not None and args.tokens < 0:
        raise UsageError("--tokens must be >= 0")
    seq = CodedImage.load(args.file)
    img = WaveletCodec.from_header(seq.header).decode(seq, args.tokens)
    save_png(args.output, img)
    n = len(seq) if args.tokens is None else min(args.tokens, len(seq))
    print(f"{args.file}: decoded {n}/{len(seq)} tokens -> {args.output}")
    return 0


def _show(args: argparse.Namespace) -> int:
    if args.steps < 1:
        raise UsageError("--steps must be >= 1")
    codec = codec_from_args(args)
    img = read_image(args.image, args.mode)
    seq = codec.encode(img)
    ks = prefix_lengths(len(seq), args.steps)
    frames = codec.decode_batch([seq[:k] for k in ks])
    labels = []
    for k, f in zip(ks, frames, strict=True):
        p = psnr(img, f)
        labels.append(f"{k} tok\n{'lossless' if np.isinf(p) else f'{p:.1f} dB'}")
    scale = args.scale or max(1, 96 // max(img.shape[:2]))
    save_png(args.output, labelled_strip(frames, labels, scale=scale))
    print(f"{args.image}: {len(seq)} tokens; strip of {len(ks)} prefixes -> {args.output}")
    if args.gif:
        ks_gif = prefix_lengths(len(seq), 40)
        gif_frames = codec.decode_batch([seq[:k] for k in ks_gif])
        big = [np.kron(f, np.ones((scale, scale) + (1,) * (f.ndim - 2), np.uint8))
               for f in gif_frames]
        save_gif(args.gif, big + [big[-1]] * 10, duration_ms=80)
        print(f"  animation of {len(ks_gif)} prefixes -> {args.gif}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
